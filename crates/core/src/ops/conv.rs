//! 2-D convolution with the same values and gradients as Burn's, fast on flex.
//!
//! [`conv2d`] and [`conv2d_layer`] take flex's CPU fast path (im2col + GEMM forward and
//! backward, see [`kiln_kernels::flex::conv`]) for f32 tensors with one group and no dilation, and call
//! Burn's `conv2d` everywhere else (other backends, dtypes, grouped or dilated kernels).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

/// `layer.forward(x)`: same values and gradients, through [`conv2d`].
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`
/// - output: `[N, C_out, H_out, W_out]`
pub fn conv2d_layer(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if layer.groups != 1 || layer.dilation != [1, 1] {
        return layer.forward(x);
    }
    let [_, _, h, w] = x.dims();
    let padding = padding_pairs(&layer.padding, [h, w], layer.kernel_size, layer.stride);
    conv2d(
        x,
        layer.weight.val(),
        layer.bias.as_ref().map(|b| b.val()),
        layer.stride,
        padding,
    )
}

/// A 2-D convolution (one group, no dilation) with zero padding `[(top, bottom), (left,
/// right)]`: the values and gradients of `burn::tensor::module::conv2d`.
///
/// # Shapes
/// - `x`: `[N, C_in, H, W]`, `weight`: `[C_out, C_in, K_h, K_w]`, `bias`: `[C_out]`
/// - output: `[N, C_out, (H + top + bottom - K_h) / s_h + 1, (W + left + right - K_w) / s_w + 1]`
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: [usize; 2],
    padding: [(usize, usize); 2],
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if crate::Backend::of(&x.device()) == Some(crate::Backend::Flex)
        && bias
            .as_ref()
            .is_none_or(|b| b.dims()[0] == weight.dims()[0])
        && let Some(g) =
            kiln_kernels::flex::conv::Geometry::new(x.dims(), weight.dims(), stride, padding)
        && let Some(y) = kiln_kernels::flex::conv::conv2d(&x, &weight, bias.as_ref(), g)
    {
        return y;
    }
    burn::tensor::module::conv2d(
        x,
        weight,
        bias,
        ConvOptions::new_with_padding(stride, padding, [1, 1], 1),
    )
}

/// Burn's padding rule for [`Conv2d`]: `[(top, bottom), (left, right)]` for an `[h, w]` input.
/// `Same` keeps `ceil(in / stride)` outputs, with an odd extra pixel at the end.
pub fn padding_pairs(
    padding: &PaddingConfig2d,
    [h, w]: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
) -> [(usize, usize); 2] {
    let same = |input: usize, k: usize, s: usize| {
        let out = input.div_ceil(s);
        let total = if out > 0 {
            ((out - 1) * s + k).saturating_sub(input)
        } else {
            0
        };
        (total / 2, total - total / 2)
    };
    match padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Same => [same(h, kernel[0], stride[0]), same(w, kernel[1], stride[1])],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(*top, *bottom), (*left, *right)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;
    use proptest::prelude::*;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Values and all three gradients of `conv2d` against Burn's convolution, on the default
    /// CPU device with autodiff.
    fn check(
        [n, c, h, w]: [usize; 4],
        [o, kh, kw]: [usize; 3],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
        with_bias: bool,
    ) -> Result<(), TestCaseError> {
        let device = crate::backend::device("cpu").unwrap().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([n, c, h, w], normal, &device).require_grad();
        let weight = Tensor::<4>::random([o, c, kh, kw], normal, &device).require_grad();
        let bias = with_bias.then(|| Tensor::<1>::random([o], normal, &device).require_grad());
        let options = ConvOptions::new_with_padding(stride, padding, [1, 1], 1);
        let ours = conv2d(x.clone(), weight.clone(), bias.clone(), stride, padding);
        let burns = burn::tensor::module::conv2d(x.clone(), weight.clone(), bias.clone(), options);
        prop_assert_eq!(ours.dims(), burns.dims());
        prop_assert!(max_diff(ours.clone(), burns.clone()) < 1e-4);
        // A weighted sum so that every output position has its own gradient.
        let probe = Tensor::<4>::random(ours.dims(), normal, &device);
        let g1 = (ours * probe.clone()).sum().backward();
        let g2 = (burns * probe).sum().backward();
        prop_assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-3);
        prop_assert!(max_diff(weight.grad(&g1).unwrap(), weight.grad(&g2).unwrap()) < 1e-3);
        if let Some(b) = bias {
            prop_assert!(max_diff(b.grad(&g1).unwrap(), b.grad(&g2).unwrap()) < 1e-3);
        }
        Ok(())
    }

    #[test]
    fn lenet_shapes_match_burn() {
        check([3, 1, 28, 28], [6, 5, 5], [1, 1], [(2, 2), (2, 2)], true).unwrap();
        check([3, 6, 14, 14], [16, 5, 5], [1, 1], [(0, 0), (0, 0)], true).unwrap();
    }

    #[test]
    fn batches_over_several_threads_and_blocks_match_burn() {
        check([21, 2, 9, 8], [3, 3, 3], [1, 2], [(1, 1), (0, 2)], true).unwrap();
        check([17, 3, 6, 6], [4, 1, 1], [1, 1], [(0, 0), (0, 0)], false).unwrap();
    }

    #[test]
    fn pointwise_and_single_image_match_burn() {
        // 1x1 kernels skip the unfolding; one image runs the GEMMs multi-threaded.
        check([2, 4, 5, 5], [3, 1, 1], [1, 1], [(0, 0), (0, 0)], false).unwrap();
        check([1, 2, 9, 7], [3, 3, 3], [2, 2], [(1, 1), (1, 1)], true).unwrap();
    }

    #[test]
    fn windows_that_read_only_padding_match_burn() {
        // A stride past the image: the only window along a side reads the left or top
        // padding alone (CI's proptest found the first one out of bounds).
        check([1, 1, 7, 1], [1, 1, 1], [1, 3], [(0, 0), (2, 0)], true).unwrap();
        check([2, 3, 1, 3], [2, 2, 1], [3, 1], [(2, 1), (0, 0)], false).unwrap();
        check([1, 2, 2, 2], [1, 1, 1], [3, 3], [(2, 2), (2, 2)], true).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn values_and_gradients_match_burn(
            n in 1usize..4, c in 1usize..4, h in 1usize..9, w in 1usize..9, o in 1usize..4,
            kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
            pads in proptest::array::uniform4(0usize..3), with_bias: bool,
        ) {
            let padding = [(pads[0], pads[1]), (pads[2], pads[3])];
            prop_assume!(kh <= h + pads[0] + pads[1] && kw <= w + pads[2] + pads[3]);
            check([n, c, h, w], [o, kh, kw], [sh, sw], padding, with_bias)?;
        }
    }

    #[test]
    fn layer_equals_conv2d_forward_for_every_padding() {
        let device = crate::backend::device("cpu").unwrap();
        let x = Tensor::<4>::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), &device);
        for padding in [
            PaddingConfig2d::Same,
            PaddingConfig2d::Valid,
            PaddingConfig2d::Explicit(1, 0, 2, 1),
        ] {
            for stride in [[1, 1], [2, 2], [2, 1]] {
                let layer = Conv2dConfig::new([3, 4], [3, 2])
                    .with_stride(stride)
                    .with_padding(padding.clone())
                    .init(&device);
                let ours = conv2d_layer(&layer, x.clone());
                let burns = layer.forward(x.clone());
                assert_eq!(ours.dims(), burns.dims(), "{padding:?} {stride:?}");
                assert!(max_diff(ours, burns) < 1e-4, "{padding:?} {stride:?}");
            }
        }
    }
}
