//! A character language model on tiny Shakespeare: an LSTM or a small GPT, trained on the
//! first 90% of the text and validated (nats per character) on the last 10%, then sampled
//! with temperature and top-k.
//!
//! ```sh
//! cargo run --release --example char_lm -- --data ../shared/data/tinyshakespeare
//! cargo run --release --example char_lm -- --data ../shared/data/tinyshakespeare --model gpt \
//!     --batch-size 32 --dropout 0.1
//! ```
//!
//! The defaults (one-layer LSTM, hidden 512, batch 64 windows of 128 characters, AdamW 3e-3
//! with warm-up and cosine decay over 900 steps, a 25-minute budget) reach a validation loss
//! of 1.59 nats per character after 4 minutes and 1.535 after 8 on 2 cores
//! (docs/benchmarks.md).

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use clap::{Parser, ValueEnum};
use kiln_core::distributed::ProcessGroup;
use kiln_core::optim::{Decay, LrSchedule, OptimizerConfig};
use kiln_core::train::{GradClipping, StopRules};
use kiln_core::{Data, TrainReport, TrainStep, Trainer, TrainerConfig};
use kiln_nlp::Tokenizer;
use kiln_nlp::generation::{GenerationConfig, generate_windowed};
use kiln_nlp::models::lm::LanguageModel;
use kiln_nlp::models::{CharLstmConfig, GptConfig, LmBatch, LmBatcher, Windows};
use kiln_nlp::vocab::{CharTokenizer, InvalidUtf8, read_text};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelName {
    Lstm,
    Gpt,
}

/// Train a character language model.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    #[command(flatten)]
    train: common::TrainArgs,
    /// The model.
    #[arg(long, value_enum, default_value = "lstm")]
    model: ModelName,
    /// Training time budget in minutes (training stops at the end of the step that passes it).
    #[arg(long, value_parser = common::positive_rate, default_value_t = 25.0)]
    minutes: f64,
    /// At most this many epochs over the training text.
    #[arg(long, value_parser = common::positive, default_value_t = 50)]
    epochs: usize,
    /// Sequence length (GPT block size).
    #[arg(long, value_parser = common::positive, default_value_t = 128)]
    block: usize,
    /// Batch size.
    #[arg(long, value_parser = common::positive, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (AdamW, warm-up then cosine decay over the expected steps).
    #[arg(long, value_parser = common::positive_rate)]
    lr: Option<f64>,
    /// Model width (GPT d_model, LSTM hidden).
    #[arg(long, value_parser = common::positive)]
    width: Option<usize>,
    /// Layers (default: LSTM 1, GPT 4).
    #[arg(long, value_parser = common::positive)]
    layers: Option<usize>,
    /// Dropout (a few epochs do not overfit: none by default).
    #[arg(long, value_parser = common::probability, default_value_t = 0.0)]
    dropout: f64,
    /// Expected optimizer steps, which set the learning-rate decay (default: 36 per minute of
    /// budget, the rate of the default LSTM at batch 64 on 2 cores before Kiln's fused LSTM
    /// layer; it now runs about 120 a minute there, and trains on at the final rate after the
    /// decay).
    #[arg(long, value_parser = common::positive)]
    steps: Option<usize>,
    /// Characters to sample after training.
    #[arg(long, value_parser = common::positive, default_value_t = 400)]
    sample_len: usize,
    /// Sampling temperature.
    #[arg(long, value_parser = common::non_negative_f32, default_value_t = 0.8)]
    temperature: f32,
    /// Sample among the k most probable characters.
    #[arg(long, value_parser = common::positive, default_value_t = 20)]
    top_k: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Under mpirun/srun (a build with `--features mpi`): this process's rank of the job.
    let group = match ProcessGroup::from_launcher() {
        Ok(group) => group,
        Err(e) => return common::exit(Err(e.into())),
    };
    let result = run(&args, group.clone()).map_err(|e| e.to_string());
    common::exit(common::end_rank(group.as_ref(), result).map_err(Into::into))
}

