//! The flex side of [`super::lstm_sequence`]: a whole LSTM layer (all time steps) as one
//! operation on Burn's autodiff graph, with its backward pass through time written out.
//!
//! Built from Burn operations, one LSTM step is a dozen tensor operations and as many graph
//! nodes forward and backward; at hidden 256, batch 32 and 64 steps the framework overhead
//! and the small products made a training step five times PyTorch's. Here the input side of
//! every step is one GEMM over the whole sequence, each step adds one `[N, H] x [H, 4H]` GEMM
//! and a vectorised loop for the gates, and the backward pass is the same in reverse with the
//! weight and input gradients as three GEMMs over the whole sequence at the end.
//!
//! Gate order in the stacked weights is PyTorch's: input, forget, cell (g), output.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::conv_cpu::{gemm, slice, values};

type AdFlex = Autodiff<Flex, NoCheckpointing>;

/// Sizes of one LSTM layer: batch, steps, input width, hidden width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LstmDims {
    n: usize,
    t: usize,
    d: usize,
    h: usize,
}

impl LstmDims {
    /// The sizes of `x [N, T, D]` with `w_ih [D, 4H]`, `w_hh [H, 4H]`, `bias [4H]`, `h0` and
    /// `c0 [N, H]`, or `None` when they do not fit together or are empty.
    pub(crate) fn new(
        x: [usize; 3],
        w_ih: [usize; 2],
        w_hh: [usize; 2],
        bias: [usize; 1],
        h0: [usize; 2],
        c0: [usize; 2],
    ) -> Option<Self> {
        let [n, t, d] = x;
        let h = w_hh[0];
        let fits = w_ih == [d, 4 * h]
            && w_hh == [h, 4 * h]
            && bias == [4 * h]
            && h0 == [n, h]
            && c0 == [n, h];
        (fits && n * t * d * h > 0).then_some(LstmDims { n, t, d, h })
    }
}

/// `e^x` in single precision without a library call (Cephes' `expf`: range reduction by
/// powers of two and a degree-6 polynomial, within 2 ulp), so that loops over it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // max/min and a select rather than `clamp` (branches, which keep loops over it scalar);
    // a NaN stays NaN, so that a diverged layer is not hidden.
    #[allow(clippy::manual_clamp)]
    let clamped = x.max(-87.0).min(88.0);
    let x = if x.is_nan() { x } else { clamped };
    // Round to nearest without `round` (a library call on baseline x86-64).
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

/// The gates of one sequence at one step, in place: pre-activations in, activations out,
/// and the new cell and hidden states.
#[inline(always)]
fn cell_forward(gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h_out: &mut [f32]) {
    let h = c.len();
    let (gi, rest) = gates.split_at_mut(h);
    let (gf, rest) = rest.split_at_mut(h);
    let (gg, go) = rest.split_at_mut(h);
    let states = c.iter_mut().zip(h_out.iter_mut()).zip(c_prev);
    for ((((i, f), g), o), ((c, h_out), c_prev)) in gi
        .iter_mut()
        .zip(gf.iter_mut())
        .zip(gg.iter_mut())
        .zip(go.iter_mut())
        .zip(states)
    {
        *i = sigmoid(*i);
        *f = sigmoid(*f);
        *g = tanh(*g);
        *o = sigmoid(*o);
        *c = *f * c_prev + *i * *g;
        *h_out = *o * tanh(*c);
    }
}

