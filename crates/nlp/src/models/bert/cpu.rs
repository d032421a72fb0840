//! BERT inference on the CPU without per-operation dispatch: the same forward pass as
//! [`Bert::forward`], on host memory.
//!
//! On flex, one encoder layer is some thirty tensor operations, each its own pass over memory,
//! its own allocation and its own thread hand-off; at sentence-embedding sizes (a batch of 32
//! sentences of 26 tokens) those cost as much as the matrix products. Here every product is
//! one multi-threaded GEMM from the `gemm` crate (the one flex uses, AVX-512 where the CPU has
//! it) through Kiln's checked wrapper ([`kiln_core::kernels::gemm::Gemm`]), biases and residuals are folded into the products (the output buffer starts as
//! `bias + residual` and the product is accumulated onto it), attention runs one sequence per
//! task, and layer norm and GELU are row loops over buffers reused by every layer. The
//! sequences are packed without padding (a batch of unequal lengths costs its real tokens:
//! 11% less work than padding on random batches of the benchmark sentences).
//!
//! [`BertCpu::from_bert`] copies the weights out of a [`Bert`] once; the tests check
//! [`BertCpu::forward`] against [`Bert::forward`].

use burn::prelude::*;
use kiln_core::kernels::gemm::{Gemm, Parallelism};
use kiln_core::kernels::gemv::Start;
use kiln_core::kernels::quant::tiles::{TILE_ROWS, interleave};
use kiln_core::kernels::quant::{Activations, BlockType, QuantMatrix, matmul_quant_with, quantize};
use rayon::prelude::*;

use super::Bert;
use crate::error::{NlpError, Result};

/// A dense layer's weights on the host: `w` is `[d_in, d_out]` row-major.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    pub(crate) w: Vec<f32>,
    pub(crate) b: Vec<f32>,
    pub(crate) d_in: usize,
    pub(crate) d_out: usize,
    /// With [`BertCpu::with_int8`]: `wᵀ` (`[d_out, d_in]`) quantized to `Q8_0` (a scale per
    /// 32 inputs of each output) and interleaved 16 outputs at a time
    /// (`kiln_kernels::quant::tiles`).
    pub(crate) int8: Option<Vec<u8>>,
}

impl Dense {
    /// `wᵀ` as `Q8_0` tiles; `None` when `d_in` is not a multiple of 32 or `d_out` of 16
    /// (such a layer stays f32).
    fn int8_tiles(&self) -> Result<Option<Vec<u8>>> {
        let (k, n) = (self.d_in, self.d_out);
        if !k.is_multiple_of(32) || !n.is_multiple_of(TILE_ROWS) {
            return Ok(None);
        }
        let mut t = vec![0f32; k * n];
        for (r, row) in self.w.chunks_exact(n).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                t[c * k + r] = v;
            }
        }
        let mut bytes = Vec::new();
        quantize(BlockType::Q8_0, &t, &mut bytes)
            .map_err(|e| NlpError::Input(format!("BertCpu int8: a [{k}, {n}] layer: {e}")))?;
        Ok(interleave(BlockType::Q8_0, &bytes, [n, k]))
    }
}

/// Layer-norm scale and shift.
#[derive(Debug, Clone)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Layer {
    /// Query, key and value side by side: `[H, 3H]`.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    inter: Dense,
    out: Dense,
    out_norm: Norm,
    exact_gelu: bool,
}

/// A [`Bert`]'s weights on the host, for fast CPU inference.
#[derive(Clone)]
pub struct BertCpu {
    hidden: usize,
    heads: usize,
    eps: f32,
    word: Vec<f32>,
    position: Vec<f32>,
    /// Row 0 of the token-type table (every token is type 0, as in `Bert::forward`).
    token_type: Vec<f32>,
    max_positions: usize,
    embed_norm: Norm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for BertCpu {
    /// The shape, not the 22 million weights.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertCpu")
            .field("hidden", &self.hidden)
            .field("heads", &self.heads)
            .field("layers", &self.layers.len())
            .field("vocab", &(self.word.len() / self.hidden.max(1)))
            .field("max_positions", &self.max_positions)
            .finish()
    }
}

pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| NlpError::Input(format!("reading weights to the host: {e:?}")))
}

