//! One decode step for several sequences at once ([`LlamaCpu::forward_batch`]), each with
//! its own cache and position: the step of continuous batching
//! ([`ContinuousBatch`](crate::generation::ContinuousBatch)).
//!
//! Every weight matrix is read once for all the sequences (the streamed products of
//! kiln-kernels take the rows of all of them), attention runs a task per sequence and query
//! head over that sequence's cache. Each sequence gets, bit for bit, the logits that
//! [`LlamaCpu::forward`] gives it alone: the products sum each row in one fixed order
//! whatever the rows beside it, and the norms, rotations and attention are the same
//! functions. Greedy generation is therefore token-identical in a batch and alone.

use std::sync::Mutex;

use kiln_core::kernels::gemv::Start;
use kiln_core::kernels::math::swiglu;

use super::{LlamaCpu, LlamaCpuCache, heads_attention, rms_norm};
use crate::error::{NlpError, Result};

impl LlamaCpu {
    /// Bytes of keys and values one position of one sequence holds in its cache (f32).
    pub fn kv_bytes_per_position(&self) -> usize {
        self.layers.len() * self.kv_heads * self.head_dim * 2 * std::mem::size_of::<f32>()
    }

    /// One new token for each sequence: `tokens[i]` extends `caches[i]`; the logits of each
    /// sequence's new position, `[sequences, vocab]` (see the module docs).
    ///
    /// No sequences, a token count other than the cache count, an id past the vocabulary, a
    /// sequence at the model's context, or a cache filled by a model of another shape is an
    /// [`NlpError::Input`] naming the sequence; nothing is changed then.
    ///
    /// # Errors
    /// [`NlpError::Input`] for no sequences, a token count other than the cache count, an id past
    /// the vocabulary, a context past the model's, or a cache of another model.
    pub fn forward_batch(
        &self,
        caches: &mut [&mut LlamaCpuCache],
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        self.check_batch(caches, tokens)?;
        let n = tokens.len();
        for cache in caches.iter_mut() {
            self.init_cache(cache);
        }
        let (e, hd) = (self.hidden, self.head_dim);
        let (q_width, kv_width) = (self.heads * hd, self.kv_heads * hd);
        let qkv_width = q_width + 2 * kv_width;
        // Each sequence's new position, as `forward` computes them.
        let (cos, sin) = self.rotary(caches.iter().map(|c| c.len));
        let mut x = self.embed_rows(tokens);
        let mut h = vec![0f32; n * e];
        let mut qkv = vec![0f32; n * qkv_width];
        let mut att = vec![0f32; n * q_width];
        let inter = self.intermediate;
        let mut gu = vec![0f32; n * 2 * inter];
        let mut act = vec![0f32; n * inter];
        let scale = 1.0 / (hd as f32).sqrt();
        for (l, layer) in self.layers.iter().enumerate() {
            for (xr, hr) in x.chunks_exact(e).zip(h.chunks_exact_mut(e)) {
                rms_norm(xr, &layer.attn_norm, self.eps, hr);
            }
            let start = layer.qkv_bias.as_deref().map_or(Start::Zero, Start::Bias);
            layer.qkv.apply_rows(&self.pool, &h, n, &mut qkv, start);
            self.rotate(&mut qkv, &cos, &sin);
            for (row, cache) in qkv.chunks_exact(qkv_width).zip(caches.iter_mut()) {
                for g in 0..self.kv_heads {
                    let k = &row[q_width + g * hd..q_width + (g + 1) * hd];
                    let v = &row[q_width + kv_width + g * hd..q_width + kv_width + (g + 1) * hd];
                    cache.keys[l][g].extend_from_slice(k);
                    cache.values[l][g].extend_from_slice(v);
                }
            }
            self.batch_attention(&qkv, caches, l, scale, &mut att);
            layer
                .o
                .apply_rows(&self.pool, &att, n, &mut x, Start::Accumulate);
            for (xr, hr) in x.chunks_exact(e).zip(h.chunks_exact_mut(e)) {
                rms_norm(xr, &layer.mlp_norm, self.eps, hr);
            }
            layer
                .gate_up
                .apply_rows(&self.pool, &h, n, &mut gu, Start::Zero);
            for (g, a) in gu.chunks_exact(2 * inter).zip(act.chunks_exact_mut(inter)) {
                let (gate, up) = g.split_at(inter);
                swiglu(a, gate, up);
            }
            layer
                .down
                .apply_rows(&self.pool, &act, n, &mut x, Start::Accumulate);
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        let mut normed = vec![0f32; n * e];
        for (xr, o) in x.chunks_exact(e).zip(normed.chunks_exact_mut(e)) {
            rms_norm(xr, &self.norm, self.eps, o);
        }
        let mut logits = vec![0f32; n * self.vocab];
        let head = self.head.as_ref().unwrap_or(&self.embed);
        head.apply_rows(&self.pool, &normed, n, &mut logits, Start::Zero);
        Ok(logits)
    }

    /// The errors of [`LlamaCpu::forward_batch`], before anything changes.
    fn check_batch(&self, caches: &[&mut LlamaCpuCache], tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() || tokens.len() != caches.len() {
            return Err(NlpError::Input(format!(
                "llama (cpu) batch: {} tokens for {} caches (one each, at least one)",
                tokens.len(),
                caches.len()
            )));
        }
        let shape = [self.layers.len(), self.kv_heads, self.head_dim];
        for (i, (cache, &token)) in caches.iter().zip(tokens).enumerate() {
            if let Some(s) = cache.shape.filter(|&s| s != shape) {
                return Err(NlpError::Input(format!(
                    "llama (cpu) batch: sequence {i}'s cache is of [layers, kv heads, head dim] \
                     {s:?}, the model's {shape:?}"
                )));
            }
            if token as usize >= self.vocab {
                return Err(NlpError::Input(format!(
                    "llama (cpu) batch: sequence {i}'s token id {token} past the vocabulary of {}",
                    self.vocab
                )));
            }
            if cache.len + 1 > self.max_positions {
                return Err(NlpError::Input(format!(
                    "llama (cpu) batch: sequence {i} would hold {} positions, the model's \
                     context {}",
                    cache.len + 1,
                    self.max_positions
                )));
            }
        }
        Ok(())
    }

    /// Attention of each sequence's new position over its cache at layer `l`: a task per
    /// sequence and key/value head on the spin pool (its query heads reading the cache
    /// once), each head's values those of [`LlamaCpu::forward`]'s decode step.
    fn batch_attention(
        &self,
        qkv: &[f32],
        caches: &[&mut LlamaCpuCache],
        l: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let hd = self.head_dim;
        let rep = self.heads / self.kv_heads;
        let q_width = self.heads * hd;
        let qkv_width = q_width + 2 * self.kv_heads * hd;
        let group = rep * hd;
        let tasks = caches.len() * self.kv_heads;
        let slots: Vec<Mutex<Vec<f32>>> = (0..tasks).map(|_| Mutex::default()).collect();
        self.pool.run(tasks, &|task| {
            let (i, g) = (task / self.kv_heads, task % self.kv_heads);
            let q = &qkv[i * qkv_width + g * group..i * qkv_width + (g + 1) * group];
            let (keys, values) = (&caches[i].keys[l][g], &caches[i].values[l][g]);
            let o = heads_attention(q, hd, keys, values, scale);
            *slots[task].lock().unwrap_or_else(|e| e.into_inner()) = o;
        });
        for (task, slot) in slots.into_iter().enumerate() {
            let (i, g) = (task / self.kv_heads, task % self.kv_heads);
            out[i * q_width + g * group..i * q_width + (g + 1) * group]
                .copy_from_slice(&slot.into_inner().unwrap_or_else(|e| e.into_inner()));
        }
    }
}
