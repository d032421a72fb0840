//! Image generation on MNIST or Fashion-MNIST: trains a class-conditional VAE or denoising
//! diffusion model (DDPM) for a time budget, samples images for every class, and measures
//! them with a LeNet-5 "judge" trained here on the real training set: class fidelity (the
//! fraction classified as the class asked for) and the Fréchet distance in the judge's
//! features against the real test images, beside the real-vs-real distance (as many training
//! images as generated ones, against the same test images) and a noise baseline. Not Inception FID: see
//! `kiln_vision::generative::measures`.
//!
//! ```sh
//! cargo run --release --example gen_images -- --data ../shared/data/mnist --model ddpm --minutes 30
//! cargo run --release --example gen_images -- --data ../shared/data/mnist --model vae --minutes 5
//! ```
//!
//! Writes `samples.png` (one row per class) in the run folder; `--report` has
//! `class_fidelity`, `frechet_distance`, `real_frechet_distance`, `noise_frechet_distance`,
//! per-class fidelity, `sample_seconds_64` (64 images at `--sample-steps`), training time.
//! `--resume` continues the run folder's last checkpoint.

#[path = "common/mod.rs"]
mod common;
#[path = "common/idx.rs"]
mod idx;

use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::prelude::Device;
use clap::{Parser, ValueEnum};
use idx::DatasetName;
use kiln_core::metrics::{Accuracy, Term};
use kiln_core::optim::{Decay, LrSchedule, OptimizerConfig};
use kiln_core::train::{Ema, Monitor, StopRules};
use kiln_core::{Data, Trainer, TrainerConfig};
use kiln_vision::data::MnistDataset;
use kiln_vision::generative::measures::{Judged, judge};
use kiln_vision::generative::{DdpmConfig, Sampler, UNetConfig, VaeConfig};
use kiln_vision::{
    ImageBatcher, ImageItem, LeNet5, LeNet5Config, Pipeline, Transform, VisionError, plots,
};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelName {
    Vae,
    Ddpm,
}

const MNIST_LABELS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
const FASHION_LABELS: [&str; 10] = [
    "T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot",
];

/// Train a class-conditional image generator and measure its samples.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    #[command(flatten)]
    train: common::TrainArgs,
    /// The generator.
    #[arg(long, value_enum, default_value = "ddpm")]
    model: ModelName,
    /// Which data set the folder holds.
    #[arg(long, value_enum, default_value = "mnist")]
    dataset: DatasetName,
    /// Training time budget in minutes (the judge's training not included).
    #[arg(long, value_parser = common::positive_rate, default_value_t = 30.0)]
    minutes: f64,
    /// At most this many epochs, whatever the budget.
    #[arg(long, value_parser = common::positive, default_value_t = 1000)]
    max_epochs: usize,
    /// Batch size (64: the batch of the 30-minute DDPM runs in docs/benchmarks.md).
    #[arg(long, value_parser = common::positive, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (AdamW; warm-up then constant).
    #[arg(long, value_parser = common::positive_rate, default_value_t = 1e-3)]
    lr: f64,
    /// DDIM sampling steps (0: DDPM's ancestral sampling through every step).
    #[arg(long, default_value_t = 50)]
    sample_steps: usize,
    /// Classifier-free guidance scale (1: the conditional model alone).
    #[arg(long, value_parser = common::non_negative, default_value_t = 2.0)]
    guidance: f64,
    /// Decay of the weights' moving average (0: none).
    #[arg(long, value_parser = unit_interval, default_value_t = 0.999)]
    ema: f64,
    /// Images generated per class for the measures.
    #[arg(long, value_parser = common::at_least_two, default_value_t = 100)]
    per_class: usize,
    /// U-Net widths at full, half and quarter resolution (ddpm).
    #[arg(long, value_delimiter = ',', default_value = "16,32,64")]
    widths: Vec<usize>,
    /// Use only the first N training images (quick runs).
    #[arg(long, value_parser = common::positive)]
    limit: Option<usize>,
    /// Measure against only the first N test images (quick runs; at least 2).
    #[arg(long, value_parser = common::at_least_two)]
    test_limit: Option<usize>,
    /// Epochs of the judge (LeNet-5 on the real training set).
    #[arg(long, value_parser = common::positive, default_value_t = 4)]
    judge_epochs: usize,
    /// Seed of training and sampling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn unit_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be in [0, 1]".into())
    }
}

