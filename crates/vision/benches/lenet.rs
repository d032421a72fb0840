//! Image-model training throughput: images per second of a full training step (forward,
//! cross-entropy, backward, Adam update) at batch 64 on 28x28 images, for LeNet-5 and the
//! default small ResNet, on every compiled-in CPU backend. The PyTorch peer of the LeNet case
//! is `benches/peers/lenet_torch.py`, run by `cargo xtask bench`.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_core::TrainStep;
use kiln_core::optim::OptimizerConfig;
use kiln_dev::bench::Bencher;
use kiln_vision::{ImageBatch, LeNet5Config, ResNetConfig};

/// Times Adam training steps of `model` on `batch`.
fn time_steps<M: TrainStep<ImageBatch>>(
    bench: &mut Bencher,
    name: &str,
    backend: &str,
    model: M,
    batch: &ImageBatch,
) {
    let mut model = Some(model);
    let mut optim = OptimizerConfig::adam().init();
    let images = batch.targets.dims()[0] as f64;
    bench.run(name, backend, Some((images, "images")), || {
        let m = model.take().expect("model");
        let out = m.train_step(batch.clone());
        let grads = GradientsParams::from_grads(out.loss.backward(), &m);
        model = Some(optim.step(1e-3, m, grads));
    });
}

fn main() -> kiln_core::Result<()> {
    let mut bench = Bencher::from_args();
    let batch_size = if bench.tiny() { 4 } else { 64 };
    for backend in kiln_dev::bench::backends() {
        let device = backend.device()?.autodiff();
        device.seed(0);
        let batch = ImageBatch {
            images: Tensor::random(
                [batch_size, 1, 28, 28],
                Distribution::Normal(0.0, 1.0),
                &device,
            ),
            targets: Tensor::random([batch_size], Distribution::Uniform(0.0, 10.0), &device),
        };
        time_steps(
            &mut bench,
            "lenet5_train_step_b64",
            backend.name(),
            LeNet5Config::new().init(&device),
            &batch,
        );
        time_steps(
            &mut bench,
            "resnet_train_step_b64",
            backend.name(),
            ResNetConfig::new().init(&device),
            &batch,
        );
    }
    bench.finish()
}
