//! GPT-2 (Radford et al., 2019) with Hugging Face weights: `GPT2LMHeadModel` of
//! `transformers` (`modeling_gpt2.py`): learned positions, pre-norm blocks, fused
//! query/key/value projection, tanh-GELU, output projection tied to the token embeddings;
//! with a key/value cache for generation and left-padded batches.
//!
//! [`Gpt2Config`] reads `config.json` and refuses what this implementation does not do.
//! [`Gpt2::load`] reads `model.safetensors`, or the shards that `model.safetensors.index.json`
//! lists, through burn-store with explicit key remapping:
//!
//! | Hugging Face key | Kiln module path |
//! |---|---|
//! | `transformer.` prefix (`GPT2LMHeadModel` files) | dropped |
//! | `*.ln_1` / `ln_2` / `ln_f` `.weight` / `.bias` | `.gamma` / `.beta` |
//! | `*.c_attn`, `c_proj`, `c_fc` `.weight`, `[in, out]` (`Conv1D`) | as they are (Burn's layout) |
//! | `lm_head.weight`, `*.attn.bias`, `*.attn.masked_bias` | not used (tied head, old buffers) |
//!
//! Any other missing, unexpected or wrongly shaped tensor is an error naming it.
//!
//! Positions follow `generate`: with an attention mask, the first real token of each row is
//! position 0 (`cumsum(mask) - 1`), so left padding does not shift a prompt.

use std::path::{Path, PathBuf};

use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::store::SafetensorsStore;
use burn::tensor::activation::{gelu, gelu_approximate, softmax};
use serde::Deserialize;

use crate::error::Result;
use crate::generation::{CachedDecoder, KvCache, ModelShape, begin_step};
use crate::models::decoder_weights::{self, weight_files};
use crate::models::lora::{self, Lora, LoraConfig, adapted};

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
fn yes() -> bool {
    true
}

/// A Hugging Face GPT-2 `config.json` (the fields this implementation reads).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest context (learned positions).
    pub n_positions: usize,
    /// Model width.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Feed-forward width (`None`: 4 x `n_embd`).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Layer norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `gelu_new` / `gelu_pytorch_tanh` (tanh approximation) or `gelu` (exact).
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// Scores divided by the square root of the head size (only `true` is supported).
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// Per-layer score scaling (only `false` is supported).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Upcast reordering of attention (only `false` is supported).
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    /// `gpt2` (or absent).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id.
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

impl Gpt2Config {
    /// Reads and checks a `config.json`.
    ///
    /// # Errors
    /// [`NlpError::Io`](crate::NlpError::Io) when the file cannot be read;
    /// [`NlpError::Config`](crate::NlpError::Config) naming it when it does not parse or holds
    /// values this implementation does not support.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        super::hf_config::read_config(path.as_ref(), "GPT-2", Gpt2Config::check)
    }

    /// Checks what this implementation supports, naming the first field that it does not.
    ///
    /// # Errors
    /// The first unsupported field, named.
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(t) = self.model_type.as_deref()
            && t != "gpt2"
        {
            return Err(format!(
                "model_type '{t}': this loader reads GPT-2 (for the Llama family use \
                 the Llama loader)"
            ));
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu"
        ) {
            return Err(format!(
                "activation_function '{}' is not supported (gelu_new, gelu_pytorch_tanh, gelu)",
                self.activation_function
            ));
        }
        for (field, on, supported) in [
            ("scale_attn_weights", self.scale_attn_weights, true),
            (
                "scale_attn_by_inverse_layer_idx",
                self.scale_attn_by_inverse_layer_idx,
                false,
            ),
            (
                "reorder_and_upcast_attn",
                self.reorder_and_upcast_attn,
                false,
            ),
        ] {
            if on != supported {
                return Err(format!("{field} {on} is not supported"));
            }
        }
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if v == 0 {
                return Err(format!("{field} is 0"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            ));
        }
        Ok(())
    }

    /// A model of this shape with initial weights.
    pub fn init(&self, device: &Device) -> Gpt2 {
        let e = self.n_embd;
        let inner = self.n_inner.unwrap_or(4 * e);
        let ln = || {
            LayerNormConfig::new(e)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device)
        };
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        Gpt2 {
            wte: EmbeddingConfig::new(self.vocab_size, e).init(device),
            wpe: EmbeddingConfig::new(self.n_positions, e).init(device),
            h: (0..self.n_layer)
                .map(|_| Block {
                    ln_1: ln(),
                    attn: Attention {
                        c_attn: lin(e, 3 * e),
                        c_proj: lin(e, e),
                    },
                    ln_2: ln(),
                    mlp: Mlp {
                        c_fc: lin(e, inner),
                        c_proj: lin(inner, e),
                    },
                    lora: None,
                })
                .collect(),
            ln_f: ln(),
            heads: self.n_head,
            exact_gelu: self.activation_function == "gelu",
        }
    }
}

