//! Activations quantized to 8 bits per block as llama.cpp quantizes them before a product
//! with block-quantized weights, and those products in integer arithmetic.
//!
//! llama.cpp never multiplies its Q4/Q8/K-type weights with f32 activations: each vector is
//! first quantized to the weight type's "vec-dot type" (`Q8_0` for Q4_0 and Q8_0 weights,
//! `Q8_1` for Q4_1, `Q8_K` for the K-types), and a block's dot product is an exact integer
//! sum, scaled once. [`Q8Vectors`] holds `m` vectors in both layouts, computed as llama.cpp's
//! x86 build computes them (`quantize_row_q8_0` / `_q8_1`: the scale `amax / 127` rounded to
//! f16, values `x · 127 / amax` rounded to nearest even; `quantize_row_q8_K_ref`: the scale
//! `max / -127` in f32 from the value of largest magnitude, `nearest_int`, clamped to 127),
//! so that a product is llama.cpp's up to the order of its float sums.
//!
//! [`dot_portable`] is the integer product written plainly (ggml's generic `vec_dot_*`
//! formulas): the fallback where the CPU lacks the vector kernels and the reference they are
//! tested against.

use half::f16;

use crate::cpu::simd_dispatch;

use super::blocks::{BlockType, QK_K, k4_scales};

/// Values per `Q8_0` / `Q8_1` block.
pub const QK8: usize = 32;

/// 32-value blocks from which [`Q8Vectors`] quantizes on rayon's threads (64 vectors of 1,024).
const PARALLEL_BLOCKS: usize = 2048;

/// `m` vectors of `cols` values quantized per 32-value block (`Q8_0`, with `Q8_1`'s sums)
/// and, when `cols` is a multiple of 256, per 256-value block (`Q8_K`).
#[derive(Debug, Clone, Default)]
pub struct Q8Vectors {
    pub(crate) cols: usize,
    pub(crate) m: usize,
    /// `m * cols` values of the 32-value blocks.
    pub(crate) qs: Vec<i8>,
    /// Per 32-value block: the scale as stored (f16) and read back.
    pub(crate) d: Vec<f32>,
    /// Per 32-value block: `Q8_1`'s `s`, `d · Σ q` (the unrounded `d`) rounded to f16.
    pub(crate) s: Vec<f32>,
    /// Per 32-value block: `Σ q`.
    pub(crate) sum: Vec<i32>,
    /// `m * cols` values of the 256-value blocks (empty when `cols` is not a multiple).
    pub(crate) kqs: Vec<i8>,
    /// Per 256-value block: its f32 scale.
    pub(crate) kd: Vec<f32>,
    /// Per 256-value block: the sums of its sixteen 16-value groups.
    pub(crate) kbsums: Vec<i16>,
}

impl Q8Vectors {
    /// Quantizes the `m` vectors of `xs` (`cols` values each; `cols` a multiple of 32).
    ///
    /// # Panics
    /// When `cols` is not a multiple of 32 or `xs` not `m * cols` values.
    pub fn new(xs: &[f32], m: usize, cols: usize) -> Self {
        let mut v = Self::default();
        v.fill(xs, m, cols);
        v
    }

    /// [`Q8Vectors::new`] into this buffer's memory.
    ///
    /// # Panics
    /// As [`Q8Vectors::new`].
    pub fn fill(&mut self, xs: &[f32], m: usize, cols: usize) {
        self.fill_with(xs, m, cols, true);
    }

    /// [`Q8Vectors::new`] with the 256-value blocks only when `k` (some weight is a K-type):
    /// a product with 32-value types alone skips quantizing the vectors twice.
    pub(crate) fn new_with(xs: &[f32], m: usize, cols: usize, k: bool) -> Self {
        let mut v = Self::default();
        v.fill_with(xs, m, cols, k);
        v
    }