fn main() -> std::process::ExitCode {
    common::exit(run(Args::parse()).map_err(Into::into))
}

fn run(args: Args) -> Result<(), VisionError> {
    if args.widths.len() != 3 {
        return Err(VisionError::Parameter {
            name: "widths",
            reason: format!("{:?}: expected three widths", args.widths),
        });
    }
    let device = args.common.device()?;
    let (train, test) = idx::splits(args.common.data.as_deref(), args.limit, args.test_limit)?;
    let test_items = idx::items(&test)?;
    let run_dir = args.common.run_dir(&format!(
        "gen-{}-{}",
        args.dataset.name(),
        match args.model {
            ModelName::Vae => "vae",
            ModelName::Ddpm => "ddpm",
        }
    ));
    let (mean, std) = args.dataset.stats();
    let judge_batcher =
        ImageBatcher::new(1, 28, 28).with_pipeline(Pipeline::new().then(Transform::Normalize {
            mean: vec![mean],
            std: vec![std],
        }));

    // The judge: LeNet-5 on the real training set, trained once per run folder.
    let judge_model = train_judge(&args, &train, &judge_batcher, &run_dir, &device)?;

    // The generator.
    let pixels = ImageBatcher::new(1, 28, 28);
    let budget = StopRules::epochs(args.max_epochs).with_time_budget(args.minutes * 60.0);
    let config = args.train.apply(
        TrainerConfig::new(
            OptimizerConfig::adamw(0.0),
            LrSchedule::WarmupDecay {
                lr: args.lr,
                warmup_steps: 500,
                decay: Decay::Linear,
                final_lr: args.lr,
                steps: None,
            },
        )
        .with_batch_size(args.batch_size)
        .with_stop(budget)
        .with_monitor(Monitor::new("train_loss"))
        .with_seed(args.seed)
        .with_run_dir(run_dir.join(match args.model {
            ModelName::Vae => "vae",
            ModelName::Ddpm => "ddpm",
        }))
        .with_progress(args.common.progress()),
    );
    let config = if args.ema > 0.0 {
        config.with_ema(Ema::new(args.ema))
    } else {
        config
    };
    let data = Data::new(train.clone(), pixels.clone());
    device.seed(args.seed);
    let requested: Vec<usize> = (0..10).flat_map(|c| vec![c; args.per_class]).collect();
    let (generated, report, sample_seconds_64, generate_seconds, sampler) = match args.model {
        ModelName::Ddpm => {
            let model_config = DdpmConfig::new(UNetConfig::new().with_widths([
                args.widths[0],
                args.widths[1],
                args.widths[2],
            ]));
            let model = model_config.init(&device)?;
            let sampler = match args.sample_steps {
                0 => Sampler::Ddpm,
                steps => Sampler::Ddim { steps },
            };
            // Checked before training: a step count past the schedule fails now, not after.
            if let Sampler::Ddim { steps } = sampler {
                model.schedule().ddim_steps(steps)?;
            }
            let trainer = Trainer::new(config, &device);
            let fitted = args.train.fit(&trainer, model, &data, None)?;
            let model = fitted.model;
            args.common.say("sampling");
            let (all, seconds, total) = generate_all(&requested, args.seed, |classes, seed| {
                model.sample(classes, [1, 28, 28], sampler, args.guidance, seed, &device)
            })?;
            (all, fitted.report, seconds, total, json!(sampler))
        }
        ModelName::Vae => {
            let model = VaeConfig::new().init(&device)?;
            let trainer = Trainer::new(config, &device)
                .with_metric(Term::new("recon"))
                .with_metric(Term::new("kl"));
            let fitted = args.train.fit(&trainer, model, &data, None)?;
            let model = fitted.model;
            let (all, seconds, total) = generate_all(&requested, args.seed, |classes, seed| {
                model.sample(classes, seed, &device)
            })?;
            (all, fitted.report, seconds, total, json!("decoder"))
        }
    };
    // The run's own training time (a resumed run's earlier seconds included).
    let train_seconds = report.train_secs;
    let generated: Vec<ImageItem> = generated
        .chunks(784)
        .zip(&requested)
        .map(|(p, &label)| ImageItem {
            pixels: p.to_vec(),
            label,
        })
        .collect();

    // The measures.
    args.common.say("measuring");
    let real_test = judge(&judge_model, &test_items, &judge_batcher, &device)?;
    let fake = judge(&judge_model, &generated, &judge_batcher, &device)?;
    // As many real training images as generated ones: a Fréchet distance estimated from few
    // images is biased upwards (MNIST, one judge: real train vs the 10,000 test images 5.05
    // from 1,000 training images, 1.11 from 10,000), so only equal counts make the two
    // distances comparable.
    let real_train_items: Vec<ImageItem> = idx::items(&train)?
        .into_iter()
        .take(generated.len().max(2))
        .collect();
    let real_train = judge(&judge_model, &real_train_items, &judge_batcher, &device)?;
    let noise = noise_images(generated.len(), args.seed);
    let noise = judge(&judge_model, &noise, &judge_batcher, &device)?;
    let class_fidelity = fake.class_fidelity(&requested)?;
    let frechet = fake.frechet_distance(&real_test)?;
    let real_frechet = real_train.frechet_distance(&real_test)?;
    let noise_frechet = noise.frechet_distance(&real_test)?;
    let test_labels: Vec<usize> = test_items.iter().map(|i| i.label).collect();
    let judge_accuracy = real_test.class_fidelity(&test_labels)?;
    let per_class = per_class_fidelity(&fake, &requested);

    let labels: Vec<String> = match args.dataset {
        DatasetName::Mnist => MNIST_LABELS.iter().map(|s| s.to_string()).collect(),
        DatasetName::Fashion => FASHION_LABELS.iter().map(|s| s.to_string()).collect(),
    };
    let shown = args.per_class.min(10);
    let rows: Vec<Vec<Vec<f32>>> = (0..10)
        .map(|c| {
            generated[c * args.per_class..c * args.per_class + shown]
                .iter()
                .map(|i| i.pixels.clone())
                .collect()
        })
        .collect();
    let grid = run_dir.join("samples.png");
    plots::sample_grid(
        &rows,
        &labels,
        [1, 28, 28],
        &format!(
            "{} samples, one row per class",
            match args.model {
                ModelName::Vae => "VAE",
                ModelName::Ddpm => "DDPM",
            }
        ),
        &grid,
    )?;
    args.common.say(format!(
        "class fidelity {:.2}% (judge test accuracy {:.2}%); Fréchet distance in LeNet-5 \
         features: generated {frechet:.3}, real train vs test {real_frechet:.3}, noise \
         {noise_frechet:.1}; 64 images in {sample_seconds_64:.2} s; samples: {}",
        100.0 * class_fidelity,
        100.0 * judge_accuracy,
        grid.display()
    ));
    args.common.write_report(&json!({
        "dataset": args.dataset.name(),
        "model": match args.model { ModelName::Vae => "vae", ModelName::Ddpm => "ddpm" },
        "class_fidelity": class_fidelity,
        "per_class_fidelity": per_class,
        "frechet_distance": frechet,
        "real_frechet_distance": real_frechet,
        "noise_frechet_distance": noise_frechet,
        "frechet_features": "LeNet-5 penultimate layer (84), trained here; not Inception FID",
        "judge_test_accuracy": judge_accuracy,
        "generated_images": generated.len(),
        "real_train_images": real_train_items.len(),
        "test_images": test_items.len(),
        "sampler": sampler,
        "guidance": args.guidance,
        "sample_seconds_64": sample_seconds_64,
        "epochs": report.epochs,
        "steps": report.steps,
        "stop_reason": report.stop_reason.to_string(),
        "final_train_loss": report.history.last().and_then(|r| r.train.get("loss").copied()),
        "train_seconds": train_seconds,
        "sample_seconds_total": generate_seconds,
        "minutes": args.minutes,
        "ema": args.ema,
        "backend": args.common.backend,
        "peak_rss_mib": common::peak_rss_mib(),
    }))?;
    Ok(())
}

