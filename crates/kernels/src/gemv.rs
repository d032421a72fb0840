//! Products of a row-major weight matrix with a few vectors: the decode step of a language
//! model, where every projection multiplies one new position (or one per sequence) by a
//! weight matrix read from memory once.
//!
//! A general GEMM packs its operands for reuse that a product with one vector does not have;
//! at a decode step the whole cost is reading the weights, so the loop here streams each
//! thread's block of rows once, front to back, and multiplies every row by all `m` vectors
//! while it is in L1. On CPUs with AVX-512 four rows share each load of the vector (one
//! vector) in intrinsics; elsewhere each row is one dot product compiled for the CPU's
//! widest level ([`crate::sparse_cg`]'s dot products).
//!
//! Weights are f32 or bfloat16 ([`Weights`]): a bf16 checkpoint multiplied in its stored
//! precision gives exactly the products of its f32 copy (each bf16 value widens to the same
//! f32, and every product and sum is f32) while reading half the bytes.
//!
//! The `unsafe` here is unaligned loads inside the rows and vectors (bounds by the loops) and
//! the calls into the `#[target_feature]` functions after [`crate::cpu::level`] found them.

use std::sync::Mutex;

use rayon::prelude::*;

use crate::cpu::{Simd, level};
use crate::packed::PackedRhs;
use crate::spin::SpinPool;

/// A row-major `[rows, cols]` weight matrix.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bfloat16 values (the high half of an f32), widened to f32 as they are read.
    Bf16(&'a [u16]),
}

impl Weights<'_> {
    fn len(&self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            Weights::Bf16(w) => w.len(),
        }
    }
}

/// What [`matvec`] adds its products to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start<'a> {
    /// Nothing: `y = W x`.
    Zero,
    /// `y`'s own values (a residual): `y += W x`.
    Accumulate,
    /// A bias per row: `y = W x + b`.
    Bias(&'a [f32]),
}

/// Matrices smaller than this many values run on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// `ys[i * rows + r] (=|+=) start_r + Σ_c w[r, c] · xs[i * cols + c]` for each of the `m`
/// vectors `xs[i * cols..]`, threaded over blocks of rows.
///
/// # Panics
/// When `w` does not hold `rows * cols` values, `xs` not `m * cols`, `ys` not `m * rows`, or a
/// bias not `rows`.
pub fn matvec(
    w: Weights<'_>,
    shape: [usize; 2],
    xs: &[f32],
    m: usize,
    ys: &mut [f32],
    start: Start<'_>,
) {
    matvec_threads(w, shape, xs, m, ys, start, None);
}

/// [`matvec`] on a [`SpinPool`]'s threads instead of rayon's: for loops of many short
/// products, where handing each to rayon costs a wake-up.
///
/// # Panics
/// As [`matvec`].
pub fn matvec_on(
    pool: &SpinPool,
    w: Weights<'_>,
    shape: [usize; 2],
    xs: &[f32],
    m: usize,
    ys: &mut [f32],
    start: Start<'_>,
) {
    matvec_threads(w, shape, xs, m, ys, start, Some(pool));
}

fn matvec_threads(
    w: Weights<'_>,
    [rows, cols]: [usize; 2],
    xs: &[f32],
    m: usize,
    ys: &mut [f32],
    start: Start<'_>,
    pool: Option<&SpinPool>,
) {
    assert_eq!(w.len(), rows * cols, "matvec: weights for [{rows}, {cols}]");
    check_operands("matvec", [rows, cols], xs, m, ys, start);
    if rows == 0 || m == 0 {
        return;
    }
    // Two blocks per thread, each block's products [m, block] row-major.
    let ranges = row_ranges(pool, [rows, cols], 2, 4);
    let products = run_ranges(pool, &ranges, &|(r0, r1)| {
        block_products(w, cols, xs, m, r0, r1)
    });
    for (&range, p) in ranges.iter().zip(&products) {
        scatter(ys, rows, m, range, p, start);
    }
}

