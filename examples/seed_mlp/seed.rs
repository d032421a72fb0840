//! The primer's own network, the one its training loop is explained with: one sigmoid unit
//! `y_hat = sigmoid(W x + b)` on three points, trained on `L = 1/(2N) sum (y - y_hat)^2` by
//! gradient descent `W <- W - alpha dL/dW`.
//!
//! It is small enough to check by hand: [`analytic_gradient`] is the derivative worked out on
//! paper, and the tests hold Burn's autodiff and kiln-core's `Trainer` to it
//! (`cargo test --example seed_mlp`). Run it with `cargo run --release --example seed_mlp`.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use kiln_core::metrics::StepOutput;
use kiln_core::train::{Data, TrainStep};

/// The seed's inputs `x = [[1, 2], [2, 3], [3, 4]]`.
pub const INPUTS: [[f32; 2]; 3] = [[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]];
/// The seed's targets `y = [0, 0, 1]`.
pub const TARGETS: [f32; 3] = [0.0, 0.0, 1.0];

/// Configuration of [`SeedNet`].
#[derive(Config, Debug)]
pub struct SeedNetConfig {
    /// Input features.
    #[config(default = 2)]
    pub inputs: usize,
    /// Start from `W = 0, b = 0` (the reproducible default) instead of Burn's random init.
    #[config(default = true)]
    pub zero_init: bool,
}

impl SeedNetConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> SeedNet {
        let mut linear = LinearConfig::new(self.inputs, 1);
        if self.zero_init {
            linear = linear.with_initializer(Initializer::Zeros);
        }
        SeedNet {
            linear: linear.init(device),
        }
    }
}

/// `y_hat = sigmoid(W x + b)`.
#[derive(Module, Debug)]
pub struct SeedNet {
    /// `W` (stored `[inputs, 1]`) and `b`.
    pub linear: Linear,
}

impl SeedNet {
    /// # Shapes
    /// - `x`: `[N, inputs]`
    /// - output: `[N, 1]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        sigmoid(self.linear.forward(x))
    }

    /// `W` as a vector and `b`.
    pub fn parameters(&self) -> (Vec<f32>, f32) {
        let w = self
            .linear
            .weight
            .val()
            .into_data()
            .try_to_vec_as::<f32>()
            .unwrap_or_default();
        let b = self
            .linear
            .bias
            .as_ref()
            .map(|b| {
                b.val()
                    .into_data()
                    .try_to_vec_as::<f32>()
                    .unwrap_or_default()[0]
            })
            .unwrap_or(0.0);
        (w, b)
    }
}

/// A batch of the seed's data.
#[derive(Debug, Clone)]
pub struct SeedBatch {
    /// `[N, 2]` inputs.
    pub x: Tensor<2>,
    /// `[N, 1]` targets.
    pub y: Tensor<2>,
}

/// Stacks `(x, y)` pairs into a [`SeedBatch`].
#[derive(Debug, Clone, Default)]
pub struct SeedBatcher;

impl Batcher<([f32; 2], f32), SeedBatch> for SeedBatcher {
    fn batch(&self, items: Vec<([f32; 2], f32)>, device: &Device) -> SeedBatch {
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|(x, _)| *x).collect();
        let y: Vec<f32> = items.iter().map(|(_, y)| *y).collect();
        SeedBatch {
            x: Tensor::<1>::from_floats(x.as_slice(), device).reshape([n, 2]),
            y: Tensor::<1>::from_floats(y.as_slice(), device).reshape([n, 1]),
        }
    }
}

impl TrainStep<SeedBatch> for SeedNet {
    fn train_step(&self, batch: SeedBatch) -> StepOutput {
        let n = batch.x.dims()[0];
        let y_hat = self.forward(batch.x);
        StepOutput::regression(
            kiln_core::loss::half_mse(y_hat.clone(), batch.y.clone()),
            y_hat.reshape([n]),
            batch.y.reshape([n]),
        )
    }
}

/// The seed's three points as trainer data.
pub fn data() -> Data<([f32; 2], f32), SeedBatch> {
    let items: Vec<([f32; 2], f32)> = INPUTS.iter().copied().zip(TARGETS).collect();
    Data::new(InMemDataset::new(items), SeedBatcher)
}

/// `dL/dW` and `dL/db` of `L = 1/(2N) sum (y - y_hat)^2` with `y_hat = sigmoid(W x + b)`,
/// derived by hand: `dL/dW_j = 1/N sum_i (y_hat_i - y_i) y_hat_i (1 - y_hat_i) x_ij`, and the
/// same without `x_ij` for `b`. Computed in `f64`.
pub fn analytic_gradient(
    w: &[f64],
    b: f64,
    inputs: &[[f64; 2]],
    targets: &[f64],
) -> (Vec<f64>, f64) {
    let n = inputs.len() as f64;
    let mut dw = vec![0.0; w.len()];
    let mut db = 0.0;
    for (x, y) in inputs.iter().zip(targets) {
        let z: f64 = w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() + b;
        let y_hat = 1.0 / (1.0 + (-z).exp());
        let delta = (y_hat - y) * y_hat * (1.0 - y_hat) / n;
        for (g, x) in dw.iter_mut().zip(x) {
            *g += delta * x;
        }
        db += delta;
    }
    (dw, db)
}