/// One sequence's step backward: from the gradient reaching `h` (`dh`) and the cell
/// gradient from the next step (`dc`, updated in place to the one for the previous step),
/// the gradients of the four gates' pre-activations.
#[inline(always)]
fn cell_backward(
    acts: &[f32],
    c: &[f32],
    c_prev: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    dgates: &mut [f32],
) {
    let h = c.len();
    let (ai, rest) = acts.split_at(h);
    let (af, rest) = rest.split_at(h);
    let (ag, ao) = rest.split_at(h);
    let (di, rest) = dgates.split_at_mut(h);
    let (df, rest) = rest.split_at_mut(h);
    let (dg, d_o) = rest.split_at_mut(h);
    let acts = ai.iter().zip(af).zip(ag).zip(ao);
    let grads = di
        .iter_mut()
        .zip(df.iter_mut())
        .zip(dg.iter_mut())
        .zip(d_o.iter_mut());
    let cells = c.iter().zip(c_prev).zip(dh).zip(dc.iter_mut());
    for (((((&i, &f), &g), &o), (((di, df), dg), d_o)), (((&c, &c_prev), &dh), dc)) in
        acts.zip(grads).zip(cells)
    {
        let tc = tanh(c);
        let dcell = *dc + dh * o * (1.0 - tc * tc);
        *d_o = dh * tc * o * (1.0 - o);
        *di = dcell * g * i * (1.0 - i);
        *df = dcell * c_prev * f * (1.0 - f);
        *dg = dcell * i * (1.0 - g * g);
        *dc = dcell * f;
    }
}

/// Which vector instructions the gate loops are compiled for, chosen at run time (Kiln is
/// built for baseline x86-64: 128-bit vectors).
#[derive(Clone, Copy)]
enum Simd {
    Avx512,
    Avx2,
    Baseline,
}

