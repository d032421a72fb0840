//! Products with block-quantized weight matrices, read in place (a memory-mapped GGUF file's
//! bytes): the decode step's matrix times a few vectors, and the prompt's matrix times many.
//!
//! Two arithmetics, chosen per call ([`Activations`]):
//! - **f32 activations** (the default): each block of a row is dequantized into registers / L1
//!   as it is read (exactly [`dequantize`]'s values) and multiplied with the f32 vector in f32,
//!   so the products are those of the dequantized matrix up to the order of the sums (the
//!   reference is a dequantize-then-f32 forward pass). The block loop is written once and
//!   compiled for AVX-512, AVX2 and the baseline (`simd_dispatch!`), with 16 accumulators per
//!   vector so that it vectorises.
//! - **8-bit activations**, llama.cpp's trade: each vector is quantized once per product to
//!   the weight type's 8-bit block format ([`Q8Vectors`]) and every block's dot product is an
//!   exact integer sum (AVX-512 VNNI where the CPU has it, [`dot_portable`] elsewhere), so the
//!   products are llama.cpp's up to the order of its f32 sums. Faster where the f32 path is
//!   bound by widening blocks rather than by memory. A prompt's Q4_K and Q6_K products
//!   ([`matmul_quant_with`]) unpack each tile of 16 rows once into interleaved 8-bit levels
//!   and multiply it with eight vectors per step (`x86_q8_gemm.rs`). Q4_0, Q4_1 and Q8_0
//!   matrices given interleaved ([`QuantMatrix::tiled`], [`tiles`]) go
//!   through one tile kernel for one vector, a batch and a prompt alike.
//!
//! [`Q8Vectors`]: super::q8::Q8Vectors
//! [`dot_portable`]: super::q8::dot_portable
//!
//! A matrix may be given as several stacked parts ([`QuantMatrix`] each, same columns): a
//! model's query, key and value projections are three tensors of the file, multiplied as one
//! `[q + k + v, hidden]` matrix without copying them together.

use std::borrow::Cow;

use rayon::prelude::*;

use super::blocks::{BlockType, QK_K, dequantize, dequantize_block};
use super::q8::{Q8Vectors, dot_portable, has_int8};
use super::tiles::{self, TILE_ROWS, row_of, tileable};
use crate::cpu::simd_dispatch;
use crate::gemm::{Gemm, Parallelism};
use crate::gemv::{Columns, Start, check_operands, row_ranges, run_ranges, scatter};
use crate::spin::SpinPool;

/// A `[rows, cols]` matrix of `ty` blocks, borrowed: row-major as in a GGUF file (each row
/// `ty.row_bytes(cols)` bytes), or its rows interleaved 16 at a time ([`tiles`], for the
/// 8-bit products).
///
/// [`tiles`]: super::tiles
#[derive(Debug, Clone, Copy)]
pub struct QuantMatrix<'a> {
    ty: BlockType,
    data: &'a [u8],
    rows: usize,
    cols: usize,
    row_bytes: usize,
    tiled: bool,
}

impl<'a> QuantMatrix<'a> {
    /// `data` as `[rows, cols]` of `ty`; `None` when `cols` is not a whole number of blocks
    /// or `data` is not exactly `rows` such rows.
    pub fn new(ty: BlockType, data: &'a [u8], [rows, cols]: [usize; 2]) -> Option<Self> {
        let row_bytes = ty.row_bytes(cols)?;
        (row_bytes.checked_mul(rows)? == data.len()).then_some(Self {
            ty,
            data,
            rows,
            cols,
            row_bytes,
            tiled: false,
        })
    }

    /// `data` as `[rows, cols]` of `ty` in the layout of [`tiles::interleave`]; `None` when
    /// `ty` has no tiles, `rows` is not a multiple of 16, or the sizes disagree. With
    /// [`Activations::Int8`] its products go through the tile kernels (the same work for one
    /// vector as for each of many); with f32 activations each row is gathered from its tile
    /// and widened by the portable code (correct, but the row-major layout is the one made
    /// for them).
    ///
    /// [`tiles::interleave`]: super::tiles::interleave
    pub fn tiled(ty: BlockType, data: &'a [u8], [rows, cols]: [usize; 2]) -> Option<Self> {
        if !tileable(ty) || !rows.is_multiple_of(TILE_ROWS) {
            return None;
        }
        Self::new(ty, data, [rows, cols]).map(|m| Self { tiled: true, ..m })
    }

