//! `tokenizer.ggml.model = llama`: SentencePiece vocabularies (Llama 1-2, Mistral, Phi-3,
//! TinyLlama, ...) as the `tokenizer.json` that transformers' `LlamaConverter` makes of
//! them, so that the `tokenizers` library encodes text as llama.cpp's `llm_tokenizer_spm`
//! does: a "▁" prepended to the text and to the text after each special token
//! (`tokenizer.ggml.add_space_prefix`, on unless the file says otherwise), spaces as "▁",
//! then pieces merged by score (the merges of every piece's two-part splits, ordered by the
//! piece's score as transformers' `SentencePieceExtractor` orders them), and bytes of text
//! no piece covers as the `<0xXX>` byte pieces. Decoding undoes the "▁" and the bytes.
//! llama.cpp's tokenizer test vectors check it (`tests/gguf_files.rs`).

use std::collections::HashMap;

use serde_json::{Value as Json, json};

use super::error::GgufError;
use super::reader::GgufFile;
use super::token_type::{NORMAL, vocab_and_added};

/// The merges of a SentencePiece vocabulary: for every normal piece, each split into two
/// pieces of the vocabulary (in the order of their ids), all ordered by the piece's score,
/// highest first (ties keep id order).
fn merges(tokens: &[&str], types: &[i64], scores: &[f32]) -> Vec<Json> {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        ids.entry(t).or_insert(id);
    }
    let mut all: Vec<(f32, usize, usize, &str, &str)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types[id] != i64::from(NORMAL) {
            continue;
        }
        let mut local: Vec<(usize, usize, &str, &str)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (l, r) = piece.split_at(at);
                Some((*ids.get(l)?, *ids.get(r)?, l, r))
            })
            .collect();
        local.sort_unstable_by_key(|&(a, b, _, _)| (a, b));
        all.extend(
            local
                .into_iter()
                .map(|(a, b, l, r)| (scores[id], a, b, l, r)),
        );
    }
    // A stable sort: equal scores keep the order above.
    all.sort_by(|x, y| y.0.total_cmp(&x.0));
    all.into_iter()
        .map(|(_, _, _, l, r)| json!([l, r]))
        .collect()
}

/// The `tokenizer.json` of a `llama` (SentencePiece) vocabulary; `tokens` and `types` are
/// already read and checked, `post_processor` adds the BOS token when the file asks.
pub(super) fn tokenizer_json(
    file: &GgufFile,
    tokens: &[&str],
    types: &[i64],
    post_processor: Json,
) -> Result<Json, GgufError> {
    let scores = file.floats("tokenizer.ggml.scores")?;
    if scores.len() != tokens.len() {
        return Err(GgufError::Invalid {
            path: file.path().to_path_buf(),
            reason: format!(
                "tokenizer.ggml.scores has {} entries for {} tokens",
                scores.len(),
                tokens.len()
            ),
        });
    }
    let space_prefix = match file.get("tokenizer.ggml.add_space_prefix") {
        Some(_) => file.bool("tokenizer.ggml.add_space_prefix")?,
        None => true,
    };
    let (vocab, added) = vocab_and_added(tokens, types, true);
    let unk = match file.get("tokenizer.ggml.unknown_token_id") {
        Some(_) => tokens
            .get(file.usize("tokenizer.ggml.unknown_token_id")?)
            .map(|t| json!(t)),
        None => None,
    };
    let mut normalizers = Vec::new();
    if space_prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": post_processor,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk.unwrap_or(Json::Null),
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": true,
            "byte_fallback": true,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges(tokens, types, &scores),
        },
    }))
}
