//! AVX-512 rows of quantized blocks times f32 vectors: the decode step's inner loop for the
//! block types of common GGUF files (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K) and the float types
//! (F32, F16, BF16). Each block's values are widened to 16-lane f32 registers as the block
//! is read (`d q + m` by one FMA, so a weight may differ from [`dequantize`]'s by one
//! rounding) and multiplied into two accumulators per vector and row (even and odd 16-value
//! chunks), with two rows or several vectors in flight so that the FMAs' latency is hidden.
//! Every kernel sums in that one order ([`Acc`]), so a vector's products are the same bits
//! whether it comes alone or with others (a batch of decode steps). Other types return
//! `false` and take the portable loop.
//!
//! The `unsafe` here is the loads: each reads 16 bytes or 16 floats through a reference to
//! a fixed-size array taken (bounds-checked) from the slice.
//!
//! [`dequantize`]: super::dequantize

use std::arch::x86_64::*;

use super::blocks::{BlockType, QK_K, k4_scales};

/// Whether this CPU has AVX and F16C ([`round_f16`]).
pub(super) fn has_f16c() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c")
    })
}

/// Each value rounded to the nearest f16 (ties to even) and back, eight at a time
/// (`vcvtps2ph`, `vcvtph2ps`); the last few through `half`.
///
/// # Safety
/// The CPU must have AVX and F16C ([`has_f16c`]).
#[target_feature(enable = "avx,f16c")]
pub(super) unsafe fn round_f16(v: &mut [f32]) {
    let mut chunks = v.chunks_exact_mut(8);
    for c in &mut chunks {
        let c: &mut [f32; 8] = c.try_into().expect("8 values");
        // SAFETY: `c` is a reference to 8 readable and writable floats; the load and the
        // store are unaligned.
        unsafe {
            let x = _mm256_loadu_ps(c.as_ptr());
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for x in chunks.into_remainder() {
        *x = half::f16::from_f32(*x).to_f32();
    }
}

/// Whether this CPU has every feature the functions here are compiled with.
pub(super) fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        crate::cpu::has_avx512()
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("f16c")
    })
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
pub(super) fn bytes16(b: &[u8], at: usize) -> __m128i {
    let a: &[u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
    // SAFETY: `a` is a reference to 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(a.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn floats16(x: &[f32], at: usize) -> __m512 {
    let a: &[f32; 16] = x[at..at + 16].try_into().expect("16 floats");
    // SAFETY: `a` is a reference to 16 readable floats; the load is unaligned.
    unsafe { _mm512_loadu_ps(a.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn half(b: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// 16 unsigned bytes as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn u8_f32(v: __m128i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v))
}

/// 16 signed bytes as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn i8_f32(v: __m128i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v))
}

/// `M` vectors' accumulators, two each: 16-value chunk `j` of a row goes into accumulator
/// `j % 2`, chunks in order, and a dot is the horizontal sum of the two added. Every kernel
/// here sums in this one order, whatever the number of rows or vectors it takes at once, so a
/// vector's products do not depend on the vectors beside it.
struct Acc<const M: usize>([[__m512; 2]; M]);

impl<const M: usize> Acc<M> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
    fn new() -> Self {
        Self([[_mm512_setzero_ps(); 2]; M])
    }

    /// `acc[i][K % 2] += w · xs[i * cols + c..+16]` for every vector `i`, `K` the chunk's
    /// index (mod 4) in its 64-value group (a constant, so that the accumulators stay in
    /// registers).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
    fn add<const K: usize>(&mut self, w: __m512, xs: &[f32], cols: usize, c: usize) {
        for (i, acc) in self.0.iter_mut().enumerate() {
            acc[K % 2] = _mm512_fmadd_ps(w, floats16(xs, i * cols + c), acc[K % 2]);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
    fn sums(&self, dots: &mut [f32]) {
        for (d, a) in dots.iter_mut().zip(&self.0) {
            *d = _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1]));
        }
    }
}

/// Rows `a..b` of the `[rows, cols]` matrix `data` (rows of `row_bytes`) times the `m <= 4`
/// vectors of `xs`: `out[i * ld + at + r - a] = row r · xs[i * cols..]`; each row's lines
/// are fetched eight rows ahead. `false` (nothing written) for a type without a kernel here,
/// a width that is not a multiple of 16, or more than 4 vectors.
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW, FMA and F16C ([`available`]).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
pub(super) unsafe fn rows(
    ty: BlockType,
    data: &[u8],
    row_bytes: usize,
    (a, b): (usize, usize),
    xs: &[f32],
    (cols, m): (usize, usize),
    out: &mut [f32],
    (ld, at): (usize, usize),
) -> bool {
    let supported = has_kernel(ty);
    if !supported || !cols.is_multiple_of(16) || !(1..=4).contains(&m) {
        return false;
    }
    match m {
        1 => rows_of::<1>(ty, data, row_bytes, (a, b), xs, cols, out, (ld, at)),
        2 => rows_of::<2>(ty, data, row_bytes, (a, b), xs, cols, out, (ld, at)),
        3 => rows_of::<3>(ty, data, row_bytes, (a, b), xs, cols, out, (ld, at)),
        _ => rows_of::<4>(ty, data, row_bytes, (a, b), xs, cols, out, (ld, at)),
    }
    true
}

/// Rows fetched ahead of the one being multiplied.
const ROWS_AHEAD: usize = 8;

/// Whether the rows of `ty` are fetched [`ROWS_AHEAD`] in software: the block types' yes,
/// the one-value types' (F32, F16, BF16: rows of kilobytes read straight through) no, the
/// hardware prefetcher streams them.
fn fetches_ahead(ty: BlockType) -> bool {
    !matches!(ty, BlockType::F32 | BlockType::F16 | BlockType::Bf16)
}

/// Whether [`rows`] and [`rows_batch`] have a kernel for `ty`.
fn has_kernel(ty: BlockType) -> bool {
    matches!(
        ty,
        BlockType::Q4_0
            | BlockType::Q4_1
            | BlockType::Q8_0
            | BlockType::Q4K
            | BlockType::Q6K
            | BlockType::F32
            | BlockType::F16
            | BlockType::Bf16
    )
}

/// Hints the CPU to fetch the cache lines of rows `ahead` (nothing past `data`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
pub(super) fn fetch_rows(data: &[u8], row_bytes: usize, ahead: std::ops::Range<usize>) {
    for r in ahead {
        if let Some(next) = data.get(r * row_bytes..(r + 1) * row_bytes) {
            for line in next.chunks(64) {
                // A hint only: the address lies inside `data`.
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn rows_of<const M: usize>(
    ty: BlockType,
    data: &[u8],
    row_bytes: usize,
    (a, b): (usize, usize),
    xs: &[f32],
    cols: usize,
    out: &mut [f32],
    (ld, at): (usize, usize),
) {
    let mut r = a;
    if M == 1 && matches!(ty, BlockType::Q4_0 | BlockType::Q4_1 | BlockType::Q8_0) {
        let size = ty.block_bytes();
        while r + 2 <= b {
            fetch_rows(data, row_bytes, r + ROWS_AHEAD..(r + ROWS_AHEAD + 2).min(b));
            let pair = (
                &data[r * row_bytes..(r + 1) * row_bytes],
                &data[(r + 1) * row_bytes..(r + 2) * row_bytes],
            );
            let x = &xs[..cols];
            let dots = match ty {
                BlockType::Q4_0 => two_rows(pair, size, x, |b: &[u8]| widen_q4::<false>(b)),
                BlockType::Q4_1 => two_rows(pair, size, x, |b: &[u8]| widen_q4::<true>(b)),
                _ => two_rows(pair, size, x, |b: &[u8]| widen_q8(b)),
            };
            out[at + r - a] = dots[0];
            out[at + r + 1 - a] = dots[1];
            r += 2;
        }
    }
    for r in r..b {
        if fetches_ahead(ty) {
            fetch_rows(data, row_bytes, r + ROWS_AHEAD..(r + ROWS_AHEAD + 1).min(b));
        }
        let mut dots = [0f32; M];
        typed::<M>(
            ty,
            &data[r * row_bytes..(r + 1) * row_bytes],
            xs,
            cols,
            &mut dots,
        );
        for (i, d) in dots.iter().enumerate() {
            out[i * ld + at + r - a] = *d;
        }
    }
}

#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn typed<const M: usize>(ty: BlockType, row: &[u8], xs: &[f32], cols: usize, dots: &mut [f32; M]) {
    let mut acc = Acc::<M>::new();
    let low4 = _mm_set1_epi8(0x0f);
    match ty {
        BlockType::Q4_0 => q4::<M, false>(row, xs, cols, &mut acc),
        BlockType::Q4_1 => q4::<M, true>(row, xs, cols, &mut acc),
        BlockType::Q8_0 => blocks_in_pairs(row, 34, xs, cols, &mut acc, |b: &[u8]| widen_q8(b)),
        BlockType::Q4K => {
            for (b, block) in row.chunks_exact(144).enumerate() {
                let c0 = QK_K * b;
                prefetch(row, 144 * b + PREFETCH);
                let (d, dmin) = (half(block, 0), half(block, 2));
                let (sc, mn) = k4_scales(&block[4..16]);
                for j in 0..4 {
                    let q0 = bytes16(block, 16 + 32 * j);
                    let q1 = bytes16(block, 32 + 32 * j);
                    let widen = |s: usize, q: __m128i| {
                        let dl = _mm512_set1_ps(d * sc[s] as f32);
                        let ml = _mm512_set1_ps(dmin * mn[s] as f32);
                        _mm512_fmsub_ps(u8_f32(_mm_and_si128(q, low4)), dl, ml)
                    };
                    let (s, c) = (2 * j, c0 + 64 * j);
                    acc.add::<0>(widen(s, q0), xs, cols, c);
                    acc.add::<1>(widen(s, q1), xs, cols, c + 16);
                    let (h0, h1) = (_mm_srli_epi16::<4>(q0), _mm_srli_epi16::<4>(q1));
                    acc.add::<2>(widen(s + 1, h0), xs, cols, c + 32);
                    acc.add::<3>(widen(s + 1, h1), xs, cols, c + 48);
                }
            }
        }
        BlockType::Q6K => {
            let low2 = _mm_set1_epi8(0x03);
            let bias = _mm512_set1_ps(32.0);
            for (b, block) in row.chunks_exact(210).enumerate() {
                let c0 = QK_K * b;
                let d = half(block, 208);
                prefetch(row, 210 * b + PREFETCH);
                let group = |h: usize, g: usize| {
                    let r = 16 * g;
                    let ql = bytes16(block, 64 * h + r % 64);
                    let ql = _mm_srl_epi16(ql, _mm_cvtsi32_si128(4 * (r / 64) as i32));
                    let qh = bytes16(block, 128 + 32 * h + r % 32);
                    let qh = _mm_srl_epi16(qh, _mm_cvtsi32_si128(2 * (r / 32) as i32));
                    let q = _mm_or_si128(
                        _mm_and_si128(ql, low4),
                        _mm_slli_epi16::<4>(_mm_and_si128(qh, low2)),
                    );
                    let scale = d * (block[192 + 8 * h + g] as i8) as f32;
                    _mm512_mul_ps(_mm512_sub_ps(u8_f32(q), bias), _mm512_set1_ps(scale))
                };
                for h in 0..2 {
                    for g in [0, 4] {
                        let c = c0 + 128 * h + 16 * g;
                        acc.add::<0>(group(h, g), xs, cols, c);
                        acc.add::<1>(group(h, g + 1), xs, cols, c + 16);
                        acc.add::<2>(group(h, g + 2), xs, cols, c + 32);
                        acc.add::<3>(group(h, g + 3), xs, cols, c + 48);
                    }
                }
            }
        }
        BlockType::F32 => sixteens(row, 64, xs, cols, &mut acc, |v: &[u8]| {
            let a: &[u8; 64] = v.try_into().expect("64 bytes");
            // SAFETY: `a` is a reference to 64 readable bytes (16 little-endian f32, as x86
            // stores them); the load is unaligned.
            unsafe { _mm512_loadu_ps(a.as_ptr().cast()) }
        }),
        BlockType::F16 => sixteens(row, 32, xs, cols, &mut acc, |v: &[u8]| {
            _mm512_cvtph_ps(bytes32(v, 0))
        }),
        BlockType::Bf16 => sixteens(row, 32, xs, cols, &mut acc, |v: &[u8]| {
            let v = bytes32(v, 0);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)))
        }),
        _ => unreachable!("`rows` checks the type"),
    }
    acc.sums(dots);
}

/// A row of a one-value type (`bytes` per 16 values, widened by `widen`) into `acc`: four
/// 16-value chunks a step, each to its accumulator by a constant index (the remainder by
/// [`add_any`]), chunk `g` to accumulator `g % 4` as everywhere.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn sixteens<const M: usize>(
    row: &[u8],
    bytes: usize,
    xs: &[f32],
    cols: usize,
    acc: &mut Acc<M>,
    widen: impl Fn(&[u8]) -> __m512,
) {
    let mut fours = row.chunks_exact(4 * bytes);
    let mut c = 0;
    for four in &mut fours {
        let (a, b) = four.split_at(2 * bytes);
        acc.add::<0>(widen(&a[..bytes]), xs, cols, c);
        acc.add::<1>(widen(&a[bytes..]), xs, cols, c + 16);
        acc.add::<2>(widen(&b[..bytes]), xs, cols, c + 32);
        acc.add::<3>(widen(&b[bytes..]), xs, cols, c + 48);
        c += 64;
    }
    for (g, v) in fours.remainder().chunks_exact(bytes).enumerate() {
        add_any(acc, g, widen(v), xs, cols, c + 16 * g);
    }
}

