//! Decoder language models against transformers: the fixtures under
//! `tests/fixtures/decoders/` are randomly initialised Hugging Face folders with the logits and
//! greedy continuations transformers computed from them (`make_fixtures.py`).

use std::path::PathBuf;

use burn::prelude::*;
use kiln_nlp::generation::KvCache;
use kiln_nlp::generation::generate_cached;
use kiln_nlp::generation::{Generation, GenerationConfig, StopReason};
use kiln_nlp::models::{Gemma3, Gpt2, Llama};

/// The fixture models behind one interface: a forward pass that keeps its cache, and
/// generation.
enum Decoder {
    Gpt2(Gpt2, KvCache),
    Llama(Llama, KvCache),
    Gemma3(Gemma3, KvCache),
}

impl Decoder {
    fn open(name: &str, device: &Device) -> Self {
        if name.starts_with("gemma3") {
            Decoder::Gemma3(
                Gemma3::from_folder(fixture(name), device).unwrap().1,
                KvCache::new(),
            )
        } else if name.starts_with("gpt2") {
            Decoder::Gpt2(
                Gpt2::from_folder(fixture(name), device).unwrap().1,
                KvCache::new(),
            )
        } else {
            Decoder::Llama(
                Llama::from_folder(fixture(name), device).unwrap().1,
                KvCache::new(),
            )
        }
    }

    fn reset(&mut self) {
        match self {
            Decoder::Gpt2(_, c) => *c = KvCache::new(),
            Decoder::Llama(_, c) => *c = KvCache::new(),
            Decoder::Gemma3(_, c) => *c = KvCache::new(),
        }
    }

    fn forward(&mut self, ids: &[Vec<u32>], mask: &[Vec<u8>], device: &Device) -> Tensor<3> {
        match self {
            Decoder::Gpt2(m, c) => m.forward_cached(ids, mask, c, device).unwrap(),
            Decoder::Llama(m, c) => m.forward_cached(ids, mask, c, device).unwrap(),
            Decoder::Gemma3(m, c) => m.forward_cached(ids, mask, c, device).unwrap(),
        }
    }

    fn generate(
        &self,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
        device: &Device,
    ) -> Vec<Generation> {
        let none = |_: &[u32]| String::new();
        match self {
            Decoder::Gpt2(m, _) => generate_cached(m, prompts, config, device, &none, |_, _| true),
            Decoder::Llama(m, _) => generate_cached(m, prompts, config, device, &none, |_, _| true),
            Decoder::Gemma3(m, _) => {
                generate_cached(m, prompts, config, device, &none, |_, _| true)
            }
        }
        .unwrap()
    }
}

/// The fixtures: also the Llama model in four shards (`model.safetensors.index.json`), the
/// Qwen2 model stored in bfloat16 (computed in f32, against transformers' f32 pass over the
/// same rounded weights), and Gemma 3 with two sliding-window layers (window 4) and a global
/// one, a final soft-cap and a query scale other than the head size (and an attention
/// soft-cap in the config, which transformers' Gemma 3 does not apply, nor Kiln).
const MODELS: [&str; 6] = [
    "gpt2-tiny",
    "llama-tiny",
    "qwen2-tiny",
    "llama-tiny-sharded",
    "qwen2-tiny-bf16",
    "gemma3-tiny",
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

fn rows<T: TryFrom<u64>>(v: &serde_json::Value) -> Vec<Vec<T>>
where
    T::Error: std::fmt::Debug,
{
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| T::try_from(x.as_u64().unwrap()).unwrap())
                .collect()
        })
        .collect()
}

fn device() -> Device {
    kiln_core::backend::device("cpu").unwrap()
}

