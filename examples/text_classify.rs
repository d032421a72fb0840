//! Text classification from scratch: a word vocabulary built on the training texts, then a
//! bidirectional LSTM or a Transformer encoder trained with the kiln-core trainer.
//!
//! ```sh
//! cargo run --release --example text_classify -- --data ../shared/data/sms-spam --dataset sms-spam
//! cargo run --release --example text_classify -- --data ../shared/data/trec --dataset trec \
//!     --model transformer
//! ```
//!
//! SMS Spam has no official split: a seeded, stratified 20% is held out for the test, and 10%
//! of the rest picks the best epoch. TREC-6: `train_5500.label` (10% of it for the best
//! epoch), tested on the 500 questions of `TREC_10.label`. The report holds `test_accuracy`
//! and `macro_f1`.

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Instant;

use burn::data::dataset::InMemDataset;
use clap::{Parser, ValueEnum};
use kiln_core::metrics::{Accuracy, ConfusionMatrix};
use kiln_core::optim::{Decay, LrSchedule, OptimizerConfig};
use kiln_core::train::{Monitor, StopRules};
use kiln_core::{Data, TrainReport, TrainStep, Trainer, TrainerConfig};
use kiln_nlp::batch::evaluate;
use kiln_nlp::data::{LabeledText, SMS_CLASSES, TREC_CLASSES, read_sms_spam, read_trec};
use kiln_nlp::models::{LstmClassifierConfig, TransformerClassifierConfig};
use kiln_nlp::vocab::{WordTokenizer, WordVocabConfig};
use kiln_nlp::{TextBatch, TextBatcher, TextClassifier, TextItem, Tokenizer};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatasetName {
    SmsSpam,
    Trec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Case {
    Lower,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelName {
    Bilstm,
    Transformer,
}

/// Train a text classifier from scratch.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    #[command(flatten)]
    train: common::TrainArgs,
    /// Which data set --data holds.
    #[arg(long, value_enum, default_value = "sms-spam")]
    dataset: DatasetName,
    /// The model.
    #[arg(long, value_enum, default_value = "bilstm")]
    model: ModelName,
    /// Epochs (default: 10 for SMS Spam, 20 for TREC).
    #[arg(long, value_parser = common::positive)]
    epochs: Option<usize>,
    /// Batch size.
    #[arg(long, value_parser = common::positive, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate (AdamW, warm-up then cosine decay).
    #[arg(long, value_parser = common::positive_rate)]
    lr: Option<f64>,
    /// Longest input in tokens.
    #[arg(long, value_parser = common::positive, default_value_t = 64)]
    max_len: usize,
    /// Words seen fewer times in training map to <unk> (so that <unk> is trained too).
    #[arg(long, value_parser = common::positive, default_value_t = 2)]
    min_freq: usize,
    /// Letter case: `lower` (default for SMS Spam, whose spelling is erratic) or `keep`
    /// (default for TREC, where capitals mark names and places).
    #[arg(long, value_enum)]
    case: Option<Case>,
    /// Embedding width.
    #[arg(long, value_parser = common::positive, default_value_t = 200)]
    embed_dim: usize,
    /// Hidden width (LSTM per direction; Transformer model width).
    #[arg(long, value_parser = common::positive, default_value_t = 128)]
    hidden: usize,
    /// Dropout (the Transformer uses at most 0.1).
    #[arg(long, value_parser = common::probability, default_value_t = 0.5)]
    dropout: f64,
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

type Split = (Vec<LabeledText>, Vec<LabeledText>, Vec<LabeledText>);

fn pick(all: &[LabeledText], idx: &[usize]) -> Vec<LabeledText> {
    idx.iter().map(|&i| all[i].clone()).collect()
}

fn load(args: &Args) -> Result<(Split, &'static [&'static str]), Box<dyn std::error::Error>> {
    let dir = args.common.data.clone().ok_or("--data DIR is required")?;
    let labels = |set: &[LabeledText]| set.iter().map(|t| t.label).collect::<Vec<_>>();
    Ok(match args.dataset {
        DatasetName::SmsSpam => {
            let all = read_sms_spam(dir.join("SMSSpamCollection"))?;
            let (rest, test) = kiln_core::data::stratified_split(&labels(&all), 0.2, args.seed);
            let rest = pick(&all, &rest);
            let (train, valid) =
                kiln_core::data::stratified_split(&labels(&rest), 0.1, args.seed + 1);
            (
                (pick(&rest, &train), pick(&rest, &valid), pick(&all, &test)),
                &SMS_CLASSES,
            )
        }
        DatasetName::Trec => {
            let all = read_trec(dir.join("train_5500.label"))?;
            let test = read_trec(dir.join("TREC_10.label"))?;
            let (train, valid) = kiln_core::data::stratified_split(&labels(&all), 0.1, args.seed);
            (
                (pick(&all, &train), pick(&all, &valid), test),
                &TREC_CLASSES,
            )
        }
    })
}

/// Trains `model`, reloads its best checkpoint (by validation accuracy) and tests it.
fn fit_and_test<M: TrainStep<TextBatch> + TextClassifier>(
    model: M,
    (config, flags): (TrainerConfig, &common::TrainArgs),
    (train, valid): &(Data<TextItem, TextBatch>, Data<TextItem, TextBatch>),
    test: &[TextItem],
    batcher: &TextBatcher,
    classes: usize,
    device: &burn::tensor::Device,
) -> Result<(ConfusionMatrix, TrainReport), Box<dyn std::error::Error>> {
    let run_dir = config.run_dir.clone().expect("run dir");
    let trainer = Trainer::new(config, device).with_metric(Accuracy::new());
    let fitted = flags.fit(&trainer, model, train, Some(valid))?;
    let model = Trainer::load_model(fitted.model, &Trainer::best_checkpoint(&run_dir))?;
    let cm = evaluate(&model, test, batcher, classes, 128, device);
    Ok((cm, fitted.report))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = args.common.device()?;
    let ((mut train, valid, test), classes) = load(args)?;
    if let Some(n) = args.limit {
        train.truncate(n);
    }
    let lowercase = match args.case {
        Some(case) => case == Case::Lower,
        None => args.dataset == DatasetName::SmsSpam,
    };
    let tokenizer = WordTokenizer::build(
        train.iter().map(|t| t.text.as_str()),
        &WordVocabConfig::new()
            .with_lowercase(lowercase)
            .with_min_freq(args.min_freq),
    );
    let items = |set: &[LabeledText]| kiln_nlp::batch::encode_labeled(&tokenizer, set);
    let (train_items, valid_items, test_items) = (items(&train)?, items(&valid)?, items(&test)?);
    let batcher = TextBatcher::new(tokenizer.pad_id(), args.max_len);
    let epochs = args.epochs.unwrap_or(match args.dataset {
        DatasetName::SmsSpam => 10,
        DatasetName::Trec => 20,
    });
    let lr = args.lr.unwrap_or(match args.model {
        ModelName::Bilstm => 2e-3,
        ModelName::Transformer => 5e-4,
    });
    let steps = epochs
        * args
            .train
            .steps_per_epoch(train_items.len(), args.batch_size);
    let name = format!("text_classify-{:?}-{:?}", args.dataset, args.model).to_lowercase();
    let config = TrainerConfig::new(
        OptimizerConfig::adamw(0.01),
        LrSchedule::WarmupDecay {
            lr,
            warmup_steps: (steps / 20).max(1),
            decay: Decay::Cosine,
            final_lr: lr / 20.0,
            steps: None,
        },
    )
    .with_batch_size(args.batch_size)
    .with_stop(StopRules::epochs(epochs))
    .with_monitor(Monitor::new("valid_accuracy"))
    .with_seed(args.seed)
    .with_run_dir(args.common.run_dir(&name))
    .with_progress(args.common.progress());
    let config = args.train.apply(config);
    let data = (
        Data::new(InMemDataset::new(train_items.clone()), batcher),
        Data::new(InMemDataset::new(valid_items), batcher),
    );
    device.seed(args.seed);
    let start = Instant::now();
    let vocab = tokenizer.vocab_size();
    let (cm, report) = match args.model {
        ModelName::Bilstm => {
            let model = LstmClassifierConfig::new(vocab, classes.len())
                .with_embed_dim(args.embed_dim)
                .with_hidden(args.hidden)
                .with_bidirectional(true)
                .with_dropout(args.dropout)
                .init(&device);
            fit_and_test(
                model,
                (config, &args.train),
                &data,
                &test_items,
                &batcher,
                classes.len(),
                &device,
            )?
        }
        ModelName::Transformer => {
            let model = TransformerClassifierConfig::new(vocab, classes.len())
                .with_max_len(args.max_len)
                .with_d_model(args.hidden)
                .with_d_ff(2 * args.hidden)
                .with_dropout(args.dropout.min(0.1))
                .init(&device);
            fit_and_test(
                model,
                (config, &args.train),
                &data,
                &test_items,
                &batcher,
                classes.len(),
                &device,
            )?
        }
    };
    let train_seconds = start.elapsed().as_secs_f64();
    let majority = {
        let mut counts = vec![0usize; classes.len()];
        test_items.iter().for_each(|i| counts[i.label] += 1);
        *counts.iter().max().unwrap_or(&0) as f64 / test_items.len().max(1) as f64
    };
    args.common.say(format!(
        "{:?} / {:?}: {} train, {} test, vocabulary {vocab}: test accuracy {:.4}, macro F1 {:.4} \
         (majority class {:.4}) in {train_seconds:.0} s",
        args.dataset,
        args.model,
        train_items.len(),
        test_items.len(),
        cm.accuracy(),
        cm.macro_f1(),
        majority,
    ));
    for (c, name) in classes.iter().enumerate() {
        args.common.say(format!(
            "  {name:>5}: precision {:.3} recall {:.3} f1 {:.3}",
            cm.precision(c),
            cm.recall(c),
            cm.f1(c)
        ));
    }
    let best = report.best.clone();
    args.common.write_report(&json!({
        "dataset": format!("{:?}", args.dataset).to_lowercase(),
        "model": format!("{:?}", args.model).to_lowercase(),
        "test_accuracy": cm.accuracy(),
        "macro_f1": cm.macro_f1(),
        "majority_accuracy": majority,
        "test_size": test_items.len(),
        "train_size": train_items.len(),
        "vocab_size": vocab,
        "epochs": report.epochs,
        "best_epoch": best.as_ref().map(|b| b.epoch),
        "best_valid_accuracy": best.as_ref().map(|b| b.value),
        "train_seconds": train_seconds,
        "lr": lr,
        "lowercase": lowercase,
    }))?;
    Ok(())
}
