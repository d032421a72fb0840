//! A decoder's weight matrix in its storage precision ([`Matrix`]) and its products: f32
//! packed once for both a prompt's GEMMs and a decode step's streamed products, row-major
//! bf16 widened as read, or a mapped GGUF file's blocks used in place (several tensors stacked
//! as one matrix).

use std::sync::Arc;

use kiln_core::kernels::gemm::{Gemm, Parallelism};
use kiln_core::kernels::gemv::{
    Start, Weights, bf16_to_f32, f32_to_bf16, matvec_on, matvec_packed,
};
use kiln_core::kernels::mmap::MappedFile;
use kiln_core::kernels::packed::PackedRhs;
use kiln_core::kernels::quant::tiles::interleave;
use kiln_core::kernels::quant::{
    Activations, BlockType, QuantMatrix, matmul_quant_with, matvec_quant_with,
};
use kiln_core::kernels::spin::SpinPool;

use super::Precision;

/// A `[rows, cols]` (`[out, in]`) weight matrix in its storage precision: f32 packed
/// transposed for both the prompt's GEMMs and the decode steps' streamed products,
/// row-major bf16, or a GGUF file's blocks where the file is mapped.
pub(crate) enum Matrix {
    F32 {
        packed: PackedRhs,
    },
    Bf16 {
        values: Vec<u16>,
        rows: usize,
        cols: usize,
    },
    Quant(QuantWeights),
}

/// Tensors of a mapped GGUF file stacked as one matrix (a layer's query, key and value
/// projections, or its gate and up projections), each in its own block type.
pub(crate) struct QuantWeights {
    pub(crate) map: Arc<MappedFile>,
    /// `(type, byte offset in the file, rows)` of each stacked tensor, checked against the
    /// file when loaded.
    pub(crate) parts: Vec<(BlockType, usize, usize)>,
    pub(crate) cols: usize,
    /// The products' arithmetic (with 8-bit activations, prompts past
    /// [`QUANT_STREAMED_ROWS`] rows go through f32 tiles except for Q4_K, Q6_K and tiled
    /// parts).
    pub(crate) activations: Activations,
    /// With 8-bit activations, each Q4_0, Q4_1 and Q8_0 part's rows interleaved 16 at a time
    /// (`kiln_kernels::quant::tiles`: one kernel for a decode step, a batch and a prompt,
    /// no sums across lanes), as many bytes as the part (the file's pages of it released);
    /// `None` for the other parts. Empty with f32 activations (the parts are read in place).
    pub(crate) tiles: Vec<Option<Vec<u8>>>,
}

impl QuantWeights {
    pub(crate) fn matrices(&self) -> Vec<QuantMatrix<'_>> {
        self.parts
            .iter()
            .enumerate()
            .map(|(i, &(ty, _, rows))| {
                if let Some(Some(tiles)) = self.tiles.get(i) {
                    return QuantMatrix::tiled(ty, tiles, [rows, self.cols])
                        .expect("tiles are made from the part's checked bytes");
                }
                self.in_place(i)
            })
            .collect()
    }

    /// Part `i` as the file holds it.
    fn in_place(&self, i: usize) -> QuantMatrix<'_> {
        let (ty, offset, rows) = self.parts[i];
        let len = ty.row_bytes(self.cols).unwrap_or(0) * rows;
        let bytes = self.map.bytes().get(offset..offset + len).unwrap_or(&[]);
        QuantMatrix::new(ty, bytes, [rows, self.cols])
            .expect("GGUF tensors are checked against the file when loaded")
    }

    /// Sets the activations, interleaving the parts that have tiles for 8-bit ones (once)
    /// and dropping the tiles for f32.
    fn set_activations(&mut self, activations: Activations) {
        self.activations = activations;
        if activations == Activations::F32 {
            self.tiles = Vec::new();
            return;
        }
        if self.tiles.is_empty() {
            // Each part's file pages leave resident memory as soon as its tiles hold the
            // bytes (they are not read again), so the peak is the tiles plus one part.
            self.tiles = (0..self.parts.len())
                .map(|i| {
                    let m = self.in_place(i);
                    let tiles = interleave(m.block_type(), m.bytes(), m.shape());
                    if tiles.is_some() {
                        let (offset, len) = (self.parts[i].1, m.bytes().len());
                        self.map.release(offset..offset + len);
                    }
                    tiles
                })
                .collect();
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.2).sum()
    }
}

/// Rows up to which a quantized matrix's product streams the blocks (each widened as read)
/// rather than dequantizing the matrix into tiles for a GEMM: on SmolLM2's Q4_1 file (2
/// threads) a 6-token prompt took 18 ms streamed against 76-84 ms through the tiles, 64
/// tokens 117-128 ms against 143-169; from about 96 tokens the tiles' GEMM wins (128: 227-237
/// against 242-244 ms). Prompts of continuous batching, read in chunks of 64, stream.
const QUANT_STREAMED_ROWS: usize = 64;

