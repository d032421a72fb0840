//! A small class-conditional U-Net for diffusion on 28x28 (or any multiple of 4) images: the
//! noise predictor of [`Ddpm`](super::Ddpm).
//!
//! ```text
//! conv 3x3 -> res(c0) @ S ------------------------------------------ concat -> res(c0) -> out
//!              down (conv 3x3, stride 2) -> res(c1) @ S/2 --- concat -> res(c1) -^ up x2
//!                                     down -> res(c2), attention, res(c2) @ S/4 -^ up x2
//! ```
//!
//! Every residual block is DDPM's: group norm, SiLU, 3x3 convolution, plus the projected
//! time-and-class embedding, group norm, SiLU, 3x3 convolution, plus the input (through a 1x1
//! convolution when the width changes). The step's [`TimeEmbedding`] and a learned class
//! embedding are summed; class index `num_classes` is "no class" (classifier-free guidance
//! trains on it with some probability and samples with both).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;
use kiln_core::ops::{conv2d_layer, group_norm_silu};

use super::attention::{SpatialAttention, SpatialAttentionConfig};
use super::embedding::{TimeEmbedding, TimeEmbeddingConfig};

/// Configuration of [`UNet`].
#[derive(Config, Debug)]
pub struct UNetConfig {
    /// Image channels.
    #[config(default = 1)]
    pub channels: usize,
    /// The number of classes (the embedding has one more row: "no class").
    #[config(default = 10)]
    pub num_classes: usize,
    /// Widths at full, half and quarter resolution.
    #[config(default = "[32, 64, 64]")]
    pub widths: [usize; 3],
    /// Group norm's groups (divides every width).
    #[config(default = 8)]
    pub groups: usize,
    /// The time-and-class embedding's size.
    #[config(default = 128)]
    pub embed_dim: usize,
    /// Self-attention at quarter resolution.
    #[config(default = true)]
    pub attention: bool,
}

