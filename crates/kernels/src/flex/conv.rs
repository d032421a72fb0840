//! The flex side of `kiln_core::ops::conv2d`: a 2-D convolution (groups 1, dilation 1) as im2col and
//! one GEMM per image, with its own backward pass registered on Burn's autodiff graph.
//!
//! flex 0.22 computes a convolution's gradients with Burn's generic fallbacks: the weight
//! gradient as another convolution over the batch and the input gradient as a transposed
//! convolution, which made up most of a LeNet-5 training step. Here each image's patches are
//! unfolded once into a `[C K_h K_w, H_out W_out]` matrix and all three products
//! (`W col`, `dY colᵀ`, `Wᵀ dY`) are single GEMMs on it; images are split over the rayon
//! threads, each thread accumulating its own weight and bias gradients.

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
use crate::gemm::{Gemm, Parallelism};
use crate::scratch;

/// Sizes of one convolution, checked against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    /// Padding before the first row and column.
    pad: [usize; 2],
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// The geometry of `x [N, C, H, W] * weight [O, C, K_h, K_w]`, or `None` when the shapes do
    /// not fit together (Burn's own convolution then reports the problem) or are empty.
    pub fn new(
        x: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
    ) -> Option<Self> {
        let [n, c, h, w] = x;
        let [o, c_w, kh, kw] = weight;
        let padded_h = h + padding[0].0 + padding[0].1;
        let padded_w = w + padding[1].0 + padding[1].1;
        let fits = c == c_w && kh <= padded_h && kw <= padded_w;
        if !fits || stride.contains(&0) || [n, c, h, w, o, kh, kw].contains(&0) {
            return None;
        }
        Some(Geometry {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            pad: [padding[0].0, padding[1].0],
            oh: (padded_h - kh) / stride[0] + 1,
            ow: (padded_w - kw) / stride[1] + 1,
        })
    }

    /// Rows of the unfolded patch matrix.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per channel.
    fn p(&self) -> usize {
        self.oh * self.ow
    }

    fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    fn out_len(&self) -> usize {
        self.o * self.p()
    }

    /// Height and width of the zero-padded plane the windows read: `((H_out - 1) s + K)` in
    /// each direction (bottom and right padding past that is never read).
    fn padded(&self) -> [usize; 2] {
        [
            (self.oh - 1) * self.stride[0] + self.kh,
            (self.ow - 1) * self.stride[1] + self.kw,
        ]
    }

    /// Whether the windows read only the image itself (no padding is read).
    fn unpadded(&self) -> bool {
        let [ph, pw] = self.padded();
        self.pad == [0, 0] && ph <= self.h && pw <= self.w
    }
}

/// Copies a short row with fixed-size moves, the last one overlapping, instead of a `memcpy`
/// call per row (LeNet's rows are 10 and 28 values long).
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let src = &src[..n];
    if n >= 8 {
        let mut i = 0;
        while i + 8 <= n {
            dst[i..i + 8].copy_from_slice(&src[i..i + 8]);
            i += 8;
        }
        if i < n {
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else {
        for (d, v) in dst.iter_mut().zip(src) {
            *d = *v;
        }
    }
}

/// `dst += src` over a short row, eight lanes at a time.
#[inline(always)]
fn add_row(dst: &mut [f32], src: &[f32]) {
    let mut d8 = dst.chunks_exact_mut(8);
    let mut s8 = src.chunks_exact(8);
    for (d, v) in (&mut d8).zip(&mut s8) {
        for j in 0..8 {
            d[j] += v[j];
        }
    }
    for (d, v) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
        *d += *v;
    }
}

/// A zero-padded copy of an image's planes, `[C, ph, pw]`. Only the interior is rewritten
/// for each image: the border stays zero while the geometry is the same.
#[derive(Debug, Default)]
struct Padded {
    planes: Vec<f32>,
    /// The geometry (batch size aside) whose border `planes` holds.
    zeroed_for: Option<Geometry>,
}