    fn fill_with(&mut self, xs: &[f32], m: usize, cols: usize, k: bool) {
        assert!(
            cols.is_multiple_of(QK8) && xs.len() == m * cols,
            "Q8Vectors: {} values for {m} vectors of {cols} (a multiple of 32)",
            xs.len()
        );
        self.cols = cols;
        self.m = m;
        let blocks = xs.len() / QK8;
        self.qs.resize(xs.len(), 0);
        self.d.resize(blocks, 0.0);
        self.s.resize(blocks, 0.0);
        self.sum.resize(blocks, 0);
        let run = quantize_32_blocks;
        // A prompt's or an encoder batch's activations (a few hundred thousand values) on
        // rayon's threads, 64 blocks a task; a decode step's few vectors on this thread.
        const TASK: usize = 64;
        let run = |x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [f32], sum: &mut [i32]| {
            run(x, q, d, s, sum);
            // `Q8_1` stores the scale and `d · Σ q` as f16.
            round_f16(d);
            round_f16(s);
        };
        if blocks >= PARALLEL_BLOCKS {
            use rayon::prelude::*;
            xs.par_chunks(TASK * QK8)
                .zip(self.qs.par_chunks_mut(TASK * QK8))
                .zip(self.d.par_chunks_mut(TASK))
                .zip(self.s.par_chunks_mut(TASK))
                .zip(self.sum.par_chunks_mut(TASK))
                .for_each(|((((x, q), d), s), sum)| run(x, q, d, s, sum));
        } else {
            run(xs, &mut self.qs, &mut self.d, &mut self.s, &mut self.sum);
        }
        if k && cols.is_multiple_of(QK_K) {
            let kblocks = xs.len() / QK_K;
            self.kqs.resize(xs.len(), 0);
            self.kd.resize(kblocks, 0.0);
            self.kbsums.resize(16 * kblocks, 0);
            quantize_k_blocks(xs, &mut self.kqs, &mut self.kd, &mut self.kbsums);
        } else {
            self.kqs.clear();
            self.kd.clear();
            self.kbsums.clear();
        }
    }

    /// Only the 256-value blocks (`Q8_K`; [`Q8Vectors::blocks32`] empty), blocks
    /// quantized in parallel on rayon's pool: a prompt's activations for K-type weights.
    ///
    /// # Panics
    /// When `cols` is not a multiple of 256 or `xs` not `m * cols` values.
    pub(crate) fn new_k(xs: &[f32], m: usize, cols: usize) -> Self {
        use rayon::prelude::*;
        assert!(
            cols.is_multiple_of(QK_K) && xs.len() == m * cols,
            "Q8Vectors: {} values for {m} vectors of {cols} (a multiple of 256)",
            xs.len()
        );
        let blocks = xs.len() / QK_K;
        let mut kqs = vec![0i8; xs.len()];
        let mut kd = vec![0f32; blocks];
        let mut kbsums = vec![0i16; 16 * blocks];
        // Eight blocks a task: a few microseconds each.
        const BLOCKS: usize = 8;
        kqs.par_chunks_mut(BLOCKS * QK_K)
            .zip(kd.par_chunks_mut(BLOCKS))
            .zip(kbsums.par_chunks_mut(BLOCKS * 16))
            .zip(xs.par_chunks(BLOCKS * QK_K))
            .for_each(|(((q, d), sums), x)| quantize_k_blocks(x, q, d, sums));
        Self {
            cols,
            m,
            kqs,
            kd,
            kbsums,
            ..Self::default()
        }
    }

    /// The number of vectors.
    pub fn len(&self) -> usize {
        self.m
    }

