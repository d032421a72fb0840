//! Llama-family inference on the CPU without per-operation dispatch: the same forward pass
//! as [`Llama::forward_cached`], on host memory, for one sequence with its own cache.
//!
//! Decoding a token reads every weight once and does little else: on flex, each of the ~400
//! tensor operations of a step is its own dispatch and allocation, which costs more than the
//! arithmetic. Here the weights are packed once ([`LlamaCpu::from_llama`]): the query, key
//! and value projections of a layer are one matrix, the gate and up projections another, in
//! f32 on kiln-kernels' [`PackedRhs`] panels. A prompt (prefill) runs one multi-threaded GEMM
//! per projection on those panels and attention as two GEMMs per query head
//! ([`kiln_core::kernels::gemm::Gemm`]); a decode step runs each projection as one streamed
//! matrix-vector product over the same panels ([`kiln_core::kernels::gemv`]) on a spinning
//! thread team ([`SpinPool`]), attention over the cache a task per query head. Residuals and
//! biases are added to the products.
//!
//! [`Precision::Bf16`] keeps the weights row-major in bfloat16 and widens them as they are
//! read: a checkpoint stored in bf16 (most published Llama-family models) keeps exactly its
//! values, from half the bytes (the sums run in another order than the f32 path's, so the
//! logits agree within float rounding); other weights are rounded to bf16 first.
//!
//! The tests check [`LlamaCpu::forward`] against transformers' logits and against
//! [`Llama::forward_cached`].

use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;
use kiln_core::kernels::gemm::{Gemm, Parallelism};
use std::sync::Mutex;

use kiln_core::kernels::gemv::{
    Start, Weights, bf16_to_f32, dot, f32_to_bf16, matvec_on, matvec_packed,
};
use kiln_core::kernels::math::swiglu;
use kiln_core::kernels::mmap::MappedFile;
use kiln_core::kernels::packed::PackedRhs;
use kiln_core::kernels::quant::{BlockType, QuantMatrix, matmul_quant, matvec_quant};
use kiln_core::kernels::spin::SpinPool;
use rayon::prelude::*;

use crate::error::{NlpError, Result};
use crate::generate::{Generation, GenerationConfig, Sampler, StopCriteria, StopReason};
use crate::models::llama::{Llama, LlamaConfig};

mod batch;

/// How [`LlamaCpu`] stores its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 (4 bytes a weight).
    #[default]
    F32,
    /// bfloat16 widened to f32 as read (2 bytes a weight): exact for bf16 checkpoints.
    Bf16,
}

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
}

impl QuantWeights {
    fn matrices(&self) -> Vec<QuantMatrix<'_>> {
        self.parts
            .iter()
            .map(|&(ty, offset, rows)| {
                let len = ty.row_bytes(self.cols).unwrap_or(0) * rows;
                let bytes = self.map.bytes().get(offset..offset + len).unwrap_or(&[]);
                QuantMatrix::new(ty, bytes, [rows, self.cols])
                    .expect("GGUF tensors are checked against the file when loaded")
            })
            .collect()
    }

    fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.2).sum()
    }
}

