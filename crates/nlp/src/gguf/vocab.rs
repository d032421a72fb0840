//! The tokenizer part of a GGUF file being written (`tokenizer.ggml.*` and
//! `tokenizer.chat_template`): copied from another GGUF file, or converted from a Hugging
//! Face folder's byte-level BPE `tokenizer.json` as llama.cpp's converter does
//! (`tokenizer.ggml.model = gpt2`: tokens in id order, token types normal / control for
//! special added tokens / user-defined for the others / unused for padding ids, merges as
//! `"a b"`, BOS / EOS / padding ids, `add_bos_token`, the chat template).

use std::path::Path;

use serde_json::Value as Json;

use super::reader::{GgufFile, Value};
use super::token_type::{CONTROL, NORMAL, UNUSED, USER_DEFINED};
use super::tokenizer::pre_tokenizer;
use super::writer::GgufWriter;
use crate::chat::ChatTemplate;
use crate::error::{NlpError, Result};
use crate::models::hf_config::{ids, read_json};

/// The `tokenizer.*` metadata of a GGUF file being written.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVocab {
    entries: Vec<(String, Value)>,
}

/// llama.cpp's pre-tokenizer name (as `llama-vocab.cpp` spells it) for a `tokenizer.json`
/// pre-tokenizer, when it is one of the forms Kiln recognises: GPT-2's byte-level split, SmolLM's (digits apart, then
/// GPT-2's), Llama 3's and Qwen2's regular expressions.
fn pre_name(pre: &Json) -> Option<&'static str> {
    let byte_level = |p: &Json, regex: bool| p["type"] == "ByteLevel" && p["use_regex"] == regex;
    if byte_level(pre, true) {
        return Some("gpt-2");
    }
    let parts = pre["pretokenizers"]
        .as_array()
        .filter(|_| pre["type"] == "Sequence")?;
    match parts.as_slice() {
        [d, b]
            if d["type"] == "Digits" && d["individual_digits"] == true && byte_level(b, true) =>
        {
            Some("smollm")
        }
        [s, b] if s["type"] == "Split" && byte_level(b, false) => {
            let regex = s["pattern"]["Regex"].as_str()?;
            let llama3_or_qwen2 =
                regex.starts_with("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|");
            if !llama3_or_qwen2 {
                None
            } else if regex.contains("|\\p{N}{1,3}|") {
                Some("llama-bpe")
            } else if regex.contains("|\\p{N}|") {
                Some("qwen2")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The id of a special token named in `tokenizer_config.json` (a string or an
/// `AddedToken` object), looked up in the tokens.
fn token_id(config: &Json, key: &str, tokens: &[String]) -> Option<u32> {
    let text = match &config[key] {
        Json::String(s) => s.as_str(),
        Json::Object(o) => o.get("content")?.as_str()?,
        _ => return None,
    };
    tokens.iter().position(|t| t == text).map(|i| i as u32)
}

impl GgufVocab {
    /// Every `tokenizer.*` key of `file`, as it is.
    pub fn from_gguf(file: &GgufFile) -> Self {
        Self {
            entries: file
                .metadata()
                .iter()
                .filter(|(k, _)| k.starts_with("tokenizer."))
                .cloned()
                .collect(),
        }
    }

    /// The tokenizer of a Hugging Face folder: `tokenizer.json` (byte-level BPE),
    /// `tokenizer_config.json` (special tokens, `add_bos_token`, the chat template, or
    /// `chat_template.jinja`), and the EOS ids of `generation_config.json` / `config.json`.
    /// `pre` names llama.cpp's pre-tokenizer (`gpt-2`, `smollm`, `llama-bpe`, `qwen2`, ...);
    /// `None` recognises GPT-2's, SmolLM's, Llama 3's and Qwen2's.
    ///
    /// # Errors
    /// A tokenizer that is not byte-level BPE, a pre-tokenizer not recognised (name it with `pre`)
    /// or unknown to Kiln, ids out of order or repeated: errors naming the file.
    pub fn from_folder(dir: impl AsRef<Path>, pre: Option<&str>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        let json = read_json(&path)?.ok_or_else(|| NlpError::Config {
            path: path.clone(),
            reason: "no tokenizer.json in this folder".into(),
        })?;
        let bad = |reason: String| NlpError::Config {
            path: path.clone(),
            reason,
        };
        let model = &json["model"];
        let byte_level =
            json["decoder"]["type"] == "ByteLevel" || json["pre_tokenizer"]["type"] == "ByteLevel";
        if model["type"] != "BPE" || !json["normalizer"].is_null() || !byte_level {
            return Err(bad(
                "only byte-level BPE tokenizers (no normalizer, a ByteLevel decoder) are written \
                 to GGUF (tokenizer.ggml.model gpt2)"
                    .into(),
            ));
        }
        let pre = match pre {
            // llama.cpp knows GPT-2's as `gpt-2` (and refuses `gpt2`).
            Some("gpt2") => "gpt-2".to_string(),
            Some(name) if pre_tokenizer(name).is_some() => name.to_string(),
            Some(name) => return Err(bad(format!("pre-tokenizer '{name}' is not one Kiln knows"))),
            None => pre_name(&json["pre_tokenizer"])
                .ok_or_else(|| {
                    bad(format!(
                        "pre_tokenizer {} is not recognised; name llama.cpp's pre-tokenizer \
                         explicitly",
                        json["pre_tokenizer"]
                    ))
                })?
                .to_string(),
        };
        let (tokens, types) = tokens_and_types(&json).map_err(bad)?;
        let merges = merges(&model["merges"]).map_err(bad)?;
        let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);
        let mut entries = vec![
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("gpt2".into()),
            ),
            ("tokenizer.ggml.pre".to_string(), Value::String(pre)),
        ];
        let mut ids_entry = |key: &str, id: Option<u32>| {
            if let Some(id) = id {
                entries.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
            }
        };
        let model_config = read_json(&dir.join("config.json"))?.unwrap_or(Json::Null);
        let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Json::Null);
        let eos = [&generation["eos_token_id"], &model_config["eos_token_id"]]
            .into_iter()
            .map(ids)
            .find(|v| !v.is_empty())
            .unwrap_or_default();
        let bos = token_id(&config, "bos_token", &tokens)
            .or_else(|| model_config["bos_token_id"].as_u64().map(|b| b as u32));
        ids_entry("bos_token_id", bos);
        ids_entry(
            "eos_token_id",
            eos.first()
                .copied()
                .or_else(|| token_id(&config, "eos_token", &tokens)),
        );
        ids_entry("eot_token_id", eos.get(1).copied());
        ids_entry("padding_token_id", token_id(&config, "pad_token", &tokens));
        let add_bos = match config["add_bos_token"].as_bool() {
            Some(b) => b,
            None => json["post_processor"]["single"][0]["SpecialToken"].is_object(),
        };
        entries.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)));
        entries.push((
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ));
        entries.push((
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ));
        entries.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ));
        if let Some(template) = ChatTemplate::from_folder(dir)? {
            entries.push((
                "tokenizer.chat_template".into(),
                Value::String(template.source().to_string()),
            ));
        }
        Ok(Self { entries })
    }

    /// The metadata entries.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }

    /// Sets the entries on `writer`, the tokens padded to `vocab` with unused `[PAD{i}]`
    /// tokens as llama.cpp's converter pads them.
    ///
    /// # Errors
    /// When the vocabulary holds more tokens than the model's embedding has rows.
    pub(crate) fn write_to(&self, writer: &mut GgufWriter<'_>, vocab: usize) -> Result<()> {
        for (key, value) in &self.entries {
            let padded = match (key.as_str(), value) {
                ("tokenizer.ggml.tokens", Value::Array(t)) => {
                    if t.len() > vocab {
                        return Err(NlpError::Input(format!(
                            "GGUF export: the tokenizer has {} tokens, the model {vocab}",
                            t.len()
                        )));
                    }
                    let pad = (t.len()..vocab).map(|i| Value::String(format!("[PAD{i}]")));
                    Value::Array(t.iter().cloned().chain(pad).collect())
                }
                ("tokenizer.ggml.token_type" | "tokenizer.ggml.scores", Value::Array(t)) => {
                    let fill = if key.ends_with("scores") {
                        Value::F32(0.0)
                    } else {
                        Value::I32(UNUSED)
                    };
                    let n = t.len().max(vocab);
                    Value::Array(
                        t.iter()
                            .cloned()
                            .chain(std::iter::repeat_n(fill, n - t.len()))
                            .collect(),
                    )
                }
                _ => value.clone(),
            };
            writer.set(key.clone(), padded);
        }
        Ok(())
    }
}

