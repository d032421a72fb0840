//! A linear layer on flex f32 tensors as one operation: `y = x W + b` with its three
//! gradients, each one checked GEMM ([`Gemm`]) on the values in place.
//!
//! Through Burn, flex runs the product and its backward with a zeroed and then realigned
//! output buffer per product and transposed copies of `x` and `W` for the gradients (in the
//! LSTM benchmark's profile: `memset`, `memcpy` and `copy_2d_tiled` around its output
//! layer); here the transposes are strides.

use burn::backend::Flex;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::{AdFlex, flex_tensor, slice, values};
use crate::gemm::{Gemm, Parallelism};
use crate::math::add_rows;

/// `x [rows, d_in] W [d_in, d_out] (+ b)`.
fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, [rows, d_in, d_out]: [usize; 3]) -> Vec<f32> {
    let mut y = match b {
        Some(b) => {
            let mut y = Vec::with_capacity(rows * d_out);
            for _ in 0..rows {
                y.extend_from_slice(b);
            }
            y
        }
        None => vec![0f32; rows * d_out],
    };
    let par = Parallelism::Rayon(0);
    Gemm::new([rows, d_out, d_in])
        .accumulate(b.is_some())
        .parallelism(par)
        .run(&mut y, d_out, x, [d_in, 1], w, [d_out, 1]);
    y
}

/// The column sums of `dy [rows, cols]`, the rows split over the threads.
fn column_sums(dy: &[f32], cols: usize) -> Vec<f32> {
    let rows = dy.len() / cols.max(1);
    let per = rows.div_ceil(rayon::current_num_threads().max(1)).max(1);
    dy.par_chunks(per * cols)
        .map(|block| {
            let mut sums = vec![0f32; cols];
            add_rows(&mut sums, block);
            sums
        })
        .reduce(
            || vec![0f32; cols],
            |mut a, b| {
                add_rows(&mut a, &b);
                a
            },
        )
}

/// The gradients of the parents given (`x`, `W`, `b`) from `dy`.
fn register(
    grads: &mut Gradients,
    [x_node, w_node, b_node]: [Option<NodeId>; 3],
    (x, w, [rows, d_in, d_out]): (FlexTensor, FlexTensor, [usize; 3]),
    dy: &FlexTensor,
) {
    let (dy, x, w) = (slice(dy), slice(&x), slice(&w));
    let par = Parallelism::Rayon(0);
    if let Some(node) = x_node {
        // dx = dy Wᵀ.
        let mut dx = vec![0f32; rows * d_in];
        Gemm::new([rows, d_in, d_out]).parallelism(par).run(
            &mut dx,
            d_in,
            dy,
            [d_out, 1],
            w,
            [1, d_out],
        );
        grads.register::<Flex>(node, flex_tensor(dx, [rows, d_in]));
    }
    if let Some(node) = w_node {
        // dW = xᵀ dy.
        let mut dw = vec![0f32; d_in * d_out];
        Gemm::new([d_in, d_out, rows]).parallelism(par).run(
            &mut dw,
            d_out,
            x,
            [1, d_in],
            dy,
            [d_out, 1],
        );
        grads.register::<Flex>(node, flex_tensor(dw, [d_in, d_out]));
    }
    if let Some(node) = b_node {
        grads.register::<Flex>(node, flex_tensor(column_sums(dy, d_out), [d_out]));
    }
}

/// `x`, `W` and the sizes `[rows, d_in, d_out]`.
type State = (FlexTensor, FlexTensor, [usize; 3]);

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = State;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let ids = ops.parents.map(|p| p.map(|p| p.id));
        register(grads, ids, ops.state, &dy);
    }
}

#[derive(Debug)]
struct LinearNoBiasBackward;

impl Backward<Flex, 2> for LinearNoBiasBackward {
    type State = State;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let [x, w] = ops.parents.map(|p| p.map(|p| p.id));
        register(grads, [x, w, None], ops.state, &dy);
    }
}

/// `x [rows, d_in] W [d_in, d_out] + b` on flex f32 tensors, differentiable when the device
/// has autodiff; `None` when the tensors are not (all) flex f32 primitives of the kind
/// expected.
pub fn linear(x: &Tensor<2>, w: &Tensor<2>, b: Option<&Tensor<1>>) -> Option<Tensor<2>> {
    let [rows, d_in] = x.dims();
    let [w_in, d_out] = w.dims();
    let dtypes_fit = x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && b.is_none_or(|b| b.dtype() == DType::F32 && b.dims() == [d_out]);
    if !dtypes_fit || w_in != d_in || rows * d_in * d_out == 0 {
        return None;
    }
    let sizes = [rows, d_in, d_out];
    if !x.device().is_autodiff() {
        let prim = |t: &Tensor<2>| {
            t.clone()
                .try_into_primitive::<Flex>()
                .ok()
                .map(|p| values(&p))
        };
        let (xv, wv) = (prim(x)?, prim(w)?);
        let bv = match b {
            Some(b) => Some(values(&b.clone().try_into_primitive::<Flex>().ok()?)),
            None => None,
        };
        let y = forward(slice(&xv), slice(&wv), bv.as_ref().map(slice), sizes);
        return Some(Tensor::from_primitive::<Flex>(flex_tensor(
            y,
            [rows, d_out],
        )));
    }
    let xa = x.clone().try_into_primitive::<AdFlex>().ok()?;
    let wa = w.clone().try_into_primitive::<AdFlex>().ok()?;
    let ba = match b {
        Some(b) => Some(b.clone().try_into_primitive::<AdFlex>().ok()?),
        None => None,
    };
    let (xv, wv) = (values(xa.primitive()), values(wa.primitive()));
    let bv = ba.as_ref().map(|b| values(b.primitive()));
    let y = flex_tensor(
        forward(slice(&xv), slice(&wv), bv.as_ref().map(slice), sizes),
        [rows, d_out],
    );
    let state = (xv, wv, sizes);
    let out = match &ba {
        Some(b) => match LinearBackward
            .prepare::<NoCheckpointing>([xa.node(), wa.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        },
        None => match LinearNoBiasBackward
            .prepare::<NoCheckpointing>([xa.node(), wa.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        },
    };
    Some(Tensor::from_primitive::<AdFlex>(out))
}
