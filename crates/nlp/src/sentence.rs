//! Sentence embeddings from a sentence-transformers folder (Reimers and Gurevych, 2019,
//! "Sentence-BERT"): tokenize with the folder's `tokenizer.json` (truncated at
//! `max_seq_length`, special tokens included), run the BERT encoder, pool the token vectors
//! over the attention mask (mean, or the `[CLS]` vector, as `1_Pooling/config.json` says) and
//! L2-normalise when `modules.json` lists a `Normalize` module.
//!
//! Texts are sorted by length and batched so that a batch pads to its own longest text; the
//! output keeps the input order.
//!
//! On a CPU device (flex, ndarray) without autodiff, encoding runs on [`BertCpu`], the same
//! forward pass on host memory (one GEMM per product, fused row loops), built from the model's
//! weights when the encoder is loaded: 1.7x the throughput of the tensor path at sentence
//! sizes (534 against 317 sentences/s in `cargo xtask bench --filter minilm`), both paths
//! within 3.3e-7 of the Python reference. [`SentenceEncoder::with_cpu_kernels`] turns it off.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::prelude::*;
use serde::Deserialize;

use crate::error::{NlpError, Result};
pub use crate::models::pooling::{Pooling, pad_batch, pool};
use crate::models::{Bert, BertConfig, BertCpu};
use crate::tokenizer::{Encoding, HfTokenizer, Tokenizer};

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct SbertConfig {
    max_seq_length: Option<usize>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| NlpError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| NlpError::Config {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A pretrained sentence encoder.
#[derive(Debug)]
pub struct SentenceEncoder {
    tokenizer: HfTokenizer,
    model: Bert,
    pooling: Pooling,
    normalize: bool,
    max_seq_length: usize,
    dim: usize,
    device: Device,
    /// Whether CPU inference may use [`BertCpu`].
    cpu_kernels: bool,
    /// Whether [`BertCpu`] multiplies in 8 bits ([`SentenceEncoder::with_int8`]).
    int8: bool,
    /// The host copy of the weights, built on the first CPU encode.
    cpu: OnceLock<BertCpu>,
}

impl SentenceEncoder {
    /// Loads a sentence-transformers (or plain BERT) folder onto `device`: `config.json`,
    /// `model.safetensors`, `tokenizer.json`, and when present `modules.json`,
    /// `1_Pooling/config.json` and `sentence_bert_config.json`. Without the
    /// sentence-transformers files: mean pooling, normalisation, the model's longest input.
    ///
    /// # Errors
    /// [`NlpError::Io`], [`NlpError::Config`], [`NlpError::Tokenizer`] or [`NlpError::Weights`] for
    /// a missing or malformed file, naming it.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(dir.join("config.json"))?;
        let mut pooling = Pooling::Mean;
        let mut normalize = true;
        let modules = dir.join("modules.json");
        if modules.is_file() {
            let entries: Vec<ModuleEntry> = read_json(&modules)?;
            normalize = entries.iter().any(|m| m.kind.ends_with(".Normalize"));
            for m in &entries {
                let known = [".Transformer", ".Pooling", ".Normalize"];
                if !known.iter().any(|k| m.kind.ends_with(k)) {
                    return Err(NlpError::Config {
                        path: modules.clone(),
                        reason: format!("module type {} is not supported", m.kind),
                    });
                }
                if m.kind.ends_with(".Pooling") {
                    pooling = read_pooling(&dir.join(&m.path).join("config.json"))?;
                }
            }
        }
        let sbert = dir.join("sentence_bert_config.json");
        let max_seq_length = if sbert.is_file() {
            read_json::<SbertConfig>(&sbert)?
                .max_seq_length
                .unwrap_or(config.max_position_embeddings)
        } else {
            config.max_position_embeddings
        }
        .min(config.max_position_embeddings);
        let tokenizer =
            HfTokenizer::from_file(dir.join("tokenizer.json"))?.with_max_length(max_seq_length)?;
        let model = Bert::load(&config, dir.join("model.safetensors"), device)?;
        Self {
            tokenizer,
            model,
            pooling,
            normalize,
            max_seq_length,
            dim: config.hidden_size,
            device: device.clone(),
            cpu_kernels: true,
            int8: false,
            cpu: OnceLock::new(),
        }
        .with_host_engine()
    }

    /// Builds the [`BertCpu`] copy of the weights now when encoding will use it, so that the
    /// first batch does not pay for it.
    fn with_host_engine(self) -> Result<Self> {
        self.cpu_engine()?;
        Ok(self)
    }

    /// Whether encoding on a CPU device may use [`BertCpu`] (on by default): off, every batch
    /// goes through the Burn module on the device, as it always does on a GPU or with
    /// autodiff.
    pub fn with_cpu_kernels(mut self, on: bool) -> Self {
        self.cpu_kernels = on;
        if !on {
            self.cpu = OnceLock::new();
        }
        self
    }

    /// Whether CPU encoding multiplies the dense layers in 8 bits ([`BertCpu::with_int8`]:
    /// weights per 32 inputs, each token's inputs per 32 values, integer dot products; off
    /// by default). Only the host engine has it: on a GPU, with autodiff or with
    /// [`SentenceEncoder::with_cpu_kernels`] off, encoding stays f32.
    ///
    /// # Errors
    /// A non-finite weight (it has no 8-bit value).
    pub fn with_int8(mut self, on: bool) -> Result<Self> {
        if self.int8 != on {
            self.int8 = on;
            self.cpu = OnceLock::new();
        }
        self.with_host_engine()
    }

    /// The host engine, when this encoder should use it (built by `load`, or here on the
    /// first call after it was dropped and switched back on).
    fn cpu_engine(&self) -> Result<Option<&BertCpu>> {
        let on_cpu = kiln_core::Backend::of(&self.device).is_some_and(|b| b.is_cpu());
        if !self.cpu_kernels || !on_cpu || self.device.is_autodiff() {
            return Ok(None);
        }
        if let Some(engine) = self.cpu.get() {
            return Ok(Some(engine));
        }
        let mut engine = BertCpu::from_bert(&self.model)?;
        if self.int8 {
            engine = engine.with_int8()?;
        }
        Ok(Some(self.cpu.get_or_init(|| engine)))
    }

    /// The embedding size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The longest input in tokens, special tokens included.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &HfTokenizer {
        &self.tokenizer
    }

    /// The encoder.
    pub fn bert(&self) -> &Bert {
        &self.model
    }

    /// Takes the encoder out (to fine-tune it, see
    /// [`BertClassifier`](crate::models::BertClassifier)).
    pub fn into_bert(self) -> Bert {
        self.model
    }

    /// The pooling mode.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Token ids of `text` as the encoder sees them.
    ///
    /// # Errors
    /// The tokenizer's errors.
    pub fn tokenize(&self, text: &str) -> Result<Encoding> {
        self.tokenizer.encode(text)
    }

    /// Embeds `texts`, `batch_size` at a time, in input order.
    ///
    /// # Errors
    /// [`NlpError::Input`] for `batch_size = 0`; the tokenizer's errors.
    pub fn encode(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        if batch_size == 0 {
            return Err(NlpError::Input("batch size must be at least 1".into()));
        }
        let encodings = self.tokenizer.encode_batch(texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].ids.len()));
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| encodings[i].ids.as_slice()).collect();
            let vectors = self.embed_ids(&batch)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Embeds token-id sequences (already tokenized) as one padded batch.
    ///
    /// # Errors
    /// [`NlpError::Input`] for an empty sequence or an id past the vocabulary.
    pub fn embed_ids(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(engine) = self.cpu_engine()? {
            let (hidden, offsets) = engine.forward(batch)?;
            return Ok(pool_host(
                &hidden,
                &offsets,
                self.dim,
                self.pooling,
                self.normalize,
            ));
        }
        let (ids, mask) = pad_batch(batch, self.tokenizer.pad_id(), &self.device);
        let hidden = self.model.forward(ids, mask.clone());
        let pooled = pool(hidden, mask, self.pooling, self.normalize);
        let flat: Vec<f32> = pooled
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| NlpError::Input(format!("reading embeddings: {e:?}")))?;
        Ok(flat.chunks(self.dim).map(<[f32]>::to_vec).collect())
    }
}

