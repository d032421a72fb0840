//! # kiln-vision
//!
//! Image classification on Burn, trained with the `kiln-core` trainer.
//!
//! - [`models`]: [`LeNet5`](models::LeNet5) (Config + Module, one file per model);
//! - [`batch`]: image items and the batcher that stacks them into `[N, C, H, W]` tensors.
//!
//! ## Cargo features
//!
//! Backends, forwarded to `kiln-core`: `flex` (default), `ndarray`, `wgpu`, `cuda`.

#![warn(missing_docs)]

pub mod batch;
pub mod models;

pub use batch::{ImageBatch, ImageBatcher, ImageItem};
pub use models::{LeNet5, LeNet5Config};