/// Q4_0 (`MIN` false: `d (q - 8)`) or Q4_1 (`MIN`: `d q + m`) rows into `acc`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn q4<const M: usize, const MIN: bool>(row: &[u8], xs: &[f32], cols: usize, acc: &mut Acc<M>) {
    let size = if MIN { 20 } else { 18 };
    blocks_in_pairs(row, size, xs, cols, acc, |b: &[u8]| widen_q4::<MIN>(b));
}

/// A Q4_0 (`MIN` false) or Q4_1 block's two halves as f32: `d q - 8 d` or `d q + m`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn widen_q4<const MIN: bool>(block: &[u8]) -> (__m512, __m512) {
    let low4 = _mm_set1_epi8(0x0f);
    let d = half(block, 0);
    let m = if MIN { half(block, 2) } else { -8.0 * d };
    let (dv, mv) = (_mm512_set1_ps(d), _mm512_set1_ps(m));
    let q = bytes16(block, block.len() - 16);
    let lo = _mm512_fmadd_ps(u8_f32(_mm_and_si128(q, low4)), dv, mv);
    let hi = _mm512_fmadd_ps(u8_f32(_mm_and_si128(_mm_srli_epi16::<4>(q), low4)), dv, mv);
    (lo, hi)
}

/// A Q8_0 block's two halves as f32: `d q`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn widen_q8(block: &[u8]) -> (__m512, __m512) {
    let dv = _mm512_set1_ps(half(block, 0));
    (
        _mm512_mul_ps(i8_f32(bytes16(block, 2)), dv),
        _mm512_mul_ps(i8_f32(bytes16(block, 18)), dv),
    )
}