impl Matrix {
    /// From row-major f32 values.
    pub(crate) fn new(values: Vec<f32>, [rows, cols]: [usize; 2], precision: Precision) -> Self {
        debug_assert_eq!(values.len(), rows * cols);
        match precision {
            Precision::F32 => Matrix::F32 {
                packed: PackedRhs::new(&values, [cols, rows], [1, cols]),
            },
            Precision::Bf16 => Matrix::Bf16 {
                values: values.iter().map(|&v| f32_to_bf16(v)).collect(),
                rows,
                cols,
            },
        }
    }

    pub(crate) fn shape(&self) -> [usize; 2] {
        match self {
            Matrix::F32 { packed } => {
                let [k, n] = packed.shape();
                [n, k]
            }
            Matrix::Bf16 { rows, cols, .. } => [*rows, *cols],
            Matrix::Quant(q) => [q.rows(), q.cols],
        }
    }

    /// Row `r` as f32.
    pub(crate) fn row(&self, r: usize) -> Vec<f32> {
        match self {
            Matrix::F32 { packed } => packed.column(r),
            Matrix::Bf16 { values, cols, .. } => values[r * cols..(r + 1) * cols]
                .iter()
                .map(|&v| bf16_to_f32(v))
                .collect(),
            Matrix::Quant(q) => {
                let mut out = vec![0f32; q.cols];
                let mut r = r;
                for m in q.matrices() {
                    if r < m.shape()[0] {
                        m.dequantize_row(r, &mut out);
                        break;
                    }
                    r -= m.shape()[0];
                }
                out
            }
        }
    }

    /// `out[t] (=|+=) start + self · x[t]` for the `t` rows of `x` (`[t, cols]` into
    /// `[t, rows]`): a streamed product for a few rows, one GEMM for a prompt.
    pub(crate) fn apply(
        &self,
        pool: &SpinPool,
        x: &[f32],
        t: usize,
        out: &mut [f32],
        start: Start<'_>,
    ) {
        let [rows, cols] = self.shape();
        let streamed = match self {
            Matrix::Quant(_) => QUANT_STREAMED_ROWS,
            _ => 4,
        };
        if t <= streamed {
            self.apply_rows(pool, x, t, out, start);
            return;
        }
        if let Matrix::Quant(q) = self {
            matmul_quant_with(&q.matrices(), x, t, out, start, q.activations);
            return;
        }
        if let (Matrix::F32 { packed }, Start::Zero) = (self, start) {
            packed.matmul_par(out, x, [cols, 1], t);
            return;
        }
        let mut product = vec![0f32; t * rows];
        match self {
            Matrix::F32 { packed } => packed.matmul_par(&mut product, x, [cols, 1], t),
            Matrix::Bf16 { values, .. } => {
                let w: Vec<f32> = values.iter().map(|&v| bf16_to_f32(v)).collect();
                // x [t, cols] times wᵀ ([cols, rows], w's element (r, c) at r * cols + c).
                Gemm::new([t, rows, cols])
                    .parallelism(Parallelism::Rayon(0))
                    .run(&mut product, rows, x, [cols, 1], &w, [1, cols]);
            }
            Matrix::Quant(_) => unreachable!("handled above"),
        }
        match start {
            Start::Zero => out.copy_from_slice(&product),
            Start::Accumulate => out.iter_mut().zip(&product).for_each(|(o, p)| *o += p),
            Start::Bias(b) => {
                for (o, p) in out.chunks_exact_mut(rows).zip(product.chunks_exact(rows)) {
                    o.iter_mut()
                        .zip(p.iter().zip(b))
                        .for_each(|(o, (p, b))| *o = p + b);
                }
            }
        }
    }

    /// [`Matrix::apply`] as streamed products for any number of rows: each row's products
    /// are those it gets alone, bit for bit (the kernels sum each vector in one fixed order),
    /// and the weights are read once for all of them. A batch of decode steps.
    pub(crate) fn apply_rows(
        &self,
        pool: &SpinPool,
        x: &[f32],
        t: usize,
        out: &mut [f32],
        start: Start<'_>,
    ) {
        let [rows, cols] = self.shape();
        match self {
            Matrix::Quant(q) => {
                matvec_quant_with(Some(pool), &q.matrices(), x, t, out, start, q.activations)
            }
            Matrix::F32 { packed } => matvec_packed(Some(pool), packed, x, t, out, start),
            Matrix::Bf16 { values, .. } => {
                matvec_on(pool, Weights::Bf16(values), [rows, cols], x, t, out, start);
            }
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        let [rows, cols] = self.shape();
        match self {
            Matrix::F32 { .. } => rows * cols * 4,
            Matrix::Bf16 { .. } => rows * cols * 2,
            Matrix::Quant(q) => q
                .parts
                .iter()
                .map(|&(ty, _, r)| ty.row_bytes(cols).unwrap_or(0) * r)
                .sum(),
        }
    }

    /// Sets a GGUF matrix's activations (nothing for f32 and bf16 weights).
    pub(crate) fn set_activations(&mut self, activations: Activations) {
        if let Matrix::Quant(q) = self {
            q.set_activations(activations);
        }
    }

    /// The block types of a GGUF matrix (`None` for f32 and bf16).
    pub(crate) fn block_types(&self) -> Vec<BlockType> {
        match self {
            Matrix::Quant(q) => q.parts.iter().map(|p| p.0).collect(),
            _ => Vec::new(),
        }
    }
}
