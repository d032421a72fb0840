//! The flex side of `kiln_core::ops::max_pool2d`: max pooling without padding or dilation, keeping
//! each window's argmax so that the backward pass is one scatter of the output gradient.
//!
//! flex 0.22's pooling loops recompute every window's position with integer divisions and
//! its backward scatters through an index tensor; in a LeNet-5 training step the two were the
//! largest cost after the convolutions.

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::{AdFlex, flex_tensor, slice, values};

/// Sizes of one pooling: `planes = N C` images of `h x w`, windows `k` at stride `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    s: [usize; 2],
    oh: usize,
    ow: usize,
}

impl PoolGeometry {
    /// `None` for empty inputs, zero strides or windows larger than the input.
    pub fn new([n, c, h, w]: [usize; 4], k: [usize; 2], s: [usize; 2]) -> Option<Self> {
        let fits = k[0] <= h && k[1] <= w && !k.contains(&0) && !s.contains(&0);
        if !fits || n == 0 || c == 0 {
            return None;
        }
        Some(PoolGeometry {
            n,
            c,
            h,
            w,
            k,
            s,
            oh: (h - k[0]) / s[0] + 1,
            ow: (w - k[1]) / s[1] + 1,
        })
    }

    fn planes(&self) -> usize {
        self.n * self.c
    }

    fn plane_out(&self) -> usize {
        self.oh * self.ow
    }
}

fn chunk_planes(g: &PoolGeometry) -> usize {
    g.planes()
        .div_ceil(rayon::current_num_threads().max(1))
        .max(1)
}

/// Whether `v` replaces `best` as a window's maximum: larger, or a NaN (a NaN in the window
/// wins, as in PyTorch). Non-short-circuit so that the loops below stay free of branches on
/// the data (random activations would mispredict every other comparison).
#[inline(always)]
fn beats(v: f32, best: f32) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// Maxima and argmaxes (indices in the plane) of one plane's windows.
fn pool_plane(plane: &[f32], out: &mut [f32], arg: &mut [u32], g: &PoolGeometry) {
    if g.k == [2, 2] && g.s == [2, 2] {
        return pool_plane_2x2(plane, out, arg, g);
    }
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let (y0, x0) = (oy * g.s[0], ox * g.s[1]);
            let mut best_i = y0 * g.w + x0;
            let mut best = plane[best_i];
            for ky in 0..g.k[0] {
                let row = (y0 + ky) * g.w + x0;
                for (i, &v) in plane[row..row + g.k[1]].iter().enumerate() {
                    let take = beats(v, best);
                    best = if take { v } else { best };
                    best_i = if take { row + i } else { best_i };
                }
            }
            out[oy * g.ow + ox] = best;
            arg[oy * g.ow + ox] = best_i as u32;
        }
    }
}

/// [`pool_plane`] for the common 2x2 window at stride 2, one output row at a time.
fn pool_plane_2x2(plane: &[f32], out: &mut [f32], arg: &mut [u32], g: &PoolGeometry) {
    let w = g.w;
    for oy in 0..g.oh {
        let top = &plane[2 * oy * w..][..2 * g.ow];
        let bottom = &plane[(2 * oy + 1) * w..][..2 * g.ow];
        let out = &mut out[oy * g.ow..][..g.ow];
        let arg = &mut arg[oy * g.ow..][..g.ow];
        let base = (2 * oy * w) as u32;
        for (ox, ((o, a), (t, b))) in out
            .iter_mut()
            .zip(arg.iter_mut())
            .zip(top.chunks_exact(2).zip(bottom.chunks_exact(2)))
            .enumerate()
        {
            // Row-major window order, the first maximum kept: t0, t1, b0, b1.
            let at = base + 2 * ox as u32;
            let mut best = t[0];
            let mut best_i = at;
            for (v, i) in [
                (t[1], at + 1),
                (b[0], at + w as u32),
                (b[1], at + w as u32 + 1),
            ] {
                let take = beats(v, best);
                best = if take { v } else { best };
                best_i = if take { i } else { best_i };
            }
            *o = best;
            *a = best_i;
        }
    }
}

/// Window maxima `[N, C, H_out, W_out]` and, for each, its index inside its input plane.
fn forward(x: &FlexTensor, g: PoolGeometry) -> (FlexTensor, Vec<u32>) {
    let x = values(x);
    let xs = slice(&x);
    let (plane_in, plane_out) = (g.h * g.w, g.plane_out());
    let mut out = vec![0f32; g.planes() * plane_out];
    let mut arg = vec![0u32; out.len()];
    let per = chunk_planes(&g);
    out.par_chunks_mut(per * plane_out)
        .zip(arg.par_chunks_mut(per * plane_out))
        .zip(xs.par_chunks(per * plane_in))
        .for_each(|((out, arg), xs)| {
            for ((out, arg), plane) in out
                .chunks_mut(plane_out)
                .zip(arg.chunks_mut(plane_out))
                .zip(xs.chunks(plane_in))
            {
                pool_plane(plane, out, arg, &g);
            }
        });
    (flex_tensor(out, [g.n, g.c, g.oh, g.ow]), arg)
}

