//! The Llama family of decoders with Hugging Face weights: `LlamaForCausalLM` (Llama 2/3,
//! SmolLM), `Qwen2ForCausalLM` (biases on the query, key and value projections) and
//! `MistralForCausalLM` without a sliding window: RMSNorm, rotary position embeddings
//! (`rope_theta`; `rope_scaling` of type `linear` or `llama3`), grouped-query attention,
//! SwiGLU, tied or untied output embeddings; the key/value cache and left-padded batches of
//! [`generation`](crate::generation), as [`Gpt2`](super::Gpt2). Low-rank adapters on its
//! linear layers: `llama/lora.rs`.
//!
//! [`LlamaConfig`] reads `config.json` in both forms found in the wild: top-level `rope_theta`
//! / `rope_scaling`, and the `rope_parameters` object transformers 5 writes. Unknown model
//! types and unsupported fields are errors naming them. [`Llama::load`] reads the weights
//! through burn-store:
//!
//! | Hugging Face key | Kiln module path |
//! |---|---|
//! | `model.` prefix | dropped |
//! | `*.weight` of a linear layer, `[out, in]` | transposed to Burn's `[in, out]` |
//! | `*layernorm.weight`, `norm.weight` (RMSNorm) | `.gamma` |
//! | `lm_head.weight` | the untied head (absent when `tie_word_embeddings`) |
//! | `*.rotary_emb.inv_freq` | not used (recomputed) |

use std::path::{Path, PathBuf};

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::store::{PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::activation::{silu, softmax};
use kiln_core::ops::linear;
use serde::Deserialize;

use crate::error::{NlpError, Result};
use crate::generation::{CachedDecoder, KvCache, ModelShape, begin_step};
use crate::models::decoder_weights::{self, weight_files};
use crate::models::lora::{Lora, adapted};

mod lora;

fn default_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

/// A Hugging Face Llama / Qwen2 / Mistral `config.json` (the fields this implementation
/// reads). After [`LlamaConfig::from_file`], `rope_theta` and `rope_scaling` hold the values of
/// either form.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LlamaConfig {
    /// `llama`, `qwen2` or `mistral`.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention; `None`: as many as query heads).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head size (`None`: `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Longest context.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Rotary base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Rotary scaling (`type` or `rope_type`: `linear`, `llama3`; `default` is none).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers 5's form of the two above.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Whether the output head shares the token embeddings.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on the query, key and value projections (Llama's `attention_bias`; always on
    /// for Qwen2).
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the feed-forward projections (only `false` is supported).
    #[serde(default)]
    pub mlp_bias: bool,
    /// Activation of the gate (only `silu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Mistral's sliding window (only absent / null, or at least the context, is supported).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2's switch for the window (only `false`).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

/// How rotary frequencies are scaled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// None.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// The factor.
        factor: f64,
    },
    /// Llama 3.1's by-wavelength scaling.
    Llama3 {
        /// Overall factor.
        factor: f64,
        /// Low-frequency factor.
        low_freq_factor: f64,
        /// High-frequency factor.
        high_freq_factor: f64,
        /// The context the model was trained on.
        original_max_position_embeddings: f64,
    },
}

