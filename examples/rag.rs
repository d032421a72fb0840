//! Retrieval-augmented answers: the passages of a text file nearest to a question (a
//! sentence encoder and a `SemanticIndex`), put into a prompt for a pretrained decoder, which
//! writes the answer.
//!
//! ```sh
//! cargo run --release --example rag --features nlp -- \
//!     --embedder ../shared/models/all-MiniLM-L6-v2 --generator DIR \
//!     --corpus passages.txt "Where is the Eiffel tower?"
//! ```
//!
//! The corpus has one passage per line (blank lines skipped). The `--k` best passages (cosine
//! similarity of the embeddings) go into the prompt, best first, numbered; with a chat
//! template in the generator's folder the prompt is a system instruction and a user message
//! rendered by it (`--no-chat` for the plain form). When the prompt and `--max-new-tokens`
//! do not fit the generator's context, the lowest-ranked passages are left out (said on
//! stderr); when not even the best one fits, it is an error. The answer is printed with the
//! passages it used; the report (`--report`) has `question`, `passages` (index, score, text,
//! used), `prompt_tokens`, `answer`, `answer_ids`, `stop` and the timings.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use kiln_nlp::chat::ChatMessage;
use kiln_nlp::generation::GenerationConfig;
use kiln_nlp::generation::{Engine, TextGenerator};
use kiln_nlp::models::Precision;
use kiln_nlp::{SemanticIndex, SentenceEncoder};
use serde_json::json;

/// Answer a question from the passages of a file that a sentence encoder finds nearest.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// The sentence-transformers folder that embeds passages and the question.
    #[arg(long, value_name = "DIR")]
    embedder: PathBuf,
    /// The decoder folder that writes the answer (GPT-2 or the Llama family).
    #[arg(long, value_name = "DIR")]
    generator: PathBuf,
    /// Passages, one per line.
    #[arg(long, value_name = "FILE")]
    corpus: PathBuf,
    /// Passages to retrieve.
    #[arg(long, value_parser = common::positive, default_value_t = 3)]
    k: usize,
    /// Most tokens in the answer.
    #[arg(long, value_parser = common::positive, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, value_parser = common::non_negative_f32, default_value_t = 0.0)]
    temperature: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use the plain prompt even when the generator has a chat template.
    #[arg(long)]
    no_chat: bool,
    /// The instruction before the passages (the system message with a chat template).
    #[arg(long, default_value = INSTRUCTION)]
    instruction: String,
    /// Texts per forward pass while embedding the corpus.
    #[arg(long, value_parser = common::positive, default_value_t = 32)]
    batch_size: usize,
    /// The question.
    question: String,
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}

type BoxError = Box<dyn std::error::Error>;

const INSTRUCTION: &str = "Answer the question using only the numbered passages.";

/// The passages as a numbered list.
fn context(passages: &[&str]) -> String {
    passages
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{}] {p}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The prompt's ids for the first `n` passages.
fn prompt_ids(
    generator: &TextGenerator,
    chat: bool,
    instruction: &str,
    question: &str,
    passages: &[&str],
) -> Result<Vec<u32>, BoxError> {
    let context = context(passages);
    Ok(if chat {
        let mut messages = Vec::new();
        if !instruction.is_empty() {
            messages.push(ChatMessage::new("system", instruction));
        }
        messages.push(ChatMessage::new(
            "user",
            format!("{context}\n\nQuestion: {question}"),
        ));
        generator.encode_chat(&messages)?
    } else {
        let head = if instruction.is_empty() {
            String::new()
        } else {
            format!("{instruction}\n")
        };
        generator.encode(&format!("{head}{context}\nQuestion: {question}\nAnswer:"))?
    })
}

fn run(args: &Args) -> Result<(), BoxError> {
    if args.question.trim().is_empty() {
        return Err("QUESTION: empty".into());
    }
    let passages = common::read_lines(&args.corpus, false)?;
    if passages.is_empty() {
        return Err(format!("--corpus {}: no passages", args.corpus.display()).into());
    }
    let device = args.common.device()?;
    let start = Instant::now();
    let encoder = SentenceEncoder::load(&args.embedder, &device)?;
    let generator = TextGenerator::load(&args.generator, &device, Engine::Auto, Precision::F32)?;
    let load_seconds = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    let index = SemanticIndex::from_corpus(&encoder, &refs, args.batch_size)?;
    let question = encoder.encode_queries(&[args.question.as_str()], 1)?;
    let hits = index
        .search(&question, args.k.min(index.len()), &device)?
        .into_iter()
        .next()
        .unwrap_or_default();
    let retrieve_seconds = start.elapsed().as_secs_f64();

    // The best passages that fit the context with room for the answer.
    let chat = !args.no_chat && generator.chat_template().is_some();
    let context_len = generator.max_positions();
    let mut used = hits.len();
    let prompt = loop {
        let texts: Vec<&str> = hits[..used].iter().map(|h| h.text.as_str()).collect();
        let ids = prompt_ids(&generator, chat, &args.instruction, &args.question, &texts)?;
        if ids.len() + args.max_new_tokens <= context_len {
            break ids;
        }
        if used == 1 {
            return Err(format!(
                "the prompt with the best passage is {} tokens; with --max-new-tokens {} it \
                 does not fit the generator's context of {context_len} (ask for fewer new \
                 tokens, or use shorter passages)",
                ids.len(),
                args.max_new_tokens
            )
            .into());
        }
        used -= 1;
    };
    if used < hits.len() && !args.common.quiet {
        eprintln!(
            "{} of {} passages fit the generator's context of {context_len} tokens",
            used,
            hits.len()
        );
    }

    let config = GenerationConfig::sampling(args.max_new_tokens, args.temperature, args.seed);
    let start = Instant::now();
    let out = generator.generate(&prompt, &config, |_| true)?;
    let generate_seconds = start.elapsed().as_secs_f64();
    let answer = generator.decode(&out.ids)?;

    args.common.say(format!("{}\n", answer.trim()));
    for (i, h) in hits.iter().enumerate() {
        let mark = if i < used {
            format!("[{}]", i + 1)
        } else {
            "(left out)".to_string()
        };
        args.common
            .say(format!("{mark} {:.3}  {}", h.score, h.text));
    }
    args.common.write_report(&json!({
        "question": args.question,
        "passages": hits.iter().enumerate().map(|(i, h)| json!({
            "index": h.index,
            "score": h.score,
            "text": h.text,
            "used": i < used,
        })).collect::<Vec<_>>(),
        "chat_template": chat,
        "engine": generator.engine(),
        "prompt_tokens": prompt.len(),
        "answer": answer,
        "answer_ids": out.ids,
        "stop": format!("{:?}", out.stop),
        "load_seconds": load_seconds,
        "retrieve_seconds": retrieve_seconds,
        "generate_seconds": generate_seconds,
    }))?;
    Ok(())
}
