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
//!   tokenizes it.
//!
//! [`TextGenerator::load`](crate::generator::TextGenerator::load) takes a `.gguf` file
//! wherever it takes a model folder.

mod error;
pub mod model;
pub mod reader;
pub mod tokenizer;

pub use error::GgufError;
pub use model::GgufDecoderConfig;
pub use reader::{GgufFile, TensorInfo, Value};
