//! The "Adding a decoder" recipe of docs/architecture.md, done once with a toy model through
//! the recipe's pieces only: a model implementing `CachedDecoder` (with `begin_step` keeping
//! the cache's bookkeeping), a loader, and one registry line; `TextGenerator` then loads
//! its folder and generates with the shared sampler and stop criteria.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use kiln_nlp::generation::{
    CachedDecoder, Decoder, DecoderRegistry, Engine, GenerationConfig, KvCache, LoadOptions,
    ModelShape, OnDevice, StopReason, TextGenerator, begin_step,
};
use kiln_nlp::models::Precision;
use kiln_nlp::{NlpError, Result};

/// A decoder whose next token is always `last + shift` (mod the vocabulary).
struct ShiftDecoder {
    vocab: usize,
    shift: usize,
    context: usize,
}

impl CachedDecoder for ShiftDecoder {
    fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>> {
        let shape = ModelShape {
            vocab: self.vocab,
            max_positions: self.context,
            cache: [0, 0, 0],
        };
        let step = begin_step("shift decoder", ids, mask, cache, &shape, device)?;
        let mut logits = vec![0f32; step.batch * step.len * self.vocab];
        for (i, &id) in ids.iter().flatten().enumerate() {
            logits[i * self.vocab + (id as usize + self.shift) % self.vocab] = 1.0;
        }
        Ok(Tensor::<1>::from_floats(logits.as_slice(), device)
            .reshape([step.batch, step.len, self.vocab]))
    }

    fn max_positions(&self) -> usize {
        self.context
    }
}

/// The loader the registry line names: the folder's `config.json` gives the shift.
fn load_shift(dir: &Path, device: &Device, _options: &LoadOptions) -> Result<Box<dyn Decoder>> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| NlpError::io(&path, e))?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| NlpError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let number = |key: &str| config[key].as_u64().map(|v| v as usize);
    let (Some(vocab), Some(shift)) = (number("vocab_size"), number("shift")) else {
        return Err(NlpError::Config {
            path,
            reason: "vocab_size and shift are required".into(),
        });
    };
    Ok(Box::new(OnDevice {
        model: ShiftDecoder {
            vocab,
            shift,
            context: 64,
        },
        device: device.clone(),
    }))
}

/// A folder with the toy's config.json and a real tokenizer (the llama-tiny fixture's, 320
/// ids); `eos` 300 ends a generation.
fn folder() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoders/llama-tiny");
    std::fs::copy(
        fixture.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "toy-shift", "vocab_size": 320, "shift": 7, "eos_token_id": 300}"#,
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[test]
fn a_registered_decoder_loads_and_generates_through_text_generator() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let (_keep, dir) = folder();

    // Not registered: the error names the file and what is supported.
    let err = TextGenerator::load(&dir, &device, Engine::Auto, Precision::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("'toy-shift'") && err.contains("llama"),
        "{err}"
    );

    // One registry line.
    let registry = DecoderRegistry::builtin().with("toy-shift", load_shift);
    assert!(registry.model_types().contains(&"toy-shift"));
    let generator =
        TextGenerator::load_with(&registry, &dir, &device, Engine::Auto, Precision::F32).unwrap();
    assert_eq!(generator.model_type(), "toy-shift");
    assert_eq!(generator.engine(), "burn");
    assert_eq!(generator.eos_ids(), &[300]);
    assert_eq!(generator.max_positions(), 64);

    // Greedy: each id is the last plus 7, until the budget.
    let prompt = generator.encode("hello").unwrap();
    let last = *prompt.last().unwrap();
    let mut streamed = Vec::new();
    let out = generator
        .generate(&prompt, &GenerationConfig::greedy(5), |id| {
            streamed.push(id);
            true
        })
        .unwrap();
    let want: Vec<u32> = (1..=5).map(|k| (last + 7 * k) % 320).collect();
    assert_eq!(out.ids, want);
    assert_eq!(streamed, want);
    assert_eq!(out.stop, StopReason::MaxNewTokens);

    // The folder's end-of-sequence id stops it: from 286, 293 then 300.
    let out = generator
        .generate(&[286], &GenerationConfig::greedy(10), |_| true)
        .unwrap();
    assert_eq!(out.ids, vec![293, 300]);
    assert_eq!(out.stop, StopReason::Eos(300));

    // A prompt past the toy's context is refused by the shared step checks.
    let long = vec![1u32; 65];
    let err = generator
        .generate(&long, &GenerationConfig::greedy(1), |_| true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("context"), "{err}");
}
