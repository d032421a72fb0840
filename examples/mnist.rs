//! MNIST and Fashion-MNIST classification with kiln-vision.
//!
//! Trains on 55,000 of the 60,000 training images, picks the best epoch by accuracy on the
//! other 5,000, and reports that model's accuracy on the 10,000 test images, with per-class
//! precision and recall, a confusion-matrix heat map and a grid of misclassified test images
//! (PNG, in the run folder).
//!
//! ```sh
//! cargo run --release --example mnist -- --data ../shared/data/mnist
//! cargo run --release --example mnist -- --data ../shared/data/fashion-mnist --dataset fashion
//! ```

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::data::dataset::transform::SelectionDataset;
use clap::{Parser, ValueEnum};
use kiln_core::data::Downloader;
use kiln_core::distributed::ProcessGroup;
use kiln_core::metrics::{Accuracy, F1};
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::{Monitor, StopRules};
use kiln_core::{Data, TrainStep, Trainer, TrainerConfig};
use kiln_vision::data::{FASHION_CLASSES, MnistDataset, MnistKind, Split, download};
use kiln_vision::models::ImageClassifier;
use kiln_vision::{
    Architecture, ExportMeta, ImageBatch, ImageBatcher, ImageItem, LeNet5Config, MlpConfig,
    Pipeline, ResNetConfig, Transform, VisionError, evaluate_with, export_classifier, plots,
};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatasetName {
    Mnist,
    Fashion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelName {
    Mlp,
    Lenet,
    Resnet,
}

/// Train an image classifier on MNIST or Fashion-MNIST.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    #[command(flatten)]
    train: common::TrainArgs,
    /// Which data set the folder holds.
    #[arg(long, value_enum, default_value = "mnist")]
    dataset: DatasetName,
    /// The model (default: lenet for mnist, resnet for fashion).
    #[arg(long, value_enum)]
    model: Option<ModelName>,
    /// Training epochs (default: 15 for mnist, 8 for fashion).
    #[arg(long, value_parser = common::positive)]
    epochs: Option<usize>,
    /// Batch size.
    #[arg(long, value_parser = common::positive, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (AdamW, cosine decay; default: 2e-3 for mnist, 3e-3 for fashion).
    #[arg(long, value_parser = common::positive_rate)]
    lr: Option<f64>,
    /// ResNet width: the three stages get N, 2N and 4N channels.
    #[arg(long, value_parser = common::positive, default_value_t = 16)]
    width: usize,
    /// Use only the first N training images (quick runs).
    #[arg(long, value_parser = common::positive)]
    limit: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Data-parallel: N replicas on the --backend device, each on a shard of every batch (the
    /// update equals one replica on the whole batch). Started by `mpirun -np P` (a build
    /// with the `mpi` feature), each of the P processes runs its replicas on its share of
    /// every batch (docs/distributed.md); rank 0 writes the run folder and the report.
    #[arg(long, value_parser = common::positive, default_value_t = 1)]
    replicas: usize,
    /// Fashion-MNIST only: do not average the test logits of each image and its mirror.
    #[arg(long)]
    no_flip_average: bool,
    /// Without --data: download the data set into the cache ($KILN_CACHE or ~/.cache/kiln),
    /// checking every file's SHA-256.
    #[arg(long)]
    download: bool,
    /// Also write the best epoch's model as a folder `kiln-serve` loads (`classifier.json`:
    /// architecture, input, transforms, labels; `model.safetensors`).
    #[arg(long)]
    export: Option<PathBuf>,
}

fn main() -> Result<(), VisionError> {
    let args = Args::parse();
    // Under mpirun/srun: this process's rank of the job (kept for the whole run).
    let group = ProcessGroup::from_launcher()?;
    let result = run(args, group.clone());
    common::end_rank(group.as_ref(), result)
}

fn run(args: Args, group: Option<ProcessGroup>) -> Result<(), VisionError> {
    let device = args.common.device()?;
    let data_dir = match (&args.common.data, args.download) {
        (Some(dir), _) => dir.clone(),
        (None, true) => {
            let kind = match args.dataset {
                DatasetName::Mnist => MnistKind::Digits,
                DatasetName::Fashion => MnistKind::Fashion,
            };
            download(
                kind,
                &Downloader::with_default_cache().quiet(args.common.quiet),
                None,
            )?
        }
        (None, false) => {
            return Err(VisionError::Dataset(
                "pass the folder with the four IDX files with --data DIR (e.g. ../shared/data/mnist), or --download".into(),
            ));
        }
    };
    let model_name = args.model.unwrap_or(match args.dataset {
        DatasetName::Mnist => ModelName::Lenet,
        DatasetName::Fashion => ModelName::Resnet,
    });
    let epochs = args.epochs.unwrap_or(match args.dataset {
        DatasetName::Mnist => 15,
        DatasetName::Fashion => 8,
    });
    let lr = args.lr.unwrap_or(match args.dataset {
        DatasetName::Mnist => 2e-3,
        DatasetName::Fashion => 3e-3,
    });

    let mut train_all = MnistDataset::load(&data_dir, Split::Train)?;
    if let Some(n) = args.limit {
        train_all = train_all.truncate(n);
    }
    let test = MnistDataset::load(&data_dir, Split::Test)?;
    let (train_idx, valid_idx) =
        kiln_core::data::split_indices(train_all.len(), 5_000.0 / 60_000.0, args.seed);
    let train_all = Arc::new(train_all);
    let train: SelectionDataset<MnistDataset, ImageItem> =
        SelectionDataset::from_indices_checked(train_all.clone(), train_idx);
    let valid: SelectionDataset<MnistDataset, ImageItem> =
        SelectionDataset::from_indices_checked(train_all.clone(), valid_idx);

    // The usual MNIST statistics; shifts of up to 2 pixels for digits, flips only for clothes
    // (a mirrored shoe is still a shoe, a mirrored 2 is not a digit). Random crops on top
    // left the small ResNet under-fitting in a 20-minute budget (91.3% after 7 epochs).
    let (mean, std) = match args.dataset {
        DatasetName::Mnist => (0.1307, 0.3081),
        DatasetName::Fashion => (0.2860, 0.3530),
    };
    let augment = match args.dataset {
        DatasetName::Mnist => vec![Transform::RandomShift { max: 2 }],
        DatasetName::Fashion => vec![Transform::HorizontalFlip { p: 0.5 }],
    };
    let mut pipeline = Pipeline::new().with_augment(true);
    for t in augment {
        pipeline = pipeline.then(t);
    }
    let pipeline = pipeline.then(Transform::Normalize {
        mean: vec![mean],
        std: vec![std],
    });
    let batcher = ImageBatcher::new(1, 28, 28).with_pipeline(pipeline);

    let run_dir = args.common.run_dir(&format!(
        "{}-{}",
        dataset_name(args.dataset),
        model_label(model_name)
    ));
    let steps_per_epoch = args.train.steps_per_epoch(train.len(), args.batch_size);
    let config = TrainerConfig::new(
        OptimizerConfig::adamw(1e-4),
        LrSchedule::Cosine {
            lr,
            min_lr: lr * 0.01,
            steps: Some(epochs * steps_per_epoch),
        },
    )
    .with_batch_size(args.batch_size)
    .with_accumulate(args.train.accumulate)
    .with_checkpoint_activations(args.train.checkpoint_activations)
    .with_valid_batch_size(500)
    .with_stop(StopRules::epochs(epochs))
    .with_monitor(Monitor::new("valid_accuracy"))
    .with_seed(args.seed)
    .with_run_dir(&run_dir)
    .with_progress(args.common.progress());

    device.seed(args.seed);
    let train_data = Data::new(train, batcher.clone());
    let valid_data = Data::new(valid, batcher.for_eval());
    let started = Instant::now();
    let session = Session {
        config,
        train: &train_data,
        valid: &valid_data,
        test: &test,
        batcher: &batcher,
        device: &device,
        flip_average: args.dataset == DatasetName::Fashion && !args.no_flip_average,
        replicas: args.replicas,
        resume: args.train.resume,
        group,
        export: args.export.clone().map(|dir| {
            let labels: Vec<String> = match args.dataset {
                DatasetName::Mnist => (0..10).map(|d| d.to_string()).collect(),
                DatasetName::Fashion => FASHION_CLASSES.iter().map(|c| c.to_string()).collect(),
            };
            (dir, batcher.pipeline.clone(), labels)
        }),
    };
    let rank = session.group.as_ref().map_or(0, ProcessGroup::rank);
    let ranks = session.group.as_ref().map_or(1, ProcessGroup::world);
    let (evaluation, report, weights_sha256) = match model_name {
        ModelName::Mlp => {
            let c = MlpConfig::new();
            session.run(c.init(&device), Architecture::Mlp(c))?
        }
        ModelName::Lenet => {
            let c = LeNet5Config::new();
            session.run(c.init(&device), Architecture::Lenet5(c))?
        }
        ModelName::Resnet => {
            let c = ResNetConfig::new().with_widths([args.width, 2 * args.width, 4 * args.width]);
            session.run(c.init(&device), Architecture::Resnet(c))?
        }
    };
    if rank != 0 {
        args.common.say(format!(
            "rank {rank}: trained {} epochs; rank 0 writes the report",
            report.epochs
        ));
        return Ok(());
    }
    let total_seconds = started.elapsed().as_secs_f64();
    let train_seconds = report.train_secs;
    let images_seen: usize =
        report.steps.min(report.epochs * steps_per_epoch) * args.batch_size * args.train.accumulate;

    // Per-class precision / recall, and the pictures.
    let classes: Vec<String> = match args.dataset {
        DatasetName::Mnist => (0..10).map(|d| d.to_string()).collect(),
        DatasetName::Fashion => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    let m = &evaluation.confusion;
    args.common.say(format!(
        "\n{} test accuracy {:.4} (macro F1 {:.4}), {} epochs, {:.0} s training",
        dataset_name(args.dataset),
        evaluation.accuracy(),
        m.macro_f1(),
        report.epochs,
        train_seconds
    ));
    args.common
        .say("\n| class | precision | recall |\n|---|---|---|");
    for (c, name) in classes.iter().enumerate() {
        let label = if *name == c.to_string() {
            name.clone()
        } else {
            format!("{c} {name}")
        };
        args.common.say(format!(
            "| {label} | {:.4} | {:.4} |",
            m.precision(c),
            m.recall(c)
        ));
    }
    args.common
        .say("\nconfusion matrix (rows: true class, columns: predicted):");
    for row in m.counts() {
        args.common
            .say(row.iter().map(|v| format!("{v:5}")).collect::<String>());
    }
    plots::confusion_heatmap(m, &run_dir.join("confusion.png"))?;
    let wrong = evaluation.misclassified();
    let items: Vec<ImageItem> = wrong
        .iter()
        .take(100)
        .map(|&i| test.get(i))
        .collect::<Result<_, _>>()
        .map_err(|e| VisionError::Dataset(e.to_string()))?;
    let examples: Vec<(&[f32], usize, usize)> = items
        .iter()
        .zip(&wrong)
        .map(|(item, &i)| {
            (
                item.pixels.as_slice(),
                evaluation.targets[i],
                evaluation.predictions[i],
            )
        })
        .collect();
    plots::example_grid(
        &examples,
        [1, 28, 28],
        100,
        &run_dir.join("misclassified.png"),
    )?;
    args.common.say(format!(
        "\nrun folder: {} (confusion.png, misclassified.png, metrics.jsonl, curves.svg, checkpoints/)",
        run_dir.display()
    ));

    let per_class: Vec<_> = classes
        .iter()
        .enumerate()
        .map(|(c, name)| json!({ "class": name, "precision": m.precision(c), "recall": m.recall(c), "f1": m.f1(c) }))
        .collect();
    args.common.write_report(&json!({
        "dataset": dataset_name(args.dataset),
        "model": model_label(model_name),
        "test_accuracy": evaluation.accuracy(),
        "test_macro_f1": m.macro_f1(),
        "best_epoch": report.best.as_ref().map(|b| b.epoch),
        "best_valid_accuracy": report.best.as_ref().map(|b| b.value),
        "epochs": report.epochs,
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
        "images_per_second": images_seen as f64 / train_seconds,
        "per_class": per_class,
        "confusion": m.counts(),
        "backend": args.common.backend,
        "replicas": args.replicas,
        "accumulate": args.train.accumulate,
        "weights_sha256": weights_sha256,
        "resumed": args.train.resume,
        "checkpoint_activations": args.train.checkpoint_activations,
        "peak_rss_mib": common::peak_rss_mib(),
        "ranks": ranks,
    }))?;
    Ok(())
}

/// Everything a run needs besides the model.
struct Session<'a> {
    config: TrainerConfig,
    train: &'a Data<ImageItem, ImageBatch>,
    valid: &'a Data<ImageItem, ImageBatch>,
    test: &'a MnistDataset,
    batcher: &'a ImageBatcher,
    device: &'a burn::tensor::Device,
    flip_average: bool,
    replicas: usize,
    resume: bool,
    group: Option<ProcessGroup>,
    /// `--export`: the folder, the training transforms and the class labels.
    export: Option<(PathBuf, Pipeline, Vec<String>)>,
}

impl Session<'_> {
    /// Trains, reloads the best epoch's weights and evaluates them on the test set.
    fn run<M>(
        self,
        model: M,
        architecture: Architecture,
    ) -> Result<(kiln_vision::Evaluation, kiln_core::TrainReport, String), VisionError>
    where
        M: ImageClassifier + TrainStep<ImageBatch>,
    {
        let run_dir = self.config.run_dir.clone();
        let rank = self.group.as_ref().map_or(0, ProcessGroup::rank);
        let mut trainer = if self.replicas > 1 || self.group.is_some() {
            Trainer::data_parallel(
                self.config,
                &vec![self.device.clone(); self.replicas.max(1)],
            )?
        } else {
            Trainer::new(self.config, self.device)
        };
        if let Some(group) = self.group {
            trainer = trainer.with_process_group(group);
        }
        let trainer = trainer.with_metric(Accuracy::new()).with_metric(F1::new());
        let fitted = if self.resume {
            trainer.resume(model, self.train, Some(self.valid))?
        } else {
            trainer.fit(model, self.train, Some(self.valid))?
        };
        // The final weights' digest, to compare a resumed run with an uninterrupted one.
        let digest = Trainer::model_digest(&fitted.model)?;
        let model = match run_dir.filter(|_| rank == 0) {
            Some(dir) => Trainer::load_model(fitted.model, &Trainer::best_checkpoint(&dir))?,
            None => fitted.model,
        };
        let evaluation = evaluate_with(
            &model,
            self.test,
            self.batcher,
            10,
            500,
            self.device,
            self.flip_average,
        )?;
        if let Some((dir, pipeline, labels)) = self.export.filter(|_| rank == 0) {
            let meta = ExportMeta {
                architecture,
                channels: self.batcher.channels,
                height: self.batcher.height,
                width: self.batcher.width,
                pipeline,
                labels,
            };
            export_classifier(&model, &meta, &dir)?;
        }
        Ok((evaluation, fitted.report, digest))
    }
}

fn dataset_name(d: DatasetName) -> &'static str {
    match d {
        DatasetName::Mnist => "mnist",
        DatasetName::Fashion => "fashion",
    }
}

fn model_label(m: ModelName) -> &'static str {
    match m {
        ModelName::Mlp => "mlp",
        ModelName::Lenet => "lenet",
        ModelName::Resnet => "resnet",
    }
}
