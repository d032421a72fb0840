//! # kiln-nlp
//!
//! Text models on Burn, trained with the `kiln-core` trainer.
//!
//! - [`models`]: [`LstmClassifier`](models::LstmClassifier), an embedding + (bi)LSTM text
//!   classifier (Config + Module, one file per model);
//! - [`models`]: also [`Bert`](models::Bert), a BERT-family encoder loaded from a Hugging Face
//!   folder (`config.json` + `model.safetensors`, keys remapped explicitly);
//! - [`sentence`]: [`SentenceEncoder`], sentence-transformers embeddings (tokenize, encode,
//!   mask-aware pooling, L2 normalisation) that match the Python pipeline;
//! - [`search`]: [`SemanticIndex`], exact cosine top-k over normalised embeddings, saved and
//!   loaded as one file;
//! - [`tokenizer`]: the [`Tokenizer`] trait and [`HfTokenizer`] (`tokenizer.json`);
//! - [`data`]: TREC and SMS Spam readers;
//! - [`batch`]: token-id sequences, padded into batches with their masks.
//!
//! ## Cargo features
//!
//! Backends, forwarded to `kiln-core`: `flex` (default), `ndarray`, `wgpu`, `cuda`.

#![warn(missing_docs)]

pub mod batch;
pub mod data;
mod error;
pub mod models;
pub mod search;
pub mod sentence;
pub mod tokenizer;

pub use batch::{TextBatch, TextBatcher, TextItem};
pub use error::{NlpError, Result};
pub use models::{Bert, BertConfig, LstmClassifier, LstmClassifierConfig};
pub use search::{Hit, SemanticIndex};
pub use sentence::{Pooling, SentenceEncoder};
pub use tokenizer::{Encoding, HfTokenizer, Tokenizer};
