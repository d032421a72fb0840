//! The tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`), rebuilt as the
//! Hugging Face `tokenizer.json` it came from and run by the `tokenizers` library, so that a
//! GGUF model encodes text as llama.cpp does.
//!
//! `tokenizer.ggml.model = gpt2` (byte-level BPE): the vocabulary, the merges, and the
//! pre-tokenizer named by `tokenizer.ggml.pre`, whose regular expressions are llama.cpp's
//! (`llama-vocab.cpp`, `llm_tokenizer_bpe`): `gpt2` (and `gpt-2`), `smollm` (digits apart,
//! then GPT-2's), `llama-bpe` / `llama3` (Llama 3's), `qwen2` (Qwen2's, digits apart).
//! Control and user-defined tokens (`token_type` 3 and 4) are matched in the text before
//! BPE, as llama.cpp's `parse_special` does; `add_bos_token` prepends the BOS id.
//!
//! `tokenizer.ggml.model = llama` (SentencePiece pieces with scores) is built by `spm.rs`.
//! Other tokenizer models (`bert`, `t5`, ...) and pre-tokenizers are a typed error naming
//! them.

use serde_json::{Value as Json, json};

use super::error::GgufError;
use super::reader::GgufFile;
use super::token_type::vocab_and_added;
use crate::tokenizer::HfTokenizer;
use crate::{NlpError, Result};

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regular expressions of a llama.cpp pre-tokenizer, applied in turn, and whether BPE
/// skips the merges for words already in the vocabulary (Llama 3's `ignore_merges`).
pub(crate) fn pre_tokenizer(name: &str) -> Option<(Vec<&'static str>, bool)> {
    Some(match name {
        "gpt2" | "gpt-2" | "default" => (vec![GPT2], false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" => {
            (vec![r"\p{N}", GPT2], false)
        }
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "dbrx" => (vec![LLAMA3], true),
        "qwen2" | "stablelm2" => (vec![QWEN2], false),
        _ => return None,
    })
}

/// The file's tokenizer as the text of a `tokenizer.json`.
///
/// # Errors
/// A tokenizer model or pre-tokenizer Kiln does not build, or missing / ill-typed keys, name the
/// key.
pub fn tokenizer_json(file: &GgufFile) -> Result<String, GgufError> {
    let invalid = |reason: String| GgufError::Invalid {
        path: file.path().to_path_buf(),
        reason,
    };
    let model = file.str("tokenizer.ggml.model")?;
    if model != "gpt2" && model != "llama" {
        return Err(invalid(format!(
            "tokenizer.ggml.model '{model}' is not supported (gpt2: byte-level BPE, llama: \
             SentencePiece)"
        )));
    }
    if model == "llama" {
        let (tokens, types) = tokens_and_types(file)?;
        let post = post_processor(file, &tokens)?;
        return Ok(super::spm::tokenizer_json(file, &tokens, &types, post)?.to_string());
    }
    let pre_name = match file.get("tokenizer.ggml.pre") {
        Some(_) => file.str("tokenizer.ggml.pre")?,
        None => "default",
    };
    let (regexes, ignore_merges) = pre_tokenizer(pre_name).ok_or_else(|| {
        invalid(format!(
            "tokenizer.ggml.pre '{pre_name}' is not supported (gpt2, smollm, llama-bpe, qwen2, \
             and their aliases)"
        ))
    })?;
    let (tokens, types) = tokens_and_types(file)?;
    let merges = match file.get("tokenizer.ggml.merges") {
        Some(_) => file.strings("tokenizer.ggml.merges")?,
        None => Vec::new(),
    };
    let (vocab, added) = vocab_and_added(&tokens, &types, false);
    let mut pretokenizers: Vec<Json> = regexes
        .iter()
        .map(|r| {
            json!({
                "type": "Split",
                "pattern": {"Regex": r},
                "behavior": "Isolated",
                "invert": false,
            })
        })
        .collect();
    pretokenizers.push(json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": true,
        "use_regex": false,
    }));
    let post_processor = post_processor(file, &tokens)?;
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    });
    Ok(tokenizer.to_string())
}

/// `tokenizer.ggml.tokens` and their types (normal when the file gives none).
fn tokens_and_types(file: &GgufFile) -> Result<(Vec<&str>, Vec<i64>), GgufError> {
    let tokens = file.strings("tokenizer.ggml.tokens")?;
    let types = match file.get("tokenizer.ggml.token_type") {
        Some(_) => file.ints("tokenizer.ggml.token_type")?,
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(GgufError::Invalid {
            path: file.path().to_path_buf(),
            reason: format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            ),
        });
    }
    Ok((tokens, types))
}

/// The BOS template when `tokenizer.ggml.add_bos_token` is set, else none.
fn post_processor(file: &GgufFile, tokens: &[&str]) -> Result<Json, GgufError> {
    let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
        Some(_) => file.bool("tokenizer.ggml.add_bos_token")?,
        None => false,
    };
    if add_bos {
        bos_template(file, tokens)
    } else {
        Ok(Json::Null)
    }
}

/// The post-processor that prepends the BOS token (`add_bos_token`).
fn bos_template(file: &GgufFile, tokens: &[&str]) -> Result<Json, GgufError> {
    let bos = file.usize("tokenizer.ggml.bos_token_id")?;
    let bos_token = tokens.get(bos).ok_or_else(|| GgufError::Invalid {
        path: file.path().to_path_buf(),
        reason: format!(
            "tokenizer.ggml.bos_token_id {bos} past the {} tokens",
            tokens.len()
        ),
    })?;
    Ok(json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos_token, "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos_token, "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos_token.to_string(): {"id": bos_token, "ids": [bos], "tokens": [bos_token]}},
    }))
}

/// The file's tokenizer (see the module docs), padding with `tokenizer.ggml.padding_token_id`
/// when the file names one.
///
/// # Errors
/// As [`tokenizer_json`]; a vocabulary the `tokenizers` library refuses is an
/// [`NlpError::Tokenizer`] naming the file.
pub fn tokenizer(file: &GgufFile) -> Result<HfTokenizer> {
    let text = tokenizer_json(file)?;
    let pad = match file.get("tokenizer.ggml.padding_token_id") {
        Some(_) => Some(file.usize("tokenizer.ggml.padding_token_id")? as u32),
        None => None,
    };
    HfTokenizer::from_json(&text, file.path(), pad).map_err(|e| match e {
        NlpError::Tokenizer { path, reason } => NlpError::Tokenizer {
            path,
            reason: format!("the GGUF vocabulary: {reason}"),
        },
        other => other,
    })
}
