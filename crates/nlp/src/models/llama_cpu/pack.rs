//! Packing a Burn [`Llama`] for [`LlamaCpu`]: the weights copied to host memory, transposed
//! to `[out, in]` rows, the query, key and value projections stacked as one matrix and the
//! gate and up projections as another, in the chosen [`Precision`].

use std::path::Path;

use burn::prelude::*;
use kiln_core::kernels::spin::SpinPool;

use super::{Layer, LlamaCpu, Matrix, Precision, Rope};
use crate::error::{NlpError, Result};
use crate::models::llama::{Llama, LlamaConfig};

pub(crate) fn host<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| NlpError::Input(format!("reading the Llama weights ({what}): {e:?}")))
}

/// A weight as row-major `[out, in]` values, its shape, and its bias.
pub(crate) type Rows = (Vec<f32>, [usize; 2], Option<Vec<f32>>);

/// A Burn linear layer's weight (`[in, out]`) as row-major `[out, in]`, and its bias.
pub(crate) fn rows_of(l: &burn::nn::Linear, what: &str) -> Result<Rows> {
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

impl LlamaCpu {
    /// Copies and packs the weights of `model`. A model that still carries LoRA adapters is
    /// an error (merge them first with [`Llama::merge_lora`]).
    ///
    /// # Errors
    /// [`NlpError::Input`] for a model that still carries LoRA adapters.
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
    ///
    /// # Errors
    /// As [`Llama::from_folder`] and [`LlamaCpu::from_llama`].
    pub fn from_folder(dir: impl AsRef<Path>, precision: Precision) -> Result<(LlamaConfig, Self)> {
        let device =
            kiln_core::backend::device("cpu").map_err(|e| NlpError::Input(e.to_string()))?;
        let (config, model) = Llama::from_folder(dir, &device)?;
        Ok((config, Self::from_llama(&model, precision)?))
    }
}
