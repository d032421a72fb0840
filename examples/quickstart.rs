//! Quick start: one small model of each domain, trained with the kiln-core trainer on data this
//! program generates itself (no files, no network), then a table of the results.
//!
//! - vision: LeNet-5 classifies 28x28 images of bars and diagonals;
//! - nlp: an LSTM classifies token sequences by which word class dominates;
//! - recsys: biased matrix factorisation fits ratings from a hidden low-rank model.
//!
//! `cargo run --release --example quickstart -- [--backend cpu] [--quiet] [--report q.json]`
//! Each model's run folder (metrics.jsonl, checkpoints, curves.svg) is under `runs/quickstart/`.

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use burn::data::dataset::InMemDataset;
use clap::Parser;
use kiln_core::data::SplitMix64;
use kiln_core::metrics::{Accuracy, Mae, Rmse};
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::{Monitor, StopRules};
use kiln_core::{Data, Trainer, TrainerConfig};
use kiln_nlp::{LstmClassifierConfig, TextBatcher, TextItem};
use kiln_recsys::{BiasedMfConfig, Rating, RatingBatcher};
use kiln_vision::{ImageBatcher, ImageItem, LeNet5Config};
use serde_json::{Value, json};

/// Train a small vision, NLP and recommender model on generated data.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// Seed of the generated data and of training.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> kiln_core::Result<()> {
    let args = Args::parse();
    let device = args.common.device()?;
    let root = args.common.run_dir("quickstart");
    let config = |lr: f64, batch: usize, epochs: usize, name: &str| {
        TrainerConfig::new(OptimizerConfig::adam(), LrSchedule::constant(lr))
            .with_batch_size(batch)
            .with_stop(StopRules::epochs(epochs))
            .with_seed(args.seed)
            .with_run_dir(root.join(name))
            .with_progress(args.common.progress())
    };
    let mut rows: Vec<(String, String, f64, Value)> = Vec::new();

    // Vision: four kinds of stroke on a noisy 28x28 canvas.
    let started = Instant::now();
    let (train, valid) = (images(800, args.seed), images(200, args.seed + 1));
    device.seed(args.seed);
    let model = LeNet5Config::new().with_num_classes(4).init(&device);
    let batcher = ImageBatcher::new(1, 28, 28);
    let fitted = Trainer::new(config(2e-3, 32, 3, "vision"), &device)
        .with_metric(Accuracy::new())
        .fit(
            model,
            &Data::new(InMemDataset::new(train), batcher.clone()),
            Some(&Data::new(InMemDataset::new(valid), batcher)),
        )?;
    let last = fitted.report.last().expect("at least one epoch");
    rows.push((
        "vision".into(),
        "LeNet-5, 4 stroke classes".into(),
        started.elapsed().as_secs_f64(),
        json!({ "valid_accuracy": last.valid["accuracy"], "valid_loss": last.valid["loss"], "chance": 0.25 }),
    ));

    // NLP: does a sequence hold more "positive" than "negative" words?
    let started = Instant::now();
    let (train, valid) = (sentences(1200, args.seed), sentences(300, args.seed + 1));
    device.seed(args.seed);
    let model = LstmClassifierConfig::new(VOCAB, 2)
        .with_embed_dim(16)
        .with_hidden(32)
        .init(&device);
    let batcher = TextBatcher::new(0, 32);
    let fitted = Trainer::new(config(1e-2, 32, 4, "nlp"), &device)
        .with_metric(Accuracy::new())
        .fit(
            model,
            &Data::new(InMemDataset::new(train), batcher),
            Some(&Data::new(InMemDataset::new(valid), batcher)),
        )?;
    let last = fitted.report.last().expect("at least one epoch");
    rows.push((
        "nlp".into(),
        "LSTM, word-count sentiment".into(),
        started.elapsed().as_secs_f64(),
        json!({ "valid_accuracy": last.valid["accuracy"], "valid_loss": last.valid["loss"], "chance": 0.5 }),
    ));

    // Recommenders: ratings from a hidden rank-3 model plus noise.
    let started = Instant::now();
    let (train, valid) = ratings(args.seed);
    let mean = train.iter().map(|r| r.rating).sum::<f32>() / train.len() as f32;
    let baseline =
        (valid.iter().map(|r| (r.rating - mean).powi(2)).sum::<f32>() / valid.len() as f32).sqrt();
    device.seed(args.seed);
    let model = BiasedMfConfig::new(USERS, ITEMS, mean)
        .with_factors(8)
        .init(&device);
    // Early stopping on the validation RMSE: MF overfits once the signal is learned.
    let cfg = config(2e-2, 64, 30, "recsys")
        .with_stop(StopRules::epochs(30).with_early_stopping(2, 1e-4))
        .with_monitor(Monitor::new("valid_rmse"));
    let fitted = Trainer::new(cfg, &device)
        .with_metric(Rmse::new())
        .with_metric(Mae::new())
        .fit(
            model,
            &Data::new(InMemDataset::new(train), RatingBatcher),
            Some(&Data::new(InMemDataset::new(valid), RatingBatcher)),
        )?;
    let best = fitted
        .report
        .best
        .clone()
        .expect("a finite validation RMSE");
    let best_epoch = &fitted.report.history[best.epoch - 1];
    rows.push((
        "recsys".into(),
        format!("biased MF, rank-3 ratings (best of {} epochs)", fitted.report.epochs),
        started.elapsed().as_secs_f64(),
        json!({ "valid_rmse": best.value, "valid_mae": best_epoch.valid["mae"], "global_mean_rmse": baseline }),
    ));

    if !args.common.quiet {
        println!("\n| domain | model | metrics (validation) | seconds |\n|---|---|---|---|");
        for (domain, model, secs, metrics) in &rows {
            let text = metrics
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            println!("| {domain} | {model} | {text} | {secs:.1} |");
        }
        println!(
            "\nrun folders (metrics.jsonl, checkpoints/, curves.svg): {}",
            root.display()
        );
    }
    let report: serde_json::Map<String, Value> = rows
        .into_iter()
        .map(|(domain, model, secs, mut metrics)| {
            metrics["model"] = json!(model);
            metrics["seconds"] = json!(secs);
            (domain, metrics)
        })
        .collect();
    args.common.write_report(&Value::Object(report))
}

