//! # kiln-nlp
//!
//! Text models on Burn, trained with the `kiln-core` trainer.
//!
//! - [`models`]: [`LstmClassifier`](models::LstmClassifier), an embedding + (bi)LSTM text
//!   classifier (Config + Module, one file per model);
//! - [`batch`]: token-id sequences, padded into batches with their masks.
//!
//! ## Cargo features
//!
//! Backends, forwarded to `kiln-core`: `flex` (default), `ndarray`, `wgpu`, `cuda`.

#![warn(missing_docs)]

pub mod batch;
pub mod models;

pub use batch::{TextBatch, TextBatcher, TextItem};
pub use models::{LstmClassifier, LstmClassifierConfig};
