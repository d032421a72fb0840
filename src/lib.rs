//! # Kiln
//!
//! Applied deep learning in Rust on [Burn](https://burn.dev): train, evaluate and ship NLP,
//! vision and recommender models without Python.
//!
//! This facade re-exports the Kiln crates; most users depend on one domain crate directly.
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`core`] | `kiln-core` | trainer, losses, optimizers, metrics, checkpoints, data, backends |
//! | `nlp` | `kiln-nlp` | text models (feature `nlp`) |
//! | `vision` | `kiln-vision` | image models (feature `vision`) |
//! | `recsys` | `kiln-recsys` | recommenders (feature `recsys`) |
//!
//! ## Cargo features
//!
//! Domains: `nlp`, `vision`, `recsys` (all default). Backends: `flex` (default CPU), `ndarray`,
//! `wgpu`, `cuda`, forwarded to every crate.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use kiln_core as core;
#[cfg(feature = "nlp")]
pub use kiln_nlp as nlp;
#[cfg(feature = "recsys")]
pub use kiln_recsys as recsys;
#[cfg(feature = "vision")]
pub use kiln_vision as vision;
