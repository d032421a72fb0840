//! French to English translation with an attention encoder-decoder, on the Tatoeba pairs
//! filtered as in the PyTorch seq2seq tutorial (both sides at most 10 tokens, English side
//! opening with "i am", "he is", "you are", ...), 10% held out.
//!
//! ```sh
//! cargo run --release --example translate -- --data ../shared/data/eng-fra
//! cargo run --release --example translate -- --data ../shared/data/eng-fra \
//!     --heatmap "elle est plus grande que moi ."
//! ```
//!
//! Trains with teacher forcing (best epoch by token accuracy on 5% of the training pairs),
//! then decodes the held-out French sentences greedily and by beam search and reports corpus
//! BLEU-4 against their English sides. Writes an attention heat map PNG for one sentence.

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use clap::Parser;
use kiln_core::metrics::Accuracy;
use kiln_core::optim::{Decay, LrSchedule, OptimizerConfig};
use kiln_core::train::{Monitor, StopRules};
use kiln_core::{Data, Trainer, TrainerConfig};
use kiln_nlp::Tokenizer;
use kiln_nlp::bleu::corpus_bleu;
use kiln_nlp::data::{SentencePair, filter_pairs, normalize_sentence, read_tatoeba};
use kiln_nlp::models::{AttentionKind, Decoded, PairItem, Seq2Seq, Seq2SeqBatcher, Seq2SeqConfig};
use kiln_nlp::vocab::{WordTokenizer, WordVocabConfig};
use serde_json::json;

