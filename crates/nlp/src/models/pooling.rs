//! Sentence vectors from token vectors, and token-id batches padded for an encoder: the
//! model-level pieces the classifiers and the sentence encoder share ([`crate::sentence`]
//! re-exports them).

use burn::prelude::*;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the tokens with attention mask 1.
    Mean,
    /// The first (`[CLS]`) token's vector.
    Cls,
}

/// Pads token-id sequences to the longest with `pad`.
///
/// # Shapes
/// - output: ids `[B, T]`, mask `[B, T]` (1 for tokens, 0 for padding)
pub fn pad_batch(batch: &[&[u32]], pad: u32, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let (ids, mask) = crate::PaddedBatch::new(batch, pad, None).to_tensors(device);
    (ids, mask.int())
}

/// Pools token vectors into sentence vectors.
///
/// # Shapes
/// - `hidden`: `[B, T, H]`, `mask`: `[B, T]`
/// - output: `[B, H]`
pub fn pool(
    hidden: Tensor<3>,
    mask: Tensor<2, Int>,
    pooling: Pooling,
    normalize: bool,
) -> Tensor<2> {
    let [b, t, h] = hidden.dims();
    let pooled = match pooling {
        Pooling::Mean => {
            let m = mask.float().reshape([b, t, 1]);
            let sum = (hidden * m.clone()).sum_dim(1).reshape([b, h]);
            let count = m.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
            sum / count
        }
        Pooling::Cls => hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]),
    };
    if normalize {
        let norm = pooled.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        pooled / norm
    } else {
        pooled
    }
}
