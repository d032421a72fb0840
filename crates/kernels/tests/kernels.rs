//! The kernels against naive references, on shapes that cover every remainder of the packed
//! kernel's tiles (1..=64 columns of a panel, 1..=6 rows of a row block, and past them), empty
//! dimensions, strided (non-contiguous) operands, and LSTM widths that are not multiples of
//! the vector width. Output buffers are exactly as long as their shapes need, so that an
//! access past them is an AddressSanitizer error (`cargo xtask asan` runs this file with
//! `-Zsanitizer=address`). Needs no Burn: the comparisons with Burn's operations are the
//! `flex` module's tests.

mod common;

use common::values;
use kiln_kernels::gemm::{Gemm, Parallelism, extent};
use kiln_kernels::lstm::{self, Input, InputGrad, LstmDims};
use kiln_kernels::packed::{Init, PackedRhs};
use proptest::prelude::*;

/// `a [m, k]` (strides `sa`) times `b [k, n]` (strides `sb`), in f64.
fn naive(a: &[f32], sa: [usize; 2], b: &[f32], sb: [usize; 2], [m, k, n]: [usize; 3]) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|x| a[i * sa[0] + x * sa[1]] as f64 * b[x * sb[0] + j * sb[1]] as f64)
                .sum();
        }
    }
    c
}

fn close(got: f32, want: f64, k: usize) -> bool {
    (got as f64 - want).abs() <= 1e-5 * (1.0 + k as f64)
}

/// Checks `matmul` of a `[k, n]` packed matrix with `m` rows of `a` at row stride `lda`,
/// into `c` at row stride `ldc`, for the three starting values; `c` holds exactly
/// `(m - 1) ldc + n` values and the gaps between rows must be left alone.
fn check_packed_product([m, k, n]: [usize; 3], lda: usize, ldc: usize) {
    let a = values(extent([m, k], [lda, 1]).unwrap(), 1);
    let b = values(k * n, 2);
    let row = values(n, 3);
    let want = naive(&a, [lda, 1], &b, [n, 1], [m, k, n]);
    let packed = PackedRhs::new(&b, [k, n], [n, 1]);
    let len = extent([m, n], [ldc, 1]).unwrap();
    for init in [Init::Zero, Init::Accumulate, Init::Row(&row)] {
        let start = values(len, 4);
        let mut c = start.clone();
        packed.matmul(&mut c, ldc, &a, lda, m, init);
        for i in 0..m {
            for j in 0..n {
                let base = match init {
                    Init::Zero => 0.0,
                    Init::Accumulate => start[i * ldc + j] as f64,
                    Init::Row(r) => r[j] as f64,
                };
                let (got, w) = (c[i * ldc + j], want[i * n + j] + base);
                assert!(
                    close(got, w, k),
                    "{m}x{k}x{n} {init:?} ({i},{j}): {got} vs {w}"
                );
            }
            if i + 1 < m {
                assert_eq!(
                    c[i * ldc + n..(i + 1) * ldc],
                    start[i * ldc + n..(i + 1) * ldc]
                );
            }
        }
    }
}

/// Every column remainder of a panel (and of a second panel) by every row count of a row
/// block (and of a second block), at depths inside one block and across two: the LSTM with
/// hidden 75 (`4H mod 64 = 44`) and every other width the microkernel masks.
#[test]
fn packed_products_cover_every_tile_remainder() {
    for n in (1..=64).chain([65, 75, 127, 128, 300]) {
        for m in 1..=13 {
            for k in [1, 3, 129] {
                check_packed_product([m, k, n], k + (m % 3), n + (n % 5));
            }
        }
    }
}

