//! Sixteen rows of a 32-value block type interleaved ("tiles"), llama.cpp's repacking for
//! its 8-bit kernels, and their products with 8-bit activations.
//!
//! In a GGUF file a Q4_0, Q4_1 or Q8_0 row is its blocks one after another, so a kernel
//! that multiplies a block with a vector sums 32 products across a register and then
//! across lanes, for every block, row and vector. Interleaved, the blocks of one column of
//! blocks of 16 rows lie together: their 16 scales (f16, then Q4_1's 16 minimums), then
//! the quantized values four bytes per row at a time: word `g` of row `l` at `64 g + 4 l`
//! (Q8_0's bytes offset by 128, so that they are unsigned). One 64-byte load then holds
//! four values of each of the 16 rows, and one `vpdpbusd` against four activation bytes
//! broadcast gives 16 rows' partial sums in 16 lanes: no sums across lanes, nothing
//! widened twice, the same work for one vector (a decode step) as for each of many (a
//! batch, a prompt). The tiles are as many bytes as the rows.
//!
//! Each (row, vector) product is summed in one order: per block the exact integer sum
//! `Σ q_x q_y` (less `8 Σ q_y` for Q4_0, `128 Σ q_y` for Q8_0), then in f32 `acc = fma(isum,
//! d_x · d_y, acc)` and for Q4_1 `acc = fma(m_x, s_y, acc)`, block after block. The AVX-512
//! VNNI kernel (`x86_q8_tiles.rs`) and the portable one here do exactly that, so their
//! products are equal bit for bit, and a vector's product does not depend on the vectors
//! beside it.

use super::blocks::BlockType;
use super::q8::{Q8Vectors, QK8, f16_at};
use crate::cpu::simd_dispatch;

/// Rows per tile: the 16 lanes of a 512-bit register of sums.
pub const TILE_ROWS: usize = 16;

// The AVX-512 kernel's row count is the layout's.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(TILE_ROWS == super::x86_q8_tiles::TILE_ROWS);

/// Whether `ty` has a tiled layout: Q4_0, Q4_1 and Q8_0.
pub fn tileable(ty: BlockType) -> bool {
    matches!(ty, BlockType::Q4_0 | BlockType::Q4_1 | BlockType::Q8_0)
}

/// A tileable type's block: bytes of its scales (`d`, and `m` for Q4_1) and of its values.
fn layout(ty: BlockType) -> (usize, usize) {
    match ty {
        BlockType::Q4_0 => (2, 16),
        BlockType::Q4_1 => (4, 16),
        _ => (2, 32),
    }
}

/// What a tileable type's value bytes carry in the tiles (Q8_0's signed bytes as unsigned).
fn flip(ty: BlockType) -> u8 {
    if ty == BlockType::Q8_0 { 0x80 } else { 0 }
}

/// The bytes of a row-major `[rows, cols]` matrix of `ty` (`data`, as in a GGUF file)
/// interleaved 16 rows at a time. `None` when `ty` is not [`tileable`], `rows` is not a
/// multiple of 16, `cols` not a whole number of blocks, or `data` not `rows` such rows.
pub fn interleave(ty: BlockType, data: &[u8], [rows, cols]: [usize; 2]) -> Option<Vec<u8>> {
    let row_bytes = ty.row_bytes(cols)?;
    if !tileable(ty)
        || !rows.is_multiple_of(TILE_ROWS)
        || row_bytes.checked_mul(rows)? != data.len()
    {
        return None;
    }
    let (size, (head, _)) = (ty.block_bytes(), layout(ty));
    let per_tile = TILE_ROWS * size;
    let mut out = vec![0u8; data.len()];
    for (t, tile) in out.chunks_exact_mut(TILE_ROWS * row_bytes).enumerate() {
        for (b, dst) in tile.chunks_exact_mut(per_tile).enumerate() {
            for l in 0..TILE_ROWS {
                let at = (TILE_ROWS * t + l) * row_bytes + b * size;
                put_block(ty, &data[at..at + size], dst, l, head);
            }
        }
    }
    Some(out)
}

/// Block `src` (of `ty`) as row `l` of the tile block `dst`.
fn put_block(ty: BlockType, src: &[u8], dst: &mut [u8], l: usize, head: usize) {
    for h in 0..head / 2 {
        dst[32 * h + 2 * l..32 * h + 2 * l + 2].copy_from_slice(&src[2 * h..2 * h + 2]);
    }
    let values = TILE_ROWS * head;
    for (g, word) in src[head..].chunks_exact(4).enumerate() {
        for (j, &v) in word.iter().enumerate() {
            dst[values + 64 * g + 4 * l + j] = v ^ flip(ty);
        }
    }
}

