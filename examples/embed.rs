//! Sentence embeddings with a pretrained sentence-transformers model.
//!
//! ```sh
//! cargo run --release --example embed -- --model ../shared/models/all-MiniLM-L6-v2 \
//!     --input ../shared/reference/bench-sentences-1000.txt --output embeddings.jsonl
//! ```
//!
//! Reads one text per line (UTF-8, or Latin-1 where a line is not valid UTF-8), writes one
//! `{"text": ..., "embedding": [...]}` per line, and reports `sentences_per_second` for the
//! encoding alone (model loading excluded). Any sentence-transformers folder Kiln loads works:
//! MiniLM, or the multilingual EmbeddingGemma-300M with `--prompt query` / `--prompt
//! document` for search.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use kiln_nlp::SentenceEncoder;
use serde_json::json;

/// Embed a file of texts with a sentence-transformers model.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// The model folder (config.json, model.safetensors, tokenizer.json, ...).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Texts, one per line.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Where to write the embeddings (JSON lines); nothing is written when absent.
    #[arg(long, value_name = "FILE.jsonl")]
    output: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, value_parser = common::positive, default_value_t = 32)]
    batch_size: usize,
    /// The dense layers' arithmetic on a CPU backend: f32, or int8 (weights and each
    /// token's inputs quantized per 32 values, integer dot products).
    #[arg(long, value_parser = ["f32", "int8"], default_value = "f32")]
    precision: String,
    /// One of the model's task prompts (`config_sentence_transformers.json`, such as
    /// EmbeddingGemma's `query` or `document`) put before every text.
    #[arg(long, value_name = "NAME")]
    prompt: Option<String>,
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = args.common.device()?;
    let texts = common::read_lines(&args.input, true)?;
    let load = Instant::now();
    let encoder =
        SentenceEncoder::load(&args.model, &device)?.with_int8(args.precision == "int8")?;
    let load_seconds = load.elapsed().as_secs_f64();
    if let Some(name) = &args.prompt
        && encoder.prompt(name).is_none()
    {
        return Err(format!(
            "--prompt {name}: the model has no such prompt (it has: {})",
            encoder.prompt_names().join(", ")
        )
        .into());
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let embeddings = match &args.prompt {
        Some(name) => encoder.encode_with_prompt(&refs, name, args.batch_size)?,
        None => encoder.encode(&refs, args.batch_size)?,
    };
    let seconds = start.elapsed().as_secs_f64();
    let rate = texts.len() as f64 / seconds.max(1e-9);
    args.common.say(format!(
        "{} texts, dim {}, batch {}: {seconds:.2} s, {rate:.1} sentences/s (model load {load_seconds:.2} s)",
        texts.len(),
        encoder.dim(),
        args.batch_size
    ));
    if let Some(path) = &args.output {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut w = std::io::BufWriter::new(file);
        for (text, e) in texts.iter().zip(&embeddings) {
            writeln!(w, "{}", json!({ "text": text, "embedding": e }))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        w.flush().map_err(|e| format!("{}: {e}", path.display()))?;
    }
    args.common.write_report(&json!({
        "sentences": texts.len(),
        "dim": encoder.dim(),
        "batch_size": args.batch_size,
        "precision": args.precision,
        "prompt": args.prompt,
        "seconds": seconds,
        "sentences_per_second": rate,
        "load_seconds": load_seconds,
        "backend": args.common.backend,
    }))?;
    Ok(())
}