/// `ys[i * n + j] (=|+=) start_j + Σ_kk xs[i * k + kk] · b[kk, j]` for the `m` vectors of
/// `xs` and a packed `[k, n]` matrix (a weight stored transposed, `[in, out]`): the same
/// product as [`matvec`] with the packing that prompt-sized products ([`PackedRhs::matmul`])
/// use, so one copy of the weights serves both. On the panel layout each panel (64 outputs)
/// is streamed once with the vectors broadcast, no horizontal sums; on the row-major layout
/// (CPUs without AVX-512) each row of `b` is added to the outputs. Threaded over blocks of
/// panels on `pool` (or rayon's threads without one).
///
/// # Panics
/// When `xs` is not `m * k` values, `ys` not `m * n`, or a bias not `n`.
pub fn matvec_packed(
    pool: Option<&SpinPool>,
    b: &PackedRhs,
    xs: &[f32],
    m: usize,
    ys: &mut [f32],
    start: Start<'_>,
) {
    let ([k, n], panels, values) = b.parts();
    check_operands("matvec_packed", [n, k], xs, m, ys, start);
    if n == 0 || m == 0 {
        return;
    }
    let width = PackedRhs::panel_width(n);
    let padded = n.div_ceil(width) * width;
    // Tasks are ranges of `k`, each over every column: equal shares whatever the width (a
    // 576-wide output is only nine panels), two per thread, their partial sums added in
    // order at the end.
    let parts = if k * n < PARALLEL_MIN {
        1
    } else {
        2 * threads_of(pool)
    };
    let k_chunk = k.div_ceil(parts).next_multiple_of(8).max(8);
    let ranges: Vec<(usize, usize)> = (0..k.max(1))
        .step_by(k_chunk)
        .map(|k0| (k0, (k0 + k_chunk).min(k)))
        .collect();
    // Rows k0..k1 of the matrix times values k0..k1 of each vector, [m, padded].
    let block = |(k0, k1): (usize, usize)| -> Vec<f32> {
        let mut out = vec![0f32; m * padded];
        if panels {
            #[cfg(target_arch = "x86_64")]
            {
                debug_assert!(crate::cpu::has_avx512());
                for p in 0..padded / width {
                    let rows = &values[p * k * width + k0 * width..p * k * width + k1 * width];
                    // SAFETY: panels are built only where `level` found AVX-512F and FMA
                    // (`PackedRhs::panel_width`), the features of `panel512`.
                    unsafe { x86::panel512(rows, xs, k, k0, m, &mut out[p * width..], padded) };
                }
            }
        } else {
            for i in 0..m {
                let x = &xs[i * k + k0..i * k + k1];
                let o = &mut out[i * padded..i * padded + n];
                for (&xv, row) in x.iter().zip(values[k0 * n..k1 * n].chunks_exact(n)) {
                    o.iter_mut().zip(row).for_each(|(o, &w)| *o += xv * w);
                }
            }
        }
        out
    };
    let partials = run_ranges(pool, &ranges, &block);
    for v in 0..m {
        let y = &mut ys[v * n..(v + 1) * n];
        match start {
            Start::Zero => y.fill(0.0),
            Start::Accumulate => {}
            Start::Bias(b) => y.copy_from_slice(b),
        }
        // Partials in the order of `k`, then the start: `(p0 + p1 + ...) + start`.
        let mut sum = partials[0][v * padded..v * padded + n].to_vec();
        for p in &partials[1..] {
            sum.iter_mut()
                .zip(&p[v * padded..v * padded + n])
                .for_each(|(s, p)| *s += p);
        }
        y.iter_mut().zip(&sum).for_each(|(y, s)| *y += s);
    }
}

/// Checks the lengths of a product's operands: `xs` `m * cols` values, `ys` `m * rows`, a
/// bias `rows`.
///
/// # Panics
/// When one does not fit, naming `what`.
pub(crate) fn check_operands(
    what: &str,
    [rows, cols]: [usize; 2],
    xs: &[f32],
    m: usize,
    ys: &[f32],
    start: Start<'_>,
) {
    assert_eq!(xs.len(), m * cols, "{what}: {m} vectors of {cols}");
    assert_eq!(ys.len(), m * rows, "{what}: {m} outputs of {rows}");
    if let Start::Bias(b) = start {
        assert_eq!(b.len(), rows, "{what}: a bias of {rows}");
    }
}

