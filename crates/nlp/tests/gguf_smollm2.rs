//! The shared SmolLM2-135M-Instruct Q4_1 GGUF file (needs `KILN_MODELS`) against the
//! references of `fixtures/gguf/make_gguf_reference.py`: a dequantize-then-f32 forward pass
//! in numpy (the arithmetic of Kiln's GGUF path: weights dequantized exactly as gguf-py
//! does, activations f32), and llama.cpp's tokenizer.

mod common;

use std::path::PathBuf;

use kiln_nlp::chat::ChatMessage;
use kiln_nlp::generation::GenerationConfig;
use kiln_nlp::generation::{Engine, TextGenerator};
use kiln_nlp::gguf::{Activations, GgufFile};
use kiln_nlp::models::{LlamaCpu, LlamaCpuCache, Precision};
use kiln_nlp::tokenizer::Tokenizer;

fn model_path() -> PathBuf {
    let root = std::env::var_os("KILN_MODELS").expect("KILN_MODELS must point at the models");
    PathBuf::from(root)
        .join("smollm2-135m-instruct-gguf")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("the GGUF fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// The worst relative error (`|got - want| / (1 + |want|)`) of the model's logits at the
/// first 8 positions of prompt `p` against the fixture's numpy f32 logits (none without them).
fn worst_logit_error(model: &LlamaCpu, p: &serde_json::Value) -> f32 {
    let Some(positions) = p["logits"].as_array() else {
        return 0.0;
    };
    let prompt = ids(&p["prompt_ids"]);
    let logits = model
        .forward(&mut LlamaCpuCache::new(), &prompt[..8], true)
        .expect("forward");
    let vocab = model.vocab_size();
    let mut worst = 0f32;
    for (pos, expected) in positions.iter().enumerate() {
        let at = ids(&expected["ids"]);
        let values = expected["logits"].as_array().expect("logits");
        for (&id, v) in at.iter().zip(values) {
            let want = v.as_f64().expect("a logit") as f32;
            let got = logits[pos * vocab + id as usize];
            worst = worst.max((got - want).abs() / (1.0 + want.abs()));
        }
    }
    worst
}

/// 16 greedy tokens after `prompt`, no end-of-sequence ids (the references forced 16).
fn greedy16(model: &LlamaCpu, prompt: &[u32]) -> kiln_nlp::generation::Generation {
    model
        .generate(
            prompt,
            &GenerationConfig::greedy(16),
            &|_| String::new(),
            |_| true,
        )
        .expect("generation")
}

/// Logits within `LOGIT_TOLERANCE * (1 + |reference|)` of numpy's f32 pass: the sums run in
/// another order (blocks of 16 lanes here, BLAS's there) over 30 layers.
const LOGIT_TOLERANCE: f32 = 1e-4;

#[test]
#[ignore = "needs KILN_MODELS"]
fn q4_1_greedy_tokens_and_logits_match_the_f32_reference() {
    let file = GgufFile::open(model_path()).expect("the GGUF file");
    let (config, model) = LlamaCpu::from_gguf(&file).expect("the model");
    assert_eq!(
        (
            config.layers,
            config.hidden,
            config.heads,
            config.kv_heads,
            config.vocab
        ),
        (30, 576, 9, 3, 49152)
    );
    assert!(config.tied);
    assert_eq!(model.precision(), Precision::F32);
    let reference = fixture("smollm2_reference.json");
    let prompts = reference["prompts"].as_array().expect("prompts");
    assert_eq!(prompts.len(), 10);
    let mut equal = 0;
    let mut worst = 0f32;
    for (n, p) in prompts.iter().enumerate() {
        let prompt = ids(&p["prompt_ids"]);
        let err = worst_logit_error(&model, p);
        worst = worst.max(err);
        assert!(
            err <= LOGIT_TOLERANCE,
            "prompt {n}: logits {err} from numpy's (relative to 1 + |logit|)"
        );
        // No end-of-sequence ids: the reference forced 16 tokens.
        let out = greedy16(&model, &prompt);
        let want = ids(&p["greedy_f32"]);
        if out.ids == want {
            equal += 1;
        } else {
            eprintln!("prompt {n}: {:?}\n   numpy: {want:?}", out.ids);
        }
    }
    eprintln!("greedy: {equal}/10 equal to numpy's; worst logit error {worst:.2e}");
    assert!(
        equal >= 8,
        "{equal} of 10 prompts' 16 greedy tokens equal the reference's"
    );
}

/// With 8-bit activations (llama.cpp's arithmetic for the weights' products) the greedy
/// continuations follow llama.cpp's own (`greedy_llama_cpp`: xllamacpp's server, the same
/// prompt ids, up to 16 tokens, stopping at its end-of-sequence token) more often than the
/// f32 pass does (5 of 10 prompts against 4: on the capital-of-France prompt both answer with
/// llama.cpp's unlikely `[` where numpy's f32 pass says `The`), but not on 8 of 10: llama.cpp
/// also rounds the attention's operands and its key/value cache to f16, which Kiln does not
/// reproduce. The logits stay within a stated distance of the f32 pass's (the activations'
/// 8-bit rounding moves the first positions', where a few values dwarf the rest of their
/// block, by up to 0.39 of `1 + |logit|`).
#[test]
#[ignore = "needs KILN_MODELS"]
fn q4_1_int8_greedy_tokens_follow_llama_cpp() {
    let file = GgufFile::open(model_path()).expect("the GGUF file");
    let (_, model) = LlamaCpu::from_gguf(&file).expect("the model");
    let model = model.with_activations(Activations::Int8);
    let reference = fixture("smollm2_reference.json");
    let prompts = reference["prompts"].as_array().expect("prompts");
    let (mut equal, mut f32_equal, mut worst) = (0, 0, 0f32);
    for (n, p) in prompts.iter().enumerate() {
        let prompt = ids(&p["prompt_ids"]);
        worst = worst.max(worst_logit_error(&model, p));
        let out = greedy16(&model, &prompt);
        // llama.cpp's server stopped at its end-of-sequence token: compare that many.
        let want = ids(&p["greedy_llama_cpp"]);
        let f32_ids = ids(&p["greedy_f32"]);
        if out.ids[..want.len()] == want[..] {
            equal += 1;
        } else {
            eprintln!("prompt {n}: {:?}\n   llama.cpp: {want:?}", out.ids);
        }
        f32_equal += usize::from(f32_ids[..want.len()] == want[..]);
    }
    eprintln!(
        "int8 greedy: {equal}/10 equal to llama.cpp's (the f32 pass: {f32_equal}/10); \
         logits vs the f32 pass {worst:.2e}"
    );
    assert!(
        worst < INT8_LOGIT_DRIFT,
        "int8 logits {worst} from the f32 pass's"
    );
    assert!(
        equal > f32_equal && equal >= 5,
        "{equal} of 10 prompts' greedy tokens equal llama.cpp's (f32: {f32_equal})"
    );
}

/// How far 8-bit activations may move the first positions' logits from the f32 pass
/// (relative to `1 + |logit|`; measured 0.39).
const INT8_LOGIT_DRIFT: f32 = 0.5;

#[test]
#[ignore = "needs KILN_MODELS"]
fn tokenizer_ids_equal_llama_cpp() {
    let file = GgufFile::open(model_path()).expect("the GGUF file");
    let tokenizer = kiln_nlp::gguf::tokenizer::tokenizer(&file).expect("the tokenizer");
    let cases = fixture("smollm2_tokens.json");
    let cases = cases["cases"].as_array().expect("cases");
    assert!(cases.len() >= 50);
    let mut wrong = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let got = tokenizer.encode_plain(text).expect("encode").ids;
        if got != ids(&case["ids"]) {
            wrong.push(format!(
                "{text:?}: {got:?} vs llama.cpp {:?}",
                ids(&case["ids"])
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    // Decoding gives the text back (special tokens skipped).
    let ids = tokenizer
        .encode_plain("你好，世界 🎉 café")
        .expect("encode")
        .ids;
    assert_eq!(
        tokenizer.decode(&ids).expect("decode"),
        "你好，世界 🎉 café"
    );
}

#[test]
#[ignore = "needs KILN_MODELS"]
fn text_generator_renders_the_files_chat_template_and_answers() {
    let device = kiln_core::backend::device("cpu").expect("cpu");
    let generator =
        TextGenerator::load(model_path(), &device, Engine::Auto, Precision::F32).expect("load");
    assert_eq!(generator.model_type(), "llama");
    assert_eq!(generator.engine(), "gguf (Q4_1, Q8_0)");
    assert_eq!(generator.eos_ids(), [2]);
    let reference = fixture("smollm2_reference.json");
    let first = &reference["prompts"][0];
    let messages = vec![ChatMessage::new(
        "user",
        first["messages"][0]["content"].as_str().expect("content"),
    )];
    let template = generator.chat_template().expect("the file's chat template");
    assert_eq!(
        template.render(&messages, true).expect("render"),
        first["text"].as_str().expect("text")
    );
    let prompt = generator.encode_chat(&messages).expect("encode");
    assert_eq!(prompt, ids(&first["prompt_ids"]));
    let out = generator
        .generate(&prompt, &GenerationConfig::greedy(32), |_| true)
        .expect("generate");
    let answer = generator.decode(&out.ids).expect("decode");
    assert!(answer.contains("Paris"), "{answer:?}");
    assert_eq!(out.ids.last(), Some(&2), "stops at <|im_end|>: {answer:?}");
}

/// Continuous batching on the real file: eight chat prompts decoding together (joining at
/// different steps, prompts read in chunks) give each the tokens it gets alone, and alone is
/// `LlamaCpu::generate`.
#[test]
#[ignore = "needs KILN_MODELS"]
fn chat_prompts_in_a_batch_get_the_tokens_they_get_alone() {
    let generator = TextGenerator::load(
        model_path(),
        &kiln_core::backend::device("cpu").expect("cpu"),
        Engine::Auto,
        Precision::F32,
    )
    .expect("the GGUF file");
    let questions = [
        "What is the capital of France?",
        "Give me three tips for staying healthy.",
        "Write a haiku about the sea.",
        "Explain what a neural network is in one sentence.",
        "Name a prime number larger than ten.",
        "Translate 'good morning' into Spanish.",
        "Why is the sky blue?",
        "Write a Python function that adds two numbers.",
    ];
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| {
            generator
                .encode_chat(&[ChatMessage::new("user", *q)])
                .expect("the template")
        })
        .collect();
    let file = GgufFile::open(model_path()).expect("the GGUF file");
    let (_, model) = LlamaCpu::from_gguf(&file).expect("the model");
    common::batching::assert_batch_equals_alone(&model, &prompts, 16);
    // 8-bit activations: the Q4_1 and Q8_0 matrices interleaved into tiles.
    let model = model.with_activations(Activations::Int8);
    common::batching::assert_batch_equals_alone(&model, &prompts, 16);
}
