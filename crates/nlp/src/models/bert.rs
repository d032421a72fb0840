//! BERT-family encoders (Devlin et al., 2019) with Hugging Face weights: the `BertModel` of
//! `transformers` (`modeling_bert.py`), post-layer-norm, absolute position embeddings, GELU.
//!
//! [`BertConfig`] reads `config.json` as it is and refuses what this implementation does not
//! do (another activation or position embedding type, another architecture).
//! [`Bert::load`] reads `model.safetensors` through burn-store with explicit key remapping:
//!
//! | Hugging Face key | Kiln module path |
//! |---|---|
//! | `bert.` prefix (task checkpoints) | dropped |
//! | `*.attention.self.*` | `*.attention.self_attention.*` (`self` is a Rust keyword) |
//! | `*.LayerNorm.weight` / `.bias` | `*.layer_norm.gamma` / `.beta` |
//! | `*.weight` of a linear layer, `[out, in]` | transposed to Burn's `[in, out]` |
//! | `embeddings.position_ids`, `pooler.*` | not used (allowed in the file) |
//!
//! Any other missing, unexpected or wrongly shaped tensor is an error naming it.

use std::path::Path;

use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::prelude::*;
use burn::store::{ApplyError, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::activation::{gelu_approximate, softmax};
use serde::{Deserialize, Serialize};

use crate::error::{NlpError, Result};
use crate::models::lora::{self, Lora, LoraConfig, adapted};

pub(crate) mod cpu;
pub use cpu::BertCpu;

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}

/// A Hugging Face BERT `config.json` (the fields this implementation reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Feed-forward activation: `gelu` (exact) or `gelu_new` / `gelu_pytorch_tanh` (tanh
    /// approximation).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Token type (segment) vocabulary.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `absolute` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// Dropout after embeddings and sub-layers (training only).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (training only).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// The padding token id.
    #[serde(default)]
    pub pad_token_id: usize,
    /// `bert` (or absent); other families have other layouts.
    #[serde(default)]
    pub model_type: Option<String>,
}

impl BertConfig {
    /// Reads and checks a `config.json`.
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be read; [`NlpError::Config`] naming it when it does
    /// not parse or holds values this implementation does not support.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        super::hf_config::read_config(path.as_ref(), "BERT", BertConfig::check)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if let Some(t) = self.model_type.as_deref()
            && t != "bert"
        {
            return Err(format!(
                "model_type '{t}' is not supported (only 'bert'; other families name and order \
                 their weights differently)"
            ));
        }
        if !matches!(
            self.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return Err(format!(
                "hidden_act '{}' is not supported (gelu, gelu_new, gelu_pytorch_tanh)",
                self.hidden_act
            ));
        }
        if let Some(p) = self.position_embedding_type.as_deref()
            && p != "absolute"
        {
            return Err(format!(
                "position_embedding_type '{p}' is not supported (only 'absolute')"
            ));
        }
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return Err(format!("{name} is 0; it must be at least 1"));
            }
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "layer_norm_eps {} must be a positive number",
                self.layer_norm_eps
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("{name} {p} must be in [0, 1)"));
            }
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(format!(
                "pad_token_id {} is not below vocab_size {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }

    /// Builds a randomly initialised encoder on `device`.
    pub fn init(&self, device: &Device) -> Bert {
        let h = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let dropout = || DropoutConfig::new(self.hidden_dropout_prob).init();
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let layers = (0..self.num_hidden_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attention: BertSelfAttention {
                        query: linear(h, h),
                        key: linear(h, h),
                        value: linear(h, h),
                        dropout: DropoutConfig::new(self.attention_probs_dropout_prob).init(),
                        heads: self.num_attention_heads,
                    },
                    output: BertOutput {
                        dense: linear(h, h),
                        layer_norm: ln(),
                        dropout: dropout(),
                    },
                },
                intermediate: BertIntermediate {
                    dense: linear(h, self.intermediate_size),
                    exact_gelu: self.hidden_act == "gelu",
                },
                output: BertOutput {
                    dense: linear(self.intermediate_size, h),
                    layer_norm: ln(),
                    dropout: dropout(),
                },
                lora: None,
            })
            .collect();
        Bert {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: ln(),
                dropout: dropout(),
            },
            encoder: BertEncoder { layer: layers },
            max_positions: self.max_position_embeddings,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

/// Word, position and token-type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout: Dropout,
}