/// Self-attention with the fused query/key/value projection.
#[derive(Module, Debug)]
pub struct Attention {
    c_attn: Linear,
    c_proj: Linear,
}

/// The feed-forward block.
#[derive(Module, Debug)]
pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
}

/// One pre-norm block.
#[derive(Module, Debug)]
pub struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
    /// Low-rank adapters on the block's four linear layers ([`Gpt2::with_lora`]).
    lora: Option<BlockLora>,
}

/// The adapters of one block, one per linear layer.
#[derive(Module, Debug)]
pub struct BlockLora {
    c_attn: Lora,
    attn_c_proj: Lora,
    c_fc: Lora,
    mlp_c_proj: Lora,
}

/// GPT-2 with its language-model head (tied to `wte`).
#[derive(Module, Debug)]
pub struct Gpt2 {
    wte: Embedding,
    wpe: Embedding,
    h: Vec<Block>,
    ln_f: LayerNorm,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    exact_gelu: bool,
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        bias: Tensor<4>,
        heads: usize,
        exact_gelu: bool,
        past: Option<&(Tensor<4>, Tensor<4>)>,
    ) -> (Tensor<3>, (Tensor<4>, Tensor<4>)) {
        let [b, t, e] = x.dims();
        let d = e / heads;
        let lora = self.lora.as_ref();
        let qkv = adapted(
            &self.attn.c_attn,
            lora.map(|l| &l.c_attn),
            self.ln_1.forward(x.clone()),
        );
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * e, e)
                .reshape([b, t, heads, d])
                .swap_dims(1, 2)
        };
        let (q, mut k, mut v) = (split(0), split(1), split(2));
        if let Some((pk, pv)) = past {
            k = Tensor::cat(vec![pk.clone(), k], 2);
            v = Tensor::cat(vec![pv.clone(), v], 2);
        }
        let scores = q
            .matmul(k.clone().swap_dims(2, 3))
            .div_scalar((d as f64).sqrt())
            + bias;
        let a = softmax(scores, 3)
            .matmul(v.clone())
            .swap_dims(1, 2)
            .reshape([b, t, e]);
        let x = x + adapted(&self.attn.c_proj, lora.map(|l| &l.attn_c_proj), a);
        let hidden = adapted(
            &self.mlp.c_fc,
            lora.map(|l| &l.c_fc),
            self.ln_2.forward(x.clone()),
        );
        let hidden = if exact_gelu {
            gelu(hidden)
        } else {
            gelu_approximate(hidden)
        };
        (
            x + adapted(&self.mlp.c_proj, lora.map(|l| &l.mlp_c_proj), hidden),
            (k, v),
        )
    }
}

impl Gpt2 {
    /// The model frozen, with a low-rank adapter on each of the four linear layers of every
    /// block (`c_attn`, the attention's `c_proj`, `c_fc`, the MLP's `c_proj`): only the
    /// adapters train. Replaces adapters already there.
    ///
    /// # Errors
    /// [`NlpError::Input`](crate::NlpError::Input) for a rank or alpha out of range.
    pub fn with_lora(self, config: &LoraConfig, device: &Device) -> Result<Self> {
        config.check()?;
        let mut model = self.no_grad();
        for block in &mut model.h {
            block.lora = Some(BlockLora {
                c_attn: config.for_linear(&block.attn.c_attn, device),
                attn_c_proj: config.for_linear(&block.attn.c_proj, device),
                c_fc: config.for_linear(&block.mlp.c_fc, device),
                mlp_c_proj: config.for_linear(&block.mlp.c_proj, device),
            });
        }
        Ok(model)
    }

    /// Whether any block carries adapters.
    pub fn has_lora(&self) -> bool {
        self.h.iter().any(|b| b.lora.is_some())
    }

    /// The adapters folded into the weights (`W + s A B`) and removed.
    pub fn merge_lora(mut self) -> Self {
        for block in &mut self.h {
            let Some(l) = block.lora.take() else { continue };
            block.attn.c_attn = lora::merge(block.attn.c_attn.clone(), &l.c_attn);
            block.attn.c_proj = lora::merge(block.attn.c_proj.clone(), &l.attn_c_proj);
            block.mlp.c_fc = lora::merge(block.mlp.c_fc.clone(), &l.c_fc);
            block.mlp.c_proj = lora::merge(block.mlp.c_proj.clone(), &l.mlp_c_proj);
        }
        self
    }