    /// Whether there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.m == 0
    }

    /// Values per vector.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Vector `i`'s 32-value blocks: values, f16 scales, `Q8_1` sums `s`, integer sums.
    pub fn blocks32(&self, i: usize) -> (&[i8], &[f32], &[f32], &[i32]) {
        let (c, nb) = (self.cols, self.cols / QK8);
        (
            &self.qs[i * c..(i + 1) * c],
            &self.d[i * nb..(i + 1) * nb],
            &self.s[i * nb..(i + 1) * nb],
            &self.sum[i * nb..(i + 1) * nb],
        )
    }

    /// Vector `i`'s 256-value blocks: values, scales, 16-value sums (empty when `cols` is
    /// not a multiple of 256).
    pub fn blocks256(&self, i: usize) -> (&[i8], &[f32], &[i16]) {
        if self.kd.is_empty() {
            return (&[], &[], &[]);
        }
        let (c, nb) = (self.cols, self.cols / QK_K);
        (
            &self.kqs[i * c..(i + 1) * c],
            &self.kd[i * nb..(i + 1) * nb],
            &self.kbsums[16 * i * nb..16 * (i + 1) * nb],
        )
    }
}

/// Whether products of `ty` rows with `cols`-value vectors can take 8-bit activations (the
/// K-types need whole 256-value blocks, which their rows always are).
pub fn has_int8(ty: BlockType) -> bool {
    matches!(
        ty,
        BlockType::Q4_0 | BlockType::Q4_1 | BlockType::Q8_0 | BlockType::Q4K | BlockType::Q6K
    )
}

/// One 32-value block as llama.cpp's AVX2 `quantize_row_q8_1` (and `_q8_0`, the same values
/// and scale) quantizes it: `(d as f16 read back, s, Σ q)`.
///
/// A NaN value makes the scale NaN (and every product with the block NaN, as in f32): the
/// maximum would skip it and the rounding turn it into 0, a finite and wrong product.
#[inline(always)]
fn q8_1_block(x: &[f32], q: &mut [i8]) -> (f32, f32, i32) {
    // Written to vectorise: the largest magnitude over 16 lanes (NaN tracked beside it, as
    // `max` skips it).
    let (mut lanes, mut nan) = ([0f32; 16], false);
    for c in x.chunks_exact(16) {
        for l in 0..16 {
            lanes[l] = lanes[l].max(c[l].abs());
            nan |= c[l].is_nan();
        }
    }
    let amax = lanes.iter().fold(0f32, |a, &v| a.max(v));
    if nan || amax.is_infinite() {
        // An infinite value has no level either (its scale would be infinite, `x · 0`
        // NaN): the block's products are NaN, as they are non-finite in f32.
        q.fill(0);
        return (f32::NAN, f32::NAN, 0);
    }
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sums = [0i32; 16];
    for (o, v) in q.chunks_exact_mut(16).zip(x.chunks_exact(16)) {
        for l in 0..16 {
            // `_mm256_round_ps(_MM_ROUND_NEAREST)` then `cvtps_epi32`; |v · id| <= 127.
            let r = nearest_int(v[l] * id);
            o[l] = r as i8;
            sums[l] += r;
        }
    }
    let sum: i32 = sums.iter().sum();
    // Rounded to f16 by the caller, many blocks at a time (`round_f16`).
    (d, d * sum as f32, sum)
}

simd_dispatch!(
    /// Consecutive 32-value blocks of `xs` quantized by [`q8_1_block`] into `qs`, `d`, `s`
    /// and `sum` (one each per block), at the CPU's widest vectors.
    quantize_32_blocks, quantize_32_blocks_body, (xs: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], sum: &mut [i32])
);

#[inline(always)]
fn quantize_32_blocks_body(
    xs: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    sum: &mut [i32],
) {
    for (b, (x, q)) in xs
        .chunks_exact(QK8)
        .zip(qs.chunks_exact_mut(QK8))
        .enumerate()
    {
        (d[b], s[b], sum[b]) = q8_1_block(x, q);
    }
}

simd_dispatch!(
    /// Consecutive 256-value blocks of `xs` quantized by [`q8_k_block`] into `qs`, `d` (a
    /// scale per block) and `bsums` (sixteen sums per block), at the CPU's widest vectors.
    quantize_k_blocks, quantize_k_blocks_body, (xs: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16])
);

