//! Tensor operations that Burn 0.22 has but runs slowly (or inexactly) on some backends, each
//! in a form that gives the same values and is faster where it matters.
//!
//! - [`linear`]: a [`Linear`] layer over any rank, as one 2-D matrix product. Burn's `Linear`
//!   on a `[B, T, D]` input broadcasts the weight into a batched product; flex then runs one
//!   small GEMM per batch item (1.7x slower than one `[B*T, D]` product at BERT's shapes).
//!   On flex the product and its three gradients are one operation
//!   ([`kernels::flex::linear`](kiln_kernels::flex::linear)), without flex's zeroed,
//!   realigned output buffers and transposed copies.
//! - [`gelu_exact`]: the erf GELU with an exact gradient on every backend, and for inference
//!   on a CPU backend a vectorised, multi-threaded kernel (0.3-0.4 ms per BERT layer of
//!   `[32, 26, 1536]` values on 2 cores, against 9 ms for flex's scalar `gelu`).
//!
//! - [`conv2d`] / [`conv2d_layer`]: a 2-D convolution; on flex, im2col + GEMM forward and
//!   backward (flex computes the gradients with generic transposed convolutions).
//! - [`max_pool2d`] / [`max_pool2d_layer`]: max pooling; on flex, one pass keeping each
//!   window's argmax, and a scatter for the gradient.
//! - [`group_norm`] / [`group_norm_silu`]: group normalisation (and the SiLU after it); on
//!   flex, one pass forward and two backward instead of Burn's eleven tensor operations.
//! - [`lstm_sequence`]: a whole LSTM layer; on flex, one fused operation with its own
//!   backpropagation through time.
//!
//! The flex kernels themselves live in [`kiln_kernels`] (re-exported as
//! [`crate::kernels`]); this module picks them when the tensors are on flex. The tests check
//! each against the plain Burn form.

mod conv;
mod lstm;
mod norm;
mod pool;

pub use conv::{conv2d, conv2d_layer, padding_pairs};
pub use lstm::{LstmSequence, lstm_sequence, lstm_sequence_lookup, try_lstm_sequence};
pub use norm::{group_norm, group_norm_silu};
pub use pool::{max_pool2d, max_pool2d_layer};

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;

pub use kiln_kernels::math::{erf, gelu_erf_in_place};

/// `layer.forward(x)` with every leading dimension folded into one, so that the product is a
/// single `[N, d_in] x [d_in, d_out]` GEMM. Same values and gradients as `Linear::forward`.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    if D <= 2 {
        return layer.forward(x);
    }
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let weight = layer.weight.val();
    let d_out = weight.dims()[1];
    let mut out = dims;
    out[D - 1] = d_out;
    let x = x.reshape([rows, d_in]);
    #[cfg(feature = "flex")]
    if crate::Backend::of(&x.device()) == Some(crate::Backend::Flex)
        && let Some(y) = kiln_kernels::flex::linear::linear(
            &x,
            &weight,
            layer.bias.as_ref().map(|b| b.val()).as_ref(),
        )
    {
        return y.reshape(out);
    }
    let mut y = x.matmul(weight);
    if let Some(bias) = &layer.bias {
        y = y + bias.val().unsqueeze();
    }
    y.reshape(out)
}