fn read_pooling(path: &PathBuf) -> Result<Pooling> {
    let p: PoolingFile = read_json(path)?;
    let modes = [
        p.pooling_mode_mean_tokens,
        p.pooling_mode_cls_token,
        p.pooling_mode_max_tokens,
        p.pooling_mode_mean_sqrt_len_tokens,
    ];
    match modes {
        [true, false, false, false] => Ok(Pooling::Mean),
        [false, true, false, false] => Ok(Pooling::Cls),
        _ => Err(NlpError::Config {
            path: path.to_owned(),
            reason: "only pooling_mode_mean_tokens or pooling_mode_cls_token (one of them) is \
                     supported"
                .into(),
        }),
    }
}

/// [`pool`] on host vectors: `hidden` is the packed `[N, H]` output of [`BertCpu::forward`],
/// sequence `b` at rows `offsets[b]..offsets[b + 1]`.
fn pool_host(
    hidden: &[f32],
    offsets: &[usize],
    h: usize,
    pooling: Pooling,
    normalize: bool,
) -> Vec<Vec<f32>> {
    offsets
        .windows(2)
        .map(|w| {
            let rows = &hidden[w[0] * h..w[1] * h];
            let mut v = match pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0.0f32; h];
                    for row in rows.chunks(h) {
                        for (s, x) in sum.iter_mut().zip(row) {
                            *s += x;
                        }
                    }
                    let count = ((w[1] - w[0]) as f32).max(1e-9);
                    sum.iter_mut().for_each(|s| *s /= count);
                    sum
                }
            };
            if normalize {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
            v
        })
        .collect()
}