/// The threads of `pool` (rayon's without one).
pub(crate) fn threads_of(pool: Option<&SpinPool>) -> usize {
    pool.map_or_else(rayon::current_num_threads, SpinPool::threads)
        .max(1)
}

/// Blocks of rows for `per_thread` tasks a thread, whole groups of `align` rows (four, or a
/// tile's 16); one block for a small matrix or one thread.
pub(crate) fn row_ranges(
    pool: Option<&SpinPool>,
    [rows, cols]: [usize; 2],
    per_thread: usize,
    align: usize,
) -> Vec<(usize, usize)> {
    let threads = threads_of(pool);
    let block = if rows * cols < PARALLEL_MIN || threads == 1 {
        rows.max(1)
    } else {
        rows.div_ceil(per_thread * threads).next_multiple_of(align)
    };
    (0..rows)
        .step_by(block)
        .map(|r0| (r0, (r0 + block).min(rows)))
        .collect()
}

/// `task(range)` for each range, in order of the ranges: on the calling thread for one,
/// else on `pool`'s threads (rayon's without one).
pub(crate) fn run_ranges(
    pool: Option<&SpinPool>,
    ranges: &[(usize, usize)],
    task: &(dyn Fn((usize, usize)) -> Vec<f32> + Sync),
) -> Vec<Vec<f32>> {
    if ranges.len() == 1 {
        return vec![task(ranges[0])];
    }
    match pool {
        Some(pool) => {
            let slots: Vec<Mutex<Vec<f32>>> = ranges.iter().map(|_| Mutex::default()).collect();
            pool.run(ranges.len(), &|i| {
                let p = task(ranges[i]);
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = p;
            });
            slots
                .into_iter()
                .map(|s| s.into_inner().unwrap_or_else(|e| e.into_inner()))
                .collect()
        }
        None => ranges.par_iter().map(|&r| task(r)).collect(),
    }
}

/// Writes the `[m, r1 - r0]` products `p` into columns `r0..r1` of `ys` (`[m, rows]`) after
/// `start`.
pub(crate) fn scatter(
    ys: &mut [f32],
    rows: usize,
    m: usize,
    (r0, r1): (usize, usize),
    p: &[f32],
    start: Start<'_>,
) {
    let n = r1 - r0;
    for i in 0..m {
        let y = &mut ys[i * rows + r0..i * rows + r1];
        put(y, &p[i * n..(i + 1) * n], start, r0);
    }
}

/// `y (=|+=) start + p` for the products `p` of the rows from `r0` on (the bias from there).
fn put(y: &mut [f32], p: &[f32], start: Start<'_>, r0: usize) {
    match start {
        Start::Zero => y.copy_from_slice(p),
        Start::Accumulate => y.iter_mut().zip(p).for_each(|(y, p)| *y += p),
        Start::Bias(b) => y
            .iter_mut()
            .zip(p.iter().zip(&b[r0..r0 + p.len()]))
            .for_each(|(y, (p, b))| *y = p + b),
    }
}

/// `ys` (`[m, rows]`) lent to parallel tasks that each write their own columns: the
/// products of a block of a matrix's rows land in place, without a buffer per block and a
/// copy ([`scatter`]'s way).
pub(crate) struct Columns<'a> {
    ptr: *mut f32,
    rows: usize,
    m: usize,
    _ys: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: `Columns` is a `&mut [f32]` handed to several threads; `Columns::scatter`'s
// contract (each column written by one task at a time) keeps their writes disjoint.
unsafe impl Send for Columns<'_> {}
// SAFETY: as for `Send`: shared use only reaches `scatter`, whose callers keep their
// columns disjoint.
unsafe impl Sync for Columns<'_> {}

impl<'a> Columns<'a> {
    /// # Panics
    /// When `ys` is not `m * rows` values.
    pub(crate) fn new(ys: &'a mut [f32], rows: usize, m: usize) -> Self {
        assert_eq!(ys.len(), m * rows, "Columns: [{m}, {rows}] outputs");
        Self {
            ptr: ys.as_mut_ptr(),
            rows,
            m,
            _ys: std::marker::PhantomData,
        }
    }