#[test]
fn empty_dimensions_write_nothing_or_zeros() {
    for [m, k, n] in [[0, 3, 5], [4, 0, 5], [4, 3, 0], [0, 0, 0]] {
        let b = values(k * n, 1);
        let packed = PackedRhs::new(&b, [k, n], [n, 1]);
        let a = values(m * k, 2);
        let mut c = vec![7f32; m * n];
        packed.matmul(&mut c, n, &a, k, m, Init::Zero);
        let want = if k == 0 { 0.0 } else { 7.0 };
        assert!(c.iter().all(|&v| v == want || m * n == 0), "{m}x{k}x{n}");
        packed.matmul_par(&mut c, &a, [k, 1], m);
        assert!(c.iter().all(|&v| v == 0.0 || k != 0), "{m}x{k}x{n}");
        let mut d = vec![7f32; m * n];
        Gemm::new([m, n, k]).run(&mut d, n, &a, [k, 1], &b, [n, 1]);
        assert!(d.iter().all(|&v| v == 0.0 || k != 0));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Packed products on random shapes and strides.
    #[test]
    fn packed_product_equals_the_naive_one(
        m in 1usize..20, k in 0usize..300, n in 1usize..140, pad_a in 0usize..4, pad_c in 0usize..4
    ) {
        check_packed_product([m, k, n], k + pad_a, n + pad_c);
    }

    /// The threaded product with the left side read transposed through its strides, and
    /// the product with a left side in the packed layout.
    #[test]
    fn threaded_and_panel_products_equal_the_naive_ones(
        m in 1usize..70, k in 1usize..200, n in 1usize..140, transposed in any::<bool>()
    ) {
        let a = values(m * k, 5);
        let b = values(k * n, 6);
        let strides = if transposed { [1, m] } else { [k, 1] };
        let want = naive(&a, strides, &b, [n, 1], [m, k, n]);
        let packed = PackedRhs::new(&b, [k, n], [n, 1]);
        let mut c = vec![7f32; m * n];
        packed.matmul_par(&mut c, &a, strides, m);
        for (i, (got, w)) in c.iter().zip(&want).enumerate() {
            prop_assert!(close(*got, *w, k), "[{}]: {} vs {}", i, got, w);
        }
        // `a` (read as [m, k] row-major) in the packed layout, times the packed matrix.
        let want = naive(&a, [k, 1], &b, [n, 1], [m, k, n]);
        let width = PackedRhs::panel_width(k);
        let a_packed = PackedRhs::new(&a, [m, k], [k, 1]).into_values();
        let panels: Vec<&[f32]> = a_packed.chunks_exact(m * width).collect();
        let mut c = vec![7f32; m * n];
        packed.matmul_lhs_panels(&mut c, &panels, m);
        for (i, (got, w)) in c.iter().zip(&want).enumerate() {
            prop_assert!(close(*got, *w, k), "panels [{}]: {} vs {}", i, got, w);
        }
    }

    /// The checked GEMM with either operand transposed, a scale, accumulation, a row stride
    /// wider than the rows and threads.
    #[test]
    fn checked_gemm_equals_the_naive_product(
        m in 0usize..40, k in 0usize..70, n in 0usize..70, pad in 0usize..3,
        lhs_t in any::<bool>(), rhs_t in any::<bool>(), accumulate in any::<bool>(),
        threaded in any::<bool>(),
    ) {
        let a = values(m * k, 7);
        let b = values(k * n, 8);
        let sa = if lhs_t { [1, m] } else { [k, 1] };
        let sb = if rhs_t { [1, k] } else { [n, 1] };
        let ldc = n + pad;
        let start = values(extent([m, n], [ldc, 1]).unwrap(), 9);
        let mut c = start.clone();
        let par = if threaded { Parallelism::Rayon(0) } else { Parallelism::None };
        Gemm::new([m, n, k]).scale(0.5).accumulate(accumulate).parallelism(par)
            .run(&mut c, ldc, &a, sa, &b, sb);
        let want = naive(&a, sa, &b, sb, [m, k, n]);
        for i in 0..m {
            for j in 0..n {
                let base = if accumulate { start[i * ldc + j] as f64 } else { 0.0 };
                let w = base + 0.5 * want[i * n + j];
                prop_assert!(close(c[i * ldc + j], w, k), "({},{}): {} vs {}", i, j, c[i * ldc + j], w);
            }
        }
    }

    /// The LSTM layer forward and backward against a naive f64 one, with the input side
    /// dense or looked up, at widths that leave masked vector tails.
    #[test]
    fn lstm_layer_equals_the_naive_one(
        n in 1usize..6, t in 1usize..12, d in 1usize..9, h in 1usize..40, lookup in any::<bool>()
    ) {
        check_lstm(n, t, if lookup { 0 } else { d }, h, lookup.then_some(d + 2));
    }
}

/// Forward and backward of [`lstm::forward`] / [`lstm::backward`] against [`Naive`].
fn check_lstm(n: usize, t: usize, d: usize, h: usize, vocab: Option<usize>) {
    let g4 = 4 * h;
    let x = values(n * t * d, 11);
    let w_ih = values(d * g4, 12)
        .iter()
        .map(|v| v * 0.5)
        .collect::<Vec<_>>();
    let w_hh = values(h * g4, 13)
        .iter()
        .map(|v| v * 0.5)
        .collect::<Vec<_>>();
    let bias = values(g4, 14);
    let h0 = values(n * h, 15);
    let c0 = values(n * h, 16);
    let ids: Vec<u32> = (0..n * t)
        .map(|i| (i * 7 % vocab.unwrap_or(1)) as u32)
        .collect();
    let table = values(vocab.unwrap_or(0) * g4, 17);
    let dims = LstmDims::new([n, t, d], [d, g4], [h, g4], [g4], [n, h], [n, h]).unwrap();
    let input = match vocab {
        Some(_) => Input::Lookup {
            ids: &ids,
            table: &table,
        },
        None => Input::Dense {
            x: &x,
            w_ih: &w_ih,
            bias: &bias,
        },
    };
    let (y, saved) = lstm::forward(input, [&w_hh, &h0, &c0], dims);
    let pre = |b: usize, s: usize| -> Vec<f64> {
        match vocab {
            Some(_) => {
                let id = ids[b * t + s] as usize;
                table[id * g4..][..g4].iter().map(|&v| v as f64).collect()
            }
            None => (0..g4)
                .map(|j| {
                    bias[j] as f64
                        + (0..d)
                            .map(|i| x[(b * t + s) * d + i] as f64 * w_ih[i * g4 + j] as f64)
                            .sum::<f64>()
                })
                .collect(),
        }
    };
    let mut naive = Naive::run(&pre, &w_hh, &h0, &c0, [n, t, h]);
    assert_eq!(y.len(), n * (t + 1) * h);
    for (i, (got, want)) in y.iter().zip(&naive.y).enumerate() {
        assert!((*got as f64 - want).abs() < 1e-4, "y[{i}]: {got} vs {want}");
    }
    let dy = values(y.len(), 18);
    let grad_input = match vocab {
        Some(vocab) => InputGrad::Lookup { ids: &ids, vocab },
        None => InputGrad::Dense { w_ih: &w_ih },
    };
    let g = lstm::backward(grad_input, [&w_hh, &c0, &dy], &saved, dims);
    let dgates = naive.backward(&dy, &w_hh, &c0, [n, t, h]);
    // The reference gradients from the naive dG.
    let mut want_sums = vec![0f64; vocab.map_or(g4, |v| v * g4)];
    let mut want_x = vec![0f64; n * t * d];
    let mut want_w_ih = vec![0f64; d * g4];
    let mut want_w_hh = vec![0f64; h * g4];
    for b in 0..n {
        for s in 0..t {
            let dg = &dgates[(b * t + s) * g4..][..g4];
            let row = vocab.map_or(0, |_| ids[b * t + s] as usize);
            let h_prev: Vec<f64> = if s == 0 {
                h0[b * h..][..h].iter().map(|&v| v as f64).collect()
            } else {
                naive.y[(b * t + s - 1) * h..][..h].to_vec()
            };
            for j in 0..g4 {
                want_sums[row * g4 + j] += dg[j];
                for i in 0..d {
                    want_x[(b * t + s) * d + i] += dg[j] * w_ih[i * g4 + j] as f64;
                    want_w_ih[i * g4 + j] += x[(b * t + s) * d + i] as f64 * dg[j];
                }
                for i in 0..h {
                    want_w_hh[i * g4 + j] += h_prev[i] * dg[j];
                }
            }
        }
    }
    let pairs = [
        ("sums", &g.sums, &want_sums),
        ("w_hh", &g.w_hh, &want_w_hh),
        ("h0", &g.h0, &naive.dh0),
        ("c0", &g.c0, &naive.dc0),
    ];
    let dense = [("x", &g.x, &want_x), ("w_ih", &g.w_ih, &want_w_ih)];
    let all = pairs
        .iter()
        .chain(if vocab.is_none() { &dense[..] } else { &[] });
    for (name, got, want) in all {
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (got, want)) in got.iter().zip(want.iter()).enumerate() {
            let tol = 1e-4 * (1.0 + want.abs()) * (1.0 + (n * t) as f64).sqrt();
            assert!(
                (*got as f64 - want).abs() < tol,
                "d{name}[{i}]: {got} vs {want}"
            );
        }
    }
}