fn conv(cin: usize, cout: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

impl UNetConfig {
    /// Checks the widths against the groups.
    ///
    /// # Errors
    /// [`VisionError::Parameter`](crate::VisionError::Parameter) naming the width that the
    /// groups do not divide, or a zero size.
    pub fn check(&self) -> crate::error::Result<()> {
        let bad = |reason: String| crate::VisionError::Parameter {
            name: "unet",
            reason,
        };
        if self.groups == 0 || self.channels == 0 || self.num_classes == 0 {
            return Err(bad("groups, channels and classes must be at least 1".into()));
        }
        if let Some(w) = self
            .widths
            .iter()
            .find(|&&w| w == 0 || w % self.groups != 0)
        {
            return Err(bad(format!(
                "width {w} is not a positive multiple of {} groups",
                self.groups
            )));
        }
        if self.embed_dim < 2 || !self.embed_dim.is_multiple_of(2) {
            return Err(bad(format!(
                "embed_dim {}: expected an even number, at least 2",
                self.embed_dim
            )));
        }
        Ok(())
    }

    /// Builds the network on `device` (call [`check`](Self::check) first for a typed error
    /// instead of a panic on bad widths).
    pub fn init(&self, device: &Device) -> UNet {
        let [c0, c1, c2] = self.widths;
        let (g, e) = (self.groups, self.embed_dim);
        let res = |cin, cout| {
            ResBlockConfig::new(cin, cout, e)
                .with_groups(g)
                .init(device)
        };
        UNet {
            time: TimeEmbeddingConfig::new(e, e).init(device),
            class: EmbeddingConfig::new(self.num_classes + 1, e).init(device),
            conv_in: conv(self.channels, c0, 3, 1, device),
            down0: res(c0, c0),
            downsample0: conv(c0, c0, 3, 2, device),
            down1: res(c0, c1),
            downsample1: conv(c1, c1, 3, 2, device),
            mid1: res(c1, c2),
            attention: self
                .attention
                .then(|| SpatialAttentionConfig::new(c2).with_groups(g).init(device)),
            mid2: res(c2, c2),
            up1: res(c2 + c1, c1),
            up0: res(c1 + c0, c0),
            norm_out: GroupNormConfig::new(g, c0).init(device),
            conv_out: conv(c0, self.channels, 3, 1, device),
            num_classes: self.num_classes,
            channels: self.channels,
        }
    }
}

/// Configuration of [`ResBlock`].
#[derive(Config, Debug)]
pub struct ResBlockConfig {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// The embedding's size.
    pub embed_dim: usize,
    /// Group norm's groups.
    #[config(default = 8)]
    pub groups: usize,
}

impl ResBlockConfig {
    /// Builds the block on `device`.
    pub fn init(&self, device: &Device) -> ResBlock {
        ResBlock {
            norm1: GroupNormConfig::new(self.groups, self.cin).init(device),
            conv1: conv(self.cin, self.cout, 3, 1, device),
            embed: LinearConfig::new(self.embed_dim, self.cout).init(device),
            norm2: GroupNormConfig::new(self.groups, self.cout).init(device),
            conv2: conv(self.cout, self.cout, 3, 1, device),
            skip: (self.cin != self.cout).then(|| conv(self.cin, self.cout, 1, 1, device)),
        }
    }
}

/// DDPM's residual block with the embedding added between its two convolutions.
#[derive(Module, Debug)]
pub struct ResBlock {
    pub(crate) norm1: GroupNorm,
    pub(crate) conv1: Conv2d,
    pub(crate) embed: Linear,
    pub(crate) norm2: GroupNorm,
    pub(crate) conv2: Conv2d,
    pub(crate) skip: Option<Conv2d>,
}

impl ResBlock {
    /// # Shapes
    /// - `x`: `[N, C_in, H, W]`, `emb`: `[N, E]`
    /// - output: `[N, C_out, H, W]`
    pub fn forward(&self, x: Tensor<4>, emb: Tensor<2>) -> Tensor<4> {
        let h = conv2d_layer(&self.conv1, group_norm_silu(&self.norm1, x.clone()));
        let e: Tensor<4> = self
            .embed
            .forward(silu(emb))
            .unsqueeze_dim::<3>(2)
            .unsqueeze_dim(3);
        let h = conv2d_layer(&self.conv2, group_norm_silu(&self.norm2, h + e));
        let skip = match &self.skip {
            Some(s) => conv2d_layer(s, x),
            None => x,
        };
        skip + h
    }
}

/// The noise predictor: `eps(x_t, t, class)`.
#[derive(Module, Debug)]
pub struct UNet {
    pub(crate) time: TimeEmbedding,
    pub(crate) class: Embedding,
    conv_in: Conv2d,
    down0: ResBlock,
    downsample0: Conv2d,
    down1: ResBlock,
    downsample1: Conv2d,
    mid1: ResBlock,
    attention: Option<SpatialAttention>,
    mid2: ResBlock,
    up1: ResBlock,
    up0: ResBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    num_classes: usize,
    channels: usize,
}

/// Nearest-neighbour upsampling by 2.
fn upsample(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, 2, w, 2])
        .reshape([n, c, 2 * h, 2 * w])
}

impl UNet {
    /// The number of classes (class index `num_classes` is "no class").
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Image channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The predicted noise of `x` at steps `t` for `classes` (`num_classes`: none).
    ///
    /// # Shapes
    /// - `x`: `[N, C, S, S]` with `S` a multiple of 4, `t`: `[N]`, `classes`: `[N]`
    /// - output: `[N, C, S, S]`
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, classes: Tensor<1, Int>) -> Tensor<4> {
        let class: Tensor<2> = self.class.forward(classes.unsqueeze_dim(1)).squeeze_dim(1);
        let emb = self.time.forward(t) + class;
        let h0 = self
            .down0
            .forward(conv2d_layer(&self.conv_in, x), emb.clone());
        let h1 = self
            .down1
            .forward(conv2d_layer(&self.downsample0, h0.clone()), emb.clone());
        let mut m = self
            .mid1
            .forward(conv2d_layer(&self.downsample1, h1.clone()), emb.clone());
        if let Some(a) = &self.attention {
            m = a.forward(m);
        }
        let m = self.mid2.forward(m, emb.clone());
        // Nearest-neighbour upsampling; the block's own convolutions follow (a convolution
        // at full resolution after each upsampling would double the sampling time).
        let u1 = self
            .up1
            .forward(Tensor::cat(vec![upsample(m), h1], 1), emb.clone());
        let u0 = self
            .up0
            .forward(Tensor::cat(vec![upsample(u1), h0], 1), emb);
        conv2d_layer(&self.conv_out, group_norm_silu(&self.norm_out, u0))
    }
}