/// The loss `1/(2N) sum (y - y_hat)^2` in `f64`.
pub fn loss(w: &[f64], b: f64, inputs: &[[f64; 2]], targets: &[f64]) -> f64 {
    let n = inputs.len() as f64;
    inputs
        .iter()
        .zip(targets)
        .map(|(x, y)| {
            let z: f64 = w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() + b;
            let y_hat = 1.0 / (1.0 + (-z).exp());
            (y - y_hat).powi(2)
        })
        .sum::<f64>()
        / (2.0 * n)
}

/// The seed's loop written out by hand in `f64`: `steps` updates `W <- W - alpha dL/dW`
/// from `W = 0, b = 0`. The reference the trainer is tested against.
pub fn reference_descent(alpha: f64, steps: usize) -> (Vec<f64>, f64) {
    let inputs: Vec<[f64; 2]> = INPUTS.iter().map(|x| [x[0] as f64, x[1] as f64]).collect();
    let targets: Vec<f64> = TARGETS.iter().map(|&y| y as f64).collect();
    let (mut w, mut b) = (vec![0.0; 2], 0.0);
    for _ in 0..steps {
        let (dw, db) = analytic_gradient(&w, b, &inputs, &targets);
        for (w, g) in w.iter_mut().zip(dw) {
            *w -= alpha * g;
        }
        b -= alpha * db;
    }
    (w, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::optim::GradientsParams;
    use kiln_core::optim::{LrSchedule, OptimizerConfig};
    use kiln_core::train::{ProgressMode, StopReason, StopRules, Trainer, TrainerConfig};
    use proptest::prelude::*;

    fn inputs64() -> Vec<[f64; 2]> {
        INPUTS.iter().map(|x| [x[0] as f64, x[1] as f64]).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Burn's autodiff gradient of the seed's loss equals the derivative worked out by hand.
        #[test]
        fn autodiff_gradient_equals_analytic_gradient(w0 in -2.0f32..2.0, w1 in -2.0f32..2.0, b in -2.0f32..2.0) {
            let device = kiln_core::backend::device("cpu").unwrap().autodiff();
            let mut net = SeedNetConfig::new().init(&device);
            net.linear.weight = Param::from_tensor(Tensor::<2>::from_floats([[w0], [w1]], &device));
            net.linear.bias = Some(Param::from_tensor(Tensor::<1>::from_floats([b], &device)));
            let items = INPUTS.iter().copied().zip(TARGETS).collect();
            let batch = SeedBatcher.batch(items, &device);
            let out = net.train_step(batch);
            let grads = GradientsParams::from_grads(out.loss.backward(), &net);
            let dw: Vec<f32> = grads.get::<2>(net.linear.weight.id).unwrap().into_data().try_to_vec_as().unwrap();
            let db: Vec<f32> = grads.get::<1>(net.linear.bias.as_ref().unwrap().id).unwrap().into_data().try_to_vec_as().unwrap();

            let (want_w, want_b) = analytic_gradient(&[w0 as f64, w1 as f64], b as f64, &inputs64(), &[0.0, 0.0, 1.0]);
            for (got, want) in dw.iter().zip(&want_w) {
                prop_assert!((*got as f64 - want).abs() < 1e-5, "dW {:?} vs {:?}", dw, want_w);
            }
            prop_assert!((db[0] as f64 - want_b).abs() < 1e-5, "db {} vs {}", db[0], want_b);
        }
    }

    /// 1000 steps of plain gradient descent through the trainer land where the hand-written
    /// loop does.
    #[test]
    fn trainer_reproduces_the_seed_loop() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let config = TrainerConfig::new(OptimizerConfig::sgd(), LrSchedule::constant(0.01))
            .with_batch_size(3)
            .with_shuffle(false)
            .with_stop(StopRules::steps(1000))
            .with_progress(ProgressMode::Quiet);
        let fitted = Trainer::new(config, &device)
            .fit(SeedNetConfig::new().init(&device), &data(), None)
            .unwrap();
        assert_eq!(
            fitted.report.stop_reason,
            StopReason::MaxSteps { steps: 1000 }
        );
        let (w, b) = fitted.model.parameters();
        let (want_w, want_b) = reference_descent(0.01, 1000);
        for (got, want) in w.iter().zip(&want_w) {
            assert!((*got as f64 - want).abs() < 1e-4, "W {w:?} vs {want_w:?}");
        }
        assert!((b as f64 - want_b).abs() < 1e-4, "b {b} vs {want_b}");
        let final_loss = fitted.report.last().unwrap().train["loss"];
        let start = loss(&[0.0, 0.0], 0.0, &inputs64(), &[0.0, 0.0, 1.0]);
        assert!(final_loss < start, "{final_loss} >= {start}");
    }
}
