//! The error type of `kiln-core`: every fallible operation of the training engine, the
//! backend selection and the data helpers returns [`Error`].

use std::path::PathBuf;

/// Errors raised by `kiln-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend name that is unknown, or known but not compiled into this build.
    #[error("backend `{name}` is not available in this build; compiled-in backends: {available}")]
    BackendUnavailable {
        /// The name that was asked for.
        name: String,
        /// Comma-separated list of the backends this build can use.
        available: String,
    },

    /// A loss that is NaN or infinite: training stops, the last good checkpoint is kept.
    #[error(
        "non-finite loss {value} at epoch {epoch}, step {step}; the last good checkpoint is kept"
    )]
    NonFiniteLoss {
        /// Epoch (1-based) of the failing step.
        epoch: usize,
        /// Global optimizer step (1-based) that produced the loss.
        step: usize,
        /// The offending loss value.
        value: f64,
    },

    #[error(
        "model output: row {row} of the batch has target class {target}, but the scores have \
         {classes} classes"
    )]
    /// A classification step whose targets do not fit its scores (a label past the classes,
    /// or fewer score rows than targets).
    BadTarget {
        /// The row of the batch.
        row: usize,
        /// Its target class.
        target: i64,
        /// The number of score columns (0 when the scores have fewer rows than the targets).
        classes: usize,
    },
    #[error("{op}: {reason}")]
    /// Tensors whose shapes do not fit an operation (the checked `try_` forms of `ops`).
    Shape {
        /// The operation.
        op: &'static str,
        /// The shapes given and what was expected.
        reason: String,
    },
    /// A trainer or model configuration that cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint that cannot be read back.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },

    /// Burn failed to serialize or apply a model, optimizer or scheduler record.
    #[error("record error ({what}): {reason}")]
    Record {
        /// Which record (model, optimizer, scheduler).
        what: &'static str,
        /// Burn's message.
        reason: String,
    },

    /// The data loader failed to produce a batch.
    #[error("data loading failed: {0}")]
    Data(String),

    /// A download could not be completed.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// The URL that was requested.
        url: String,
        /// Why it failed, with advice on what to do instead.
        reason: String,
    },

    /// A downloaded or cached file whose SHA-256 does not match the expected digest.
    #[error("checksum mismatch for {path}: expected sha256 {expected}, found {found}")]
    Checksum {
        /// The file that was checked.
        path: PathBuf,
        /// The expected hex digest.
        expected: String,
        /// The digest of the file's content.
        found: String,
    },

    /// JSON (de)serialization of a config, state or report failed.
    #[error("json ({context}): {source}")]
    Json {
        /// What was being read or written.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// Drawing the loss/metric curves failed.
    #[error("plotting {path}: {reason}")]
    Plot {
        /// The image being written.
        path: PathBuf,
        /// The plotting backend's message.
        reason: String,
    },

    /// A data-parallel process group failed: a peer could not be reached, hung up, or sent
    /// something other than what this process expected.
    #[error("process group (rank {rank} of {world}): {reason}")]
    Distributed {
        /// This process's rank.
        rank: usize,
        /// The number of processes in the group.
        world: usize,
        /// What went wrong, naming the peer.
        reason: String,
    },
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
