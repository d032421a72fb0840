//! The flex side of [`super::lstm_sequence`] and [`super::lstm_sequence_lookup`]: a whole
//! LSTM layer (all time steps) as one operation on Burn's autodiff graph, with its backward
//! pass through time written out.
//!
//! Built from Burn operations, one LSTM step is a dozen tensor operations and as many graph
//! nodes forward and backward; at hidden 256, batch 32 and 64 steps the framework overhead
//! and the small products made a training step five times PyTorch's. Here:
//!
//! - The batch is split over the threads once: sequences are independent through time, so
//!   each thread runs its block of sequences over every step with no synchronisation.
//! - Weights packed once per call ([`PackedRhs`]); `x_t W_ih + b` computed for eight steps
//!   at a time as one product, so that each step's product is `h_{t-1} W_hh` alone (whose
//!   packed weights, 1 MB at hidden 256, stay in L2), then one vectorised loop for the
//!   gates; backward, the product `dG_s W_hhᵀ` per step, with dG written straight into the
//!   packed layout, then read from it by one product `dG W_ihᵀ` per thread for the input
//!   gradient and one `[x_t, h_{t-1}]ᵀ dG` over the whole sequence for the weights'.
//! - With a lookup table ([`lstm_lookup`]) the input side is the token's row of
//!   `E W_ih + b`, copied into the step's pre-activations; backward, dG summed per token is
//!   the table's gradient, and neither `dG W_ihᵀ` nor `W_ih`'s rows of the weight gradient
//!   are computed (the saved rows are `h_{t-1}` alone).
//! - The output is `[N T + N, H]`: the hidden states batch-major, then the last cell states,
//!   so that the hidden states are a view of its leading rows ([`rows`], whose backward pass
//!   writes the full gradient in one pass instead of Burn's zero-then-assign).
//! - Large buffers are reused between calls instead of zeroed afresh.
//!
//! Gate order along the weights' `4H` columns is PyTorch's: input, forget, cell (g), output.

use std::sync::{Arc, Mutex};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::conv_cpu::{slice, values};
use super::packed::{Init, PackedRhs};

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
    /// `c0 [N, H]`, or `None` when they do not fit together or are empty (only `D` may be 0:
    /// the input side of [`lstm_lookup`]).
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
        (fits && n * t * h > 0).then_some(LstmDims { n, t, d, h })
    }
}

/// The layer's input side: `x [N, T, D]` times `W_ih [D, 4H]` plus the bias, or
/// `x_t W_ih + b` already computed for every input value and looked up per token (`ids
/// [N, T]` into `table [V, 4H]`; then [`LstmDims`]' `d` is 0).
#[derive(Debug, Clone, Copy)]
enum Input<'a> {
    Dense {
        x: &'a [f32],
        w_ih: &'a [f32],
        bias: &'a [f32],
    },
    Lookup {
        ids: &'a [u32],
        table: &'a [f32],
    },
}

/// `e^x` in single precision without a library call (Cephes' `expf`: range reduction by
/// powers of two and a degree-6 polynomial, within 2 ulp), so that loops over it vectorise.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    // max/min and a select rather than `clamp` (branches, which keep loops over it scalar);
    // a NaN stays NaN, so that a diverged layer is not hidden.
    #[allow(clippy::manual_clamp)]
    let clamped = x.max(-87.0).min(88.0);
    let x = if x.is_nan() { x } else { clamped };
    // Round to nearest without `round` (a library call on baseline x86-64): adding 1.5 * 2^23
    // leaves n in the low mantissa bits, `0x4B40_0000 + n`.
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    // 2^n from those bits by integer arithmetic (`n as i32` is a saturating conversion,
    // which does not vectorise): shifting by 23 drops 0x4B40_0000, leaving (n + 127) << 23.
    p * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
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
    let gates = gi
        .iter_mut()
        .zip(gf.iter_mut())
        .zip(gg.iter_mut())
        .zip(go.iter_mut());
    let states = c.iter_mut().zip(h_out.iter_mut()).zip(c_prev);
    for ((((i, f), g), o), ((c, h_out), &c_prev)) in gates.zip(states) {
        (*i, *f, *g, *o) = (sigmoid(*i), sigmoid(*f), tanh(*g), sigmoid(*o));
        *c = *f * c_prev + *i * *g;
        *h_out = *o * tanh(*c);
    }
}

