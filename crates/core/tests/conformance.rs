//! Backend conformance of the dense family and of Kiln's losses: the same results on every
//! compiled-in backend as on the reference CPU backend (within `Tolerance::DEFAULT`), gradient
//! parity, and a few training steps that lower the loss. See `kiln_dev::conformance`.

use burn::nn::{Linear, LinearConfig, Relu};
use burn::prelude::*;
use kiln_core::loss::{CrossEntropy, mse};
use kiln_dev::conformance::{Tolerance, check_parity, check_training, reference_device};

#[derive(Module, Debug)]
struct Mlp {
    hidden: Linear,
    relu: Relu,
    out: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(self.relu.forward(self.hidden.forward(x)))
    }
}

fn mlp() -> Mlp {
    let device = reference_device();
    device.seed(3);
    Mlp {
        hidden: LinearConfig::new(5, 12).init(&device),
        relu: Relu::new(),
        out: LinearConfig::new(12, 4).init(&device),
    }
}

/// `rows x cols` inputs in [-1, 1], the same on every backend.
fn inputs(rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i as f32) * 1.618).sin())
        .collect();
    Tensor::<1>::from_floats(values.as_slice(), device).reshape([rows, cols])
}

fn targets(rows: usize, classes: i64, device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = (0..rows as i64).map(|i| (i * 7) % classes).collect();
    Tensor::<1, Int>::from_ints(values.as_slice(), device)
}

kiln_dev::backend_test! {
    /// Linear layers and ReLU: outputs and gradients.
    fn dense_parity(device) {
        let model = mlp();
        check_parity("mlp", &model, device, Tolerance::DEFAULT, |m, d| {
            m.forward(inputs(6, 5, d))
        });
    }
}

kiln_dev::backend_test! {
    /// Cross-entropy (with label smoothing and an ignored index) and MSE through a dense model.
    fn loss_parity(device) {
        let model = mlp();
        check_parity("cross-entropy", &model, device, Tolerance::DEFAULT, |m, d| {
            let logits = m.forward(inputs(6, 5, d));
            CrossEntropy::new()
                .with_smoothing(0.1)
                .with_ignore_index(2)
                .forward(logits, targets(6, 4, d))
        });
        check_parity("mse", &model, device, Tolerance::DEFAULT, |m, d| {
            mse(m.forward(inputs(6, 5, d)), inputs(6, 4, d))
        });
    }
}

kiln_dev::backend_test! {
    /// Ten Adam steps on a small classification batch lower the loss.
    fn dense_training(device) {
        check_training("mlp", &mlp(), device, 10, 0.02, |m, d| {
            CrossEntropy::new().forward(m.forward(inputs(16, 5, d)), targets(16, 4, d))
        });
    }
}
