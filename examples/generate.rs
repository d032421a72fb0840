//! Text generation with a pretrained decoder from a Hugging Face folder: GPT-2, or the Llama
//! family (Llama, Qwen2, SmolLM, Mistral without a sliding window).
//!
//! ```sh
//! cargo run --release --example generate --features nlp -- \
//!     --model crates/nlp/tests/fixtures/decoders/gpt2-tiny --prompt "The quick brown" \
//!     --max-new-tokens 24 --temperature 0
//! cargo run --release --example generate --features nlp -- --model DIR --prompt "Once" \
//!     --temperature 0.8 --top-k 50 --top-p 0.95 --seed 7 --stream
//! ```
//!
//! The folder needs `config.json`, `model.safetensors` (or the shards of
//! `model.safetensors.index.json`) and `tokenizer.json`; `generation_config.json`, when
//! present, gives the end-of-sequence ids. `--temperature 0` is greedy decoding. The report
//! Llama-family models run on the packed CPU path (`LlamaCpu`: weights packed once, one GEMM
//! per projection for the prompt, streamed matrix-vector products for each new token) when
//! the backend is a CPU one (`--engine auto`, the default), else through Burn (`--engine
//! burn`, any backend); `--precision bf16` keeps the packed weights in bfloat16 (exact for a
//! bf16 checkpoint, half the bytes read per token). The report
//! (`--report`) has `generated_ids`, `generated_text`, `stop`, `prompt_tokens`, `engine`,
//! `prefill_tokens_per_second` (prompt tokens over the time to the first new token) and
//! `decode_tokens_per_second` (the other new tokens over their time). `--chat` (with
//! `--system TEXT`) renders the folder's chat template around the prompt first.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use kiln_nlp::chat::{ChatMessage, ChatTemplate};
use kiln_nlp::generate::{Generation, GenerationConfig};
use kiln_nlp::models::decoding::generate;
use kiln_nlp::models::{Gpt2, Llama, LlamaCpu, Precision};
use kiln_nlp::tokenizer::{HfTokenizer, Tokenizer};
use serde_json::json;

/// Continue a prompt with a pretrained decoder.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// The model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Most tokens to add.
    #[arg(long, value_parser = common::positive, default_value_t = 64)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, value_parser = common::non_negative_f32, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the k most probable tokens.
    #[arg(long, value_parser = common::positive)]
    top_k: Option<usize>,
    /// Sample among the most probable tokens whose probabilities sum to p.
    #[arg(long, value_parser = top_p)]
    top_p: Option<f32>,
    /// Repetition penalty (1: none).
    #[arg(long, value_parser = common::positive_rate_f32, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop once the continuation contains this text (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    stops: Vec<String>,
    /// Print each token as it is generated.
    #[arg(long)]
    stream: bool,
    /// Treat the prompt as a user message and render the folder's chat template around it
    /// (`chat_template.jinja` or `tokenizer_config.json`), as transformers'
    /// `apply_chat_template(..., add_generation_prompt=True)` does.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message before the user's.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// How a Llama-family model runs: `auto` (the packed CPU path on a CPU backend, else
    /// Burn), `packed` or `burn`. GPT-2 always runs through Burn.
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    engine: Engine,
    /// The packed path's weights: f32, or bf16 (exact for a bf16 checkpoint).
    #[arg(long, value_enum, default_value_t = WeightPrecision::F32)]
    precision: WeightPrecision,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Auto,
    Packed,
    Burn,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum WeightPrecision {
    F32,
    Bf16,
}

fn top_p(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if p > 0.0 && p <= 1.0 => Ok(p),
        _ => Err(format!("'{s}' is not a probability in (0, 1]")),
    }
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}

type BoxError = Box<dyn std::error::Error>;

/// The loaded decoder, by `model_type` and engine.
enum Decoder {
    Gpt2(Gpt2),
    Llama(Llama),
    Packed(LlamaCpu),
}

/// `model_type` of `config.json`, and the end-of-sequence ids of `generation_config.json` or
/// `config.json` (one id or a list).
fn read_config(dir: &Path) -> Result<(String, Vec<u32>), BoxError> {
    let read = |name: &str| -> Result<Option<serde_json::Value>, BoxError> {
        let path = dir.join(name);
        if !path.is_file() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?,
        ))
    };
    let config =
        read("config.json")?.ok_or_else(|| format!("{}: no config.json here", dir.display()))?;
    let kind = config["model_type"]
        .as_str()
        .ok_or_else(|| format!("{}: config.json has no model_type", dir.display()))?
        .to_owned();
    let generation = read("generation_config.json")?;
    let eos = generation
        .as_ref()
        .map(|g| g["eos_token_id"].clone())
        .filter(|v| !v.is_null())
        .unwrap_or_else(|| config["eos_token_id"].clone());
    let ids = match eos {
        serde_json::Value::Number(n) => n.as_u64().map(|v| v as u32).into_iter().collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    };
    Ok((kind, ids))
}

