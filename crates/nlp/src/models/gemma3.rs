//! The Gemma 3 family with Hugging Face weights: `Gemma3ForCausalLM` (`model_type`
//! `gemma3_text`, the text-only Gemma 3 checkpoints such as gemma-3-270m and 1b) and
//! `Gemma3TextModel` used as a bidirectional encoder (`use_bidirectional_attention`, as
//! EmbeddingGemma is; see [`SentenceEncoder`](crate::sentence::SentenceEncoder)).
//!
//! What sets it apart from [`Llama`](super::Llama), each piece as transformers computes it:
//! - RMSNorm scaling by `1 + w` (the weights are stored around 0), before and after both the
//!   attention and the feed-forward block (four norms a layer), and on every query and key
//!   head (`q_norm`, `k_norm`) before the rotary embedding;
//! - token embeddings multiplied by `sqrt(hidden_size)` (in f32);
//! - GeGLU: the gate through the tanh approximation of GELU (`gelu_pytorch_tanh`);
//! - attention scores scaled by `query_pre_attn_scalar^-0.5` rather than the head size;
//! - sliding-window layers (keys less than `sliding_window` positions back; with
//!   bidirectional attention, at most half of it either way, see
//!   [`Gemma3Config::attention_window`]) interleaved with global ones as
//!   `layer_types` (or the older `sliding_window_pattern`) says, each kind with its own
//!   rotary base (`rope_local_base_freq` for the sliding layers, `rope_theta` and any linear
//!   `rope_scaling` for the global ones; transformers 5's per-kind `rope_parameters` too);
//! - soft-capping `cap * tanh(x / cap)` of the final logits when the config sets
//!   `final_logit_softcapping`. `attn_logit_softcapping` is read and, as in transformers'
//!   Gemma 3 attention (which does not pass it on; Gemma 2 did) and llama.cpp's, not applied:
//!   every published Gemma 3 config leaves it null, and the fixture sets it to show that
//!   Kiln computes what transformers does.
//!
//! Weights load through burn-store as [`Llama::load`](super::Llama::load) does: the `model.`
//! prefix dropped, linear weights transposed, the norms' `weight` kept as it is (the `1 + w`
//! is applied in [`Gemma3RmsNorm::forward`]); the output head is the embedding (Gemma 3 ties
//! them) unless the config unties it. The key/value cache and left-padded batches are those
//! of [`generation`](crate::generation).

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::store::{PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::activation::{gelu_approximate, softmax};
use kiln_core::ops::linear;
use serde::Deserialize;

use crate::error::{NlpError, Result};
use crate::generation::cache::check_rows;
use crate::generation::{CachedDecoder, KvCache, ModelShape, begin_step};
use crate::models::RopeScaling;
use crate::models::decoder_weights::{self, weight_files};
use crate::models::llama::{inv_freq, rope_tables, rotate};

mod cpu;

pub use cpu::Gemma3Cpu;

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    1_000_000.0
}
fn default_local_theta() -> f64 {
    10_000.0
}
fn default_act() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_true() -> bool {
    true
}

/// A Hugging Face Gemma 3 text `config.json` (the fields this implementation reads), in the
/// form transformers 4 writes (`rope_theta`, `rope_local_base_freq`, `rope_scaling`) or the
/// form of transformers 5 (`rope_parameters` per layer kind).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Gemma3Config {
    /// `gemma3_text`.
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
    /// Key/value heads (`None`: as many as query heads).
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
    /// The global layers' rotary base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// The sliding layers' rotary base.
    #[serde(default = "default_local_theta")]
    pub rope_local_base_freq: f64,
    /// The global layers' rotary scaling (`linear` or none).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers 5's per-kind rotary parameters (`full_attention`, `sliding_attention`).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Scores are scaled by its inverse square root (`None`: the head size).
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f64>,
    /// How far back (and, bidirectionally, forward) a sliding layer sees.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Each layer's kind: `sliding_attention` or `full_attention`.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Without `layer_types`: every `n`th layer is global (Gemma 3: 6).
    #[serde(default, alias = "_sliding_window_pattern")]
    pub sliding_window_pattern: Option<usize>,
    /// Activation of the gate (only `gelu_pytorch_tanh`).
    #[serde(default = "default_act")]
    pub hidden_activation: String,
    /// Soft-cap of the attention scores: read, not applied (as in transformers' Gemma 3).
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    /// Soft-cap of the output logits.
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// Biases on the attention projections (only `false`).
    #[serde(default)]
    pub attention_bias: bool,
    /// Every position sees every other (an encoder such as EmbeddingGemma).
    #[serde(default)]
    pub use_bidirectional_attention: bool,
    /// Whether the output head shares the token embeddings.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