/// The tokens in id order and their types: the model's vocabulary, then the added tokens
/// (control when special, user-defined otherwise).
fn tokens_and_types(json: &Json) -> std::result::Result<(Vec<String>, Vec<i32>), String> {
    let vocab = json["model"]["vocab"]
        .as_object()
        .ok_or("model.vocab is not an object")?;
    let added = json["added_tokens"].as_array().cloned().unwrap_or_default();
    let mut slots: Vec<Option<(String, i32)>> = Vec::new();
    let mut place =
        |id: u64, text: &str, ty: i32, allow_same: bool| -> std::result::Result<(), String> {
            let id = usize::try_from(id).map_err(|_| format!("token id {id}"))?;
            if id >= slots.len() {
                if id > 10_000_000 {
                    return Err(format!("token id {id} is implausibly large"));
                }
                slots.resize(id + 1, None);
            }
            match &slots[id] {
                Some((t, _)) if !(allow_same && t == text) => {
                    Err(format!("token id {id} is given to both '{t}' and '{text}'"))
                }
                _ => {
                    slots[id] = Some((text.to_string(), ty));
                    Ok(())
                }
            }
        };
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| format!("model.vocab '{text}': not an id"))?;
        place(id, text, NORMAL, false)?;
    }
    for a in &added {
        let (Some(id), Some(text)) = (a["id"].as_u64(), a["content"].as_str()) else {
            return Err(format!("added token {a}: no id or content"));
        };
        let ty = if a["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        place(id, text, ty, true)?;
    }
    let mut tokens = Vec::with_capacity(slots.len());
    let mut types = Vec::with_capacity(slots.len());
    for (id, slot) in slots.into_iter().enumerate() {
        let (t, ty) =
            slot.ok_or_else(|| format!("no token has id {id} (ids must run from 0 without gaps)"))?;
        tokens.push(t);
        types.push(ty);
    }
    Ok((tokens, types))
}

/// Merges as `"a b"`, from either form of `model.merges` (strings, or pairs).
fn merges(v: &Json) -> std::result::Result<Vec<String>, String> {
    let Some(list) = v.as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(p) => match (
                p.first().and_then(Json::as_str),
                p.get(1).and_then(Json::as_str),
            ) {
                (Some(a), Some(b)) if p.len() == 2 => Ok(format!("{a} {b}")),
                _ => Err(format!("merge {m} is not a pair of strings")),
            },
            other => Err(format!("merge {other} is neither text nor a pair")),
        })
        .collect()
}