/// One sequence's step backward: from the gradient reaching `h` (`dy` from the layer's
/// output plus `dh_next` from the next step) and the cell
/// gradient from the next step (`dc`, updated in place to the one for the previous step),
/// the gradients of the four gates' pre-activations.
#[inline(always)]
fn cell_backward(
    acts: &[f32],
    c: &[f32],
    c_prev: &[f32],
    dy: &[f32],
    dh_next: &[f32],
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
    let dh = dy.iter().zip(dh_next).map(|(y, next)| y + next);
    let cells = c.iter().zip(c_prev).zip(dh).zip(dc.iter_mut());
    for (((((&i, &f), &g), &o), (((di, df), dg), d_o)), (((&c, &c_prev), dh), dc)) in
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
    ($vis:vis $name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        $vis fn $name($($arg: $ty),*) {
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

simd_dispatch!(cells_forward_auto, cell_forward, (gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h_out: &mut [f32]));

/// [`cell_forward`] on the widest vectors the CPU has: on AVX-512 with the reciprocals of
/// the five sigmoids and tanhs from `rcp14` and a Newton step instead of divisions (the
/// loop's bottleneck), else compiled from the scalar form.
fn cells_forward(gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h_out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(simd(), Simd::Avx512) {
        // SAFETY: the CPU has AVX-512F (`simd`).
        return unsafe { avx512::cell_forward(gates, c_prev, c, h_out) };
    }
    cells_forward_auto(gates, c_prev, c, h_out)
}

/// The gate loop in AVX-512 intrinsics, 16 values at a time, the tail masked.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::exp`], lane-wise, with fused multiply-adds.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn exp(x: __m512) -> __m512 {
        let set = _mm512_set1_ps;
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let xc = _mm512_max_ps(_mm512_min_ps(x, set(88.0)), set(-87.0));
        let shift = set(12_582_912.0);
        let shifted = _mm512_fmadd_ps(xc, set(std::f32::consts::LOG2_E), shift);
        let n = _mm512_sub_ps(shifted, shift);
        let r = _mm512_fnmadd_ps(n, set(0.693_359_4), xc);
        let r = _mm512_fmadd_ps(n, set(2.121_944_4e-4), r);
        let mut p = set(1.987_569_1e-4);
        for c in [
            1.398_2e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, set(c));
        }
        let p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), set(1.0));
        let bits = _mm512_add_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(127));
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(bits));
        _mm512_mask_mov_ps(_mm512_mul_ps(p, scale), nan, x)
    }

    /// `1 / d` from `rcp14` (14 bits) and one Newton step (about 28).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn recip(d: __m512) -> __m512 {
        let r = _mm512_rcp14_ps(d);
        _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sigmoid(x: __m512) -> __m512 {
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
        recip(_mm512_add_ps(_mm512_set1_ps(1.0), e))
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn tanh(x: __m512) -> __m512 {
        let e = exp(_mm512_mul_ps(x, _mm512_set1_ps(-2.0)));
        let s = recip(_mm512_add_ps(_mm512_set1_ps(1.0), e));
        _mm512_fmsub_ps(s, _mm512_set1_ps(2.0), _mm512_set1_ps(1.0))
    }

    /// [`super::cell_forward`].
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn cell_forward(
        gates: &mut [f32],
        c_prev: &[f32],
        c: &mut [f32],
        h_out: &mut [f32],
    ) {
        let h = c.len();
        assert!(gates.len() == 4 * h && c_prev.len() == h && h_out.len() == h);
        let g = gates.as_mut_ptr();
        for j in (0..h).step_by(16) {
            let mask: __mmask16 = if h - j >= 16 {
                0xFFFF
            } else {
                (1u16 << (h - j)) - 1
            };
            // SAFETY: the mask keeps every access within the gate's and the states' h values
            // (asserted above).
            unsafe {
                let load = |p: *const f32| _mm512_maskz_loadu_ps(mask, p);
                let i = sigmoid(load(g.add(j)));
                let f = sigmoid(load(g.add(h + j)));
                let gg = tanh(load(g.add(2 * h + j)));
                let o = sigmoid(load(g.add(3 * h + j)));
                _mm512_mask_storeu_ps(g.add(j), mask, i);
                _mm512_mask_storeu_ps(g.add(h + j), mask, f);
                _mm512_mask_storeu_ps(g.add(2 * h + j), mask, gg);
                _mm512_mask_storeu_ps(g.add(3 * h + j), mask, o);
                let cell = _mm512_fmadd_ps(f, load(c_prev.as_ptr().add(j)), _mm512_mul_ps(i, gg));
                _mm512_mask_storeu_ps(c.as_mut_ptr().add(j), mask, cell);
                _mm512_mask_storeu_ps(
                    h_out.as_mut_ptr().add(j),
                    mask,
                    _mm512_mul_ps(o, tanh(cell)),
                );
            }
        }
    }
}
simd_dispatch!(cells_backward, cell_backward, (acts: &[f32], c: &[f32], c_prev: &[f32], dy: &[f32], dh_next: &[f32], dc: &mut [f32], dgates: &mut [f32]));