/// Logits of a left-padded batch equal transformers' at every real position within 1e-4, for
/// every fixture (GPT-2; Llama with grouped-query attention, untied head and llama3 rope
/// scaling; Qwen2 with q/k/v biases, one key/value head, tied head and linear scaling).
#[test]
fn logits_match_transformers_on_a_padded_batch() {
    let device = device();
    for name in MODELS {
        let mut model = Decoder::open(name, &device);
        let r = reference(name);
        let ids: Vec<Vec<u32>> = rows(&r["batch"]["input_ids"]);
        let mask: Vec<Vec<u8>> = rows(&r["batch"]["attention_mask"]);
        let logits = model.forward(&ids, &mask, &device);
        let [b, t, v] = logits.dims();
        let got: Vec<f32> = logits.into_data().iter::<f32>().collect();
        let want = r["batch"]["logits"].as_array().unwrap();
        let mut worst = 0f32;
        for row in 0..b {
            for pos in 0..t {
                if mask[row][pos] == 0 {
                    continue;
                }
                let w = want[row][pos].as_array().unwrap();
                for k in 0..v {
                    let d = (got[(row * t + pos) * v + k] - w[k].as_f64().unwrap() as f32).abs();
                    worst = worst.max(d);
                }
            }
        }
        assert!(worst < 1e-4, "{name}: largest difference {worst}");
    }
}

/// Decoding one position at a time through the cache gives the logits of recomputing the
/// whole sequence, within 1e-5.
#[test]
fn cached_decoding_equals_full_recomputation() {
    let device = device();
    for name in MODELS {
        let mut model = Decoder::open(name, &device);
        let seq: Vec<u32> = vec![5, 17, 3, 80, 41, 9, 66, 12, 30, 2];
        let full = model.forward(std::slice::from_ref(&seq), &[vec![1; seq.len()]], &device);
        let v = full.dims()[2];
        let full: Vec<f32> = full.into_data().iter::<f32>().collect();
        model.reset();
        let prefill = model.forward(&[seq[..4].to_vec()], &[vec![1; 4]], &device);
        let mut stepped: Vec<f32> = prefill.into_data().iter::<f32>().collect();
        for &id in &seq[4..] {
            let l = model.forward(&[vec![id]], &[vec![1]], &device);
            stepped.extend(l.into_data().iter::<f32>());
        }
        assert_eq!(stepped.len(), seq.len() * v);
        let worst = full
            .iter()
            .zip(&stepped)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{name}: largest difference {worst}");
    }
}

/// Greedy generation of 32 tokens is token-identical to transformers' `generate`, alone and
/// in a left-padded batch beside a longer prompt.
#[test]
fn greedy_generation_is_token_identical_to_transformers() {
    let device = device();
    for name in MODELS {
        let model = Decoder::open(name, &device);
        let r = reference(name);
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        };
        let (prompt, want) = (ids(&r["greedy"]["prompt"]), ids(&r["greedy"]["generated"]));
        let config = GenerationConfig::greedy(32);
        let out = model.generate(std::slice::from_ref(&prompt), &config, &device);
        assert_eq!(out[0].ids, want, "{name}");
        assert_eq!(out[0].stop, StopReason::MaxNewTokens);
        let longer: Vec<u32> = (0..11).map(|i| (i * 7 + 3) % 90).collect();
        let batch = model.generate(&[longer, prompt], &config, &device);
        assert_eq!(
            batch[1].ids, want,
            "{name}: left padding changed the continuation"
        );
    }
}

