//! Image generation speed: sampling 64 images from `gen_images`' class-conditional DDPM U-Net
//! (widths 16/32/64) in 50 DDIM steps with classifier-free guidance (issue 30's target: under
//! 10 s on 2 cores), one training step of it at batch 128, one forward pass at batch 128 (a
//! sampling step's work with guidance) and, to see where that time goes, its group norm +
//! SiLU (Kiln's fused operation and Burn's layer) and one of its full-resolution
//! convolutions alone; the VAE's 64 samples. Every compiled-in CPU backend. Weights are
//! random: speed does not depend on them.

use burn::nn::GroupNormConfig;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::silu;
use kiln_core::TrainStep;
use kiln_core::optim::OptimizerConfig;
use kiln_dev::bench::Bencher;
use kiln_vision::ImageBatch;
use kiln_vision::generative::{DdpmConfig, Sampler, UNetConfig, VaeConfig};

fn main() -> kiln_core::Result<()> {
    let mut bench = Bencher::from_args();
    let tiny = bench.tiny();
    let (images, steps, widths, batch) = if tiny {
        (2, 2, [8, 8, 8], 2)
    } else {
        // gen_images' default U-Net.
        (64, 50, [16, 32, 64], 128)
    };
    for backend in kiln_dev::bench::backends() {
        let name = backend.name();
        let device = backend.device()?;
        device.seed(0);
        let config = DdpmConfig::new(UNetConfig::new().with_widths(widths));
        let ddpm = config
            .init(&device)
            .map_err(|e| kiln_core::Error::InvalidConfig(e.to_string()))?;
        let classes: Vec<usize> = (0..images).map(|i| i % 10).collect();
        bench.run(
            "ddpm_sample_64_ddim50_guided",
            name,
            Some((images as f64, "images")),
            || {
                ddpm.sample(
                    &classes,
                    [1, 28, 28],
                    Sampler::Ddim { steps },
                    2.0,
                    1,
                    &device,
                )
                .expect("sampling")
                .into_data();
            },
        );
        let x = Tensor::<4>::random([batch, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<1>::full([batch], 500.0, &device);
        let labels = Tensor::<1, Int>::zeros([batch], &device);
        bench.run(
            "unet_forward_b128",
            name,
            Some((batch as f64, "images")),
            || {
                ddpm.unet
                    .forward(x.clone(), t.clone(), labels.clone())
                    .into_data();
            },
        );
        let c0 = widths[0];
        let h = Tensor::<4>::random([batch, c0, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let norm = GroupNormConfig::new(8, c0).init(&device);
        bench.run(
            "group_norm_silu_b128_full_res",
            name,
            Some((batch as f64, "images")),
            || {
                kiln_core::ops::group_norm_silu(&norm, h.clone()).into_data();
            },
        );
        bench.run(
            "group_norm_silu_burn_b128_full_res",
            name,
            Some((batch as f64, "images")),
            || {
                silu(norm.forward(h.clone())).into_data();
            },
        );
        let conv = Conv2dConfig::new([c0, c0], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        bench.run(
            "conv3x3_b128_full_res",
            name,
            Some((batch as f64, "images")),
            || {
                kiln_core::ops::conv2d_layer(&conv, h.clone()).into_data();
            },
        );

        let autodiff = device.clone().autodiff();
        autodiff.seed(0);
        let mut model = Some(
            config
                .init(&autodiff)
                .map_err(|e| kiln_core::Error::InvalidConfig(e.to_string()))?,
        );
        let mut optim = OptimizerConfig::adam().init();
        let train = ImageBatch {
            images: Tensor::random(
                [batch, 1, 28, 28],
                Distribution::Uniform(0.0, 1.0),
                &autodiff,
            ),
            targets: Tensor::random([batch], Distribution::Uniform(0.0, 10.0), &autodiff),
        };
        bench.run(
            "ddpm_train_step_b128",
            name,
            Some((batch as f64, "images")),
            || {
                let m = model.take().expect("model");
                let out = m.train_step(train.clone());
                let grads = GradientsParams::from_grads(out.loss.backward(), &m);
                model = Some(optim.step(1e-3, m, grads));
            },
        );

        let vae = VaeConfig::new()
            .init(&device)
            .map_err(|e| kiln_core::Error::InvalidConfig(e.to_string()))?;
        bench.run(
            "vae_sample_64",
            name,
            Some((images as f64, "images")),
            || {
                vae.sample(&classes, 1, &device)
                    .expect("sampling")
                    .into_data();
            },
        );
    }
    bench.finish()
}