/// One kind of attention layer's rotary setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmaRope {
    /// The base.
    pub theta: f64,
    /// The scaling (default or linear).
    pub scaling: RopeScaling,
}

impl Gemma3Config {
    /// Reads and checks a `config.json`.
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be read; [`NlpError::Config`] naming it when it does
    /// not parse or holds values this implementation does not support.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        super::hf_config::read_config(path.as_ref(), "Gemma 3", Gemma3Config::check)
    }

    pub(crate) fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub(crate) fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether each layer is a sliding-window one, from `layer_types`, else from the pattern
    /// (every `sliding_window_pattern`th layer global, 6 when absent), else all global when
    /// there is no window.
    ///
    /// # Errors
    /// A `layer_types` of another length than the layers, or an unknown kind, named.
    pub fn sliding_layers(&self) -> std::result::Result<Vec<bool>, String> {
        let n = self.num_hidden_layers;
        if let Some(types) = &self.layer_types {
            if types.len() != n {
                return Err(format!(
                    "layer_types has {} entries for {n} layers",
                    types.len()
                ));
            }
            return types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(format!(
                        "layer type '{other}' is not supported (sliding_attention, \
                         full_attention)"
                    )),
                })
                .collect();
        }
        if self.sliding_window.is_none() {
            return Ok(vec![false; n]);
        }
        let pattern = self.sliding_window_pattern.unwrap_or(6).max(1);
        Ok((0..n).map(|i| (i + 1) % pattern != 0).collect())
    }

    /// The rotary settings of the global and of the sliding layers.
    ///
    /// # Errors
    /// A scaling other than default or linear, or a base that is not a positive number.
    pub fn ropes(&self) -> std::result::Result<(GemmaRope, GemmaRope), String> {
        let parse = |theta: f64, scaling: Option<&serde_json::Value>, kind: &str| {
            let scaling = match scaling.filter(|s| !s.is_null()) {
                None => RopeScaling::Default,
                Some(s) => {
                    let name = s["rope_type"]
                        .as_str()
                        .or(s["type"].as_str())
                        .unwrap_or("default");
                    match name {
                        "default" => RopeScaling::Default,
                        "linear" => RopeScaling::Linear {
                            factor: s["factor"]
                                .as_f64()
                                .filter(|f| f.is_finite() && *f > 0.0)
                                .ok_or_else(|| {
                                    format!("{kind} rope scaling 'linear' needs a positive factor")
                                })?,
                        },
                        other => {
                            return Err(format!(
                                "{kind} rope scaling type '{other}' is not supported \
                                 (default, linear)"
                            ));
                        }
                    }
                }
            };
            if !(theta.is_finite() && theta > 0.0) {
                return Err(format!(
                    "{kind} rope_theta {theta} must be a positive number"
                ));
            }
            Ok(GemmaRope { theta, scaling })
        };
        match &self.rope_parameters {
            Some(p)
                if p.get("full_attention").is_some() || p.get("sliding_attention").is_some() =>
            {
                let of = |kind: &str, theta: f64| {
                    let v = &p[kind];
                    parse(
                        v["rope_theta"].as_f64().unwrap_or(theta),
                        (!v.is_null()).then_some(v),
                        kind,
                    )
                };
                Ok((
                    of("full_attention", self.rope_theta)?,
                    of("sliding_attention", self.rope_local_base_freq)?,
                ))
            }
            _ => Ok((
                parse(
                    self.rope_theta,
                    self.rope_scaling.as_ref(),
                    "full_attention",
                )?,
                parse(self.rope_local_base_freq, None, "sliding_attention")?,
            )),
        }
    }

    /// Checks what this implementation supports, naming the first field that it does not.
    ///
    /// # Errors
    /// The first unsupported field, named.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.model_type != "gemma3_text" {
            return Err(format!(
                "model_type '{}' is not supported by the Gemma 3 loader (gemma3_text)",
                self.model_type
            ));
        }
        if !matches!(
            self.hidden_activation.as_str(),
            "gelu_pytorch_tanh" | "gelu_tanh"
        ) {
            return Err(format!(
                "hidden_activation '{}' is not supported (gelu_pytorch_tanh)",
                self.hidden_activation
            ));
        }
        if self.attention_bias {
            return Err("attention_bias true is not supported".into());
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
            ("sliding_window", self.sliding_window.unwrap_or(1)),
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
        for (field, v) in [
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("attn_logit_softcapping", self.attn_logit_softcapping),
            ("final_logit_softcapping", self.final_logit_softcapping),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(format!("{field} {v} must be a positive number"));
            }
        }
        let sliding = self.sliding_layers()?;
        if sliding.iter().any(|&s| s) && self.sliding_window.is_none() {
            return Err("sliding_attention layers need a sliding_window".into());
        }
        self.ropes().map(|_| ())
    }

    /// The end-of-sequence ids of the config (one id or a list).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(super::hf_config::ids)
            .unwrap_or_default()
    }

    /// How far a sliding layer sees, exclusive: `sliding_window` back for a causal model;
    /// for a bidirectional one `sliding_window / 2 + 1` either way, as transformers'
    /// `Gemma3TextConfig` turns the stored window into (the config file keeps the whole span,
    /// EmbeddingGemma's 512: 256 positions before and after). Unbounded without a window.
    pub fn attention_window(&self) -> usize {
        match self.sliding_window {
            None => usize::MAX,
            Some(w) if self.use_bidirectional_attention => w / 2 + 1,
            Some(w) => w,
        }
    }

    fn invalid(reason: String) -> NlpError {
        NlpError::Config {
            path: PathBuf::from("config.json"),
            reason,
        }
    }

    /// A model of this shape with initial weights (norm weights 0, that is scale 1).
    ///
    /// # Errors
    /// [`NlpError::Config`] when the config does not pass [`check`](Self::check).
    pub fn init(&self, device: &Device) -> Result<Gemma3> {
        self.check().map_err(Self::invalid)?;
        let (e, hd, heads, kv) = (
            self.hidden_size,
            self.head_size(),
            self.num_attention_heads,
            self.kv_heads(),
        );
        let eps = self.rms_norm_eps;
        let norm = |n| Gemma3RmsNorm::new(n, eps, device);
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let (global, local) = self.ropes().map_err(Self::invalid)?;
        let sliding = self.sliding_layers().map_err(Self::invalid)?;
        Ok(Gemma3 {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, e).init(device),
            layers: sliding
                .into_iter()
                .map(|sliding| Gemma3Layer {
                    input_layernorm: norm(e),
                    self_attn: Gemma3Attention {
                        q_proj: lin(e, heads * hd),
                        k_proj: lin(e, kv * hd),
                        v_proj: lin(e, kv * hd),
                        o_proj: lin(heads * hd, e),
                        q_norm: norm(hd),
                        k_norm: norm(hd),
                    },
                    post_attention_layernorm: norm(e),
                    pre_feedforward_layernorm: norm(e),
                    mlp: Gemma3Mlp {
                        gate_proj: lin(e, self.intermediate_size),
                        up_proj: lin(e, self.intermediate_size),
                        down_proj: lin(self.intermediate_size, e),
                    },
                    post_feedforward_layernorm: norm(e),
                    sliding,
                })
                .collect(),
            norm: norm(e),
            lm_head: (!self.tie_word_embeddings).then(|| lin(e, self.vocab_size)),
            global_inv_freq: inv_freq(hd, global.theta, global.scaling),
            local_inv_freq: inv_freq(hd, local.theta, local.scaling),
            heads,
            kv_heads: kv,
            head_dim: hd,
            window: self.attention_window(),
            scale: self.query_pre_attn_scalar.unwrap_or(hd as f64).powf(-0.5),
            embed_scale: (e as f32).sqrt(),
            final_softcap: self.final_logit_softcapping,
            bidirectional: self.use_bidirectional_attention,
            max_positions: self.max_position_embeddings,
        })
    }
}