impl LlamaConfig {
    /// Reads and checks a `config.json`.
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be read; [`NlpError::Config`] naming it when it does
    /// not parse or holds values this implementation does not support.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        super::hf_config::read_config(path.as_ref(), "Llama-family", LlamaConfig::check)
    }

    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }

    /// The rotary base and scaling, from either form of the config.
    ///
    /// # Errors
    /// An unsupported rope scaling, named.
    pub fn rope(&self) -> std::result::Result<(f64, RopeScaling), String> {
        let (theta, scaling) = match &self.rope_parameters {
            Some(p) => (
                p["rope_theta"].as_f64().unwrap_or(self.rope_theta),
                Some(p.clone()),
            ),
            None => (self.rope_theta, self.rope_scaling.clone()),
        };
        let Some(s) = scaling.filter(|s| !s.is_null()) else {
            return Ok((theta, RopeScaling::Default));
        };
        let kind = s["rope_type"]
            .as_str()
            .or(s["type"].as_str())
            .unwrap_or("default");
        let num = |key: &str| {
            s[key]
                .as_f64()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("rope scaling '{kind}' needs a positive {key}"))
        };
        let scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: num("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            },
            other => {
                return Err(format!(
                    "rope scaling type '{other}' is not supported (default, linear, llama3)"
                ));
            }
        };
        if !(theta.is_finite() && theta > 0.0) {
            return Err(format!("rope_theta {theta} must be a positive number"));
        }
        Ok((theta, scaling))
    }

    /// Checks what this implementation supports, naming the first field that it does not.
    ///
    /// # Errors
    /// The first unsupported field, named.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !matches!(self.model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(format!(
                "model_type '{}' is not supported by the Llama loader (llama, qwen2, mistral)",
                self.model_type
            ));
        }
        if self.hidden_act != "silu" {
            return Err(format!(
                "hidden_act '{}' is not supported (silu)",
                self.hidden_act
            ));
        }
        if self.mlp_bias {
            return Err("mlp_bias true is not supported".into());
        }
        if self.use_sliding_window
            || self
                .sliding_window
                .is_some_and(|w| w < self.max_position_embeddings)
                && self.model_type == "mistral"
        {
            return Err(format!(
                "sliding_window {:?} is not supported (attention over the whole context only)",
                self.sliding_window
            ));
        }
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("max_position_embeddings", self.max_position_embeddings),
            ("head_dim", self.head_size()),
        ] {
            if v == 0 {
                return Err(format!("{field} is 0"));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_size().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} is odd (rotary needs pairs)",
                self.head_size()
            ));
        }
        self.rope().map(|_| ())
    }

    /// The end-of-sequence ids of the config (one id or a list).
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| v as u32).into_iter().collect()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64().map(|v| v as u32))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A model of this shape with initial weights.
    ///
    /// # Errors
    /// [`NlpError::Config`] when the config does not pass [`check`](Self::check).
    pub fn init(&self, device: &Device) -> Result<Llama> {
        self.check().map_err(|reason| NlpError::Config {
            path: PathBuf::from("config.json"),
            reason,
        })?;
        let (e, hd, heads, kv) = (
            self.hidden_size,
            self.head_size(),
            self.num_attention_heads,
            self.kv_heads(),
        );
        let norm = || {
            RmsNormConfig::new(e)
                .with_epsilon(self.rms_norm_eps)
                .init(device)
        };
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let bias = self.qkv_bias();
        let (theta, scaling) = self.rope().map_err(|reason| NlpError::Config {
            path: PathBuf::from("config.json"),
            reason,
        })?;
        Ok(Llama {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, e).init(device),
            layers: (0..self.num_hidden_layers)
                .map(|_| Layer {
                    input_layernorm: norm(),
                    self_attn: SelfAttention {
                        q_proj: lin(e, heads * hd, bias),
                        k_proj: lin(e, kv * hd, bias),
                        v_proj: lin(e, kv * hd, bias),
                        o_proj: lin(heads * hd, e, false),
                    },
                    post_attention_layernorm: norm(),
                    mlp: Mlp {
                        gate_proj: lin(e, self.intermediate_size, false),
                        up_proj: lin(e, self.intermediate_size, false),
                        down_proj: lin(self.intermediate_size, e, false),
                    },
                    lora: None,
                })
                .collect(),
            norm: norm(),
            lm_head: (!self.tie_word_embeddings).then(|| lin(e, self.vocab_size, false)),
            inv_freq: inv_freq(hd, theta, scaling),
            heads,
            kv_heads: kv,
            head_dim: hd,
            max_positions: self.max_position_embeddings,
        })
    }
}