impl Padded {
    /// The image's planes with the convolution's zero padding around them; the image itself
    /// when no padding is read. Returns the planes and their width.
    fn of<'a>(&'a mut self, image: &'a [f32], g: &Geometry) -> (&'a [f32], usize) {
        if g.unpadded() {
            return (image, g.w);
        }
        let [ph, pw] = g.padded();
        let key = Geometry { n: 0, ..*g };
        if self.zeroed_for != Some(key) {
            self.planes.clear();
            self.planes.resize(g.c * ph * pw, 0.0);
            self.zeroed_for = Some(key);
        }
        // The windows may read no image pixel at all (a left or top padding at least as
        // wide as the plane they read); the plane is then all border.
        let rows = g.h.min(ph.saturating_sub(g.pad[0]));
        let cols = g.w.min(pw.saturating_sub(g.pad[1]));
        if rows == 0 || cols == 0 {
            return (&self.planes, pw);
        }
        for c in 0..g.c {
            for y in 0..rows {
                let dst = &mut self.planes[(c * ph + g.pad[0] + y) * pw + g.pad[1]..][..cols];
                copy_row(dst, &image[(c * g.h + y) * g.w..][..cols]);
            }
        }
        (&self.planes, pw)
    }
}

/// Per-thread work buffers, kept between calls ([`scratch::with_local`]): their contents are
/// always overwritten before they are read, so reusing them saves an allocation and a zero
/// fill per block.
#[derive(Debug, Default)]
struct Scratch {
    col: Vec<f32>,
    prod: Vec<f32>,
    dcol: Vec<f32>,
    padded: Padded,
    /// The padded input gradient of [`col2im`] (zeroed for every image).
    acc: Vec<f32>,
}

/// Runs `f` with this thread's [`Scratch`].
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    scratch::with_local(f)
}

