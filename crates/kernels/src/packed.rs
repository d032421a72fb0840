//! Products with one right-hand matrix used many times: a recurrent layer multiplies its
//! state by the same `W_hh` at every step, forward and backward.
//!
//! A general GEMM (the `gemm` crate, which flex uses) re-packs the right-hand matrix on every
//! call: at hidden 256 that is 1 MB read and written for a `[16, 256] x [256, 1024]` product
//! that is itself only 8 MFLOP, about half of each step's time. [`PackedRhs`] packs it once,
//! and on CPUs with AVX-512 [`PackedRhs::matmul`] runs a 6 x 64 register-blocked kernel over
//! the packed panels with the left-hand rows read in place (any row stride). A caller can
//! also write a matrix straight into the packed layout ([`PackedRhs::from_panels`]: the
//! LSTM's gate gradients, step by step) and multiply a transposed left-hand side by it on
//! all threads ([`PackedRhs::matmul_par`]: the weight gradient; its left side is copied
//! tile by tile into one contiguous block per depth pass, as GEMM libraries do, which read
//! 5-10% faster than a stride of 320 values). Without AVX-512 the layout is row-major and
//! the products call the `gemm` crate.

use rayon::prelude::*;

use crate::cpu::has_avx512;
use crate::gemm::{Gemm, Parallelism, extent, fits};

/// 16-lane vectors per packed panel row.
const V: usize = 4;
/// Columns per packed panel.
const NR: usize = 16 * V;
/// Rows of the left-hand side per kernel call.
const MR: usize = 6;
/// Rows of the packed matrix per pass (a 128 x 64 block of a panel is 32 KB, in L1).
const KC: usize = 128;

/// What [`PackedRhs::matmul`] adds its product to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init<'a> {
    /// Nothing: `c = a b`.
    Zero,
    /// `c`'s own values: `c += a b`.
    Accumulate,
    /// One row (a bias) added to every row: `c = row + a b`.
    Row(&'a [f32]),
}

/// A `[k, n]` right-hand matrix prepared for repeated products.
#[derive(Debug, Clone)]
pub struct PackedRhs {
    k: usize,
    n: usize,
    layout: Layout,
    values: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `ceil(n / 32)` panels, each `k` rows of 32 columns (the last zero-padded).
    Panels,
    /// Row-major `[k, n]`, for the `gemm` crate.
    RowMajor,
}

impl PackedRhs {
    /// Packs `b` (`[k, n]`, element `(i, j)` at `b[i * rs + j * cs]`: a transpose is packed
    /// by passing its strides).
    ///
    /// # Panics
    /// When `b` is shorter than the shape and strides say.
    pub fn new(b: &[f32], [k, n]: [usize; 2], [rs, cs]: [usize; 2]) -> Self {
        Self::with_layout(&[(b, k, [rs, cs])], n, has_avx512())
    }

    /// Packs the matrices `(values, rows, [rs, cs])`, each `n` columns wide, stacked on top
    /// of each other, in the panel layout or row-major.
    fn with_layout(parts: &[(&[f32], usize, [usize; 2])], n: usize, panels: bool) -> Self {
        // (matrix, row within it) of each stacked row.
        let mut rows = Vec::new();
        for &(b, k, [rs, cs]) in parts {
            assert!(
                fits(b.len(), [k, n], [rs, cs]),
                "matrix of {} values shorter than [{k}, {n}] at strides [{rs}, {cs}]",
                b.len()
            );
            rows.extend((0..k).map(|i| (b, i * rs, cs)));
        }
        let k = rows.len();
        let (layout, width) = if panels {
            (Layout::Panels, NR)
        } else {
            (Layout::RowMajor, n.max(1))
        };
        let count = n.div_ceil(width);
        let mut values = vec![0f32; count * k * width];
        // Panels in parallel (a megabyte per LSTM call, on the critical path). With k = 0
        // there are no values (and rayon refuses chunks of 0).
        values
            .par_chunks_mut((k * width).max(1))
            .enumerate()
            .for_each(|(p, panel)| {
                let cols = width.min(n - p * width);
                for (row, &(b, start, cs)) in panel.chunks_exact_mut(width).zip(&rows) {
                    for (j, v) in row[..cols].iter_mut().enumerate() {
                        *v = b[start + (p * width + j) * cs];
                    }
                }
            });
        PackedRhs {
            k,
            n,
            layout,
            values,
        }
    }