/// Multi-head self-attention projections.
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    dropout: Dropout,
    #[module(skip)]
    heads: usize,
}

/// A dense layer, dropout, residual connection and layer norm (`BertSelfOutput` and
/// `BertOutput` in `transformers`).
#[derive(Module, Debug)]
pub struct BertOutput {
    dense: Linear,
    layer_norm: LayerNorm,
    dropout: Dropout,
}

/// Self-attention and its output block.
#[derive(Module, Debug)]
pub struct BertAttention {
    self_attention: BertSelfAttention,
    output: BertOutput,
}

/// The feed-forward expansion with GELU.
#[derive(Module, Debug)]
pub struct BertIntermediate {
    dense: Linear,
    #[module(skip)]
    exact_gelu: bool,
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    attention: BertAttention,
    intermediate: BertIntermediate,
    output: BertOutput,
    /// Low-rank adapters on the layer's six linear layers ([`Bert::with_lora`]).
    lora: Option<BertLayerLora>,
}

/// The adapters of one encoder layer, one per linear layer.
#[derive(Module, Debug)]
pub struct BertLayerLora {
    query: Lora,
    key: Lora,
    value: Lora,
    attention_output: Lora,
    intermediate: Lora,
    output: Lora,
}

/// The layer stack.
#[derive(Module, Debug)]
pub struct BertEncoder {
    layer: Vec<BertLayer>,
}

/// A BERT encoder: token ids in, contextual token vectors out.
#[derive(Module, Debug)]
pub struct Bert {
    embeddings: BertEmbeddings,
    encoder: BertEncoder,
    #[module(skip)]
    max_positions: usize,
    #[module(skip)]
    layer_norm_eps: f64,
}

impl BertOutput {
    fn forward(&self, x: Tensor<3>, residual: Tensor<3>, lora: Option<&Lora>) -> Tensor<3> {
        self.layer_norm
            .forward(self.dropout.forward(adapted(&self.dense, lora, x)) + residual)
    }
}

impl BertSelfAttention {
    /// # Shapes
    /// - `x`: `[B, T, H]`, `mask_bias`: `[B, 1, 1, T]` (0 to attend, a large negative to not)
    /// - output: `[B, T, H]`
    fn forward(
        &self,
        x: Tensor<3>,
        mask_bias: Tensor<4>,
        lora: Option<&BertLayerLora>,
    ) -> Tensor<3> {
        let [b, t, h] = x.dims();
        let d = h / self.heads;
        let split = |y: Tensor<3>| y.reshape([b, t, self.heads, d]).swap_dims(1, 2);
        let q = split(adapted(&self.query, lora.map(|l| &l.query), x.clone()));
        let k = split(adapted(&self.key, lora.map(|l| &l.key), x.clone()));
        let v = split(adapted(&self.value, lora.map(|l| &l.value), x));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((d as f64).sqrt()) + mask_bias;
        let probs = self.dropout.forward(softmax(scores, 3));
        probs.matmul(v).swap_dims(1, 2).reshape([b, t, h])
    }
}

