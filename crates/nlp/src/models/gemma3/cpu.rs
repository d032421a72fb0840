//! Gemma 3 encoding on the CPU without per-operation dispatch: the same pass as
//! [`Gemma3::encode`], on host memory, for sentence embeddings (EmbeddingGemma).
//!
//! As [`BertCpu`](crate::models::BertCpu): every product is one multi-threaded GEMM over
//! weights copied out once (the query, key and value projections side by side, the gate and
//! up projections side by side), the sequences packed without padding, attention one
//! sequence per task, norms, rotary embeddings (their angles tabled once a batch) and GeGLU
//! (kiln-kernels' vectorised `geglu`) row loops over buffers reused by every layer. The token embeddings stay in the Burn model (262,144 rows of 768: only the
//! rows of a batch are read, through [`Gemma3::embed_rows`]). The tests check
//! [`Gemma3Cpu::forward`] against [`Gemma3::encode`].

use kiln_core::kernels::gemm::Gemm;
use kiln_core::kernels::math::geglu;
use rayon::prelude::*;

use super::Gemma3;
use crate::error::{NlpError, Result};
use crate::models::bert::cpu::{Dense, dense, host, lane_sum, project};

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Vec<f32>,
    /// `[hidden, (heads + 2 kv) hd]`: query columns, key columns, value columns.
    qkv: Dense,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    o: Dense,
    post_attention_norm: Vec<f32>,
    pre_feedforward_norm: Vec<f32>,
    /// `[hidden, 2 ff]`: gate columns, then up columns.
    gate_up: Dense,
    down: Dense,
    post_feedforward_norm: Vec<f32>,
    sliding: bool,
}

/// A [`Gemma3`]'s layer weights on the host (see the module docs).
#[derive(Clone)]
pub struct Gemma3Cpu {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: usize,
    scale: f32,
    eps: f32,
    bidirectional: bool,
    max_positions: usize,
    global_inv_freq: Vec<f32>,
    local_inv_freq: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
}

impl std::fmt::Debug for Gemma3Cpu {
    /// The shape, not the weights.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemma3Cpu")
            .field("hidden", &self.hidden)
            .field("heads", &self.heads)
            .field("kv_heads", &self.kv_heads)
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// `1 + w` of a Gemma norm.
fn scale_of(n: &super::Gemma3RmsNorm) -> Result<Vec<f32>> {
    Ok(host(n.weight.val())?.into_iter().map(|w| 1.0 + w).collect())
}

/// Dense layers side by side: `[d_in, sum of d_out]`.
fn side_by_side(parts: &[Dense]) -> Dense {
    let d_in = parts[0].d_in;
    let d_out: usize = parts.iter().map(|p| p.d_out).sum();
    let mut w = Vec::with_capacity(d_in * d_out);
    for r in 0..d_in {
        for p in parts {
            w.extend_from_slice(&p.w[r * p.d_out..(r + 1) * p.d_out]);
        }
    }
    Dense {
        w,
        b: vec![0.0; d_out],
        d_in,
        d_out,
        int8: None,
    }
}

/// RMS norm of every row of `x` (width `g.len()`), scaled by `g` (already `1 + w`), in place.
fn rms_norm(x: &mut [f32], g: &[f32], eps: f32) {
    let h = g.len();
    x.par_chunks_mut(h).for_each(|row| norm_row(row, g, eps));
}

fn norm_row(row: &mut [f32], g: &[f32], eps: f32) {
    let ms = lane_sum(row.iter().map(|v| v * v)) / g.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for (v, s) in row.iter_mut().zip(g) {
        *v = *v * inv * s;
    }
}

/// `(cos, sin)` of every position below `len` at each frequency, `[len, half]` each: the
/// angles are computed once per batch, not once per token and head.
fn rope_table(len: usize, inv_freq: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(len * inv_freq.len());
    let mut sin = Vec::with_capacity(len * inv_freq.len());
    for p in 0..len {
        for &f in inv_freq {
            let (s, c) = (p as f32 * f).sin_cos();
            cos.push(c);
            sin.push(s);
        }
    }
    (cos, sin)
}

/// Rotates the halves of one head's vector by the angles of one position (`cos`, `sin`: its
/// row of the table).
fn rope(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = v.len() / 2;
    let (x1, x2) = v.split_at_mut(half);
    for (((a, b), &c), &s) in x1.iter_mut().zip(x2.iter_mut()).zip(cos).zip(sin) {
        let (u, w) = (*a, *b);
        *a = u * c - w * s;
        *b = w * c + u * s;
    }
}

impl Gemma3Cpu {
    /// Copies the layer weights of `model` to the host.
    ///
    /// # Errors
    /// When a weight cannot be read back as f32.
    pub fn from_gemma3(model: &Gemma3) -> Result<Self> {
        let mut layers = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            let at = &l.self_attn;
            let mlp = &l.mlp;
            layers.push(Layer {
                input_norm: scale_of(&l.input_layernorm)?,
                qkv: side_by_side(&[dense(&at.q_proj)?, dense(&at.k_proj)?, dense(&at.v_proj)?]),
                q_norm: scale_of(&at.q_norm)?,
                k_norm: scale_of(&at.k_norm)?,
                o: dense(&at.o_proj)?,
                post_attention_norm: scale_of(&l.post_attention_layernorm)?,
                pre_feedforward_norm: scale_of(&l.pre_feedforward_layernorm)?,
                gate_up: side_by_side(&[dense(&mlp.gate_proj)?, dense(&mlp.up_proj)?]),
                down: dense(&mlp.down_proj)?,
                post_feedforward_norm: scale_of(&l.post_feedforward_layernorm)?,
                sliding: l.sliding,
            });
        }
        Ok(Self {
            hidden: model.hidden_size(),
            heads: model.heads,
            kv_heads: model.kv_heads,
            head_dim: model.head_dim,
            window: model.window,
            scale: model.scale as f32,
            eps: model.norm.eps as f32,
            bidirectional: model.bidirectional,
            max_positions: model.max_positions(),
            global_inv_freq: model.global_inv_freq.clone(),
            local_inv_freq: model.local_inv_freq.clone(),
            layers,
            norm: scale_of(&model.norm)?,
        })
    }

