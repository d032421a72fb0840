//! The multilayer-perceptron baseline: flattened pixels through dense ReLU layers (with
//! dropout) to class logits.

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;

use super::{ImageClassifier, image_train_step};

/// Configuration of [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input values per image (`C * H * W`).
    #[config(default = 784)]
    pub inputs: usize,
    /// The number of classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Widths of the hidden layers.
    #[config(default = "vec![512, 256]")]
    pub hidden: Vec<usize>,
    /// Dropout after every hidden layer.
    #[config(default = 0.2)]
    pub dropout: f64,
}

impl MlpConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Mlp {
        let mut widths = vec![self.inputs];
        widths.extend(&self.hidden);
        Mlp {
            layers: widths
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
            output: LinearConfig::new(*widths.last().unwrap_or(&self.inputs), self.num_classes)
                .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            relu: Relu::new(),
        }
    }
}

/// Dense ReLU layers with dropout.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    output: Linear,
    dropout: Dropout,
    relu: Relu,
}

impl ImageClassifier for Mlp {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x: Tensor<2> = images.flatten(1, 3);
        for layer in &self.layers {
            x = self.dropout.forward(self.relu.forward(layer.forward(x)));
        }
        self.output.forward(x)
    }
}

image_train_step!(Mlp);