impl Bert {
    /// Contextual vectors of the last layer.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]` token ids; `mask`: `[B, T]`, 1 for tokens and 0 for padding
    /// - output: `[B, T, H]`
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .expand([b, t]);
        let types = Tensor::<2, Int>::zeros([b, t], &device);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let mut x = e.dropout.forward(e.layer_norm.forward(x));
        // Padding gets a large negative score before the softmax: exp(-1e9) is 0 in f32.
        let mask_bias = (mask.float().neg() + 1.0)
            .mul_scalar(-1e9)
            .reshape([b, 1, 1, t]);
        for layer in &self.encoder.layer {
            let lora = layer.lora.as_ref();
            let attended =
                layer
                    .attention
                    .self_attention
                    .forward(x.clone(), mask_bias.clone(), lora);
            let x1 = layer
                .attention
                .output
                .forward(attended, x, lora.map(|l| &l.attention_output));
            let inner = adapted(
                &layer.intermediate.dense,
                lora.map(|l| &l.intermediate),
                x1.clone(),
            );
            let inner = if layer.intermediate.exact_gelu {
                gelu_exact(inner)
            } else {
                gelu_approximate(inner)
            };
            x = layer.output.forward(inner, x1, lora.map(|l| &l.output));
        }
        x
    }

    /// The encoder frozen, with a low-rank adapter on each of the six linear layers of every
    /// block (query, key, value, attention output, intermediate, output): only the adapters
    /// train. Replaces adapters already there.
    ///
    /// # Errors
    /// [`NlpError::Input`] for a rank or alpha out of range.
    pub fn with_lora(self, config: &LoraConfig, device: &Device) -> Result<Self> {
        config.check()?;
        let mut bert = self.no_grad();
        for layer in &mut bert.encoder.layer {
            let at = &layer.attention;
            layer.lora = Some(BertLayerLora {
                query: config.for_linear(&at.self_attention.query, device),
                key: config.for_linear(&at.self_attention.key, device),
                value: config.for_linear(&at.self_attention.value, device),
                attention_output: config.for_linear(&at.output.dense, device),
                intermediate: config.for_linear(&layer.intermediate.dense, device),
                output: config.for_linear(&layer.output.dense, device),
            });
        }
        Ok(bert)
    }

    /// Saves the adapters as safetensors ([`lora::save_adapters`]).
    ///
    /// # Errors
    /// [`NlpError::Io`] or [`NlpError::Weights`] when the file cannot be written.
    pub fn save_adapters(&self, config: &LoraConfig, path: &Path) -> Result<()> {
        lora::save_adapters(self, config, &[], path)
    }

    /// Loads adapters saved by [`Bert::save_adapters`] into an encoder built with
    /// [`Bert::with_lora`] of the same rank.
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be read; [`NlpError::Weights`] naming a missing or
    /// mis-shaped tensor.
    pub fn load_adapters(self, path: &Path) -> Result<Self> {
        lora::load_adapters(self, &[], path)
    }

    /// Whether any layer carries adapters.
    pub fn has_lora(&self) -> bool {
        self.encoder.layer.iter().any(|l| l.lora.is_some())
    }

    /// The adapters folded into the weights (`W + s A B`) and removed: the same function at
    /// the base model's cost.
    pub fn merge_lora(mut self) -> Self {
        for layer in &mut self.encoder.layer {
            let Some(l) = layer.lora.take() else { continue };
            let sa = &mut layer.attention.self_attention;
            sa.query = lora::merge(sa.query.clone(), &l.query);
            sa.key = lora::merge(sa.key.clone(), &l.key);
            sa.value = lora::merge(sa.value.clone(), &l.value);
            let out = &mut layer.attention.output;
            out.dense = lora::merge(out.dense.clone(), &l.attention_output);
            layer.intermediate.dense =
                lora::merge(layer.intermediate.dense.clone(), &l.intermediate);
            layer.output.dense = lora::merge(layer.output.dense.clone(), &l.output);
        }
        self
    }

    /// The longest input the position embeddings cover.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Builds the encoder of `config` and loads `weights` (a `model.safetensors`).
    ///
    /// # Errors
    /// [`NlpError::Weights`] naming every missing, extra or mis-shaped tensor; [`NlpError::Io`]
    /// when the file cannot be read.
    pub fn load(config: &BertConfig, weights: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = weights.as_ref();
        if !path.is_file() {
            return Err(NlpError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no weights file here"),
            ));
        }
        let mut model = config.init(device);
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"^bert\.", "")
            .with_key_remapping(r"\.attention\.self\.", ".attention.self_attention.")
            .with_key_remapping(r"\.LayerNorm\.", ".layer_norm.")
            .allow_partial(true)
            .validate(false);
        let result = model.load_from(&mut store).map_err(|e| NlpError::Weights {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut problems = Vec::new();
        for e in &result.errors {
            problems.push(match e {
                ApplyError::ShapeMismatch {
                    path,
                    expected,
                    found,
                } => format!("tensor {path}: expected shape {expected:?}, found {found:?}"),
                other => format!("{other:?}"),
            });
        }
        for (missing, _) in &result.missing {
            problems.push(format!("tensor {missing}: missing from the file"));
        }
        for unused in &result.unused {
            let allowed = unused == "embeddings.position_ids"
                || unused.starts_with("pooler.")
                || unused.starts_with("cls.");
            if !allowed {
                problems.push(format!("tensor {unused}: in the file but not in the model"));
            }
        }
        if !problems.is_empty() {
            return Err(NlpError::Weights {
                path: path.to_owned(),
                reason: problems.join("; "),
            });
        }
        Ok(model)
    }
}

