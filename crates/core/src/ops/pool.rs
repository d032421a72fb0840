//! 2-D max pooling with the same values and gradients as Burn's, fast on flex.
//!
//! [`max_pool2d`] and [`max_pool2d_layer`] take flex's CPU fast path ([`kiln_kernels::flex::pool`]) for f32
//! tensors pooled without padding, dilation or ceil mode, and call Burn's `max_pool2d`
//! everywhere else.

use burn::nn::pool::MaxPool2d;
use burn::prelude::*;
use burn::tensor::ops::MaxPoolOptions;

/// `layer.forward(x)`: same values and gradients, through [`max_pool2d`] when the layer pools
/// without padding, dilation or ceil mode.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - output: `[N, C, H_out, W_out]`
pub fn max_pool2d_layer(layer: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let padding = super::padding_pairs(&layer.padding, [h, w], layer.kernel_size, layer.stride);
    if padding != [(0, 0), (0, 0)] || layer.dilation != [1, 1] || layer.ceil_mode {
        return layer.forward(x);
    }
    max_pool2d(x, layer.kernel_size, layer.stride)
}

/// Max pooling over `kernel` windows at `stride`, without padding: the values and gradients
/// of `burn::tensor::module::max_pool2d`.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - output: `[N, C, (H - K_h) / s_h + 1, (W - K_w) / s_w + 1]`
pub fn max_pool2d(x: Tensor<4>, kernel: [usize; 2], stride: [usize; 2]) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if crate::Backend::of(&x.device()) == Some(crate::Backend::Flex)
        && let Some(g) = kiln_kernels::flex::pool::PoolGeometry::new(x.dims(), kernel, stride)
        && let Some(y) = kiln_kernels::flex::pool::max_pool2d(&x, g)
    {
        return y;
    }
    burn::tensor::module::max_pool2d(x, MaxPoolOptions::new(kernel).with_stride(stride))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::Distribution;
    use proptest::prelude::*;

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Values and input gradients equal Burn's on the default CPU device with autodiff.
        #[test]
        fn values_and_gradients_match_burn(
            n in 1usize..3, c in 1usize..4, h in 1usize..10, w in 1usize..10,
            kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
        ) {
            prop_assume!(kh <= h && kw <= w);
            let device = crate::backend::device("cpu").unwrap().autodiff();
            let normal = Distribution::Normal(0.0, 1.0);
            let x = Tensor::<4>::random([n, c, h, w], normal, &device).require_grad();
            let ours = max_pool2d(x.clone(), [kh, kw], [sh, sw]);
            let options = MaxPoolOptions::new([kh, kw]).with_stride([sh, sw]);
            let burns = burn::tensor::module::max_pool2d(x.clone(), options);
            prop_assert_eq!(ours.dims(), burns.dims());
            prop_assert_eq!(max_diff(ours.clone(), burns.clone()), 0.0);
            let probe = Tensor::<4>::random(ours.dims(), normal, &device);
            let g1 = (ours * probe.clone()).sum().backward();
            let g2 = (burns * probe).sum().backward();
            prop_assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-6);
        }
    }

    #[test]
    fn layer_equals_burn_with_and_without_padding() {
        let device = crate::backend::device("cpu").unwrap();
        let x = Tensor::<4>::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), &device);
        for (padding, ceil) in [
            (PaddingConfig2d::Valid, false),
            (PaddingConfig2d::Same, false),
            (PaddingConfig2d::Explicit(1, 1, 1, 1), false),
            (PaddingConfig2d::Valid, true),
        ] {
            let layer = MaxPool2dConfig::new([3, 2])
                .with_strides([2, 2])
                .with_padding(padding.clone())
                .with_ceil_mode(ceil)
                .init();
            let ours = max_pool2d_layer(&layer, x.clone());
            let burns = layer.forward(x.clone());
            assert_eq!(ours.dims(), burns.dims(), "{padding:?}");
            assert_eq!(max_diff(ours, burns), 0.0, "{padding:?}");
        }
    }
}
