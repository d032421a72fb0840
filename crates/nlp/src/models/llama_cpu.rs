//! Llama-family inference on the CPU without per-operation dispatch: the same forward pass
//! as [`Llama::forward_cached`](crate::models::Llama::forward_cached), on host memory, for
//! one sequence with its own cache.
//!
//! Decoding a token reads every weight once and does little else: on flex, each of the ~400
//! tensor operations of a step is its own dispatch and allocation, which costs more than the
//! arithmetic. Here the weights are packed once ([`LlamaCpu::from_llama`], `pack.rs`): the
//! query, key and value projections of a layer are one matrix, the gate and up projections
//! another, in f32 on kiln-kernels'
//! [`PackedRhs`](kiln_core::kernels::packed::PackedRhs) panels (`matrix.rs`: the storage
//! precisions and their products). A prompt (prefill) runs one multi-threaded GEMM per
//! projection on those panels and attention as two GEMMs per query head
//! ([`kiln_core::kernels::gemm::Gemm`]); a decode step runs each projection as one streamed
//! matrix-vector product over the same panels ([`kiln_core::kernels::gemv`]) on a spinning
//! thread team ([`SpinPool`]), attention over the cache a task per query head. Residuals and
//! biases are added to the products. A GGUF file's quantized matrices stream their blocks
//! for prompts of up to 64 tokens too (faster there than dequantizing for a GEMM).
//! `batch.rs`: one decode step for many sequences.
//!
//! [`Precision::Bf16`] keeps the weights row-major in bfloat16 and widens them as they are
//! read: a checkpoint stored in bf16 (most published Llama-family models) keeps exactly its
//! values, from half the bytes (the sums run in another order than the f32 path's, so the
//! logits agree within float rounding); other weights are rounded to bf16 first.
//!
//! The tests check [`LlamaCpu::forward`] against transformers' logits and against
//! [`Llama::forward_cached`](crate::models::Llama::forward_cached).

use std::sync::Mutex;

use kiln_core::kernels::attention::heads_attention;
use kiln_core::kernels::gemm::Gemm;
use kiln_core::kernels::gemv::Start;
use kiln_core::kernels::math::swiglu;
use kiln_core::kernels::quant::{Activations, BlockType};
use kiln_core::kernels::spin::SpinPool;
use rayon::prelude::*;

use crate::error::{NlpError, Result};
use crate::generation::{Generation, GenerationConfig, Sampler, StopCriteria, StopReason};

mod batch;
mod matrix;
pub(crate) mod pack;

pub(crate) use matrix::{Matrix, QuantWeights};

/// How [`LlamaCpu`] stores its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 (4 bytes a weight).
    #[default]
    F32,
    /// bfloat16 widened to f32 as read (2 bytes a weight): exact for bf16 checkpoints.
    Bf16,
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

/// `w * (x / sqrt(mean(x²) + eps))`, as transformers' `LlamaRMSNorm`.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * inv);
    }
}

impl LlamaCpu {
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

    /// How a GGUF model's products treat their activations: f32 (the default; the
    /// arithmetic of a dequantize-then-f32 forward pass) or quantized to 8 bits per block as
    /// llama.cpp quantizes them, with integer dot products (llama.cpp's arithmetic, and
    /// faster where widening the blocks to f32 is the bottleneck). With 8-bit activations
    /// the Q4_0, Q4_1 and Q8_0 matrices are interleaved 16 rows at a time
    /// (`kiln_kernels::quant::tiles`; an owned copy of those matrices, as many bytes) and
    /// every product with them, a decode step, a batch or a prompt, is one integer tile
    /// kernel; Q4_K and Q6_K matrices are multiplied in integers too (a prompt's in tiles
    /// unpacked as it runs). Prompts longer than 64 positions go through f32 tiles for the
    /// other types and for every matrix with f32 activations. No effect on f32 and bf16
    /// weights.
    pub fn with_activations(mut self, activations: Activations) -> Self {
        let matrices = self
            .layers
            .iter_mut()
            .flat_map(|l| [&mut l.qkv, &mut l.o, &mut l.gate_up, &mut l.down])
            .chain([&mut self.embed])
            .chain(self.head.as_mut());
        for m in matrices {
            m.set_activations(activations);
        }
        self
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
    ///
    /// # Errors
    /// [`NlpError::Input`] for an empty `tokens`, an id past the vocabulary, a context past the
    /// model's, or a cache filled by another model.
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
        self.init_cache(cache);
        let (e, hd) = (self.hidden, self.head_dim);
        let (q_width, kv_width) = (self.heads * hd, self.kv_heads * hd);
        let qkv_width = q_width + 2 * kv_width;
        let (cos, sin) = self.rotary(s0..s0 + t);
        let mut x = self.embed_rows(tokens);
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

    /// Gives an empty cache this model's layers and key/value heads.
    fn init_cache(&self, cache: &mut LlamaCpuCache) {
        if cache.shape.is_none() {
            cache.shape = Some([self.layers.len(), self.kv_heads, self.head_dim]);
            cache.keys = vec![vec![Vec::new(); self.kv_heads]; self.layers.len()];
            cache.values = cache.keys.clone();
        }
    }

    /// cos / sin of each position (`head_dim / 2` each), as transformers computes them in
    /// f32.
    fn rotary(&self, positions: impl Iterator<Item = usize>) -> (Vec<f32>, Vec<f32>) {
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in positions {
            for &f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        (cos, sin)
    }

    /// The embeddings of `tokens`, `[tokens, hidden]`.
    fn embed_rows(&self, tokens: &[u32]) -> Vec<f32> {
        let mut x = Vec::with_capacity(tokens.len() * self.hidden);
        for &id in tokens {
            x.extend(self.embed.row(id as usize));
        }
        x
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
            let o = heads_attention(q, hd, &keys[g], &values[g], scale);
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
    ///
    /// # Errors
    /// [`NlpError::Input`] for an empty prompt, one past the context, or a bad `config`.
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
