//! # kiln-recsys
//!
//! Recommenders on Burn, trained with the `kiln-core` trainer.
//!
//! - [`models`]: [`BiasedMf`](models::BiasedMf), biased matrix factorisation
//!   `r_ui = mu + b_u + b_i + p_u . q_i` (Config + Module);
//! - [`batch`]: (user, item, rating) triples and their batches.
//!
//! ## Cargo features
//!
//! Backends, forwarded to `kiln-core`: `flex` (default), `ndarray`, `wgpu`, `cuda`.

#![warn(missing_docs)]

pub mod batch;
pub mod models;

pub use batch::{Rating, RatingBatch, RatingBatcher};
pub use models::{BiasedMf, BiasedMfConfig};
