//! Low-rank adapters on BERT and the Llama family: they start as the base model, only they
//! receive gradients, merging them gives the adapted model's outputs, and they round-trip
//! through safetensors.

use std::path::PathBuf;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::{Distribution, Tolerance};
use kiln_nlp::generation::KvCache;
use kiln_nlp::models::lora::{LoraConfig, trainable_parameters};
use kiln_nlp::models::{Bert, BertClassifier, BertConfig, Gpt2, Llama, LlamaCpu, Precision};

fn device() -> Device {
    kiln_core::backend::device("cpu").unwrap()
}

fn tiny_bert(device: &Device) -> Bert {
    let config: BertConfig = serde_json::from_str(
        r#"{"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 32,
            "max_position_embeddings": 16}"#,
    )
    .unwrap();
    config.init(device)
}

/// Moves every trained parameter (the adapters) away from its start, as training would (on
/// the module's training form, [`Module::train`], where the frozen ones say so).
struct Perturb;

fn perturbed<M: Module>(m: M) -> M {
    m.train().map(&mut Perturb).valid()
}

impl ModuleMapper for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !param.is_require_grad() {
            return param;
        }
        param.map(|t| {
            let noise = t.random_like(Distribution::Normal(0.0, 0.3));
            t + noise
        })
    }
}

fn ids(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    (
        Tensor::<2, Int>::from_ints([[1, 5, 9, 3, 0], [2, 7, 4, 0, 0]], device),
        Tensor::<2, Int>::from_ints([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], device),
    )
}

#[test]
fn bert_adapters_start_at_the_base_model_and_merge_exactly() {
    let device = device();
    let base = tiny_bert(&device);
    let (x, mask) = ids(&device);
    let want = base.forward(x.clone(), mask.clone());
    let config = LoraConfig::new().with_rank(4).with_alpha(8.0);
    let adapted = base.with_lora(&config, &device).unwrap();
    assert!(adapted.has_lora());
    adapted
        .forward(x.clone(), mask.clone())
        .into_data()
        .assert_approx_eq::<f32>(&want.clone().into_data(), Tolerance::absolute(1e-6));
    // Only the adapters train: rank 4 on six layers per block, h = 16, I = 32.
    let (trainable, total) = trainable_parameters(&adapted);
    let per_block = 4 * ((16 + 16) * 4 + (16 + 32) + (32 + 16));
    assert_eq!(trainable, 2 * per_block);
    assert!(total > trainable);
    // Trained (moved) adapters change the output; merging them gives the same output.
    let trained = perturbed(adapted);
    let out = trained.forward(x.clone(), mask.clone());
    let moved: f32 = (out.clone() - want).abs().max().into_scalar();
    assert!(moved > 1e-3, "the adapters did not change the output");
    let merged = trained.merge_lora();
    assert!(!merged.has_lora());
    merged
        .forward(x, mask)
        .into_data()
        .assert_approx_eq::<f32>(&out.into_data(), Tolerance::absolute(1e-5));
}

#[test]
fn only_the_adapters_and_the_head_get_gradients() {
    let device = device().autodiff();
    let model = BertClassifier::new(tiny_bert(&device), 16, 3, &device)
        .with_lora(&LoraConfig::new().with_rank(2), &device)
        .unwrap();
    let (x, mask) = ids(&device);
    let loss = model.forward(x, mask.bool()).powi_scalar(2).mean();
    let grads = loss.backward();
    struct Seen<'a> {
        grads: &'a burn::tensor::Gradients,
        with: usize,
        without: usize,
    }
    impl burn::module::ModuleVisitor for Seen<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let has = param.val().grad(self.grads).is_some();
            assert_eq!(has, param.is_require_grad(), "{:?}", param.id);
            if has {
                self.with += 1;
            } else {
                self.without += 1;
            }
        }
    }
    let mut seen = Seen {
        grads: &grads,
        with: 0,
        without: 0,
    };
    model.visit(&mut seen);
    // Two blocks of six adapters (A and B each), and the head's weight and bias.
    assert_eq!(seen.with, 2 * 6 * 2 + 2);
    assert!(seen.without > 20);
}

