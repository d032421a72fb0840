//! A GGUF file of architecture `gemma3` (llama.cpp's converter of Gemma 3 text models) as a
//! Burn [`Gemma3`], every tensor dequantized to f32.
//!
//! What the file leaves to convention is filled in as llama.cpp's `llama-model.cpp` does for
//! `LLM_ARCH_GEMMA3`: every sixth layer global, the others sliding
//! (`gemma3.attention.sliding_window`), the sliding layers' rotary base 10,000 (the global
//! one is `gemma3.rope.freq_base`, scaled by `gemma3.rope.scaling.factor` when the type is
//! `linear`), queries scaled by the head size's inverse square root, the output head tied
//! to `token_embd` unless `output.weight` exists. The converter stores every RMSNorm weight
//! as `1 + w` and leaves the query and key rows in Hugging Face order (Gemma's rotary
//! embedding turns halves, llama.cpp's NEOX mode), so the norms lose the 1 here and nothing
//! is permuted. Tensor names: `attn_norm` (input), `post_attention_norm`, `ffn_norm`
//! (pre-feed-forward), `post_ffw_norm`, `attn_q_norm`, `attn_k_norm`.

use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use serde_json::json;

use super::error::GgufError;
use super::import::{dense, param, set_linear};
use super::reader::GgufFile;
use crate::error::Result;
use crate::models::{Gemma3, Gemma3Config};