/// A plain LSTM in f64: every step's gates, cells and hidden states, kept for the backward
/// pass.
struct Naive {
    /// `[N T + N, H]` as the kernel lays it out.
    y: Vec<f64>,
    /// Per (b, s): the activations i, f, g, o, `[N T, 4H]`.
    acts: Vec<f64>,
    /// Per (b, s): the cell state, `[N T, H]`.
    cells: Vec<f64>,
    dh0: Vec<f64>,
    dc0: Vec<f64>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Naive {
    fn run(
        pre: &dyn Fn(usize, usize) -> Vec<f64>,
        w_hh: &[f32],
        h0: &[f32],
        c0: &[f32],
        [n, t, h]: [usize; 3],
    ) -> Naive {
        let g4 = 4 * h;
        let mut y = vec![0f64; n * (t + 1) * h];
        let mut acts = vec![0f64; n * t * g4];
        let mut cells = vec![0f64; n * t * h];
        for b in 0..n {
            let mut hs: Vec<f64> = h0[b * h..][..h].iter().map(|&v| v as f64).collect();
            let mut cs: Vec<f64> = c0[b * h..][..h].iter().map(|&v| v as f64).collect();
            for s in 0..t {
                let mut z = pre(b, s);
                for (j, z) in z.iter_mut().enumerate() {
                    *z += (0..h).map(|i| hs[i] * w_hh[i * g4 + j] as f64).sum::<f64>();
                }
                let row = b * t + s;
                for j in 0..h {
                    let (i, f) = (sigmoid(z[j]), sigmoid(z[h + j]));
                    let (g, o) = (z[2 * h + j].tanh(), sigmoid(z[3 * h + j]));
                    cs[j] = f * cs[j] + i * g;
                    hs[j] = o * cs[j].tanh();
                    for (q, v) in [i, f, g, o].into_iter().enumerate() {
                        acts[row * g4 + q * h + j] = v;
                    }
                }
                cells[row * h..][..h].copy_from_slice(&cs);
                y[row * h..][..h].copy_from_slice(&hs);
            }
            y[(n * t + b) * h..][..h].copy_from_slice(&cs);
        }
        Naive {
            y,
            acts,
            cells,
            dh0: Vec::new(),
            dc0: Vec::new(),
        }
    }

    /// Backpropagation through time from `dy` (laid out as `y`): the gates' pre-activation
    /// gradients `[N T, 4H]`; sets `dh0` and `dc0`.
    fn backward(
        &mut self,
        dy: &[f32],
        w_hh: &[f32],
        c0: &[f32],
        [n, t, h]: [usize; 3],
    ) -> Vec<f64> {
        let g4 = 4 * h;
        let mut dgates = vec![0f64; n * t * g4];
        self.dh0 = vec![0f64; n * h];
        self.dc0 = vec![0f64; n * h];
        for b in 0..n {
            let mut dh_next = vec![0f64; h];
            let mut dc: Vec<f64> = dy[(n * t + b) * h..][..h]
                .iter()
                .map(|&v| v as f64)
                .collect();
            for s in (0..t).rev() {
                let row = b * t + s;
                let a = &self.acts[row * g4..][..g4];
                for j in 0..h {
                    let (i, f, g, o) = (a[j], a[h + j], a[2 * h + j], a[3 * h + j]);
                    let c = self.cells[row * h + j];
                    let c_prev = if s == 0 {
                        c0[b * h + j] as f64
                    } else {
                        self.cells[(row - 1) * h + j]
                    };
                    let dh = dy[row * h + j] as f64 + dh_next[j];
                    let tc = c.tanh();
                    let dcell = dc[j] + dh * o * (1.0 - tc * tc);
                    let dg = &mut dgates[row * g4..][..g4];
                    dg[j] = dcell * g * i * (1.0 - i);
                    dg[h + j] = dcell * c_prev * f * (1.0 - f);
                    dg[2 * h + j] = dcell * i * (1.0 - g * g);
                    dg[3 * h + j] = dh * tc * o * (1.0 - o);
                    dc[j] = dcell * f;
                }
                let dg = &dgates[row * g4..][..g4];
                for (i, dh) in dh_next.iter_mut().enumerate() {
                    *dh = (0..g4).map(|j| dg[j] * w_hh[i * g4 + j] as f64).sum();
                }
            }
            self.dh0[b * h..][..h].copy_from_slice(&dh_next);
            self.dc0[b * h..][..h].copy_from_slice(&dc);
        }
        dgates
    }
}

#[test]
fn lstm_widths_around_the_vector_width() {
    for h in [1, 15, 16, 17, 75] {
        check_lstm(3, 9, 4, h, None);
        check_lstm(2, 3, 0, h, Some(5));
    }
}

/// Operands that do not fit the sizes are refused before any work, with the sizes named.
#[test]
#[should_panic(expected = "operands of the wrong lengths")]
fn lstm_refuses_an_id_past_the_table() {
    let h = 2;
    let dims = LstmDims::new([1, 1, 0], [0, 8], [h, 8], [8], [1, h], [1, h]).unwrap();
    let table = vec![0f32; 8];
    let input = Input::Lookup {
        ids: &[1],
        table: &table,
    };
    lstm::forward(input, [&[0.0; 16], &[0.0; 2], &[0.0; 2]], dims);
}