    /// Saves the adapters as safetensors ([`lora::save_adapters`]).
    ///
    /// # Errors
    /// [`NlpError::Io`](crate::NlpError::Io) or [`NlpError::Weights`](crate::NlpError::Weights)
    /// when the file cannot be written.
    pub fn save_adapters(&self, config: &LoraConfig, path: &Path) -> Result<()> {
        lora::save_adapters(self, config, &[], path)
    }

    /// Loads adapters saved by [`Gpt2::save_adapters`] into a model built with
    /// [`Gpt2::with_lora`] of the same rank.
    ///
    /// # Errors
    /// [`NlpError::Io`](crate::NlpError::Io) when the file cannot be read;
    /// [`NlpError::Weights`](crate::NlpError::Weights) naming a missing or mis-shaped tensor.
    pub fn load_adapters(self, path: &Path) -> Result<Self> {
        lora::load_adapters(self, &[], path)
    }

    /// The longest context.
    pub fn max_positions(&self) -> usize {
        self.wpe.weight.dims()[0]
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.wte.weight.dims()[0]
    }

    /// Next-token logits of every new position, extending `cache` (empty for a fresh
    /// sequence). `mask` marks real tokens (1) and left padding (0) of the new positions.
    ///
    /// # Shapes
    /// - `ids`, `mask`: `[B, T]`; output `[B, T, vocab]`
    ///
    /// # Errors
    /// [`NlpError::Input`](crate::NlpError::Input) for rows of unequal or zero length, a mask of
    /// another shape, an id past the vocabulary, a position past the context, or a cache of another
    /// model or batch size.
    pub fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>> {
        let vocab = self.vocab_size();
        let step = begin_step(
            "gpt2",
            ids,
            mask,
            cache,
            &ModelShape {
                vocab,
                max_positions: self.max_positions(),
                cache: [
                    self.h.len(),
                    self.heads,
                    self.wte.weight.dims()[1] / self.heads,
                ],
            },
            device,
        )?;
        let positions: Vec<i64> = step.positions.iter().map(|&p| p as i64).collect();
        let pos_t = Tensor::<1, Int>::from_ints(positions.as_slice(), device)
            .reshape([step.batch, step.len]);
        let mut x = self.wte.forward(step.ids) + self.wpe.forward(pos_t);
        let mut new_layers = Vec::with_capacity(self.h.len());
        for (l, block) in self.h.iter().enumerate() {
            let (y, kv) = block.forward(
                x,
                step.bias.clone(),
                self.heads,
                self.exact_gelu,
                cache.layer(l),
            );
            x = y;
            new_layers.push(kv);
        }
        cache.set_layers(new_layers);
        let x = self.ln_f.forward(x);
        let [_, _, e] = x.dims();
        let head = self.wte.weight.val().transpose().reshape([1, e, vocab]);
        Ok(x.matmul(head))
    }

    /// Reads a Hugging Face GPT-2 folder: `config.json` and `model.safetensors` (or the shards
    /// of `model.safetensors.index.json`).
    ///
    /// # Errors
    /// As [`Gpt2Config::from_file`], [`weight_files`](super::weight_files) and [`Gpt2::load`].
    pub fn from_folder(dir: impl AsRef<Path>, device: &Device) -> Result<(Gpt2Config, Self)> {
        let dir = dir.as_ref();
        let config = Gpt2Config::from_file(dir.join("config.json"))?;
        let files = weight_files(dir)?;
        let model = Self::load(&config, &files, device)?;
        Ok((config, model))
    }

    /// Builds the model of `config` and loads every tensor from `files` (one file, or the
    /// shards of a sharded checkpoint); half-precision weights become f32.
    ///
    /// # Errors
    /// [`NlpError::Weights`](crate::NlpError::Weights) naming every missing, extra or mis-shaped
    /// tensor; [`NlpError::Io`](crate::NlpError::Io) when a file cannot be read.
    pub fn load(config: &Gpt2Config, files: &[PathBuf], device: &Device) -> Result<Self> {
        decoder_weights::load(
            config.init(device),
            files,
            |path| {
                SafetensorsStore::from_file(path)
                    .with_key_remapping(r"^transformer\.", "")
                    .with_key_remapping(r"(ln_\d|ln_f)\.weight$", "$1.gamma")
                    .with_key_remapping(r"(ln_\d|ln_f)\.bias$", "$1.beta")
            },
            |unused| {
                unused == "lm_head.weight"
                    || unused.ends_with(".attn.bias")
                    || unused.ends_with(".attn.masked_bias")
            },
        )
    }
}

impl CachedDecoder for Gpt2 {
    fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>> {
        Gpt2::forward_cached(self, ids, mask, cache, device)
    }

    fn max_positions(&self) -> usize {
        Gpt2::max_positions(self)
    }
}