impl Matrix {
    /// From row-major f32 values.
    fn new(values: Vec<f32>, [rows, cols]: [usize; 2], precision: Precision) -> Self {
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

    fn shape(&self) -> [usize; 2] {
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
    fn row(&self, r: usize) -> Vec<f32> {
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
    fn apply(&self, pool: &SpinPool, x: &[f32], t: usize, out: &mut [f32], start: Start<'_>) {
        let [rows, cols] = self.shape();
        if t <= 4 {
            self.apply_rows(pool, x, t, out, start);
            return;
        }
        if let Matrix::Quant(q) = self {
            matmul_quant(&q.matrices(), x, t, out, start);
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
            Matrix::Quant(q) => matvec_quant(Some(pool), &q.matrices(), x, t, out, start),
            Matrix::F32 { packed } => matvec_packed(Some(pool), packed, x, t, out, start),
            Matrix::Bf16 { values, .. } => {
                matvec_on(pool, Weights::Bf16(values), [rows, cols], x, t, out, start);
            }
        }
    }

    fn bytes(&self) -> usize {
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

    /// The block types of a GGUF matrix (`None` for f32 and bf16).
    fn block_types(&self) -> Vec<BlockType> {
        match self {
            Matrix::Quant(q) => q.parts.iter().map(|p| p.0).collect(),
            _ => Vec::new(),
        }
    }
}

pub(crate) struct Layer {
    pub(crate) attn_norm: Vec<f32>,
    /// `[(heads + 2 kv) hd, hidden]`: query rows, then key rows, then value rows.
    pub(crate) qkv: Matrix,
    pub(crate) qkv_bias: Option<Vec<f32>>,
    pub(crate) o: Matrix,
    pub(crate) mlp_norm: Vec<f32>,
    /// `[2 intermediate, hidden]`: gate rows, then up rows.
    pub(crate) gate_up: Matrix,
    pub(crate) down: Matrix,
}

/// Which pairs of a head's dimensions rotary embeddings turn together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rope {
    /// Dimension `i` with `i + head_dim / 2` (transformers' `rotate_half`; GPT-NeoX's).
    Half,
    /// Dimension `2 i` with `2 i + 1`: llama.cpp's converter permutes the query and key rows
    /// of `llama` models into this order, and the file's rows are used as they are.
    Interleaved,
}

/// A Llama-family decoder packed for CPU inference (see the module docs).
pub struct LlamaCpu {
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) intermediate: usize,
    pub(crate) vocab: usize,
    pub(crate) max_positions: usize,
    pub(crate) eps: f32,
    pub(crate) inv_freq: Vec<f32>,
    pub(crate) rope: Rope,
    pub(crate) embed: Matrix,
    /// The untied head, `[vocab, hidden]` (the embedding when tied).
    pub(crate) head: Option<Matrix>,
    pub(crate) norm: Vec<f32>,
    pub(crate) layers: Vec<Layer>,
    /// The threads of decode steps' products.
    pub(crate) pool: SpinPool,
}

impl std::fmt::Debug for LlamaCpu {
    /// The shape, not the weights.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaCpu")
            .field("hidden", &self.hidden)
            .field("layers", &self.layers.len())
            .field("heads", &self.heads)
            .field("kv_heads", &self.kv_heads)
            .field("vocab", &self.vocab)
            .field("weight_bytes", &self.weight_bytes())
            .field("threads", &self.pool.threads())
            .finish()
    }
}

/// The keys and values of one sequence, per layer and key/value head (`[len, head_dim]`
/// each), for [`LlamaCpu::forward`].
#[derive(Debug, Clone, Default)]
pub struct LlamaCpuCache {
    /// `[layer][kv head]`.
    keys: Vec<Vec<Vec<f32>>>,
    values: Vec<Vec<Vec<f32>>>,
    len: usize,
    /// `[layers, kv heads, head_dim]` of the model that filled it.
    shape: Option<[usize; 3]>,
}

impl LlamaCpuCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn host<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| NlpError::Input(format!("reading the Llama weights ({what}): {e:?}")))
}

/// A weight as row-major `[out, in]` values, its shape, and its bias.
type Rows = (Vec<f32>, [usize; 2], Option<Vec<f32>>);

/// A Burn linear layer's weight (`[in, out]`) as row-major `[out, in]`, and its bias.
fn rows_of(l: &burn::nn::Linear, what: &str) -> Result<Rows> {
    let [d_in, d_out] = l.weight.dims();
    let w = host(l.weight.val(), what)?;
    let mut t = vec![0f32; d_in * d_out];
    for i in 0..d_in {
        for o in 0..d_out {
            t[o * d_in + i] = w[i * d_out + o];
        }
    }
    let b = match &l.bias {
        Some(b) => Some(host(b.val(), what)?),
        None => None,
    };
    Ok((t, [d_out, d_in], b))
}

/// One query head's attention over its cached keys and values (`[s, hd]` each): the
/// softmax of the scaled dot products, then the weighted sum of the values. Decode steps
/// alone and in a batch both use it, so a sequence gets the same values either way.
pub(crate) fn head_attention(q: &[f32], keys: &[f32], values: &[f32], scale: f32) -> Vec<f32> {
    let hd = q.len();
    let mut p: Vec<f32> = keys.chunks_exact(hd).map(|k| dot(q, k) * scale).collect();
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for x in &mut p {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    let mut o = vec![0f32; hd];
    for (&p, vs) in p.iter().zip(values.chunks_exact(hd)) {
        let p = p * inv;
        o.iter_mut().zip(vs).for_each(|(o, &v)| *o += p * v);
    }
    o
}

/// `w * (x / sqrt(mean(x²) + eps))`, as transformers' `LlamaRMSNorm`.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * inv);
    }
}

