//! A classification head on a pretrained BERT encoder: mean-pooled token vectors (over the
//! attention mask), dropout and a linear layer, trained with cross-entropy by the `kiln-core`
//! trainer. With [`BertClassifier::freeze_encoder`] only the head learns (a fast linear probe);
//! with [`BertClassifier::with_lora`] the head and low-rank adapters on the encoder's linear
//! layers learn; otherwise the whole encoder is fine-tuned.

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use kiln_core::{StepOutput, TrainStep};

use std::path::Path;

use super::pooling::{Pooling, pool};
use crate::batch::{TextBatch, TextClassifier, classification_step};
use crate::error::Result;
use crate::models::Bert;
use crate::models::lora::{self, LoraConfig};

/// The path prefix of the head's tensors.
const HEAD: &str = "head.";

/// An encoder with a classification head.
#[derive(Module, Debug)]
pub struct BertClassifier {
    bert: Bert,
    dropout: Dropout,
    head: Linear,
}

impl BertClassifier {
    /// A head for `classes` classes on `bert` (whose width is `hidden`).
    pub fn new(bert: Bert, hidden: usize, classes: usize, device: &Device) -> Self {
        Self {
            bert,
            dropout: DropoutConfig::new(0.1).init(),
            head: LinearConfig::new(hidden, classes).init(device),
        }
    }

    /// Stops gradients into the encoder: only the head is trained.
    pub fn freeze_encoder(mut self) -> Self {
        self.bert = self.bert.no_grad();
        self
    }

    /// The encoder frozen with low-rank adapters on its linear layers
    /// ([`Bert::with_lora`]): the adapters and the head train.
    ///
    /// # Errors
    /// [`NlpError::Input`](crate::NlpError::Input) for a rank or alpha out of range.
    pub fn with_lora(mut self, config: &LoraConfig, device: &Device) -> Result<Self> {
        self.bert = self.bert.with_lora(config, device)?;
        Ok(self)
    }

    /// The adapters folded into the encoder's weights ([`Bert::merge_lora`]).
    pub fn merge_lora(mut self) -> Self {
        self.bert = self.bert.merge_lora();
        self
    }

    /// Saves what LoRA training changed (the adapters and the head) as safetensors.
    ///
    /// # Errors
    /// [`NlpError::Io`](crate::NlpError::Io) or [`NlpError::Weights`](crate::NlpError::Weights)
    /// when the file cannot be written.
    pub fn save_adapters(&self, config: &LoraConfig, path: &Path) -> Result<()> {
        lora::save_adapters(self, config, &[HEAD], path)
    }

    /// Loads what [`BertClassifier::save_adapters`] saved into a classifier built with
    /// [`BertClassifier::with_lora`] of the same rank.
    ///
    /// # Errors
    /// [`NlpError::Io`](crate::NlpError::Io) when the file cannot be read;
    /// [`NlpError::Weights`](crate::NlpError::Weights) naming a missing or mis-shaped tensor.
    pub fn load_adapters(self, path: &Path) -> Result<Self> {
        lora::load_adapters(self, &[HEAD], path)
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`, `mask`: `[B, T]` (true for tokens)
    /// - output: `[B, classes]`
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        let mask = mask.int();
        let hidden = self.bert.forward(ids, mask.clone());
        let pooled = pool(hidden, mask, Pooling::Mean, false);
        self.head.forward(self.dropout.forward(pooled))
    }
}

impl TrainStep<TextBatch> for BertClassifier {
    fn train_step(&self, batch: TextBatch) -> StepOutput {
        classification_step(self, batch)
    }
}

impl TextClassifier for BertClassifier {
    fn logits(&self, tokens: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        self.forward(tokens, mask)
    }
}