pub(crate) fn dense(l: &burn::nn::Linear) -> Result<Dense> {
    let [d_in, d_out] = l.weight.dims();
    let b = match &l.bias {
        Some(b) => host(b.val())?,
        None => vec![0.0; d_out],
    };
    Ok(Dense {
        w: host(l.weight.val())?,
        b,
        d_in,
        d_out,
        int8: None,
    })
}

fn norm(n: &burn::nn::LayerNorm) -> Result<Norm> {
    let gamma = host(n.gamma.val())?;
    let beta = match &n.beta {
        Some(b) => host(b.val())?,
        None => vec![0.0; gamma.len()],
    };
    Ok(Norm { gamma, beta })
}

impl BertCpu {
    /// Copies the weights of `bert` to the host.
    ///
    /// An encoder that still carries LoRA adapters is an error (merge them first with
    /// [`Bert::merge_lora`]): the copy would leave them out.
    ///
    /// # Errors
    /// [`NlpError::Input`] for an encoder that still carries LoRA adapters.
    pub fn from_bert(bert: &Bert) -> Result<Self> {
        if bert.has_lora() {
            return Err(NlpError::Input(
                "BertCpu: the encoder has LoRA adapters; merge them first (Bert::merge_lora)"
                    .into(),
            ));
        }
        let e = &bert.embeddings;
        let [max_positions, hidden] = e.position_embeddings.weight.dims();
        let mut layers = Vec::with_capacity(bert.encoder.layer.len());
        for l in &bert.encoder.layer {
            let sa = &l.attention.self_attention;
            let (q, k, v) = (dense(&sa.query)?, dense(&sa.key)?, dense(&sa.value)?);
            // [H, H] x 3 -> [H, 3H]: row r is q's row r, then k's, then v's.
            let mut w = Vec::with_capacity(hidden * 3 * hidden);
            for r in 0..hidden {
                for m in [&q, &k, &v] {
                    w.extend_from_slice(&m.w[r * hidden..(r + 1) * hidden]);
                }
            }
            let b = [q.b, k.b, v.b].concat();
            layers.push(Layer {
                qkv: Dense {
                    w,
                    b,
                    d_in: hidden,
                    d_out: 3 * hidden,
                    int8: None,
                },
                attn_out: dense(&l.attention.output.dense)?,
                attn_norm: norm(&l.attention.output.layer_norm)?,
                inter: dense(&l.intermediate.dense)?,
                out: dense(&l.output.dense)?,
                out_norm: norm(&l.output.layer_norm)?,
                exact_gelu: l.intermediate.exact_gelu,
            });
        }
        let token_type = host(e.token_type_embeddings.weight.val())?[..hidden].to_vec();
        Ok(Self {
            hidden,
            heads: bert
                .encoder
                .layer
                .first()
                .map_or(1, |l| l.attention.self_attention.heads),
            eps: bert.layer_norm_eps as f32,
            word: host(e.word_embeddings.weight.val())?,
            position: host(e.position_embeddings.weight.val())?,
            token_type,
            max_positions,
            embed_norm: norm(&e.layer_norm)?,
            layers,
        })
    }

    /// The width of the token vectors.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// With 8-bit products: every dense layer's weights quantized to `Q8_0` (a scale per 32
    /// inputs of each output, finer than a scale per output) and interleaved into tiles of 16
    /// outputs, and its inputs quantized per 32 values of each token when multiplied, with
    /// integer dot products (`matmul_quant_with`, AVX-512 VNNI where the CPU has it).
    /// Attention, layer norms and GELU stay f32. A layer whose widths are not multiples of
    /// 32 (inputs) and 16 (outputs) stays f32.
    ///
    /// # Errors
    /// A non-finite weight (it has no 8-bit value).
    pub fn with_int8(mut self) -> Result<Self> {
        for l in &mut self.layers {
            for d in [&mut l.qkv, &mut l.attn_out, &mut l.inter, &mut l.out] {
                d.int8 = d.int8_tiles()?;
            }
        }
        Ok(self)
    }

    /// Whether the dense layers multiply in 8 bits ([`BertCpu::with_int8`]).
    pub fn is_int8(&self) -> bool {
        self.layers.iter().any(|l| {
            [&l.qkv, &l.attn_out, &l.inter, &l.out]
                .iter()
                .any(|d| d.int8.is_some())
        })
    }

