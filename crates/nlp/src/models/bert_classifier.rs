//! A classification head on a pretrained BERT encoder: mean-pooled token vectors (over the
//! attention mask), dropout and a linear layer, trained with cross-entropy by the `kiln-core`
//! trainer. With [`BertClassifier::freeze_encoder`] only the head learns (a fast linear probe);
//! otherwise the whole encoder is fine-tuned.

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use kiln_core::{StepOutput, TrainStep};

use crate::batch::{TextBatch, TextClassifier, classification_step};
use crate::models::Bert;
use crate::sentence::{Pooling, pool};

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
