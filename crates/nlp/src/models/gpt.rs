//! A small GPT (Radford et al., 2018; the nanoGPT layout): token and learned position
//! embeddings, Burn's pre-norm `TransformerEncoder` under a causal mask, a final layer norm
//! and a linear head to next-token logits.
//!
//! Training and [`LanguageModel::logits`] run the whole window through Burn's encoder;
//! [`Gpt::forward_cached`] runs the same layers one step at a time over the key/value cache
//! and left-padded batches that the pretrained decoders use ([`CachedDecoder`]), so
//! [`generate_cached`](crate::generation::generate_cached) continues prompts without recomputing
//! them.

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
use crate::error::{NlpError, Result};
use crate::generation::{CachedDecoder, KvCache, ModelShape, begin_step};

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

impl Gpt {
    /// Next-token logits of every new position (`[B, T, vocab]`), extending `cache`; `mask`
    /// marks real tokens (1) and left padding (0). The layers of [`LanguageModel::logits`]
    /// (Burn's pre-norm encoder layer: `norm_2`, attention, `norm_1`, feed-forward), with
    /// the keys and values of earlier steps taken from the cache. Positions past the
    /// context are an error (the full pass slides its window instead).
    ///
    /// # Errors
    /// [`NlpError::Input`] for inputs the model or the cache cannot take (see
    /// [`begin_step`](crate::generation::begin_step)).
    pub fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>> {
        let [vocab, d] = self.tokens.weight.dims();
        let heads = self.blocks.n_heads;
        if !self.blocks.norm_first {
            return Err(NlpError::Input(
                "gpt: cached decoding follows the pre-norm layout (norm_first)".into(),
            ));
        }
        let hd = d / heads;
        let step = begin_step(
            "gpt",
            ids,
            mask,
            cache,
            &ModelShape {
                vocab,
                max_positions: self.context_len(),
                cache: [self.blocks.layers.len(), heads, hd],
            },
            device,
        )?;
        let (b, t) = (step.batch, step.len);
        let positions: Vec<i64> = step.positions.iter().map(|&p| p as i64).collect();
        let positions = Tensor::<1, Int>::from_ints(positions.as_slice(), device).reshape([b, t]);
        let mut x = self
            .dropout
            .forward(self.tokens.forward(step.ids) + self.positions.forward(positions));
        let mut new_layers = Vec::with_capacity(self.blocks.layers.len());
        for (l, layer) in self.blocks.layers.iter().enumerate() {
            let h = layer.norm_2.forward(x.clone());
            let mha = &layer.mha;
            let split = |y: Tensor<3>| y.reshape([b, t, heads, hd]).swap_dims(1, 2);
            let q = split(mha.query.forward(h.clone()));
            let mut k = split(mha.key.forward(h.clone()));
            let mut v = split(mha.value.forward(h));
            if let Some((pk, pv)) = cache.layer(l) {
                k = Tensor::cat(vec![pk.clone(), k], 2);
                v = Tensor::cat(vec![pv.clone(), v], 2);
            }
            new_layers.push((k.clone(), v.clone()));
            let scores =
                q.matmul(k.swap_dims(2, 3)).div_scalar((hd as f32).sqrt()) + step.bias.clone();
            let weights = if mha.quiet_softmax {
                burn::tensor::activation::quiet_softmax(scores, 3)
            } else {
                burn::tensor::activation::softmax(scores, 3)
            };
            let context = mha
                .dropout
                .forward(weights)
                .matmul(v)
                .swap_dims(1, 2)
                .reshape([b, t, d]);
            x = x.clone() + layer.dropout.forward(mha.output.forward(context));
            let h = layer.norm_1.forward(x.clone());
            x = x + layer.dropout.forward(layer.pwff.forward(h));
        }
        cache.set_layers(new_layers);
        Ok(kiln_core::ops::linear(&self.head, self.norm.forward(x)))
    }
}

impl CachedDecoder for Gpt {
    fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>> {
        Gpt::forward_cached(self, ids, mask, cache, device)
    }

    fn max_positions(&self) -> usize {
        self.context_len()
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

    fn small(device: &Device) -> Gpt {
        GptConfig::new(30)
            .with_block_size(16)
            .with_d_model(16)
            .with_n_heads(2)
            .with_n_layers(2)
            .with_dropout(0.0)
            .init(device)
    }

    /// The cached pass equals the full pass: a prompt, then one token at a time, and a
    /// left-padded row beside a longer one.
    #[test]
    fn cached_steps_equal_the_full_pass() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let gpt = small(&device);
        let seq: Vec<u32> = vec![3, 14, 15, 9, 2, 6, 5, 29];
        let ints: Vec<i64> = seq.iter().map(|&i| i64::from(i)).collect();
        let full =
            gpt.logits(Tensor::<1, Int>::from_ints(ints.as_slice(), &device).reshape([1, 8]));
        let mut cache = KvCache::new();
        let mut parts = vec![
            gpt.forward_cached(&[seq[..5].to_vec()], &[vec![1; 5]], &mut cache, &device)
                .unwrap(),
        ];
        for &id in &seq[5..] {
            parts.push(
                gpt.forward_cached(&[vec![id]], &[vec![1]], &mut cache, &device)
                    .unwrap(),
            );
        }
        Tensor::cat(parts, 1).into_data().assert_approx_eq::<f32>(
            &full.clone().into_data(),
            burn::tensor::Tolerance::absolute(1e-5),
        );
        // The 8-token row left-padded to 11 beside an 11-token one.
        let other: Vec<u32> = (0..11).map(|i| (i * 7 + 1) % 30).collect();
        let mut padded = vec![0u32; 3];
        padded.extend(&seq);
        let mask = vec![vec![1u8; 11], [vec![0u8; 3], vec![1u8; 8]].concat()];
        let batch = gpt
            .forward_cached(&[other, padded], &mask, &mut KvCache::new(), &device)
            .unwrap();
        batch
            .narrow(0, 1, 1)
            .narrow(1, 3, 8)
            .into_data()
            .assert_approx_eq::<f32>(&full.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }

    /// Cached generation continues a prompt with the tokens of the full-recompute loop.
    #[test]
    fn cached_generation_equals_recomputing_generation() {
        use crate::generation::{GenerationConfig, generate_windowed as recompute};
        let device = kiln_core::backend::device("cpu").unwrap();
        let gpt = small(&device);
        let prompt = vec![1u32, 2, 3];
        let config = GenerationConfig::greedy(10);
        let none = |_: &[u32]| String::new();
        let want = recompute(&gpt, &prompt, &config, &device, &none, |_| true).unwrap();
        let got = crate::generation::generate_cached(
            &gpt,
            std::slice::from_ref(&prompt),
            &config,
            &device,
            &none,
            |_, _| true,
        )
        .unwrap();
        assert_eq!(got[0].ids, want.ids);
        assert_eq!(want.ids.len(), 10);
    }
}
