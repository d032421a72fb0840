//! AVX-512 VNNI rows of quantized blocks times 8-bit activations ([`Q8Vectors`]): llama.cpp's
//! arithmetic (each block's dot product an exact integer sum, scaled once in f32) for the
//! types of common GGUF files, Q4_0, Q4_1 and Q8_0 (activations `Q8_0` / `Q8_1`) and Q4_K and
//! Q6_K (activations `Q8_K`).
//!
//! The 32-value types go two blocks per 512-bit register: 64 weights (nibbles spread to
//! bytes, or Q8_0's signed bytes offset by 128) against 64 activation bytes by one
//! `vpdpbusd`, the offsets (`8 Σ y`, `128 Σ y`) taken off by a second one, so that lanes 0-7
//! hold the first block's integer sum and lanes 8-15 the second's; each lane is then scaled
//! by its block's `d_x d_y` into an f32 accumulator. The K-types go 64 values at a time
//! (`vpmaddubsw`, then `vpdpwssd` with the sub-block scales spread over the lanes), one
//! integer accumulator per block; the minimums (Q4_K) and the `- 32` of Q6_K come from the
//! activations' 16-value sums. Sums past the integers are f32 in a fixed order, so a vector's
//! product does not depend on the vectors beside it.
//!
//! The `unsafe` here is the loads: each reads through a reference to a fixed-size array
//! taken (bounds-checked) from a slice.

use std::arch::x86_64::*;

use super::blocks::{BlockType, QK_K};
use super::q8::{Q8Vectors, QK8, dot32_block};
use super::x86::{bytes16 as load16, bytes32 as load32, fetch_rows};

/// Whether this CPU has every feature the functions here are compiled with.
pub(super) fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        super::x86::available()
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    })
}

/// Rows of the 32-value types fetched ahead of the one being multiplied (their rows are
/// short, a few hundred bytes, too short for the hardware prefetcher to ramp up: SmolLM2's
/// Q4_1 decode 149 against 119-129 tokens/s without). The K-types' rows (864 bytes and up
/// on a 1,536-wide model) are left to the hardware: fetching them ahead, or lines within a
/// row, made a Qwen2-1.5B-shaped Q4_K_M decode slower (24 against 26-29 tokens/s).
const ROWS_AHEAD: usize = 8;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub(super) fn load64(b: &[u8], at: usize) -> __m512i {
    let a: &[u8; 64] = b[at..at + 64].try_into().expect("64 bytes");
    // SAFETY: `a` is a reference to 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(a.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub(super) fn load_i8x64(v: &[i8], at: usize) -> __m512i {
    let a: &[i8; 64] = v[at..at + 64].try_into().expect("64 values");
    // SAFETY: `a` is a reference to 64 readable bytes; the load is unaligned.
    unsafe { _mm512_loadu_si512(a.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn load_i16x16(v: &[i16], at: usize) -> __m256i {
    let a: &[i16; 16] = v[at..at + 16].try_into().expect("16 values");
    // SAFETY: `a` is a reference to 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(a.as_ptr().cast()) }
}

/// Two f32 (`v[at]`, `v[at + 1]`) in the low lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn two_floats(v: &[f32], at: usize) -> __m128 {
    let a: &[f32; 2] = v[at..at + 2].try_into().expect("2 floats");
    // SAFETY: `a` is a reference to 8 readable bytes; `_mm_loadl_epi64` reads 8 bytes.
    _mm_castsi128_ps(unsafe { _mm_loadl_epi64(a.as_ptr().cast()) })
}

#[inline]
fn u16_at(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// The f16 at `b[at..at + 2]` as f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub(super) fn half(b: &[u8], at: usize) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16_at(b, at) as i32)))
}

/// A Q4_K block's levels `64 j..64 j + 64` (`0..=15`) in the activations' order: the low
/// nibbles of its 32 bytes `qs[32 j..]` (sub-block `2 j`), then the high ones.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub(super) fn q4_k_levels(block: &[u8], j: usize) -> __m512i {
    let q = load32(block, 16 + 32 * j);
    _mm512_and_si512(
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q), _mm256_srli_epi16::<4>(q)),
        _mm512_set1_epi8(0x0f),
    )
}

