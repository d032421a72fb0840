//! llama.cpp's token types (`tokenizer.ggml.token_type`, its `llama_token_type`) and the
//! vocabulary with its added tokens as a `tokenizer.json` lists them: what the byte-level BPE
//! (`tokenizer.rs`), SentencePiece (`spm.rs`) and writing (`vocab.rs`) sides share.

use serde_json::{Map, Value as Json, json};

/// A normal token.
pub(super) const NORMAL: i32 = 1;
/// The unknown token.
pub(super) const UNKNOWN: i32 = 2;
/// A control (special) token.
pub(super) const CONTROL: i32 = 3;
/// A user-defined added token.
pub(super) const USER_DEFINED: i32 = 4;
/// An unused id (padding of the vocabulary).
pub(super) const UNUSED: i32 = 5;

/// The vocabulary (a repeated token keeps its first id, as llama.cpp's text-to-token map
/// keeps one) and the added tokens: control tokens (and the unknown token when `unknown`,
/// as SentencePiece vocabularies mark `<unk>`) as special, user-defined ones not.
pub(super) fn vocab_and_added(
    tokens: &[&str],
    types: &[i64],
    unknown: bool,
) -> (Map<String, Json>, Vec<Json>) {
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (&token, &ty)) in tokens.iter().zip(types).enumerate() {
        if !vocab.contains_key(token) {
            vocab.insert(token.to_string(), json!(id));
        }
        let special = ty == i64::from(CONTROL) || (unknown && ty == i64::from(UNKNOWN));
        if (special || ty == i64::from(USER_DEFINED)) && !token.is_empty() {
            added.push(json!({
                "id": id,
                "content": token,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": special,
            }));
        }
    }
    (vocab, added)
}