impl LlamaCpu {
    /// Copies and packs the weights of `model`. A model that still carries LoRA adapters is
    /// an error (merge them first with [`Llama::merge_lora`]).
    pub fn from_llama(model: &Llama, precision: Precision) -> Result<Self> {
        if model.has_lora() {
            return Err(NlpError::Input(
                "LlamaCpu: the model has LoRA adapters; merge them first (Llama::merge_lora)"
                    .into(),
            ));
        }
        let [vocab, hidden] = model.embed_tokens.weight.dims();
        let (heads, kv_heads, head_dim) = (model.heads, model.kv_heads, model.head_dim);
        let mut layers = Vec::with_capacity(model.layers.len());
        let mut intermediate = 0;
        for (l, layer) in model.layers.iter().enumerate() {
            let at = &layer.self_attn;
            let name = |p: &str| format!("layer {l} {p}");
            let (q, _, qb) = rows_of(&at.q_proj, &name("q_proj"))?;
            let (k, _, kb) = rows_of(&at.k_proj, &name("k_proj"))?;
            let (v, _, vb) = rows_of(&at.v_proj, &name("v_proj"))?;
            let qkv_rows = (heads + 2 * kv_heads) * head_dim;
            let qkv_bias = match (qb, kb, vb) {
                (Some(q), Some(k), Some(v)) => Some([q, k, v].concat()),
                _ => None,
            };
            let (o, o_shape, _) = rows_of(&at.o_proj, &name("o_proj"))?;
            let (gate, [inter, _], _) = rows_of(&layer.mlp.gate_proj, &name("gate_proj"))?;
            let (up, _, _) = rows_of(&layer.mlp.up_proj, &name("up_proj"))?;
            let (down, down_shape, _) = rows_of(&layer.mlp.down_proj, &name("down_proj"))?;
            intermediate = inter;
            layers.push(Layer {
                attn_norm: host(layer.input_layernorm.gamma.val(), &name("input_layernorm"))?,
                qkv: Matrix::new([q, k, v].concat(), [qkv_rows, hidden], precision),
                qkv_bias,
                o: Matrix::new(o, o_shape, precision),
                mlp_norm: host(
                    layer.post_attention_layernorm.gamma.val(),
                    &name("post_attention_layernorm"),
                )?,
                gate_up: Matrix::new([gate, up].concat(), [2 * inter, hidden], precision),
                down: Matrix::new(down, down_shape, precision),
            });
        }
        let head = match &model.lm_head {
            Some(h) => {
                let (w, shape, _) = rows_of(h, "lm_head")?;
                Some(Matrix::new(w, shape, precision))
            }
            None => None,
        };
        Ok(Self {
            hidden,
            heads,
            kv_heads,
            head_dim,
            intermediate,
            vocab,
            max_positions: model.max_positions(),
            eps: model.norm.epsilon as f32,
            inv_freq: model.inv_freq.clone(),
            rope: Rope::Half,
            embed: Matrix::new(
                host(model.embed_tokens.weight.val(), "embed_tokens")?,
                [vocab, hidden],
                precision,
            ),
            head,
            norm: host(model.norm.gamma.val(), "norm")?,
            layers,
            pool: SpinPool::new(rayon::current_num_threads()),
        })
    }