/// Gemma's RMSNorm: `x / sqrt(mean(x^2) + eps) * (1 + weight)`, over the last dimension.
#[derive(Module, Debug)]
pub struct Gemma3RmsNorm {
    /// The scale minus one (Hugging Face's `weight`).
    pub weight: Param<Tensor<1>>,
    #[module(skip)]
    eps: f64,
}

impl Gemma3RmsNorm {
    /// A norm of width `n` with weight 0 (scale 1).
    pub fn new(n: usize, eps: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::zeros([n], device)),
            eps,
        }
    }

    /// Normalises over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let n = x.dims()[D - 1];
        let rms = x
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        let mut shape = [1; D];
        shape[D - 1] = n;
        let scale = self.weight.val().add_scalar(1.0).reshape(shape);
        x / rms * scale
    }
}

/// Attention projections and the per-head query and key norms.
#[derive(Module, Debug)]
pub struct Gemma3Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    pub(crate) q_norm: Gemma3RmsNorm,
    pub(crate) k_norm: Gemma3RmsNorm,
}

/// GeGLU feed-forward.
#[derive(Module, Debug)]
pub struct Gemma3Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
}

/// One block: norms before and after attention and before and after the feed-forward.
#[derive(Module, Debug)]
pub struct Gemma3Layer {
    pub(crate) input_layernorm: Gemma3RmsNorm,
    pub(crate) self_attn: Gemma3Attention,
    pub(crate) post_attention_layernorm: Gemma3RmsNorm,
    pub(crate) pre_feedforward_layernorm: Gemma3RmsNorm,
    pub(crate) mlp: Gemma3Mlp,
    pub(crate) post_feedforward_layernorm: Gemma3RmsNorm,
    /// A sliding-window layer (else global).
    #[module(skip)]
    pub(crate) sliding: bool,
}