    /// [`scatter`] into columns `r0..r1`.
    ///
    /// # Safety
    /// No other call may write any of the columns `r0..r1` while this one runs.
    ///
    /// # Panics
    /// When `r0..r1` is not within the columns or `p` is not `m * (r1 - r0)` values.
    pub(crate) unsafe fn scatter(&self, (r0, r1): (usize, usize), p: &[f32], start: Start<'_>) {
        let (n, rows) = (r1 - r0, self.rows);
        assert!(
            r0 <= r1 && r1 <= rows && p.len() == self.m * n,
            "Columns::scatter"
        );
        for (i, p) in p.chunks_exact(n.max(1)).take(self.m).enumerate() {
            debug_assert!(i * rows + r1 <= self.m * rows);
            // SAFETY: `i * rows + r0..i * rows + r1` lies within the `m * rows` values of
            // `ys` (asserted above), and by the caller's contract no other thread touches
            // these columns meanwhile; the slice lives only for this iteration.
            let y = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * rows + r0), n) };
            put(y, p, start, r0);
        }
    }
}

/// `a . b` over the shorter of the two, at the CPU's widest vector level.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    crate::sparse_cg::dot_at_level(a, b)
}

/// The products of rows `r0..r1` with every vector, `[m, r1 - r0]`.
fn block_products(
    w: Weights<'_>,
    cols: usize,
    xs: &[f32],
    m: usize,
    r0: usize,
    r1: usize,
) -> Vec<f32> {
    let n = r1 - r0;
    let mut out = vec![0f32; m * n];
    match w {
        Weights::F32(w) => {
            let w = &w[r0 * cols..r1 * cols];
            #[cfg(target_arch = "x86_64")]
            if level() == Simd::Avx512 {
                debug_assert!(std::arch::is_x86_feature_detected!("avx512f"));
                // SAFETY: `level` found AVX-512F and FMA, the features of `rows512`.
                unsafe { x86::rows512(w, cols, xs, m, &mut out) };
                return out;
            }
            for (r, row) in w.chunks_exact(cols).enumerate() {
                for i in 0..m {
                    out[i * n + r] = crate::sparse_cg::dot_at_level(row, &xs[i * cols..]);
                }
            }
        }
        Weights::Bf16(w) => {
            let w = &w[r0 * cols..r1 * cols];
            #[cfg(target_arch = "x86_64")]
            if level() == Simd::Avx512 {
                debug_assert!(std::arch::is_x86_feature_detected!("avx512f"));
                // SAFETY: `level` found AVX-512F and FMA, the features of `rows512_bf16`.
                unsafe { x86::rows512_bf16(w, cols, xs, m, &mut out) };
                return out;
            }
            let mut row32 = vec![0f32; cols];
            for (r, row) in w.chunks_exact(cols).enumerate() {
                for (d, &s) in row32.iter_mut().zip(row) {
                    *d = bf16_to_f32(s);
                }
                for i in 0..m {
                    out[i * n + r] = crate::sparse_cg::dot_at_level(&row32, &xs[i * cols..]);
                }
            }
        }
    }
    out
}

/// The f32 a bfloat16 stands for (exact: bf16 is an f32's high half).
#[inline]
pub fn bf16_to_f32(v: u16) -> f32 {
    f32::from_bits(u32::from(v) << 16)
}