    /// Whether the rows are interleaved ([`QuantMatrix::tiled`]).
    pub fn is_tiled(&self) -> bool {
        self.tiled
    }

    /// The block type.
    pub fn block_type(&self) -> BlockType {
        self.ty
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The bytes of the matrix.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Row `r`'s bytes in the file's layout: borrowed, or for a tiled matrix gathered from
    /// its tile.
    ///
    /// # Panics
    /// When `r >= rows`.
    pub fn row(&self, r: usize) -> Cow<'a, [u8]> {
        assert!(r < self.rows, "row {r} of {} rows", self.rows);
        if self.tiled {
            let mut out = vec![0u8; self.row_bytes];
            row_of(self.ty, self.data, self.cols, r, &mut out);
            return Cow::Owned(out);
        }
        Cow::Borrowed(&self.data[r * self.row_bytes..(r + 1) * self.row_bytes])
    }

    /// Row `r` dequantized into `out` (`cols` values).
    ///
    /// # Panics
    /// When `r >= rows` or `out` is not `cols` long.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        dequantize(self.ty, &self.row(r), out);
    }
}

/// Rows of a stack of parts: global row `r` is row `r - start` of the part that holds it.
struct Stack<'p, 'a> {
    parts: &'p [QuantMatrix<'a>],
    cols: usize,
    rows: usize,
}

impl<'p, 'a> Stack<'p, 'a> {
    fn new(parts: &'p [QuantMatrix<'a>], what: &str) -> Self {
        let cols = parts.first().map_or(0, |p| p.cols);
        assert!(
            parts.iter().all(|p| p.cols == cols),
            "{what}: stacked parts of different widths"
        );
        let rows = parts.iter().map(|p| p.rows).sum();
        Self { parts, cols, rows }
    }

    /// Calls `f(part, local rows)` for the global rows `r0..r1`, in order.
    fn for_rows(&self, r0: usize, r1: usize, mut f: impl FnMut(&QuantMatrix<'a>, usize, usize)) {
        let mut start = 0;
        for p in self.parts {
            let (a, b) = (r0.max(start), r1.min(start + p.rows));
            if a < b {
                f(p, a - start, b - start);
            }
            start += p.rows;
        }
    }
}

/// How a product with block-quantized weights treats its f32 activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Kept f32; each block widened to f32 as it is read (a dequantize-then-f32 product).
    #[default]
    F32,
    /// Quantized to 8 bits per block as llama.cpp quantizes them (`Q8_0` for Q4_0 and Q8_0
    /// weights, `Q8_1` for Q4_1, `Q8_K` for Q4_K and Q6_K) and multiplied in integers. Parts
    /// of other types (F32, F16, BF16, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, IQ4_NL) keep f32, and
    /// so do a prompt's row-major Q4_0, Q4_1 and Q8_0 parts (tiled ones do not).
    Int8,
}