/// Train and evaluate a French to English translator.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    #[command(flatten)]
    train: common::TrainArgs,
    /// Epochs.
    #[arg(long, value_parser = common::positive, default_value_t = 15)]
    epochs: usize,
    /// Batch size.
    #[arg(long, value_parser = common::positive, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate (Adam, warm-up then cosine decay).
    #[arg(long, value_parser = common::positive_rate, default_value_t = 2e-3)]
    lr: f64,
    /// Embedding and hidden width.
    #[arg(long, value_parser = common::positive, default_value_t = 256)]
    hidden: usize,
    /// Attention: additive (Bahdanau) or multiplicative (Luong).
    #[arg(long, default_value = "additive")]
    attention: String,
    /// Beam width for the beam-search evaluation.
    #[arg(long, value_parser = common::positive, default_value_t = 5)]
    beam: usize,
    /// Length penalty exponent for beam search (0: plain log-probability).
    #[arg(long, value_parser = common::finite_f32, default_value_t = 1.0)]
    length_penalty: f32,
    /// The longest sentence (tokens) kept by the filter.
    #[arg(long, value_parser = common::positive, default_value_t = 10)]
    max_tokens: usize,
    /// Draw the attention for this French sentence (default: the first held-out one).
    #[arg(long)]
    heatmap: Option<String>,
    /// Use only the first N training pairs (quick runs).
    #[arg(long, value_parser = common::positive)]
    limit: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = args.common.device()?;
    let dir = args.common.data.clone().ok_or("--data DIR is required")?;
    let archive = if dir.is_file() {
        dir.clone()
    } else {
        dir.join("fra-eng.zip")
    };
    let all = read_tatoeba(&archive)?;
    let mut pairs = filter_pairs(&all, args.max_tokens);
    kiln_core::data::shuffle(&mut pairs, args.seed);
    let held = pairs.len() / 10;
    let test: Vec<SentencePair> = pairs.split_off(pairs.len() - held);
    let valid: Vec<SentencePair> = pairs.split_off(pairs.len() - pairs.len() / 20);
    let mut train = pairs;
    if let Some(n) = args.limit {
        train.truncate(n);
    }
    if train.is_empty() || valid.is_empty() || test.is_empty() {
        return Err(format!(
            "{}: {} pairs pass the filter (at most {} tokens, English prefixes): too few to \
             train, validate and test",
            archive.display(),
            train.len() + valid.len() + test.len(),
            args.max_tokens
        )
        .into());
    }
    args.common.say(format!(
        "{} pairs in {}, {} kept by the filter: {} train, {} valid, {} test",
        all.len(),
        archive.display(),
        train.len() + valid.len() + test.len(),
        train.len(),
        valid.len(),
        test.len()
    ));
    let vocab_config = WordVocabConfig::new();
    let fr = WordTokenizer::build(train.iter().map(|p| p.french.as_str()), &vocab_config);
    let en = WordTokenizer::build(train.iter().map(|p| p.english.as_str()), &vocab_config);
    let items = |set: &[SentencePair]| -> Result<Vec<PairItem>, Box<dyn std::error::Error>> {
        set.iter()
            .map(|p| {
                Ok(PairItem {
                    src: fr.encode(&p.french)?.ids,
                    tgt: en.encode(&p.english)?.ids,
                })
            })
            .collect()
    };
    let (train_items, valid_items, test_items) = (items(&train)?, items(&valid)?, items(&test)?);

    let attention = match args.attention.as_str() {
        "additive" | "bahdanau" => AttentionKind::Additive,
        "multiplicative" | "luong" => AttentionKind::Multiplicative,
        other => {
            return Err(
                format!("--attention: unknown '{other}' (additive, multiplicative)").into(),
            );
        }
    };
    device.seed(args.seed);
    let model = Seq2SeqConfig::new(fr.vocab_size(), en.vocab_size())
        .with_embed_dim(args.hidden)
        .with_hidden(args.hidden)
        .with_attention(attention)
        .init(&device);
    let steps = args.epochs
        * args
            .train
            .steps_per_epoch(train_items.len(), args.batch_size);
    let config = TrainerConfig::new(
        OptimizerConfig::adam(),
        LrSchedule::WarmupDecay {
            lr: args.lr,
            warmup_steps: (steps / 50).max(1),
            decay: Decay::Cosine,
            final_lr: args.lr / 50.0,
            steps: None,
        },
    )
    .with_batch_size(args.batch_size)
    .with_stop(StopRules::epochs(args.epochs))
    .with_grad_clipping(kiln_core::train::GradClipping::Norm(1.0))
    // Token accuracy under teacher forcing tracks BLEU better than the loss, which keeps
    // rising on a small set once the model grows confident.
    .with_monitor(Monitor::new("valid_accuracy"))
    .with_seed(args.seed)
    .with_run_dir(args.common.run_dir("translate"))
    .with_progress(args.common.progress());
    let config = args.train.apply(config);
    let run_dir = config.run_dir.clone().expect("run dir");
    let start = Instant::now();
    let trainer = Trainer::new(config, &device).with_metric(Accuracy::new());
    let fitted = args.train.fit(
        &trainer,
        model,
        &Data::new(InMemDataset::new(train_items), Seq2SeqBatcher),
        Some(&Data::new(InMemDataset::new(valid_items), Seq2SeqBatcher)),
    )?;
    let train_seconds = start.elapsed().as_secs_f64();
    let model: Seq2Seq = Trainer::load_model(fitted.model, &Trainer::best_checkpoint(&run_dir))?;

    let max_len = args.max_tokens + 5;
    let references: Vec<Vec<Vec<String>>> = test.iter().map(|p| vec![words(&p.english)]).collect();
    let to_words = |d: &Decoded| -> Result<Vec<String>, Box<dyn std::error::Error>> {
        Ok(words(&en.decode(&d.ids)?))
    };
    let start = Instant::now();
    let mut greedy = Vec::with_capacity(test_items.len());
    for chunk in test_items.chunks(256) {
        let batch = Seq2SeqBatcher.batch(chunk.to_vec(), &device);
        for d in model.greedy(batch.src, batch.src_mask, max_len) {
            greedy.push(to_words(&d)?);
        }
    }
    let greedy_seconds = start.elapsed().as_secs_f64();
    let bleu_greedy = corpus_bleu(&greedy, &references, 4);
    let start = Instant::now();
    let mut beamed = Vec::with_capacity(test_items.len());
    for item in &test_items {
        let d = model.beam_search(&item.src, args.beam, max_len, args.length_penalty, &device);
        beamed.push(to_words(&d)?);
    }
    let beam_seconds = start.elapsed().as_secs_f64();
    let bleu_beam = corpus_bleu(&beamed, &references, 4);
    args.common.say(format!(
        "trained in {train_seconds:.0} s (best epoch {:?}); BLEU-4 on {} held-out pairs: greedy \
         {:.2} ({greedy_seconds:.1} s), beam {} {:.2} ({beam_seconds:.1} s)",
        fitted.report.best.as_ref().map(|b| b.epoch),
        test.len(),
        100.0 * bleu_greedy.score,
        args.beam,
        100.0 * bleu_beam.score
    ));
    for (p, (g, b)) in test.iter().zip(greedy.iter().zip(&beamed)).take(5) {
        args.common.say(format!(
            "  > {}\n  = {}\n  < {} (greedy)\n  < {} (beam)",
            p.french,
            p.english,
            g.join(" "),
            b.join(" ")
        ));
    }

    let sentence = match &args.heatmap {
        Some(s) => normalize_sentence(s),
        None => test[0].french.clone(),
    };
    let src = fr.encode(&sentence)?;
    let d = model.beam_search(&src.ids, args.beam, max_len, args.length_penalty, &device);
    let mut out_words = words(&en.decode(&d.ids)?);
    out_words.truncate(d.attention.len());
    while out_words.len() < d.attention.len() {
        out_words.push("<eos>".into());
    }
    let heatmap = run_dir.join("attention.png");
    kiln_nlp::plot::attention_heatmap(&d.attention, &src.tokens, &out_words, &heatmap)?;
    args.common.say(format!(
        "{sentence} -> {} (attention in {})",
        out_words.join(" "),
        heatmap.display()
    ));

    args.common.write_report(&json!({
        "bleu": 100.0 * bleu_beam.score.max(bleu_greedy.score),
        "bleu_greedy": 100.0 * bleu_greedy.score,
        "bleu_beam": 100.0 * bleu_beam.score,
        "beam": args.beam,
        "precisions_greedy": bleu_greedy.precisions,
        "brevity_penalty_greedy": bleu_greedy.brevity_penalty,
        "test_pairs": test.len(),
        "train_pairs": train.len(),
        "src_vocab": fr.vocab_size(),
        "tgt_vocab": en.vocab_size(),
        "epochs": fitted.report.epochs,
        "best_epoch": fitted.report.best.as_ref().map(|b| b.epoch),
        "train_seconds": train_seconds,
        "greedy_seconds": greedy_seconds,
        "beam_seconds": beam_seconds,
        "heatmap": heatmap,
    }))?;
    Ok(())
}
