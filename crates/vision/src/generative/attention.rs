//! Self-attention over the pixels of a feature map, DDPM's `AttnBlock`: group norm, query, key
//! and value projections (1x1 convolutions, here dense layers over the channels), softmax of
//! `q k^T / sqrt(C)` over the key pixels, the output projection, and the input added back.

use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

/// Configuration of [`SpatialAttention`].
#[derive(Config, Debug)]
pub struct SpatialAttentionConfig {
    /// Channels `C`.
    pub channels: usize,
    /// Group norm's groups (must divide `channels`).
    #[config(default = 8)]
    pub groups: usize,
}

impl SpatialAttentionConfig {
    /// Builds the block on `device`.
    pub fn init(&self, device: &Device) -> SpatialAttention {
        let c = self.channels;
        SpatialAttention {
            norm: GroupNormConfig::new(self.groups, c).init(device),
            query: LinearConfig::new(c, c).init(device),
            key: LinearConfig::new(c, c).init(device),
            value: LinearConfig::new(c, c).init(device),
            proj: LinearConfig::new(c, c).init(device),
        }
    }
}

/// One-head self-attention across the `H x W` positions, residual.
#[derive(Module, Debug)]
pub struct SpatialAttention {
    pub(crate) norm: GroupNorm,
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) value: Linear,
    pub(crate) proj: Linear,
}

impl SpatialAttention {
    /// # Shapes
    /// - `x`: `[N, C, H, W]`
    /// - output: `[N, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        // [N, C, H, W] -> [N, HW, C]
        let tokens = kiln_core::ops::group_norm(&self.norm, x.clone())
            .reshape([n, c, h * w])
            .swap_dims(1, 2);
        let q = self.query.forward(tokens.clone());
        let k = self.key.forward(tokens.clone());
        let v = self.value.forward(tokens);
        let scores = q.matmul(k.swap_dims(1, 2)) / (c as f64).sqrt();
        let attended = softmax(scores, 2).matmul(v);
        let out = self
            .proj
            .forward(attended)
            .swap_dims(1, 2)
            .reshape([n, c, h, w]);
        x + out
    }
}
