//! The error type of `kiln-recsys`: reading interaction and feature files, invalid model
//! parameters, and saving or loading fitted models.

use std::path::PathBuf;

/// Errors raised by `kiln-recsys`.
#[derive(Debug, thiserror::Error)]
pub enum RecsysError {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A row of a data file that does not parse (line numbers start at 1).
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line number (0 for the file as a whole, e.g. when it is empty).
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// A parameter a model, split or reader cannot work with (k = 0, a negative learning
    /// rate, ...), named with its value and what it must be.
    #[error("{context}: {param} = {value}, expected {expected}")]
    InvalidParam {
        /// The model, split or reader (`svd`, `k-fold`, ...).
        context: &'static str,
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// Data a model cannot be fitted or evaluated on (no ratings, ids out of range, ...).
    #[error("{0}")]
    Data(String),
    /// Training diverged (a non-finite value in a model's parameters or loss).
    #[error("{model} diverged at epoch {epoch}: lower the learning rate or raise regularisation")]
    Diverged {
        /// The model.
        model: &'static str,
        /// The 1-based epoch.
        epoch: usize,
    },
    /// A saved model that could not be encoded or decoded.
    #[error("{path}: {reason}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// An error of the training engine (neural models, checkpoints, reports).
    #[error(transparent)]
    Core(#[from] kiln_core::Error),
}

impl RecsysError {
    pub(crate) fn param(
        context: &'static str,
        param: &'static str,
        value: impl std::fmt::Display,
        expected: &'static str,
    ) -> Self {
        RecsysError::InvalidParam {
            context,
            param,
            value: value.to_string(),
            expected,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RecsysError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(path: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> Self {
        RecsysError::Parse {
            path: path.into(),
            line,
            reason: reason.into(),
        }
    }
}

/// `Result` with [`RecsysError`].
pub type Result<T, E = RecsysError> = std::result::Result<T, E>;