/// The rotary inverse frequencies `theta^(-2i/d)`, scaled as transformers'
/// `_compute_*_parameters` do.
pub(crate) fn inv_freq(head_dim: usize, theta: f64, scaling: RopeScaling) -> Vec<f32> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
        .collect();
    let out: Vec<f64> = match scaling {
        RopeScaling::Default => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    };
    out.into_iter().map(|f| f as f32).collect()
}

/// cos / sin of each (row, position) at the frequencies `inv_freq`, `[B, 1, T, D]` with
/// `D = 2 inv_freq.len()`, in f32 as transformers computes them; `positions` row-major
/// `B x T`.
pub(crate) fn rope_tables(
    inv_freq: &[f32],
    positions: &[usize],
    [b, t]: [usize; 2],
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let half = inv_freq.len();
    let hd = 2 * half;
    let mut cos = Vec::with_capacity(b * t * hd);
    let mut sin = Vec::with_capacity(b * t * hd);
    for &p in positions {
        let angles: Vec<f32> = inv_freq.iter().map(|&f| p as f32 * f).collect();
        for k in 0..hd {
            cos.push(angles[k % half].cos());
            sin.push(angles[k % half].sin());
        }
    }
    (
        Tensor::<1>::from_floats(cos.as_slice(), device).reshape([b, 1, t, hd]),
        Tensor::<1>::from_floats(sin.as_slice(), device).reshape([b, 1, t, hd]),
    )
}

/// Attention projections.
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
}

/// SwiGLU feed-forward.
#[derive(Module, Debug)]
pub struct Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
}

/// One pre-norm block.
#[derive(Module, Debug)]
pub struct Layer {
    pub(crate) input_layernorm: RmsNorm,
    pub(crate) self_attn: SelfAttention,
    pub(crate) post_attention_layernorm: RmsNorm,
    pub(crate) mlp: Mlp,
    /// Low-rank adapters on the block's seven linear layers ([`Llama::with_lora`]).
    pub(crate) lora: Option<LayerLora>,
}

/// The adapters of one block, one per linear layer.
#[derive(Module, Debug)]
pub struct LayerLora {
    q_proj: Lora,
    k_proj: Lora,
    v_proj: Lora,
    o_proj: Lora,
    gate_proj: Lora,
    up_proj: Lora,
    down_proj: Lora,
}

/// A Llama-family decoder with its head.
#[derive(Module, Debug)]
pub struct Llama {
    pub(crate) embed_tokens: Embedding,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: RmsNorm,
    pub(crate) lm_head: Option<Linear>,
    #[module(skip)]
    pub(crate) inv_freq: Vec<f32>,
    #[module(skip)]
    pub(crate) heads: usize,
    #[module(skip)]
    pub(crate) kv_heads: usize,
    #[module(skip)]
    pub(crate) head_dim: usize,
    #[module(skip)]
    max_positions: usize,
}