    /// The model width.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The last hidden state of every token of `batch` (after the final norm), packed: the
    /// first value is `[N, hidden]` row-major (`N` the tokens of all sequences), the second
    /// `offsets` (`B + 1` entries). `model` is the one this was built from (its embedding
    /// rows are read from it).
    ///
    /// # Errors
    /// [`NlpError::Input`] for an empty sequence, one longer than the context or an id past
    /// the vocabulary.
    pub fn forward(&self, model: &Gemma3, batch: &[&[u32]]) -> Result<(Vec<f32>, Vec<usize>)> {
        let h = self.hidden;
        if let Some(s) = batch.iter().position(|s| s.is_empty()) {
            return Err(NlpError::Input(format!(
                "sequence {s} of the batch is empty"
            )));
        }
        if let Some(s) = batch.iter().find(|s| s.len() > self.max_positions) {
            return Err(NlpError::Input(format!(
                "a sequence of {} tokens is longer than the model's {} positions",
                s.len(),
                self.max_positions
            )));
        }
        let mut offsets = Vec::with_capacity(batch.len() + 1);
        offsets.push(0);
        for seq in batch {
            offsets.push(offsets.last().copied().unwrap_or(0) + seq.len());
        }
        let n = offsets[batch.len()];
        if n == 0 {
            return Ok((Vec::new(), offsets));
        }
        let ids: Vec<u32> = batch.iter().flat_map(|s| s.iter().copied()).collect();
        let mut x = model.embed_rows(&ids)?;
        let (heads, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let width = (heads + 2 * kv) * hd;
        let ff = self.layers.first().map_or(0, |l| l.down.d_in);
        let mut hbuf = vec![0.0f32; n * h];
        let mut qkv = vec![0.0f32; n * width];
        let mut ctx = vec![0.0f32; n * heads * hd];
        let mut attn = vec![0.0f32; n * h];
        let mut gate_up = vec![0.0f32; n * 2 * ff];
        let mut inner = vec![0.0f32; n * ff];
        // Each token's position within its sequence, and the rotary tables of both kinds.
        let positions: Vec<usize> = batch.iter().flat_map(|s| 0..s.len()).collect();
        let longest = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        let half = hd / 2;
        let global = rope_table(longest, &self.global_inv_freq);
        let local = rope_table(longest, &self.local_inv_freq);
        for layer in &self.layers {
            hbuf.copy_from_slice(&x);
            rms_norm(&mut hbuf, &layer.input_norm, self.eps);
            project(&hbuf, &layer.qkv, None, &mut qkv);
            let (cos, sin) = if layer.sliding { &local } else { &global };
            qkv.par_chunks_mut(width)
                .zip(positions.par_iter())
                .for_each(|(row, &p)| {
                    let (c, s) = (
                        &cos[p * half..(p + 1) * half],
                        &sin[p * half..(p + 1) * half],
                    );
                    let (q, rest) = row.split_at_mut(heads * hd);
                    for v in q.chunks_mut(hd) {
                        norm_row(v, &layer.q_norm, self.eps);
                        rope(v, c, s);
                    }
                    for v in rest[..kv * hd].chunks_mut(hd) {
                        norm_row(v, &layer.k_norm, self.eps);
                        rope(v, c, s);
                    }
                });
            self.attention(&qkv, &offsets, layer.sliding, &mut ctx);
            project(&ctx, &layer.o, None, &mut attn);
            rms_norm(&mut attn, &layer.post_attention_norm, self.eps);
            x.par_iter_mut().zip(&attn).for_each(|(x, a)| *x += a);
            hbuf.copy_from_slice(&x);
            rms_norm(&mut hbuf, &layer.pre_feedforward_norm, self.eps);
            project(&hbuf, &layer.gate_up, None, &mut gate_up);
            inner
                .par_chunks_mut(ff)
                .zip(gate_up.par_chunks(2 * ff))
                .for_each(|(o, gu)| {
                    let (g, u) = gu.split_at(ff);
                    geglu(o, g, u);
                });
            project(&inner, &layer.down, None, &mut attn);
            rms_norm(&mut attn, &layer.post_feedforward_norm, self.eps);
            x.par_iter_mut().zip(&attn).for_each(|(x, f)| *x += f);
        }
        rms_norm(&mut x, &self.norm, self.eps);
        Ok((x, offsets))
    }

    /// Attention of every sequence over its own tokens, one sequence per task: `qkv` is
    /// `[N, (heads + 2 kv) hd]` (normed and rotated), `ctx` `[N, heads hd]`.
    fn attention(&self, qkv: &[f32], offsets: &[usize], sliding: bool, ctx: &mut [f32]) {
        let (heads, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let width = (heads + 2 * kv) * hd;
        let out_width = heads * hd;
        let window = if sliding { self.window } else { usize::MAX };
        let mut parts = Vec::with_capacity(offsets.len().saturating_sub(1));
        let mut rest = ctx;
        for w in offsets.windows(2) {
            let (part, tail) = rest.split_at_mut((w[1] - w[0]) * out_width);
            parts.push((w[0], w[1] - w[0], part));
            rest = tail;
        }
        let rep = heads / kv;
        parts.into_par_iter().for_each(|(start, t, out)| {
            let rows = &qkv[start * width..(start + t) * width];
            let mut scores = vec![0.0f32; t * t];
            for head in 0..heads {
                let g = head / rep;
                let (qo, ko, vo) = (head * hd, (heads + g) * hd, (heads + kv + g) * hd);
                Gemm::new([t, t, hd]).scale(self.scale).run(
                    &mut scores,
                    t,
                    &rows[qo..],
                    [width, 1],
                    &rows[ko..],
                    [1, width],
                );
                for (i, row) in scores.chunks_mut(t).enumerate() {
                    for (j, s) in row.iter_mut().enumerate() {
                        if i.abs_diff(j) >= window || (!self.bidirectional && j > i) {
                            *s = f32::NEG_INFINITY;
                        }
                    }
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0;
                    for s in row.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|p| *p *= inv);
                }
                Gemm::new([t, hd, t]).run(
                    &mut out[head * hd..],
                    out_width,
                    &scores,
                    [t, 1],
                    &rows[vo..],
                    [width, 1],
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;

    /// The host pass equals the Burn pass on the bidirectional and the causal fixture
    /// shapes (random weights, norms away from 1), sequences of unequal lengths longer than
    /// the window.
    #[test]
    fn equals_the_burn_encode_on_real_tokens() {
        let device = kiln_core::backend::device("cpu").unwrap();
        for bidirectional in [true, false] {
            let text = format!(
                r#"{{"model_type": "gemma3_text", "vocab_size": 50, "hidden_size": 32,
                    "intermediate_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 64,
                    "sliding_window": 4, "query_pre_attn_scalar": 12,
                    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
                    "use_bidirectional_attention": {bidirectional}}}"#
            );
            let config: crate::models::Gemma3Config = serde_json::from_str(&text).unwrap();
            let mut model = config.init(&device).unwrap();
            // Norm weights away from 0 so that the (1 + w) shows.
            let noisy = |n: &mut super::super::Gemma3RmsNorm| {
                let len = n.weight.dims()[0];
                let w: Vec<f32> = (0..len).map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.1).collect();
                n.weight =
                    burn::module::Param::from_tensor(Tensor::from_floats(w.as_slice(), &device));
            };
            for l in &mut model.layers {
                noisy(&mut l.input_layernorm);
                noisy(&mut l.self_attn.q_norm);
                noisy(&mut l.post_feedforward_layernorm);
            }
            noisy(&mut model.norm);
            let cpu = Gemma3Cpu::from_gemma3(&model).unwrap();
            let seqs: Vec<Vec<u32>> = vec![(1..12).collect(), (20..26).collect(), vec![7]];
            let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            let (got, offsets) = cpu.forward(&model, &refs).unwrap();
            assert_eq!(offsets, vec![0, 11, 17, 18]);
            let h = 32;
            for (s, seq) in seqs.iter().enumerate() {
                let want = model
                    .encode(std::slice::from_ref(seq), &[vec![1; seq.len()]], &device)
                    .unwrap();
                let want: Vec<f32> = want.into_data().iter::<f32>().collect();
                let rows = &got[offsets[s] * h..offsets[s + 1] * h];
                let worst = rows
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-4,
                    "bidirectional {bidirectional}, sequence {s}: {worst}"
                );
            }
            let e = cpu.forward(&model, &[&[1, 2], &[]]).unwrap_err();
            assert!(e.to_string().contains("sequence 1"), "{e}");
            let e = cpu.forward(&model, &[&[1, 99]]).unwrap_err();
            assert!(e.to_string().contains("99"), "{e}");
        }
    }
}
