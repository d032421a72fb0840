//! Everything that turns a decoder's next-token logits into text, in one place:
//!
//! - [`GenerationConfig`] (`config.rs`): transformers' `generate` controls, checked;
//! - [`Sampler`] (`sampler.rs`): the one sampler, transformers' logits processors (repetition
//!   penalty, temperature, top-k, top-p) then greedy or seeded sampling;
//! - [`StopCriteria`], [`StopReason`], [`Generation`] (`stop.rs`);
//! - [`KvCache`] and [`CachedDecoder`] (`cache.rs`): the key/value cache and the step
//!   bookkeeping every cached decoder shares;
//! - the decode loops (`decode.rs`): [`generate_cached`] (a left-padded batch on any
//!   [`CachedDecoder`]) and [`generate_windowed`] (a [`LanguageModel`](crate::models::LanguageModel)
//!   recomputing its window);
//! - [`ContinuousBatch`] (`continuous.rs`): many generations on the packed CPU path, joining
//!   and leaving at every token;
//! - [`DecoderRegistry`] (`registry.rs`): `model_type` (and GGUF architecture) to a loader,
//!   behind the [`Decoder`] trait;
//! - [`TextGenerator`] (`generator.rs`): a decoder folder or GGUF file (model, tokenizer,
//!   end-of-sequence ids, chat template) behind one `generate`.

pub(crate) mod cache;
mod config;
pub mod continuous;
mod decode;
mod generator;
mod registry;
mod sampler;
mod stop;

pub use cache::{CachedDecoder, KvCache, ModelShape, Step, begin_step};
pub use config::GenerationConfig;
pub use continuous::{Admission, BatchLimits, ContinuousBatch, Event, SequenceId};
pub use decode::{generate_cached, generate_windowed};
pub use generator::TextGenerator;
pub use registry::{
    Decoder, DecoderRegistry, Engine, FolderLoader, GgufLoader, LoadOptions, OnDevice,
};
pub use sampler::{Sampler, process_logits};
pub use stop::{Generation, StopCriteria, StopReason};
