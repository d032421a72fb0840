//! Decoder inference speed: a randomly initialised Llama with SmolLM2-135M's shapes (576
//! hidden, 30 layers, 9 heads / 3 KV heads, 1,536 intermediate, 49,152 vocabulary, tied
//! embeddings) through [`LlamaCpu`], batch 1, a 128-token prompt, then 128 new tokens by
//! greedy generation. The transformers peer is `benches/peers/smollm2_shape_transformers.py`
//! (same case names).
//!
//! - `smollm2_shape_prefill_128`: one pass over the prompt with a fresh cache.
//! - `smollm2_shape_decode_128`: generation's time after its first token (the prefill's),
//!   per decoded token; `extra` holds the bytes of weights one token reads, the memory
//!   bandwidth measured in the same process (a product with a 1 GiB matrix, far past the
//!   cache), and the limit they give (bandwidth / bytes per token).
//!
//! Both run with f32 weights (`kiln f32`) and with weights kept in bfloat16 (`kiln bf16`:
//! what a bf16 checkpoint such as SmolLM2's gives exactly, from half the bytes). Tiny runs
//! (smoke tests) use a 2-layer model of width 32.

use std::time::Instant;

use kiln_core::kernels::gemv::{Start, Weights, matvec};
use kiln_dev::bench::{BenchResult, Bencher};
use kiln_nlp::generation::GenerationConfig;
use kiln_nlp::models::{LlamaConfig, LlamaCpu, LlamaCpuCache, Precision};

const SMOLLM2: &str = r#"{"model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
    "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0, "tie_word_embeddings": true}"#;

const TINY: &str = r#"{"model_type": "llama", "vocab_size": 300, "hidden_size": 32,
    "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": true}"#;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes per second of one streamed matrix-vector product over a 1 GiB f32 matrix.
