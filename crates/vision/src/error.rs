//! The error type of `kiln-vision`: reading image data sets and image files.

use std::path::PathBuf;

/// Errors raised by `kiln-vision`.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An IDX file (MNIST format) whose bytes are not what its header promises.
    #[error("{path}: invalid IDX file: {reason}")]
    Idx {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// An image file that could not be decoded, or has the wrong size.
    #[error("{path}: {reason}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A data set whose parts disagree (image and label counts, empty folders).
    #[error("{0}")]
    Dataset(String),
    /// A parameter outside what it may be (a severity, a corruption name, an image of the
    /// wrong size), with the parameter's name.
    #[error("{name}: {reason}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// An error of the training engine.
    #[error(transparent)]
    Core(#[from] kiln_core::Error),
}

impl VisionError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VisionError::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`VisionError`].
pub type Result<T, E = VisionError> = std::result::Result<T, E>;