/// `n` images of four classes: a horizontal bar, a vertical bar, a diagonal, an anti-diagonal,
/// each at a random offset, on Gaussian noise.
fn images(n: usize, seed: u64) -> Vec<ImageItem> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let label = i % 4;
            let offset = rng.below(14) as i64 - 7;
            let mut pixels: Vec<f32> = (0..28 * 28).map(|_| 0.3 * rng.normal() as f32).collect();
            for t in 4..24i64 {
                let (r, c) = match label {
                    0 => (14 + offset, t),
                    1 => (t, 14 + offset),
                    2 => (t, t + offset / 2),
                    _ => (t, 27 - t + offset / 2),
                };
                if (0..28).contains(&r) && (0..28).contains(&c) {
                    pixels[(r * 28 + c) as usize] += 1.0;
                }
            }
            ImageItem { pixels, label }
        })
        .collect()
}

const VOCAB: usize = 30;

/// Token sequences of 6 to 20 words: ids 1-5 are "positive", 6-10 "negative", the rest
/// neutral; the label says which of the first two kinds occurs more often (ties dropped).
fn sentences(n: usize, seed: u64) -> Vec<TextItem> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = 6 + rng.below(15) as usize;
        let tokens: Vec<u32> = (0..len)
            .map(|_| 1 + rng.below(VOCAB as u64 - 1) as u32)
            .collect();
        let pos = tokens.iter().filter(|&&t| (1..=5).contains(&t)).count();
        let neg = tokens.iter().filter(|&&t| (6..=10).contains(&t)).count();
        if pos != neg {
            out.push(TextItem {
                tokens,
                label: usize::from(pos > neg),
            });
        }
    }
    out
}

const USERS: usize = 120;
const ITEMS: usize = 90;

/// Ratings `clip(3.5 + p_u . q_i + b_i + noise, 1, 5)` from hidden rank-3 factors, 40% of the
/// user-item pairs observed, split 80/20.
fn ratings(seed: u64) -> (Vec<Rating>, Vec<Rating>) {
    let mut rng = SplitMix64::new(seed);
    let mut factors = |n: usize| -> Vec<[f64; 3]> {
        (0..n)
            .map(|_| [rng.normal(), rng.normal(), rng.normal()])
            .collect()
    };
    let (p, q) = (factors(USERS), factors(ITEMS));
    let mut rng = SplitMix64::new(seed + 7);
    let item_bias: Vec<f64> = (0..ITEMS).map(|_| 0.5 * rng.normal()).collect();
    let mut all = Vec::new();
    for (u, pu) in p.iter().enumerate() {
        for (i, (qi, bias)) in q.iter().zip(&item_bias).enumerate() {
            if rng.uniform() < 0.4 {
                let dot: f64 = pu.iter().zip(qi).map(|(a, b)| a * b).sum::<f64>() * 0.5;
                let r = (3.5 + dot + bias + 0.3 * rng.normal()).clamp(1.0, 5.0);
                all.push(Rating {
                    user: u as u32,
                    item: i as u32,
                    rating: r as f32,
                });
            }
        }
    }
    let (train_idx, valid_idx) = kiln_core::data::split_indices(all.len(), 0.2, seed);
    (
        train_idx.iter().map(|&i| all[i]).collect(),
        valid_idx.iter().map(|&i| all[i]).collect(),
    )
}
