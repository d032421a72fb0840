//! The flex kernels against Burn's own operations on the same tensors: values and every
//! gradient, on random shapes that cross the kernels' block sizes (output widths 1 to 70,
//! batches that split unevenly over the threads), with non-contiguous inputs (transposed or
//! permuted views, which the glue must read through `to_contiguous`), and empty dimensions,
//! which the glue declines (`None`: the caller then runs Burn's operation).
#![cfg(feature = "flex")]

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use kiln_kernels::flex;
use proptest::prelude::*;

fn close<const D: usize>(got: Tensor<D>, want: Tensor<D>, tol: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.dims(), want.dims());
    let g: Vec<f32> = got.into_data().try_into_vec().unwrap();
    let w: Vec<f32> = want.into_data().try_into_vec().unwrap();
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        prop_assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "[{}]: {} vs {}",
            i,
            a,
            b
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// `x W + b` and its three gradients, `x` a transposed (non-contiguous) view.
    #[test]
    fn linear_equals_burns_matmul(
        m in 1usize..14, k in 1usize..40, n in 1usize..71, bias in any::<bool>(), seed in 0u64..1000
    ) {
        let device = Device::flex().autodiff();
        device.seed(seed);
        let xt = Tensor::<2>::random([k, m], Distribution::Normal(0.0, 1.0), &device);
        let x = xt.transpose().require_grad();
        let w = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let b = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let probe = Tensor::<2>::random([m, n], Distribution::Default, &device);
        let ours = flex::linear::linear(&x, &w, bias.then_some(&b)).expect("flex f32 tensors");
        let mut burns = x.clone().matmul(w.clone());
        if bias {
            burns = burns + b.clone().unsqueeze();
        }
        close(ours.clone(), burns.clone(), 1e-5)?;
        let g1 = (ours * probe.clone()).sum().backward();
        let g2 = (burns * probe).sum().backward();
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), 1e-4)?;
        close(w.grad(&g1).unwrap(), w.grad(&g2).unwrap(), 1e-4)?;
        if bias {
            close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap(), 1e-4)?;
        }
    }

    /// The convolution and its gradients, the input a permuted view.
    #[test]
    fn conv2d_equals_burns(
        n in 1usize..11, c in 1usize..4, o in 1usize..9, h in 3usize..12, w in 3usize..12,
        k in 1usize..4, stride in 1usize..3, pad in 0usize..2, seed in 0u64..1000
    ) {
        let device = Device::flex().autodiff();
        device.seed(seed);
        // [N, H, W, C] permuted to [N, C, H, W]: not contiguous.
        let x = Tensor::<4>::random([n, h, w, c], Distribution::Normal(0.0, 1.0), &device)
            .permute([0, 3, 1, 2])
            .require_grad();
        let weight = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 0.5), &device).require_grad();
        let bias = Tensor::<1>::random([o], Distribution::Normal(0.0, 0.5), &device).require_grad();
        let padding = [(pad, pad), (pad, pad)];
        let g = flex::conv::Geometry::new(x.dims(), weight.dims(), [stride; 2], padding).expect("fits");
        let ours = flex::conv::conv2d(&x, &weight, Some(&bias), g).expect("flex f32 tensors");
        let burns = conv2d(
            x.clone(),
            weight.clone(),
            Some(bias.clone()),
            ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1),
        );
        close(ours.clone(), burns.clone(), 1e-4)?;
        let probe = Tensor::<4>::random(burns.dims(), Distribution::Default, &device);
        let g1 = (ours * probe.clone()).sum().backward();
        let g2 = (burns * probe).sum().backward();
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), 1e-4)?;
        close(weight.grad(&g1).unwrap(), weight.grad(&g2).unwrap(), 1e-3)?;
        close(bias.grad(&g1).unwrap(), bias.grad(&g2).unwrap(), 1e-3)?;
    }

    /// Max pooling and its gradient, the input a permuted view.
    #[test]
    fn max_pool2d_equals_burns(
        n in 1usize..9, c in 1usize..5, h in 2usize..13, w in 2usize..13,
        k in 1usize..4, stride in 1usize..4, seed in 0u64..1000
    ) {
        prop_assume!(k <= h && k <= w);
        let device = Device::flex().autodiff();
        device.seed(seed);
        let x = Tensor::<4>::random([n, h, w, c], Distribution::Normal(0.0, 1.0), &device)
            .permute([0, 3, 1, 2])
            .require_grad();
        let g = flex::pool::PoolGeometry::new(x.dims(), [k; 2], [stride; 2]).expect("fits");
        let ours = flex::pool::max_pool2d(&x, g).expect("flex f32 tensors");
        let burns = max_pool2d(x.clone(), MaxPoolOptions::new([k; 2]).with_stride([stride; 2]));
        close(ours.clone(), burns.clone(), 0.0)?;
        let probe = Tensor::<4>::random(burns.dims(), Distribution::Default, &device);
        let g1 = (ours * probe.clone()).sum().backward();
        let g2 = (burns * probe).sum().backward();
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), 1e-6)?;
    }

    /// Softmax cross-entropy and its gradient, the logits a transposed view, every class
    /// count up to 70.
    #[test]
    fn cross_entropy_equals_burns(
        rows in 1usize..40, classes in 1usize..71, seed in 0u64..1000
    ) {
        let device = Device::flex().autodiff();
        device.seed(seed);
        let z = Tensor::<2>::random([classes, rows], Distribution::Normal(0.0, 3.0), &device)
            .transpose()
            .require_grad();
        let targets = Tensor::<1>::random([rows], Distribution::Uniform(0.0, classes as f64), &device)
            .int()
            .clamp(0, classes as i64 - 1);
        let ours = flex::cross_entropy::cross_entropy(&z, &targets, None).expect("fused path");
        let burns = CrossEntropyLossConfig::new().init(&device).forward(z.clone(), targets);
        close(ours.clone(), burns.clone(), 1e-5)?;
        let g1 = ours.backward();
        let g2 = burns.backward();
        close(z.grad(&g1).unwrap(), z.grad(&g2).unwrap(), 1e-5)?;
    }
}

/// Empty dimensions are declined, so that the caller runs Burn's operation (which gives the
/// empty result) instead of a kernel sized for nothing.
#[test]
fn empty_dimensions_are_left_to_burn() {
    let device = Device::flex();
    let x = Tensor::<2>::zeros([0, 3], &device);
    let w = Tensor::<2>::zeros([3, 4], &device);
    assert!(flex::linear::linear(&x, &w, None).is_none());
    let w0 = Tensor::<2>::zeros([3, 0], &device);
    assert!(flex::linear::linear(&Tensor::<2>::zeros([2, 3], &device), &w0, None).is_none());
    assert!(flex::conv::Geometry::new([0, 1, 5, 5], [2, 1, 3, 3], [1, 1], [(0, 0); 2]).is_none());
    assert!(flex::conv::Geometry::new([1, 1, 5, 5], [0, 1, 3, 3], [1, 1], [(0, 0); 2]).is_none());
    assert!(flex::pool::PoolGeometry::new([1, 0, 4, 4], [2, 2], [2, 2]).is_none());
    assert!(flex::pool::PoolGeometry::new([1, 1, 4, 4], [2, 2], [0, 2]).is_none());
    let dims = flex::lstm::LstmDims::new([2, 0, 3], [3, 8], [2, 8], [8], [2, 2], [2, 2]);
    assert!(dims.is_none(), "zero steps go to the tensor form");
}
