//! A text classifier: token embeddings `x_i = Embedding(w_i)`, an LSTM `h_t = LSTM(h_{t-1}, x_t)`
//! (Burn's `Lstm`, or `BiLstm` when bidirectional), mean-pooled over the real tokens, then a
//! linear layer to class logits.

use burn::nn::{
    BiLstm, BiLstmConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, Lstm, LstmConfig,
};
use burn::prelude::*;
use kiln_core::loss::CrossEntropy;
use kiln_core::{StepOutput, TrainStep};

use crate::batch::TextBatch;

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
    /// LSTM hidden width (per direction).
    #[config(default = 128)]
    pub hidden: usize,
    /// Run a second LSTM right to left and concatenate both. Burn's `BiLstm` reads the padded
    /// batch, so its right-to-left pass starts on padding: batch sequences of similar length.
    #[config(default = false)]
    pub bidirectional: bool,
}

impl LstmClassifierConfig {
    /// Builds the model on `device`.
    pub fn init(&self, device: &Device) -> LstmClassifier {
        let (lstm, bilstm) = if self.bidirectional {
            (
                None,
                Some(BiLstmConfig::new(self.embed_dim, self.hidden, true).init(device)),
            )
        } else {
            (
                Some(LstmConfig::new(self.embed_dim, self.hidden, true).init(device)),
                None,
            )
        };
        let width = self.hidden * if self.bidirectional { 2 } else { 1 };
        LstmClassifier {
            embedding: EmbeddingConfig::new(self.vocab_size, self.embed_dim).init(device),
            lstm,
            bilstm,
            output: LinearConfig::new(width, self.num_classes).init(device),
        }
    }
}

/// Embedding + (bi)LSTM + masked mean pooling + linear.
#[derive(Module, Debug)]
pub struct LstmClassifier {
    embedding: Embedding,
    lstm: Option<Lstm>,
    bilstm: Option<BiLstm>,
    output: Linear,
}

impl LstmClassifier {
    /// Class logits.
    ///
    /// # Shapes
    /// - `tokens`: `[N, T]`, `mask`: `[N, T]` (true on real tokens)
    /// - output: `[N, num_classes]`
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        let x = self.embedding.forward(tokens);
        let h = match (&self.lstm, &self.bilstm) {
            (Some(lstm), _) => lstm.forward(x, None).0,
            (None, Some(bilstm)) => bilstm.forward(x, None).0,
            (None, None) => unreachable!("the config builds one of the two"),
        };
        let [n, t, _] = h.dims();
        let weights = mask.float().reshape([n, t, 1]);
        let counts = weights.clone().sum_dim(1).clamp_min(1.0);
        let pooled = (h * weights).sum_dim(1) / counts;
        self.output.forward(pooled.flatten(1, 2))
    }
}

impl TrainStep<TextBatch> for LstmClassifier {
    fn train_step(&self, batch: TextBatch) -> StepOutput {
        let logits = self.forward(batch.tokens, batch.mask);
        let loss = CrossEntropy::new().forward(logits.clone(), batch.targets.clone());
        StepOutput::classification(loss, logits, batch.targets)
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
            if !bidirectional {
                // A left-to-right LSTM never sees the trailing padding of the real positions.
                short.into_data().assert_approx_eq::<f32>(
                    &padded.into_data(),
                    burn::tensor::Tolerance::absolute(1e-5),
                );
            }
        }
    }
}