/// What the forward pass keeps for the backward pass. The batch is cut into blocks of
/// `per` sequences (one per thread, the last maybe shorter); inside a block, rows are
/// time-major (`[T, m, ..]`), so that a step's rows are contiguous.
#[derive(Debug, Clone)]
struct Saved {
    /// Gate activations, `[N T, 4H]` in block order.
    acts: Arc<Vec<f32>>,
    /// Cell states, `[N T, H]` in block order.
    cells: Arc<Vec<f32>>,
    /// Every step's product input `[x_t, h_{t-1}]`, `[N T, D + H]` in block order.
    inputs: Arc<Vec<f32>>,
    /// Sequences per block.
    per: usize,
}

/// Buffers of earlier calls, reused: a fresh zeroed buffer costs a `memset` on one thread
/// (or page faults) of megabytes per call, where every element is about to be written.
static SPARE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// At most this many bytes are kept in [`SPARE`].
const SPARE_BYTES: usize = 256 << 20;

/// A buffer of `len` values whose contents are those of an earlier use (any f32s, or
/// zeros): every element must be written before it is read.
fn buffer(len: usize) -> Vec<f32> {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    let fits = spare
        .iter()
        .position(|v| v.capacity() >= len && v.capacity() <= 2 * len);
    let Some(i) = fits else {
        drop(spare);
        return vec![0f32; len];
    };
    let mut v = spare.swap_remove(i);
    drop(spare);
    // Only a part beyond the earlier length is zeroed.
    v.resize(len, 0.0);
    v
}

/// Returns a buffer of [`buffer`] (or any large one) for reuse.
fn recycle(v: Vec<f32>) {
    if v.capacity() < 1 << 14 {
        return;
    }
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    let held: usize = spare.iter().map(|v| v.capacity() * 4).sum();
    if held + v.capacity() * 4 <= SPARE_BYTES {
        spare.push(v);
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        for buf in [&mut self.acts, &mut self.cells, &mut self.inputs] {
            if let Some(v) = Arc::get_mut(buf) {
                recycle(std::mem::take(v));
            }
        }
    }
}