    /// Contextual vectors of the last layer for `batch`, packed without padding: sequence
    /// `s`'s tokens are rows `offsets[s]..offsets[s + 1]` of the `[sum of lengths, H]`
    /// row-major output, and the second value is `offsets` (`B + 1` entries). No work is spent
    /// on padding: a batch of unequal lengths costs what its tokens cost (the server's
    /// batches mix requests of any length).
    ///
    /// # Errors
    /// [`NlpError::Input`] for an empty sequence, one past the position table or an id past the
    /// vocabulary.
    pub fn forward(&self, batch: &[&[u32]]) -> Result<(Vec<f32>, Vec<usize>)> {
        let h = self.hidden;
        if let Some(s) = batch.iter().position(|s| s.is_empty()) {
            return Err(NlpError::Input(format!(
                "sequence {s} of the batch is empty (a BERT input has at least [CLS] and [SEP])"
            )));
        }
        let t = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if t == 0 {
            return Ok((Vec::new(), vec![0]));
        }
        if t > self.max_positions {
            return Err(NlpError::Input(format!(
                "a sequence of {t} tokens is longer than the model's {} positions",
                self.max_positions
            )));
        }
        let vocab = self.word.len() / h;
        let mut offsets = Vec::with_capacity(batch.len() + 1);
        offsets.push(0);
        for seq in batch {
            offsets.push(offsets.last().copied().unwrap_or(0) + seq.len());
        }
        let n = offsets[batch.len()];
        // Embeddings: word + position + type, then layer norm.
        let mut x = vec![0.0f32; n * h];
        for (s, seq) in batch.iter().enumerate() {
            for (p, &id) in seq.iter().enumerate() {
                let id = id as usize;
                if id >= vocab {
                    return Err(NlpError::Input(format!(
                        "token id {id} is outside the vocabulary of {vocab}"
                    )));
                }
                let r = offsets[s] + p;
                let row = &mut x[r * h..(r + 1) * h];
                let (w, pos) = (&self.word[id * h..], &self.position[p * h..]);
                for c in 0..h {
                    row[c] = w[c] + pos[c] + self.token_type[c];
                }
            }
        }
        layer_norm(&mut x, h, &self.embed_norm, self.eps);

        let inter_width = self.layers.first().map_or(0, |l| l.inter.d_out);
        let mut qkv = vec![0.0f32; n * 3 * h];
        let mut ctx = vec![0.0f32; n * h];
        let mut x1 = vec![0.0f32; n * h];
        let mut inner = vec![0.0f32; n * inter_width];
        for layer in &self.layers {
            project(&x, &layer.qkv, None, &mut qkv);
            self.attention(&qkv, &offsets, &mut ctx);
            project(&ctx, &layer.attn_out, Some(&x), &mut x1);
            layer_norm(&mut x1, h, &layer.attn_norm, self.eps);
            project(&x1, &layer.inter, None, &mut inner);
            if layer.exact_gelu {
                kiln_core::ops::gelu_erf_in_place(&mut inner);
            } else {
                inner.par_chunks_mut(16 * 1024).for_each(|c| {
                    for v in c {
                        let z = *v;
                        *v = 0.5 * z * (1.0 + (0.797_884_6 * (z + 0.044_715 * z * z * z)).tanh());
                    }
                });
            }
            project(&inner, &layer.out, Some(&x1), &mut x);
            layer_norm(&mut x, h, &layer.out_norm, self.eps);
        }
        Ok((x, offsets))
    }

    /// Multi-head attention of every sequence over its own tokens, one sequence per task;
    /// `qkv` is `[N, 3H]`, `ctx` `[N, H]`, sequence `s` at rows `offsets[s]..offsets[s + 1]`.
    fn attention(&self, qkv: &[f32], offsets: &[usize], ctx: &mut [f32]) {
        let h = self.hidden;
        let heads = self.heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        // Disjoint slices of `ctx`, one per sequence.
        let mut parts = Vec::with_capacity(offsets.len().saturating_sub(1));
        let mut rest = ctx;
        for w in offsets.windows(2) {
            let (part, tail) = rest.split_at_mut((w[1] - w[0]) * h);
            parts.push((w[0], w[1] - w[0], part));
            rest = tail;
        }
        parts.into_par_iter().for_each(|(start, len, out)| {
            let rows = &qkv[start * 3 * h..(start + len) * 3 * h];
            attend(rows, out, len, len, h, heads, scale);
        });
    }
}

