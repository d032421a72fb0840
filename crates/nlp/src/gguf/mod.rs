//! GGUF, the file format of llama.cpp, ollama and LM Studio: one file holding a model's
//! metadata (architecture, sizes, tokenizer, chat template) and its tensors, mostly in
//! ggml's block-quantized types (Q4_0 ... Q6_K).
//!
//! - [`GgufFile`] ([`reader`]): the container, memory-mapped; metadata and tensor infos
//!   checked against the file, tensors handed out where they lie;
//! - [`LlamaCpu::from_gguf`](crate::models::LlamaCpu::from_gguf) ([`model`]): `llama` and
//!   `qwen2` decoders with their matrices multiplied in their block types
//!   (`kiln_core::kernels::quant`), activations in f32;
//! - [`tokenizer`](tokenizer::tokenizer): the `tokenizer.ggml.*` vocabulary as llama.cpp
//!   tokenizes it;
//! - [`Llama::from_gguf`](crate::models::Llama::from_gguf) ([`import`]): the same decoders
//!   dequantized into a trainable Burn model;
//! - [`Gemma3::from_gguf`](crate::models::Gemma3::from_gguf) ([`gemma3`]): a `gemma3` file
//!   (Gemma 3 text models) dequantized into the Burn model, with llama.cpp's conventions for
//!   what the file leaves out;
//! - [`Llama::write_gguf`](crate::models::Llama::write_gguf) ([`export`]): a Burn decoder
//!   (fine-tuned, adapters merged) written as GGUF for llama.cpp and ollama, through
//!   [`GgufWriter`] ([`writer`]) and the vocabulary of [`GgufVocab`] ([`vocab`]).
//!
//! [`TextGenerator::load`](crate::generation::TextGenerator::load) takes a `.gguf` file
//! wherever it takes a model folder.

mod error;
pub mod export;
pub mod gemma3;
pub mod import;
pub mod model;
pub mod reader;
mod spm;
mod token_type;
pub mod tokenizer;
pub mod vocab;
pub mod writer;

pub use error::GgufError;
pub use export::{GgufFileType, GgufWritten};
/// The arithmetic of products with a GGUF file's quantized weights
/// ([`crate::models::LlamaCpu::with_activations`]).
pub use kiln_core::kernels::quant::Activations;
pub use model::GgufDecoderConfig;
pub use reader::{GgufFile, TensorInfo, Value};
pub use vocab::GgufVocab;
pub use writer::GgufWriter;
