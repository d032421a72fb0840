//! Which CPU backend should be the default? A training step (forward, backward, Adam update)
//! of a small CNN (LeNet-5 shape, batch 64, 28x28) and of an LSTM classifier (batch 32,
//! sequence 64, hidden 128), on every compiled-in backend, and whether a few dozen steps on one
//! batch lower the loss (convergence).
//!
//! `cargo xtask bench --filter backend` (with `--features ndarray` to compare against ndarray).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, Linear, LinearConfig, Lstm, LstmConfig, PaddingConfig2d, Relu,
};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_core::bench::Bencher;
use kiln_core::loss::CrossEntropy;
use kiln_core::optim::OptimizerConfig;

#[derive(Module, Debug)]
struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    relu: Relu,
}

impl Cnn {
    fn new(device: &Device) -> Self {
        Self {
            conv1: Conv2dConfig::new([1, 6], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
                .init(device),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(400, 120).init(device),
            fc2: LinearConfig::new(120, 84).init(device),
            fc3: LinearConfig::new(84, 10).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(self.relu.forward(self.conv1.forward(x)));
        let x = self.pool.forward(self.relu.forward(self.conv2.forward(x)));
        let x = self.relu.forward(self.fc1.forward(x.flatten(1, 3)));
        self.fc3.forward(self.relu.forward(self.fc2.forward(x)))
    }
}

#[derive(Module, Debug)]
struct LstmNet {
    embedding: Embedding,
    lstm: Lstm,
    out: Linear,
}

impl LstmNet {
    fn new(device: &Device, hidden: usize) -> Self {
        Self {
            embedding: EmbeddingConfig::new(1000, 64).init(device),
            lstm: LstmConfig::new(64, hidden, true).init(device),
            out: LinearConfig::new(hidden, 2).init(device),
        }
    }

    fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<2> {
        let (_, state) = self.lstm.forward(self.embedding.forward(tokens), None);
        self.out.forward(state.hidden)
    }
}

/// One Adam step on a batch; returns the loss before the update.
fn step<M: Module>(model: M, optim: &mut ModuleOptimizer, loss: Tensor<1>) -> (M, f64) {
    let value = loss.clone().into_scalar::<f64>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(1e-3, model, grads), value)
}

fn main() -> kiln_core::Result<()> {
    let mut bench = Bencher::from_args();
    let tiny = bench.tiny();
    let (cnn_batch, lstm_batch, seq, hidden) = if tiny {
        (4, 2, 8, 16)
    } else {
        (64, 32, 64, 128)
    };
    let converge_steps = if tiny { 3 } else { 30 };

    for backend in kiln_core::backend::compiled()
        .into_iter()
        .filter(|b| b.is_cpu())
    {
        let device = backend.device()?.autodiff();
        device.seed(0);

        // CNN
        let images = Tensor::<4>::random(
            [cnn_batch, 1, 28, 28],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let labels =
            Tensor::<1, Int>::random([cnn_batch], Distribution::Uniform(0.0, 10.0), &device);
        let mut model = Some(Cnn::new(&device));
        let mut optim = OptimizerConfig::adam().init();
        let ce = CrossEntropy::new();
        let mut cnn_step = |optim: &mut ModuleOptimizer| {
            let m = model.take().expect("model");
            let loss = ce.forward(m.forward(images.clone()), labels.clone());
            let (m, value) = step(m, optim, loss);
            model = Some(m);
            value
        };
        let first = cnn_step(&mut optim);
        let last = (0..converge_steps)
            .map(|_| cnn_step(&mut optim))
            .last()
            .unwrap_or(first);
        if let Some(r) = bench.run(
            "cnn_train_step",
            backend.name(),
            Some((cnn_batch as f64, "images")),
            || {
                cnn_step(&mut optim);
            },
        ) {
            r.extra.insert("loss_first".into(), first.into());
            r.extra
                .insert(format!("loss_after_{converge_steps}"), last.into());
            r.extra.insert("converges".into(), (last < first).into());
        }

        // LSTM
        let tokens = Tensor::<2, Int>::random(
            [lstm_batch, seq],
            Distribution::Uniform(0.0, 1000.0),
            &device,
        );
        let targets =
            Tensor::<1, Int>::random([lstm_batch], Distribution::Uniform(0.0, 2.0), &device);
        let mut model = Some(LstmNet::new(&device, hidden));
        let mut optim = OptimizerConfig::adam().init();
        let mut lstm_step = |optim: &mut ModuleOptimizer| {
            let m = model.take().expect("model");
            let loss = ce.forward(m.forward(tokens.clone()), targets.clone());
            let (m, value) = step(m, optim, loss);
            model = Some(m);
            value
        };
        let first = lstm_step(&mut optim);
        let last = (0..converge_steps)
            .map(|_| lstm_step(&mut optim))
            .last()
            .unwrap_or(first);
        if let Some(r) = bench.run(
            "lstm_train_step",
            backend.name(),
            Some(((lstm_batch * seq) as f64, "tokens")),
            || {
                lstm_step(&mut optim);
            },
        ) {
            r.extra.insert("loss_first".into(), first.into());
            r.extra
                .insert(format!("loss_after_{converge_steps}"), last.into());
            r.extra.insert("converges".into(), (last < first).into());
        }
    }
    bench.finish()
}
