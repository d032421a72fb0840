//! A GGUF decoder as a trainable Burn [`Llama`]: every tensor dequantized to f32, the
//! `llama` architecture's permuted query and key rows put back in Hugging Face order, the
//! shape as a [`LlamaConfig`]. This is the way from a shipped GGUF model to fine-tuning in
//! Kiln (LoRA adapters, [`Llama::merge_lora`]) and back to a GGUF file
//! ([`Llama::write_gguf`]). For inference, [`LlamaCpu::from_gguf`](crate::models::LlamaCpu::from_gguf)
//! keeps the blocks as they are.

use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use serde_json::json;

use super::error::GgufError;
use super::export::permute_rows;
use super::model::{GgufDecoderConfig, rotary_frequencies};
use super::reader::GgufFile;
use crate::error::{NlpError, Result};
use crate::models::{Llama, LlamaConfig, RopeScaling};

/// The Hugging Face config of a GGUF decoder. Llama 3.1's rotary factors
/// (`rope_freqs.weight`) are not a config field: [`Llama::from_gguf`] sets them on the
/// model.
fn config_of(c: &GgufDecoderConfig, file: &GgufFile) -> Result<LlamaConfig> {
    let eos = match file.get("tokenizer.ggml.eos_token_id") {
        Some(_) => Some(json!(file.usize("tokenizer.ggml.eos_token_id")?)),
        None => None,
    };
    let config = LlamaConfig {
        model_type: c.architecture.clone(),
        vocab_size: c.vocab,
        hidden_size: c.hidden,
        intermediate_size: c.intermediate,
        num_hidden_layers: c.layers,
        num_attention_heads: c.heads,
        num_key_value_heads: Some(c.kv_heads),
        head_dim: Some(c.head_dim),
        max_position_embeddings: c.context,
        rms_norm_eps: c.eps,
        rope_theta: c.rope_base,
        rope_scaling: match c.rope_scaling {
            RopeScaling::Linear { factor } => {
                Some(json!({"rope_type": "linear", "factor": factor}))
            }
            _ => None,
        },
        rope_parameters: None,
        tie_word_embeddings: c.tied,
        attention_bias: c.architecture == "qwen2",
        mlp_bias: false,
        hidden_act: "silu".into(),
        sliding_window: None,
        use_sliding_window: false,
        eos_token_id: eos,
    };
    config.check().map_err(|reason| GgufError::Invalid {
        path: file.path().to_path_buf(),
        reason,
    })?;
    Ok(config)
}

/// Tensor `name` (`[rows, cols]`) dequantized to row-major f32.
pub(crate) fn dense(file: &GgufFile, name: &str, shape: [usize; 2]) -> Result<Vec<f32>> {
    let m = file.matrix(name, Some(shape))?;
    let mut out = vec![0f32; shape[0] * shape[1]];
    for (r, row) in out.chunks_exact_mut(shape[1]).enumerate() {
        m.dequantize_row(r, row);
    }
    Ok(out)
}

pub(crate) fn param<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Sets a linear layer from `[out, in]` rows (Burn keeps `[in, out]`) and a bias.
pub(crate) fn set_linear(
    l: &mut Linear,
    rows: &[f32],
    [d_out, d_in]: [usize; 2],
    bias: Option<Vec<f32>>,
    device: &Device,
) {
    let mut t = vec![0f32; rows.len()];
    for o in 0..d_out {
        for i in 0..d_in {
            t[i * d_out + o] = rows[o * d_in + i];
        }
    }
    l.weight = param(t, [d_in, d_out], device);
    l.bias = bias.map(|b| param(b, [d_out], device));
}

impl Llama {
    /// Reads the `llama` or `qwen2` decoder of a GGUF file into a Burn model on `device`,
    /// every weight dequantized to f32 (see the module docs).
    ///
    /// # Errors
    /// As [`LlamaCpu::from_gguf`](crate::models::LlamaCpu::from_gguf): an architecture
    /// other than `llama` and `qwen2`, a missing tensor or key, or one of another shape,
    /// named.
    pub fn from_gguf(path: impl AsRef<Path>, device: &Device) -> Result<(LlamaConfig, Self)> {
        let file = GgufFile::open(path)?;
        // Every tensor's shape is checked against the metadata on the mapped file (nothing
        // copied) before the Burn model of that shape is allocated.
        let (c, _) = crate::models::LlamaCpu::from_gguf(&file)?;
        let config = config_of(&c, &file)?;
        let mut model = config.init(device)?;
        let (h, hd) = (c.hidden, c.head_dim);
        let (q_rows, kv_rows) = (c.heads * hd, c.kv_heads * hd);
        let unpermute = c.architecture == "llama";
        let bias = |name: &str, n: usize| -> Result<Option<Vec<f32>>> {
            Ok(match c.architecture.as_str() {
                "qwen2" => Some(file.vector(name, Some(n))?),
                _ => None,
            })
        };
        for (i, layer) in model.layers.iter_mut().enumerate() {
            let blk = |n: &str| format!("blk.{i}.{n}");
            layer.input_layernorm.gamma =
                param(file.vector(&blk("attn_norm.weight"), Some(h))?, [h], device);
            layer.post_attention_layernorm.gamma =
                param(file.vector(&blk("ffn_norm.weight"), Some(h))?, [h], device);
            let at = &mut layer.self_attn;
            for (n, l, rows, heads) in [
                ("attn_q", &mut at.q_proj, q_rows, c.heads),
                ("attn_k", &mut at.k_proj, kv_rows, c.kv_heads),
                ("attn_v", &mut at.v_proj, kv_rows, 0),
            ] {
                let mut w = dense(&file, &blk(&format!("{n}.weight")), [rows, h])?;
                if unpermute && heads > 0 {
                    w = permute_rows(&w, heads, h, true);
                }
                set_linear(
                    l,
                    &w,
                    [rows, h],
                    bias(&blk(&format!("{n}.bias")), rows)?,
                    device,
                );
            }
            let o = dense(&file, &blk("attn_output.weight"), [h, q_rows])?;
            set_linear(&mut at.o_proj, &o, [h, q_rows], None, device);
            let mlp = &mut layer.mlp;
            for (n, l, shape) in [
                ("ffn_gate", &mut mlp.gate_proj, [c.intermediate, h]),
                ("ffn_up", &mut mlp.up_proj, [c.intermediate, h]),
                ("ffn_down", &mut mlp.down_proj, [h, c.intermediate]),
            ] {
                let w = dense(&file, &blk(&format!("{n}.weight")), shape)?;
                set_linear(l, &w, shape, None, device);
            }
        }
        model.embed_tokens.weight = param(
            dense(&file, "token_embd.weight", [c.vocab, h])?,
            [c.vocab, h],
            device,
        );
        model.norm.gamma = param(file.vector("output_norm.weight", Some(h))?, [h], device);
        if let Some(head) = &mut model.lm_head {
            let w = dense(&file, "output.weight", [c.vocab, h])?;
            set_linear(head, &w, [c.vocab, h], None, device);
        }
        model.inv_freq = rotary_frequencies(&file, &c).map_err(NlpError::from)?;
        Ok((config, model))
    }
}
