//! # kiln-nlp
//!
//! Text models on Burn, trained with the `kiln-core` trainer.
//!
//! - [`models`] (Config + Module, one file per model): [`RnnEncoder`](models::RnnEncoder)
//!   (stacked, bidirectional LSTM/GRU on Burn's layers, fused and padding-aware),
//!   [`Attention`](models::Attention) (additive and multiplicative),
//!   [`Seq2Seq`](models::Seq2Seq) (attention decoder, greedy and beam search),
//!   [`LstmClassifier`] and
//!   [`TransformerClassifier`](models::TransformerClassifier) for text classification,
//!   [`CharLstm`](models::CharLstm) and [`Gpt`](models::Gpt) language models;
//! - [`models`]: also [`Bert`], a BERT-family encoder loaded from a Hugging Face
//!   folder (`config.json` + `model.safetensors`, keys remapped explicitly), and the decoders
//!   [`Gpt2`](models::Gpt2) and [`Llama`](models::Llama) (Llama, Qwen2, Mistral), loaded the
//!   same way (sharded checkpoints too), with a key/value cache and left-padded batches, and
//!   [`LlamaCpu`](models::LlamaCpu), the Llama family packed for fast CPU inference;
//! - [`gguf`]: GGUF files as llama.cpp ships them: the container read from a memory map,
//!   Llama-family decoders on [`LlamaCpu`](models::LlamaCpu) with their block-quantized
//!   weights used in place, the tokenizer and chat template of the metadata;
//! - [`chat`]: a model folder's chat template rendered as transformers does (minijinja);
//!   [`tool_calls`]: the tool calls of an answer (Qwen2.5's `<tool_call>` blocks, Llama
//!   3.1's JSON) read back into OpenAI's shape;
//! - [`generation`]: greedy and sampled generation with transformers' logits processors
//!   (temperature, top-k, top-p, repetition penalty), stop ids and strings, a seed; the
//!   key/value cache; continuous batching of many generations on one model; the registry
//!   of decoders by `model_type`; and [`TextGenerator`](generation::TextGenerator), a
//!   decoder folder (model, tokenizer, end-of-sequence ids, chat template) behind one
//!   `generate`;
//! - [`sentence`]: [`SentenceEncoder`], sentence-transformers embeddings (tokenize, encode,
//!   mask-aware pooling, L2 normalisation) that match the Python pipeline;
//! - [`classifier`]: a fine-tuned BERT classifier as a folder (labels, merged weights) and
//!   [`TextClassifierModel`], which loads it for serving;
//! - [`search`]: [`SemanticIndex`], exact cosine top-k over normalised embeddings, saved and
//!   loaded as one file;
//! - [`tokenizer`]: the [`Tokenizer`] trait (encode, decode, truncate, pad with masks) and
//!   [`HfTokenizer`] (`tokenizer.json`); [`vocab`]: word and character vocabularies;
//!   [`ngram`]: character and character-bigram vocabularies for Chinese and other text
//!   without spaces between words;
//! - [`bleu`]: corpus BLEU; [`plot`]: attention heat maps (PNG);
//! - [`data`]: TREC, SMS Spam, Tatoeba (eng-fra) and Chinese review sentiment readers;
//! - [`batch`]: token-id sequences, padded into batches with their masks.
//!
//! ## Cargo features
//!
//! Backends, forwarded to `kiln-core`: `flex` (default), `ndarray`, `wgpu`, `cuda`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod batch;
pub mod bleu;
pub mod chat;
pub mod classifier;
pub mod data;
mod error;
pub mod generation;
pub mod gguf;
pub mod models;
pub mod ngram;
pub mod plot;
pub mod search;
pub mod sentence;
pub mod tokenizer;
pub mod tool_calls;
pub mod vocab;

pub use batch::{TextBatch, TextBatcher, TextClassifier, TextItem};
pub use classifier::{ClassifierMeta, TextClassifierModel, export_text_classifier};
pub use error::{NlpError, Result};
pub use models::{Bert, BertConfig, LstmClassifier, LstmClassifierConfig};
pub use search::{Hit, SemanticIndex};
pub use sentence::{Pooling, SentenceEncoder};
pub use tokenizer::{Encoding, HfTokenizer, PaddedBatch, Tokenizer};