fn run(args: &Args) -> Result<(), BoxError> {
    let device = args.common.device()?;
    let (kind, eos) = read_config(&args.model)?;
    let tokenizer = HfTokenizer::from_file(args.model.join("tokenizer.json"))?;
    let load = Instant::now();
    let cpu_backend = args
        .common
        .backend
        .parse::<kiln_core::Backend>()
        .is_ok_and(|b| b.is_cpu());
    let packed = match args.engine {
        Engine::Auto => cpu_backend,
        Engine::Packed if !cpu_backend => {
            return Err(format!(
                "--engine packed runs on the CPU; --backend {} is not a CPU backend",
                args.common.backend
            )
            .into());
        }
        Engine::Packed => true,
        Engine::Burn => false,
    };
    let model = match kind.as_str() {
        "gpt2" => Decoder::Gpt2(Gpt2::from_folder(&args.model, &device)?.1),
        "llama" | "qwen2" | "mistral" if packed => {
            let precision = match args.precision {
                WeightPrecision::F32 => Precision::F32,
                WeightPrecision::Bf16 => Precision::Bf16,
            };
            let llama = Llama::from_folder(&args.model, &device)?.1;
            Decoder::Packed(LlamaCpu::from_llama(&llama, precision)?)
        }
        "llama" | "qwen2" | "mistral" => {
            Decoder::Llama(Llama::from_folder(&args.model, &device)?.1)
        }
        other => {
            return Err(format!(
                "{}: model_type '{other}' is not supported (gpt2, llama, qwen2, mistral)",
                args.model.join("config.json").display()
            )
            .into());
        }
    };
    let load_seconds = load.elapsed().as_secs_f64();
    let prompt = if args.chat {
        let template = ChatTemplate::from_folder(&args.model)?.ok_or_else(|| {
            format!(
                "--chat: {} has no chat template (chat_template.jinja, or chat_template in \
                 tokenizer_config.json)",
                args.model.display()
            )
        })?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", &args.prompt));
        let text = template.render(&messages, true)?;
        tokenizer.encode_plain(&text)?.ids
    } else {
        tokenizer.encode(&args.prompt)?.ids
    };
    if prompt.is_empty() {
        return Err("--prompt: the text encodes to no tokens".into());
    }
    let mut config = GenerationConfig::sampling(args.max_new_tokens, args.temperature, args.seed)
        .with_repetition_penalty(args.repetition_penalty)
        .with_eos(eos)
        .with_stop_strings(args.stops.clone());
    config.top_k = args.top_k;
    config.top_p = args.top_p;
    config.validate()?;
    let decode = |ids: &[u32]| tokenizer.decode(ids).unwrap_or_default();
    let start = Instant::now();
    let mut first: Option<f64> = None;
    let mut last = 0f64;
    let mut shown = String::new();
    let mut streamed: Vec<u32> = Vec::new();
    let mut on_token = |_row: usize, id: u32| {
        let now = start.elapsed().as_secs_f64();
        first.get_or_insert(now);
        last = now;
        if args.stream && !args.common.quiet {
            streamed.push(id);
            let text = decode(&streamed);
            if let Some(new) = text.strip_prefix(shown.as_str()) {
                print!("{new}");
                let _ = std::io::stdout().flush();
            }
            shown = text;
        }
        true
    };
    let prompts = std::slice::from_ref(&prompt);
    let out: Generation = match &model {
        Decoder::Gpt2(m) => generate(m, prompts, &config, &device, &decode, on_token)?,
        Decoder::Llama(m) => generate(m, prompts, &config, &device, &decode, on_token)?,
        Decoder::Packed(m) => vec![m.generate(&prompt, &config, &decode, |id| on_token(0, id))?],
    }
    .into_iter()
    .next()
    .ok_or("no generation")?;
    let engine = match &model {
        Decoder::Packed(_) => format!("packed ({:?})", args.precision).to_lowercase(),
        _ => "burn".to_string(),
    };
    if args.stream && !args.common.quiet {
        println!();
    }
    let text = tokenizer.decode(&out.ids)?;
    let first = first.unwrap_or(0.0);
    let prefill = prompt.len() as f64 / first.max(1e-9);
    let decode_rate = (out.ids.len().saturating_sub(1)) as f64 / (last - first).max(1e-9);
    if !args.stream {
        let shown = if args.chat { "" } else { args.prompt.as_str() };
        args.common.say(format!("{shown}{text}"));
    }
    args.common.say(format!(
        "{} prompt tokens, {} new ({:?}): prefill {prefill:.0} tokens/s, decode {decode_rate:.1} \
         tokens/s (model load {load_seconds:.2} s, engine {engine})",
        prompt.len(),
        out.ids.len(),
        out.stop
    ));
    args.common.write_report(&json!({
        "model_type": kind,
        "engine": engine,
        "prompt_tokens": prompt.len(),
        "generated_ids": out.ids,
        "generated_text": text,
        "stop": format!("{:?}", out.stop),
        "prefill_tokens_per_second": prefill,
        "decode_tokens_per_second": decode_rate,
        "load_seconds": load_seconds,
    }))?;
    Ok(())
}