/// `rows`: the sequence's `[T, 3H]` query/key/value rows; `out`: its `[T, H]` context rows.
/// Keys at `len` and beyond (padding) get no weight.
fn attend(rows: &[f32], out: &mut [f32], len: usize, t: usize, h: usize, heads: usize, scale: f32) {
    let d = h / heads;
    let mut scores = vec![0.0f32; t * len];
    for head in 0..heads {
        let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
        // scores = scale * Q K^T: [t, d] x [d, len], K read transposed through its strides.
        Gemm::new([t, len, d]).scale(scale).run(
            &mut scores,
            len,
            &rows[qo..],
            [3 * h, 1],
            &rows[ko..],
            [1, 3 * h],
        );
        for row in scores.chunks_mut(len) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for sc in row.iter_mut() {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|p| *p *= inv);
        }
        // context = P V: [t, len] x [len, d], written into this head's columns of `out`.
        Gemm::new([t, d, len]).run(
            &mut out[head * d..],
            h,
            &scores,
            [len, 1],
            &rows[vo..],
            [3 * h, 1],
        );
    }
}

/// `out = x W + b (+ residual)`: `out` is first filled with `b` (plus `residual`), then the
/// product is accumulated onto it by one multi-threaded GEMM.
pub(crate) fn project(x: &[f32], dense: &Dense, residual: Option<&[f32]>, out: &mut [f32]) {
    let (k, n) = (dense.d_in, dense.d_out);
    let m = x.len() / k;
    let out = &mut out[..m * n];
    if let (Some(tiles), None) = (&dense.int8, residual) {
        // The bias written with the products (no pass filling `out` first).
        let w = QuantMatrix::tiled(BlockType::Q8_0, tiles, [n, k])
            .expect("the tiles are made for this layer's shape");
        matmul_quant_with(&[w], x, m, out, Start::Bias(&dense.b), Activations::Int8);
        return;
    }
    match residual {
        Some(r) => out
            .par_chunks_mut(n)
            .zip(r.par_chunks(n))
            .for_each(|(o, r)| {
                for ((o, r), b) in o.iter_mut().zip(r).zip(&dense.b) {
                    *o = r + b;
                }
            }),
        None => out
            .par_chunks_mut(n)
            .for_each(|o| o.copy_from_slice(&dense.b)),
    }
    if let Some(tiles) = &dense.int8 {
        let w = QuantMatrix::tiled(BlockType::Q8_0, tiles, [n, k])
            .expect("the tiles are made for this layer's shape");
        matmul_quant_with(&[w], x, m, out, Start::Accumulate, Activations::Int8);
        return;
    }
    Gemm::new([m, n, k])
        .accumulate(true)
        .parallelism(Parallelism::Rayon(0))
        .run(out, n, x, [k, 1], &dense.w, [n, 1]);
}

/// Layer norm of every row of `x` (width `h`), in place.
fn layer_norm(x: &mut [f32], h: usize, norm: &Norm, eps: f32) {
    x.par_chunks_mut(h).for_each(|row| {
        let mean = lane_sum(row.iter().copied()) / h as f32;
        let var = lane_sum(row.iter().map(|v| (v - mean) * (v - mean))) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
            *v = (*v - mean) * inv * g + b;
        }
    });
}