/// A Gemma 3 text model with its (usually tied) head.
#[derive(Module, Debug)]
pub struct Gemma3 {
    pub(crate) embed_tokens: Embedding,
    pub(crate) layers: Vec<Gemma3Layer>,
    pub(crate) norm: Gemma3RmsNorm,
    pub(crate) lm_head: Option<Linear>,
    #[module(skip)]
    pub(crate) global_inv_freq: Vec<f32>,
    #[module(skip)]
    pub(crate) local_inv_freq: Vec<f32>,
    #[module(skip)]
    pub(crate) heads: usize,
    #[module(skip)]
    pub(crate) kv_heads: usize,
    #[module(skip)]
    pub(crate) head_dim: usize,
    #[module(skip)]
    pub(crate) window: usize,
    #[module(skip)]
    pub(crate) scale: f64,
    #[module(skip)]
    pub(crate) embed_scale: f32,
    #[module(skip)]
    pub(crate) final_softcap: Option<f64>,
    #[module(skip)]
    pub(crate) bidirectional: bool,
    #[module(skip)]
    max_positions: usize,
}

/// `cap * tanh(x / cap)`.
fn softcap<const D: usize>(x: Tensor<D>, cap: Option<f64>) -> Tensor<D> {
    match cap {
        Some(c) => x.div_scalar(c).tanh().mul_scalar(c),
        None => x,
    }
}

