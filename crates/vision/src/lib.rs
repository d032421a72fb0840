//! # kiln-vision
//!
//! Image classification on Burn, trained with the `kiln-core` trainer.
//!
//! - [`data`]: MNIST / Fashion-MNIST IDX files (raw or gzip) and folders of PNG/JPEG pictures;
//! - [`transform`]: normalisation and seeded augmentation, applied in the batcher;
//! - [`batch`]: image items and batches;
//! - [`models`]: the seed's convolution / pooling / dense building blocks with `SAME` and
//!   `VALID` padding, an MLP baseline, LeNet-5 and a small ResNet (Config + Module, one file
//!   per model);
//! - [`predict`]: class probabilities from tensors, items or files, and whole-set evaluation;
//! - [`plots`]: confusion-matrix heat maps and grids of misclassified examples (PNG).
//!
//! ## Cargo features
//!
//! Backends, forwarded to `kiln-core`: `flex` (default), `ndarray`, `wgpu`, `cuda`.

#![warn(missing_docs)]

pub mod batch;
pub mod data;
mod error;
pub mod models;
pub mod plots;
pub mod predict;
pub mod transform;

pub use batch::{ImageBatch, ImageBatcher, ImageItem};
pub use error::{Result, VisionError};
pub use models::{ImageClassifier, LeNet5, LeNet5Config, Mlp, MlpConfig, ResNet, ResNetConfig};
pub use predict::{Evaluation, Predictor, evaluate, evaluate_with, predict_proba};
pub use transform::{Pipeline, Transform};
