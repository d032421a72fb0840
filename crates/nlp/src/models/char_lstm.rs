//! A recurrent language model: embedding, stacked LSTM ([`RnnEncoder`]), linear layer to
//! next-token logits. Used on characters (`examples/char_lm.rs`).

use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use kiln_core::{StepOutput, TrainStep};

use super::lm::{LanguageModel, LmBatch, lm_step};
use super::rnn::{RnnEncoder, RnnEncoderConfig, RnnKind};

/// Configuration of [`CharLstm`].
#[derive(Config, Debug)]
pub struct CharLstmConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Embedding width.
    #[config(default = 64)]
    pub embed_dim: usize,
    /// LSTM hidden width.
    #[config(default = 512)]
    pub hidden: usize,
    /// Stacked LSTM layers.
    #[config(default = 2)]
    pub layers: usize,
    /// Dropout between layers and before the output.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Context read when sampling.
    #[config(default = 256)]
    pub context_len: usize,
}

impl CharLstmConfig {
    /// Builds the model on `device`.
    pub fn init(&self, device: &Device) -> CharLstm {
        CharLstm {
            embedding: EmbeddingConfig::new(self.vocab_size, self.embed_dim).init(device),
            rnn: RnnEncoderConfig::new(self.embed_dim, self.hidden)
                .with_kind(RnnKind::Lstm)
                .with_layers(self.layers)
                .with_dropout(self.dropout)
                .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(self.hidden, self.vocab_size).init(device),
            context_len: self.context_len,
        }
    }
}

/// Embedding + stacked LSTM + linear.
#[derive(Module, Debug)]
pub struct CharLstm {
    embedding: Embedding,
    rnn: RnnEncoder,
    dropout: Dropout,
    output: Linear,
    context_len: usize,
}

impl LanguageModel for CharLstm {
    fn logits(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        // The embedding and the first layer's input products as one table lookup when that
        // is faster (a small vocabulary, on flex).
        let h = self.rnn.forward_tokens(&self.embedding, tokens).outputs;
        // One [N T, H] x [H, V] product (Burn's Linear on [N, T, H] runs one per sequence).
        kiln_core::ops::linear(&self.output, self.dropout.forward(h))
    }

    fn context_len(&self) -> usize {
        self.context_len
    }
}

impl TrainStep<LmBatch> for CharLstm {
    fn train_step(&self, batch: LmBatch) -> StepOutput {
        lm_step(self, batch)
    }
}
