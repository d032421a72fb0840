//! A small residual network (He et al., 2016, "Deep residual learning for image
//! recognition") for 28x28 and 32x32 images: a 3x3 stem, three stages of basic blocks
//! (two 3x3 convolutions with batch norm, and a 1x1 projection on the shortcut when the shape
//! changes), the last two stages halving the resolution, global average pooling and a linear
//! classifier. The CIFAR ResNets of the paper (ResNet-20 and up) are this layout with more
//! blocks per stage.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use kiln_core::ops::conv2d_layer;

use super::{ImageClassifier, image_train_step};

/// Configuration of [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// The number of classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels.
    #[config(default = 1)]
    pub channels: usize,
    /// Channel widths of the three stages.
    #[config(default = "[32, 64, 128]")]
    pub widths: [usize; 3],
    /// Basic blocks per stage.
    #[config(default = 1)]
    pub blocks_per_stage: usize,
}

fn conv3x3(cin: usize, cout: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device)
}

impl ResNetConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> ResNet {
        let mut blocks = Vec::new();
        let mut cin = self.widths[0];
        for (stage, &width) in self.widths.iter().enumerate() {
            for b in 0..self.blocks_per_stage.max(1) {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(cin, width, stride, device));
                cin = width;
            }
        }
        ResNet {
            stem: conv3x3(self.channels, self.widths[0], 1, device),
            stem_bn: BatchNormConfig::new(self.widths[0]).init(device),
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(cin, self.num_classes).init(device),
            relu: Relu::new(),
        }
    }
}

/// Two 3x3 convolutions with batch norm, plus the (projected) input.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
    relu: Relu,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let shortcut = (stride != 1 || cin != cout).then(|| {
            (
                Conv2dConfig::new([cin, cout], [1, 1])
                    .with_stride([stride, stride])
                    .with_bias(false)
                    .init(device),
                BatchNormConfig::new(cout).init(device),
            )
        });
        Self {
            conv1: conv3x3(cin, cout, stride, device),
            bn1: BatchNormConfig::new(cout).init(device),
            conv2: conv3x3(cout, cout, 1, device),
            bn2: BatchNormConfig::new(cout).init(device),
            shortcut,
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self
            .relu
            .forward(self.bn1.forward(conv2d_layer(&self.conv1, x.clone())));
        let y = self.bn2.forward(conv2d_layer(&self.conv2, y));
        let skip = match &self.shortcut {
            Some((conv, bn)) => bn.forward(conv2d_layer(conv, x)),
            None => x,
        };
        self.relu.forward(y + skip)
    }
}

/// Stem, residual stages, global average pooling, linear classifier.
#[derive(Module, Debug)]
pub struct ResNet {
    stem: Conv2d,
    stem_bn: BatchNorm,
    blocks: Vec<BasicBlock>,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
    relu: Relu,
}

impl ImageClassifier for ResNet {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self
            .relu
            .forward(self.stem_bn.forward(conv2d_layer(&self.stem, images)));
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.fc.forward(self.pool.forward(x).flatten(1, 3))
    }
}

image_train_step!(ResNet);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shapes_for_28_and_32_pixels() {
        let _rng = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        for (channels, size) in [(1, 28), (3, 32)] {
            let net = ResNetConfig::new()
                .with_channels(channels)
                .with_widths([4, 8, 8])
                .with_num_classes(5)
                .init(&device);
            assert_eq!(
                net.logits(Tensor::zeros([2, channels, size, size], &device))
                    .dims(),
                [2, 5]
            );
        }
    }
}