/// A Q6_K block's levels `128 h..128 h + 64` and `128 h + 64..128 h + 128` (stored + 32,
/// `0..=63`) in the activations' order: the nibbles of `ql[64 h..]` with two bits each of
/// `qh[32 h..]` above them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub(super) fn q6_k_levels(block: &[u8], h: usize) -> (__m512i, __m512i) {
    let low4 = _mm512_set1_epi8(0x0f);
    let bits45 = _mm512_set1_epi8(0x30);
    let ql = load64(block, 64 * h);
    let qh = load32(block, 128 + 32 * h);
    let h_lo = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
    let h_hi = _mm512_inserti64x4::<1>(
        _mm512_castsi256_si512(_mm256_srli_epi16::<4>(qh)),
        _mm256_srli_epi16::<6>(qh),
    );
    let q_lo = _mm512_or_si512(
        _mm512_and_si512(ql, low4),
        _mm512_and_si512(_mm512_slli_epi16::<4>(h_lo), bits45),
    );
    let q_hi = _mm512_or_si512(
        _mm512_and_si512(_mm512_srli_epi16::<4>(ql), low4),
        _mm512_and_si512(_mm512_slli_epi16::<4>(h_hi), bits45),
    );
    (q_lo, q_hi)
}

/// Rows `a..b` of `data` (rows of `row_bytes`, `ty` blocks) times the vectors of `y`:
/// `out[i * ld + at + r - a] = row r · y_i`. `false` (nothing written) for a type without a
/// kernel here.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL/VNNI, FMA and F16C ([`available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub(super) unsafe fn rows(
    ty: BlockType,
    data: &[u8],
    row_bytes: usize,
    (a, b): (usize, usize),
    y: &Q8Vectors,
    out: &mut [f32],
    (ld, at): (usize, usize),
) -> bool {
    if !super::q8::has_int8(ty) {
        return false;
    }
    let m = y.len();
    let mut r = a;
    if m == 1 && ty.block_len() == QK8 {
        while r + 2 <= b {
            fetch_rows(data, row_bytes, r + ROWS_AHEAD..(r + ROWS_AHEAD + 2).min(b));
            let row = |k: usize| &data[(r + k) * row_bytes..(r + k + 1) * row_bytes];
            let d = two_rows(ty, [row(0), row(1)], y, 0);
            out[at + r - a] = d[0];
            out[at + r + 1 - a] = d[1];
            r += 2;
        }
    }
    let legacy = ty.block_len() == QK8;
    for r in r..b {
        if legacy {
            fetch_rows(data, row_bytes, r + ROWS_AHEAD..(r + ROWS_AHEAD + 1).min(b));
        }
        let row = &data[r * row_bytes..(r + 1) * row_bytes];
        for i0 in (0..m).step_by(4) {
            let mut dots = [0f32; 4];
            match m - i0 {
                1 => row_dots::<1>(ty, row, y, i0, &mut dots),
                2 => row_dots::<2>(ty, row, y, i0, &mut dots),
                3 => row_dots::<3>(ty, row, y, i0, &mut dots),
                _ => row_dots::<4>(ty, row, y, i0, &mut dots),
            }
            for (k, d) in dots.iter().take((m - i0).min(4)).enumerate() {
                out[(i0 + k) * ld + at + r - a] = *d;
            }
        }
    }
    true
}

#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn row_dots<const M: usize>(
    ty: BlockType,
    row: &[u8],
    y: &Q8Vectors,
    i0: usize,
    dots: &mut [f32; 4],
) {
    let d = match ty {
        BlockType::Q4_0 => legacy::<M, 1, 0>([row], y, i0)[0],
        BlockType::Q4_1 => legacy::<M, 1, 1>([row], y, i0)[0],
        BlockType::Q8_0 => legacy::<M, 1, 2>([row], y, i0)[0],
        BlockType::Q4K => q4_k::<M>(row, y, i0),
        BlockType::Q6K => q6_k::<M>(row, y, i0),
        _ => unreachable!("`rows` checks the type"),
    };
    dots[..M].copy_from_slice(&d);
}