    /// `c (m x n) = init + a (m x k) * self`, the rows of `a` and `c` `lda` and `ldc` apart.
    /// Single-threaded: callers split the rows over their threads.
    ///
    /// # Panics
    /// When `a` or `c` is shorter than `m` rows at its stride, or a row `init` is not `n`
    /// values.
    pub fn matmul(&self, c: &mut [f32], ldc: usize, a: &[f32], lda: usize, m: usize, init: Init) {
        let (k, n) = (self.k, self.n);
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            fits(c.len(), [m, n], [ldc, 1]) && fits(a.len(), [m, k], [lda, 1]),
            "product operands shorter than their shapes"
        );
        assert!(m == 1 || ldc >= n, "product output rows overlap");
        if let Init::Row(row) = init {
            assert_eq!(row.len(), n, "the row added to the product");
        }
        if k == 0 || self.layout == Layout::RowMajor {
            for r in 0..m {
                let c = &mut c[r * ldc..][..n];
                match init {
                    Init::Zero => c.fill(0.0),
                    Init::Row(row) => c.copy_from_slice(row),
                    Init::Accumulate => {}
                }
            }
        }
        if k == 0 {
            return;
        }
        let accumulate = init != Init::Zero;
        match self.layout {
            Layout::RowMajor => Gemm::new([m, n, k]).accumulate(accumulate).run(
                c,
                ldc,
                a,
                [lda, 1],
                &self.values,
                [n, 1],
            ),
            #[cfg(target_arch = "x86_64")]
            Layout::Panels => {
                debug_assert!(has_avx512());
                // SAFETY: panels are only built when the CPU has AVX-512F and FMA (`new`,
                // `from_panels`), and the assertions above keep every row the kernel touches
                // inside `a` and `c`.
                unsafe { self.matmul_panels(c, ldc, a, [lda, 1], m, init, None) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Panels => unreachable!("panels are only built on x86-64"),
        }
    }

    /// [`PackedRhs::matmul`] on the panels, `a` read through any strides; with `packed` (a
    /// scratch buffer) `a` is first copied tile by tile for each depth block ([`pack_lhs`]),
    /// worth it when many panels reuse those tiles and `a`'s rows are far apart.
    ///
    /// # Safety
    /// The CPU has AVX-512F and FMA; `a` and `c` hold `m` rows at their strides.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn matmul_panels(
        &self,
        c: &mut [f32],
        ldc: usize,
        a: &[f32],
        [a_rs, a_cs]: [usize; 2],
        m: usize,
        init: Init,
        packed: Option<&mut Vec<f32>>,
    ) {
        let (k, n) = (self.k, self.n);
        debug_assert!(fits(c.len(), [m, n], [ldc, 1]) && fits(a.len(), [m, k], [a_rs, a_cs]));
        let c_len = c.len();
        let c = c.as_mut_ptr();
        let tiles = m.div_ceil(MR);
        let mut packed = packed;
        if let Some(p) = packed.as_deref_mut() {
            p.resize(tiles * MR * KC, 0.0);
        }
        // Blocks of KC rows of the packed matrix, each panel's block (32 KB) read from L2
        // once and used from L1 by every row block of `a`.
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            let init = if k0 > 0 { Init::Accumulate } else { init };
            if let Some(p) = packed.as_deref_mut() {
                pack_lhs(p, a, [a_rs, a_cs], m, k0, kc);
            }
            for (p, panel) in self.values.chunks_exact(k * NR).enumerate() {
                let cols = NR.min(n - p * NR);
                for (t, r0) in (0..m).step_by(MR).enumerate() {
                    let rows = MR.min(m - r0);
                    let (a, a_rs, a_cs) = match packed.as_deref() {
                        Some(p) => (&p[t * MR * KC..], 1, MR),
                        None => (&a[r0 * a_rs + k0 * a_cs..], a_rs, a_cs),
                    };
                    let at = r0 * ldc + p * NR;
                    debug_assert!(at < c_len);
                    // SAFETY: `at` is inside `c` (row r0 < m, column p * NR < n), and the
                    // tile's lengths are what is left of each slice from its pointer.
                    let tile = unsafe {
                        Tile {
                            k: kc,
                            a,
                            a_rs,
                            a_cs,
                            b: &panel[k0 * NR..],
                            c: c.add(at),
                            c_len: c_len - at,
                            ldc,
                            cols,
                            add: match init {
                                Init::Zero => Add::Nothing,
                                Init::Accumulate => Add::C,
                                Init::Row(row) => Add::Row(&row[p * NR..]),
                            },
                        }
                    };
                    // SAFETY: the CPU has AVX-512F and FMA (this function's contract); the
                    // tile names `rows` rows that lie inside its slices (`Tile::check`).
                    unsafe { kernel_rows(rows, tile) };
                }
            }
        }
    }

    /// `c (m x n) = a (m x k) * self`, `a` given in the packed layout of
    /// [`PackedRhs::from_panels`] (`panels[p]`: its columns `p w..(p + 1) w`, `m` rows of
    /// `w = panel_width(k)` values, the columns past `k` zero). Single-threaded.
    ///
    /// # Panics
    /// When the panels do not cover `m` rows of `k` columns, or `c` is shorter than `m n`.
    pub fn matmul_lhs_panels(&self, c: &mut [f32], panels: &[&[f32]], m: usize) {
        let (k, n) = (self.k, self.n);
        let w = Self::panel_width(k);
        assert!(
            panels.len() == k.div_ceil(w) && panels.iter().all(|p| p.len() >= m * w),
            "left-hand panels of [{m}, {k}]"
        );
        assert!(c.len() >= m * n, "product output shorter than its shape");
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            c[..m * n].fill(0.0);
            return;
        }
        match self.layout {
            // One panel: `a` is row-major.
            Layout::RowMajor => self.matmul(c, n, panels[0], w, m, Init::Zero),
            #[cfg(target_arch = "x86_64")]
            Layout::Panels => {
                debug_assert!(has_avx512());
                // SAFETY: panels are only built when the CPU has AVX-512F and FMA; the
                // assertions above keep every row the kernel reads inside its panel and
                // every row of `c` inside `c`.
                unsafe { self.lhs_panels_kernel(c, panels, m) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Panels => unreachable!("panels are only built on x86-64"),
        }
    }

    /// [`PackedRhs::matmul_lhs_panels`] on the panels: one depth block per left-hand panel.
    ///
    /// # Safety
    /// The CPU has AVX-512F and FMA; the panels hold `m` rows and `c` holds `m n` values.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn lhs_panels_kernel(&self, c: &mut [f32], panels: &[&[f32]], m: usize) {
        let (k, n) = (self.k, self.n);
        debug_assert!(c.len() >= m * n);
        let c_len = c.len();
        let c = c.as_mut_ptr();
        for (pa, a) in panels.iter().enumerate() {
            let k0 = pa * NR;
            let kc = NR.min(k - k0);
            for (p, panel) in self.values.chunks_exact(k * NR).enumerate() {
                let cols = NR.min(n - p * NR);
                for r0 in (0..m).step_by(MR) {
                    let rows = MR.min(m - r0);
                    let at = r0 * n + p * NR;
                    debug_assert!(at < c_len);
                    // SAFETY: `at` is inside `c` (row r0 < m, column p * NR < n).
                    let tile = unsafe {
                        Tile {
                            k: kc,
                            a: &a[r0 * NR..],
                            a_rs: NR,
                            a_cs: 1,
                            b: &panel[k0 * NR..],
                            c: c.add(at),
                            c_len: c_len - at,
                            ldc: n,
                            cols,
                            add: if pa == 0 { Add::Nothing } else { Add::C },
                        }
                    };
                    // SAFETY: the CPU has AVX-512F and FMA (this function's contract); the
                    // tile's rows lie inside its slices (`Tile::check`).
                    unsafe { kernel_rows(rows, tile) };
                }
            }
        }
    }

    /// `[k, n]`, whether the layout is panels of [`PackedRhs::panel_width`] (else row-major
    /// `[k, n]`), and the values (for [`crate::gemv::matvec_packed`]).
    pub(crate) fn parts(&self) -> ([usize; 2], bool, &[f32]) {
        (
            [self.k, self.n],
            self.layout == Layout::Panels,
            &self.values,
        )
    }

    /// `[k, n]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    /// Column `j` of the matrix (`k` values): a row of the `[n, k]` matrix packed transposed,
    /// such as an embedding table used as an output head.
    ///
    /// # Panics
    /// When `j >= n`.
    pub fn column(&self, j: usize) -> Vec<f32> {
        assert!(j < self.n, "column {j} of {}", self.n);
        match self.layout {
            Layout::Panels => {
                let (p, lane) = (j / NR, j % NR);
                let panel = &self.values[p * self.k * NR..(p + 1) * self.k * NR];
                panel.chunks_exact(NR).map(|row| row[lane]).collect()
            }
            Layout::RowMajor => self
                .values
                .iter()
                .skip(j)
                .step_by(self.n)
                .copied()
                .collect(),
        }
    }

    /// The width of the panels of a packed matrix `n` columns wide (the row length for the
    /// row-major layout), for callers that write one in place ([`PackedRhs::from_panels`]).
    pub fn panel_width(n: usize) -> usize {
        if has_avx512() { NR } else { n.max(1) }
    }

    /// A `[k, n]` matrix whose values a caller wrote in the packed layout:
    /// `ceil(n / w)` panels of `k` rows of `w = panel_width(n)` values, the columns past `n`
    /// zero.
    ///
    /// # Panics
    /// When `values` is not that long.
    pub fn from_panels(values: Vec<f32>, [k, n]: [usize; 2]) -> Self {
        let w = Self::panel_width(n);
        assert_eq!(
            values.len(),
            n.div_ceil(w) * k * w,
            "packed values of [{k}, {n}]"
        );
        let layout = if has_avx512() {
            Layout::Panels
        } else {
            Layout::RowMajor
        };
        PackedRhs {
            k,
            n,
            layout,
            values,
        }
    }

    /// The packed values, for reuse.
    pub fn into_values(self) -> Vec<f32> {
        self.values
    }

    /// `c (m x n, rows contiguous) = a * self` for `a [m, k]` with value (i, kk) at
    /// `a[i * rs + kk * cs]` (a transpose read in place), the rows of `c` split over the
    /// rayon threads.
    ///
    /// # Panics
    /// When `a` or `c` is shorter than its shape and strides.
    pub fn matmul_par(&self, c: &mut [f32], a: &[f32], [rs, cs]: [usize; 2], m: usize) {
        let (k, n) = (self.k, self.n);
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            c.len() >= m * n && fits(a.len(), [m, k], [rs, cs]),
            "product operands shorter than their shapes"
        );
        let c = &mut c[..m * n];
        if k == 0 {
            c.fill(0.0);
            return;
        }
        match self.layout {
            Layout::RowMajor => Gemm::new([m, n, k]).parallelism(Parallelism::Rayon(0)).run(
                c,
                n,
                a,
                [rs, cs],
                &self.values,
                [n, 1],
            ),
            #[cfg(target_arch = "x86_64")]
            Layout::Panels => {
                let threads = rayon::current_num_threads().max(1);
                let per = m.div_ceil(threads).div_ceil(MR).max(1) * MR;
                c.par_chunks_mut(per * n).enumerate().for_each(|(i, c)| {
                    let rows = c.len() / n;
                    let mut packed = Vec::new();
                    debug_assert!(has_avx512() && fits(a.len(), [m, k], [rs, cs]));
                    // SAFETY: panels exist only on CPUs with AVX-512F and FMA (`from_panels`,
                    // `new`); rows i * per.. of `a` are inside it (asserted above).
                    unsafe {
                        self.matmul_panels(
                            c,
                            n,
                            &a[i * per * rs..],
                            [rs, cs],
                            rows,
                            Init::Zero,
                            Some(&mut packed),
                        )
                    }
                });
            }
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Panels => unreachable!("panels are only built on x86-64"),
        }
    }
}

