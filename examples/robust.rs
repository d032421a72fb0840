//! Recognition that survives bad light and busy backgrounds: trains the same classifier twice
//! on MNIST or Fashion-MNIST, once with the usual augmentation ("plain": small shifts for
//! digits, flips for clothes) and once adding the robustness augmentations (rotation, clutter,
//! cutout, photometric jitter, noise), then measures both on the clean test set and on the
//! seeded corruption suite (11 corruptions x 5 severities, `kiln_vision::corrupt`), and prints
//! the table: accuracy per corruption and severity, clean, mean corrupted, per family.
//!
//! ```sh
//! cargo run --release --example robust -- --data ../shared/data/mnist
//! cargo run --release --example robust -- --data ../shared/data/fashion-mnist --dataset fashion
//! ```
//!
//! Writes `corruptions.png` (the suite on a few test images) and each model's run folder
//! (`plain/`, `augmented/`) under the run folder; `--report` has `plain_clean_accuracy`,
//! `plain_mean_corrupted_accuracy`, `augmented_clean_accuracy`,
//! `augmented_mean_corrupted_accuracy` and every set's accuracy.

#[path = "common/mod.rs"]
mod common;
#[path = "common/idx.rs"]
mod idx;

use std::sync::Arc;
use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::data::dataset::transform::SelectionDataset;
use burn::prelude::Device;
use clap::{Parser, ValueEnum};
use idx::DatasetName;
use kiln_core::metrics::Accuracy;
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::{Monitor, StopRules};
use kiln_core::{Data, TrainStep, Trainer, TrainerConfig};
use kiln_vision::data::MnistDataset;
use kiln_vision::robustness::Robustness;
use kiln_vision::{
    ImageBatch, ImageBatcher, ImageClassifier, ImageItem, LeNet5Config, Pipeline, ResNetConfig,
    Suite, Transform, VisionError, evaluate_robustness, plots,
};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelName {
    Lenet,
    Resnet,
}

/// Train a classifier with and without robustness augmentations and measure both under the
/// corruption suite.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    #[command(flatten)]
    train: common::TrainArgs,
    /// Which data set the folder holds.
    #[arg(long, value_enum, default_value = "mnist")]
    dataset: DatasetName,
    /// The classifier trained twice (default: lenet for mnist, resnet for fashion).
    #[arg(long, value_enum)]
    model: Option<ModelName>,
    /// ResNet width: the three stages get N, 2N and 4N channels.
    #[arg(long, value_parser = common::positive, default_value_t = 16)]
    width: usize,
    /// Training epochs of each model (default: 15 for mnist, 20 for fashion).
    #[arg(long, value_parser = common::positive)]
    epochs: Option<usize>,
    /// Batch size.
    #[arg(long, value_parser = common::positive, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (AdamW, cosine decay).
    #[arg(long, value_parser = common::positive_rate, default_value_t = 2e-3)]
    lr: f64,
    /// Use only the first N training images (quick runs; at least 100).
    #[arg(long, value_parser = at_least_100)]
    limit: Option<usize>,
    /// Measure on only the first N test images (quick runs).
    #[arg(long, value_parser = common::positive)]
    test_limit: Option<usize>,
    /// Seed of the training runs.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Seed of the corruption suite.
    #[arg(long, default_value_t = 0)]
    suite_seed: u64,
}

fn at_least_100(s: &str) -> Result<usize, String> {
    match common::positive(s)? {
        n if n >= 100 => Ok(n),
        n => Err(format!(
            "{n} training images: expected at least 100 (one in 12 is held out for validation)"
        )),
    }
}

fn main() -> std::process::ExitCode {
    common::exit(run(Args::parse()).map_err(Into::into))
}