/// The input gradient: each output gradient added at its window's argmax.
fn backward(dy: &FlexTensor, arg: &[u32], g: PoolGeometry) -> FlexTensor {
    let dy = values(dy);
    let dys = slice(&dy);
    let (plane_in, plane_out) = (g.h * g.w, g.plane_out());
    let mut dx = vec![0f32; g.planes() * plane_in];
    let per = chunk_planes(&g);
    dx.par_chunks_mut(per * plane_in)
        .zip(dys.par_chunks(per * plane_out))
        .zip(arg.par_chunks(per * plane_out))
        .for_each(|((dx, dys), arg)| {
            for ((dx, dys), arg) in dx
                .chunks_mut(plane_in)
                .zip(dys.chunks(plane_out))
                .zip(arg.chunks(plane_out))
            {
                for (&d, &i) in dys.iter().zip(arg) {
                    dx[i as usize] += d;
                }
            }
        });
    flex_tensor(dx, [g.n, g.c, g.h, g.w])
}

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = (Arc<[u32]>, PoolGeometry);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (arg, g) = ops.state;
        if let Some(node) = node {
            grads.register::<Flex>(node.id, backward(&dy, &arg, g));
        }
    }
}

/// Max pooling of flex tensors, differentiable when the device has autodiff; `None` when the
/// tensor is not a flex f32 primitive of the kind expected.
pub fn max_pool2d(x: &Tensor<4>, g: PoolGeometry) -> Option<Tensor<4>> {
    if x.dtype() != DType::F32 {
        return None;
    }
    if !x.device().is_autodiff() {
        let x = x.clone().try_into_primitive::<Flex>().ok()?;
        return Some(Tensor::from_primitive::<Flex>(forward(&x, g).0));
    }
    let x = x.clone().try_into_primitive::<AdFlex>().ok()?;
    let y = match MaxPoolBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, arg) = forward(x.primitive(), g);
            prep.finish((arg.into(), g), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive(), g).0),
    };
    Some(Tensor::from_primitive::<AdFlex>(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn fast_path_is_taken_and_pools_by_hand() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = Tensor::<4>::from_floats(
                [[[
                    [1., 5., 2., 0.],
                    [3., 4., 8., 1.],
                    [0., -1., -3., -2.],
                    [-4., 7., -5., -6.],
                ]]],
                &device,
            );
            let g = PoolGeometry::new(x.dims(), [2, 2], [2, 2]).unwrap();
            let y = max_pool2d(&x, g).expect("flex primitive");
            y.into_data()
                .assert_eq(&TensorData::from([[[[5f32, 8.], [7., -2.]]]]), false);
        }
    }

    #[test]
    fn a_nan_in_a_window_is_its_maximum_on_both_loops() {
        // 2x2 at stride 2 (the special loop) and 3x3 at stride 1 (the general one): a NaN
        // must reach the output, never be skipped as "not larger".
        let plane = [1f32, f32::NAN, 2., 0., 3., 4., 5., 6., 7.];
        for (k, s, nan_outputs) in [([2, 2], [2, 2], vec![0]), ([3, 3], [1, 1], vec![0])] {
            let g = PoolGeometry::new([1, 1, 3, 3], k, s).unwrap();
            let mut out = vec![0f32; g.plane_out()];
            let mut arg = vec![0u32; g.plane_out()];
            pool_plane(&plane, &mut out, &mut arg, &g);
            for i in nan_outputs {
                assert!(out[i].is_nan(), "{k:?}: {out:?}");
                assert_eq!(arg[i], 1);
            }
        }
    }

    #[test]
    fn geometry_rejects_what_burn_should_handle() {
        assert!(PoolGeometry::new([1, 1, 3, 3], [4, 1], [1, 1]).is_none());
        assert!(PoolGeometry::new([1, 1, 3, 3], [2, 2], [0, 1]).is_none());
        assert!(PoolGeometry::new([0, 1, 3, 3], [2, 2], [2, 2]).is_none());
        let g = PoolGeometry::new([1, 1, 5, 4], [3, 2], [2, 1]).unwrap();
        assert_eq!((g.oh, g.ow), (2, 3));
    }
}
