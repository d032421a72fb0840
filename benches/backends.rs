//! Which CPU backend should be the default? A training step (forward, backward, Adam update)
//! of LeNet-5 (batch 64, 28x28) and of an LSTM classifier (batch 32, sequence 64, hidden 128)
//! on every compiled-in CPU backend, and whether a few dozen steps on one batch lower the loss
//! (convergence).
//!
//! `cargo xtask bench --features ndarray --filter train_step` compares flex with ndarray. The
//! CPU backends are measured by default; `KILN_BENCH_BACKENDS=flex,cuda,wgpu` picks others
//! (`cargo xtask gpu-check` does so on a GPU machine).

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_core::optim::OptimizerConfig;
use kiln_core::{Backend, TrainStep};
use kiln_dev::bench::Bencher;
use kiln_nlp::{LstmClassifierConfig, TextBatch};
use kiln_vision::{ImageBatch, LeNet5Config};

/// One Adam step; returns the model and the loss before the update.
fn step<B, M: TrainStep<B>>(model: M, optim: &mut ModuleOptimizer, batch: B) -> (M, f64) {
    let out = model.train_step(batch);
    let value = out.loss.clone().into_scalar::<f64>();
    let grads = GradientsParams::from_grads(out.loss.backward(), &model);
    (optim.step(1e-3, model, grads), value)
}

/// Trains `converge_steps` steps on `batch` (recording the loss before and after), then times
/// further steps.
fn case<B: Clone, M: TrainStep<B>>(
    bench: &mut Bencher,
    name: &str,
    backend: Backend,
    model: M,
    batch: B,
    items: (f64, &str),
    converge_steps: usize,
) {
    if !bench.enabled(name) {
        return;
    }
    let mut optim = OptimizerConfig::adam().init();
    let (mut model, first) = step(model, &mut optim, batch.clone());
    let mut last = first;
    for _ in 0..converge_steps {
        (model, last) = step(model, &mut optim, batch.clone());
    }
    let mut model = Some(model);
    if let Some(r) = bench.run(name, backend.name(), Some(items), || {
        let (m, _) = step(model.take().expect("model"), &mut optim, batch.clone());
        model = Some(m);
    }) {
        r.extra.insert("loss_first".into(), first.into());
        r.extra
            .insert(format!("loss_after_{converge_steps}"), last.into());
        r.extra.insert("converges".into(), (last < first).into());
    }
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

    for backend in kiln_dev::bench::backends() {
        let device = backend.device()?.autodiff();
        device.seed(0);
        let images = ImageBatch {
            images: Tensor::random(
                [cnn_batch, 1, 28, 28],
                Distribution::Normal(0.0, 1.0),
                &device,
            ),
            targets: Tensor::random([cnn_batch], Distribution::Uniform(0.0, 10.0), &device),
        };
        let lenet = LeNet5Config::new().init(&device);
        case(
            &mut bench,
            "cnn_train_step",
            backend,
            lenet,
            images,
            (cnn_batch as f64, "images"),
            converge_steps,
        );

        let text = TextBatch {
            tokens: Tensor::random(
                [lstm_batch, seq],
                Distribution::Uniform(1.0, 1000.0),
                &device,
            ),
            mask: Tensor::<2>::ones([lstm_batch, seq], &device).greater_elem(0.0),
            targets: Tensor::random([lstm_batch], Distribution::Uniform(0.0, 2.0), &device),
        };
        let lstm = LstmClassifierConfig::new(1000, 2)
            .with_embed_dim(64)
            .with_hidden(hidden)
            .init(&device);
        case(
            &mut bench,
            "lstm_train_step",
            backend,
            lstm,
            text,
            ((lstm_batch * seq) as f64, "tokens"),
            converge_steps,
        );
    }
    bench.finish()
}