/// Two rows of 32-value blocks (`size` bytes each) times one vector, each block of `x` loaded
/// once for both rows: the decode step's usual case, with twice the independent work per
/// load of the vector.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn two_rows(
    rows: (&[u8], &[u8]),
    size: usize,
    x: &[f32],
    widen: impl Fn(&[u8]) -> (__m512, __m512),
) -> [f32; 2] {
    // Acc's order: even chunks (the blocks' low halves) into [0], odd ones into [1].
    let mut a = [_mm512_setzero_ps(); 2];
    let mut b = [_mm512_setzero_ps(); 2];
    let mut c = 0;
    for (ra, rb) in rows.0.chunks_exact(size).zip(rows.1.chunks_exact(size)) {
        let (x0, x1) = (floats16(x, c), floats16(x, c + 16));
        let (lo, hi) = widen(ra);
        a[0] = _mm512_fmadd_ps(lo, x0, a[0]);
        a[1] = _mm512_fmadd_ps(hi, x1, a[1]);
        let (lo, hi) = widen(rb);
        b[0] = _mm512_fmadd_ps(lo, x0, b[0]);
        b[1] = _mm512_fmadd_ps(hi, x1, b[1]);
        c += 32;
    }
    let sum = |v: [__m512; 2]| _mm512_reduce_add_ps(_mm512_add_ps(v[0], v[1]));
    [sum(a), sum(b)]
}

