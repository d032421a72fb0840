//! A fine-tuned BERT text classifier as a self-contained folder, for serving: the encoder's
//! `config.json` and `tokenizer.json`, `classifier.json` (class labels, longest input) and
//! `model.safetensors` (the whole [`BertClassifier`], LoRA adapters merged, through
//! `burn::store`). [`TextClassifierModel`] loads such a folder and returns class probabilities.

use std::path::Path;

use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::error::{NlpError, Result};
use crate::models::{BertClassifier, BertConfig};
use crate::tokenizer::{HfTokenizer, Tokenizer};

/// The metadata file's name inside an exported folder.
pub const META_FILE: &str = "classifier.json";
/// The weights file's name inside an exported folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// What `classifier.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierMeta {
    /// Class names, in the order of the model's outputs.
    pub labels: Vec<String>,
    /// Inputs are truncated to this many tokens (special tokens included).
    pub max_len: usize,
}

/// Writes `model` (adapters merged) into `dir` with the encoder folder's `config.json` and
/// `tokenizer.json` (copied from `encoder_dir`) and `meta`.
///
/// # Errors
/// [`NlpError::Io`] when the folder or a file cannot be written or copied; [`NlpError::Input`] for
/// metadata that does not fit the model (labels, sizes); the weights' recorder errors.
pub fn export_text_classifier(
    model: BertClassifier,
    encoder_dir: impl AsRef<Path>,
    meta: &ClassifierMeta,
    dir: impl AsRef<Path>,
) -> Result<()> {
    let (encoder_dir, dir) = (encoder_dir.as_ref(), dir.as_ref());
    if meta.labels.is_empty() || meta.max_len == 0 {
        return Err(NlpError::Input(
            "a classifier needs at least one label and max_len of at least 1".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| NlpError::io(dir, e))?;
    for file in ["config.json", "tokenizer.json"] {
        let from = encoder_dir.join(file);
        std::fs::copy(&from, dir.join(file)).map_err(|e| NlpError::io(&from, e))?;
    }
    let meta_path = dir.join(META_FILE);
    let json = serde_json::to_vec_pretty(meta).map_err(|e| NlpError::Config {
        path: meta_path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&meta_path, json).map_err(|e| NlpError::io(&meta_path, e))?;
    let weights = dir.join(WEIGHTS_FILE);
    let mut store = SafetensorsStore::from_file(&weights).overwrite(true);
    model
        .merge_lora()
        .save_into(&mut store)
        .map_err(|e| NlpError::Weights {
            path: weights,
            reason: e.to_string(),
        })
}

/// A text classifier read from an exported folder.
#[derive(Debug)]
pub struct TextClassifierModel {
    model: BertClassifier,
    tokenizer: HfTokenizer,
    meta: ClassifierMeta,
    device: Device,
}

impl TextClassifierModel {
    /// Loads a folder written by [`export_text_classifier`] onto `device`.
    ///
    /// # Errors
    /// [`NlpError::Io`] or [`NlpError::Config`] for a missing or malformed file;
    /// [`NlpError::Weights`] when the weights do not fit the architecture.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let meta_path = dir.join(META_FILE);
        let bytes = std::fs::read(&meta_path).map_err(|e| NlpError::io(&meta_path, e))?;
        let meta: ClassifierMeta =
            serde_json::from_slice(&bytes).map_err(|e| NlpError::Config {
                path: meta_path.clone(),
                reason: e.to_string(),
            })?;
        if meta.labels.is_empty() || meta.max_len == 0 {
            return Err(NlpError::Config {
                path: meta_path,
                reason: "labels is empty or max_len is 0".into(),
            });
        }
        let config = BertConfig::from_file(dir.join("config.json"))?;
        let max_len = meta.max_len.min(config.max_position_embeddings);
        let tokenizer =
            HfTokenizer::from_file(dir.join("tokenizer.json"))?.with_max_length(max_len)?;
        let mut model = BertClassifier::new(
            config.init(device),
            config.hidden_size,
            meta.labels.len(),
            device,
        );
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(NlpError::io(
                &weights,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no weights file"),
            ));
        }
        let mut store = SafetensorsStore::from_file(&weights);
        model.load_from(&mut store).map_err(|e| NlpError::Weights {
            path: weights,
            reason: e.to_string(),
        })?;
        Ok(Self {
            model,
            tokenizer,
            meta,
            device: device.clone(),
        })
    }

    /// Class names, in the order of [`classify`](Self::classify)'s probabilities.
    pub fn labels(&self) -> &[String] {
        &self.meta.labels
    }

    /// Class probabilities, one row per text (rows sum to 1).
    ///
    /// # Errors
    /// The tokenizer's errors.
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self
            .tokenizer
            .encode_padded(texts, Some(self.meta.max_len))?;
        let (ids, mask) = batch.to_tensors(&self.device);
        let probs = softmax(self.model.forward(ids, mask), 1);
        let classes = self.meta.labels.len();
        let flat: Vec<f32> = probs
            .into_data()
            .try_to_vec_as()
            .map_err(|e| NlpError::Input(format!("class probabilities: {e:?}")))?;
        Ok(flat.chunks(classes).map(<[f32]>::to_vec).collect())
    }
}