/// Sequences per rayon task: the batch split over the threads. Sequences are independent
/// through time, so each task runs its block over every step with no synchronisation.
fn per_task(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// The forward pass: `y [N T + N, H]`, every sequence's hidden states (row `b T + s`),
/// then every sequence's last cell state (row `N T + b`). Runs inside the rayon pool so that
/// the tasks do not pay a cross-thread handoff.
fn forward(input: Input, state: [&[f32]; 3], dims: LstmDims) -> (Vec<f32>, Saved) {
    rayon::join(|| forward_in_pool(input, state, dims), || ()).0
}

/// Steps whose input products `x_t W_ih + b` are computed together, as one product of
/// `CHUNK m` rows (the per-step product is then `h_{t-1} W_hh` alone, whose packed weights
/// are a quarter smaller and stay in L2).
const CHUNK: usize = 8;

fn forward_in_pool(
    input: Input,
    [w_hh, h0, c0]: [&[f32]; 3],
    LstmDims { n, t, d, h }: LstmDims,
) -> (Vec<f32>, Saved) {
    let (g4, k) = (4 * h, d + h);
    // W_ih and W_hh, packed once for every step.
    let (x, w_x, lookup) = match input {
        Input::Dense { x, w_ih, bias } => (
            x,
            Some((PackedRhs::new(w_ih, [d, g4], [g4, 1]), bias)),
            None,
        ),
        Input::Lookup { ids, table } => (&[][..], None, Some((ids, table))),
    };
    let w_h = PackedRhs::new(w_hh, [h, g4], [g4, 1]);
    let mut acts = buffer(n * t * g4);
    let mut cells = buffer(n * t * h);
    let mut inputs = buffer(n * t * k);
    let mut y = buffer(n * (t + 1) * h);
    let per = per_task(n);
    let (outputs, last) = y.split_at_mut(n * t * h);
    acts.par_chunks_mut(per * t * g4)
        .zip(cells.par_chunks_mut(per * t * h))
        .zip(inputs.par_chunks_mut(per * t * k))
        .zip(outputs.par_chunks_mut(per * t * h))
        .zip(last.par_chunks_mut(per * h))
        .zip(h0.par_chunks(per * h).zip(c0.par_chunks(per * h)))
        .enumerate()
        .for_each(
            |(block, (((((acts, cells), inputs), y), last), (h0, c0)))| {
                let m = h0.len() / h;
                let first = block * per;
                for (b, row) in inputs[..m * k].chunks_exact_mut(k).enumerate() {
                    row[d..].copy_from_slice(&h0[b * h..][..h]);
                }
                for s in 0..t {
                    if let Some((ids, table)) = lookup {
                        // x_t W_ih + b: the token's row of the table.
                        for b in 0..m {
                            let id = ids[(first + b) * t + s] as usize;
                            acts[(s * m + b) * g4..][..g4].copy_from_slice(&table[id * g4..][..g4]);
                        }
                    } else if let Some((w_x, bias)) = &w_x
                        && s % CHUNK == 0
                    {
                        // x_t W_ih + b for the next CHUNK steps, as one product.
                        let steps = CHUNK.min(t - s);
                        for s in s..s + steps {
                            for b in 0..m {
                                inputs[(s * m + b) * k..][..d]
                                    .copy_from_slice(&x[((first + b) * t + s) * d..][..d]);
                            }
                        }
                        let rows = s * m;
                        w_x.matmul(
                            &mut acts[rows * g4..],
                            g4,
                            &inputs[rows * k..],
                            k,
                            steps * m,
                            Init::Row(bias),
                        );
                    }
                    // + h_{t-1} W_hh.
                    let gates = &mut acts[s * m * g4..][..m * g4];
                    w_h.matmul(gates, g4, &inputs[s * m * k + d..], k, m, Init::Accumulate);
                    let next = &mut inputs[(s + 1) * m * k..];
                    let (done, now) = cells.split_at_mut(s * m * h);
                    for (b, g) in gates.chunks_exact_mut(g4).enumerate() {
                        let c_prev = if s == 0 {
                            &c0[b * h..][..h]
                        } else {
                            &done[((s - 1) * m + b) * h..][..h]
                        };
                        let c = &mut now[b * h..][..h];
                        let h_out = &mut y[(b * t + s) * h..][..h];
                        cells_forward(g, c_prev, c, h_out);
                        if s + 1 < t {
                            next[b * k + d..][..h].copy_from_slice(h_out);
                        }
                    }
                }
                // Each sequence's last cell state.
                last.copy_from_slice(&cells[(t - 1) * m * h..][..m * h]);
            },
        );
    let saved = Saved {
        acts: Arc::new(acts),
        cells: Arc::new(cells),
        inputs: Arc::new(inputs),
        per,
    };
    (y, saved)
}

/// What the backward pass needs of the input side ([`Input`]): `W_ih` for the input's
/// gradient, or the ids and the table's height for the table's.
#[derive(Debug, Clone, Copy)]
enum InputGrad<'a> {
    Dense { w_ih: &'a [f32] },
    Lookup { ids: &'a [u32], vocab: usize },
}

/// Gradients of one LSTM layer.
struct LstmGrads {
    /// `[N, T, D]` (empty for a lookup).
    x: Vec<f32>,
    /// `[D, 4H]` (empty for a lookup).
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    /// The bias's `[4H]`, or for a lookup the table's `[V, 4H]`: dG's rows summed, per
    /// token for a lookup.
    sums: Vec<f32>,
    h0: Vec<f32>,
    c0: Vec<f32>,
}

/// Backpropagation through time from `dy [N T + N, H]` (laid out as the forward pass's
/// output), inside the rayon pool.
fn backward(input: InputGrad, state: [&[f32]; 3], saved: &Saved, dims: LstmDims) -> LstmGrads {
    rayon::join(|| backward_in_pool(input, state, saved, dims), || ()).0
}

fn backward_in_pool(
    input: InputGrad,
    [w_hh, c0, dy]: [&[f32]; 3],
    saved: &Saved,
    LstmDims { n, t, d, h }: LstmDims,
) -> LstmGrads {
    let (g4, k, per) = (4 * h, d + h, saved.per);
    let (acts, cells) = (&saved.acts[..], &saved.cells[..]);
    let rows = n * t;
    // dG (rows in block order, like `acts`), written straight into the packed layout of the
    // weight gradient's product: each block's rows in every panel.
    let width = PackedRhs::panel_width(g4);
    let mut dg_packed = buffer(g4.div_ceil(width) * rows * width);
    let mut parts: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(per)).map(|_| Vec::new()).collect();
    for panel in dg_packed.chunks_exact_mut(rows * width) {
        for (part, rows) in parts.iter_mut().zip(panel.chunks_mut(per * t * width)) {
            part.push(rows);
        }
    }
    // Per sequence, the gradient reaching h_{s-1} from step s (ends as h0's) and the cell
    // gradient (starts as the last cell state's, ends as c0's).
    let mut dh = vec![0f32; n * h];
    let mut dc = vec![0f32; n * h];
    // (At least one value per row, so that the blocks below are not empty for a lookup.)
    let mut dx = vec![0f32; rows * d.max(1)];
    // W_hhᵀ `[4H, H]` and W_ihᵀ `[4H, D]`, packed once: every step's dh_{s-1} = dG_s W_hhᵀ,
    // and each block's dx = dG W_ihᵀ after its steps.
    let w_hh_t = PackedRhs::new(w_hh, [g4, h], [1, g4]);
    let (w_ih_t, lookup) = match input {
        InputGrad::Dense { w_ih } => (Some(PackedRhs::new(w_ih, [g4, d], [1, g4])), None),
        InputGrad::Lookup { ids, vocab } => (None, Some((ids, vocab))),
    };
    let sums_len = lookup.map_or(g4, |(_, vocab)| vocab * g4);
    let (dy, dlast) = dy.split_at(n * t * h);
    let sums = parts
        .into_par_iter()
        .zip(acts.par_chunks(per * t * g4))
        .zip(cells.par_chunks(per * t * h))
        .zip(dy.par_chunks(per * t * h).zip(dlast.par_chunks(per * h)))
        .zip(
            c0.par_chunks(per * h)
                .zip(dx.par_chunks_mut(per * t * d.max(1))),
        )
        .zip(dh.par_chunks_mut(per * h).zip(dc.par_chunks_mut(per * h)))
        .enumerate()
        .map(
            |(block, (((((mut panels, acts), cells), (dy, dlast)), (c0, dx)), (dh, dc)))| {
                let m = c0.len() / h;
                let first = block * per;
                dc.copy_from_slice(dlast);
                // This step's dG rows, and the block's bias (or table) gradient.
                let (mut dg, mut db) = (vec![0f32; m * g4], vec![0f32; sums_len]);
                for s in (0..t).rev() {
                    for (b, dg) in dg.chunks_exact_mut(g4).enumerate() {
                        let row = s * m + b;
                        let c_prev = if s == 0 {
                            &c0[b * h..][..h]
                        } else {
                            &cells[(row - m) * h..][..h]
                        };
                        cells_backward(
                            &acts[row * g4..][..g4],
                            &cells[row * h..][..h],
                            c_prev,
                            &dy[(b * t + s) * h..][..h],
                            &dh[b * h..][..h],
                            &mut dc[b * h..][..h],
                            dg,
                        );
                        for (p, panel) in panels.iter_mut().enumerate() {
                            let cols = width.min(g4 - p * width);
                            let dst = &mut panel[row * width..][..width];
                            dst[..cols].copy_from_slice(&dg[p * width..][..cols]);
                            dst[cols..].fill(0.0);
                        }
                    }
                    match lookup {
                        Some((ids, _)) => {
                            for (b, dg) in dg.chunks_exact(g4).enumerate() {
                                let id = ids[(first + b) * t + s] as usize;
                                add_rows(&mut db[id * g4..][..g4], dg);
                            }
                        }
                        None => add_rows(&mut db, &dg),
                    }
                    // dh_{s-1} = dG_s W_hhᵀ.
                    w_hh_t.matmul(dh, h, &dg, g4, m, Init::Zero);
                }
                // dx = dG W_ihᵀ for the whole block at once, dG read from its packed rows (per
                // step, as before, W_ihᵀ's packed values shared L2 with W_hhᵀ's: 2.5% slower).
                if let Some(w_ih_t) = &w_ih_t {
                    let panels: Vec<&[f32]> = panels.iter().map(|p| &p[..m * t * width]).collect();
                    let mut dx_tm = buffer(m * t * d);
                    w_ih_t.matmul_lhs_panels(&mut dx_tm, &panels, m * t);
                    for s in 0..t {
                        for b in 0..m {
                            dx[(b * t + s) * d..][..d]
                                .copy_from_slice(&dx_tm[(s * m + b) * d..][..d]);
                        }
                    }
                    recycle(dx_tm);
                }
                db
            },
        )
        .reduce(
            || vec![0f32; sums_len],
            |mut a, b| {
                add_rows(&mut a, &b);
                a
            },
        );
    // Both weight gradients in one product: the saved [x_t, h_{t-1}] rows transposed times
    // dG (same row order), `[D + H, 4H]`, whose first D rows are dW_ih and the rest dW_hh
    // (a lookup has D = 0: dW_hh alone).
    let dg = PackedRhs::from_panels(dg_packed, [rows, g4]);
    let mut dw = vec![0f32; k * g4];
    dg.matmul_par(&mut dw, &saved.inputs, [1, k], k);
    recycle(dg.into_values());
    let dw_hh = dw.split_off(d * g4);
    let dw_ih = dw;
    dx.truncate(rows * d);
    LstmGrads {
        x: dx,
        w_ih: dw_ih,
        w_hh: dw_hh,
        sums,
        h0: dh,
        c0: dc,
    }
}

/// `sums += ` every `sums.len()`-wide row of `block`.
#[inline(always)]
fn add_row_block(sums: &mut [f32], block: &[f32]) {
    for row in block.chunks_exact(sums.len()) {
        for (a, v) in sums.iter_mut().zip(row) {
            *a += v;
        }
    }
}

simd_dispatch!(pub(super) add_rows, add_row_block, (sums: &mut [f32], block: &[f32]));

fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

#[derive(Debug)]
struct LstmBackward;

impl Backward<Flex, 6> for LstmBackward {
    /// Inputs `w_ih, w_hh, c0`, what the forward pass kept, the sizes.
    type State = ([FlexTensor; 3], Saved, LstmDims);

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let ([w_ih, w_hh, c0], saved, dims) = ops.state;
        let LstmDims { n, t, d, h } = dims;
        let input = InputGrad::Dense { w_ih: slice(&w_ih) };
        let g = backward(input, [&w_hh, &c0, &dy].map(slice), &saved, dims);
        let out = [
            flex_tensor(g.x, [n, t, d]),
            flex_tensor(g.w_ih, [d, 4 * h]),
            flex_tensor(g.w_hh, [h, 4 * h]),
            flex_tensor(g.sums, [4 * h]),
            flex_tensor(g.h0, [n, h]),
            flex_tensor(g.c0, [n, h]),
        ];
        register(ops.parents.map(|p| p.map(|node| node.id)), out, grads);
    }
}

