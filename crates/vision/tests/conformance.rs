//! Backend conformance of the vision family (convolution, max and average pooling, batch norm,
//! dense heads): LeNet-5, a small ResNet and the `ConvBlock` agree with the reference CPU
//! backend on every compiled-in backend (outputs and every parameter's gradient), and a few
//! training steps lower the loss. Shapes are tiny: the wgpu half runs on a software Vulkan
//! device in CI. See `kiln_dev::conformance`.

use burn::prelude::*;
use kiln_core::loss::CrossEntropy;
use kiln_dev::conformance::{Tolerance, check_parity, check_training, reference_device};
use kiln_vision::models::blocks::ConvBlockConfig;
use kiln_vision::{ImageClassifier, LeNet5Config, ResNetConfig};

/// `[n, c, s, s]` images with values in [0, 1], the same on every backend.
fn images(n: usize, c: usize, s: usize, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = (0..n * c * s * s)
        .map(|i| 0.5 + 0.5 * ((i as f32) * 0.731).sin())
        .collect();
    Tensor::<1>::from_floats(values.as_slice(), device).reshape([n, c, s, s])
}

fn targets(n: usize, classes: i64, device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = (0..n as i64).map(|i| (i * 3) % classes).collect();
    Tensor::<1, Int>::from_ints(values.as_slice(), device)
}

kiln_dev::backend_test! {
    /// LeNet-5: two convolutions with max pooling, three dense layers.
    fn lenet_parity(device) {
        let reference = reference_device();
        reference.seed(11);
        let model = LeNet5Config::new().with_num_classes(4).init(&reference);
        check_parity("lenet-5", &model, device, Tolerance::DEFAULT, |m, d| {
            m.logits(images(2, 1, 28, d))
        });
    }
}

kiln_dev::backend_test! {
    /// A ResNet with batch norm (training mode: batch statistics), strided and 1x1
    /// convolutions and global average pooling.
    fn resnet_parity(device) {
        let reference = reference_device();
        reference.seed(12);
        let model = ResNetConfig::new()
            .with_channels(3)
            .with_widths([4, 8, 8])
            .with_num_classes(3)
            .init(&reference);
        check_parity("resnet", &model, device, Tolerance::DEFAULT, |m, d| {
            m.logits(images(3, 3, 12, d))
        });
    }
}

kiln_dev::backend_test! {
    /// The `ConvBlock` (convolution with SAME padding, stride 2).
    fn conv_block_parity(device) {
        let reference = reference_device();
        reference.seed(13);
        let block = ConvBlockConfig::new([2, 3], [3, 3])
            .with_strides([2, 2])
            .init(&reference);
        check_parity("conv block", &block, device, Tolerance::DEFAULT, |m, d| {
            m.forward(images(2, 2, 9, d))
        });
    }
}

kiln_dev::backend_test! {
    /// Eight Adam steps of LeNet-5 on one batch lower the cross-entropy.
    fn lenet_training(device) {
        let reference = reference_device();
        reference.seed(14);
        let model = LeNet5Config::new().with_num_classes(4).init(&reference);
        check_training("lenet-5", &model, device, 8, 0.003, |m, d| {
            CrossEntropy::new().forward(m.logits(images(8, 1, 28, d)), targets(8, 4, d))
        });
    }
}