fn simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Simd::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` function) compiled for the
/// widest vector instructions the CPU has.
macro_rules! simd_dispatch {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,fma")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match simd() {
                    // SAFETY: `simd` checked that the CPU has these features.
                    Simd::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Simd::Avx2 => return unsafe { avx2($($arg),*) },
                    Simd::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}

simd_dispatch!(cells_forward, cell_forward, (gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h_out: &mut [f32]));
simd_dispatch!(cells_backward, cell_backward, (acts: &[f32], c: &[f32], c_prev: &[f32], dh: &[f32], dc: &mut [f32], dgates: &mut [f32]));

/// What the forward pass keeps for the backward pass, time-major.
#[derive(Debug, Clone)]
struct Saved {
    /// Gate activations, `[T, N, 4H]`.
    acts: Arc<Vec<f32>>,
    /// Cell states, `[T, N, H]`.
    cells: Arc<Vec<f32>>,
    /// Hidden states, `[T, N, H]`.
    hs: Arc<Vec<f32>>,
}

/// `[A, B, C]` (row-major) as `[B, A, C]`.
fn swap01(m: &[f32], a: usize, b: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; a * b * c];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * c..][..c].copy_from_slice(&m[(i * b + j) * c..][..c]);
        }
    }
    out
}

/// `m` (`rows x cols`, row-major) transposed.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for (r, row) in m.chunks_exact(cols).enumerate() {
        for (c, v) in row.iter().enumerate() {
            t[c * rows + r] = *v;
        }
    }
    t
}

/// Sequences per rayon task in a step: the batch split over the threads.
fn per_task(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// `dst [N, cols] (+)= lhs [N, k] rhs [k, cols]` for one step, the rows (sequences) split over
/// the threads, each product single-threaded (a step's product is too small for the GEMM's
/// own threading to pay: 105 us on two threads against 111 on one at H = 256, batch 32).
fn step_gemm(dst: &mut [f32], lhs: &[f32], rhs: &[f32], [cols, k]: [usize; 2], accumulate: bool) {
    let n = dst.len() / cols;
    let per = per_task(n);
    dst.par_chunks_mut(per * cols)
        .zip(lhs.par_chunks(per * k))
        .for_each(|(dst, lhs)| {
            let m = dst.len() / cols;
            let none = gemm::Parallelism::None;
            gemm(
                [m, cols, k],
                dst,
                cols,
                accumulate,
                lhs,
                [k, 1],
                rhs,
                [cols, 1],
                none,
            );
        });
}

/// The forward pass: `y [N, T + 1, H]` (the hidden states, then the last cell state). Runs
/// inside the rayon pool so that the steps' parallel parts do not pay a cross-thread handoff.
fn forward(inputs: [&[f32]; 6], dims: LstmDims) -> (Vec<f32>, Saved) {
    rayon::join(|| forward_in_pool(inputs, dims), || ()).0
}

fn forward_in_pool(
    [x, w_ih, w_hh, bias, h0, c0]: [&[f32]; 6],
    LstmDims { n, t, d, h }: LstmDims,
) -> (Vec<f32>, Saved) {
    let g4 = 4 * h;
    // Every step's input side at once, time-major: acts = x W_ih + b, `[T N, 4H]`.
    let x_tm = swap01(x, n, t, d);
    let mut acts = Vec::with_capacity(t * n * g4);
    for _ in 0..n * t {
        acts.extend_from_slice(bias);
    }
    let par = gemm::Parallelism::Rayon(0);
    gemm(
        [t * n, g4, d],
        &mut acts,
        g4,
        true,
        &x_tm,
        [d, 1],
        w_ih,
        [g4, 1],
        par,
    );
    let mut hs = vec![0f32; t * n * h];
    let mut cells = vec![0f32; t * n * h];
    let per = per_task(n);
    for s in 0..t {
        let (h_done, h_now) = hs.split_at_mut(s * n * h);
        let (c_done, c_now) = cells.split_at_mut(s * n * h);
        let (h_prev, c_prev) = if s == 0 {
            (h0, c0)
        } else {
            (&h_done[(s - 1) * n * h..], &c_done[(s - 1) * n * h..])
        };
        let acts_s = &mut acts[s * n * g4..][..n * g4];
        // The state side: acts_s += h_{s-1} W_hh.
        step_gemm(acts_s, h_prev, w_hh, [g4, h], true);
        acts_s
            .par_chunks_mut(per * g4)
            .zip(c_prev.par_chunks(per * h))
            .zip(c_now[..n * h].par_chunks_mut(per * h))
            .zip(h_now[..n * h].par_chunks_mut(per * h))
            .for_each(|(((gates, c_prev), c), h_out)| {
                let rows = gates.chunks_exact_mut(g4).zip(c_prev.chunks_exact(h));
                let outs = c.chunks_exact_mut(h).zip(h_out.chunks_exact_mut(h));
                for ((gates, c_prev), (c, h_out)) in rows.zip(outs) {
                    cells_forward(gates, c_prev, c, h_out);
                }
            });
    }
    // y: the hidden states batch-major, then the last cell state.
    let mut y = vec![0f32; n * (t + 1) * h];
    for b in 0..n {
        for s in 0..t {
            y[(b * (t + 1) + s) * h..][..h].copy_from_slice(&hs[(s * n + b) * h..][..h]);
        }
        let last = &cells[((t - 1) * n + b) * h..][..h];
        y[(b * (t + 1) + t) * h..][..h].copy_from_slice(last);
    }
    let saved = Saved {
        acts: Arc::new(acts),
        cells: Arc::new(cells),
        hs: Arc::new(hs),
    };
    (y, saved)
}

/// Gradients of one LSTM layer, in the order of the operation's inputs.
struct LstmGrads {
    x: Vec<f32>,
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    bias: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
}

/// Backpropagation through time from `dy [N, T + 1, H]`, inside the rayon pool.
fn backward(inputs: [&[f32]; 6], saved: &Saved, dims: LstmDims) -> LstmGrads {
    rayon::join(|| backward_in_pool(inputs, saved, dims), || ()).0
}

fn backward_in_pool(
    [x, w_ih, w_hh, h0, c0, dy]: [&[f32]; 6],
    saved: &Saved,
    LstmDims { n, t, d, h }: LstmDims,
) -> LstmGrads {
    let g4 = 4 * h;
    let (acts, cells, hs) = (&saved.acts[..], &saved.cells[..], &saved.hs[..]);
    // The output gradients time-major, `[T + 1, N, H]` (the last slice is the cell's).
    let dy = swap01(dy, n, t + 1, h);
    let mut dgates = vec![0f32; t * n * g4];
    let mut dh_next = vec![0f32; n * h];
    let mut dc = dy[t * n * h..].to_vec();
    // W_hhᵀ `[4H, H]`, contiguous: the per-step product reads it row by row (through
    // strides it ran 2.3x slower, 261 against 115 us per step at H = 256, batch 32).
    let w_hh_t = transpose(w_hh, h, g4);
    let per = per_task(n);
    for s in (0..t).rev() {
        let c_prev = if s == 0 {
            c0
        } else {
            &cells[(s - 1) * n * h..][..n * h]
        };
        let dgates_s = &mut dgates[s * n * g4..][..n * g4];
        dgates_s
            .par_chunks_mut(per * g4)
            .zip(acts[s * n * g4..][..n * g4].par_chunks(per * g4))
            .zip(cells[s * n * h..][..n * h].par_chunks(per * h))
            .zip(c_prev.par_chunks(per * h))
            .zip(dy[s * n * h..][..n * h].par_chunks(per * h))
            .zip(dh_next.par_chunks(per * h))
            .zip(dc.par_chunks_mut(per * h))
            .for_each(|((((((dg, a), c), c_prev), dy), dh_next), dc)| {
                let mut dh = vec![0f32; h];
                for (b, dg) in dg.chunks_exact_mut(g4).enumerate() {
                    let r = b * h..(b + 1) * h;
                    for ((d, y), next) in dh.iter_mut().zip(&dy[r.clone()]).zip(&dh_next[r.clone()])
                    {
                        *d = y + next;
                    }
                    let a = &a[b * g4..][..g4];
                    cells_backward(a, &c[r.clone()], &c_prev[r.clone()], &dh, &mut dc[r], dg);
                }
            });
        // dh_{s-1} = dG_s W_hhᵀ: [N, 4H] x [4H, H].
        step_gemm(&mut dh_next, dgates_s, &w_hh_t, [h, g4], false);
    }
    let par = gemm::Parallelism::Rayon(0);
    let rows = n * t;
    // Both weight gradients in one product: [x_t, h_{t-1}] (time-major, `[T N, D + H]`)
    // transposed times dG, `[D + H, 4H]`, whose first D rows are dW_ih and the rest dW_hh.
    let x_tm = swap01(x, n, t, d);
    let k = d + h;
    let mut inputs = vec![0f32; rows * k];
    inputs.par_chunks_mut(k).enumerate().for_each(|(r, row)| {
        row[..d].copy_from_slice(&x_tm[r * d..][..d]);
        let prev = if r < n {
            &h0[r * h..][..h]
        } else {
            &hs[(r - n) * h..][..h]
        };
        row[d..].copy_from_slice(prev);
    });
    let mut dw = vec![0f32; k * g4];
    gemm(
        [k, g4, rows],
        &mut dw,
        g4,
        false,
        &inputs,
        [1, k],
        &dgates,
        [g4, 1],
        par,
    );
    let dw_hh = dw.split_off(d * g4);
    let dw_ih = dw;
    let mut dx_tm = vec![0f32; rows * d];
    gemm(
        [rows, d, g4],
        &mut dx_tm,
        d,
        false,
        &dgates,
        [g4, 1],
        w_ih,
        [1, g4],
        par,
    );
    let mut db = vec![0f32; g4];
    for row in dgates.chunks_exact(g4) {
        for (a, v) in db.iter_mut().zip(row) {
            *a += v;
        }
    }
    LstmGrads {
        x: swap01(&dx_tm, t, n, d),
        w_ih: dw_ih,
        w_hh: dw_hh,
        bias: db,
        h0: dh_next,
        c0: dc,
    }
}

fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

#[derive(Debug)]
struct LstmBackward;

impl Backward<Flex, 6> for LstmBackward {
    /// Inputs `x, w_ih, w_hh, h0, c0`, what the forward pass kept, the sizes.
    type State = ([FlexTensor; 5], Saved, LstmDims);

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let ([x, w_ih, w_hh, h0, c0], saved, dims) = ops.state;
        let LstmDims { n, t, d, h } = dims;
        let g = backward([&x, &w_ih, &w_hh, &h0, &c0, &dy].map(slice), &saved, dims);
        let out = [
            flex_tensor(g.x, [n, t, d]),
            flex_tensor(g.w_ih, [d, 4 * h]),
            flex_tensor(g.w_hh, [h, 4 * h]),
            flex_tensor(g.bias, [4 * h]),
            flex_tensor(g.h0, [n, h]),
            flex_tensor(g.c0, [n, h]),
        ];
        for (node, grad) in ops.parents.into_iter().zip(out) {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// The layer on flex tensors: `[N, T + 1, H]` (hidden states, then the last cell state),
/// differentiable when the device has autodiff; `None` when the tensors are not (all) flex
/// f32 primitives of the kind expected.
pub(crate) fn lstm(
    inputs: [&Tensor<3>; 1],
    params: [&Tensor<2>; 2],
    bias: &Tensor<1>,
    state: [&Tensor<2>; 2],
    dims: LstmDims,
) -> Option<Tensor<3>> {
    let [x] = inputs;
    let [w_ih, w_hh] = params;
    let [h0, c0] = state;
    let f32s = [
        x.dtype(),
        w_ih.dtype(),
        w_hh.dtype(),
        bias.dtype(),
        h0.dtype(),
        c0.dtype(),
    ];
    if f32s.iter().any(|&d| d != DType::F32) {
        return None;
    }
    let shape = [dims.n, dims.t + 1, dims.h];
    if !x.device().is_autodiff() {
        let x = values(&x.clone().try_into_primitive::<Flex>().ok()?);
        let w_ih = values(&w_ih.clone().try_into_primitive::<Flex>().ok()?);
        let w_hh = values(&w_hh.clone().try_into_primitive::<Flex>().ok()?);
        let b = values(&bias.clone().try_into_primitive::<Flex>().ok()?);
        let h0 = values(&h0.clone().try_into_primitive::<Flex>().ok()?);
        let c0 = values(&c0.clone().try_into_primitive::<Flex>().ok()?);
        let (y, _) = forward([&x, &w_ih, &w_hh, &b, &h0, &c0].map(slice), dims);
        return Some(Tensor::from_primitive::<Flex>(flex_tensor(y, shape)));
    }
    let ad = |t: Tensor<2>| t.try_into_primitive::<AdFlex>().ok();
    let x = x.clone().try_into_primitive::<AdFlex>().ok()?;
    let (w_ih, w_hh, h0, c0) = (
        ad(w_ih.clone())?,
        ad(w_hh.clone())?,
        ad(h0.clone())?,
        ad(c0.clone())?,
    );
    let bias = bias.clone().try_into_primitive::<AdFlex>().ok()?;
    let nodes = [
        x.node(),
        w_ih.node(),
        w_hh.node(),
        bias.node(),
        h0.node(),
        c0.node(),
    ];
    let prims = [
        values(x.primitive()),
        values(w_ih.primitive()),
        values(w_hh.primitive()),
        values(h0.primitive()),
        values(c0.primitive()),
    ];
    let b = values(bias.primitive());
    let [xs, wis, whs, h0s, c0s] =
        [&prims[0], &prims[1], &prims[2], &prims[3], &prims[4]].map(slice);
    let (y, saved) = forward([xs, wis, whs, slice(&b), h0s, c0s], dims);
    let y = flex_tensor(y, shape);
    let out = match LstmBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((prims, saved, dims), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<AdFlex>(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_sigmoid_and_tanh_are_within_a_few_ulp_of_f64() {
        let mut worst = [0f64; 3];
        let mut x = -30.0f32;
        while x <= 30.0 {
            let xd = x as f64;
            let e = (exp(x) as f64 - xd.exp()).abs() / xd.exp();
            let s = (sigmoid(x) as f64 - 1.0 / (1.0 + (-xd).exp())).abs();
            let t = (tanh(x) as f64 - xd.tanh()).abs();
            worst = [worst[0].max(e), worst[1].max(s), worst[2].max(t)];
            x += 1e-3;
        }
        assert!(worst[0] < 3e-7, "exp relative error {}", worst[0]);
        assert!(worst[1] < 2e-7, "sigmoid absolute error {}", worst[1]);
        assert!(worst[2] < 4e-7, "tanh absolute error {}", worst[2]);
        assert!(sigmoid(-200.0) < 1e-37);
        assert!(exp(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
        assert_eq!(sigmoid(200.0), 1.0);
    }
}
