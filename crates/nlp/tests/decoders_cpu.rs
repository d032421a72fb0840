//! [`LlamaCpu`], the packed CPU path of the Llama family, against transformers (the fixtures
//! of `tests/fixtures/decoders/`, made by `make_fixtures.py`) and against the Burn model.

mod common;

use std::path::PathBuf;

use kiln_nlp::generation::{GenerationConfig, StopReason};
use kiln_nlp::models::{Llama, LlamaCpu, LlamaCpuCache, Precision};

/// The Llama-family fixtures: GQA with an untied head and llama3 rope; Qwen2 with q/k/v
/// biases and linear rope; the sharded Llama; the bf16 Qwen2.
const MODELS: [&str; 4] = [
    "llama-tiny",
    "qwen2-tiny",
    "llama-tiny-sharded",
    "qwen2-tiny-bf16",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/decoders")
        .join(name)
}

fn reference(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

/// Each row of transformers' padded batch, run alone (its real tokens) in one pass: logits
/// within 1e-4 of transformers' at every position. The bf16 model kept in bf16 gives the f32
/// packing's logits within 1e-5 (the same weights, summed in another order), from half the
/// bytes.
#[test]
fn logits_match_transformers() {
    for name in MODELS {
        let (_, model) = LlamaCpu::from_folder(fixture(name), Precision::F32).unwrap();
        let r = reference(name);
        let batch = &r["batch"];
        let v = model.vocab_size();
        let mut largest = 0f32;
        for (row, (input, mask)) in batch["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(batch["attention_mask"].as_array().unwrap())
            .enumerate()
        {
            let (input, mask) = (ids(input), ids(mask));
            let positions: Vec<usize> = (0..input.len()).filter(|&p| mask[p] == 1).collect();
            let tokens: Vec<u32> = positions.iter().map(|&p| input[p]).collect();
            let got = model
                .forward(&mut LlamaCpuCache::new(), &tokens, true)
                .unwrap();
            assert_eq!(got.len(), tokens.len() * v);
            for (i, &p) in positions.iter().enumerate() {
                let want: Vec<f32> = batch["logits"][row][p]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                largest = largest.max(worst(&got[i * v..(i + 1) * v], &want));
            }
        }
        assert!(largest < 1e-4, "{name}: largest difference {largest}");
        eprintln!("{name}: largest difference from transformers {largest:e}");
    }
    let tokens = [5u32, 17, 3, 80, 41, 9, 66, 12];
    let (_, f32_model) = LlamaCpu::from_folder(fixture("qwen2-tiny-bf16"), Precision::F32).unwrap();
    let (_, bf16_model) =
        LlamaCpu::from_folder(fixture("qwen2-tiny-bf16"), Precision::Bf16).unwrap();
    assert!(bf16_model.weight_bytes() * 2 == f32_model.weight_bytes());
    for step in [false, true] {
        let run = |m: &LlamaCpu| {
            let mut cache = LlamaCpuCache::new();
            if step {
                // One token at a time: the streamed products.
                tokens
                    .iter()
                    .flat_map(|&t| m.forward(&mut cache, &[t], true).unwrap())
                    .collect::<Vec<f32>>()
            } else {
                m.forward(&mut cache, &tokens, true).unwrap()
            }
        };
        let d = worst(&run(&f32_model), &run(&bf16_model));
        assert!(d < 1e-5, "step by step: {step}: {d}");
    }
}

/// Prefill then one token at a time equals one pass over the whole sequence within 1e-5, and
/// both equal the Burn model's logits within 1e-5.
#[test]
fn cached_steps_equal_recomputation_and_the_burn_model() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let seq: Vec<u32> = vec![5, 17, 3, 80, 41, 9, 66, 12, 30, 2];
    for name in MODELS {
        let (_, burn_model) = Llama::from_folder(fixture(name), &device).unwrap();
        let model = LlamaCpu::from_llama(&burn_model, Precision::F32).unwrap();
        let full = model
            .forward(&mut LlamaCpuCache::new(), &seq, true)
            .unwrap();
        let mut cache = LlamaCpuCache::new();
        let mut stepped = model.forward(&mut cache, &seq[..6], true).unwrap();
        for &id in &seq[6..] {
            stepped.extend(model.forward(&mut cache, &[id], true).unwrap());
        }
        assert_eq!(cache.len(), seq.len());
        let d = worst(&full, &stepped);
        assert!(d < 1e-5, "{name}: cached steps differ by {d}");
        let want: Vec<f32> = burn_model
            .forward_cached(
                std::slice::from_ref(&seq),
                &[vec![1; seq.len()]],
                &mut kiln_nlp::generation::KvCache::new(),
                &device,
            )
            .unwrap()
            .into_data()
            .iter::<f32>()
            .collect();
        let d = worst(&full, &want);
        assert!(d < 1e-5, "{name}: the Burn model's logits differ by {d}");
    }
}

/// 32 greedy tokens identical to transformers' `generate`.
#[test]
fn greedy_generation_is_token_identical_to_transformers() {
    for name in MODELS {
        for precision in [Precision::F32, Precision::Bf16] {
            if precision == Precision::Bf16 && !name.ends_with("bf16") {
                continue;
            }
            let (_, model) = LlamaCpu::from_folder(fixture(name), precision).unwrap();
            let r = reference(name);
            let (prompt, want) = (ids(&r["greedy"]["prompt"]), ids(&r["greedy"]["generated"]));
            let mut streamed = Vec::new();
            let out = model
                .generate(
                    &prompt,
                    &GenerationConfig::greedy(32),
                    &|_| String::new(),
                    |id| {
                        streamed.push(id);
                        true
                    },
                )
                .unwrap();
            assert_eq!(out.ids, want, "{name} {precision:?}");
            assert_eq!(streamed, want);
            assert_eq!(out.stop, StopReason::MaxNewTokens);
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let (_, model) = LlamaCpu::from_folder(fixture("llama-tiny"), Precision::F32).unwrap();
    let none = |_: &[u32]| String::new();
    let e = |p: &[u32], c: GenerationConfig| {
        model
            .generate(p, &c, &none, |_| true)
            .unwrap_err()
            .to_string()
    };
    let max = model.max_positions();
    assert!(e(&[], GenerationConfig::greedy(2)).contains("empty"));
    assert!(
        e(&vec![1; max + 1], GenerationConfig::greedy(2)).contains(&format!("{} tokens", max + 1))
    );
    assert!(e(&[1], GenerationConfig::greedy(0)).contains("max_new_tokens"));
    let bad = model.vocab_size() as u32;
    assert!(e(&[bad], GenerationConfig::greedy(2)).contains(&format!("token id {bad}")));
    // A cache filled by one model given to a model of another shape.
    let (_, other) = LlamaCpu::from_folder(fixture("qwen2-tiny"), Precision::F32).unwrap();
    let mut cache = LlamaCpuCache::new();
    other.forward(&mut cache, &[1, 2], false).unwrap();
    let err = model
        .forward(&mut cache, &[3], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("a cache of"), "{err}");
    // Past the context: the cache is left as it was.
    let mut cache = LlamaCpuCache::new();
    model.forward(&mut cache, &vec![1; max], false).unwrap();
    let err = model
        .forward(&mut cache, &[1], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("context"), "{err}");
    assert_eq!(cache.len(), max);
    // Generation stops at the context instead of failing.
    let out = model
        .generate(
            &vec![1; max - 3],
            &GenerationConfig::greedy(10),
            &none,
            |_| true,
        )
        .unwrap();
    assert_eq!(out.ids.len(), 3);
}

/// Prompts of 1 to 19 tokens with ids below `vocab`.
fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    [5usize, 1, 12, 7, 19, 2]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            (0..len)
                .map(|j| ((i * 31 + j * 17 + 3) % vocab) as u32)
                .collect()
        })
        .collect()
}

/// Continuous batching on the packed path (f32; the bf16 Qwen2 in bf16): six prompts
/// together, joining at different steps, chunked prefill, give each prompt the tokens it gets
/// alone, and alone is `LlamaCpu::generate`.
#[test]
fn a_batch_is_token_identical_to_each_sequence_alone() {
    for (name, precision) in [
        ("llama-tiny", Precision::F32),
        ("qwen2-tiny", Precision::F32),
        ("qwen2-tiny-bf16", Precision::Bf16),
    ] {
        let (_, model) = LlamaCpu::from_folder(fixture(name), precision).unwrap();
        common::batching::assert_batch_equals_alone(&model, &prompts(model.vocab_size()), 12);
    }
}
