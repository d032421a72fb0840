//! A prompt's products with Q4_K and Q6_K weights in llama.cpp's 8-bit arithmetic (AVX-512
//! VNNI): a tile of 16 rows is unpacked once into the integer operands of the inner loop
//! ([`KTile`]), then multiplied with every vector, eight vectors at a time.
//!
//! The decode step's kernels (`x86_q8.rs`) keep a row's blocks as stored and sum each (row,
//! vector) in its own register, which a prompt's hundred vectors would pay for in
//! unpacking and in horizontal sums. Here the tile interleaves its rows four values at a
//! time: 64 bytes hold values `4j..4j + 4` of the 16 rows (levels: Q4_K `0..=15`, Q6_K
//! `0..=63`), so one `vpdpbusd` against vector `i`'s four bytes broadcast adds four products
//! to each row's lane, 64 multiply-adds, and one load of the tile serves eight vectors.
//! Each scale group's integer sums (Q4_K 32 values, Q6_K 16) are converted once and
//! multiplied by the rows' `d_w · scale`, less the rows' offsets times the group's
//! activation sum (Q4_K's `dmin · min`, Q6_K's `32 d · scale` for its levels stored + 32),
//! and each 256-value block is scaled by its `d_y`: llama.cpp's sums of a block, in f32
//! from the group on.
//!
//! The `unsafe` here is the loads and stores: each goes through a reference to a fixed-size
//! array taken (bounds-checked) from a slice.

use std::arch::x86_64::*;

use super::blocks::{BlockType, QK_K, k4_scales};
use super::q8::Q8Vectors;
use super::x86_q8::{half, load64, q4_k_levels, q6_k_levels};

/// Values per group of `Q8_K`'s activation sums.
pub(super) const GROUP: usize = 16;

/// Whether the tiles here take `ty`.
pub(super) fn takes(ty: BlockType) -> bool {
    matches!(ty, BlockType::Q4K | BlockType::Q6K)
}

/// Rows per tile: the lanes of a 512-bit register of 32-bit sums.
pub(super) const TILE: usize = 16;

/// Up to [`TILE`] rows of Q4_K or Q6_K blocks unpacked for [`gemm_tile`]; reused from
/// tile to tile.
#[derive(Debug, Default)]
pub(super) struct KTile {
    /// Rows unpacked (the rest of the 16 lanes are zero).
    rows: usize,
    cols: usize,
    /// `cols / 4` runs of 64 bytes: values `4j..4j + 4` of each of the 16 rows.
    levels: Vec<u8>,
    /// Per scale group (Q4_K 32 values, Q6_K 16), the 16 rows' `d_w · scale`.
    scales: Vec<f32>,
    /// Values per scale group.
    span: usize,
    /// Per scale group, the 16 rows' weights of the group's activation sum, to be
    /// subtracted (Q4_K `dmin · min`, Q6_K `32 d · scale`).
    offsets: Vec<f32>,
    /// The rows' levels in order, row-major, before they are interleaved.
    plain: Vec<u8>,
}