/// Generates one image per entry of `requested` with `sample(classes, seed)`: the first 64
/// alone (timed: the sampling-speed measure), then 100 at a time with the next seeds. Returns
/// the pixels and the seconds of the first 64 and of all.
fn generate_all(
    requested: &[usize],
    seed: u64,
    sample: impl Fn(&[usize], u64) -> Result<burn::Tensor<4>, VisionError>,
) -> Result<(Vec<f32>, f64, f64), VisionError> {
    let started = Instant::now();
    let (first, rest) = requested.split_at(64.min(requested.len()));
    let mut all = pixels(sample(first, seed)?);
    let seconds_64 = started.elapsed().as_secs_f64();
    for (k, chunk) in rest.chunks(100).enumerate() {
        all.extend(pixels(sample(chunk, seed + 1 + k as u64)?));
    }
    Ok((all, seconds_64, started.elapsed().as_secs_f64()))
}

fn pixels(images: burn::Tensor<4>) -> Vec<f32> {
    images
        .into_data()
        .try_to_vec_as::<f32>()
        .unwrap_or_default()
}

/// Trains the judge (or loads it from the run folder's `judge/` when it is there).
fn train_judge(
    args: &Args,
    train: &MnistDataset,
    batcher: &ImageBatcher,
    run_dir: &std::path::Path,
    device: &Device,
) -> Result<LeNet5, VisionError> {
    let dir = run_dir.join("judge");
    let best = Trainer::best_checkpoint(&dir);
    device.seed(args.seed);
    let model: LeNet5 = LeNet5Config::new().init(device);
    if best.is_file() {
        return Ok(Trainer::load_model(model, &best)?);
    }
    args.common.say("training the judge (LeNet-5)");
    let steps = train.len().div_ceil(128);
    let config = TrainerConfig::new(
        OptimizerConfig::adamw(1e-4),
        LrSchedule::Cosine {
            lr: 2e-3,
            min_lr: 2e-5,
            steps: Some(args.judge_epochs * steps),
        },
    )
    .with_batch_size(128)
    .with_stop(StopRules::epochs(args.judge_epochs))
    .with_monitor(Monitor::new("train_accuracy"))
    .with_seed(args.seed)
    .with_run_dir(&dir)
    .with_progress(args.common.progress());
    let trainer = Trainer::new(config, device).with_metric(Accuracy::new());
    let mut pipeline = Pipeline::new()
        .with_augment(true)
        .then(Transform::RandomShift { max: 2 });
    pipeline
        .transforms
        .extend(batcher.pipeline.transforms.iter().cloned());
    let augmented = batcher.clone().with_pipeline(pipeline);
    let fitted = trainer.fit(model, &Data::new(train.clone(), augmented), None)?;
    Ok(Trainer::load_model(fitted.model, &best)?)
}

/// Uniform noise images, the measures' worst case.
fn noise_images(n: usize, seed: u64) -> Vec<ImageItem> {
    let mut rng = kiln_core::data::SplitMix64::new(seed ^ 0x006e_6f69_7365);
    (0..n)
        .map(|i| ImageItem {
            pixels: (0..784).map(|_| rng.uniform() as f32).collect(),
            label: i % 10,
        })
        .collect()
}

fn per_class_fidelity(judged: &Judged, requested: &[usize]) -> Vec<f64> {
    (0..10)
        .map(|c| {
            let (hits, total) = judged
                .predicted
                .iter()
                .zip(requested)
                .filter(|(_, r)| **r == c)
                .fold((0, 0), |(h, t), (p, _)| (h + usize::from(*p == c), t + 1));
            hits as f64 / total.max(1) as f64
        })
        .collect()
}