/// The exact (erf) GELU with an exact gradient on every backend; see
/// [`kiln_core::ops::gelu_exact`].
pub use kiln_core::ops::gelu_exact;

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BertConfig {
        BertConfig {
            vocab_size: 20,
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 16,
            hidden_act: "gelu".into(),
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            position_embedding_type: None,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            pad_token_id: 0,
            model_type: Some("bert".into()),
        }
    }

    #[test]
    fn unsupported_config_fields_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        for (field, value, expect) in [
            ("hidden_act", "\"relu\"", "hidden_act 'relu'"),
            (
                "position_embedding_type",
                "\"relative_key\"",
                "position_embedding_type",
            ),
            ("model_type", "\"roberta\"", "model_type 'roberta'"),
            ("hidden_size", "0", "hidden_size is 0"),
            ("type_vocab_size", "0", "type_vocab_size is 0"),
            ("num_attention_heads", "0", "num_attention_heads is 0"),
            ("vocab_size", "0", "vocab_size is 0"),
            ("layer_norm_eps", "-1.0", "layer_norm_eps -1"),
            ("hidden_dropout_prob", "1.5", "hidden_dropout_prob 1.5"),
            (
                "pad_token_id",
                "20",
                "pad_token_id 20 is not below vocab_size 20",
            ),
        ] {
            let mut v = serde_json::to_value(tiny()).unwrap();
            v[field] = serde_json::from_str(value).unwrap();
            std::fs::write(&path, v.to_string()).unwrap();
            let e = BertConfig::from_file(&path).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
        std::fs::write(&path, "{\"hidden_size\": 8}").unwrap();
        let e = BertConfig::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("not a BERT config.json"), "{e}");
    }

    #[test]
    fn padding_does_not_change_the_real_tokens() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let model = tiny().init(&device).valid();
        let ids = Tensor::<2, Int>::from_ints([[1, 5, 7, 2]], &device);
        let mask = Tensor::<2, Int>::ones([1, 4], &device);
        let plain = model.forward(ids, mask);
        let ids = Tensor::<2, Int>::from_ints([[1, 5, 7, 2, 0, 0]], &device);
        let mask = Tensor::<2, Int>::from_ints([[1, 1, 1, 1, 0, 0]], &device);
        let padded = model.forward(ids, mask).slice([0..1, 0..4, 0..8]);
        padded
            .into_data()
            .assert_approx_eq::<f32>(&plain.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }

    #[test]
    fn wrong_shapes_and_missing_tensors_are_named() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        // Save a model with a 24-word vocabulary, load it into a 20-word one.
        let mut other = tiny();
        other.vocab_size = 24;
        let mut store = SafetensorsStore::from_file(&path);
        other.init(&device).save_into(&mut store).unwrap();
        let e = Bert::load(&tiny(), &path, &device).unwrap_err().to_string();
        assert!(
            e.contains("tensor embeddings.word_embeddings.weight: expected shape"),
            "{e}"
        );
        let e = Bert::load(&tiny(), dir.path().join("none.safetensors"), &device)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.safetensors"), "{e}");
    }
}
