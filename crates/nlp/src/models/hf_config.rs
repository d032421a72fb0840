//! Hugging Face `config.json` files: read, parsed into a model's config and checked, with
//! one error shape for every model family; the folder's other JSON files read as values
//! (`read_json`), and their `eos_token_id` (`ids`).

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{NlpError, Result};

/// Reads `path` as a `T` and checks it with `check`; `family` names what the file should
/// be in the parse error ("Llama-family", "GPT-2", "BERT"). Unreadable files are
/// [`NlpError::Io`], unparsable or unsupported ones [`NlpError::Config`] naming the file.
pub(crate) fn read_config<T: DeserializeOwned>(
    path: &Path,
    family: &str,
    check: impl FnOnce(&T) -> std::result::Result<(), String>,
) -> Result<T> {
    let text = std::fs::read(path).map_err(|e| NlpError::io(path, e))?;
    let config: T = serde_json::from_slice(&text).map_err(|e| NlpError::Config {
        path: path.to_owned(),
        reason: format!("not a {family} config.json: {e}"),
    })?;
    check(&config).map_err(|reason| NlpError::Config {
        path: path.to_owned(),
        reason,
    })?;
    Ok(config)
}

/// A JSON file, or `None` when there is none.
pub(crate) fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| NlpError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| NlpError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The ids of a config's `eos_token_id` (a number or a list).
pub(crate) fn ids(v: &serde_json::Value) -> Vec<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|v| v as u32).into_iter().collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    }
}