/// The first `n` values of a reusable buffer, grown as needed (contents unspecified).
fn buffer(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Unfolds one image `[C, H, W]` into the `H_out W_out` columns of `col` that start at its
/// first element, one row per `(c, k_i, k_j)` with rows `ld` apart (zeros for padding).
/// `padded` holds the padded image when there is padding.
fn im2col(image: &[f32], col: &mut [f32], ld: usize, g: &Geometry, padded: &mut Padded) {
    let (p, ow, [sy, sx]) = (g.p(), g.ow, g.stride);
    let (planes, pw) = padded.of(image, g);
    let ph = planes.len() / g.c / pw;
    for c in 0..g.c {
        let plane = &planes[c * ph * pw..][..ph * pw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &mut col[((c * g.kh + ki) * g.kw + kj) * ld..][..p];
                for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
                    let src = &plane[(oy * sy + ki) * pw + kj..];
                    if sx == 1 {
                        copy_row(dst, src);
                    } else {
                        for (d, v) in dst.iter_mut().zip(src.iter().step_by(sx)) {
                            *d = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Adds the columns of `col` (laid out as [`im2col`] writes them) onto the image gradient
/// `[C, H, W]`: the adjoint of [`im2col`]. `scratch` holds the padded gradient when there is
/// padding.
fn col2im(col: &[f32], image: &mut [f32], ld: usize, g: &Geometry, scratch: &mut Vec<f32>) {
    let (p, ow, [sy, sx]) = (g.p(), g.ow, g.stride);
    let (ph, pw) = if g.unpadded() {
        (g.h, g.w)
    } else {
        let [ph, pw] = g.padded();
        scratch.clear();
        scratch.resize(g.c * ph * pw, 0.0);
        (ph, pw)
    };
    {
        let planes: &mut [f32] = if g.unpadded() { image } else { scratch };
        for c in 0..g.c {
            let plane = &mut planes[c * ph * pw..][..ph * pw];
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let row = &col[((c * g.kh + ki) * g.kw + kj) * ld..][..p];
                    for (oy, src) in row.chunks_exact(ow).enumerate() {
                        let dst = &mut plane[(oy * sy + ki) * pw + kj..];
                        if sx == 1 {
                            add_row(&mut dst[..ow], src);
                        } else {
                            for (d, v) in dst.iter_mut().step_by(sx).zip(src) {
                                *d += *v;
                            }
                        }
                    }
                }
            }
        }
    }
    if !g.unpadded() {
        // Crop the padding off onto the image gradient.
        let rows = g.h.min(ph.saturating_sub(g.pad[0]));
        let cols = g.w.min(pw.saturating_sub(g.pad[1]));
        // No image pixel was read when the padding covers the whole plane: no gradient.
        let rows = if cols == 0 { 0 } else { rows };
        for c in 0..g.c {
            for y in 0..rows {
                let src = &scratch[(c * ph + g.pad[0] + y) * pw + g.pad[1]..][..cols];
                add_row(&mut image[(c * g.h + y) * g.w..][..cols], src);
            }
        }
    }
}

/// Images unfolded side by side into one patch matrix, so that each product is one GEMM
/// over `BLOCK * H_out * W_out` columns instead of one small GEMM per image (LeNet's second
/// convolution: 1,600 instead of 100 columns).
const BLOCK: usize = 8;

/// How a batch is split: `per` images (a multiple of [`BLOCK`]) to a rayon task, and the
/// GEMMs' own threading (used when there are fewer images than threads).
fn split(n: usize) -> (usize, Parallelism) {
    let threads = rayon::current_num_threads().max(1);
    if n >= threads {
        (
            n.div_ceil(threads).next_multiple_of(BLOCK),
            Parallelism::None,
        )
    } else {
        (n, Parallelism::Rayon(0))
    }
}

fn tensor(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    flex_tensor(values, shape)
}

/// Unfolds a block of images side by side: `col [K, block P]`, image `b` in columns
/// `b P..(b + 1) P`. Returns the row stride.
fn unfold_block(images: &[f32], col: &mut [f32], g: &Geometry, padded: &mut Padded) -> usize {
    let ld = images.len() / g.image_len() * g.p();
    for (b, image) in images.chunks(g.image_len()).enumerate() {
        im2col(image, &mut col[b * g.p()..], ld, g, padded);
    }
    ld
}

/// The forward pass on flex tensors: `[N, O, H_out, W_out]`.
///
/// (Keeping the patch matrices for the backward pass instead of unfolding the images again
/// was measured slower: LeNet-5's are 9 MB per step to allocate and fill.)
pub fn forward(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    g: Geometry,
) -> FlexTensor {
    let (x, weight) = (values(x), values(weight));
    let bias = bias.map(values);
    let (xs, ws) = (slice(&x), slice(&weight));
    let bs = bias.as_ref().map(slice);
    let (k, p) = (g.k(), g.p());
    let mut out = vec![0f32; g.n * g.out_len()];
    let (per, parallelism) = split(g.n);
    out.par_chunks_mut(per * g.out_len())
        .zip(xs.par_chunks(per * g.image_len()))
        .for_each(|(out, images)| {
            with_scratch(|sc| {
                for (out, images) in out
                    .chunks_mut(BLOCK * g.out_len())
                    .zip(images.chunks(BLOCK * g.image_len()))
                {
                    let col = buffer(&mut sc.col, images.len() / g.image_len() * k * p);
                    let ld = unfold_block(images, col, &g, &mut sc.padded);
                    // prod [O, block P] = W [O, K] col [K, block P].
                    let prod = buffer(&mut sc.prod, g.o * ld);
                    Gemm::new([g.o, ld, k]).parallelism(parallelism).run(
                        prod,
                        ld,
                        ws,
                        [k, 1],
                        col,
                        [ld, 1],
                    );
                    for (b, y) in out.chunks_mut(g.out_len()).enumerate() {
                        for (o, row) in y.chunks_mut(p).enumerate() {
                            let src = &prod[o * ld + b * p..][..p];
                            let shift = bs.map_or(0.0, |bs| bs[o]);
                            for (d, v) in row.iter_mut().zip(src) {
                                *d = v + shift;
                            }
                        }
                    }
                }
            })
        });
    tensor(out, [g.n, g.o, g.oh, g.ow])
}

/// Gradients of one convolution.
struct Grads {
    x: Option<FlexTensor>,
    weight: FlexTensor,
    bias: FlexTensor,
}

/// Weight and bias gradients of a run of images, writing their input gradients into `dx`.
fn backward_images(
    images: &[f32],
    dys: &[f32],
    mut dx: Option<&mut [f32]>,
    weight: &[f32],
    g: &Geometry,
    parallelism: Parallelism,
) -> (Vec<f32>, Vec<f32>) {
    let (k, p) = (g.k(), g.p());
    let mut dw = vec![0f32; g.o * k];
    let mut db = vec![0f32; g.o];
    with_scratch(|sc| {
        for (i, (images, dys)) in images
            .chunks(BLOCK * g.image_len())
            .zip(dys.chunks(BLOCK * g.out_len()))
            .enumerate()
        {
            let col = buffer(&mut sc.col, images.len() / g.image_len() * k * p);
            let ld = unfold_block(images, col, g, &mut sc.padded);
            // The block's output gradients side by side, as `[O, block P]`, and the bias sums.
            let dyb = buffer(&mut sc.prod, g.o * ld);
            for (b, dy) in dys.chunks(g.out_len()).enumerate() {
                for (o, row) in dy.chunks(p).enumerate() {
                    copy_row(&mut dyb[o * ld + b * p..][..p], row);
                    db[o] += row.iter().sum::<f32>();
                }
            }
            // dW += dY colᵀ: [O, block P] x [block P, K].
            Gemm::new([g.o, k, ld])
                .accumulate(true)
                .parallelism(parallelism)
                .run(&mut dw, k, dyb, [ld, 1], col, [1, ld]);
            if let Some(dx) = dx.as_deref_mut() {
                // dcol = Wᵀ dY: [K, O] x [O, block P], each image's columns folded back.
                let dcol = buffer(&mut sc.dcol, k * ld);
                Gemm::new([k, ld, g.o]).parallelism(parallelism).run(
                    dcol,
                    ld,
                    weight,
                    [1, k],
                    dyb,
                    [ld, 1],
                );
                let first = i * BLOCK * g.image_len();
                let dx = &mut dx[first..][..images.len()];
                for (b, dx) in dx.chunks_mut(g.image_len()).enumerate() {
                    col2im(&dcol[b * p..], dx, ld, g, &mut sc.acc);
                }
            }
        }
    });
    (dw, db)
}

/// The backward pass on flex tensors: the gradients of `x` (when `need_x`), the weight and
/// the bias given the output gradient `dy`.
fn backward(
    x: &FlexTensor,
    weight: &FlexTensor,
    dy: &FlexTensor,
    g: Geometry,
    need_x: bool,
) -> Grads {
    let (x, weight, dy) = (values(x), values(weight), values(dy));
    let (xs, ws, dys) = (slice(&x), slice(&weight), slice(&dy));
    let (per, parallelism) = split(g.n);
    let run = |images: &[f32], dys: &[f32], dx: Option<&mut [f32]>| {
        backward_images(images, dys, dx, ws, &g, parallelism)
    };
    let images = xs.par_chunks(per * g.image_len());
    let dys = dys.par_chunks(per * g.out_len());
    let mut dx = vec![0f32; if need_x { xs.len() } else { 0 }];
    let partials: Vec<(Vec<f32>, Vec<f32>)> = if need_x {
        images
            .zip(dys)
            .zip(dx.par_chunks_mut(per * g.image_len()))
            .map(|((i, d), dx)| run(i, d, Some(dx)))
            .collect()
    } else {
        images.zip(dys).map(|(i, d)| run(i, d, None)).collect()
    };
    let mut dw = vec![0f32; g.o * g.k()];
    let mut db = vec![0f32; g.o];
    for (w, b) in partials {
        dw.iter_mut().zip(w).for_each(|(a, v)| *a += v);
        db.iter_mut().zip(b).for_each(|(a, v)| *a += v);
    }
    Grads {
        x: need_x.then(|| tensor(dx, [g.n, g.c, g.h, g.w])),
        weight: tensor(dw, [g.o, g.c, g.kh, g.kw]),
        bias: FlexTensor::from_data(TensorData::new(db, [g.o])),
    }
}

#[derive(Debug)]
struct ConvWithBias;

#[derive(Debug)]
struct ConvNoBias;

/// The backward step shared by [`ConvWithBias`] and [`ConvNoBias`]: parents `x`, weight and
/// (for the first) bias.
fn conv_backward_step<const N: usize>(
    ops: Ops<(FlexTensor, FlexTensor, Geometry), N>,
    grads: &mut Gradients,
) {
    let dy = grads.consume::<Flex>(&ops.node);
    let (x, weight, g) = ops.state;
    let mut parents = ops.parents.into_iter();
    let mut next = || parents.next().flatten();
    let (node_x, node_w, node_b) = (next(), next(), next());
    let out = backward(&x, &weight, &dy, g, node_x.is_some());
    if let (Some(node), Some(dx)) = (node_x, out.x) {
        grads.register::<Flex>(node.id, dx);
    }
    if let Some(node) = node_w {
        grads.register::<Flex>(node.id, out.weight);
    }
    if let Some(node) = node_b {
        grads.register::<Flex>(node.id, out.bias);
    }
}

impl Backward<Flex, 3> for ConvWithBias {
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        conv_backward_step(ops, grads);
    }
}

impl Backward<Flex, 2> for ConvNoBias {
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        conv_backward_step(ops, grads);
    }
}

/// The convolution on flex tensors, differentiable when the device has autodiff; `None` when
/// the tensors are not (all) flex primitives of the kind expected, so that the caller falls
/// back to Burn's own convolution.
pub fn conv2d(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    g: Geometry,
) -> Option<Tensor<4>> {
    let all_f32 = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.is_none_or(|b| b.dtype() == DType::F32);
    if !all_f32 {
        return None;
    }
    if !x.device().is_autodiff() {
        let x = x.clone().try_into_primitive::<Flex>().ok()?;
        let weight = weight.clone().try_into_primitive::<Flex>().ok()?;
        let bias = match bias {
            Some(b) => Some(b.clone().try_into_primitive::<Flex>().ok()?),
            None => None,
        };
        let y = forward(&x, &weight, bias.as_ref(), g);
        return Some(Tensor::from_primitive::<Flex>(y));
    }
    let x = x.clone().try_into_primitive::<AdFlex>().ok()?;
    let weight = weight.clone().try_into_primitive::<AdFlex>().ok()?;
    let y = match bias {
        Some(b) => {
            let bias = b.clone().try_into_primitive::<AdFlex>().ok()?;
            let prep =
                ConvWithBias.prepare::<NoCheckpointing>([x.node(), weight.node(), bias.node()]);
            match prep.compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let y = forward(x.primitive(), weight.primitive(), Some(bias.primitive()), g);
                    prep.finish((x.into_primitive(), weight.into_primitive(), g), y)
                }
                OpsKind::UnTracked(prep) => {
                    let (xp, wp) = (x.primitive(), weight.primitive());
                    prep.finish(forward(xp, wp, Some(bias.primitive()), g))
                }
            }
        }
        None => {
            let prep = ConvNoBias.prepare::<NoCheckpointing>([x.node(), weight.node()]);
            match prep.compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let y = forward(x.primitive(), weight.primitive(), None, g);
                    prep.finish((x.into_primitive(), weight.into_primitive(), g), y)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(forward(x.primitive(), weight.primitive(), None, g))
                }
            }
        }
    };
    Some(Tensor::from_primitive::<AdFlex>(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn fast_path_is_taken_on_flex_with_and_without_autodiff() {
        let device = Device::flex();
        for device in [device.clone(), device.autodiff()] {
            let x = Tensor::<4>::random([2, 3, 6, 6], Distribution::Default, &device);
            let w = Tensor::<4>::random([4, 3, 3, 3], Distribution::Default, &device);
            let b = Tensor::<1>::random([4], Distribution::Default, &device);
            let g = Geometry::new(x.dims(), w.dims(), [1, 1], [(1, 1), (1, 1)]).unwrap();
            let y = conv2d(&x, &w, Some(&b), g).expect("flex primitives");
            assert_eq!(y.dims(), [2, 4, 6, 6]);
            assert_eq!(y.device().is_autodiff(), device.is_autodiff());
        }
    }

    #[test]
    fn geometry_rejects_shapes_that_do_not_fit() {
        let ok = Geometry::new([1, 2, 5, 5], [3, 2, 3, 3], [2, 2], [(1, 0), (0, 0)]).unwrap();
        assert_eq!((ok.oh, ok.ow), (2, 2));
        // Channel mismatch, kernel larger than the padded input, zero stride, empty batch.
        assert!(Geometry::new([1, 2, 5, 5], [3, 1, 3, 3], [1, 1], [(0, 0); 2]).is_none());
        assert!(Geometry::new([1, 2, 2, 2], [3, 2, 3, 3], [1, 1], [(0, 0); 2]).is_none());
        assert!(Geometry::new([1, 2, 5, 5], [3, 2, 3, 3], [0, 1], [(0, 0); 2]).is_none());
        assert!(Geometry::new([0, 2, 5, 5], [3, 2, 3, 3], [1, 1], [(0, 0); 2]).is_none());
    }

    #[test]
    fn im2col_by_hand() {
        // A 1x3x3 image 1..9, 2x2 kernel, stride 2, one pixel of padding on top and left:
        // output 2x2; patch rows are (ki, kj) = (0,0), (0,1), (1,0), (1,1).
        let g = Geometry::new([1, 1, 3, 3], [1, 1, 2, 2], [2, 2], [(1, 0), (1, 0)]).unwrap();
        let image: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut col = vec![f32::NAN; 16];
        im2col(&image, &mut col, 4, &g, &mut Padded::default());
        #[rustfmt::skip]
        let expected = [
            0., 0., 0., 5.,
            0., 0., 4., 6.,
            0., 2., 0., 8.,
            1., 3., 7., 9.,
        ];
        assert_eq!(col, expected);
        // col2im is its adjoint: <im2col(x), c> = <x, col2im(c)>.
        let c: Vec<f32> = (0..16).map(|v| (v as f32).sin()).collect();
        let mut back = vec![0f32; 9];
        col2im(&c, &mut back, 4, &g, &mut Vec::new());
        let lhs: f32 = col.iter().zip(&c).map(|(a, b)| a * b).sum();
        let rhs: f32 = image.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }
}