impl KTile {
    fn resize(&mut self, rows: usize, cols: usize) {
        self.rows = rows;
        self.cols = cols;
        // A full tile overwrites every value; the lanes past a short tile's rows must be 0.
        if rows < TILE {
            self.scales.clear();
            self.offsets.clear();
            self.plain.clear();
        }
        self.levels.resize(TILE * cols, 0);
        self.scales.resize(TILE * cols / GROUP, 0.0);
        self.offsets.resize(TILE * cols / GROUP, 0.0);
        self.plain.resize(TILE * cols, 0);
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn store_u8x64(v: &mut [u8], at: usize, x: __m512i) {
    let a: &mut [u8; 64] = (&mut v[at..at + 64]).try_into().expect("64 bytes");
    // SAFETY: `a` is a unique reference to 64 writable bytes; the store is unaligned.
    unsafe { _mm512_storeu_si512(a.as_mut_ptr().cast(), x) }
}

/// Unpacks rows `a..b` (at most [`TILE`]) of `data` (`ty` one of [`takes`]'s, rows of
/// `row_bytes` holding `cols` values) into `tile`.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL/VNNI, FMA and F16C (`x86_q8::available`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub(super) unsafe fn unpack(
    ty: BlockType,
    data: &[u8],
    row_bytes: usize,
    (a, b): (usize, usize),
    cols: usize,
    tile: &mut KTile,
) {
    debug_assert!(takes(ty) && cols.is_multiple_of(QK_K) && b - a <= TILE);
    tile.resize(b - a, cols);
    let nb = cols / QK_K;
    let size = ty.block_bytes();
    for (t, r) in (a..b).enumerate() {
        let row = &data[r * row_bytes..(r + 1) * row_bytes];
        for (k, block) in row.chunks_exact(size).enumerate().take(nb) {
            let (mut scales, mut offsets) = ([0f32; 16], [0f32; 16]);
            let at = t * cols + k * QK_K;
            let groups = match ty {
                BlockType::Q4K => q4_k(block, &mut tile.plain, at, &mut scales, &mut offsets),
                _ => q6_k(block, &mut tile.plain, at, &mut scales, &mut offsets),
            };
            tile.span = QK_K / groups;
            for g in 0..groups {
                tile.scales[(k * groups + g) * TILE + t] = scales[g];
                tile.offsets[(k * groups + g) * TILE + t] = offsets[g];
            }
        }
    }
    interleave(&tile.plain, cols, &mut tile.levels);
}

/// `levels[64 j + 4 t..][..4] = plain[t * cols + 4 j..][..4]` for the 16 rows `t` of `plain`
/// (`[16, cols]`): a 16 x 16 transpose of 4-byte words per 64 columns.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn interleave(plain: &[u8], cols: usize, levels: &mut [u8]) {
    for c in (0..cols).step_by(64) {
        let mut r: [__m512i; 16] = std::array::from_fn(|t| load64(plain, t * cols + c));
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        for q in 0..4 {
            let b = 4 * q;
            r[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
            r[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
            r[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
            r[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
        }
        for h in 0..2 {
            let b = 8 * h;
            for i in 0..4 {
                t[b + i] = _mm512_shuffle_i32x4::<0x88>(r[b + i], r[b + 4 + i]);
                t[b + 4 + i] = _mm512_shuffle_i32x4::<0xdd>(r[b + i], r[b + 4 + i]);
            }
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_i32x4::<0x88>(t[i], t[8 + i]);
            r[8 + i] = _mm512_shuffle_i32x4::<0xdd>(t[i], t[8 + i]);
        }
        // Row j of the transpose: word j of each of the 16 rows.
        for (j, rj) in r.iter().enumerate() {
            store_u8x64(levels, (c / 4 + j) * 64, *rj);
        }
    }
}

/// One Q4_K block's levels at `row[at..]`, its eight sub-blocks' `d · scale` and offsets
/// `dmin · min`; returns the number of sub-blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn q4_k(
    block: &[u8],
    row: &mut [u8],
    at: usize,
    scales: &mut [f32; 16],
    off: &mut [f32; 16],
) -> usize {
    let (sc, mins) = k4_scales(&block[4..16]);
    for j in 0..4 {
        store_u8x64(row, at + 64 * j, q4_k_levels(block, j));
    }
    let (d, dmin) = (half(block, 0), half(block, 2));
    for j in 0..8 {
        scales[j] = d * f32::from(sc[j]);
        off[j] = dmin * f32::from(mins[j]);
    }
    8
}

/// One Q6_K block's levels (stored + 32, `0..=63`) at `row[at..]`, its groups' `d · scale`
/// and offsets `32 d · scale`; returns the number of groups.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn q6_k(
    block: &[u8],
    row: &mut [u8],
    at: usize,
    scales: &mut [f32; 16],
    off: &mut [f32; 16],
) -> usize {
    for h in 0..2 {
        let (q_lo, q_hi) = q6_k_levels(block, h);
        store_u8x64(row, at + 128 * h, q_lo);
        store_u8x64(row, at + 128 * h + 64, q_hi);
    }
    let d = half(block, 208);
    for g in 0..16 {
        let s = f32::from(block[192 + g] as i8);
        scales[g] = d * s;
        off[g] = 32.0 * d * s;
    }
    16
}

/// Vectors per step of [`gemm_tile`].
const VECTORS: usize = 8;

/// `out[i * ld + at + t] = Σ_blocks d_y Σ_groups (d_w scale Σ levels · y - offset Σ y)`
/// for every row `t` of `tile` and vector `i` of `y` (`Q8_K`); `sums16` and `sums32` hold
/// each vector's activation sums per 16 and per 32 values (`m * cols / 16` and `/ 32`).
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL/VNNI, FMA and F16C (`x86_q8::available`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub(super) unsafe fn gemm_tile(
    tile: &KTile,
    y: &Q8Vectors,
    [sums16, sums32]: [&[f32]; 2],
    out: &mut [f32],
    (ld, at): (usize, usize),
) {
    let m = y.len();
    debug_assert_eq!(y.cols(), tile.cols);
    let sums = if tile.span == 32 { sums32 } else { sums16 };
    assert_eq!(sums.len(), m * tile.cols / tile.span, "activation sums");
    for i0 in (0..m).step_by(VECTORS) {
        let mut rows = [[0f32; TILE]; VECTORS];
        let v = (m - i0).min(VECTORS);
        let at_sums = (i0, sums);
        match v {
            8 => spans::<8>(tile, y, at_sums, &mut rows),
            7 => spans::<7>(tile, y, at_sums, &mut rows),
            6 => spans::<6>(tile, y, at_sums, &mut rows),
            5 => spans::<5>(tile, y, at_sums, &mut rows),
            4 => spans::<4>(tile, y, at_sums, &mut rows),
            3 => spans::<3>(tile, y, at_sums, &mut rows),
            2 => spans::<2>(tile, y, at_sums, &mut rows),
            _ => spans::<1>(tile, y, at_sums, &mut rows),
        }
        for (k, s) in rows.iter().enumerate().take(v) {
            let o = (i0 + k) * ld + at;
            out[o..o + tile.rows].copy_from_slice(&s[..tile.rows]);
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn spans<const V: usize>(
    tile: &KTile,
    y: &Q8Vectors,
    at_sums: (usize, &[f32]),
    out: &mut [[f32; TILE]; VECTORS],
) {
    if tile.span == 32 {
        kernel::<V, 8>(tile, y, at_sums, out);
    } else {
        kernel::<V, 4>(tile, y, at_sums, out);
    }
}

/// The tile's 16 rows times vectors `i0..i0 + V` into `out[vector][row]`; `S` runs of four
/// values per scale group, `sums` every vector's activation sums per scale group.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
fn kernel<const V: usize, const S: usize>(
    tile: &KTile,
    y: &Q8Vectors,
    (i0, sums): (usize, &[f32]),
    out: &mut [[f32; TILE]; VECTORS],
) {
    let cols = tile.cols;
    let (n4, nb) = (cols / 4, cols / QK_K);
    let per_block = QK_K / (4 * S);
    let groups = nb * per_block;
    let (levels, _) = tile.levels.as_chunks::<64>();
    let (scales, _) = tile.scales.as_chunks::<TILE>();
    let (offsets, _) = tile.offsets.as_chunks::<TILE>();
    let vectors: [_; V] = std::array::from_fn(|k| y.blocks256(i0 + k));
    let ys: [&[[i8; 4]]; V] = std::array::from_fn(|k| &vectors[k].0.as_chunks::<4>().0[..n4]);
    let sums: [&[f32]; V] =
        std::array::from_fn(|k| &sums[(i0 + k) * groups..(i0 + k + 1) * groups]);
    let levels = &levels[..n4];
    let (scales, offsets) = (&scales[..groups], &offsets[..groups]);
    let mut acc = [_mm512_setzero_ps(); V];
    for b in 0..nb {
        let mut block = [_mm512_setzero_ps(); V];
        // The block's activation sums, per scale group and vector, in a fixed-size array.
        let mut block_sums = [[0f32; V]; 16];
        for (k, vector_sums) in sums.iter().enumerate() {
            let from = &vector_sums[b * per_block..(b + 1) * per_block];
            for (to, &v) in block_sums.iter_mut().zip(from) {
                to[k] = v;
            }
        }
        for (gi, group_sums) in block_sums.iter().enumerate().take(per_block) {
            let g = b * per_block + gi;
            // One bounds check per group and operand, none in the loop over its runs.
            let runs: &[[u8; 64]; S] = levels[S * g..S * g + S].try_into().expect("S runs");
            let y_runs: [&[[i8; 4]; S]; V] =
                std::array::from_fn(|k| ys[k][S * g..S * g + S].try_into().expect("S runs"));
            let mut raw = [_mm512_setzero_si512(); V];
            for j in 0..S {
                // SAFETY: `runs[j]` is 64 readable bytes.
                let w = unsafe { _mm512_loadu_si512(runs[j].as_ptr().cast()) };
                for k in 0..V {
                    let four = i32::from_le_bytes(y_runs[k][j].map(|v| v as u8));
                    raw[k] = _mm512_dpbusd_epi32(raw[k], w, _mm512_set1_epi32(four));
                }
            }
            // SAFETY: `scales[g]` and `offsets[g]` are 16 readable f32 each.
            let (s, o) = unsafe {
                (
                    _mm512_loadu_ps(scales[g].as_ptr()),
                    _mm512_loadu_ps(offsets[g].as_ptr()),
                )
            };
            for k in 0..V {
                block[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(raw[k]), s, block[k]);
                block[k] = _mm512_fnmadd_ps(o, _mm512_set1_ps(group_sums[k]), block[k]);
            }
        }
        for k in 0..V {
            acc[k] = _mm512_fmadd_ps(block[k], _mm512_set1_ps(vectors[k].1[b]), acc[k]);
        }
    }
    for k in 0..V {
        // SAFETY: `out[k]` is 16 writable f32.
        unsafe { _mm512_storeu_ps(out[k].as_mut_ptr(), acc[k]) };
    }
}