/// `R` Q4_0 (`T` 0), Q4_1 (1) or Q8_0 (2) rows times `M` vectors, `[row][vector]`: pairs
/// of blocks per register, each load of a vector's pair serving every row. Each (row,
/// vector) sums in one order whatever `R` and `M` are.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn legacy<const M: usize, const R: usize, const T: u8>(
    rows: [&[u8]; R],
    y: &Q8Vectors,
    i0: usize,
) -> [[f32; M]; R] {
    let (size, qs_at, ty) = match T {
        0 => (18, 2, BlockType::Q4_0),
        1 => (20, 4, BlockType::Q4_1),
        _ => (34, 2, BlockType::Q8_0),
    };
    let low4 = _mm512_set1_epi8(0x0f);
    // The offset the weights' bytes carry: q - 8 (Q4_0), q + 128 (Q8_0 as unsigned).
    let offset = _mm512_set1_epi8(if T == 2 { -128 } else { 8 });
    // Lanes 0-7 from the pair's first block, 8-15 from its second.
    let spread = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi32(1));
    let zero = _mm512_setzero_si512();
    let vectors: [_; M] = std::array::from_fn(|k| y.blocks32(i0 + k));
    let mut acc = [[_mm512_setzero_ps(); M]; R];
    let mut mins = [[_mm_setzero_ps(); M]; R];
    let len = rows[0].len();
    let pairs = len / (2 * size);
    for p in 0..pairs {
        let (ba, bb) = (2 * p * size, (2 * p + 1) * size);
        let mut w = [zero; R];
        let mut xd = [_mm_setzero_ps(); R];
        for (r, row) in rows.iter().enumerate() {
            w[r] = if T == 2 {
                let v = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(load32(row, ba + qs_at)),
                    load32(row, bb + qs_at),
                );
                _mm512_xor_si512(v, offset)
            } else {
                // [a | b] raw bytes, then [a_lo b_lo a_hi b_hi] nibbles, then [a_lo a_hi b_lo b_hi].
                let v = _mm256_inserti128_si256::<1>(
                    _mm256_castsi128_si256(load16(row, ba + qs_at)),
                    load16(row, bb + qs_at),
                );
                let n = _mm512_and_si512(
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), _mm256_srli_epi16::<4>(v)),
                    low4,
                );
                _mm512_shuffle_i64x2::<0b11_01_10_00>(n, n)
            };
            // [d_a, d_b, m_a, m_b] (Q4_1) or [d_a, d_b, 0, 0] as f32.
            let halves = if T == 1 {
                _mm_set_epi32(
                    0,
                    0,
                    (u16_at(row, bb + 2) << 16 | u16_at(row, ba + 2)) as i32,
                    (u16_at(row, bb) << 16 | u16_at(row, ba)) as i32,
                )
            } else {
                _mm_cvtsi32_si128((u16_at(row, bb) << 16 | u16_at(row, ba)) as i32)
            };
            xd[r] = _mm_cvtph_ps(halves);
        }
        for k in 0..M {
            let (qs, d, s, _) = vectors[k];
            let yv = load_i8x64(qs, 64 * p);
            let yd = two_floats(d, 2 * p);
            let off = if T == 1 {
                zero
            } else {
                _mm512_dpbusd_epi32(zero, offset, yv)
            };
            for r in 0..R {
                let dp = _mm512_sub_epi32(_mm512_dpbusd_epi32(zero, w[r], yv), off);
                let scale = _mm_mul_ps(xd[r], yd);
                let scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(scale));
                acc[r][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dp), scale, acc[r][k]);
                if T == 1 {
                    // m_a s_a + m_b s_b in lanes 0 and 1.
                    let ms = _mm_movehl_ps(xd[r], xd[r]);
                    mins[r][k] = _mm_fmadd_ps(ms, two_floats(s, 2 * p), mins[r][k]);
                }
            }
        }
    }
    let mut dots = [[0f32; M]; R];
    for (r, row) in rows.iter().enumerate() {
        for k in 0..M {
            let m2 = _mm_add_ss(mins[r][k], _mm_movehdup_ps(mins[r][k]));
            dots[r][k] = _mm512_reduce_add_ps(acc[r][k]) + _mm_cvtss_f32(m2);
            if !len.is_multiple_of(2 * size) {
                let b = pairs * 2;
                let (qs, d, s, _) = vectors[k];
                dots[r][k] += dot32_block(
                    ty,
                    &row[b * size..(b + 1) * size],
                    &qs[QK8 * b..QK8 * (b + 1)],
                    d[b],
                    s[b],
                );
            }
        }
    }
    dots
}

/// Two rows of a 32-value type times one vector (the decode step's usual case).
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn two_rows(ty: BlockType, rows: [&[u8]; 2], y: &Q8Vectors, i0: usize) -> [f32; 2] {
    let d = match ty {
        BlockType::Q4_0 => legacy::<1, 2, 0>(rows, y, i0),
        BlockType::Q4_1 => legacy::<1, 2, 1>(rows, y, i0),
        _ => legacy::<1, 2, 2>(rows, y, i0),
    };
    [d[0][0], d[1][0]]
}

/// `[a × 16 lanes, b × 16 lanes]` of 16-bit indices.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn index_pair(a: i16, b: i16) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi16(a), _mm256_set1_epi16(b))
}