/// Registers each gradient for its parent node, where that node tracks one.
fn register<const N: usize>(
    parents: [Option<NodeId>; N],
    out: [FlexTensor; N],
    grads: &mut Gradients,
) {
    for (node, grad) in parents.into_iter().zip(out) {
        if let Some(node) = node {
            grads.register::<Flex>(node, grad);
        }
    }
}

#[derive(Debug)]
struct LstmLookupBackward;

impl Backward<Flex, 4> for LstmLookupBackward {
    /// Inputs `w_hh, c0`, the token ids, what the forward pass kept, the sizes and the
    /// table's height.
    type State = ([FlexTensor; 2], Arc<Vec<u32>>, Saved, LstmDims, usize);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let ([w_hh, c0], ids, saved, dims, vocab) = ops.state;
        let LstmDims { n, h, .. } = dims;
        let input = InputGrad::Lookup { ids: &ids, vocab };
        let g = backward(input, [&w_hh, &c0, &dy].map(slice), &saved, dims);
        let out = [
            flex_tensor(g.sums, [vocab, 4 * h]),
            flex_tensor(g.w_hh, [h, 4 * h]),
            flex_tensor(g.h0, [n, h]),
            flex_tensor(g.c0, [n, h]),
        ];
        register(ops.parents.map(|p| p.map(|node| node.id)), out, grads);
    }
}

