//! The LSTM layer's forward pass and its backpropagation through time on slices: the batch
//! split over the threads, the weights packed once per call ([`PackedRhs`]), and the
//! per-step cell arithmetic of [`super::cell`]. See [`super`] for the design.

use std::sync::Arc;

use rayon::prelude::*;

use super::cell::{cells_backward, cells_forward};
use crate::math::add_rows;
use crate::packed::{Init, PackedRhs};
use crate::scratch;

/// Sizes of one LSTM layer: batch, steps, input width, hidden width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LstmDims {
    /// Sequences.
    pub n: usize,
    /// Steps.
    pub t: usize,
    /// Input width (0 for a looked-up input side).
    pub d: usize,
    /// Hidden width.
    pub h: usize,
}

impl LstmDims {
    /// The sizes of `x [N, T, D]` with `w_ih [D, 4H]`, `w_hh [H, 4H]`, `bias [4H]`, `h0` and
    /// `c0 [N, H]`, or `None` when they do not fit together or are empty (only `D` may be 0:
    /// the input side of `lstm_lookup`).
    pub fn new(
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
pub enum Input<'a> {
    /// `x [N, T, D]`, `W_ih [D, 4H]`, `b [4H]`.
    Dense {
        /// The inputs.
        x: &'a [f32],
        /// The input weights.
        w_ih: &'a [f32],
        /// The bias.
        bias: &'a [f32],
    },
    /// `ids [N, T]` into `table [V, 4H]`.
    Lookup {
        /// The token ids, each below `V`.
        ids: &'a [u32],
        /// `x W_ih + b` for every token.
        table: &'a [f32],
    },
}

/// What the forward pass keeps for the backward pass. The batch is cut into blocks of
/// `per` sequences (one per thread, the last maybe shorter); inside a block, rows are
/// time-major (`[T, m, ..]`), so that a step's rows are contiguous.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Gate activations, `[N T, 4H]` in block order.
    acts: Arc<Vec<f32>>,
    /// Cell states, `[N T, H]` in block order.
    cells: Arc<Vec<f32>>,
    /// Every step's product input `[x_t, h_{t-1}]`, `[N T, D + H]` in block order.
    inputs: Arc<Vec<f32>>,
    /// Sequences per block.
    per: usize,
}

impl Drop for Saved {
    fn drop(&mut self) {
        for buf in [&mut self.acts, &mut self.cells, &mut self.inputs] {
            if let Some(v) = Arc::get_mut(buf) {
                scratch::give(std::mem::take(v));
            }
        }
    }
}

/// Asserts that the forward pass's operands have the lengths `dims` says, and that every
/// id is a row of the table.
fn check_forward(input: Input, [w_hh, h0, c0]: [&[f32]; 3], dims: LstmDims) {
    let LstmDims { n, t, d, h } = dims;
    let g4 = 4 * h;
    let input_ok = match input {
        Input::Dense { x, w_ih, bias } => {
            x.len() == n * t * d && w_ih.len() == d * g4 && bias.len() == g4
        }
        Input::Lookup { ids, table } => {
            let vocab = table.len() / g4.max(1);
            d == 0
                && ids.len() == n * t
                && table.len() == vocab * g4
                && ids.iter().all(|&id| (id as usize) < vocab)
        }
    };
    assert!(
        n * t * h > 0 && input_ok && w_hh.len() == h * g4 && h0.len() == n * h && c0.len() == n * h,
        "LSTM layer {dims:?}: operands of the wrong lengths, or an id past the table"
    );
}

/// Asserts that the backward pass's operands and what the forward pass kept fit `dims`.
fn check_backward(input: InputGrad, [w_hh, c0, dy]: [&[f32]; 3], saved: &Saved, dims: LstmDims) {
    let LstmDims { n, t, d, h } = dims;
    let g4 = 4 * h;
    let input_ok = match input {
        InputGrad::Dense { w_ih } => w_ih.len() == d * g4,
        InputGrad::Lookup { ids, vocab } => {
            d == 0 && ids.len() == n * t && ids.iter().all(|&id| (id as usize) < vocab)
        }
    };
    assert!(
        n * t * h > 0
            && input_ok
            && w_hh.len() == h * g4
            && c0.len() == n * h
            && dy.len() == n * (t + 1) * h
            && saved.per > 0
            && saved.acts.len() == n * t * g4
            && saved.cells.len() == n * t * h
            && saved.inputs.len() == n * t * (d + h),
        "LSTM backward {dims:?}: operands of the wrong lengths, or not this layer's forward pass"
    );
}

/// Sequences per rayon task: the batch split over the threads. Sequences are independent
/// through time, so each task runs its block over every step with no synchronisation.
fn per_task(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// The forward pass: `y [N T + N, H]`, every sequence's hidden states (row `b T + s`),
/// then every sequence's last cell state (row `N T + b`). Runs inside the rayon pool so that
/// the tasks do not pay a cross-thread handoff.
pub fn forward(input: Input, state: [&[f32]; 3], dims: LstmDims) -> (Vec<f32>, Saved) {
    check_forward(input, state, dims);
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
    let mut acts = scratch::take(n * t * g4);
    let mut cells = scratch::take(n * t * h);
    let mut inputs = scratch::take(n * t * k);
    let mut y = scratch::take(n * (t + 1) * h);
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
pub enum InputGrad<'a> {
    /// `W_ih [D, 4H]`.
    Dense {
        /// The input weights.
        w_ih: &'a [f32],
    },
    /// The ids of the forward pass and the table's height `V`.
    Lookup {
        /// The token ids.
        ids: &'a [u32],
        /// The table's rows.
        vocab: usize,
    },
}

/// Gradients of one LSTM layer.
#[derive(Debug)]
pub struct LstmGrads {
    /// `[N, T, D]` (empty for a lookup).
    pub x: Vec<f32>,
    /// `[D, 4H]` (empty for a lookup).
    pub w_ih: Vec<f32>,
    /// `[H, 4H]`.
    pub w_hh: Vec<f32>,
    /// The bias's `[4H]`, or for a lookup the table's `[V, 4H]`: dG's rows summed, per
    /// token for a lookup.
    pub sums: Vec<f32>,
    /// `[N, H]`.
    pub h0: Vec<f32>,
    /// `[N, H]`.
    pub c0: Vec<f32>,
}

/// Backpropagation through time from `dy [N T + N, H]` (laid out as the forward pass's
/// output), inside the rayon pool.
pub fn backward(input: InputGrad, state: [&[f32]; 3], saved: &Saved, dims: LstmDims) -> LstmGrads {
    check_backward(input, state, saved, dims);
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
    let mut dg_packed = scratch::take(g4.div_ceil(width) * rows * width);
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
                    let mut dx_tm = scratch::take(m * t * d);
                    w_ih_t.matmul_lhs_panels(&mut dx_tm, &panels, m * t);
                    for s in 0..t {
                        for b in 0..m {
                            dx[(b * t + s) * d..][..d]
                                .copy_from_slice(&dx_tm[(s * m + b) * d..][..d]);
                        }
                    }
                    scratch::give(dx_tm);
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
    scratch::give(dg.into_values());
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