/// Everything a pass over the layers needs besides the hidden states: the rotary tables of
/// both layer kinds and the additive bias of both.
struct Pass {
    batch: usize,
    len: usize,
    global_rope: (Tensor<4>, Tensor<4>),
    local_rope: (Tensor<4>, Tensor<4>),
    global_bias: Tensor<4>,
    local_bias: Tensor<4>,
}

impl Gemma3 {
    /// The longest context.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// The model width.
    pub fn hidden_size(&self) -> usize {
        self.embed_tokens.weight.dims()[1]
    }

    /// Whether the config made every position see every other.
    pub fn is_bidirectional(&self) -> bool {
        self.bidirectional
    }

    /// The layers over `x` (already scaled embeddings); each layer's keys and values (those
    /// of the cache first) are handed to `keep`.
    fn layers_forward(
        &self,
        mut x: Tensor<3>,
        pass: &Pass,
        cache: Option<&KvCache>,
        mut keep: impl FnMut(Tensor<4>, Tensor<4>),
    ) -> Tensor<3> {
        let (b, t) = (pass.batch, pass.len);
        let (heads, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let rep = heads / kv;
        for (l, layer) in self.layers.iter().enumerate() {
            let (rope, bias) = if layer.sliding {
                (&pass.local_rope, &pass.local_bias)
            } else {
                (&pass.global_rope, &pass.global_bias)
            };
            let h = layer.input_layernorm.forward(x.clone());
            let at = &layer.self_attn;
            let q = linear(&at.q_proj, h.clone())
                .reshape([b, t, heads, hd])
                .swap_dims(1, 2);
            let k = linear(&at.k_proj, h.clone())
                .reshape([b, t, kv, hd])
                .swap_dims(1, 2);
            let mut v = linear(&at.v_proj, h)
                .reshape([b, t, kv, hd])
                .swap_dims(1, 2);
            let (cos, sin) = rope;
            let q = rotate(at.q_norm.forward(q), cos.clone(), sin.clone());
            let mut k = rotate(at.k_norm.forward(k), cos.clone(), sin.clone());
            if let Some((pk, pv)) = cache.and_then(|c| c.layer(l)) {
                k = Tensor::cat(vec![pk.clone(), k], 2);
                v = Tensor::cat(vec![pv.clone(), v], 2);
            }
            keep(k.clone(), v.clone());
            let s = k.dims()[2];
            // Grouped-query attention: each key/value head serves `rep` query heads.
            let expand = |y: Tensor<4>| {
                y.reshape([b, kv, 1, s, hd])
                    .expand([b, kv, rep, s, hd])
                    .reshape([b, heads, s, hd])
            };
            let (k, v) = (expand(k), expand(v));
            let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(self.scale) + bias.clone();
            let a = softmax(scores, 3)
                .matmul(v)
                .swap_dims(1, 2)
                .reshape([b, t, heads * hd]);
            let a = layer
                .post_attention_layernorm
                .forward(linear(&at.o_proj, a));
            x = x + a;
            let h = layer.pre_feedforward_layernorm.forward(x.clone());
            let mlp = &layer.mlp;
            let gated =
                gelu_approximate(linear(&mlp.gate_proj, h.clone())) * linear(&mlp.up_proj, h);
            let f = layer
                .post_feedforward_layernorm
                .forward(linear(&mlp.down_proj, gated));
            x = x + f;
        }
        self.norm.forward(x)
    }

    /// The scaled embedding rows of `ids` on the host, `[ids.len(), hidden]` row-major (for
    /// [`Gemma3Cpu`]).
    ///
    /// # Errors
    /// [`NlpError::Input`] for an id past the vocabulary.
    pub fn embed_rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let vocab = self.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(NlpError::Input(format!(
                "gemma3: token id {bad} past the vocabulary of {vocab}"
            )));
        }
        let device = self.embed_tokens.weight.device();
        let flat: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let rows = self
            .embed_tokens
            .weight
            .val()
            .select(0, Tensor::<1, Int>::from_ints(flat.as_slice(), &device))
            .mul_scalar(self.embed_scale);
        crate::models::bert::cpu::host(rows)
    }

    /// Token embeddings times `sqrt(hidden_size)`.
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed_tokens.forward(ids).mul_scalar(self.embed_scale)
    }

    /// `bias` with the keys outside each query's window also masked: key `j` of query `i`
    /// (cache indices) is seen when `|i - j| < window` (`bias` already hides the future of a
    /// causal pass). `past` is the index of the first query.
    fn windowed(&self, bias: &Tensor<4>, past: usize, device: &Device) -> Tensor<4> {
        let [_, _, t, s] = bias.dims();
        let w = self.window;
        let mut window = vec![0f32; t * s];
        for i in 0..t {
            for j in 0..s {
                if (past + i).abs_diff(j) >= w {
                    window[i * s + j] = f32::MIN;
                }
            }
        }
        let window = Tensor::<1>::from_floats(window.as_slice(), device).reshape([1, 1, t, s]);
        // Two masks on one key sum to -inf in f32; back to f32::MIN so that a row masked
        // everywhere (a padding query) stays a finite uniform softmax.
        (bias.clone() + window).clamp_min(f32::MIN)
    }

    /// The output head (tied to the embeddings unless the config unties it), soft-capped
    /// when the config says so.
    fn head(&self, x: Tensor<3>) -> Tensor<3> {
        let vocab = self.vocab_size();
        let logits = match &self.lm_head {
            Some(head) => linear(head, x),
            None => {
                // `E x^T` on the stored `[vocab, hidden]` rows, then transposed: reading the
                // embedding row by row, instead of through a strided transposed view of it
                // (eleven times faster for one decoded token on flex: 18 against 1.6 tokens/s).
                let [b, t, e] = x.dims();
                self.embed_tokens
                    .weight
                    .val()
                    .matmul(x.reshape([b * t, e]).transpose())
                    .transpose()
                    .reshape([b, t, vocab])
            }
        };
        softcap(logits, self.final_softcap)
    }

    /// Next-token logits of every new position, extending `cache`; `mask` marks real tokens
    /// (1) and left padding (0). As [`Llama::forward_cached`](super::Llama::forward_cached);
    /// always causal (a bidirectional config's model is an encoder, see
    /// [`Gemma3::encode`]).
    ///
    /// # Errors
    /// As [`Llama::forward_cached`](super::Llama::forward_cached).
    pub fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>> {
        let step = begin_step(
            "gemma3",
            ids,
            mask,
            cache,
            &ModelShape {
                vocab: self.vocab_size(),
                max_positions: self.max_positions,
                cache: [self.layers.len(), self.kv_heads, self.head_dim],
            },
            device,
        )?;
        let (b, t) = (step.batch, step.len);
        let past = cache.len() - t;
        let pass = Pass {
            batch: b,
            len: t,
            global_rope: rope_tables(&self.global_inv_freq, &step.positions, [b, t], device),
            local_rope: rope_tables(&self.local_inv_freq, &step.positions, [b, t], device),
            local_bias: self.windowed(&step.bias, past, device),
            global_bias: step.bias,
        };
        let x = self.embed(step.ids);
        let mut new_layers = Vec::with_capacity(self.layers.len());
        let x = self.layers_forward(x, &pass, Some(cache), |k, v| new_layers.push((k, v)));
        cache.set_layers(new_layers);
        Ok(self.head(x))
    }

    /// The last hidden state (after the final norm) of every position of a padded batch,
    /// `[B, T, hidden]`: bidirectional when the config says so (EmbeddingGemma), else causal.
    /// `mask` marks real tokens (1) and padding (0), on either side; positions count the real
    /// tokens before each one.
    ///
    /// # Errors
    /// [`NlpError::Input`] for rows of unequal or zero length, a mask of another shape, an id
    /// past the vocabulary or a text longer than the context.
    pub fn encode(&self, ids: &[Vec<u32>], mask: &[Vec<u8>], device: &Device) -> Result<Tensor<3>> {
        let (b, t) = check_rows("gemma3", ids, mask)?;
        let vocab = self.vocab_size();
        if let Some(&bad) = ids.iter().flatten().find(|&&i| i as usize >= vocab) {
            return Err(NlpError::Input(format!(
                "gemma3: token id {bad} past the vocabulary of {vocab}"
            )));
        }
        let mut positions = Vec::with_capacity(b * t);
        for m in mask {
            let mut real = 0usize;
            for &r in m {
                positions.push(real.saturating_sub(usize::from(r == 0)));
                real += usize::from(r != 0);
            }
            if real > self.max_positions {
                return Err(NlpError::Input(format!(
                    "gemma3: a text of {real} tokens is longer than the context of {}",
                    self.max_positions
                )));
            }
        }
        let mut bias = vec![0f32; b * t * t];
        for (row, m) in mask.iter().enumerate() {
            for i in 0..t {
                for j in 0..t {
                    if m[j] == 0 || (!self.bidirectional && j > i) {
                        bias[(row * t + i) * t + j] = f32::MIN;
                    }
                }
            }
        }
        let bias = Tensor::<1>::from_floats(bias.as_slice(), device).reshape([b, 1, t, t]);
        let pass = Pass {
            batch: b,
            len: t,
            global_rope: rope_tables(&self.global_inv_freq, &positions, [b, t], device),
            local_rope: rope_tables(&self.local_inv_freq, &positions, [b, t], device),
            local_bias: self.windowed(&bias, 0, device),
            global_bias: bias,
        };
        let flat: Vec<i64> = ids.iter().flatten().map(|&i| i64::from(i)).collect();
        let x = self.embed(Tensor::<1, Int>::from_ints(flat.as_slice(), device).reshape([b, t]));
        Ok(self.layers_forward(x, &pass, None, |_, _| {}))
    }

    /// Reads a Hugging Face folder: `config.json` and `model.safetensors` (or the shards of
    /// `model.safetensors.index.json`).
    ///
    /// # Errors
    /// As [`Gemma3Config::from_file`], [`weight_files`](super::weight_files) and
    /// [`Gemma3::load`].
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<(Gemma3Config, Self)> {
        let dir = dir.as_ref();
        let config = Gemma3Config::from_file(dir.join("config.json"))?;
        let files = weight_files(dir)?;
        let model = Self::load(&config, &files, device)?;
        Ok((config, model))
    }

    /// Builds the model of `config` and loads every tensor from `files` (with or without the
    /// `model.` prefix of `Gemma3ForCausalLM`); half-precision weights become f32.
    ///
    /// # Errors
    /// [`NlpError::Weights`] naming every missing, extra or mis-shaped tensor; [`NlpError::Io`]
    /// when a file cannot be read.
    pub fn load(config: &Gemma3Config, files: &[PathBuf], device: &Device) -> Result<Self> {
        let tied = config.tie_word_embeddings;
        decoder_weights::load(
            config.init(device)?,
            files,
            |path| {
                SafetensorsStore::from_file(path)
                    .with_from_adapter(PyTorchToBurnAdapter)
                    .with_key_remapping(r"^model\.", "")
            },
            |unused| (tied && unused == "lm_head.weight") || unused.ends_with("inv_freq"),
        )
    }
}

