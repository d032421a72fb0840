//! Fine-tuning a pretrained sentence encoder (all-MiniLM-L6-v2) for text classification:
//! TREC-6 question types or SMS spam, with the encoder unfrozen (default), frozen
//! (`--freeze`, a linear probe on mean-pooled embeddings), or frozen with low-rank adapters
//! on its linear layers (`--lora-rank R [--lora-alpha A]`: the adapters and the head train;
//! `--save-adapters FILE` writes them as safetensors; the test accuracy is also measured with
//! the adapters merged into the weights).
//!
//! ```sh
//! cargo run --release --example finetune -- --model ../shared/models/all-MiniLM-L6-v2 \
//!     --data ../shared/data/trec --dataset trec
//! cargo run --release --example finetune -- --model ../shared/models/all-MiniLM-L6-v2 \
//!     --data ../shared/data/sms-spam --dataset sms
//! ```
//!
//! TREC: trains on 90% of `train_5500.label` (best epoch by accuracy on the other 10%), reports
//! accuracy on the 500 questions of `TREC_10.label`. SMS: a seeded 80/10/10 split.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::data::dataset::InMemDataset;
use clap::{Parser, ValueEnum};
use kiln_core::metrics::Accuracy;
use kiln_core::optim::{Decay, LrSchedule, OptimizerConfig};
use kiln_core::train::{Monitor, StopRules};
use kiln_core::{Data, Trainer, TrainerConfig};
use kiln_nlp::data::{LabeledText, SMS_CLASSES, TREC_CLASSES, read_sms_spam, read_trec};
use kiln_nlp::models::BertClassifier;
use kiln_nlp::models::lora::{LoraConfig, trainable_parameters};
use kiln_nlp::{ClassifierMeta, export_text_classifier};
use kiln_nlp::{SentenceEncoder, TextBatcher, Tokenizer};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatasetName {
    Trec,
    Sms,
}

