//! AVX-512 VNNI products of interleaved tiles ([`super::tiles`]: 16 rows of Q4_0, Q4_1 or
//! Q8_0) with 8-bit activations: per block, four (Q4) or eight (Q8_0) 64-byte loads give the
//! 16 rows' values as bytes, four per lane; each vector's block is eight `vpdpbusd` against
//! its activation words broadcast, in two chains, so that 16 lanes hold the 16 rows' exact
//! integer sums; then one conversion and one or two FMAs per vector (the order of
//! [`super::tiles`]' portable kernel, so both give the same bits). Vectors go in groups of
//! eight, four, two and one, each group's blocks widened once.
//!
//! The `unsafe` here is the loads and stores: each through a reference to a fixed-size
//! array taken (bounds-checked) from a slice.

use std::arch::x86_64::*;

use super::blocks::BlockType;
use super::q8::{Q8Vectors, QK8};
/// Rows per tile: one per 32-bit lane of a 512-bit vector (`tiles.rs` checks at compile time
/// that its interleaved layout has as many).
pub(super) const TILE_ROWS: usize = 16;
use super::x86::bytes32 as load32;
use super::x86_q8::load64;

/// One tile of `ty` (`tile`: its `16 · row_bytes` bytes) times every vector of `y` into
/// `out[i * ld + l]` for row `l`.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL/VNNI, FMA and F16C (`x86_q8::available`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub(super) unsafe fn tile(ty: BlockType, tile: &[u8], y: &Q8Vectors, out: &mut [f32], ld: usize) {
    let m = y.len();
    let mut i = 0;
    while i < m {
        let n = match m - i {
            8.. => 8,
            4..8 => 4,
            2..4 => 2,
            _ => 1,
        };
        let out = &mut out[i * ld..];
        match n {
            8 => group::<8>(ty, tile, y, i, out, ld),
            4 => group::<4>(ty, tile, y, i, out, ld),
            2 => group::<2>(ty, tile, y, i, out, ld),
            _ => group::<1>(ty, tile, y, i, out, ld),
        }
        i += n;
    }
}

#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn group<const G: usize>(
    ty: BlockType,
    tile: &[u8],
    y: &Q8Vectors,
    i0: usize,
    out: &mut [f32],
    ld: usize,
) {
    match ty {
        BlockType::Q4_0 => vectors::<G, 0>(tile, y, i0, out, ld),
        BlockType::Q4_1 => vectors::<G, 1>(tile, y, i0, out, ld),
        BlockType::Q8_0 => vectors::<G, 2>(tile, y, i0, out, ld),
        _ => unreachable!("only tileable types have tiles"),
    }
}

/// `G` vectors from `i0` times a tile of Q4_0 (`T` 0), Q4_1 (1) or Q8_0 (2).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn vectors<const G: usize, const T: u8>(
    tile: &[u8],
    y: &Q8Vectors,
    i0: usize,
    out: &mut [f32],
    ld: usize,
) {
    let (size, head) = match T {
        0 => (18, 2),
        1 => (20, 4),
        _ => (34, 2),
    };
    let per_tile = TILE_ROWS * size;
    let values = TILE_ROWS * head;
    let low4 = _mm512_set1_epi8(0x0f);
    let zero = _mm512_setzero_si512();
    let blocks: [_; G] = std::array::from_fn(|k| y.blocks32(i0 + k));
    let mut acc = [_mm512_setzero_ps(); G];
    for (b, blk) in tile.chunks_exact(per_tile).enumerate() {
        let dx = _mm512_cvtph_ps(load32(blk, 0));
        let mx = if T == 1 {
            _mm512_cvtph_ps(load32(blk, 32))
        } else {
            _mm512_setzero_ps()
        };
        // w[g] multiplies the vector's activation word g (values 4 g..4 g + 4).
        let w: [__m512i; 8] = if T == 2 {
            std::array::from_fn(|g| load64(blk, values + 64 * g))
        } else {
            let raw: [__m512i; 4] = std::array::from_fn(|g| load64(blk, values + 64 * g));
            std::array::from_fn(|g| {
                if g < 4 {
                    _mm512_and_si512(raw[g], low4)
                } else {
                    _mm512_and_si512(_mm512_srli_epi16::<4>(raw[g - 4]), low4)
                }
            })
        };
        for k in 0..G {
            let (qs, d, s, sum) = blocks[k];
            let yb: &[i8; QK8] = qs[QK8 * b..QK8 * (b + 1)].try_into().expect("a block");
            let word = |g: usize| {
                _mm512_set1_epi32(i32::from_le_bytes(
                    [yb[4 * g], yb[4 * g + 1], yb[4 * g + 2], yb[4 * g + 3]].map(|v| v as u8),
                ))
            };
            let mut s0 = _mm512_dpbusd_epi32(zero, w[0], word(0));
            let mut s1 = _mm512_dpbusd_epi32(zero, w[1], word(1));
            for g in (2..8).step_by(2) {
                s0 = _mm512_dpbusd_epi32(s0, w[g], word(g));
                s1 = _mm512_dpbusd_epi32(s1, w[g + 1], word(g + 1));
            }
            let mut isum = _mm512_add_epi32(s0, s1);
            if T != 1 {
                let offset = if T == 0 { 8 } else { 128 };
                isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(offset * sum[b]));
            }
            let scale = _mm512_mul_ps(dx, _mm512_set1_ps(d[b]));
            acc[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[k]);
            if T == 1 {
                acc[k] = _mm512_fmadd_ps(mx, _mm512_set1_ps(s[b]), acc[k]);
            }
        }
    }
    for (k, acc) in acc.iter().enumerate() {
        let o: &mut [f32; TILE_ROWS] = (&mut out[k * ld..k * ld + TILE_ROWS])
            .try_into()
            .expect("16 outputs");
        // SAFETY: `o` is a reference to 16 writable floats; the store is unaligned.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *acc) };
    }
}