impl CachedDecoder for Gemma3 {
    fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>> {
        Gemma3::forward_cached(self, ids, mask, cache, device)
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> std::result::Result<Gemma3Config, String> {
        let text = format!(
            r#"{{"model_type": "gemma3_text", "vocab_size": 10, "hidden_size": 8,
                "intermediate_size": 16, "num_hidden_layers": 6, "num_attention_heads": 2,
                "max_position_embeddings": 32{extra}}}"#
        );
        let c: Gemma3Config = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        c.check().map(|_| c)
    }

    #[test]
    fn both_config_forms_give_the_same_layers_and_ropes() {
        let old = config(
            r#", "sliding_window": 4, "_sliding_window_pattern": 3, "rope_theta": 1000000.0,
                "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear",
                "factor": 8.0}"#,
        )
        .unwrap();
        let new = config(
            r#", "sliding_window": 4, "layer_types": ["sliding_attention",
                "sliding_attention", "full_attention", "sliding_attention",
                "sliding_attention", "full_attention"], "rope_parameters": {"full_attention":
                {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}"#,
        )
        .unwrap();
        assert_eq!(old.sliding_layers(), new.sliding_layers());
        assert_eq!(
            old.sliding_layers().unwrap(),
            vec![true, true, false, true, true, false]
        );
        assert_eq!(old.ropes(), new.ropes());
        let (global, local) = new.ropes().unwrap();
        assert_eq!(global.scaling, RopeScaling::Linear { factor: 8.0 });
        assert_eq!((global.theta, local.theta), (1e6, 1e4));
        assert_eq!(local.scaling, RopeScaling::Default);
        // No window: every layer global.
        assert_eq!(
            config("").unwrap().sliding_layers().unwrap(),
            vec![false; 6]
        );
        assert_eq!(config("").unwrap().attention_window(), usize::MAX);
        // A bidirectional model sees half its stored window either way (EmbeddingGemma's 512:
        // distances up to 256).
        assert_eq!(old.attention_window(), 4);
        let both = config(r#", "sliding_window": 512, "use_bidirectional_attention": true"#);
        assert_eq!(both.unwrap().attention_window(), 257);
    }

    #[test]
    fn unsupported_fields_are_named() {
        let e = |extra: &str| config(extra).unwrap_err();
        assert!(e(r#", "hidden_activation": "silu""#).contains("hidden_activation 'silu'"));
        assert!(e(r#", "layer_types": ["full_attention"]"#).contains("1 entries for 6 layers"));
        assert!(
            e(
                r#", "sliding_window": 4, "layer_types": ["chunked_attention", "full_attention",
                "full_attention", "full_attention", "full_attention", "full_attention"]"#
            )
            .contains("'chunked_attention'")
        );
        assert!(e(r#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#).contains("'yarn'"));
        assert!(e(r#", "final_logit_softcapping": -1.0"#).contains("final_logit_softcapping"));
        assert!(e(r#", "num_key_value_heads": 3"#).contains("num_key_value_heads 3"));
        let llama = r#"{"model_type": "gemma2", "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 32}"#;
        let c: Gemma3Config = serde_json::from_str(llama).unwrap();
        assert!(c.check().unwrap_err().contains("model_type 'gemma2'"));
    }

    #[test]
    fn the_norm_scales_by_one_plus_its_weight() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let mut norm = Gemma3RmsNorm::new(2, 0.0, &device);
        norm.weight = Param::from_tensor(Tensor::from_floats([0.5, -1.0], &device));
        // rms of (3, 4) is sqrt(12.5); scales 1.5 and 0.
        let y: Vec<f32> = norm
            .forward(Tensor::<2>::from_floats([[3.0, 4.0]], &device))
            .into_data()
            .iter::<f32>()
            .collect();
        let r = 12.5f32.sqrt();
        assert!((y[0] - 4.5 / r).abs() < 1e-6 && y[1] == 0.0, "{y:?}");
    }
}