/// Row `r` of tiled bytes (`[rows, cols]` of `ty`, from [`interleave`]) back in the file's
/// layout, into `out` (`ty.row_bytes(cols)` bytes).
///
/// # Panics
/// When `ty` is not [`tileable`], `r` is past the tiles or `out` is not one row.
pub fn row_of(ty: BlockType, tiles: &[u8], cols: usize, r: usize, out: &mut [u8]) {
    assert!(tileable(ty), "row_of: {} has no tiles", ty.name());
    let row_bytes = ty.row_bytes(cols).expect("whole blocks");
    assert_eq!(out.len(), row_bytes, "row_of: a row of {cols} values");
    let (size, (head, _)) = (ty.block_bytes(), layout(ty));
    let (t, l) = (r / TILE_ROWS, r % TILE_ROWS);
    let tile = &tiles[t * TILE_ROWS * row_bytes..(t + 1) * TILE_ROWS * row_bytes];
    let values = TILE_ROWS * head;
    for (src, dst) in tile
        .chunks_exact(TILE_ROWS * size)
        .zip(out.chunks_exact_mut(size))
    {
        for h in 0..head / 2 {
            dst[2 * h..2 * h + 2].copy_from_slice(&src[32 * h + 2 * l..32 * h + 2 * l + 2]);
        }
        for (g, word) in dst[head..].chunks_exact_mut(4).enumerate() {
            for (j, v) in word.iter_mut().enumerate() {
                *v = src[values + 64 * g + 4 * l + j] ^ flip(ty);
            }
        }
    }
}

/// Rows `a..b` of a tiled matrix (`tiles`: `[rows, cols]` of `ty` from [`interleave`])
/// times the vectors of `y` into `out[i * ld + at + r - a]`: each tile through the AVX-512
/// VNNI kernel where the CPU has it (and `KILN_SIMD` does not cap it), else the portable
/// one (the same sums, bit for bit). A tile partly inside `a..b` is multiplied whole and
/// only its rows in the range written.
///
/// # Panics
/// When the operands' sizes disagree.
pub(crate) fn rows(
    ty: BlockType,
    tiles: &[u8],
    cols: usize,
    (a, b): (usize, usize),
    y: &Q8Vectors,
    out: &mut [f32],
    (ld, at): (usize, usize),
) {
    let m = y.len();
    let tile_bytes = TILE_ROWS * ty.row_bytes(cols).expect("whole blocks");
    assert_eq!(
        y.cols(),
        cols,
        "tiles of {cols} columns against vectors of {}",
        y.cols()
    );
    let mut partial = Vec::new();
    for t in a / TILE_ROWS..b.div_ceil(TILE_ROWS) {
        let tile = &tiles[t * tile_bytes..(t + 1) * tile_bytes];
        let (r0, r1) = (t * TILE_ROWS, (t + 1) * TILE_ROWS);
        if a <= r0 && r1 <= b {
            tile_dots(ty, tile, y, &mut out[at + r0 - a..], ld);
            continue;
        }
        partial.resize(m * TILE_ROWS, 0.0);
        tile_dots(ty, tile, y, &mut partial, TILE_ROWS);
        for i in 0..m {
            for r in r0.max(a)..r1.min(b) {
                out[i * ld + at + r - a] = partial[i * TILE_ROWS + r - r0];
            }
        }
    }
}

/// One tile times every vector of `y`: `out[i * ld + l]` for row `l` of the tile.
fn tile_dots(ty: BlockType, tile: &[u8], y: &Q8Vectors, out: &mut [f32], ld: usize) {
    #[cfg(target_arch = "x86_64")]
    if super::x86_q8::available() {
        // SAFETY: `available` found AVX-512F/BW/VL/VNNI, FMA and F16C on this CPU.
        unsafe { super::x86_q8_tiles::tile(ty, tile, y, out, ld) };
        return;
    }
    tile_dots_portable(ty, tile, y, out, ld);
}

simd_dispatch!(
    /// [`tile_dots`] without VNNI: the same integer sums and f32 operations in the same
    /// order, one lane at a time (`mul_add` is a fused multiply-add at every level).
    pub(crate) tile_dots_portable, tile_dots_body, (ty: BlockType, tile: &[u8], y: &Q8Vectors, out: &mut [f32], ld: usize)
);