/// The bfloat16 nearest to `v` (ties to even; NaN stays NaN), as PyTorch rounds.
#[inline]
pub fn f32_to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;

    static POOL: std::sync::LazyLock<SpinPool> = std::sync::LazyLock::new(|| SpinPool::new(3));

    fn naive(w: &[f32], [rows, cols]: [usize; 2], xs: &[f32], m: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * rows];
        for i in 0..m {
            for r in 0..rows {
                y[i * rows + r] = (0..cols)
                    .map(|c| f64::from(w[r * cols + c]) * f64::from(xs[i * cols + c]))
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn bf16_rounds_to_nearest_even_as_pytorch() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to the even (the latter).
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Every shape (row groups of four and their remainder, column tails of 1-15, a
        /// parallel split), f32 and bf16 weights and each start equal the naive product.
        #[test]
        fn products_equal_the_naive_ones(
            rows in 0usize..70,
            cols in 1usize..50,
            m in 1usize..7,
            big in proptest::bool::ANY,
            seed in 0u64..1000,
        ) {
            // A tall matrix sometimes, so that the rows split over threads.
            let rows = if big { rows + 1200 } else { rows };
            let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut next = move || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            };
            let w: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
            let xs: Vec<f32> = (0..m * cols).map(|_| next()).collect();
            let bias: Vec<f32> = (0..rows).map(|_| next()).collect();
            let w16: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
            let w_rounded: Vec<f32> = w16.iter().map(|&v| bf16_to_f32(v)).collect();
            for (weights, dense) in [(Weights::F32(&w), &w), (Weights::Bf16(&w16), &w_rounded)] {
                let want = naive(dense, [rows, cols], &xs, m);
                let close = |got: &[f32], want: &[f32]| {
                    got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-5 * (1.0 + w.abs()))
                };
                let mut y = vec![f32::NAN; m * rows];
                matvec(weights, [rows, cols], &xs, m, &mut y, Start::Zero);
                proptest::prop_assert!(close(&y, &want));
                let mut y = vec![1.0f32; m * rows];
                matvec(weights, [rows, cols], &xs, m, &mut y, Start::Accumulate);
                let plus_one: Vec<f32> = want.iter().map(|v| v + 1.0).collect();
                proptest::prop_assert!(close(&y, &plus_one));
                let mut y = vec![f32::NAN; m * rows];
                matvec_on(&POOL, weights, [rows, cols], &xs, m, &mut y, Start::Zero);
                proptest::prop_assert!(close(&y, &want));
                if let Weights::F32(w) = weights {
                    // The same matrix packed as [cols, rows] (transposed).
                    let packed = PackedRhs::new(w, [cols, rows], [1, cols]);
                    let mut y = vec![f32::NAN; m * rows];
                    matvec_packed(Some(&POOL), &packed, &xs, m, &mut y, Start::Zero);
                    proptest::prop_assert!(close(&y, &want));
                    let mut y = vec![1.0f32; m * rows];
                    matvec_packed(None, &packed, &xs, m, &mut y, Start::Accumulate);
                    proptest::prop_assert!(close(&y, &plus_one));
                    let mut y = vec![f32::NAN; m * rows];
                    matvec_packed(None, &packed, &xs, m, &mut y, Start::Bias(&bias));
                    let with_bias: Vec<f32> =
                        want.iter().enumerate().map(|(j, v)| v + bias[j % rows.max(1)]).collect();
                    proptest::prop_assert!(close(&y, &with_bias));
                    // Each vector bit for bit as alone (a batch of decode steps).
                    let mut batch = vec![0f32; m * rows];
                    matvec_packed(Some(&POOL), &packed, &xs, m, &mut batch, Start::Zero);
                    for i in 0..m {
                        let mut alone = vec![0f32; rows];
                        let x = &xs[i * cols..(i + 1) * cols];
                        matvec_packed(Some(&POOL), &packed, x, 1, &mut alone, Start::Zero);
                        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                        proptest::prop_assert_eq!(bits(&batch[i * rows..(i + 1) * rows]), bits(&alone));
                    }
                    for r in [0, rows / 2, rows.saturating_sub(1)].into_iter().filter(|&r| r < rows) {
                        proptest::prop_assert_eq!(packed.column(r), w[r * cols..(r + 1) * cols].to_vec());
                    }
                }
                let mut y = vec![f32::NAN; m * rows];
                matvec(weights, [rows, cols], &xs, m, &mut y, Start::Bias(&bias));
                let with_bias: Vec<f32> =
                    want.iter().enumerate().map(|(j, v)| v + bias[j % rows.max(1)]).collect();
                proptest::prop_assert!(close(&y, &with_bias));
            }
        }
    }
}