/// `x * cos + rotate_half(x) * sin` on `[B, H, T, D]`, with `cos` / `sin` `[B, 1, T, D]`.
pub(crate) fn rotate(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let (x1, x2) = (
        x.clone().narrow(3, 0, d / 2),
        x.clone().narrow(3, d / 2, d / 2),
    );
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

impl Llama {
    /// The longest context.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// Next-token logits of every new position, extending `cache`; `mask` marks real tokens
    /// (1) and left padding (0). As [`Gpt2::forward_cached`](super::Gpt2::forward_cached).
    ///
    /// # Errors
    /// As [`Gpt2::forward_cached`](super::Gpt2::forward_cached).
    pub fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>> {
        let vocab = self.vocab_size();
        let step = begin_step(
            "llama",
            ids,
            mask,
            cache,
            &ModelShape {
                vocab,
                max_positions: self.max_positions,
                cache: [self.layers.len(), self.kv_heads, self.head_dim],
            },
            device,
        )?;
        let (b, t) = (step.batch, step.len);
        let positions = step.positions;
        let hd = self.head_dim;
        let (cos, sin) = rope_tables(&self.inv_freq, &positions, [b, t], device);
        let s = cache.len();
        let bias = step.bias;
        let mut x = self.embed_tokens.forward(step.ids);
        let (heads, kv) = (self.heads, self.kv_heads);
        let rep = heads / kv;
        let mut new_layers = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(x.clone());
            let at = &layer.self_attn;
            let lora = layer.lora.as_ref();
            let q = adapted(&at.q_proj, lora.map(|l| &l.q_proj), h.clone())
                .reshape([b, t, heads, hd])
                .swap_dims(1, 2);
            let k = adapted(&at.k_proj, lora.map(|l| &l.k_proj), h.clone())
                .reshape([b, t, kv, hd])
                .swap_dims(1, 2);
            let v = adapted(&at.v_proj, lora.map(|l| &l.v_proj), h)
                .reshape([b, t, kv, hd])
                .swap_dims(1, 2);
            let q = rotate(q, cos.clone(), sin.clone());
            let mut k = rotate(k, cos.clone(), sin.clone());
            let mut v = v;
            if let Some((pk, pv)) = cache.layer(l) {
                k = Tensor::cat(vec![pk.clone(), k], 2);
                v = Tensor::cat(vec![pv.clone(), v], 2);
            }
            new_layers.push((k.clone(), v.clone()));
            // Grouped-query attention: each key/value head serves `rep` query heads.
            let expand = |y: Tensor<4>| {
                y.reshape([b, kv, 1, s, hd])
                    .expand([b, kv, rep, s, hd])
                    .reshape([b, heads, s, hd])
            };
            let (k, v) = (expand(k), expand(v));
            let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt()) + bias.clone();
            let a = softmax(scores, 3)
                .matmul(v)
                .swap_dims(1, 2)
                .reshape([b, t, heads * hd]);
            x = x + adapted(&at.o_proj, lora.map(|l| &l.o_proj), a);
            let h = layer.post_attention_layernorm.forward(x.clone());
            let mlp = &layer.mlp;
            let gated = silu(adapted(
                &mlp.gate_proj,
                lora.map(|l| &l.gate_proj),
                h.clone(),
            )) * adapted(&mlp.up_proj, lora.map(|l| &l.up_proj), h);
            x = x + adapted(&mlp.down_proj, lora.map(|l| &l.down_proj), gated);
        }
        cache.set_layers(new_layers);
        let x = self.norm.forward(x);
        Ok(match &self.lm_head {
            Some(head) => linear(head, x),
            None => {
                let e = x.dims()[2];
                x.matmul(
                    self.embed_tokens
                        .weight
                        .val()
                        .transpose()
                        .reshape([1, e, vocab]),
                )
            }
        })
    }

    /// Reads a Hugging Face folder: `config.json` and `model.safetensors` (or the shards of
    /// `model.safetensors.index.json`).
    ///
    /// # Errors
    /// As [`LlamaConfig::from_file`], [`weight_files`](super::weight_files) and [`Llama::load`].
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<(LlamaConfig, Self)> {
        let dir = dir.as_ref();
        let config = LlamaConfig::from_file(dir.join("config.json"))?;
        let files = weight_files(dir)?;
        let model = Self::load(&config, &files, device)?;
        Ok((config, model))
    }

    /// Builds the model of `config` and loads every tensor from `files`; half-precision
    /// weights become f32.
    ///
    /// # Errors
    /// [`NlpError::Weights`] naming every missing, extra or mis-shaped tensor; [`NlpError::Io`]
    /// when a file cannot be read.
    pub fn load(config: &LlamaConfig, files: &[PathBuf], device: &Device) -> Result<Self> {
        let tied = config.tie_word_embeddings;
        decoder_weights::load(
            config.init(device)?,
            files,
            |path| {
                SafetensorsStore::from_file(path)
                    .with_from_adapter(PyTorchToBurnAdapter)
                    .with_key_remapping(r"^model\.", "")
                    .with_key_remapping(r"(layernorm|^norm)\.weight$", "$1.gamma")
            },
            |unused| {
                unused.ends_with("rotary_emb.inv_freq") || (tied && unused == "lm_head.weight")
            },
        )
    }
}

