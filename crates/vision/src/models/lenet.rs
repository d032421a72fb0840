//! LeNet-5 (LeCun et al., 1998, "Gradient-based learning applied to document recognition"),
//! in its common modern form: ReLU activations and max pooling instead of the original scaled
//! tanh and sub-sampling, and a plain linear output layer.
//!
//! `conv(6, 5x5) -> ReLU -> maxpool 2 -> conv(16, 5x5) -> ReLU -> maxpool 2 -> fc 120 -> ReLU
//! -> fc 84 -> ReLU -> fc classes`. For 28x28 inputs (MNIST) the first convolution pads by 2 so
//! that the feature maps match the paper's 32x32 input.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use kiln_core::ops::{conv2d_layer, max_pool2d_layer};

use super::{ImageClassifier, image_train_step};

/// Configuration of [`LeNet5`].
#[derive(Config, Debug)]
pub struct LeNet5Config {
    /// The number of classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels.
    #[config(default = 1)]
    pub channels: usize,
    /// Input height and width: 28 (padded to 32 by the first convolution) or 32.
    #[config(default = 28)]
    pub input_size: usize,
}

impl LeNet5Config {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> LeNet5 {
        let pad = 32usize.saturating_sub(self.input_size) / 2;
        LeNet5 {
            conv1: Conv2dConfig::new([self.channels, 6], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(16 * 5 * 5, 120).init(device),
            fc2: LinearConfig::new(120, 84).init(device),
            fc3: LinearConfig::new(84, self.num_classes).init(device),
            relu: Relu::new(),
        }
    }
}

/// LeNet-5.
#[derive(Module, Debug)]
pub struct LeNet5 {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    relu: Relu,
}

impl LeNet5 {
    /// The penultimate layer's activations (after the second dense layer's ReLU): the
    /// features of the Fréchet distance in [`crate::generative::measures`].
    ///
    /// # Shapes
    /// - `images`: `[N, C, S, S]` with `S` the configured input size
    /// - output: `[N, 84]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        // ReLU after pooling: the same values and gradients as pooling after ReLU (ReLU is
        // monotonic), on a quarter of the elements.
        let x = self.relu.forward(max_pool2d_layer(
            &self.pool,
            conv2d_layer(&self.conv1, images),
        ));
        let x = self
            .relu
            .forward(max_pool2d_layer(&self.pool, conv2d_layer(&self.conv2, x)));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.relu.forward(self.fc1.forward(x));
        self.relu.forward(self.fc2.forward(x))
    }
}

impl ImageClassifier for LeNet5 {
    /// # Shapes
    /// - `images`: `[N, C, S, S]` with `S` the configured input size
    /// - output: `[N, num_classes]`
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.fc3.forward(self.features(images))
    }
}

image_train_step!(LeNet5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shape_for_28_and_32_pixel_inputs() {
        let _rng = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        for size in [28, 32] {
            let net = LeNet5Config::new()
                .with_input_size(size)
                .with_num_classes(7)
                .init(&device);
            let logits = net.logits(Tensor::zeros([3, 1, size, size], &device));
            assert_eq!(logits.dims(), [3, 7]);
        }
    }
}