/// Mean nats per character of `model` over every window of `data`.
fn evaluate(model: &impl LanguageModel, data: &Windows, batch: usize, device: &Device) -> f64 {
    let (mut total, mut count) = (0.0f64, 0usize);
    let items: Vec<Vec<u32>> = (0..data.len()).filter_map(|i| data.get(i).ok()).collect();
    for chunk in items.chunks(batch) {
        let b = LmBatcher.batch(chunk.to_vec(), device);
        let logits = model.logits(b.inputs);
        let [n, t, v] = logits.dims();
        let loss: f32 = kiln_core::loss::CrossEntropy::new()
            .forward(logits.reshape([n * t, v]), b.targets.reshape([n * t]))
            .into_scalar();
        total += loss as f64 * (n * t) as f64;
        count += n * t;
    }
    total / count.max(1) as f64
}

/// What training and evaluating either model needs.
struct Fit<'a> {
    config: TrainerConfig,
    device: &'a Device,
    train: &'a Data<Vec<u32>, LmBatch>,
    valid_data: &'a Data<Vec<u32>, LmBatch>,
    valid: &'a Windows,
    run_dir: &'a std::path::Path,
    prompt: &'a [u32],
    /// Sampling settings (`max_new_tokens` is the sample length).
    sampling: GenerationConfig,
    resume: bool,
    group: Option<ProcessGroup>,
}

impl Fit<'_> {
    /// Trains `model`, reloads its best checkpoint, measures the validation loss and samples.
    fn run<M: TrainStep<LmBatch> + LanguageModel>(
        &self,
        model: M,
    ) -> Result<(f64, TrainReport, Vec<u32>), Box<dyn std::error::Error>> {
        let mut trainer = Trainer::new(self.config.clone(), self.device);
        if let Some(group) = &self.group {
            // Each rank takes its share of every batch; rank 0 writes the run folder.
            trainer = trainer.with_process_group(group.clone());
        }
        let fitted = if self.resume {
            trainer.resume(model, self.train, Some(self.valid_data))?
        } else {
            trainer.fit(model, self.train, Some(self.valid_data))?
        };
        let model = Trainer::load_model(fitted.model, &Trainer::best_checkpoint(self.run_dir))?;
        let loss = evaluate(&model, self.valid, 64, self.device);
        // The prompt's tail the model's context holds (the loop slides the window on).
        let prompt = &self.prompt[self.prompt.len().saturating_sub(model.context_len())..];
        let sample = generate_windowed(
            &model,
            prompt,
            &self.sampling,
            self.device,
            &|_| String::new(),
            |_| true,
        )?;
        Ok((loss, fitted.report, sample.ids))
    }
}