/// Copies values `k0..k0 + kc` of the `m` rows of `a` (strides `[a_rs, a_cs]`) into
/// `packed` tile by tile, each tile of MR rows as `kc` groups of MR values (rows past `m`
/// keep whatever they held: their products land in no row of `c`).
#[cfg(target_arch = "x86_64")]
fn pack_lhs(
    packed: &mut [f32],
    a: &[f32],
    [a_rs, a_cs]: [usize; 2],
    m: usize,
    k0: usize,
    kc: usize,
) {
    for (t, tile) in packed
        .chunks_exact_mut(MR * KC)
        .take(m.div_ceil(MR))
        .enumerate()
    {
        let rows = MR.min(m - t * MR);
        let base = t * MR * a_rs + k0 * a_cs;
        if a_rs == 1 && rows == MR {
            // Fixed-size copies, which compile to moves rather than `memcpy` calls.
            for kk in 0..kc {
                let src: &[f32; MR] = a[base + kk * a_cs..][..MR].try_into().expect("MR values");
                tile[kk * MR..][..MR].copy_from_slice(src);
            }
        } else if a_rs == 1 {
            for kk in 0..kc {
                tile[kk * MR..][..rows].copy_from_slice(&a[base + kk * a_cs..][..rows]);
            }
        } else {
            for r in 0..rows {
                for kk in 0..kc {
                    tile[kk * MR + r] = a[base + r * a_rs + kk * a_cs];
                }
            }
        }
    }
}