#[inline(always)]
fn tile_dots_body(ty: BlockType, tile: &[u8], y: &Q8Vectors, out: &mut [f32], ld: usize) {
    let (head, bytes) = layout(ty);
    let per_tile = TILE_ROWS * ty.block_bytes();
    let values = TILE_ROWS * head;
    for i in 0..y.len() {
        let (qs, d, s, sum) = y.blocks32(i);
        let mut acc = [0f32; TILE_ROWS];
        for (b, blk) in tile.chunks_exact(per_tile).enumerate() {
            let yq = &qs[QK8 * b..QK8 * (b + 1)];
            for (l, acc) in acc.iter_mut().enumerate() {
                let mut isum = 0i32;
                for g in 0..bytes / 4 {
                    for j in 0..4 {
                        let v = blk[values + 64 * g + 4 * l + j];
                        let k = 4 * g + j;
                        if ty == BlockType::Q8_0 {
                            isum += i32::from(v) * i32::from(yq[k]);
                        } else {
                            isum += i32::from(v & 0x0f) * i32::from(yq[k]);
                            isum += i32::from(v >> 4) * i32::from(yq[k + 16]);
                        }
                    }
                }
                isum -= match ty {
                    BlockType::Q4_0 => 8 * sum[b],
                    BlockType::Q8_0 => 128 * sum[b],
                    _ => 0,
                };
                *acc = (isum as f32).mul_add(f16_at(blk, 2 * l) * d[b], *acc);
                if ty == BlockType::Q4_1 {
                    *acc = f16_at(blk, 32 + 2 * l).mul_add(s[b], *acc);
                }
            }
        }
        out[i * ld..i * ld + TILE_ROWS].copy_from_slice(&acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn interleaving_keeps_every_row() {
        for ty in [BlockType::Q4_0, BlockType::Q4_1, BlockType::Q8_0] {
            let (rows, cols) = (32, 96);
            let row_bytes = ty.row_bytes(cols).unwrap();
            let data: Vec<u8> = (0..rows * row_bytes)
                .map(|i| (i * 7 + i / 13) as u8)
                .collect();
            let tiles = interleave(ty, &data, [rows, cols]).expect("tileable");
            assert_eq!(tiles.len(), data.len());
            assert_ne!(tiles, data);
            let mut row = vec![0u8; row_bytes];
            for r in 0..rows {
                row_of(ty, &tiles, cols, r, &mut row);
                assert_eq!(
                    row,
                    data[r * row_bytes..(r + 1) * row_bytes],
                    "{ty:?} row {r}"
                );
            }
            assert!(interleave(ty, &data[row_bytes..], [rows - 1, cols]).is_none());
            assert!(interleave(ty, &data, [rows, cols + 32]).is_none());
        }
        assert!(interleave(BlockType::Q4K, &[0; 144 * 16], [16, 256]).is_none());
    }

    /// Random row-major blocks of `ty`: scales of either sign up to 0.05, values anywhere.
    fn random_rows(ty: BlockType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        // Knuth's MMIX linear congruential generator, the high bits.
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 24
        };
        let (head, _) = layout(ty);
        let mut out = vec![0u8; rows * ty.row_bytes(cols).unwrap()];
        for block in out.chunks_exact_mut(ty.block_bytes()) {
            for h in 0..head / 2 {
                let v = (next() % 1000) as f32 / 10_000.0 - 0.05;
                block[2 * h..2 * h + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
            block[head..].iter_mut().for_each(|b| *b = next() as u8);
        }
        out
    }

    #[test]
    fn the_vector_kernel_gives_the_portable_sums_bit_for_bit() {
        // Every group size (8, 4, 2, 1) and remainder, values at the extremes included.
        let cols = 5 * QK8;
        for ty in [BlockType::Q4_0, BlockType::Q4_1, BlockType::Q8_0] {
            let data = random_rows(ty, TILE_ROWS, cols, ty as u64 + 3);
            let tiles = interleave(ty, &data, [TILE_ROWS, cols]).unwrap();
            for m in [1, 2, 3, 7, 8, 15, 19] {
                let xs: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) * if i % 17 == 0 { 9.0 } else { 0.1 })
                    .collect();
                let y = Q8Vectors::new(&xs, m, cols);
                let (mut fast, mut portable) = (vec![0f32; m * 20], vec![0f32; m * 20]);
                tile_dots(ty, &tiles, &y, &mut fast, 20);
                tile_dots_portable(ty, &tiles, &y, &mut portable, 20);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fast), bits(&portable), "{} m={m}", ty.name());
                assert!(fast.iter().any(|&v| v != 0.0));
            }
        }
    }
}