    /// Runs decode steps on `threads` threads (the default: rayon's, `RAYON_NUM_THREADS`);
    /// prompts run on rayon's pool.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.pool = SpinPool::new(threads.max(1));
        self
    }

    /// Reads a Hugging Face folder (as [`Llama::from_folder`], on the CPU) and packs it.
    pub fn from_folder(dir: impl AsRef<Path>, precision: Precision) -> Result<(LlamaConfig, Self)> {
        let device =
            kiln_core::backend::device("cpu").map_err(|e| NlpError::Input(e.to_string()))?;
        let (config, model) = Llama::from_folder(dir, &device)?;
        Ok((config, Self::from_llama(&model, precision)?))
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// How the weights are stored (a GGUF model's quantized weights: [`Precision::F32`],
    /// the precision of its activations; see [`LlamaCpu::block_types`]).
    pub fn precision(&self) -> Precision {
        match self.embed {
            Matrix::Bf16 { .. } => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// The ggml block types of a GGUF model's matrices, most bytes first (empty for f32 and
    /// bf16 weights).
    pub fn block_types(&self) -> Vec<BlockType> {
        let mut bytes: Vec<(BlockType, usize)> = Vec::new();
        let matrices = self
            .layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.o, &l.gate_up, &l.down])
            .chain([&self.embed])
            .chain(self.head.as_ref());
        for m in matrices {
            let types = m.block_types();
            let each = m.bytes() / types.len().max(1);
            for ty in types {
                match bytes.iter_mut().find(|(t, _)| *t == ty) {
                    Some((_, b)) => *b += each,
                    None => bytes.push((ty, each)),
                }
            }
        }
        bytes.sort_by_key(|b| std::cmp::Reverse(b.1));
        bytes.into_iter().map(|(t, _)| t).collect()
    }

    /// The longest context.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Bytes of weights one decoded token reads: every layer's matrices and the head (the
    /// embedding row is one row).
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes())
            .sum();
        layers + self.head.as_ref().unwrap_or(&self.embed).bytes()
    }

    /// The logits after `tokens`, extending `cache`: of the last position (`[vocab]`), or of
    /// every new position (`[tokens, vocab]`) when `all`.
    ///
    /// An empty `tokens`, an id past the vocabulary, a context past the model's, or a cache
    /// filled by a model of another shape is an [`NlpError::Input`].
    pub fn forward(
        &self,
        cache: &mut LlamaCpuCache,
        tokens: &[u32],
        all: bool,
    ) -> Result<Vec<f32>> {
        if tokens.len() <= 4 {
            // A decode step: its products run on the spin pool.
            return self.forward_in_pool(cache, tokens, all);
        }
        // A prompt, on a thread of rayon's pool, so that its parallel GEMMs and attention
        // hand work to the other threads by work stealing (from outside the pool each would
        // put the calling thread to sleep and wake it again).
        rayon::scope(|_| self.forward_in_pool(cache, tokens, all))
    }

    fn forward_in_pool(
        &self,
        cache: &mut LlamaCpuCache,
        tokens: &[u32],
        all: bool,
    ) -> Result<Vec<f32>> {
        let shape = [self.layers.len(), self.kv_heads, self.head_dim];
        match cache.shape {
            Some(s) if s != shape => {
                return Err(NlpError::Input(format!(
                    "llama (cpu): a cache of [layers, kv heads, head dim] {s:?} given to a model \
                     of {shape:?}"
                )));
            }
            _ => {}
        }
        if tokens.is_empty() {
            return Err(NlpError::Input("llama (cpu): no tokens to run".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(NlpError::Input(format!(
                "llama (cpu): token id {bad} past the vocabulary of {}",
                self.vocab
            )));
        }
        let (s0, t) = (cache.len, tokens.len());
        if s0 + t > self.max_positions {
            return Err(NlpError::Input(format!(
                "llama (cpu): {} positions, the model's context {}",
                s0 + t,
                self.max_positions
            )));
        }
        if cache.shape.is_none() {
            cache.shape = Some(shape);
            cache.keys = vec![vec![Vec::new(); self.kv_heads]; self.layers.len()];
            cache.values = cache.keys.clone();
        }
        let (e, hd, half) = (self.hidden, self.head_dim, self.head_dim / 2);
        let (q_width, kv_width) = (self.heads * hd, self.kv_heads * hd);
        let qkv_width = q_width + 2 * kv_width;
        // cos / sin of each new position, as transformers computes them in f32.
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in s0..s0 + t {
            for &f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let mut x = Vec::with_capacity(t * e);
        for &id in tokens {
            x.extend(self.embed.row(id as usize));
        }
        let mut h = vec![0f32; t * e];
        let mut qkv = vec![0f32; t * qkv_width];
        let mut att = vec![0f32; t * q_width];
        let mut gu = vec![0f32; t * 2 * self.intermediate];
        let mut act = vec![0f32; t * self.intermediate];
        let scale = 1.0 / (hd as f32).sqrt();
        for (l, layer) in self.layers.iter().enumerate() {
            for (xr, hr) in x.chunks_exact(e).zip(h.chunks_exact_mut(e)) {
                rms_norm(xr, &layer.attn_norm, self.eps, hr);
            }
            let start = layer.qkv_bias.as_deref().map_or(Start::Zero, Start::Bias);
            layer.qkv.apply(&self.pool, &h, t, &mut qkv, start);
            self.rotate(&mut qkv, &cos, &sin);
            for row in qkv.chunks_exact(qkv_width) {
                for g in 0..self.kv_heads {
                    let k = &row[q_width + g * hd..q_width + (g + 1) * hd];
                    let v = &row[q_width + kv_width + g * hd..q_width + kv_width + (g + 1) * hd];
                    cache.keys[l][g].extend_from_slice(k);
                    cache.values[l][g].extend_from_slice(v);
                }
            }
            self.attention(
                &qkv,
                t,
                s0,
                &cache.keys[l],
                &cache.values[l],
                scale,
                &mut att,
            );
            layer
                .o
                .apply(&self.pool, &att, t, &mut x, Start::Accumulate);
            for (xr, hr) in x.chunks_exact(e).zip(h.chunks_exact_mut(e)) {
                rms_norm(xr, &layer.mlp_norm, self.eps, hr);
            }
            layer.gate_up.apply(&self.pool, &h, t, &mut gu, Start::Zero);
            let inter = self.intermediate;
            for (g, a) in gu.chunks_exact(2 * inter).zip(act.chunks_exact_mut(inter)) {
                let (gate, up) = g.split_at(inter);
                swiglu(a, gate, up);
            }
            layer
                .down
                .apply(&self.pool, &act, t, &mut x, Start::Accumulate);
        }
        cache.len += t;
        let rows: Vec<usize> = if all { (0..t).collect() } else { vec![t - 1] };
        let mut normed = vec![0f32; rows.len() * e];
        for (o, &r) in normed.chunks_exact_mut(e).zip(&rows) {
            rms_norm(&x[r * e..(r + 1) * e], &self.norm, self.eps, o);
        }
        let mut logits = vec![0f32; rows.len() * self.vocab];
        let head = self.head.as_ref().unwrap_or(&self.embed);
        head.apply(&self.pool, &normed, rows.len(), &mut logits, Start::Zero);
        Ok(logits)
    }

    /// Rotary embeddings on the query and key heads of `qkv` (`[t, (heads + 2 kv) hd]`), each
    /// pair `(x1, x2)` turned to `(x1 c - x2 s, x2 c + x1 s)` with the position's `cos` / `sin`.
    fn rotate(&self, qkv: &mut [f32], cos: &[f32], sin: &[f32]) {
        let (hd, half) = (self.head_dim, self.head_dim / 2);
        let (q_width, kv_width) = (self.heads * hd, self.kv_heads * hd);
        let qkv_width = q_width + 2 * kv_width;
        for (row, (c, s)) in qkv
            .chunks_exact_mut(qkv_width)
            .zip(cos.chunks_exact(half).zip(sin.chunks_exact(half)))
        {
            for head in row[..q_width + kv_width].chunks_exact_mut(hd) {
                match self.rope {
                    Rope::Half => {
                        let (x1, x2) = head.split_at_mut(half);
                        for i in 0..half {
                            let (a, b) = (x1[i], x2[i]);
                            x1[i] = a * c[i] - b * s[i];
                            x2[i] = b * c[i] + a * s[i];
                        }
                    }
                    Rope::Interleaved => {
                        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                            let (a, b) = (pair[0], pair[1]);
                            pair[0] = a * c[i] - b * s[i];
                            pair[1] = b * c[i] + a * s[i];
                        }
                    }
                }
            }
        }
    }

    /// Causal attention of the `t` new positions (queries in `qkv`, `[t, (heads + 2 kv) hd]`)
    /// over the cached keys and values (`s0 + t` positions), into `out` (`[t, heads hd]`).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        qkv: &[f32],
        t: usize,
        s0: usize,
        keys: &[Vec<f32>],
        values: &[Vec<f32>],
        scale: f32,
        out: &mut [f32],
    ) {
        let hd = self.head_dim;
        let rep = self.heads / self.kv_heads;
        let q_width = self.heads * hd;
        let qkv_width = q_width + 2 * self.kv_heads * hd;
        let s = s0 + t;
        if t == 1 {
            self.decode_attention(qkv, s, keys, values, scale, out);
            return;
        }
        // One task per query head: [t, hd] each.
        let head = |h: usize| {
            let g = h / rep;
            let (k, v) = (&keys[g], &values[g]);
            debug_assert_eq!(k.len(), s * hd);
            let mut scores = vec![0f32; t * s];
            // scores[i, :] = q(head h, position i) · kᵀ.
            Gemm::new([t, s, hd]).scale(scale).run(
                &mut scores,
                s,
                &qkv[h * hd..],
                [qkv_width, 1],
                k,
                [1, hd],
            );
            for (i, row) in scores.chunks_exact_mut(s).enumerate() {
                // Position i sees keys 0..=s0 + i.
                let visible = s0 + i + 1;
                let max = row[..visible]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for v in &mut row[..visible] {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                let inv = 1.0 / sum;
                row[..visible].iter_mut().for_each(|v| *v *= inv);
                row[visible..].fill(0.0);
            }
            let mut o = vec![0f32; t * hd];
            Gemm::new([t, hd, s]).run(&mut o, hd, &scores, [s, 1], v, [hd, 1]);
            o
        };
        let heads: Vec<Vec<f32>> = (0..self.heads).into_par_iter().map(head).collect();
        for (h, o) in heads.iter().enumerate() {
            for i in 0..t {
                out[i * q_width + h * hd..i * q_width + (h + 1) * hd]
                    .copy_from_slice(&o[i * hd..(i + 1) * hd]);
            }
        }
    }

    /// Attention of one new position (the last of the `s` cached) on the spin pool, a task
    /// per query head.
    fn decode_attention(
        &self,
        qkv: &[f32],
        s: usize,
        keys: &[Vec<f32>],
        values: &[Vec<f32>],
        scale: f32,
        out: &mut [f32],
    ) {
        let hd = self.head_dim;
        let rep = self.heads / self.kv_heads;
        let slots: Vec<Mutex<Vec<f32>>> = (0..self.heads).map(|_| Mutex::default()).collect();
        self.pool.run(self.heads, &|head| {
            let g = head / rep;
            debug_assert_eq!(keys[g].len(), s * hd);
            let q = &qkv[head * hd..(head + 1) * hd];
            let o = head_attention(q, &keys[g], &values[g], scale);
            *slots[head].lock().unwrap_or_else(|e| e.into_inner()) = o;
        });
        for (head, slot) in slots.into_iter().enumerate() {
            out[head * hd..(head + 1) * hd]
                .copy_from_slice(&slot.into_inner().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// Continues `prompt` under `config` with a fresh cache: one pass over the prompt, then one
    /// position per step. `on_token` sees each new id (return `false` to stop); `decode`
    /// turns ids into text for stop strings.
    ///
    /// An empty prompt, a prompt longer than the context, or a bad `config` is an
    /// [`NlpError::Input`].
    pub fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        decode: &dyn Fn(&[u32]) -> String,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generation> {
        config.validate()?;
        if prompt.is_empty() {
            return Err(NlpError::Input(
                "generation: the prompt is empty (give at least one token)".into(),
            ));
        }
        if prompt.len() > self.max_positions {
            return Err(NlpError::Input(format!(
                "generation: the prompt has {} tokens, the model's context {}",
                prompt.len(),
                self.max_positions
            )));
        }
        let mut sampler = Sampler::new(config)?;
        let criteria = StopCriteria::new(config);
        let mut cache = LlamaCpuCache::new();
        let mut logits = self.forward(&mut cache, prompt, false)?;
        let mut ids = prompt.to_vec();
        loop {
            let next = sampler.next(&mut logits, &ids);
            ids.push(next);
            let generated = &ids[prompt.len()..];
            let stop = if !on_token(next) {
                Some(StopReason::Callback)
            } else if let Some(stop) = criteria.check(generated, decode) {
                Some(stop)
            } else if cache.len + 1 >= self.max_positions {
                Some(StopReason::MaxNewTokens)
            } else {
                None
            };
            if let Some(stop) = stop {
                return Ok(Generation {
                    ids: generated.to_vec(),
                    stop,
                });
            }
            logits = self.forward(&mut cache, &[next], false)?;
        }
    }
}