/// One kernel call's operands: `R` rows of `a` (`k` values each, value (r, kk) at
/// `a[r * a_rs + kk * a_cs]`), one packed panel `b` (`k x NR`), and `R` rows of `c`
/// (`cols <= NR` values each, `ldc` apart). `c` is a pointer with the number of values that
/// follow it (written through a pointer because the row blocks of one output are written by
/// different calls while the whole output is borrowed).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Tile<'a> {
    k: usize,
    a: &'a [f32],
    a_rs: usize,
    a_cs: usize,
    b: &'a [f32],
    c: *mut f32,
    c_len: usize,
    ldc: usize,
    cols: usize,
    add: Add<'a>,
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    /// Whether `rows` rows of this tile lie inside its operands: the invariant every
    /// kernel call debug-asserts.
    fn check(&self, rows: usize) -> bool {
        let cols_ok = (1..=NR).contains(&self.cols);
        let a_ok = fits(self.a.len(), [rows, self.k], [self.a_rs, self.a_cs]);
        let b_ok = extent([self.k, NR], [NR, 1]).is_some_and(|e| e <= self.b.len());
        let c_ok = fits(self.c_len, [rows, self.cols], [self.ldc, 1]);
        let row_ok = match self.add {
            Add::Row(row) => row.len() >= self.cols,
            _ => true,
        };
        cols_ok && a_ok && b_ok && c_ok && row_ok && (1..=MR).contains(&rows)
    }
}