#[test]
fn adapters_round_trip_through_safetensors() {
    let device = device();
    let config = LoraConfig::new().with_rank(4);
    let base = tiny_bert(&device);
    let classifier = || BertClassifier::new(base.clone(), 16, 3, &device);
    let trained = perturbed(classifier().with_lora(&config, &device).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapters.safetensors");
    trained.save_adapters(&config, &path).unwrap();
    // The same base with a new random head and new adapters, then the saved ones loaded:
    // the trained classifier's outputs.
    let restored = classifier()
        .with_lora(&config, &device)
        .unwrap()
        .load_adapters(&path)
        .unwrap();
    let (x, mask) = ids(&device);
    restored
        .forward(x.clone(), mask.clone().bool())
        .into_data()
        .assert_approx_eq::<f32>(
            &trained.forward(x, mask.bool()).into_data(),
            Tolerance::absolute(1e-6),
        );
    // Adapters of another rank are refused, naming a tensor; so is a missing file.
    let e = classifier()
        .with_lora(&LoraConfig::new().with_rank(3), &device)
        .unwrap()
        .load_adapters(&path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lora"), "{e}");
    let e = classifier()
        .with_lora(&config, &device)
        .unwrap()
        .load_adapters(&dir.path().join("missing.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
    assert!(LoraConfig::new().with_rank(0).check().is_err());
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/decoders")
        .join(name)
}

#[test]
fn llama_adapters_merge_into_the_packed_path() {
    let device = device();
    let (_, base) = Llama::from_folder(fixture("qwen2-tiny"), &device).unwrap();
    let seq = vec![vec![5u32, 17, 3, 80, 41, 9]];
    let mask = vec![vec![1u8; 6]];
    let run = |m: &Llama| {
        m.forward_cached(&seq, &mask, &mut KvCache::new(), &device)
            .unwrap()
    };
    let want = run(&base);
    let config = LoraConfig::new().with_rank(4);
    let adapted = base.with_lora(&config, &device).unwrap();
    run(&adapted)
        .into_data()
        .assert_approx_eq::<f32>(&want.clone().into_data(), Tolerance::absolute(1e-6));
    let trained = perturbed(adapted);
    let out = run(&trained);
    assert!((out.clone() - want).abs().max().into_scalar::<f32>() > 1e-3);
    let e = LlamaCpu::from_llama(&trained, Precision::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("merge"), "{e}");
    // Adapters saved and loaded into fresh ones give the trained outputs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama-adapters.safetensors");
    trained.save_adapters(&config, &path).unwrap();
    let (_, again) = Llama::from_folder(fixture("qwen2-tiny"), &device).unwrap();
    let restored = again
        .with_lora(&config, &device)
        .unwrap()
        .load_adapters(&path)
        .unwrap();
    run(&restored)
        .into_data()
        .assert_approx_eq::<f32>(&out.clone().into_data(), Tolerance::absolute(1e-6));
    // Merged, on the packed CPU path: the adapted logits.
    let merged = trained.merge_lora();
    let cpu = LlamaCpu::from_llama(&merged, Precision::F32).unwrap();
    let got = cpu
        .forward(&mut kiln_nlp::models::LlamaCpuCache::new(), &seq[0], true)
        .unwrap();
    let want: Vec<f32> = out.into_data().iter::<f32>().collect();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{worst}");
}

#[test]
fn gpt2_adapters_start_at_the_base_merge_and_round_trip() {
    let device = device();
    let (_, base) = Gpt2::from_folder(fixture("gpt2-tiny"), &device).unwrap();
    let seq = vec![vec![5u32, 17, 3, 80, 41, 9]];
    let mask = vec![vec![1u8; 6]];
    let run = |m: &Gpt2| {
        m.forward_cached(&seq, &mask, &mut KvCache::new(), &device)
            .unwrap()
    };
    let want = run(&base);
    let config = LoraConfig::new().with_rank(2);
    let adapted = base.with_lora(&config, &device).unwrap();
    assert!(adapted.has_lora());
    run(&adapted)
        .into_data()
        .assert_approx_eq::<f32>(&want.clone().into_data(), Tolerance::absolute(1e-6));
    let trained = perturbed(adapted);
    let out = run(&trained);
    assert!((out.clone() - want).abs().max().into_scalar::<f32>() > 1e-3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt2-adapters.safetensors");
    trained.save_adapters(&config, &path).unwrap();
    let (_, again) = Gpt2::from_folder(fixture("gpt2-tiny"), &device).unwrap();
    let restored = again
        .with_lora(&config, &device)
        .unwrap()
        .load_adapters(&path)
        .unwrap();
    run(&restored)
        .into_data()
        .assert_approx_eq::<f32>(&out.clone().into_data(), Tolerance::absolute(1e-6));
    let merged = trained.merge_lora();
    assert!(!merged.has_lora());
    run(&merged)
        .into_data()
        .assert_approx_eq::<f32>(&out.into_data(), Tolerance::absolute(1e-4));
}