#[inline(always)]
fn quantize_k_blocks_body(xs: &[f32], qs: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
    debug_assert!(
        qs.len() == xs.len() && d.len() * QK_K == xs.len() && bsums.len() == 16 * d.len()
    );
    let blocks = xs.chunks_exact(QK_K).zip(qs.chunks_exact_mut(QK_K));
    for ((x, q), (d, sums)) in blocks.zip(d.iter_mut().zip(bsums.chunks_exact_mut(16))) {
        *d = q8_k_block(x, q, sums);
    }
}

/// One 256-value block as `quantize_row_q8_K_ref` quantizes it; returns the scale and writes
/// the sixteen 16-value sums. A NaN value makes the scale NaN, as in [`q8_1_block`].
///
/// Written to vectorise: the largest magnitude over 16 lanes, then the first value that has
/// it (the one the reference's scan keeps), so the scale's sign is the reference's.
#[inline(always)]
fn q8_k_block(x: &[f32], q: &mut [i8], bsums: &mut [i16]) -> f32 {
    let (mut lanes, mut nan) = ([0f32; 16], false);
    for c in x.chunks_exact(16) {
        for l in 0..16 {
            lanes[l] = lanes[l].max(c[l].abs());
            nan |= c[l].is_nan();
        }
    }
    if nan {
        q.fill(0);
        bsums.fill(0);
        return f32::NAN;
    }
    let amax = lanes.iter().fold(0f32, |a, &v| a.max(v));
    let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
    if amax == 0.0 {
        q.fill(0);
        bsums.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (o, &v) in q.iter_mut().zip(x) {
        // ggml's `nearest_int`.
        *o = (round_even(iscale * v) as i32).min(127) as i8;
    }
    for (s, g) in bsums.iter_mut().zip(q.chunks_exact(16)) {
        *s = g.iter().map(|&v| i16::from(v)).sum();
    }
    1.0 / iscale
}

/// Each value rounded to the nearest f16 (ties to even) and back, as `half`'s `from_f32` /
/// `to_f32` round it: F16C eight at a time where the CPU has it.
fn round_f16(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::x86::has_f16c() {
        // SAFETY: `has_f16c` found AVX and F16C on this CPU.
        unsafe { super::x86::round_f16(v) };
        return;
    }
    for x in v {
        *x = f16::from_f32(*x).to_f32();
    }
}

/// [`round_even`] as an integer, read from the bits as ggml's `nearest_int` reads it (no
/// float-to-int conversion, whose saturation keeps a loop from vectorising), for `|v| <= 2^22`.
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    ((v + MAGIC).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `v` rounded to the nearest integer, ties to even, for `|v| <= 2^22` (ggml's
/// `nearest_int` trick: adding 1.5 · 2^23 leaves no fraction bits). Inlined and vectorised
/// where `f32::round_ties_even` is a call to `rintf`. NaN stays NaN.
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

#[inline(always)]
pub(super) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// A row of `ty` (one of [`has_int8`]'s types) times vector `i` of `y`, the blocks' integer
/// sums scaled as ggml's generic `vec_dot_*` scales them.
///
/// # Panics
/// When `ty` has no 8-bit product or the row is not `y.cols()` values of it.
pub fn dot_portable(ty: BlockType, row: &[u8], y: &Q8Vectors, i: usize) -> f32 {
    let size = ty.block_bytes();
    assert_eq!(
        ty.row_bytes(y.cols),
        Some(row.len()),
        "dot_portable: a {} row of {} bytes against {} values",
        ty.name(),
        row.len(),
        y.cols
    );
    let mut sumf = 0f32;
    match ty {
        BlockType::Q4_0 | BlockType::Q4_1 | BlockType::Q8_0 => {
            let (qs, d, s, _) = y.blocks32(i);
            for (b, block) in row.chunks_exact(size).enumerate() {
                sumf += dot32_block(ty, block, &qs[QK8 * b..QK8 * (b + 1)], d[b], s[b]);
            }
        }
        BlockType::Q4K => {
            let (qs, kd, bsums) = y.blocks256(i);
            for (b, block) in row.chunks_exact(size).enumerate() {
                let yq = &qs[QK_K * b..QK_K * (b + 1)];
                let bs = &bsums[16 * b..16 * (b + 1)];
                let (sc, mn) = k4_scales(&block[4..16]);
                let q = &block[16..144];
                let mut isum = 0i32;
                for j in 0..4 {
                    let (mut lo, mut hi) = (0i32, 0i32);
                    for l in 0..32 {
                        let w = q[32 * j + l];
                        lo += i32::from(w & 0x0f) * i32::from(yq[64 * j + l]);
                        hi += i32::from(w >> 4) * i32::from(yq[64 * j + 32 + l]);
                    }
                    isum += i32::from(sc[2 * j]) * lo + i32::from(sc[2 * j + 1]) * hi;
                }
                let mins: i32 = (0..8)
                    .map(|k| i32::from(mn[k]) * (i32::from(bs[2 * k]) + i32::from(bs[2 * k + 1])))
                    .sum();
                sumf +=
                    f16_at(block, 0) * kd[b] * isum as f32 - f16_at(block, 2) * kd[b] * mins as f32;
            }
        }
        BlockType::Q6K => {
            let (qs, kd, _) = y.blocks256(i);
            for (b, block) in row.chunks_exact(size).enumerate() {
                let yq = &qs[QK_K * b..QK_K * (b + 1)];
                let (ql, qh, sc) = (&block[..128], &block[128..192], &block[192..208]);
                let mut isum = 0i32;
                for h in 0..2 {
                    let mut groups = [0i32; 8];
                    for l in 0..32 {
                        let bits = qh[32 * h + l];
                        let lo = ql[64 * h + l];
                        let lo2 = ql[64 * h + 32 + l];
                        let vals = [
                            (lo & 0x0f) | ((bits & 3) << 4),
                            (lo2 & 0x0f) | (((bits >> 2) & 3) << 4),
                            (lo >> 4) | (((bits >> 4) & 3) << 4),
                            (lo2 >> 4) | (((bits >> 6) & 3) << 4),
                        ];
                        for (k, &v) in vals.iter().enumerate() {
                            let at = 32 * k + l;
                            groups[at / 16] += (i32::from(v) - 32) * i32::from(yq[128 * h + at]);
                        }
                    }
                    for (g, s) in groups.iter().enumerate() {
                        isum += i32::from(sc[8 * h + g] as i8) * s;
                    }
                }
                sumf += f16_at(block, 208) * kd[b] * isum as f32;
            }
        }
        _ => panic!("dot_portable: {} has no 8-bit product", ty.name()),
    }
    sumf
}

/// One Q4_0, Q4_1 or Q8_0 block times 32 activations `yq` (scale `d`, `Q8_1` sum `s`).
pub(crate) fn dot32_block(ty: BlockType, block: &[u8], yq: &[i8], d: f32, s: f32) -> f32 {
    let xd = f16_at(block, 0);
    let isum: i32 = match ty {
        BlockType::Q8_0 => block[2..34]
            .iter()
            .zip(yq)
            .map(|(&w, &v)| i32::from(w as i8) * i32::from(v))
            .sum(),
        _ => {
            let (off, q) = if ty == BlockType::Q4_0 {
                (8, &block[2..18])
            } else {
                (0, &block[4..20])
            };
            (0..16)
                .map(|j| {
                    let lo = i32::from(q[j] & 0x0f) - off;
                    let hi = i32::from(q[j] >> 4) - off;
                    lo * i32::from(yq[j]) + hi * i32::from(yq[j + 16])
                })
                .sum()
        }
    };
    if ty == BlockType::Q4_1 {
        (xd * d) * isum as f32 + f16_at(block, 2) * s
    } else {
        isum as f32 * (xd * d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_f16_rounding_is_halfs() {
        // Normal, subnormal, tie, overflowing and tiny magnitudes of both signs, and every
        // remainder of eight.
        let mut values: Vec<f32> = (0..4000)
            .map(|i| {
                let m = 1.0 + (i % 97) as f32 / 97.0 + if i % 5 == 0 { 1.0 / 2048.0 } else { 0.0 };
                let e = i % 50 - 30;
                m * 2f32.powi(e) * if i % 2 == 0 { 1.0 } else { -1.0 }
            })
            .collect();
        values.extend([
            0.0,
            -0.0,
            65504.0,
            65520.0,
            1e6,
            6e-8,
            3e-8,
            1e-10,
            f32::INFINITY,
        ]);
        for len in [values.len(), 13, 7, 1] {
            let mut bulk = values[..len].to_vec();
            round_f16(&mut bulk);
            for (got, v) in bulk.iter().zip(&values) {
                let want = f16::from_f32(*v).to_f32();
                assert_eq!(got.to_bits(), want.to_bits(), "{v}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        for v in [
            -127.5f32, -2.5, -0.5, 0.49999997, 0.5, 1.5, 2.5, 126.5, 3.7, -3.7,
        ] {
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn q8_blocks_by_hand() {
        // amax 127: d = 1, values rounded half to even (2.5 -> 2, -0.5 -> 0).
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -0.5;
        x[3] = -3.5;
        let y = Q8Vectors::new(&x, 1, 32);
        let (q, d, s, sum) = y.blocks32(0);
        assert_eq!(&q[..4], &[127, 2, 0, -4]);
        assert_eq!((d[0], sum[0]), (1.0, 125));
        assert_eq!(s[0], 125.0);
        assert!(y.blocks256(0).0.is_empty());
        // Q8_K: the value of largest magnitude is -254, so iscale = 0.5 and d = 2.
        let mut x = vec![1f32; 256];
        x[5] = -254.0;
        x[6] = 3.0;
        let y = Q8Vectors::new(&x, 1, 256);
        let (q, d, bs) = y.blocks256(0);
        assert_eq!(d[0], 2.0);
        assert_eq!(&q[4..8], &[0, -127, 2, 0]);
        assert_eq!(bs[0], -125);
    }

    /// `quantize_row_q8_K_ref` as ggml writes it: a scan keeping the first value of largest
    /// magnitude, then `nearest_int` clamped to 127.
    fn q8_k_reference(x: &[f32]) -> (f32, Vec<i8>) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            return (0.0, vec![0; x.len()]);
        }
        let iscale = -127.0 / max;
        let q = x
            .iter()
            .map(|&v| ((iscale * v).round_ties_even() as i32).min(127) as i8)
            .collect();
        (1.0 / iscale, q)
    }

    #[test]
    fn vectorised_q8_k_blocks_equal_the_reference_scan() {
        // Random blocks, and blocks whose largest magnitude occurs with both signs (the
        // first one decides the scale's sign), on every lane position.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for case in 0..200 {
            let mut x: Vec<f32> = (0..4 * QK_K).map(|_| next() * 10.0).collect();
            if case % 2 == 1 {
                let (a, b) = (case % 256, (case * 7 + 3) % 256);
                let peak = 11.0 + case as f32;
                x[a] = -peak;
                x[b] = peak;
            }
            let y = Q8Vectors::new(&x, 2, 2 * QK_K);
            let k = Q8Vectors::new_k(&x, 2, 2 * QK_K);
            for (b, block) in x.chunks_exact(QK_K).enumerate() {
                let (d, q) = q8_k_reference(block);
                let (i, at) = (b / 2, (b % 2) * QK_K);
                for v in [&y, &k] {
                    let (qs, ds, sums) = v.blocks256(i);
                    assert_eq!(ds[b % 2].to_bits(), d.to_bits(), "case {case} block {b}");
                    assert_eq!(&qs[at..at + QK_K], &q[..], "case {case} block {b}");
                    for g in 0..16 {
                        let want: i16 = q[16 * g..16 * (g + 1)].iter().map(|&v| i16::from(v)).sum();
                        assert_eq!(sums[16 * (b % 2) + g], want);
                    }
                }
            }
        }
    }
}