/// The exact (erf) GELU, `x * (1 + erf(x / sqrt 2)) / 2`, with an exact gradient on every
/// backend.
///
/// - On an autodiff device it is composed from `erf`, whose gradient is exact everywhere:
///   Burn 0.22.1's own `gelu` backward is off by up to 1e-3 on ndarray and wgpu (at x = 2:
///   1.08610 instead of 1.08523; flex is exact), which Kiln's backend conformance suite
///   caught as BERT gradients differing by 0.4%.
/// - For inference on a CPU backend (flex, ndarray) it runs [`gelu_erf_in_place`] over the
///   values on every core: flex's `gelu` calls a scalar `erff` on one thread.
/// - Elsewhere (GPU inference) it is Burn's `gelu` kernel.
pub fn gelu_exact<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if device.is_autodiff() {
        return x.clone() * (x.div_scalar(std::f32::consts::SQRT_2).erf() + 1.0) * 0.5;
    }
    let on_cpu = crate::Backend::of(&device).is_some_and(|b| b.is_cpu());
    if !on_cpu || x.dtype() != DType::F32 {
        return burn::tensor::activation::gelu(x);
    }
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => gelu_erf_in_place(values),
        // Not plain f32 storage after all: let Burn do it.
        Err(_) => return burn::tensor::activation::gelu(Tensor::from_data(data, &device)),
    }
    Tensor::from_data(data, &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    #[test]
    fn gelu_cpu_path_equals_burns_kernel_and_the_autodiff_form() {
        let device = crate::backend::device("cpu").unwrap();
        device.seed(3);
        let x = Tensor::<3>::random([3, 5, 7], Distribution::Normal(0.0, 3.0), &device);
        let ours = gelu_exact(x.clone());
        let burns = burn::tensor::activation::gelu(x.clone());
        ours.clone()
            .into_data()
            .assert_approx_eq::<f32>(&burns.into_data(), burn::tensor::Tolerance::absolute(1e-6));
        let ad = device.autodiff();
        let xa = Tensor::<3>::from_data(x.into_data(), &ad).require_grad();
        let composed = gelu_exact(xa);
        ours.into_data().assert_approx_eq::<f32>(
            &composed.into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }

    /// The folded (and on flex, fused) layer against `Linear::forward`: values and the
    /// gradients of the input, weight and bias through a loss weighing every output
    /// differently, with and without a bias, at a small and a threaded size.
    #[test]
    fn folded_linear_equals_linear_in_values_and_gradients() {
        let device = crate::backend::device("cpu").unwrap().autodiff();
        device.seed(5);
        for (shape, d_out, bias) in [([2, 3, 5, 6], 4, true), ([2, 40, 7, 37], 23, false)] {
            let d_in = shape[3];
            let layer = LinearConfig::new(d_in, d_out).with_bias(bias).init(&device);
            let x =
                Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
            let [a, b, c, _] = shape;
            let probe = Tensor::<4>::random([a, b, c, d_out], Distribution::Default, &device);
            let folded = linear(&layer, x.clone());
            let plain = layer.forward(x.clone());
            assert_eq!(folded.dims(), [a, b, c, d_out]);
            let close = |p: Tensor<4>, q: Tensor<4>, tol: f32| {
                p.into_data()
                    .assert_approx_eq::<f32>(&q.into_data(), burn::tensor::Tolerance::absolute(tol))
            };
            close(folded.clone(), plain.clone(), 1e-5);
            let g1 = (folded * probe.clone()).sum().backward();
            let g2 = (plain * probe).sum().backward();
            let w1 = layer.weight.grad(&g1).unwrap();
            let w2 = layer.weight.grad(&g2).unwrap();
            w1.into_data()
                .assert_approx_eq::<f32>(&w2.into_data(), burn::tensor::Tolerance::absolute(1e-4));
            if let Some(b) = &layer.bias {
                let (b1, b2) = (b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
                b1.into_data().assert_approx_eq::<f32>(
                    &b2.into_data(),
                    burn::tensor::Tolerance::absolute(1e-4),
                );
            }
            close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), 1e-5);
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn linear_fast_path_is_taken_on_flex() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = Tensor::<2>::ones([3, 2], &device);
            let w = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
            let b = Tensor::<1>::from_floats([0.5, -0.5], &device);
            let y = kiln_kernels::flex::linear::linear(&x, &w, Some(&b)).expect("flex f32 tensors");
            let want = Tensor::<2>::from_floats([[4.5, 5.5]; 3], &device);
            y.into_data().assert_eq(&want.into_data(), true);
        }
    }
}