fn run(args: Args) -> Result<(), VisionError> {
    let device = args.common.device()?;
    let epochs = args.epochs.unwrap_or(match args.dataset {
        DatasetName::Mnist => 15,
        DatasetName::Fashion => 20,
    });
    let (train_all, test) = idx::splits(args.common.data.as_deref(), args.limit, args.test_limit)?;
    let test_items = idx::items(&test)?;
    let holdout = (train_all.len() / 12).max(1);
    let (train_idx, valid_idx) = kiln_core::data::split_indices(
        train_all.len(),
        holdout as f64 / train_all.len() as f64,
        args.seed,
    );
    let train_all = Arc::new(train_all);
    let train: SelectionDataset<MnistDataset, ImageItem> =
        SelectionDataset::from_indices_checked(train_all.clone(), train_idx);
    let valid: SelectionDataset<MnistDataset, ImageItem> =
        SelectionDataset::from_indices_checked(train_all, valid_idx);

    let (plain, augmented) = pipelines(args.dataset);
    plain.check()?;
    augmented.check()?;
    let run_dir = args
        .common
        .run_dir(&format!("robust-{}", args.dataset.name()));
    let model_name = args.model.unwrap_or(match args.dataset {
        DatasetName::Mnist => ModelName::Lenet,
        DatasetName::Fashion => ModelName::Resnet,
    });
    let eval_batcher = ImageBatcher::new(1, 28, 28).with_pipeline(plain.for_eval());
    let suite = Suite::full().with_seed(args.suite_seed);
    let runs = Runs {
        args: &args,
        device: &device,
        epochs,
        train: &train,
        valid: &valid,
        run_dir: &run_dir,
        pipelines: [&plain, &augmented],
        test: &test_items,
        eval_batcher: &eval_batcher,
        suite: &suite,
    };
    let Measured {
        results,
        best_epochs,
        train_seconds,
        measure_seconds,
    } = match model_name {
        ModelName::Lenet => runs.run(|d| LeNet5Config::new().init(d))?,
        ModelName::Resnet => runs.run(|d| {
            let w = args.width;
            ResNetConfig::new().with_widths([w, 2 * w, 4 * w]).init(d)
        })?,
    };
    let (p, a) = (&results[0], &results[1]);
    args.common.say(table(p, a));

    let samples: Vec<&[f32]> = test_items
        .iter()
        .take(2)
        .map(|i| i.pixels.as_slice())
        .collect();
    plots::corruption_grid(
        &samples,
        [1, 28, 28],
        args.suite_seed,
        &run_dir.join("corruptions.png"),
    )?;
    args.common.say(format!(
        "run folder: {} (corruptions.png, plain/, augmented/)",
        run_dir.display()
    ));
    args.common.write_report(&json!({
        "dataset": args.dataset.name(),
        "model": match model_name {
            ModelName::Lenet => "lenet".to_string(),
            ModelName::Resnet => format!("resnet-{}", args.width),
        },
        "epochs": epochs,
        "test_images": test_items.len(),
        "suite_seed": args.suite_seed,
        "plain_clean_accuracy": p.clean,
        "plain_mean_corrupted_accuracy": p.mean_corrupted(),
        "augmented_clean_accuracy": a.clean,
        "augmented_mean_corrupted_accuracy": a.mean_corrupted(),
        "plain_best_epoch": best_epochs[0],
        "augmented_best_epoch": best_epochs[1],
        "plain_family_means": p.family_means(),
        "augmented_family_means": a.family_means(),
        "plain": p,
        "augmented": a,
        "plain_pipeline": plain,
        "augmented_pipeline": augmented,
        "train_seconds": train_seconds,
        "measure_seconds": measure_seconds,
        "backend": args.common.backend,
        "peak_rss_mib": common::peak_rss_mib(),
    }))?;
    Ok(())
}

/// Both models' results, their best epochs, and the seconds of training and measuring.
struct Measured {
    results: Vec<Robustness>,
    best_epochs: [Option<usize>; 2],
    train_seconds: f64,
    measure_seconds: f64,
}

/// What both training runs and the measurement share.
struct Runs<'a> {
    args: &'a Args,
    device: &'a Device,
    epochs: usize,
    train: &'a Images,
    valid: &'a Images,
    run_dir: &'a std::path::Path,
    pipelines: [&'a Pipeline; 2],
    test: &'a [ImageItem],
    eval_batcher: &'a ImageBatcher,
    suite: &'a Suite,
}

/// Training and validation images: a selection of the training file.
type Images = SelectionDataset<MnistDataset, ImageItem>;

