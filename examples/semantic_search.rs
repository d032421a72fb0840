//! Semantic search over a text file with a pretrained sentence encoder.
//!
//! ```sh
//! cargo run --release --example semantic_search -- --model ../shared/models/all-MiniLM-L6-v2 \
//!     --corpus ../shared/reference/bench-sentences-1000.txt --save-index corpus.idx \
//!     "how do plants make energy" "a recipe with tomatoes"
//! echo "weather forecast" | cargo run --release --example semantic_search -- \
//!     --model ../shared/models/all-MiniLM-L6-v2 --load-index corpus.idx
//! ```
//!
//! Queries come from the arguments, or one per line on stdin when there are none.

#[path = "common/mod.rs"]
mod common;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use kiln_nlp::{SemanticIndex, SentenceEncoder};
use serde_json::json;

/// Index a text file and answer queries by cosine similarity of sentence embeddings.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// The model folder.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Texts to index, one per line.
    #[arg(long, value_name = "FILE", required_unless_present = "load_index")]
    corpus: Option<PathBuf>,
    /// Load a saved index instead of embedding --corpus.
    #[arg(long, value_name = "FILE")]
    load_index: Option<PathBuf>,
    /// Save the index built from --corpus.
    #[arg(long, value_name = "FILE")]
    save_index: Option<PathBuf>,
    /// Results per query.
    #[arg(long, value_parser = common::positive, default_value_t = 5)]
    k: usize,
    /// Texts per forward pass while indexing.
    #[arg(long, value_parser = common::positive, default_value_t = 32)]
    batch_size: usize,
    /// Queries (default: one per line on stdin).
    queries: Vec<String>,
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let device = args.common.device()?;
    let encoder = SentenceEncoder::load(&args.model, &device)?;
    let start = Instant::now();
    let index = match (&args.load_index, &args.corpus) {
        (Some(path), _) => SemanticIndex::load(path)?,
        (None, Some(corpus)) => {
            let texts = common::read_lines(corpus, false)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            SemanticIndex::from_corpus(&encoder, &refs, args.batch_size)?
        }
        (None, None) => return Err("--corpus FILE or --load-index FILE is required".into()),
    };
    let index_seconds = start.elapsed().as_secs_f64();
    if let Some(path) = &args.save_index {
        index.save(path)?;
    }
    if index.dim() != encoder.dim() {
        return Err(format!(
            "the index holds {}-dimensional vectors, the model makes {}",
            index.dim(),
            encoder.dim()
        )
        .into());
    }
    let queries: Vec<String> = if args.queries.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        args.queries.clone()
    };
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let hits = index.search(
        &encoder.encode_queries(&refs, args.batch_size)?,
        args.k,
        &device,
    )?;
    let mut results = Vec::new();
    for (q, hits) in queries.iter().zip(&hits) {
        args.common.say(format!("\n{q}"));
        for h in hits {
            args.common.say(format!("  {:.3}  {}", h.score, h.text));
        }
        results.push(json!({
            "query": q,
            "hits": hits.iter().map(|h| json!({"index": h.index, "score": h.score, "text": h.text})).collect::<Vec<_>>(),
        }));
    }
    args.common.write_report(&json!({
        "indexed": index.len(),
        "index_seconds": index_seconds,
        "queries": results,
    }))?;
    Ok(())
}