impl CachedDecoder for Llama {
    fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>> {
        Llama::forward_cached(self, ids, mask, cache, device)
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> std::result::Result<LlamaConfig, String> {
        let text = format!(
            r#"{{"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
                "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                "max_position_embeddings": 32{extra}}}"#
        );
        let c: LlamaConfig = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        c.check().map(|_| c)
    }

    #[test]
    fn both_rope_forms_read_alike_and_unsupported_fields_are_named() {
        let top = config(
            r#", "rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 4.0}"#,
        )
        .unwrap();
        let nested = config(
            r#", "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 500000.0}"#,
        )
        .unwrap();
        assert_eq!(top.rope().unwrap(), nested.rope().unwrap());
        assert_eq!(
            top.rope().unwrap(),
            (500_000.0, RopeScaling::Linear { factor: 4.0 })
        );
        assert_eq!(
            config("").unwrap().rope().unwrap(),
            (10_000.0, RopeScaling::Default)
        );
        let e = |extra: &str| config(extra).unwrap_err();
        assert!(e(r#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#).contains("'yarn'"));
        assert!(
            e(r#", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}"#)
                .contains("low_freq_factor")
        );
        assert!(e(r#", "hidden_act": "gelu""#).contains("hidden_act 'gelu'"));
        assert!(e(r#", "num_key_value_heads": 3"#).contains("num_key_value_heads 3"));
        assert!(e(r#", "mlp_bias": true"#).contains("mlp_bias"));
        let mistral = r#"{"model_type": "mistral", "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 32, "sliding_window": 16}"#;
        let c: LlamaConfig = serde_json::from_str(mistral).unwrap();
        assert!(c.check().unwrap_err().contains("sliding_window"));
        let other = mistral.replace("\"mistral\"", "\"gemma\"");
        let c: LlamaConfig = serde_json::from_str(&other).unwrap();
        assert!(c.check().unwrap_err().contains("model_type 'gemma'"));
        assert_eq!(
            config(r#", "eos_token_id": [2, 7]"#).unwrap().eos_ids(),
            vec![2, 7]
        );
    }

    #[test]
    fn llama3_rope_scaling_matches_transformers_formula() {
        // transformers' _compute_llama3_parameters on head_dim 8, theta 500000, factor 8,
        // low 1, high 4, original 8192 (the Llama 3.1 values).
        let got = inv_freq(
            8,
            500_000.0,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
        );
        // Base frequencies 1, 500000^-0.25, 500000^-0.5, 500000^-0.75; wavelengths 2 pi / f:
        // 6.3 and 168 stay (shorter than 8192 / 4), 4443 is smoothed, 117,000 is divided by 8.
        let base: Vec<f64> = (0..4).map(|i| 500_000f64.powf(-(i as f64) / 4.0)).collect();
        let wl = 2.0 * std::f64::consts::PI / base[2];
        let smooth = (8192.0 / wl - 1.0) / 3.0;
        let want = [
            base[0],
            base[1],
            (1.0 - smooth) * base[2] / 8.0 + smooth * base[2],
            base[3] / 8.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!(
                (f64::from(*g) - w).abs() <= 1e-6 * w.abs(),
                "{got:?} vs {want:?}"
            );
        }
        let linear = inv_freq(4, 10_000.0, RopeScaling::Linear { factor: 2.0 });
        assert_eq!(linear, vec![0.5, 0.005]);
    }
}