/// The layer on flex tensors: `[N T + N, H]` (every sequence's hidden states, batch-major,
/// then every sequence's last cell state), differentiable when the device has autodiff;
/// `None` when the tensors are not (all) flex f32 primitives of the kind expected.
pub(crate) fn lstm(
    inputs: [&Tensor<3>; 1],
    params: [&Tensor<2>; 2],
    bias: &Tensor<1>,
    state: [&Tensor<2>; 2],
    dims: LstmDims,
) -> Option<Tensor<2>> {
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
    if f32s.iter().any(|&d| d != DType::F32) || dims.d == 0 {
        return None;
    }
    let shape = [dims.n * (dims.t + 1), dims.h];
    if !x.device().is_autodiff() {
        let x = values(&x.clone().try_into_primitive::<Flex>().ok()?);
        let w_ih = values(&w_ih.clone().try_into_primitive::<Flex>().ok()?);
        let w_hh = values(&w_hh.clone().try_into_primitive::<Flex>().ok()?);
        let b = values(&bias.clone().try_into_primitive::<Flex>().ok()?);
        let h0 = values(&h0.clone().try_into_primitive::<Flex>().ok()?);
        let c0 = values(&c0.clone().try_into_primitive::<Flex>().ok()?);
        let [x, w_ih, bias] = [&x, &w_ih, &b].map(slice);
        let input = Input::Dense { x, w_ih, bias };
        let (y, _) = forward(input, [&w_hh, &h0, &c0].map(slice), dims);
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
    let [xs, wis, whs, bs, h0s, c0s] = [
        x.primitive(),
        w_ih.primitive(),
        w_hh.primitive(),
        bias.primitive(),
        h0.primitive(),
        c0.primitive(),
    ]
    .map(values);
    let [x, w_ih, bias] = [&xs, &wis, &bs].map(slice);
    let input = Input::Dense { x, w_ih, bias };
    let (y, saved) = forward(input, [&whs, &h0s, &c0s].map(slice), dims);
    // The backward pass needs the weights and c0 (x and h0 are inside `saved`).
    let kept = [wis, whs, c0s];
    let y = flex_tensor(y, shape);
    let out = match LstmBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((kept, saved, dims), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<AdFlex>(out))
}

/// [`lstm`] with the input side looked up: step `s` of sequence `b` adds row
/// `ids[b, s]` of `table [V, 4H]` (`x_t W_ih + b` for every input value) to `h_{t-1} W_hh`.
/// `dims.d` must be 0. `None` when the tensors are not flex f32 primitives of the kind
/// expected, or an id is not a row of the table.
pub(crate) fn lstm_lookup(
    ids: &Tensor<2, Int>,
    table: &Tensor<2>,
    w_hh: &Tensor<2>,
    state: [&Tensor<2>; 2],
    dims: LstmDims,
) -> Option<Tensor<2>> {
    let [h0, c0] = state;
    let f32s = [table.dtype(), w_hh.dtype(), h0.dtype(), c0.dtype()];
    let [vocab, width] = table.dims();
    if f32s.iter().any(|&d| d != DType::F32)
        || dims.d != 0
        || width != 4 * dims.h
        || ids.dims() != [dims.n, dims.t]
    {
        return None;
    }
    let ids: Vec<u32> = ids
        .clone()
        .into_data()
        .convert::<i64>()
        .iter::<i64>()
        .map(|id| u32::try_from(id).ok().filter(|&id| (id as usize) < vocab))
        .collect::<Option<_>>()?;
    let shape = [dims.n * (dims.t + 1), dims.h];
    if !table.device().is_autodiff() {
        let [table, w_hh, h0, c0] = [table, w_hh, h0, c0].map(|t| {
            t.clone()
                .try_into_primitive::<Flex>()
                .ok()
                .map(|p| values(&p))
        });
        let [table, w_hh, h0, c0] = [table?, w_hh?, h0?, c0?];
        let input = Input::Lookup {
            ids: &ids,
            table: slice(&table),
        };
        let (y, _) = forward(input, [&w_hh, &h0, &c0].map(slice), dims);
        return Some(Tensor::from_primitive::<Flex>(flex_tensor(y, shape)));
    }
    let [table, w_hh, h0, c0] =
        [table, w_hh, h0, c0].map(|t| t.clone().try_into_primitive::<AdFlex>().ok());
    let [table, w_hh, h0, c0] = [table?, w_hh?, h0?, c0?];
    let nodes = [table.node(), w_hh.node(), h0.node(), c0.node()];
    let [tables, whs, h0s, c0s] = [
        table.primitive(),
        w_hh.primitive(),
        h0.primitive(),
        c0.primitive(),
    ]
    .map(values);
    let input = Input::Lookup {
        ids: &ids,
        table: slice(&tables),
    };
    let (y, saved) = forward(input, [&whs, &h0s, &c0s].map(slice), dims);
    let y = flex_tensor(y, shape);
    let out = match LstmLookupBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(([whs, c0s], Arc::new(ids), saved, dims, vocab), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<AdFlex>(out))
}

/// Rows `start..start + len` of a 2D tensor (the layer's hidden states out of its output).
/// Forward a view, as `narrow`; on flex with autodiff the backward pass builds the
/// full-size gradient in one pass (Burn's slice backward zeroes the whole tensor, then
/// assigns the rows: two passes over megabytes, for every training step).
pub(crate) fn rows(y: Tensor<2>, start: usize, len: usize) -> Tensor<2> {
    let is_flex = crate::Backend::of(&y.device()) == Some(crate::Backend::Flex);
    if !is_flex || !y.device().is_autodiff() || y.dtype() != DType::F32 {
        return y.narrow(0, start, len);
    }
    let [total, cols] = y.dims();
    let ad = match y.clone().try_into_primitive::<AdFlex>() {
        Ok(ad) => ad,
        Err(_) => return y.narrow(0, start, len),
    };
    let view = Tensor::<2>::from_primitive::<Flex>(ad.primitive().clone()).narrow(0, start, len);
    let Ok(view) = view.try_into_primitive::<Flex>() else {
        return y.narrow(0, start, len);
    };
    let out = match RowsBackward
        .prepare::<NoCheckpointing>([ad.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(([total, cols], start), view),
        OpsKind::UnTracked(prep) => prep.finish(view),
    };
    Tensor::from_primitive::<AdFlex>(out)
}

#[derive(Debug)]
struct RowsBackward;

impl Backward<Flex, 1> for RowsBackward {
    /// The input's shape and the first row taken.
    type State = ([usize; 2], usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let ([total, cols], start) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let dy = slice(&dy);
            let mut full = Vec::with_capacity(total * cols);
            full.resize(start * cols, 0.0);
            full.extend_from_slice(dy);
            full.resize(total * cols, 0.0);
            grads.register::<Flex>(node.id, flex_tensor(full, [total, cols]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 gate loop against the scalar one: a width with a masked tail, values from
    /// saturated to small, and a NaN that must reach the cell and hidden states.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_gate_loop_equals_the_scalar_one() {
        if !matches!(simd(), Simd::Avx512) {
            return;
        }
        let h = 37;
        let value = |i: usize| ((i * 7919) % 2001) as f32 / 20.0 - 50.0;
        let mut pre: Vec<f32> = (0..4 * h).map(value).collect();
        pre[5] = f32::NAN;
        pre[h + 9] = 120.0;
        pre[2 * h + 11] = -120.0;
        let c_prev: Vec<f32> = (0..h).map(|i| value(i + 400) / 10.0).collect();
        let (mut g1, mut c1, mut h1) = (pre.clone(), vec![0f32; h], vec![0f32; h]);
        let (mut g2, mut c2, mut h2) = (pre, vec![0f32; h], vec![0f32; h]);
        cell_forward(&mut g1, &c_prev, &mut c1, &mut h1);
        // SAFETY: checked above that the CPU has AVX-512F.
        unsafe { avx512::cell_forward(&mut g2, &c_prev, &mut c2, &mut h2) };
        let pairs = g1
            .iter()
            .zip(&g2)
            .chain(c1.iter().zip(&c2))
            .chain(h1.iter().zip(&h2));
        for (a, b) in pairs {
            assert!(a.is_nan() == b.is_nan(), "{a} vs {b}");
            assert!(
                a.is_nan() || (a - b).abs() <= 2e-6 * a.abs().max(1.0),
                "{a} vs {b}"
            );
        }
        assert!(c2[5].is_nan() && h2[5].is_nan());
    }

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
