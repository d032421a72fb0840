//! Text generation with a pretrained decoder from a Hugging Face folder: GPT-2, or the Llama
//! family (Llama, Qwen2, SmolLM, Mistral without a sliding window); or from a GGUF file as
//! llama.cpp and ollama run it (`--model FILE.gguf`: `llama` and `qwen2` architectures, the
//! weights in their block types, Q4_0 ... Q6_K, used where the file is mapped).
//!
//! ```sh
//! cargo run --release --example generate --features nlp -- \
//!     --model crates/nlp/tests/fixtures/decoders/gpt2-tiny --prompt "The quick brown" \
//!     --max-new-tokens 24 --temperature 0
//! cargo run --release --example generate --features nlp -- --model DIR --prompt "Once" \
//!     --temperature 0.8 --top-k 50 --top-p 0.95 --seed 7 --stream
//! cargo run --release --example generate -- --chat --threads 2 --prompt "Why is the sky blue?" \
//!     --model ../shared/models/smollm2-135m-instruct-gguf/SmolLM2-135M-Instruct.Q4_1.gguf
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
//! `decode_tokens_per_second` (the other new tokens over their time), `weights_bytes` (the
//! bytes of weights a decoded token reads on the packed path) and `peak_rss_mib` (the
//! process's peak resident memory). `--chat` (with `--system TEXT`) renders the folder's
//! (or file's) chat template around the prompt first. `--threads N` sets the threads of the
//! packed path (rayon's and the decode steps'). `--activations int8` multiplies a GGUF file's
//! quantized weights as llama.cpp does (activations quantized to 8 bits per block, integer
//! dot products); the default `f32` keeps them f32 (a dequantize-then-f32 forward pass).

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use kiln_nlp::chat::ChatMessage;
use kiln_nlp::generation::GenerationConfig;
use kiln_nlp::generation::{Engine, TextGenerator};
use kiln_nlp::gguf::Activations;
use kiln_nlp::models::Precision;
use serde_json::json;

/// Continue a prompt with a pretrained decoder.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// The model folder (config.json, model.safetensors, tokenizer.json), or a GGUF file.
    #[arg(long, value_name = "DIR|FILE.gguf")]
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
    #[arg(long, value_enum, default_value_t = EngineArg::Auto)]
    engine: EngineArg,
    /// The packed path's weights: f32, or bf16 (exact for a bf16 checkpoint). A GGUF
    /// file's weights keep their block types.
    #[arg(long, value_enum, default_value_t = WeightPrecision::F32)]
    precision: WeightPrecision,
    /// Threads of the packed path (default: every core, or RAYON_NUM_THREADS).
    #[arg(long, value_parser = common::positive)]
    threads: Option<usize>,
    /// A GGUF file's products: `f32` activations, or `int8` (llama.cpp's arithmetic).
    #[arg(long, value_enum, default_value_t = ActivationsArg::F32)]
    activations: ActivationsArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ActivationsArg {
    F32,
    Int8,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum EngineArg {
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

fn run(args: &Args) -> Result<(), BoxError> {
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| format!("--threads {threads}: {e}"))?;
    }
    let device = args.common.device()?;
    let load = Instant::now();
    let engine = match args.engine {
        EngineArg::Auto => Engine::Auto,
        EngineArg::Packed => Engine::Packed,
        EngineArg::Burn => Engine::Burn,
    };
    let precision = match args.precision {
        WeightPrecision::F32 => Precision::F32,
        WeightPrecision::Bf16 => Precision::Bf16,
    };
    let activations = match args.activations {
        ActivationsArg::F32 => Activations::F32,
        ActivationsArg::Int8 => Activations::Int8,
    };
    let model =
        TextGenerator::load(&args.model, &device, engine, precision)?.with_activations(activations);
    let load_seconds = load.elapsed().as_secs_f64();
    let prompt = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", &args.prompt));
        model
            .encode_chat(&messages)
            .map_err(|e| format!("--chat: {}: {e}", args.model.display()))?
    } else {
        model.encode(&args.prompt)?
    };
    if prompt.is_empty() {
        return Err("--prompt: the text encodes to no tokens".into());
    }
    let mut config = GenerationConfig::sampling(args.max_new_tokens, args.temperature, args.seed)
        .with_repetition_penalty(args.repetition_penalty)
        .with_stop_strings(args.stops.clone());
    config.top_k = args.top_k;
    config.top_p = args.top_p;
    config.validate()?;
    let start = Instant::now();
    let mut first: Option<f64> = None;
    let mut last = 0f64;
    let mut shown = String::new();
    let mut streamed: Vec<u32> = Vec::new();
    let out = model.generate(&prompt, &config, |id| {
        let now = start.elapsed().as_secs_f64();
        first.get_or_insert(now);
        last = now;
        if args.stream && !args.common.quiet {
            streamed.push(id);
            let text = model.decode(&streamed).unwrap_or_default();
            if let Some(new) = text.strip_prefix(shown.as_str()) {
                print!("{new}");
                let _ = std::io::stdout().flush();
            }
            shown = text;
        }
        true
    })?;
    if args.stream && !args.common.quiet {
        println!();
    }
    let text = model.decode(&out.ids)?;
    let first = first.unwrap_or(0.0);
    let prefill = prompt.len() as f64 / first.max(1e-9);
    let decode_rate = (out.ids.len().saturating_sub(1)) as f64 / (last - first).max(1e-9);
    if !args.stream {
        let shown = if args.chat { "" } else { args.prompt.as_str() };
        args.common.say(format!("{shown}{text}"));
    }
    let engine = model.engine();
    args.common.say(format!(
        "{} prompt tokens, {} new ({:?}): prefill {prefill:.0} tokens/s, decode {decode_rate:.1} \
         tokens/s (model load {load_seconds:.2} s, engine {engine})",
        prompt.len(),
        out.ids.len(),
        out.stop
    ));
    args.common.write_report(&json!({
        "model_type": model.model_type(),
        "engine": engine,
        "prompt_tokens": prompt.len(),
        "generated_ids": out.ids,
        "generated_text": text,
        "stop": format!("{:?}", out.stop),
        "prefill_tokens_per_second": prefill,
        "decode_tokens_per_second": decode_rate,
        "load_seconds": load_seconds,
        "weights_bytes": model.weight_bytes(),
        "peak_rss_mib": common::peak_rss_mib(),
    }))?;
    Ok(())
}
