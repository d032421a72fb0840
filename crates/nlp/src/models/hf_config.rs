//! Hugging Face `config.json` files: read, parsed into a model's config and checked, with
//! one error shape for every model family.

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
