//! A Transformer encoder text classifier: token and learned position embeddings, Burn's
//! `TransformerEncoder` (pre-norm, padding masked out of attention), mean pooling over the
//! real tokens, and a linear layer to class logits.

use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use kiln_core::{StepOutput, TrainStep};

use super::pooling::{Pooling, pool};
use crate::batch::{TextBatch, TextClassifier, classification_step};

/// Configuration of [`TransformerClassifier`].
#[derive(Config, Debug)]
pub struct TransformerClassifierConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// The number of classes.
    pub num_classes: usize,
    /// Model width.
    #[config(default = 128)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Encoder layers.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Feed-forward width.
    #[config(default = 256)]
    pub d_ff: usize,
    /// Longest input (positions beyond are cut off).
    #[config(default = 128)]
    pub max_len: usize,
    /// Dropout.
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl TransformerClassifierConfig {
    /// Builds the model on `device`.
    pub fn init(&self, device: &Device) -> TransformerClassifier {
        TransformerClassifier {
            tokens: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device),
            positions: EmbeddingConfig::new(self.max_len, self.d_model).init(device),
            encoder: TransformerEncoderConfig::new(
                self.d_model,
                self.d_ff,
                self.n_heads,
                self.n_layers,
            )
            .with_dropout(self.dropout)
            .with_norm_first(true)
            .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(self.d_model, self.num_classes).init(device),
        }
    }
}

/// Embeddings + Transformer encoder + masked mean pooling + linear.
#[derive(Module, Debug)]
pub struct TransformerClassifier {
    tokens: Embedding,
    positions: Embedding,
    encoder: TransformerEncoder,
    dropout: Dropout,
    output: Linear,
}

impl TransformerClassifier {
    /// Class logits.
    ///
    /// # Shapes
    /// - `tokens`, `mask`: `[N, T]` (mask true on real tokens)
    /// - output: `[N, num_classes]`
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        let max_len = self.positions.weight.dims()[0];
        let [n, t] = tokens.dims();
        let (tokens, mask, t) = if t > max_len {
            (
                tokens.narrow(1, 0, max_len),
                mask.narrow(1, 0, max_len),
                max_len,
            )
        } else {
            (tokens, mask, t)
        };
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .expand([n, t]);
        let x = self.tokens.forward(tokens) + self.positions.forward(positions);
        let x = self.dropout.forward(x);
        let h = self
            .encoder
            .forward(TransformerEncoderInput::new(x).mask_pad(mask.clone().bool_not()));
        let pooled = pool(h, mask.int(), Pooling::Mean, false);
        self.output.forward(pooled)
    }
}

impl TrainStep<TextBatch> for TransformerClassifier {
    fn train_step(&self, batch: TextBatch) -> StepOutput {
        classification_step(self, batch)
    }
}

impl TextClassifier for TransformerClassifier {
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
        let model = TransformerClassifierConfig::new(20, 3)
            .with_d_model(16)
            .with_d_ff(32)
            .with_n_heads(2)
            .with_dropout(0.0)
            .init(&device);
        let short = model.forward(
            Tensor::<2, Int>::from_ints([[4, 5, 6]], &device),
            Tensor::<2, Bool>::from_bool(TensorData::from([[true, true, true]]), &device),
        );
        let padded = model.forward(
            Tensor::<2, Int>::from_ints([[4, 5, 6, 0, 0]], &device),
            Tensor::<2, Bool>::from_bool(
                TensorData::from([[true, true, true, false, false]]),
                &device,
            ),
        );
        short
            .into_data()
            .assert_approx_eq::<f32>(&padded.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }
}