fn run(args: &Args, group: Option<ProcessGroup>) -> Result<(), Box<dyn std::error::Error>> {
    let rank = group.as_ref().map_or(0, ProcessGroup::rank);
    let device = args.common.device()?;
    let dir = args.common.data.clone().ok_or("--data DIR is required")?;
    let path = if dir.is_file() {
        dir.clone()
    } else {
        dir.join("input.txt")
    };
    let (text, replaced) = read_text(&path, InvalidUtf8::Replace)?;
    let tokenizer = CharTokenizer::build(&text);
    let ids = tokenizer.encode_ids(&text);
    let split = ids.len() * 9 / 10;
    let train = Windows::new(Arc::new(ids[..split].to_vec()), args.block, args.block);
    let valid = Windows::new(Arc::new(ids[split..].to_vec()), args.block, args.block);
    args.common.say(format!(
        "{}: {} characters ({replaced} invalid UTF-8 sequences replaced), vocabulary {}, {} \
         training and {} validation windows of {}",
        path.display(),
        ids.len(),
        tokenizer.vocab_size(),
        train.len(),
        valid.len(),
        args.block
    ));
    let vocab = tokenizer.vocab_size();
    let lr = args.lr.unwrap_or(match args.model {
        ModelName::Gpt => 1e-3,
        ModelName::Lstm => 3e-3,
    });
    let steps_per_epoch = args.train.steps_per_epoch(train.len(), args.batch_size);
    let steps = args
        .steps
        .unwrap_or((args.minutes * 36.0).ceil() as usize)
        .min(args.epochs * steps_per_epoch)
        .max(1);
    let name = format!("char_lm-{:?}", args.model).to_lowercase();
    let config = TrainerConfig::new(
        OptimizerConfig::adamw(0.01),
        LrSchedule::WarmupDecay {
            lr,
            warmup_steps: 100.min(steps / 10).max(1),
            decay: Decay::Cosine,
            final_lr: lr / 10.0,
            steps: Some(steps),
        },
    )
    .with_batch_size(args.batch_size)
    .with_accumulate(args.train.accumulate)
    .with_checkpoint_activations(args.train.checkpoint_activations)
    .with_valid_batch_size(64)
    .with_stop(StopRules::epochs(args.epochs).with_time_budget(args.minutes * 60.0))
    .with_grad_clipping(GradClipping::Norm(1.0))
    .with_seed(args.seed)
    .with_run_dir(args.common.run_dir(&name))
    .with_progress(args.common.progress());
    let run_dir = config.run_dir.clone().expect("run dir");
    device.seed(args.seed);
    let start = Instant::now();
    let train_data = Data::new(train, LmBatcher);
    let valid_data = Data::new(valid.clone(), LmBatcher);
    let prompt = tokenizer.encode_ids("ROMEO:\n");
    let sampling = GenerationConfig::sampling(args.sample_len, args.temperature, args.seed)
        .with_top_k(args.top_k);
    let fit = Fit {
        config,
        device: &device,
        train: &train_data,
        valid_data: &valid_data,
        valid: &valid,
        run_dir: &run_dir,
        prompt: &prompt,
        sampling,
        resume: args.train.resume,
        group,
    };
    let (valid_loss, report, text_sample) = match args.model {
        ModelName::Gpt => {
            let width = args.width.unwrap_or(192);
            let model = GptConfig::new(vocab)
                .with_block_size(args.block)
                .with_d_model(width)
                .with_n_heads((width / 32).max(1))
                .with_n_layers(args.layers.unwrap_or(4))
                .with_dropout(args.dropout)
                .init(&device);
            fit.run(model)?
        }
        ModelName::Lstm => {
            let model = CharLstmConfig::new(vocab)
                .with_hidden(args.width.unwrap_or(512))
                .with_layers(args.layers.unwrap_or(1))
                .with_dropout(args.dropout)
                .with_context_len(args.block)
                .init(&device);
            fit.run(model)?
        }
    };
    if rank != 0 {
        return Ok(()); // rank 0 reports
    }
    let train_seconds = report.train_secs;
    let tokens = report.steps * args.batch_size * args.train.accumulate * args.block;
    let sample_text = format!("ROMEO:\n{}", tokenizer.decode(&text_sample)?);
    args.common.say(format!(
        "{:?}: validation loss {valid_loss:.4} nats/char after {} steps ({} epochs) in \
         {train_seconds:.0} s ({:.0} chars/s)\n---\n{sample_text}\n---",
        args.model,
        report.steps,
        report.epochs,
        tokens as f64 / train_seconds.max(1e-9)
    ));
    args.common.write_report(&json!({
        "model": format!("{:?}", args.model).to_lowercase(),
        "valid_loss": valid_loss,
        "train_seconds": train_seconds,
        "wall_seconds": start.elapsed().as_secs_f64(),
        "steps": report.steps,
        "epochs": report.epochs,
        "tokens_per_second": tokens as f64 / train_seconds.max(1e-9),
        "best_epoch": report.best.as_ref().map(|b| b.epoch),
        "vocab_size": vocab,
        "block": args.block,
        "batch_size": args.batch_size,
        "accumulate": args.train.accumulate,
        "checkpoint_activations": args.train.checkpoint_activations,
        "resumed": args.train.resume,
        "step_seconds": train_seconds / report.steps.max(1) as f64,
        "peak_rss_mib": common::peak_rss_mib(),
        "lr": lr,
        "sample": sample_text,
    }))?;
    Ok(())
}