#[test]
fn gpt2_bad_folders_and_prompts_are_typed_errors() {
    let device = device();
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("gpt2-tiny").join(f), dir.path().join(f)).unwrap();
    }
    // A sharded index naming a missing shard.
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"wte.weight": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let e = Gpt2::from_folder(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model-00001-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("model.safetensors.index.json")).unwrap();
    // A config that is not GPT-2, and one with an unsupported field.
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"gpt2\"", "\"bloom\""),
    )
    .unwrap();
    let e = Gpt2::from_folder(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model_type 'bloom'"), "{e}");
    std::fs::write(
        dir.path().join("config.json"),
        config.replace("\"n_embd\": 32", "\"n_embd\": 48"),
    )
    .unwrap();
    // Wrong shapes: every tensor of width 32 is named with both shapes.
    let e = Gpt2::from_folder(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("wte.weight") && e.contains("expected shape"),
        "{e}"
    );
    std::fs::write(dir.path().join("config.json"), &config).unwrap();
    let (_, model) = Gpt2::from_folder(dir.path(), &device).unwrap();
    let none = |_: &[u32]| String::new();
    let e = |p: Vec<Vec<u32>>, c: GenerationConfig| {
        generate_cached(&model, &p, &c, &device, &none, |_, _| true)
            .unwrap_err()
            .to_string()
    };
    assert!(e(vec![vec![]], GenerationConfig::greedy(2)).contains("empty prompt"));
    assert!(e(vec![vec![1; 65]], GenerationConfig::greedy(2)).contains("65 tokens"));
    assert!(e(vec![vec![1]], GenerationConfig::greedy(0)).contains("max_new_tokens"));
    assert!(e(vec![vec![500]], GenerationConfig::greedy(2)).contains("token id 500"));
    // A cache filled by GPT-2 fed to Llama: a typed error, not a shape panic in Burn.
    let mut cache = KvCache::new();
    model
        .forward_cached(&[vec![1, 2]], &[vec![1, 1]], &mut cache, &device)
        .unwrap();
    let (_, llama) = Llama::from_folder(fixture("llama-tiny"), &device).unwrap();
    let e = llama
        .forward_cached(&[vec![3]], &[vec![1]], &mut cache, &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the cache holds"), "{e}");
}

/// Text in, text out: the folder's tokenizer.json encodes the prompt to transformers' ids, and
/// 24 greedy tokens decode to the same text.
#[test]
fn text_prompts_round_trip_through_the_folder_tokenizer() {
    use kiln_nlp::tokenizer::{HfTokenizer, Tokenizer};
    let device = device();
    for name in ["gpt2-tiny", "llama-tiny", "qwen2-tiny", "gemma3-tiny"] {
        let model = Decoder::open(name, &device);
        let tok = HfTokenizer::from_file(fixture(name).join("tokenizer.json")).unwrap();
        let r = &reference(name)["text"];
        let ids = tok.encode(r["prompt"].as_str().unwrap()).unwrap().ids;
        let want: Vec<u32> = r["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want, "{name}: prompt ids");
        let out = model.generate(&[ids], &GenerationConfig::greedy(24), &device);
        let want: Vec<u32> = r["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(out[0].ids, want, "{name}: generated ids");
        assert_eq!(
            tok.decode(&out[0].ids).unwrap(),
            r["generated_text"].as_str().unwrap(),
            "{name}: generated text"
        );
    }
}

/// Gemma 3 as a bidirectional encoder (EmbeddingGemma's use): the last hidden state of a
/// right-padded batch equals transformers' `Gemma3TextModel` within 1e-4 at every real
/// position; the sliding layers (window 4 in config.json) see 2 positions either way, as
/// transformers halves a bidirectional window, the global one everything.
#[test]
fn gemma3_bidirectional_hidden_states_match_transformers() {
    let device = device();
    let name = "gemma3-tiny-encoder";
    let (config, model) = Gemma3::from_folder(fixture(name), &device).unwrap();
    assert!(config.use_bidirectional_attention && model.is_bidirectional());
    let r = &reference(name)["encoder"];
    let ids: Vec<Vec<u32>> = rows(&r["input_ids"]);
    let mask: Vec<Vec<u8>> = rows(&r["attention_mask"]);
    let hidden = model.encode(&ids, &mask, &device).unwrap();
    let [b, t, h] = hidden.dims();
    let got: Vec<f32> = hidden.into_data().iter::<f32>().collect();
    let want = r["hidden"].as_array().unwrap();
    let mut worst = 0f32;
    for row in 0..b {
        for pos in (0..t).filter(|&p| mask[row][p] == 1) {
            let w = want[row][pos].as_array().unwrap();
            for k in 0..h {
                let d = (got[(row * t + pos) * h + k] - w[k].as_f64().unwrap() as f32).abs();
                worst = worst.max(d);
            }
        }
    }
    assert!(worst < 1e-4, "largest difference {worst}");
    // The padding of the shorter row changes nothing: alone it gives the same vectors.
    let n = mask[1].iter().filter(|&&m| m == 1).count();
    let alone = model
        .encode(&[ids[1][..n].to_vec()], &[vec![1; n]], &device)
        .unwrap();
    let alone: Vec<f32> = alone.into_data().iter::<f32>().collect();
    let padded = &got[t * h..(t + n) * h];
    let drift = alone
        .iter()
        .zip(padded)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(drift < 1e-5, "padding changed the vectors by {drift}");
    let e = model.encode(&[vec![1, 2], vec![3]], &[vec![1, 1], vec![1]], &device);
    assert!(e.unwrap_err().to_string().contains("equal non-empty rows"));
    let e = model.encode(&[vec![1, 999]], &[vec![1, 1]], &device);
    assert!(e.unwrap_err().to_string().contains("token id 999"));
}