/// What [`kernel`] adds to the product: nothing, `c`'s values, or one row (`cols` values)
/// to every row.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum Add<'a> {
    Nothing,
    C,
    Row(&'a [f32]),
}

/// [`kernel`] for a tile of `rows` (1 to MR) rows.
///
/// # Safety
/// As [`kernel`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn kernel_rows(rows: usize, tile: Tile) {
    debug_assert!(tile.check(rows));
    // SAFETY: the caller's: `tile.check(rows)` holds, and the CPU has AVX-512F and FMA.
    unsafe {
        match rows {
            6 => kernel::<6>(tile),
            5 => kernel::<5>(tile),
            4 => kernel::<4>(tile),
            3 => kernel::<3>(tile),
            2 => kernel::<2>(tile),
            _ => kernel::<1>(tile),
        }
    }
}

/// `c[R x cols] (+)= a[R x k] * b[k x NR]`, the R x V accumulators in registers.
///
/// # Safety
/// The CPU has AVX-512F and FMA; `t.check(R)` holds (the tile's pointers cover the rows and
/// columns it names).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn kernel<const R: usize>(t: Tile) {
    use std::arch::x86_64::*;
    debug_assert!(t.check(R));
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    // Raw pointers in the loop: a bounds check per load would halve the kernel's speed.
    let (a, b) = (t.a.as_ptr(), t.b.as_ptr());
    for kk in 0..t.k {
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, bv) in bv.iter_mut().enumerate() {
            debug_assert!(kk * NR + 16 * v + 16 <= t.b.len());
            // SAFETY: kk < k and the panel holds k rows of NR values (`t.check(R)`).
            *bv = unsafe { _mm512_loadu_ps(b.add(kk * NR + 16 * v)) };
        }
        let b = bv;
        for (r, acc) in acc.iter_mut().enumerate() {
            debug_assert!(r * t.a_rs + kk * t.a_cs < t.a.len());
            // SAFETY: r < R and kk < k, so the value is inside `a` (`t.check(R)`).
            let av = _mm512_set1_ps(unsafe { *a.add(r * t.a_rs + kk * t.a_cs) });
            for (acc, &b) in acc.iter_mut().zip(&b) {
                *acc = _mm512_fmadd_ps(av, b, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (v, &value) in acc.iter().enumerate() {
            let cols = t.cols.saturating_sub(16 * v).min(16);
            if cols == 0 {
                // Past the row's last column: no pointer is formed there (it may lie past
                // the end of `c`'s allocation).
                break;
            }
            let mask: __mmask16 = if cols == 16 {
                0xFFFF
            } else {
                (1u16 << cols) - 1
            };
            let offset = r * t.ldc + 16 * v;
            debug_assert!(offset + cols <= t.c_len);
            // SAFETY: `offset + cols <= c_len` (row r < R of `t.check(R)`, 16 v < t.cols),
            // so the pointer is inside `c` and the mask keeps the load and store within the
            // row's `cols` values; the added row has `t.cols` values (`t.check`).
            unsafe {
                let at = t.c.add(offset);
                let value = match t.add {
                    Add::Nothing => value,
                    Add::C => _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, at)),
                    Add::Row(row) => {
                        _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, row[16 * v..].as_ptr()))
                    }
                };
                _mm512_mask_storeu_ps(at, mask, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], lda: usize, b: &[f32], [m, k, n]: [usize; 3]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|x| a[i * lda + x] * b[x * n + j]).sum();
            }
        }
        c
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    /// The parallel product with `a` read transposed through its strides (and plainly), on a
    /// matrix rebuilt from its packed values, against the naive product: sizes with partial
    /// row blocks, a partial panel and several depth blocks.
    #[test]
    fn parallel_product_with_a_transposed_lhs_equals_the_naive_product() {
        for &(m, k, n) in &[(1, 1, 1), (13, 300, 70), (40, 129, 64)] {
            let a = values(m * k, 3);
            let b = values(k * n, 4);
            let want = naive(&a, k, &b, [m, k, n]);
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let packed = PackedRhs::new(&b, [k, n], [n, 1]);
            let width = PackedRhs::panel_width(n);
            let rebuilt = PackedRhs::from_panels(packed.into_values(), [k, n]);
            assert_eq!(rebuilt.values.len(), n.div_ceil(width) * k * width);
            // Transposed (columns of `at`) and plain (rows of `a`).
            for (lhs, strides) in [(&at, [1, m]), (&a, [k, 1])] {
                let mut c = vec![7f32; m * n];
                rebuilt.matmul_par(&mut c, lhs, strides, m);
                for (i, (got, w)) in c.iter().zip(&want).enumerate() {
                    assert!((got - w).abs() < 1e-3, "{m}x{k}x{n} [{i}]: {got} vs {w}");
                }
            }
        }
    }

    /// A left-hand side given in the packed layout (the LSTM's dG) times a packed matrix,
    /// against the naive product: partial panels on both sides, several left panels, partial
    /// row blocks.
    #[test]
    fn product_with_a_packed_left_side_equals_the_naive_product() {
        for &(m, k, n) in &[(1, 1, 1), (13, 70, 70), (40, 128, 64), (7, 200, 5)] {
            let a = values(m * k, 5);
            let b = values(k * n, 6);
            let want = naive(&a, k, &b, [m, k, n]);
            // `a` in the packed layout: the panels of `a` packed as a [m, k] right-hand side.
            let width = PackedRhs::panel_width(k);
            let a_packed = PackedRhs::new(&a, [m, k], [k, 1]).into_values();
            let panels: Vec<&[f32]> = a_packed.chunks_exact(m * width).collect();
            let mut c = vec![7f32; m * n];
            PackedRhs::new(&b, [k, n], [n, 1]).matmul_lhs_panels(&mut c, &panels, m);
            for (i, (got, w)) in c.iter().zip(&want).enumerate() {
                assert!((got - w).abs() < 1e-3, "{m}x{k}x{n} [{i}]: {got} vs {w}");
            }
        }
    }

    /// Every row count of the kernel (1-6 and further blocks), partial panels, strided rows,
    /// several depth blocks, the three starting values (zero, `c`, a row) and a transposed
    /// and a stacked pack, in both layouts.
    #[test]
    fn packed_products_equal_the_naive_product() {
        for panels in [false, true] {
            if panels && !has_avx512() {
                continue;
            }
            for &(m, k, n) in &[
                (1, 1, 1),
                (3, 5, 7),
                (8, 16, 32),
                (11, 33, 70),
                (16, 64, 96),
                (5, 300, 70),
            ] {
                let lda = k + 3;
                let a = values(m * lda, 1);
                let b = values(k * n, 2);
                let want = naive(&a, lda, &b, [m, k, n]);
                let packed = PackedRhs::with_layout(&[(&b, k, [n, 1])], n, panels);
                let ldc = n + 5;
                let mut c = vec![7f32; m * ldc];
                packed.matmul(&mut c, ldc, &a, lda, m, Init::Zero);
                for i in 0..m {
                    for j in 0..n {
                        let (got, w) = (c[i * ldc + j], want[i * n + j]);
                        assert!(
                            (got - w).abs() < 1e-4,
                            "{m}x{k}x{n} ({i},{j}): {got} vs {w}"
                        );
                    }
                    // Values past the row's n columns are untouched.
                    assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == 7.0));
                }
                packed.matmul(&mut c, ldc, &a, lda, m, Init::Accumulate);
                assert!((c[0] - 2.0 * want[0]).abs() < 1e-4);
                let row = values(n, 5);
                packed.matmul(&mut c, ldc, &a, lda, m, Init::Row(&row));
                for i in 0..m {
                    for j in 0..n {
                        let (got, w) = (c[i * ldc + j], want[i * n + j] + row[j]);
                        assert!(
                            (got - w).abs() < 1e-4,
                            "{m}x{k}x{n} row ({i},{j}): {got} vs {w}"
                        );
                    }
                }
                // bᵀ packed through its strides equals packing a transposed copy.
                let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
                let from_strides = PackedRhs::with_layout(&[(&bt, k, [1, k])], n, panels);
                assert_eq!(from_strides.values, packed.values);
                // Two matrices stacked equal the whole packed at once.
                let split = k / 2;
                let parts = [
                    (&b[..split * n], split, [n, 1]),
                    (&b[split * n..], k - split, [n, 1]),
                ];
                assert_eq!(
                    PackedRhs::with_layout(&parts, n, panels).values,
                    packed.values
                );
            }
        }
    }
}