/// Fine-tune a sentence encoder with a classification head.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    #[command(flatten)]
    train: common::TrainArgs,
    /// The pretrained model folder.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Which data set --data holds.
    #[arg(long, value_enum, default_value = "trec")]
    dataset: DatasetName,
    /// Epochs.
    #[arg(long, value_parser = common::positive, default_value_t = 4)]
    epochs: usize,
    /// Batch size.
    #[arg(long, value_parser = common::positive, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate (AdamW, linear warm-up over 10% of the steps, then linear decay).
    #[arg(long, value_parser = common::positive_rate)]
    lr: Option<f64>,
    /// Train the head only.
    #[arg(long, conflicts_with = "lora_rank")]
    freeze: bool,
    /// Train low-rank adapters of this rank (and the head), the encoder frozen.
    #[arg(long, value_parser = common::positive)]
    lora_rank: Option<usize>,
    /// The adapters' alpha (their update is scaled by alpha / rank).
    #[arg(long, value_parser = common::positive_rate, default_value_t = 16.0, requires = "lora_rank")]
    lora_alpha: f64,
    /// Save the trained adapters and head here (safetensors).
    #[arg(long, value_name = "FILE", requires = "lora_rank")]
    save_adapters: Option<PathBuf>,
    /// Write the trained classifier (adapters merged) as a folder `kiln-serve` loads.
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// Longest input in tokens.
    #[arg(long, value_parser = common::positive, default_value_t = 128)]
    max_len: usize,
    /// Use only the first N training texts (quick runs).
    #[arg(long, value_parser = common::positive)]
    limit: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = args.common.device()?;
    let dir = args.common.data.clone().ok_or("--data DIR is required")?;
    let (mut train, mut valid, test, classes): (
        Vec<LabeledText>,
        Vec<LabeledText>,
        Vec<LabeledText>,
        &[&str],
    ) = match args.dataset {
        DatasetName::Trec => {
            let all = read_trec(dir.join("train_5500.label"))?;
            let test = read_trec(dir.join("TREC_10.label"))?;
            let (tr, va) = kiln_core::data::split_indices(all.len(), 0.1, args.seed);
            let pick = |idx: &[usize]| idx.iter().map(|&i| all[i].clone()).collect::<Vec<_>>();
            (pick(&tr), pick(&va), test, &TREC_CLASSES)
        }
        DatasetName::Sms => {
            let all = read_sms_spam(dir.join("SMSSpamCollection"))?;
            let (rest, test) = kiln_core::data::split_indices(all.len(), 0.1, args.seed);
            let (tr, va) = kiln_core::data::split_indices(rest.len(), 1.0 / 9.0, args.seed + 1);
            let pick = |idx: &[usize]| idx.iter().map(|&i| all[i].clone()).collect::<Vec<_>>();
            let rest = pick(&rest);
            let pick_rest =
                |idx: &[usize]| idx.iter().map(|&i| rest[i].clone()).collect::<Vec<_>>();
            (pick_rest(&tr), pick_rest(&va), pick(&test), &SMS_CLASSES)
        }
    };
    if let Some(n) = args.limit {
        train.truncate(n);
        valid.truncate(n / 5 + 1);
    }
    let encoder = SentenceEncoder::load(&args.model, &device)?;
    let tokenizer = encoder.tokenizer();
    let items = |set: &[LabeledText]| kiln_nlp::batch::encode_labeled(tokenizer, set);
    let (train_items, valid_items, test_items) = (items(&train)?, items(&valid)?, items(&test)?);
    let batcher = TextBatcher::new(tokenizer.pad_id(), args.max_len);
    let hidden = encoder.dim();
    device.seed(args.seed);
    let mut model = BertClassifier::new(encoder.into_bert()?, hidden, classes.len(), &device);
    let lora = args
        .lora_rank
        .map(|r| LoraConfig::new().with_rank(r).with_alpha(args.lora_alpha));
    if args.freeze {
        model = model.freeze_encoder();
    }
    if let Some(lora) = &lora {
        model = model.with_lora(lora, &device)?;
    }
    let (trainable, total) = trainable_parameters(&model);
    let lr = args.lr.unwrap_or(if args.freeze {
        1e-2
    } else if lora.is_some() {
        1e-3
    } else {
        5e-5
    });
    let steps = args.epochs
        * args
            .train
            .steps_per_epoch(train_items.len(), args.batch_size);
    let config = TrainerConfig::new(
        OptimizerConfig::adamw(0.01),
        LrSchedule::WarmupDecay {
            lr,
            warmup_steps: (steps / 10).max(1),
            decay: Decay::Linear,
            final_lr: 0.0,
            steps: None,
        },
    )
    .with_batch_size(args.batch_size)
    .with_stop(StopRules::epochs(args.epochs))
    .with_monitor(Monitor::new("valid_accuracy"))
    .with_seed(args.seed)
    .with_run_dir(
        args.common
            .run_dir(&format!("finetune-{:?}", args.dataset).to_lowercase()),
    )
    .with_progress(args.common.progress());
    let config = args.train.apply(config);
    let start = Instant::now();
    let trainer = Trainer::new(config.clone(), &device).with_metric(Accuracy::new());
    let fitted = args.train.fit(
        &trainer,
        model,
        &Data::new(InMemDataset::new(train_items.clone()), batcher),
        Some(&Data::new(InMemDataset::new(valid_items), batcher)),
    )?;
    let train_seconds = start.elapsed().as_secs_f64();
    let best_path = Trainer::best_checkpoint(config.run_dir.as_ref().expect("run dir"));
    let model = Trainer::load_model(fitted.model, &best_path)?;

    let accuracy =
        kiln_nlp::batch::evaluate(&model, &test_items, &batcher, classes.len(), 64, &device)
            .accuracy();
    let mut merged_accuracy = None;
    let mut adapters_bytes = None;
    if let Some(lora) = &lora {
        if let Some(path) = &args.save_adapters {
            model.save_adapters(lora, path)?;
            adapters_bytes = std::fs::metadata(path).ok().map(|m| m.len());
        }
        let merged = model.clone().merge_lora();
        merged_accuracy = Some(
            kiln_nlp::batch::evaluate(&merged, &test_items, &batcher, classes.len(), 64, &device)
                .accuracy(),
        );
    }
    if let Some(dir) = &args.export {
        let meta = ClassifierMeta {
            labels: classes.iter().map(|c| c.to_string()).collect(),
            max_len: args.max_len,
        };
        export_text_classifier(model.clone(), &args.model, &meta, dir)?;
        args.common
            .say(format!("classifier written to {}", dir.display()));
    }
    let best = fitted.report.best.clone();
    let mode = if args.freeze {
        "frozen".to_string()
    } else if let Some(r) = args.lora_rank {
        format!("LoRA rank {r}")
    } else {
        "fine-tuned".to_string()
    };
    args.common.say(format!(
        "{:?} ({} train, {} test, encoder {mode}, {trainable} of {total} parameters trained): \
         test accuracy {:.4} in {:.0} s (best epoch {:?})",
        args.dataset,
        train_items.len(),
        test_items.len(),
        accuracy,
        train_seconds,
        best.as_ref().map(|b| b.epoch)
    ));
    if let Some(m) = merged_accuracy {
        args.common.say(format!(
            "adapters merged into the weights: test accuracy {m:.4}"
        ));
    }
    args.common.write_report(&json!({
        "dataset": format!("{:?}", args.dataset).to_lowercase(),
        "frozen": args.freeze,
        "lora_rank": args.lora_rank,
        "lora_alpha": lora.as_ref().map(|l| l.alpha),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_fraction": trainable as f64 / total.max(1) as f64,
        "merged_test_accuracy": merged_accuracy,
        "adapters_bytes": adapters_bytes,
        "test_accuracy": accuracy,
        "test_size": test_items.len(),
        "epochs": fitted.report.epochs,
        "best_epoch": best.as_ref().map(|b| b.epoch),
        "best_valid_accuracy": best.as_ref().map(|b| b.value),
        "train_seconds": train_seconds,
        "lr": lr,
    }))?;
    Ok(())
}
