//! The seed's building blocks: `conv_layer(x, W, b, strides, padding)` (convolution + bias +
//! ReLU), `pool_layer` (max pooling) and `fc_layer` (a dense layer), with TensorFlow's `SAME`
//! and `VALID` padding, as plain functions over Burn tensors, plus [`ConvBlock`], a module
//! that owns its weights.
//!
//! `VALID`: no padding, `out = floor((in - k) / s) + 1`. `SAME`: `out = ceil(in / s)`, the
//! input padded by `max((out - 1) s + k - in, 0)` split with the extra pixel at the end (as
//! TensorFlow does; PyTorch's `padding="same"` exists only for stride 1).

use burn::module::{Initializer, Param};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use serde::{Deserialize, Serialize};

/// TensorFlow-style padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Padding {
    /// Pad so that `out = ceil(in / stride)`.
    Same,
    /// No padding.
    Valid,
}

impl Padding {
    /// Output length and (before, after) padding of one spatial dimension.
    pub fn resolve(self, input: usize, kernel: usize, stride: usize) -> (usize, (usize, usize)) {
        match self {
            Padding::Valid => ((input.saturating_sub(kernel)) / stride + 1, (0, 0)),
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out - 1) * stride + kernel).saturating_sub(input);
                (out, (total / 2, total - total / 2))
            }
        }
    }
}

/// Convolution + bias + ReLU, the seed's `conv_layer`.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`, `weight`: `[C_out, C_in, K_h, K_w]`, `bias`: `[C_out]`
/// - output: `[N, C_out, H_out, W_out]` with `H_out`, `W_out` from [`Padding::resolve`]
pub fn conv_layer(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    strides: [usize; 2],
    padding: Padding,
) -> Tensor<4> {
    relu(conv(x, weight, Some(bias), strides, padding))
}

/// Convolution (no activation) with `SAME` or `VALID` padding.
pub fn conv(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    strides: [usize; 2],
    padding: Padding,
) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let [_, _, kh, kw] = weight.dims();
    let (_, ph) = padding.resolve(h, kh, strides[0]);
    let (_, pw) = padding.resolve(w, kw, strides[1]);
    kiln_core::ops::conv2d(x, weight, bias, strides, [ph, pw])
}

/// Max pooling with a `size x size` window, the seed's `pool_layer`.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - output: `[N, C, H_out, W_out]` with `H_out`, `W_out` from [`Padding::resolve`]
pub fn pool_layer(
    x: Tensor<4>,
    size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let (_, ph) = padding.resolve(h, size[0], strides[0]);
    let (_, pw) = padding.resolve(w, size[1], strides[1]);
    if (ph, pw) == ((0, 0), (0, 0)) {
        return kiln_core::ops::max_pool2d(x, size, strides);
    }
    max_pool2d(
        x,
        MaxPoolOptions::new(size)
            .with_stride(strides)
            .with_padding_pairs([ph, pw]),
    )
}

/// A dense layer `x W + b`, the seed's `fc_layer`.
///
/// # Shapes
/// - `x`: `[N, D_in]`, `weight`: `[D_in, D_out]`, `bias`: `[D_out]`
/// - output: `[N, D_out]`
pub fn fc_layer(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    x.matmul(weight) + bias.unsqueeze()
}

/// Configuration of [`ConvBlock`].
#[derive(Config, Debug)]
pub struct ConvBlockConfig {
    /// Input and output channels.
    pub channels: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides.
    #[config(default = "[1, 1]")]
    pub strides: [usize; 2],
    /// `SAME` or `VALID`.
    #[config(default = "Padding::Same")]
    pub padding: Padding,
}

impl ConvBlockConfig {
    /// Builds the block with Kaiming-uniform weights (PyTorch's default for convolutions).
    pub fn init(&self, device: &Device) -> ConvBlock {
        let [cin, cout] = self.channels;
        let fan_in = cin * self.kernel[0] * self.kernel[1];
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        };
        let shape = [cout, cin, self.kernel[0], self.kernel[1]];
        ConvBlock {
            weight: init.init_with(shape, Some(fan_in), None, device),
            bias: Initializer::Uniform {
                min: -1.0 / (fan_in as f64).sqrt(),
                max: 1.0 / (fan_in as f64).sqrt(),
            }
            .init([cout], device),
            strides: self.strides,
            padding: self.padding,
        }
    }
}

/// A convolution + bias + ReLU layer with its own weights and `SAME`/`VALID` padding.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// `[C_out, C_in, K_h, K_w]`.
    pub weight: Param<Tensor<4>>,
    /// `[C_out]`.
    pub bias: Param<Tensor<1>>,
    #[module(skip)]
    strides: [usize; 2],
    #[module(skip)]
    padding: Padding,
}

impl ConvBlock {
    /// # Shapes
    /// - `x`: `[N, C_in, H, W]`
    /// - output: `[N, C_out, H_out, W_out]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_layer(
            x,
            self.weight.val(),
            self.bias.val(),
            self.strides,
            self.padding,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn device() -> Device {
        kiln_core::backend::device("cpu").unwrap()
    }

    #[test]
    fn hand_computed_padding() {
        // TensorFlow: in 5, k 3, s 2, SAME -> out 3, pad 2 total (1, 1); in 4 -> out 2, pad (0, 1).
        assert_eq!(Padding::Same.resolve(5, 3, 2), (3, (1, 1)));
        assert_eq!(Padding::Same.resolve(4, 3, 2), (2, (0, 1)));
        assert_eq!(Padding::Valid.resolve(5, 3, 2), (2, (0, 0)));
        assert_eq!(Padding::Same.resolve(28, 5, 1), (28, (2, 2)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn conv_and_pool_shapes_match_the_formulas(
            h in 3usize..12, w in 3usize..12, k in 1usize..4, stride in 1usize..3,
            same in any::<bool>(), cin in 1usize..3, cout in 1usize..3,
        ) {
        let _rng = crate::rng_lock();
            let device = device();
            let padding = if same { Padding::Same } else { Padding::Valid };
            let x = Tensor::<4>::ones([2, cin, h, w], &device);
            let weight = Tensor::<4>::ones([cout, cin, k, k], &device);
            let y = conv_layer(x.clone(), weight, Tensor::zeros([cout], &device), [stride, stride], padding);
            let expect = |n: usize| if same { n.div_ceil(stride) } else { (n - k) / stride + 1 };
            prop_assert_eq!(y.dims(), [2, cout, expect(h), expect(w)]);
            let p = pool_layer(x, [k, k], [stride, stride], padding);
            prop_assert_eq!(p.dims(), [2, cin, expect(h), expect(w)]);
        }
    }

    #[test]
    fn fc_layer_is_xw_plus_b() {
        let device = device();
        let x = Tensor::<2>::from_floats([[1.0, 2.0]], &device);
        let w = Tensor::<2>::from_floats([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]], &device);
        let b = Tensor::<1>::from_floats([0.5, 0.5, 0.5], &device);
        let y: Vec<f32> = fc_layer(x, w, b).into_data().try_to_vec_as().unwrap();
        assert_eq!(y, vec![1.5, 2.5, 4.5]);
    }

    #[test]
    fn block_output_shape() {
        let _rng = crate::rng_lock();
        let device = device();
        let block = ConvBlockConfig::new([1, 4], [3, 3])
            .with_strides([2, 2])
            .init(&device);
        assert_eq!(
            block.forward(Tensor::zeros([1, 1, 7, 7], &device)).dims(),
            [1, 4, 4, 4]
        );
    }
}
