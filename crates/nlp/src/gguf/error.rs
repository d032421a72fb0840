//! The errors of reading a GGUF file: each names the file and the key or tensor at fault.

use std::path::PathBuf;

/// What is wrong with a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with `GGUF`.
    #[error("{path}: not a GGUF file (magic {found:?}, expected \"GGUF\")")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Its first four bytes.
        found: [u8; 4],
    },
    /// A GGUF version other than 2 or 3.
    #[error("{path}: GGUF version {version}, Kiln reads versions 2 and 3")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// The file ends inside something.
    #[error("{path}: truncated: {what} needs {needed} bytes at offset {offset}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read (names the key or tensor).
        what: String,
        /// Where.
        offset: u64,
        /// Bytes it needed.
        needed: u64,
    },
    /// A metadata value type id that GGUF does not define.
    #[error("{path}: metadata '{key}': unknown value type {type_id}")]
    UnknownValueType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// A tensor of a block type Kiln does not read.
    #[error(
        "{path}: tensor '{tensor}': ggml type {type_id} ({type_name}) is not supported \
         (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K-Q6_K, IQ4_NL)"
    )]
    UnknownTensorType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The type id found.
        type_id: u32,
        /// ggml's name of it.
        type_name: &'static str,
    },
    /// A count, length, offset, dimension or value that is out of range.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the key or tensor).
        reason: String,
    },
    /// A metadata key the model needs is absent.
    #[error("{path}: metadata key '{key}' is missing")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata value of another type than the one needed.
    #[error("{path}: metadata '{key}': expected {expected}, found {found}")]
    KeyType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What was expected.
        expected: String,
        /// The type found.
        found: String,
    },
    /// A tensor the model needs is absent.
    #[error("{path}: tensor '{tensor}' is missing")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// A tensor of another shape than the model's metadata implies.
    #[error("{path}: tensor '{tensor}': expected {expected}, found {found}")]
    TensorShape {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shape expected.
        expected: String,
        /// The shape found.
        found: String,
    },
    /// A model architecture Kiln does not run.
    #[error("{path}: architecture '{architecture}' is not supported (llama, qwen2)")]
    Architecture {
        /// The file.
        path: PathBuf,
        /// `general.architecture`.
        architecture: String,
    },
}