/// The Hugging Face config of a `gemma3` GGUF file (see the module docs).
///
/// # Errors
/// A missing or ill-typed key, an architecture other than `gemma3`, or sizes the model
/// cannot take, named.
pub fn gemma3_config(file: &GgufFile) -> Result<Gemma3Config> {
    let arch = file.str("general.architecture")?;
    if arch != "gemma3" {
        return Err(GgufError::Invalid {
            path: file.path().to_path_buf(),
            reason: format!("architecture '{arch}' is not gemma3"),
        }
        .into());
    }
    let key = |k: &str| format!("gemma3.{k}");
    let opt_usize = |k: &str| -> Result<Option<usize>> {
        Ok(match file.get(&key(k)) {
            Some(_) => Some(file.usize(&key(k))?),
            None => None,
        })
    };
    let opt_f64 = |k: &str| -> Result<Option<f64>> {
        Ok(match file.get(&key(k)) {
            Some(_) => Some(file.f64(&key(k))?),
            None => None,
        })
    };
    let heads = file.usize(&key("attention.head_count"))?;
    let hidden = file.usize(&key("embedding_length"))?;
    let layers = file.usize(&key("block_count"))?;
    let head_dim = opt_usize("attention.key_length")?.unwrap_or(hidden / heads.max(1));
    let vocab = file
        .tensor("token_embd.weight")
        .and_then(|t| t.matrix_shape())
        .map(|[rows, _]| rows)
        .ok_or_else(|| GgufError::MissingTensor {
            path: file.path().to_path_buf(),
            tensor: "token_embd.weight".into(),
        })?;
    let scaling = match file.get(&key("rope.scaling.type")) {
        Some(_) if file.str(&key("rope.scaling.type"))? == "linear" => Some(json!({
            "rope_type": "linear",
            "factor": opt_f64("rope.scaling.factor")?.unwrap_or(1.0),
        })),
        Some(_) if file.str(&key("rope.scaling.type"))? != "none" => {
            return Err(GgufError::Invalid {
                path: file.path().to_path_buf(),
                reason: format!(
                    "{}: '{}' is not supported (linear, none)",
                    key("rope.scaling.type"),
                    file.str(&key("rope.scaling.type"))?
                ),
            }
            .into());
        }
        _ => None,
    };
    let eos = match file.get("tokenizer.ggml.eos_token_id") {
        Some(_) => Some(json!(file.usize("tokenizer.ggml.eos_token_id")?)),
        None => None,
    };
    let config = Gemma3Config {
        model_type: "gemma3_text".into(),
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: file.usize(&key("feed_forward_length"))?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: opt_usize("attention.head_count_kv")?,
        head_dim: Some(head_dim),
        max_position_embeddings: file.usize(&key("context_length"))?,
        rms_norm_eps: opt_f64("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6),
        rope_theta: opt_f64("rope.freq_base")?.unwrap_or(1_000_000.0),
        rope_local_base_freq: 10_000.0,
        rope_scaling: scaling,
        rope_parameters: None,
        query_pre_attn_scalar: Some(head_dim as f64),
        sliding_window: opt_usize("attention.sliding_window")?,
        layer_types: None,
        sliding_window_pattern: Some(6),
        hidden_activation: "gelu_pytorch_tanh".into(),
        attn_logit_softcapping: None,
        final_logit_softcapping: opt_f64("final_logit_softcapping")?,
        attention_bias: false,
        use_bidirectional_attention: false,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        eos_token_id: eos,
    };
    config.check().map_err(|reason| GgufError::Invalid {
        path: file.path().to_path_buf(),
        reason,
    })?;
    Ok(config)
}

impl Gemma3 {
    /// Reads the `gemma3` decoder of a GGUF file into a Burn model on `device`, every weight
    /// dequantized to f32 (see the module docs).
    ///
    /// # Errors
    /// As [`gemma3_config`]; a missing tensor, or one of another shape, named.
    pub fn from_gguf(path: impl AsRef<Path>, device: &Device) -> Result<(Gemma3Config, Self)> {
        let file = GgufFile::open(path)?;
        Self::from_gguf_file(&file, device)
    }

    /// [`Gemma3::from_gguf`] on an opened file.
    ///
    /// # Errors
    /// As [`Gemma3::from_gguf`].
    pub fn from_gguf_file(file: &GgufFile, device: &Device) -> Result<(Gemma3Config, Self)> {
        let c = gemma3_config(file)?;
        let (h, hd, ff, vocab) = (
            c.hidden_size,
            c.head_size(),
            c.intermediate_size,
            c.vocab_size,
        );
        let (q_rows, kv_rows) = (c.num_attention_heads * hd, c.kv_heads() * hd);
        let mut model = c.init(device)?;
        // The stored norms are 1 + w.
        let norm = |name: &str, n: usize| -> Result<Param<Tensor<1>>> {
            let w: Vec<f32> = file
                .vector(name, Some(n))?
                .into_iter()
                .map(|v| v - 1.0)
                .collect();
            Ok(param(w, [n], device))
        };
        let embed = dense(file, "token_embd.weight", [vocab, h])?;
        model.embed_tokens.weight = param(embed, [vocab, h], device);
        for (i, layer) in model.layers.iter_mut().enumerate() {
            let blk = |n: &str| format!("blk.{i}.{n}.weight");
            layer.input_layernorm.weight = norm(&blk("attn_norm"), h)?;
            layer.post_attention_layernorm.weight = norm(&blk("post_attention_norm"), h)?;
            layer.pre_feedforward_layernorm.weight = norm(&blk("ffn_norm"), h)?;
            layer.post_feedforward_layernorm.weight = norm(&blk("post_ffw_norm"), h)?;
            let at = &mut layer.self_attn;
            at.q_norm.weight = norm(&blk("attn_q_norm"), hd)?;
            at.k_norm.weight = norm(&blk("attn_k_norm"), hd)?;
            for (n, l, shape) in [
                ("attn_q", &mut at.q_proj, [q_rows, h]),
                ("attn_k", &mut at.k_proj, [kv_rows, h]),
                ("attn_v", &mut at.v_proj, [kv_rows, h]),
                ("attn_output", &mut at.o_proj, [h, q_rows]),
            ] {
                set_linear(l, &dense(file, &blk(n), shape)?, shape, None, device);
            }
            let mlp = &mut layer.mlp;
            for (n, l, shape) in [
                ("ffn_gate", &mut mlp.gate_proj, [ff, h]),
                ("ffn_up", &mut mlp.up_proj, [ff, h]),
                ("ffn_down", &mut mlp.down_proj, [h, ff]),
            ] {
                set_linear(l, &dense(file, &blk(n), shape)?, shape, None, device);
            }
        }
        model.norm.weight = norm("output_norm.weight", h)?;
        if let Some(head) = model.lm_head.as_mut() {
            set_linear(
                head,
                &dense(file, "output.weight", [vocab, h])?,
                [vocab, h],
                None,
                device,
            );
        }
        Ok((c, model))
    }
}

#[cfg(test)]
mod tests {
    use kiln_core::kernels::quant::BlockType;

    use super::*;
    use crate::generation::KvCache;
    use crate::gguf::{GgufWriter, Value};

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    /// `[out, in]` rows of a Burn linear layer (stored `[in, out]`).
    fn rows(l: &burn::nn::Linear) -> (Vec<f32>, [usize; 2]) {
        let [d_in, d_out] = l.weight.dims();
        (host(l.weight.val().transpose()), [d_out, d_in])
    }

    /// A random six-layer Gemma 3 (five sliding layers, one global: the only layout a
    /// `gemma3` file has) written as llama.cpp's converter writes it, F32 tensors, norms
    /// stored as 1 + w, read back: the same logits as the model it came from, the config's
    /// conventions (window, bases, linear scaling, query scale, tied head) recovered.
    #[test]
    fn a_written_gemma3_file_reads_back_as_the_same_model() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let config: Gemma3Config = serde_json::from_str(
            r#"{"model_type": "gemma3_text", "vocab_size": 64, "hidden_size": 32,
                "intermediate_size": 48, "num_hidden_layers": 6, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 64,
                "sliding_window": 4, "query_pre_attn_scalar": 16, "rope_theta": 1000000.0,
                "rope_scaling": {"rope_type": "linear", "factor": 2.0}}"#,
        )
        .unwrap();
        let mut model = config.init(&device).unwrap();
        let noisy = |n: &mut crate::models::Gemma3RmsNorm, k: usize| {
            let len = n.weight.dims()[0];
            let w: Vec<f32> = (0..len)
                .map(|i| (((i + k) * 7 % 5) as f32 - 2.0) * 0.1)
                .collect();
            n.weight = Param::from_tensor(Tensor::from_floats(w.as_slice(), &device));
        };
        for (k, l) in model.layers.iter_mut().enumerate() {
            noisy(&mut l.input_layernorm, k);
            noisy(&mut l.self_attn.k_norm, k + 1);
            noisy(&mut l.pre_feedforward_layernorm, k + 2);
        }
        noisy(&mut model.norm, 3);
        let mut w = GgufWriter::new();
        for (key, value) in [
            ("general.architecture", Value::String("gemma3".into())),
            ("gemma3.context_length", Value::U32(64)),
            ("gemma3.embedding_length", Value::U32(32)),
            ("gemma3.block_count", Value::U32(6)),
            ("gemma3.feed_forward_length", Value::U32(48)),
            ("gemma3.attention.head_count", Value::U32(4)),
            ("gemma3.attention.head_count_kv", Value::U32(2)),
            ("gemma3.attention.key_length", Value::U32(16)),
            ("gemma3.attention.value_length", Value::U32(16)),
            ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
            ("gemma3.attention.sliding_window", Value::U32(4)),
            ("gemma3.rope.freq_base", Value::F32(1_000_000.0)),
            ("gemma3.rope.scaling.type", Value::String("linear".into())),
            ("gemma3.rope.scaling.factor", Value::F32(2.0)),
        ] {
            w.set(key, value);
        }
        let mut tensors: Vec<(String, Vec<f32>, Vec<usize>)> = vec![(
            "token_embd.weight".into(),
            host(model.embed_tokens.weight.val()),
            vec![64, 32],
        )];
        let plus_one = |n: &crate::models::Gemma3RmsNorm| -> Vec<f32> {
            host(n.weight.val()).into_iter().map(|v| v + 1.0).collect()
        };
        tensors.push(("output_norm.weight".into(), plus_one(&model.norm), vec![32]));
        for (i, l) in model.layers.iter().enumerate() {
            let at = &l.self_attn;
            for (n, norm) in [
                ("attn_norm", &l.input_layernorm),
                ("post_attention_norm", &l.post_attention_layernorm),
                ("ffn_norm", &l.pre_feedforward_layernorm),
                ("post_ffw_norm", &l.post_feedforward_layernorm),
                ("attn_q_norm", &at.q_norm),
                ("attn_k_norm", &at.k_norm),
            ] {
                let v = plus_one(norm);
                let len = v.len();
                tensors.push((format!("blk.{i}.{n}.weight"), v, vec![len]));
            }
            for (n, lin) in [
                ("attn_q", &at.q_proj),
                ("attn_k", &at.k_proj),
                ("attn_v", &at.v_proj),
                ("attn_output", &at.o_proj),
                ("ffn_gate", &l.mlp.gate_proj),
                ("ffn_up", &l.mlp.up_proj),
                ("ffn_down", &l.mlp.down_proj),
            ] {
                let (v, shape) = rows(lin);
                tensors.push((format!("blk.{i}.{n}.weight"), v, shape.to_vec()));
            }
        }
        for (name, values, shape) in tensors {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(name, &shape, BlockType::F32, Box::new(move || Ok(bytes)))
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny-gemma3.gguf");
        w.write(&path).unwrap();
        let (read, back) = Gemma3::from_gguf(&path, &device).unwrap();
        assert_eq!(
            read.sliding_layers().unwrap(),
            vec![true, true, true, true, true, false]
        );
        assert_eq!(read.ropes(), config.ropes());
        assert!(read.tie_word_embeddings && back.lm_head.is_none());
        let ids = vec![(0..12u32).map(|i| (i * 5 + 3) % 64).collect::<Vec<_>>()];
        let mask = vec![vec![1u8; 12]];
        let want = host(
            model
                .forward_cached(&ids, &mask, &mut KvCache::new(), &device)
                .unwrap(),
        );
        let got = host(
            back.forward_cached(&ids, &mask, &mut KvCache::new(), &device)
                .unwrap(),
        );
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "logits differ by {worst}");
        // Another architecture is named.
        let mut other = GgufWriter::new();
        other.set("general.architecture", Value::String("gemma2".into()));
        let p2 = dir.path().join("other.gguf");
        other.write(&p2).unwrap();
        let e = Gemma3::from_gguf(&p2, &device).unwrap_err().to_string();
        assert!(e.contains("'gemma2'"), "{e}");
    }
}