impl Runs<'_> {
    /// Trains the plain and the augmented model built by `init` (their best checkpoints)
    /// and measures both: the results, best epochs and the seconds spent on each part.
    fn run<M>(&self, init: impl Fn(&Device) -> M) -> Result<Measured, VisionError>
    where
        M: ImageClassifier + TrainStep<ImageBatch>,
    {
        let started = Instant::now();
        let mut models = Vec::new();
        for (label, pipeline) in ["plain", "augmented"].into_iter().zip(self.pipelines) {
            self.args.common.say(format!(
                "training the {label} model ({} epochs)",
                self.epochs
            ));
            let batcher = ImageBatcher::new(1, 28, 28).with_pipeline(pipeline.clone());
            let steps = self
                .args
                .train
                .steps_per_epoch(self.train.len(), self.args.batch_size);
            let config = self.args.train.apply(
                TrainerConfig::new(
                    OptimizerConfig::adamw(1e-4),
                    LrSchedule::Cosine {
                        lr: self.args.lr,
                        min_lr: self.args.lr * 0.01,
                        steps: Some(self.epochs * steps),
                    },
                )
                .with_batch_size(self.args.batch_size)
                .with_valid_batch_size(500)
                .with_stop(StopRules::epochs(self.epochs))
                .with_monitor(Monitor::new("valid_accuracy"))
                .with_seed(self.args.seed)
                .with_run_dir(self.run_dir.join(label))
                .with_progress(self.args.common.progress()),
            );
            self.device.seed(self.args.seed);
            let model = init(self.device);
            let trainer = Trainer::new(config, self.device).with_metric(Accuracy::new());
            let fitted = self.args.train.fit(
                &trainer,
                model,
                &Data::new(self.train.clone(), batcher.clone()),
                Some(&Data::new(self.valid.clone(), batcher.for_eval())),
            )?;
            let best = Trainer::best_checkpoint(&self.run_dir.join(label));
            models.push((Trainer::load_model(fitted.model, &best)?, fitted.report));
        }
        let train_seconds = started.elapsed().as_secs_f64();
        self.args.common.say(format!(
            "measuring both models on {} clean test images and 55 corrupted sets",
            self.test.len()
        ));
        let measured = Instant::now();
        let results = evaluate_robustness(
            &[&models[0].0, &models[1].0],
            self.test,
            self.eval_batcher,
            10,
            self.suite,
            self.device,
        )?;
        let best = [0, 1].map(|i| models[i].1.best.as_ref().map(|b| b.epoch));
        Ok(Measured {
            results,
            best_epochs: best,
            train_seconds,
            measure_seconds: measured.elapsed().as_secs_f64(),
        })
    }
}

/// The plain and the augmented training pipelines (both normalise last with the data set's
/// statistics).
fn pipelines(dataset: DatasetName) -> (Pipeline, Pipeline) {
    let (mean, std) = dataset.stats();
    let usual = match dataset {
        DatasetName::Mnist => Transform::RandomShift { max: 2 },
        DatasetName::Fashion => Transform::HorizontalFlip { p: 0.5 },
    };
    let normalize = Transform::Normalize {
        mean: vec![mean],
        std: vec![std],
    };
    let plain = Pipeline::new()
        .with_augment(true)
        .then(usual.clone())
        .then(normalize.clone());
    // The scene (pose, clutter, occlusion), then the light, then the sensor. Fashion keeps
    // its flips.
    let mut augmented = Pipeline::new().with_augment(true);
    if dataset == DatasetName::Fashion {
        augmented = augmented.then(usual);
    }
    let augmented = augmented
        .then(Transform::RandomShift { max: 3 })
        .then(Transform::RandomRotate { degrees: 15.0 })
        .then(Transform::Clutter {
            p: 0.5,
            strokes: 5,
            texture: 0.5,
            fragments: 4,
        })
        .then(Transform::Cutout { p: 0.2, size: 8 })
        .then(Transform::Photometric {
            p: 0.5,
            brightness: 0.4,
            contrast: 0.1,
            gamma: 3.0,
            exposure: 0.3,
        })
        .then(Transform::Noise { p: 0.4, std: 0.35 })
        .then(normalize);
    (plain, augmented)
}

/// The Markdown table: one row per corruption (severities 1..5 of each model, and their means).
fn table(p: &Robustness, a: &Robustness) -> String {
    let pct = |v: f64| format!("{:.1}", 100.0 * v);
    let mut out = String::from(
        "\n| corruption | family | plain 1 / 2 / 3 / 4 / 5 | plain mean | augmented 1 / 2 / 3 / 4 / 5 | augmented mean |\n|---|---|---|---|---|---|\n",
    );
    for (pc, ac) in p.corrupted.iter().zip(&a.corrupted) {
        let row = |c: &kiln_vision::robustness::CorruptionAccuracy| {
            c.accuracy
                .iter()
                .map(|(_, v)| pct(*v))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | **{}** |\n",
            pc.corruption.name(),
            pc.corruption.family(),
            row(pc),
            pct(pc.mean()),
            row(ac),
            pct(ac.mean())
        );
    }
    out += &format!(
        "| **clean** | | | {} | | **{}** |\n| **mean corrupted** | | | {} | | **{}** |\n",
        pct(p.clean),
        pct(a.clean),
        pct(p.mean_corrupted()),
        pct(a.mean_corrupted())
    );
    for ((family, pv), av) in p
        .family_means()
        .into_iter()
        .zip(a.family_means().into_values())
    {
        out += &format!("| mean {family} | | | {} | | {} |\n", pct(pv), pct(av));
    }
    out
}
