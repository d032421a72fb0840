//! A small GPT (Radford et al., 2018; the nanoGPT layout): token and learned position
//! embeddings, Burn's pre-norm `TransformerEncoder` under a causal mask, a final layer norm
//! and a linear head to next-token logits.

use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::prelude::*;
use kiln_core::{StepOutput, TrainStep};

use super::lm::{LanguageModel, LmBatch, lm_step};

/// Configuration of [`Gpt`].
#[derive(Config, Debug)]
pub struct GptConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest context (block size).
    #[config(default = 128)]
    pub block_size: usize,
    /// Model width.
    #[config(default = 192)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 6)]
    pub n_heads: usize,
    /// Layers.
    #[config(default = 4)]
    pub n_layers: usize,
    /// Dropout.
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl GptConfig {
    /// Builds the model on `device`.
    pub fn init(&self, device: &Device) -> Gpt {
        Gpt {
            tokens: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device),
            positions: EmbeddingConfig::new(self.block_size, self.d_model).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            blocks: TransformerEncoderConfig::new(
                self.d_model,
                4 * self.d_model,
                self.n_heads,
                self.n_layers,
            )
            .with_dropout(self.dropout)
            .with_norm_first(true)
            .init(device),
            norm: LayerNormConfig::new(self.d_model).init(device),
            head: LinearConfig::new(self.d_model, self.vocab_size).init(device),
        }
    }
}

/// Decoder-only Transformer.
#[derive(Module, Debug)]
pub struct Gpt {
    tokens: Embedding,
    positions: Embedding,
    dropout: Dropout,
    blocks: TransformerEncoder,
    norm: LayerNorm,
    head: Linear,
}

impl LanguageModel for Gpt {
    fn logits(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [n, t] = tokens.dims();
        let block = self.context_len();
        let (tokens, t) = if t > block {
            (tokens.narrow(1, t - block, block), block)
        } else {
            (tokens, t)
        };
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .expand([n, t]);
        let x = self
            .dropout
            .forward(self.tokens.forward(tokens) + self.positions.forward(positions));
        let mask = generate_autoregressive_mask(n, t, &device);
        let h = self
            .blocks
            .forward(TransformerEncoderInput::new(x).mask_attn(mask));
        kiln_core::ops::linear(&self.head, self.norm.forward(h))
    }

    fn context_len(&self) -> usize {
        self.positions.weight.dims()[0]
    }
}

impl TrainStep<LmBatch> for Gpt {
    fn train_step(&self, batch: LmBatch) -> StepOutput {
        lm_step(self, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_future_does_not_leak_into_the_past() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let gpt = GptConfig::new(10)
            .with_block_size(8)
            .with_d_model(16)
            .with_n_heads(2)
            .with_n_layers(1)
            .with_dropout(0.0)
            .init(&device);
        let a = gpt.logits(Tensor::<2, Int>::from_ints([[1, 2, 3, 4]], &device));
        let b = gpt.logits(Tensor::<2, Int>::from_ints([[1, 2, 9, 9]], &device));
        a.clone()
            .narrow(1, 0, 2)
            .into_data()
            .assert_approx_eq::<f32>(
                &b.clone().narrow(1, 0, 2).into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
        let diff: f32 = (a.narrow(1, 2, 1) - b.narrow(1, 2, 1))
            .abs()
            .max()
            .into_scalar();
        assert!(diff > 1e-4, "position 2 must see its own token");
    }
}