/// `[a, a+1, a+2, a+3]`, each over 8 16-bit lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn index_quad(a: i16) -> __m512i {
    let lo = _mm256_inserti128_si256::<1>(_mm256_set1_epi16(a), _mm_set1_epi16(a + 1));
    let hi = _mm256_inserti128_si256::<1>(_mm256_set1_epi16(a + 2), _mm_set1_epi16(a + 3));
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// A Q4_K block's scales and minimums (12 bytes of 6-bit values) as 16 bytes: scales 0-7
/// then minimums 0-7 (llama.cpp's `utmp` shuffle).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn k4_scales_mins(s: &[u8]) -> __m128i {
    let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    const M1: u32 = 0x3f3f_3f3f;
    const M2: u32 = 0x0f0f_0f0f;
    const M3: u32 = 0x0303_0303;
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let t3 = ((u2 >> 4) & M2) | (((u1 >> 6) & M3) << 4);
    let t2 = u1 & M1;
    let t1 = (u2 & M2) | (((u0 >> 6) & M3) << 4);
    let t0 = u0 & M1;
    _mm_set_epi32(t3 as i32, t2 as i32, t1 as i32, t0 as i32)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn q4_k<const M: usize>(row: &[u8], y: &Q8Vectors, i0: usize) -> [f32; M] {
    let idx: [__m512i; 4] = std::array::from_fn(|j| index_pair(2 * j as i16, 2 * j as i16 + 1));
    let vectors: [_; M] = std::array::from_fn(|k| y.blocks256(i0 + k));
    let mut acc = [_mm512_setzero_ps(); M];
    let mut acc_min = [_mm512_setzero_ps(); M];
    for (b, block) in row.chunks_exact(144).enumerate() {
        let sm = k4_scales_mins(&block[4..16]);
        let scales = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(sm));
        // Each minimum twice: it weighs two 16-value sums of the activations.
        let mins8 = _mm_srli_si128::<8>(sm);
        let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins8, mins8));
        let (xd, xmin) = (half(block, 0), half(block, 2));
        let mut isum = [_mm512_setzero_si512(); M];
        for (j, &idx) in idx.iter().enumerate() {
            let w = q4_k_levels(block, j);
            let s = _mm512_permutexvar_epi16(idx, scales);
            for k in 0..M {
                let p = _mm512_maddubs_epi16(w, load_i8x64(vectors[k].0, QK_K * b + 64 * j));
                isum[k] = _mm512_dpwssd_epi32(isum[k], p, s);
            }
        }
        for k in 0..M {
            let (_, kd, bsums) = vectors[k];
            let yd = kd[b];
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[k]), _mm512_set1_ps(xd * yd), acc[k]);
            let m = _mm256_madd_epi16(mins, load_i16x16(bsums, 16 * b));
            let m = _mm512_cvtepi32_ps(_mm512_zextsi256_si512(m));
            acc_min[k] = _mm512_fmadd_ps(m, _mm512_set1_ps(xmin * yd), acc_min[k]);
        }
    }
    std::array::from_fn(|k| _mm512_reduce_add_ps(acc[k]) - _mm512_reduce_add_ps(acc_min[k]))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn q6_k<const M: usize>(row: &[u8], y: &Q8Vectors, i0: usize) -> [f32; M] {
    let idx: [__m512i; 4] = std::array::from_fn(|g| index_quad(4 * g as i16));
    let vectors: [_; M] = std::array::from_fn(|k| y.blocks256(i0 + k));
    let mut acc = [_mm512_setzero_ps(); M];
    for (b, block) in row.chunks_exact(210).enumerate() {
        let sc8 = load16(block, 192);
        let scales = _mm512_zextsi256_si512(_mm256_cvtepi8_epi16(sc8));
        let xd = half(block, 208);
        let mut isum = [_mm512_setzero_si512(); M];
        for h in 0..2 {
            let (q_lo, q_hi) = q6_k_levels(block, h);
            let s_lo = _mm512_permutexvar_epi16(idx[2 * h], scales);
            let s_hi = _mm512_permutexvar_epi16(idx[2 * h + 1], scales);
            for k in 0..M {
                let at = QK_K * b + 128 * h;
                let p = _mm512_maddubs_epi16(q_lo, load_i8x64(vectors[k].0, at));
                isum[k] = _mm512_dpwssd_epi32(isum[k], p, s_lo);
                let p = _mm512_maddubs_epi16(q_hi, load_i8x64(vectors[k].0, at + 64));
                isum[k] = _mm512_dpwssd_epi32(isum[k], p, s_hi);
            }
        }
        let sc16 = _mm256_cvtepi8_epi16(sc8);
        for k in 0..M {
            let (_, kd, bsums) = vectors[k];
            // The values are stored + 32: take 32 Σ_g scale_g Σ y_g off, in integers.
            let off = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, load_i16x16(bsums, 16 * b)));
            let isum = _mm512_sub_epi32(isum[k], _mm512_zextsi256_si512(off));
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(xd * kd[b]), acc[k]);
        }
    }
    std::array::from_fn(|k| _mm512_reduce_add_ps(acc[k]))
}
