//! The error type of `kiln-nlp`: tokenizers, pretrained model folders and their weights.

use std::path::PathBuf;

/// Errors raised by `kiln-nlp`.
#[derive(Debug, thiserror::Error)]
pub enum NlpError {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A tokenizer file that could not be loaded, or text it could not encode.
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A model configuration that is malformed or asks for something Kiln does not support.
    #[error("{path}: {reason}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What was wrong (names the field).
        reason: String,
    },
    /// Weights that do not fit the model: missing, unexpected or wrongly shaped tensors.
    #[error("{path}: {reason}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What was wrong (names the tensors and shapes).
        reason: String,
    },
    /// A chat template that does not compile, or raised while rendering.
    #[error("{path}: chat template: {reason}")]
    Template {
        /// The file the template came from.
        path: PathBuf,
        /// What went wrong (the template's own message when it raised).
        reason: String,
    },
    /// Inputs a model or index cannot work with (empty batch, wrong dimension, ...).
    #[error("{0}")]
    Input(String),
    /// A GGUF file that cannot be read or holds no model Kiln runs.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// An error of the training engine.
    #[error(transparent)]
    Core(#[from] kiln_core::Error),
}

impl NlpError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NlpError::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`NlpError`].
pub type Result<T, E = NlpError> = std::result::Result<T, E>;