/// The 32-value blocks of `row` (`size` bytes each), two at a time so that each widened
/// half has an accumulator of its own: `widen` gives a block's two halves as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn blocks_in_pairs<const M: usize>(
    row: &[u8],
    size: usize,
    xs: &[f32],
    cols: usize,
    acc: &mut Acc<M>,
    widen: impl Fn(&[u8]) -> (__m512, __m512),
) {
    let mut pairs = row.chunks_exact(2 * size);
    let mut c = 0;
    for pair in &mut pairs {
        prefetch(row, c / 32 * size + PREFETCH);
        let (a, b) = pair.split_at(size);
        let (lo, hi) = widen(a);
        acc.add::<0>(lo, xs, cols, c);
        acc.add::<1>(hi, xs, cols, c + 16);
        let (lo, hi) = widen(b);
        acc.add::<2>(lo, xs, cols, c + 32);
        acc.add::<3>(hi, xs, cols, c + 48);
        c += 64;
    }
    if !pairs.remainder().is_empty() {
        let (lo, hi) = widen(pairs.remainder());
        acc.add::<0>(lo, xs, cols, c);
        acc.add::<1>(hi, xs, cols, c + 16);
    }
}

/// Bytes of a row fetched ahead of their use (a few cache lines).
const PREFETCH: usize = 384;

