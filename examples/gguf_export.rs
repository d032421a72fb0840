//! Writing a Llama-family decoder as a GGUF file that llama.cpp, ollama and Kiln run: from a
//! Hugging Face folder (safetensors, byte-level BPE `tokenizer.json`) or from a GGUF file
//! (dequantized), optionally with LoRA adapters trained in Kiln merged into the weights,
//! at F32, F16, BF16, Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, Q6_K, Q4_K or llama.cpp's Q4_K_M mix
//! (quantized byte for byte as ggml's reference quantizers do).
//!
//! ```sh
//! cargo run --release --example gguf_export --features nlp -- \
//!     --model ../shared/models/smollm2-135m-instruct-gguf/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --type q8_0 --out /tmp/SmolLM2-135M-Instruct.Q8_0.gguf
//! cargo run --release --example gguf_export --features nlp -- --model MODEL_DIR \
//!     --adapters adapters.safetensors --lora-rank 8 --lora-alpha 16 --type q4_0 --out tuned.gguf
//! ```
//!
//! `--random` writes a randomly initialised model of the folder's `config.json` (with its
//! tokenizer padded to the config's vocabulary): files of a real model's shapes for
//! benchmarks. `--pre NAME` names llama.cpp's pre-tokenizer when the folder's `tokenizer.json` is not one
//! of the forms recognised (GPT-2, SmolLM, Llama 3, Qwen2). The report (`--report`) has
//! `bytes`, `tensors` (by type), `seconds` and `peak_rss_mib`.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use kiln_core::kernels::quant::BlockType;
use kiln_nlp::gguf::{GgufFile, GgufFileType, GgufVocab};
use kiln_nlp::models::{Llama, LlamaConfig, LoraConfig};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TypeArg {
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q5_1")]
    Q5_1,
    #[value(name = "q5_0")]
    Q5_0,
    #[value(name = "q4_1")]
    Q4_1,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q6_k")]
    Q6K,
    #[value(name = "q4_k")]
    Q4K,
    /// llama.cpp's mix: Q4_K, Q6_K for the head and some value / down projections.
    #[value(name = "q4_k_m")]
    Q4KM,
}

impl TypeArg {
    fn file_type(self) -> GgufFileType {
        GgufFileType::Uniform(match self {
            TypeArg::Q4KM => return GgufFileType::Q4KM,
            TypeArg::Q6K => BlockType::Q6K,
            TypeArg::Q4K => BlockType::Q4K,
            TypeArg::F32 => BlockType::F32,
            TypeArg::F16 => BlockType::F16,
            TypeArg::Bf16 => BlockType::Bf16,
            TypeArg::Q8_0 => BlockType::Q8_0,
            TypeArg::Q5_1 => BlockType::Q5_1,
            TypeArg::Q5_0 => BlockType::Q5_0,
            TypeArg::Q4_1 => BlockType::Q4_1,
            TypeArg::Q4_0 => BlockType::Q4_0,
        })
    }
}

/// Write a decoder as a GGUF file.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// A Hugging Face folder (Llama, Mistral, Qwen2, SmolLM) or a GGUF file.
    #[arg(long, value_name = "DIR|FILE.gguf")]
    model: PathBuf,
    /// The file to write.
    #[arg(long, value_name = "FILE.gguf")]
    out: PathBuf,
    /// The matrices' type (norms and biases stay F32).
    #[arg(long = "type", value_enum, default_value = "q8_0")]
    ty: TypeArg,
    /// `general.name` (default: the output file's stem).
    #[arg(long)]
    name: Option<String>,
    /// llama.cpp's pre-tokenizer name, for a folder whose tokenizer.json is not recognised.
    #[arg(long)]
    pre: Option<String>,
    /// Initialise a model of the folder's config.json randomly instead of reading weights
    /// (files of a real model's shapes for load, memory and speed benchmarks; the folder's
    /// tokenizer is padded to the config's vocabulary).
    #[arg(long, conflicts_with = "adapters")]
    random: bool,
    /// LoRA adapters (safetensors, `Llama::save_adapters`) merged before writing.
    #[arg(long, value_name = "FILE", requires = "lora_rank")]
    adapters: Option<PathBuf>,
    /// The adapters' rank.
    #[arg(long, value_parser = common::positive, requires = "adapters")]
    lora_rank: Option<usize>,
    /// The adapters' alpha.
    #[arg(long, value_parser = common::positive_rate, default_value_t = 16.0)]
    lora_alpha: f64,
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if args
        .out
        .extension()
        .is_none_or(|e| !e.eq_ignore_ascii_case("gguf"))
    {
        return Err(format!("--out {}: expected a .gguf file name", args.out.display()).into());
    }
    if args.out == args.model {
        return Err("--out: the same file as --model".into());
    }
    let device = args.common.device()?;
    let start = Instant::now();
    let from_gguf = args.model.is_file();
    if args.random && from_gguf {
        return Err("--random: --model must be a folder with config.json".into());
    }
    let (config, mut model) = if from_gguf {
        Llama::from_gguf(&args.model, &device)?
    } else if args.random {
        let config = LlamaConfig::from_file(args.model.join("config.json"))?;
        let model = config.init(&device)?;
        (config, model)
    } else {
        Llama::from_folder(&args.model, &device)?
    };
    let vocab = if from_gguf {
        GgufVocab::from_gguf(&GgufFile::open(&args.model)?)
    } else {
        GgufVocab::from_folder(&args.model, args.pre.as_deref())?
    };
    if let (Some(path), Some(rank)) = (&args.adapters, args.lora_rank) {
        let lora = LoraConfig::new()
            .with_rank(rank)
            .with_alpha(args.lora_alpha);
        model = model
            .with_lora(&lora, &device)?
            .load_adapters(path)?
            .merge_lora();
    }
    let name = args.name.clone().unwrap_or_else(|| {
        args.out
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
    });
    let written = model.write_gguf(&config, &vocab, args.ty.file_type(), &name, &args.out)?;
    let seconds = start.elapsed().as_secs_f64();
    let tensors: serde_json::Map<String, serde_json::Value> = written
        .tensors
        .iter()
        .map(|(ty, n)| (ty.name().to_string(), json!(n)))
        .collect();
    args.common.say(format!(
        "wrote {} ({} bytes, tensors {}) in {seconds:.1} s",
        args.out.display(),
        written.bytes,
        serde_json::Value::Object(tensors.clone())
    ));
    args.common.write_report(&json!({
        "model": args.model,
        "out": args.out,
        "type": args.ty.file_type().name(),
        "bytes": written.bytes,
        "tensors": tensors,
        "seconds": seconds,
        "peak_rss_mib": common::peak_rss_mib(),
    }))?;
    Ok(())
}
