//! A recurrent text classifier: token embeddings `x_i = Embedding(w_i)`, an LSTM (or GRU)
//! `h_t = LSTM(h_{t-1}, x_t)`, stacked and optionally bidirectional ([`RnnEncoder`]), the
//! concatenation of the mean and the max of the outputs over the real tokens, then a linear
//! layer to class logits.

use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use kiln_core::{StepOutput, TrainStep};

use super::pooling::{Pooling, pool};
use super::rnn::{RnnEncoder, RnnEncoderConfig, RnnKind};
use crate::batch::{TextBatch, TextClassifier, classification_step};

/// Configuration of [`LstmClassifier`].
#[derive(Config, Debug)]
pub struct LstmClassifierConfig {
    /// Vocabulary size (token ids are below it).
    pub vocab_size: usize,
    /// The number of classes.
    pub num_classes: usize,
    /// Embedding width.
    #[config(default = 64)]
    pub embed_dim: usize,
    /// Hidden width (per direction).
    #[config(default = 128)]
    pub hidden: usize,
    /// Read right to left too and concatenate both directions (padding-aware).
    #[config(default = false)]
    pub bidirectional: bool,
    /// Stacked layers.
    #[config(default = 1)]
    pub layers: usize,
    /// LSTM or GRU.
    #[config(default = "RnnKind::Lstm")]
    pub kind: RnnKind,
    /// Dropout on embeddings and pooled features.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl LstmClassifierConfig {
    /// Builds the model on `device`.
    pub fn init(&self, device: &Device) -> LstmClassifier {
        let rnn = RnnEncoderConfig::new(self.embed_dim, self.hidden)
            .with_kind(self.kind)
            .with_layers(self.layers)
            .with_bidirectional(self.bidirectional)
            .with_dropout(self.dropout)
            .init(device);
        let width = rnn.d_output();
        LstmClassifier {
            embedding: EmbeddingConfig::new(self.vocab_size, self.embed_dim).init(device),
            rnn,
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(2 * width, self.num_classes).init(device),
        }
    }
}

/// Embedding + (bi)LSTM + masked mean and max pooling + linear.
#[derive(Module, Debug)]
pub struct LstmClassifier {
    embedding: Embedding,
    rnn: RnnEncoder,
    dropout: Dropout,
    output: Linear,
}

impl LstmClassifier {
    /// Class logits.
    ///
    /// # Shapes
    /// - `tokens`: `[N, T]`, `mask`: `[N, T]` (true on real tokens)
    /// - output: `[N, num_classes]`
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        let x = self.dropout.forward(self.embedding.forward(tokens));
        let h = self.rnn.forward(x, Some(mask.clone())).outputs;
        let [n, t, d] = h.dims();
        let mean = pool(h.clone(), mask.clone().int(), Pooling::Mean, false);
        let pad = mask.bool_not().reshape([n, t, 1]).expand([n, t, d]);
        let max = h.mask_fill(pad, -1.0e4).max_dim(1).reshape([n, d]);
        self.output
            .forward(self.dropout.forward(Tensor::cat(vec![mean, max], 1)))
    }
}

impl TrainStep<TextBatch> for LstmClassifier {
    fn train_step(&self, batch: TextBatch) -> StepOutput {
        classification_step(self, batch)
    }
}

impl TextClassifier for LstmClassifier {
    fn logits(&self, tokens: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        self.forward(tokens, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_does_not_change_the_logits() {
        let device = kiln_core::backend::device("cpu").unwrap();
        for bidirectional in [false, true] {
            let model = LstmClassifierConfig::new(10, 3)
                .with_hidden(8)
                .with_embed_dim(4)
                .with_bidirectional(bidirectional)
                .init(&device);
            let short = model.forward(
                Tensor::<2, Int>::from_ints([[1, 2, 3]], &device),
                Tensor::<2, Bool>::from_bool(TensorData::from([[true, true, true]]), &device),
            );
            let padded = model.forward(
                Tensor::<2, Int>::from_ints([[1, 2, 3, 0, 0]], &device),
                Tensor::<2, Bool>::from_bool(
                    TensorData::from([[true, true, true, false, false]]),
                    &device,
                ),
            );
            assert_eq!(short.dims(), [1, 3]);
            // Both directions skip the padding.
            short.into_data().assert_approx_eq::<f32>(
                &padded.into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
        }
    }
}