fn bandwidth() -> f64 {
    let (rows, cols) = (1 << 15, 1 << 13);
    let w = vec![0.5f32; rows * cols];
    let x = vec![1f32; cols];
    let mut y = vec![0f32; rows];
    let mut best = f64::MAX;
    for _ in 0..6 {
        let t = Instant::now();
        matvec(Weights::F32(&w), [rows, cols], &x, 1, &mut y, Start::Zero);
        best = best.min(t.elapsed().as_secs_f64());
    }
    assert!(y.iter().all(|&v| v == 0.5 * cols as f32));
    (rows * cols * 4) as f64 / best
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut bench = Bencher::from_args();
    let tiny = bench.tiny();
    let names = ["smollm2_shape_prefill_128", "smollm2_shape_decode_128"];
    let all = [
        names[0],
        names[1],
        "gguf_prefill_128",
        "gguf_decode_128",
        "gguf_decode_batch16",
    ];
    if !all.iter().any(|n| bench.enabled(n)) {
        bench.finish()?;
        return Ok(());
    }
    let device = kiln_core::backend::device("cpu")?;
    let config: LlamaConfig = serde_json::from_str(if tiny { TINY } else { SMOLLM2 })?;
    let (prompt_len, new) = if tiny { (16, 8) } else { (128, 128) };
    // The random model only when its cases run (building it takes seconds).
    let packed = if names.iter().any(|n| bench.enabled(n)) {
        let model = config.init(&device)?;
        vec![
            ("kiln f32", LlamaCpu::from_llama(&model, Precision::F32)?),
            ("kiln bf16", LlamaCpu::from_llama(&model, Precision::Bf16)?),
        ]
    } else {
        Vec::new()
    };
    let bytes_per_second = if tiny { 0.0 } else { bandwidth() };
    // A fixed pseudo-random prompt.
    let prompt: Vec<u32> = (0..prompt_len as u64)
        .map(|i| ((i * 2654435761 + 12345) % config.vocab_size as u64) as u32)
        .collect();
    for (label, cpu) in &packed {
        let backend = format!("{label}{}", if tiny { " (tiny)" } else { "" });
        measure(
            &mut bench,
            names,
            backend,
            cpu,
            &prompt,
            new,
            bytes_per_second,
        )?;
    }
    // The same case on a GGUF file (KILN_GGUF, else the shared SmolLM2 Q4_1 file under
    // KILN_MODELS) beside llama.cpp (benches/peers/gguf_llama_cpp.py); skipped without one.
    let gguf = ["gguf_prefill_128", "gguf_decode_128"];
    let batch = "gguf_decode_batch16";
    if !tiny && (gguf.iter().any(|n| bench.enabled(n)) || bench.enabled(batch)) {
        if let Some(path) = gguf_path() {
            let file = kiln_nlp::gguf::GgufFile::open(&path)?;
            let (config, cpu) = LlamaCpu::from_gguf(&file)?;
            // KILN_ACTIVATIONS=int8: llama.cpp's arithmetic (8-bit activations).
            let int8 = std::env::var("KILN_ACTIVATIONS").is_ok_and(|v| v == "int8");
            let cpu = cpu.with_activations(if int8 {
                kiln_nlp::gguf::Activations::Int8
            } else {
                kiln_nlp::gguf::Activations::F32
            });
            let prompt: Vec<u32> = (0..128u64)
                .map(|i| ((i * 2654435761 + 12345) % config.vocab as u64) as u32)
                .collect();
            let types: Vec<&str> = cpu.block_types().iter().map(|t| t.name()).collect();
            let backend = format!(
                "kiln gguf {}{}",
                types.join("+"),
                if int8 { " int8" } else { "" }
            );
            if gguf.iter().any(|n| bench.enabled(n)) {
                measure(
                    &mut bench,
                    gguf,
                    backend.clone(),
                    &cpu,
                    &prompt,
                    128,
                    bytes_per_second,
                )?;
            }
            if bench.enabled(batch) {
                measure_batch(&mut bench, batch, backend, &cpu, &prompt, 16, 64)?;
            }
        } else {
            eprintln!("gguf: no GGUF file (set KILN_GGUF or KILN_MODELS); skipped");
        }
    }
    bench.finish()?;
    Ok(())
}

/// The GGUF file of the `gguf_*` cases, if any.
fn gguf_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("KILN_GGUF") {
        return Some(p.into());
    }
    let p = std::path::PathBuf::from(std::env::var_os("KILN_MODELS")?)
        .join("smollm2-135m-instruct-gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.is_file().then_some(p)
}