/// A sum kept in 8 independent lanes, which the compiler can vectorise (a plain running sum
/// fixes the order of additions, and so cannot be).
#[inline(always)]
pub(crate) fn lane_sum(values: impl Iterator<Item = f32>) -> f32 {
    let mut lanes = [0.0f32; 8];
    for (i, v) in values.enumerate() {
        lanes[i % 8] += v;
    }
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::BertConfig;

    #[test]
    fn equals_the_burn_forward_on_real_tokens() {
        let device = kiln_core::backend::device("cpu").unwrap();
        device.seed(7);
        for act in ["gelu", "gelu_new"] {
            let config: BertConfig = serde_json::from_str(&format!(
                r#"{{"vocab_size": 40, "hidden_size": 24, "num_hidden_layers": 2,
                    "num_attention_heads": 3, "intermediate_size": 40,
                    "max_position_embeddings": 16, "hidden_act": "{act}"}}"#
            ))
            .unwrap();
            let bert = config.init(&device);
            let cpu = BertCpu::from_bert(&bert).unwrap();
            let seqs: [&[u32]; 3] = [&[2, 5, 9, 3], &[2, 7, 3], &[2, 11, 12, 13, 14, 3]];
            let (ours, offsets) = cpu.forward(&seqs).unwrap();
            assert_eq!(offsets, [0, 4, 7, 13]);
            assert_eq!(ours.len(), 13 * 24);
            let t = 6;
            let (ids, mask) = crate::models::pooling::pad_batch(&seqs, 0, &device);
            let theirs: Vec<f32> = bert
                .forward(ids, mask)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            for (s, seq) in seqs.iter().enumerate() {
                for p in 0..seq.len() {
                    for c in 0..24 {
                        let i = (s * t + p) * 24 + c;
                        let o = (offsets[s] + p) * 24 + c;
                        assert!(
                            (ours[o] - theirs[i]).abs() < 2e-5,
                            "{act}: sequence {s}, token {p}, unit {c}: {} vs {}",
                            ours[o],
                            theirs[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn int8_products_stay_near_the_f32_forward() {
        // Widths of whole blocks (inputs 64 and 128, outputs multiples of 16): every dense
        // layer in 8 bits. Each token's vector within a few percent of f32's, cosine > 0.999.
        let device = kiln_core::backend::device("cpu").unwrap();
        device.seed(11);
        let config: BertConfig = serde_json::from_str(
            r#"{"vocab_size": 40, "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 128,
                "max_position_embeddings": 16}"#,
        )
        .unwrap();
        let bert = config.init(&device);
        let f32s = BertCpu::from_bert(&bert).unwrap();
        let int8 = f32s.clone().with_int8().unwrap();
        assert!(int8.is_int8() && !f32s.is_int8());
        let seqs: [&[u32]; 3] = [&[2, 5, 9, 3], &[2, 7, 3], &[2, 11, 12, 13, 14, 3]];
        let (want, _) = f32s.forward(&seqs).unwrap();
        let (got, _) = int8.forward(&seqs).unwrap();
        assert_ne!(got, want, "the 8-bit path ran");
        for (g, w) in got.chunks_exact(64).zip(want.chunks_exact(64)) {
            let dot: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let cosine = dot / (norm(g) * norm(w));
            assert!(cosine > 0.999, "cosine {cosine}");
        }
        // A layer of widths off the blocks stays f32: the same values as without int8.
        let small: BertConfig = serde_json::from_str(
            r#"{"vocab_size": 40, "hidden_size": 24, "num_hidden_layers": 1,
                "num_attention_heads": 3, "intermediate_size": 40,
                "max_position_embeddings": 16}"#,
        )
        .unwrap();
        let cpu = BertCpu::from_bert(&small.init(&device)).unwrap();
        let as_int8 = cpu.clone().with_int8().unwrap();
        assert!(!as_int8.is_int8());
        assert_eq!(as_int8.forward(&seqs).unwrap(), cpu.forward(&seqs).unwrap());
    }

    #[test]
    fn bad_ids_and_lengths_are_errors() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let config: BertConfig = serde_json::from_str(
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 2, "intermediate_size": 8,
                "max_position_embeddings": 4}"#,
        )
        .unwrap();
        let cpu = BertCpu::from_bert(&config.init(&device)).unwrap();
        assert_eq!(
            format!("{cpu:?}"),
            "BertCpu { hidden: 8, heads: 2, layers: 1, vocab: 10, max_positions: 4 }"
        );
        let err = cpu.forward(&[&[1, 10]]).unwrap_err().to_string();
        assert!(err.contains("token id 10"), "{err}");
        let err = cpu.forward(&[&[1, 2, 3, 4, 5]]).unwrap_err().to_string();
        assert!(err.contains("5 tokens"), "{err}");
        let err = cpu.forward(&[&[1, 2], &[]]).unwrap_err().to_string();
        assert!(err.contains("sequence 1"), "{err}");
        assert_eq!(cpu.forward(&[]).unwrap(), (Vec::new(), vec![0]));
    }
}
