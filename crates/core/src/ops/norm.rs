//! Group normalisation, alone or followed by a SiLU (a diffusion U-Net's residual blocks),
//! with the values and gradients of Burn's `GroupNorm` (+ `silu`), fast on flex.
//!
//! On flex, an affine layer over `[N, C, H, W]` f32 tensors runs as one operation
//! ([`kiln_kernels::flex::group_norm`]): one read for the mean, one for the variance, one
//! write, and a backward pass that recomputes the normalised values instead of keeping
//! Burn's ten intermediate tensors. Everywhere else it is Burn's layer.

use burn::nn::GroupNorm;
use burn::prelude::*;
use burn::tensor::activation::silu;

/// `layer.forward(x)`: the same values and gradients.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` with `C` the layer's channels
/// - output: `[N, C, H, W]`
pub fn group_norm(layer: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    fused(layer, &x, false).unwrap_or_else(|| layer.forward(x))
}

/// `silu(layer.forward(x))`: the same values and gradients.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` with `C` the layer's channels
/// - output: `[N, C, H, W]`
pub fn group_norm_silu(layer: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    fused(layer, &x, true).unwrap_or_else(|| silu(layer.forward(x)))
}

#[cfg(feature = "flex")]
fn fused(layer: &GroupNorm, x: &Tensor<4>, act: bool) -> Option<Tensor<4>> {
    if crate::Backend::of(&x.device()) != Some(crate::Backend::Flex)
        || x.dims()[1] != layer.num_channels
    {
        return None;
    }
    let (gamma, beta) = (layer.gamma.as_ref()?.val(), layer.beta.as_ref()?.val());
    kiln_kernels::flex::group_norm::group_norm(
        x,
        &gamma,
        &beta,
        layer.num_groups,
        layer.epsilon,
        act,
    )
}

#[cfg(not(feature = "flex"))]
fn fused(_: &GroupNorm, _: &Tensor<4>, _: bool) -> Option<Tensor<4>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::GroupNormConfig;
    use burn::tensor::Distribution;
    use proptest::prelude::*;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// `max |a - b|` relative to `1 + max |b|`.
    fn rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let scale = 1.0 + b.clone().abs().max().into_scalar::<f32>();
        max_diff(a, b) / scale
    }

    /// The largest `1 / sqrt(var + eps)` over the groups of `x`: the input gradient is a
    /// difference of terms this large (a group of near-equal values, or of two values, whose
    /// normalised values are +-1 whatever they are, has a gradient near zero made of large
    /// terms), so its rounding error in f32 scales with it.
    fn largest_rstd(x: &Tensor<4>, groups: usize) -> f32 {
        let [n, c, h, w] = x.dims();
        let var = x
            .clone()
            .reshape([n, groups, c / groups * h * w])
            .var_bias(2);
        let smallest = var.min().into_scalar::<f32>();
        1.0 / (smallest + 1e-5).sqrt()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Values and the gradients of the input, scale and shift equal Burn's layer (+ SiLU)
        /// on the default CPU device with autodiff.
        #[test]
        fn values_and_gradients_match_burn(
            n in 1usize..4, groups in 1usize..4, per in 1usize..4, h in 1usize..7, w in 1usize..7,
            act in any::<bool>(), seed in 0u64..1000,
        ) {
            let c = groups * per;
            // Burn 0.22.1's GroupNorm panics on inputs of two values or fewer (it checks the
            // number of values where it means the rank).
            prop_assume!(n * c * h * w > 2);
            let device = crate::backend::device("cpu").unwrap().autodiff();
            device.seed(seed);
            let mut layer = GroupNormConfig::new(groups, c).init(&device);
            // Scale and shift away from 1 and 0, so that their gradients are tested.
            let normal = Distribution::Normal(0.0, 1.0);
            layer.gamma = Some(burn::module::Param::from_tensor(
                Tensor::<1>::random([c], normal, &device) + 1.0,
            ));
            layer.beta = Some(burn::module::Param::from_tensor(
                Tensor::<1>::random([c], normal, &device),
            ));
            let x = (Tensor::<4>::random([n, c, h, w], normal, &device) * 2.0 + 0.5)
                .require_grad();
            let (ours, burns) = if act {
                (group_norm_silu(&layer, x.clone()), silu(layer.forward(x.clone())))
            } else {
                (group_norm(&layer, x.clone()), layer.forward(x.clone()))
            };
            prop_assert!(rel_diff(ours.clone(), burns.clone()) < 1e-5);
            let probe = Tensor::<4>::random([n, c, h, w], normal, &device);
            let probe_max = probe.clone().abs().max().into_scalar::<f32>();
            let g1 = (ours * probe.clone()).sum().backward();
            let g2 = (burns * probe).sum().backward();
            // |dx| <= rstd |gamma| |probe| (|dy| + two means of it): its natural scale.
            let scale = largest_rstd(&x.clone().inner(), groups)
                * (layer.gamma.as_ref().unwrap().val().abs().max().into_scalar::<f32>())
                * probe_max;
            prop_assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-5 * (1.0 + scale));
            let gamma = layer.gamma.as_ref().unwrap().val();
            let beta = layer.beta.as_ref().unwrap().val();
            prop_assert!(rel_diff(gamma.grad(&g1).unwrap(), gamma.grad(&g2).unwrap()) < 1e-4);
            prop_assert!(rel_diff(beta.grad(&g1).unwrap(), beta.grad(&g2).unwrap()) < 1e-4);
        }
    }

    #[test]
    fn fast_path_is_taken_on_flex_and_agrees_without_autodiff() {
        let device = crate::backend::device("cpu").unwrap();
        let layer = GroupNormConfig::new(2, 4).init(&device);
        let x = Tensor::<4>::random([2, 4, 3, 5], Distribution::Normal(1.0, 2.0), &device);
        #[cfg(feature = "flex")]
        assert!(fused(&layer, &x, true).is_some());
        assert!(
            max_diff(
                group_norm_silu(&layer, x.clone()),
                silu(layer.forward(x.clone()))
            ) < 1e-5
        );
        assert!(max_diff(group_norm(&layer, x.clone()), layer.forward(x)) < 1e-5);
    }

    #[test]
    fn a_layer_without_affine_parameters_is_burns() {
        let device = crate::backend::device("cpu").unwrap();
        let layer = GroupNormConfig::new(2, 4).with_affine(false).init(&device);
        let x = Tensor::<4>::random([1, 4, 2, 2], Distribution::Normal(0.0, 1.0), &device);
        assert!(fused(&layer, &x, false).is_none());
        assert_eq!(
            max_diff(group_norm(&layer, x.clone()), layer.forward(x)),
            0.0
        );
    }
}