/// Prefill and decode of `prompt` then `new` greedy tokens on `cpu`, recorded as `names`.
fn measure(
    bench: &mut Bencher,
    names: [&str; 2],
    backend: String,
    cpu: &LlamaCpu,
    prompt: &[u32],
    new: usize,
    bytes_per_second: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let tiny = bench.tiny();
    let prompt_len = prompt.len();
    let generation = GenerationConfig::greedy(new);
    let none = |_: &[u32]| String::new();
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    let (want_prefill, want_decode) = (bench.enabled(names[0]), bench.enabled(names[1]));
    let start = Instant::now();
    let mut round = 0;
    while round < 2 || (!tiny && (round < 4 || start.elapsed() < bench.budget())) {
        let p = if want_prefill || round == 0 {
            let t = Instant::now();
            cpu.forward(&mut LlamaCpuCache::new(), prompt, false)?;
            t.elapsed().as_secs_f64()
        } else {
            0.0
        };
        let mut per_token = 0.0;
        if want_decode {
            let mut first = None;
            let t = Instant::now();
            let out = cpu.generate(prompt, &generation, &none, |_| {
                first.get_or_insert_with(Instant::now);
                true
            })?;
            let end = Instant::now();
            assert_eq!(
                out.ids.len(),
                new,
                "generation stopped early: {:?}",
                out.stop
            );
            per_token = end.duration_since(first.unwrap_or(t)).as_secs_f64() / (new - 1) as f64;
        }
        // The first round warms the caches and the thread pool.
        if round > 0 {
            prefill.push(p);
            decode.push(per_token);
        }
        round += 1;
    }
    let (p, d) = (median(prefill.clone()), median(decode.clone()));
    let range = |v: &[f64]| {
        serde_json::json!([
            v.iter().copied().fold(f64::MAX, f64::min),
            v.iter().copied().fold(0f64, f64::max)
        ])
    };
    let mut extra = serde_json::Map::new();
    extra.insert("range_secs".into(), range(&prefill));
    bench.record(BenchResult {
        name: names[0].into(),
        backend: backend.clone(),
        iterations: prefill.len(),
        median_secs: p,
        throughput: Some(prompt_len as f64 / p),
        unit: Some("tokens".into()),
        tiny,
        extra,
    });
    let weight_bytes = cpu.weight_bytes() as f64;
    let mut extra = serde_json::Map::new();
    extra.insert("range_secs_per_token".into(), range(&decode));
    extra.insert("weight_bytes_per_token".into(), weight_bytes.into());
    if bytes_per_second > 0.0 {
        extra.insert("bandwidth_gb_s".into(), (bytes_per_second / 1e9).into());
        extra.insert(
            "limit_tokens_per_s".into(),
            (bytes_per_second / weight_bytes).into(),
        );
    }
    bench.record(BenchResult {
        name: names[1].into(),
        backend,
        iterations: decode.len(),
        median_secs: d * new as f64,
        throughput: Some(1.0 / d),
        unit: Some("tokens".into()),
        tiny,
        extra,
    });
    Ok(())
}

/// `sequences` sequences decoding together ([`LlamaCpu::forward_batch`], continuous
/// batching's step): each prompt a rotation of `prompt`, read alone (not timed), then `steps`
/// greedy steps of all of them; new tokens per second over all sequences.
fn measure_batch(
    bench: &mut Bencher,
    name: &str,
    backend: String,
    cpu: &LlamaCpu,
    prompt: &[u32],
    sequences: usize,
    steps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    };
    let mut rounds = Vec::new();
    let start = Instant::now();
    while rounds.len() < 4 || (rounds.len() < 12 && start.elapsed() < bench.budget()) {
        let mut caches: Vec<LlamaCpuCache> = (0..sequences).map(|_| LlamaCpuCache::new()).collect();
        let mut tokens = Vec::new();
        for (i, cache) in caches.iter_mut().enumerate() {
            let mut p = prompt.to_vec();
            p.rotate_left(i * 7 % prompt.len());
            tokens.push(argmax(&cpu.forward(cache, &p, false)?));
        }
        let t = Instant::now();
        for _ in 0..steps {
            let mut refs: Vec<&mut LlamaCpuCache> = caches.iter_mut().collect();
            let logits = cpu.forward_batch(&mut refs, &tokens)?;
            tokens = logits.chunks_exact(cpu.vocab_size()).map(argmax).collect();
        }
        rounds.push(t.elapsed().as_secs_f64());
    }
    // The first round warms the caches and the thread pool.
    let timed = rounds[1..].to_vec();
    let secs = median(timed.clone());
    let mut extra = serde_json::Map::new();
    extra.insert("sequences".into(), sequences.into());
    extra.insert("steps".into(), steps.into());
    extra.insert(
        "range_secs".into(),
        serde_json::json!([
            timed.iter().copied().fold(f64::MAX, f64::min),
            timed.iter().copied().fold(0f64, f64::max)
        ]),
    );
    bench.record(BenchResult {
        name: name.into(),
        backend,
        iterations: timed.len(),
        median_secs: secs,
        throughput: Some((sequences * steps) as f64 / secs),
        unit: Some("tokens".into()),
        tiny: bench.tiny(),
        extra,
    });
    Ok(())
}