/// A hint to fetch the cache line of `row[at]` (nothing past the row).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn prefetch(row: &[u8], at: usize) {
    if let Some(b) = row.get(at) {
        _mm_prefetch::<_MM_HINT_T0>((b as *const u8).cast());
    }
}

/// [`Acc::add`] with the accumulator chosen at run time (the float types' groups).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn add_any<const M: usize>(
    acc: &mut Acc<M>,
    k: usize,
    w: __m512,
    xs: &[f32],
    cols: usize,
    c: usize,
) {
    match k {
        0 => acc.add::<0>(w, xs, cols, c),
        1 => acc.add::<1>(w, xs, cols, c),
        2 => acc.add::<2>(w, xs, cols, c),
        _ => acc.add::<3>(w, xs, cols, c),
    }
}

/// 32 bytes of `b` from `at` in a 256-bit register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
pub(super) fn bytes32(b: &[u8], at: usize) -> __m256i {
    let a: &[u8; 32] = b[at..at + 32].try_into().expect("32 bytes");
    // SAFETY: `a` is a reference to 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

/// Rows `a..b` times `m` vectors (any number: a batch of decode steps) into
/// `out[i * ld + at + r - a]`, each row read from memory once (fetched eight rows ahead) and
/// from L1 by every group of four vectors; the 32-value types two rows at a time, so that
/// each load of a vector serves both. Each vector's sums are formed exactly as [`rows`]
/// forms them with that vector alone ([`Acc`]'s order). `false` (nothing written) where
/// [`rows`] has no kernel.
///
/// # Safety
/// The CPU must have AVX-512F, AVX-512BW, FMA and F16C ([`available`]).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
pub(super) unsafe fn rows_batch(
    ty: BlockType,
    data: &[u8],
    row_bytes: usize,
    (a, b): (usize, usize),
    xs: &[f32],
    (cols, m): (usize, usize),
    out: &mut [f32],
    (ld, at): (usize, usize),
) -> bool {
    let supported = has_kernel(ty);
    if !supported || !cols.is_multiple_of(16) || m == 0 || xs.len() < m * cols {
        return false;
    }
    let legacy = match ty {
        BlockType::Q4_0 => Some(18),
        BlockType::Q4_1 => Some(20),
        BlockType::Q8_0 => Some(34),
        _ => None,
    };
    let mut r = a;
    while r < b {
        // Two rows at a time where the type has the two-row kernel, else one.
        let n = if legacy.is_some() && r + 2 <= b { 2 } else { 1 };
        if fetches_ahead(ty) {
            fetch_rows(data, row_bytes, r + ROWS_AHEAD..(r + ROWS_AHEAD + n).min(b));
        }
        let row = |k: usize| &data[(r + k) * row_bytes..(r + k + 1) * row_bytes];
        for i0 in (0..m).step_by(4) {
            let mm = (m - i0).min(4);
            let x = &xs[i0 * cols..(i0 + mm) * cols];
            let mut dots = [[0f32; 4]; 2];
            match (legacy, n, mm) {
                (Some(size), 2, 4) => {
                    let pair = (row(0), row(1));
                    dots = match ty {
                        BlockType::Q4_0 => {
                            two_rows_four_vectors(pair, size, x, cols, |b: &[u8]| {
                                widen_q4::<false>(b)
                            })
                        }
                        BlockType::Q4_1 => {
                            two_rows_four_vectors(pair, size, x, cols, |b: &[u8]| {
                                widen_q4::<true>(b)
                            })
                        }
                        _ => two_rows_four_vectors(pair, size, x, cols, |b: &[u8]| widen_q8(b)),
                    };
                }
                _ => {
                    for (k, d) in dots.iter_mut().enumerate().take(n) {
                        match mm {
                            4 => typed::<4>(ty, row(k), x, cols, d),
                            3 => {
                                let mut t = [0f32; 3];
                                typed::<3>(ty, row(k), x, cols, &mut t);
                                d[..3].copy_from_slice(&t);
                            }
                            2 => {
                                let mut t = [0f32; 2];
                                typed::<2>(ty, row(k), x, cols, &mut t);
                                d[..2].copy_from_slice(&t);
                            }
                            _ => {
                                let mut t = [0f32; 1];
                                typed::<1>(ty, row(k), x, cols, &mut t);
                                d[0] = t[0];
                            }
                        }
                    }
                }
            }
            for (k, d) in dots.iter().enumerate().take(n) {
                for (v, value) in d.iter().take(mm).enumerate() {
                    out[(i0 + v) * ld + at + r + k - a] = *value;
                }
            }
        }
        r += n;
    }
    true
}

/// Two rows of 32-value blocks (`size` bytes each) times four vectors (`xs`, `cols`
/// each), `[row][vector]`: [`Acc`]'s accumulators and order for each pair, every block
/// widened once for the four vectors and every load of a vector serving both rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,fma,f16c")]
fn two_rows_four_vectors(
    rows: (&[u8], &[u8]),
    size: usize,
    xs: &[f32],
    cols: usize,
    widen: impl Fn(&[u8]) -> (__m512, __m512),
) -> [[f32; 4]; 2] {
    debug_assert!(xs.len() == 4 * cols && rows.0.len() == cols / 32 * size);
    let x: [&[f32]; 4] = [
        &xs[..cols],
        &xs[cols..2 * cols],
        &xs[2 * cols..3 * cols],
        &xs[3 * cols..4 * cols],
    ];
    let zero = _mm512_setzero_ps();
    let mut a = [[zero; 2]; 4];
    let mut b = [[zero; 2]; 4];
    let mut c = 0;
    for (p, q) in rows.0.chunks_exact(size).zip(rows.1.chunks_exact(size)) {
        let (pl, ph) = widen(p);
        let (ql, qh) = widen(q);
        for v in 0..4 {
            let s: &[f32; 32] = x[v][c..c + 32].try_into().expect("32 floats");
            let (x0, x1) = (floats16(s, 0), floats16(s, 16));
            a[v][0] = _mm512_fmadd_ps(pl, x0, a[v][0]);
            a[v][1] = _mm512_fmadd_ps(ph, x1, a[v][1]);
            b[v][0] = _mm512_fmadd_ps(ql, x0, b[v][0]);
            b[v][1] = _mm512_fmadd_ps(qh, x1, b[v][1]);
        }
        c += 32;
    }
    let mut dots = [[0f32; 4]; 2];
    for v in 0..4 {
        dots[0][v] = _mm512_reduce_add_ps(_mm512_add_ps(a[v][0], a[v][1]));
        dots[1][v] = _mm512_reduce_add_ps(_mm512_add_ps(b[v][0], b[v][1]));
    }
    dots
}