/// `ys[i * rows + r] (=|+=) start_r + Σ_c w[r, c] · xs[i * cols + c]` for the `m` vectors of
/// `xs`, where `w` is `parts` stacked (rows of the first, then of the second, ...), threaded
/// over blocks of rows on `pool` (rayon's threads without one). Activations stay f32
/// ([`matvec_quant_with`] chooses).
///
/// # Panics
/// When the parts have different widths, `xs` is not `m * cols` values, `ys` not `m *
/// rows`, or a bias not `rows`.
pub fn matvec_quant(
    pool: Option<&SpinPool>,
    parts: &[QuantMatrix<'_>],
    xs: &[f32],
    m: usize,
    ys: &mut [f32],
    start: Start<'_>,
) {
    matvec_quant_with(pool, parts, xs, m, ys, start, Activations::F32);
}

/// [`matvec_quant`] with the activations' arithmetic chosen: with [`Activations::Int8`] the
/// vectors are quantized once (for all threads) in the formats the parts' types need.
///
/// # Panics
/// As [`matvec_quant`].
pub fn matvec_quant_with(
    pool: Option<&SpinPool>,
    parts: &[QuantMatrix<'_>],
    xs: &[f32],
    m: usize,
    ys: &mut [f32],
    start: Start<'_>,
    activations: Activations,
) {
    let stack = Stack::new(parts, "matvec_quant");
    let (rows, cols) = (stack.rows, stack.cols);
    check_operands("matvec_quant", [rows, cols], xs, m, ys, start);
    if rows == 0 || m == 0 {
        return;
    }
    let k_types = parts
        .iter()
        .any(|p| has_int8(p.ty) && p.ty.block_len() == QK_K);
    let q8 = (activations == Activations::Int8 && parts.iter().any(|p| has_int8(p.ty)))
        .then(|| Q8Vectors::new_with(xs, m, cols, k_types));
    let q8 = q8.as_ref();
    let mut copy = Vec::new();
    let xs = aligned(xs, &mut copy);
    // Several blocks per thread: rows of different parts may cost differently. Whole tiles
    // where a part is tiled.
    let align = if parts.iter().any(|p| p.tiled) {
        TILE_ROWS
    } else {
        4
    };
    let ranges = row_ranges(pool, [rows, cols], 4, align);
    let products = run_ranges(pool, &ranges, &|(r0, r1)| {
        let n = r1 - r0;
        let mut out = vec![0f32; m * n];
        let mut at = 0;
        stack.for_rows(r0, r1, |p, a, b| {
            match q8 {
                Some(y) if p.tiled => tiles::rows(p.ty, p.data, cols, (a, b), y, &mut out, (n, at)),
                Some(y) if has_int8(p.ty) => rows_dots_int8(p, (a, b), y, &mut out, (n, at)),
                _ => rows_dots(p, (a, b), xs, m, &mut out, (n, at)),
            }
            at += b - a;
        });
        out
    });
    for (&range, p) in ranges.iter().zip(&products) {
        scatter(ys, rows, m, range, p, start);
    }
}

/// `xs` itself when it starts on a cache line, else a copy of it in `buf` that does: the
/// kernels load the vectors 64 bytes at a time, and a load that straddles two lines costs
/// two (the values, and so the products, are the same).
fn aligned<'a>(xs: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    const LINE: usize = 64;
    if xs.as_ptr().align_offset(LINE) == 0 {
        return xs;
    }
    buf.resize(xs.len() + LINE / std::mem::size_of::<f32>(), 0.0);
    let at = buf.as_ptr().align_offset(LINE);
    let out = &mut buf[at..at + xs.len()];
    out.copy_from_slice(xs);
    out
}

/// Rows per dequantized tile of [`matmul_quant`].
const GEMM_TILE_ROWS: usize = 64;

/// Rows per unpacked tile of the 8-bit prompt products: the 16 lanes of `x86_q8_gemm`'s
/// sums, and of [`tiles`]'.
const INT8_TILE_ROWS: usize = TILE_ROWS;

/// [`matvec_quant`] for many vectors (a prompt): each tile of 64 rows is dequantized once
/// into f32 and multiplied with all `m` vectors by one GEMM, tiles threaded on rayon's pool.
///
/// # Panics
/// As [`matvec_quant`].
pub fn matmul_quant(
    parts: &[QuantMatrix<'_>],
    xs: &[f32],
    m: usize,
    ys: &mut [f32],
    start: Start<'_>,
) {
    matmul_quant_with(parts, xs, m, ys, start, Activations::F32);
}

/// [`matmul_quant`] with the activations' arithmetic chosen. With [`Activations::Int8`],
/// parts of Q4_K and Q6_K go through llama.cpp's 8-bit arithmetic: the vectors quantized
/// once to `Q8_K`; where the CPU has AVX-512 VNNI, each tile of 16 rows unpacked once into
/// interleaved 8-bit levels and multiplied with every vector in integers (eight vectors a
/// step), each scale group's sum scaled in f32 (`x86_q8_gemm.rs`), elsewhere the portable
/// integer products. Tiled parts ([`QuantMatrix::tiled`]) go through the decode step's tile
/// kernel (the same products, bit for bit, as [`matvec_quant_with`] gives them). Parts of
/// other types keep the f32 tiles.
///
/// # Panics
/// As [`matvec_quant`].
pub fn matmul_quant_with(
    parts: &[QuantMatrix<'_>],
    xs: &[f32],
    m: usize,
    ys: &mut [f32],
    start: Start<'_>,
    activations: Activations,
) {
    let stack = Stack::new(parts, "matmul_quant");
    let (rows, cols) = (stack.rows, stack.cols);
    check_operands("matmul_quant", [rows, cols], xs, m, ys, start);
    if rows == 0 || m == 0 {
        return;
    }
    let int8 = Int8Prompt::new(parts, xs, m, cols, activations);
    // Tiled parts' activations: `Q8_0` / `Q8_1`.
    let tiled = (activations == Activations::Int8 && parts.iter().any(|p| p.tiled))
        .then(|| Q8Vectors::new_with(xs, m, cols, false));
    let tile_rows = if int8.is_some() || tiled.is_some() {
        INT8_TILE_ROWS
    } else {
        GEMM_TILE_ROWS
    };
    let ranges: Vec<(usize, usize)> = (0..rows)
        .step_by(tile_rows)
        .map(|r0| (r0, (r0 + tile_rows).min(rows)))
        .collect();
    let columns = Columns::new(ys, rows, m);
    ranges.par_iter().for_each(|&(r0, r1)| {
        thread_local! {
            static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
                std::cell::RefCell::default();
        }
        BUFFERS.with_borrow_mut(|(out, tile)| {
            let n = r1 - r0;
            // Every value is written below (a GEMM's or a tile's product).
            out.resize(m * n, 0.0);
            let mut at = 0;
            stack.for_rows(r0, r1, |p, a, b| {
                let out = &mut out[at..];
                match (&int8, &tiled) {
                    (_, Some(y)) if p.tiled => {
                        tiles::rows(p.ty, p.data, cols, (a, b), y, out, (n, 0))
                    }
                    (Some(y), _) if Int8Prompt::takes(p.ty) => y.rows(p, (a, b), out, n),
                    _ => {
                        tile.resize((b - a) * cols, 0.0);
                        for r in a..b {
                            p.dequantize_row(r, &mut tile[(r - a) * cols..(r - a + 1) * cols]);
                        }
                        // xs [m, cols] times tileᵀ ([cols, b - a]: (c, j) at j * cols + c).
                        Gemm::new([m, b - a, cols])
                            .parallelism(Parallelism::None)
                            .run(out, n, xs, [cols, 1], tile, [1, cols]);
                    }
                }
                at += b - a;
            });
            // SAFETY: the ranges are consecutive tiles (`step_by`), so no other task writes
            // columns `r0..r1`.
            unsafe { columns.scatter((r0, r1), &out[..m * n], start) };
        });
    });
}

/// The activations of an 8-bit prompt product: `Q8_K` vectors and their sums per 16 and
/// per 32 values (what the weights' offsets multiply), as f32.
struct Int8Prompt {
    y: Q8Vectors,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    sums: [Vec<f32>; 2],
}

impl Int8Prompt {
    /// `None` unless the activations are [`Activations::Int8`] and some part is of a type
    /// [`Int8Prompt::takes`].
    fn new(
        parts: &[QuantMatrix<'_>],
        xs: &[f32],
        m: usize,
        cols: usize,
        activations: Activations,
    ) -> Option<Self> {
        if activations != Activations::Int8 || !parts.iter().any(|p| Self::takes(p.ty)) {
            return None;
        }
        let y = Q8Vectors::new_k(xs, m, cols);
        let sums16: Vec<f32> = y.kbsums.iter().map(|&s| f32::from(s)).collect();
        let sums32 = sums16.chunks_exact(2).map(|p| p[0] + p[1]).collect();
        Some(Self {
            y,
            sums: [sums16, sums32],
        })
    }

    /// Q4_K and Q6_K (the K-types of common GGUF files).
    fn takes(ty: BlockType) -> bool {
        matches!(ty, BlockType::Q4K | BlockType::Q6K)
    }

    /// Rows `a..b` of `p` (a type [`Int8Prompt::takes`]) times every vector into `out[i *
    /// ld + r - a]`: the tiles of `x86_q8_gemm` where the CPU has AVX-512 VNNI, else the
    /// portable integer products (the same arithmetic, slowly).
    fn rows(&self, p: &QuantMatrix<'_>, (a, b): (usize, usize), out: &mut [f32], ld: usize) {
        #[cfg(target_arch = "x86_64")]
        if super::x86_q8::available() {
            use super::x86_q8_gemm::{KTile, TILE, gemm_tile, takes, unpack};
            const { assert!(TILE == INT8_TILE_ROWS) };
            debug_assert!(takes(p.ty));
            thread_local! {
                static SCRATCH: std::cell::RefCell<KTile> = std::cell::RefCell::default();
            }
            let cols = p.cols;
            SCRATCH.with_borrow_mut(|tile| {
                // SAFETY: `x86_q8::available` found AVX-512F/BW/VL/VNNI, FMA and F16C.
                unsafe {
                    unpack(p.ty, p.data, p.row_bytes, (a, b), cols, tile);
                    let [s16, s32] = &self.sums;
                    gemm_tile(tile, &self.y, [s16, s32], out, (ld, 0));
                }
            });
            return;
        }
        for r in a..b {
            let row = p.row(r);
            for i in 0..self.y.len() {
                out[i * ld + r - a] = dot_portable(p.ty, &row, &self.y, i);
            }
        }
    }
}

/// Rows `a..b` of `p` times the `m` vectors of `xs` into `out[i * ld + at + r - a]`: the
/// AVX-512 kernels of the common types where the CPU has them, else each row dequantized
/// block by block at the CPU's widest vector level.
///
/// Vectors go in groups of at most four. Each vector's sums are formed exactly as with that
/// vector alone, whatever the others beside it (a batch of decode steps gives each sequence
/// its own logits bit for bit); past four vectors each row is read from memory once and
/// from L1 by the later groups.
fn rows_dots(
    p: &QuantMatrix<'_>,
    (a, b): (usize, usize),
    xs: &[f32],
    m: usize,
    out: &mut [f32],
    (ld, at): (usize, usize),
) {
    let cols = p.cols;
    #[cfg(target_arch = "x86_64")]
    if super::x86::available() && !p.tiled {
        debug_assert!(std::arch::is_x86_feature_detected!("avx512bw"));
        let operands = (p.ty, p.data, p.row_bytes, (a, b), xs, (cols, m));
        let (ty, data, row_bytes, range, xs, shape) = operands;
        let done = if m <= 4 {
            // SAFETY: `available` found AVX-512F, AVX-512BW, FMA and F16C on this CPU.
            unsafe { super::x86::rows(ty, data, row_bytes, range, xs, shape, out, (ld, at)) }
        } else {
            // SAFETY: `available` found AVX-512F, AVX-512BW, FMA and F16C on this CPU.
            unsafe { super::x86::rows_batch(ty, data, row_bytes, range, xs, shape, out, (ld, at)) }
        };
        if done {
            return;
        }
    }
    let mut dots = [0f32; 4];
    for r in a..b {
        for i0 in (0..m).step_by(4) {
            let mm = (m - i0).min(4);
            let x = &xs[i0 * cols..(i0 + mm) * cols];
            row_dots_portable(p.ty, &p.row(r), x, cols, &mut dots[..mm]);
            for (k, &d) in dots[..mm].iter().enumerate() {
                out[(i0 + k) * ld + at + r - a] = d;
            }
        }
    }
}

/// [`rows_dots`] with 8-bit activations (`p`'s type one of [`has_int8`]'s).
fn rows_dots_int8(
    p: &QuantMatrix<'_>,
    (a, b): (usize, usize),
    y: &Q8Vectors,
    out: &mut [f32],
    (ld, at): (usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if super::x86_q8::available() {
        let (ty, data, row_bytes) = (p.ty, p.data, p.row_bytes);
        // SAFETY: `available` found AVX-512F/BW/VL/VNNI, FMA and F16C on this CPU.
        if unsafe { super::x86_q8::rows(ty, data, row_bytes, (a, b), y, out, (ld, at)) } {
            return;
        }
    }
    for r in a..b {
        let row = p.row(r);
        for i in 0..y.len() {
            out[i * ld + at + r - a] = dot_portable(p.ty, &row, y, i);
        }
    }
}

simd_dispatch!(
    /// `dots[i] = row · xs[i * cols..]` for the `dots.len() <= 4` vectors of `xs`, the row
    /// dequantized block by block.
    row_dots_portable, row_dots_body, (ty: BlockType, row: &[u8], xs: &[f32], cols: usize, dots: &mut [f32])
);

/// Values per step of [`row_dots_body`]: one block, or 64 values of the one-value types.
const STEP: usize = 256;

#[inline(always)]
fn row_dots_body(ty: BlockType, row: &[u8], xs: &[f32], cols: usize, dots: &mut [f32]) {
    let m = dots.len();
    debug_assert!(m <= 4 && xs.len() == m * cols);
    let (len, size) = (ty.block_len(), ty.block_bytes());
    // Whole blocks per step: one K-type block, eight 32-value blocks, 256 scalars.
    let per_step = (STEP / len).max(1);
    let mut acc = [[0f32; 16]; 4];
    let mut buf = [0f32; STEP];
    let mut c = 0;
    for bytes in row.chunks(per_step * size) {
        let n = bytes.len() / size * len;
        for (b, o) in bytes.chunks_exact(size).zip(buf.chunks_exact_mut(len)) {
            dequantize_block(ty, b, o);
        }
        let w = &buf[..n];
        for (i, acc) in acc.iter_mut().enumerate().take(m) {
            let x = &xs[i * cols + c..i * cols + c + n];
            let mut wc = w.chunks_exact(16);
            let mut xc = x.chunks_exact(16);
            for (w16, x16) in (&mut wc).zip(&mut xc) {
                for l in 0..16 {
                    acc[l] += w16[l] * x16[l];
                }
            }
            for (l, (w, x)) in wc.remainder().iter().zip(xc.remainder()).enumerate() {
                acc[l] += w * x;
            }
        }
        c += n;
    }
    for (d, acc) in dots.iter_mut().zip(&acc) {
        // Pairwise, in a fixed order.
        let mut s = *acc;
        let mut width = 16;
        while width > 1 {
            width /= 2;
            for l in 0..width {
                s[l] += s[l + width];
            }
        }
        *d = s[0];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_of_ones_sums_the_vector() {
        // Q8_0 with d = 1 and every q = 1: each row is all ones.
        let cols = 64;
        let mut row = Vec::new();
        for _ in 0..cols / 32 {
            row.extend_from_slice(&0x3c00u16.to_le_bytes());
            row.extend_from_slice(&[1u8; 32]);
        }
        let data: Vec<u8> = [row.clone(), row].concat();
        let w = QuantMatrix::new(BlockType::Q8_0, &data, [2, cols]).expect("shape");
        let xs: Vec<f32> = (0..cols).map(|v| v as f32).collect();
        let mut ys = vec![1.0f32; 2];
        matvec_quant(None, &[w], &xs, 1, &mut ys, Start::Accumulate);
        let sum = (cols * (cols - 1) / 2) as f32;
        assert_eq!(ys, [1.0 + sum, 1.0 + sum]);
        assert!(QuantMatrix::new(BlockType::Q8_0, &data, [3, cols]).is_none());
        assert!(QuantMatrix::new(BlockType::Q8_0, &data, [2, 48]).is_none());
    }
}
