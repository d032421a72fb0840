//! # kiln-vision
//!
//! Image classification and generation on Burn, trained with the `kiln-core` trainer.
//!
//! - [`data`]: MNIST / Fashion-MNIST IDX files (raw or gzip) and folders of PNG/JPEG pictures;
//! - [`transform`]: normalisation and seeded augmentation (shifts, flips, and the robustness
//!   augmentations: photometric jitter, noise, clutter, cutout, rotation), applied in the
//!   batcher;
//! - [`corrupt`]: a seeded corruption suite (poor light, noise, blur, busy backgrounds, pose)
//!   at five severities, to measure how a classifier holds up;
//! - [`robustness`]: accuracy on clean and corrupted test sets, per corruption and severity,
//!   mean corrupted accuracy;
//! - [`generative`]: image generation: a class-conditional VAE and a denoising diffusion
//!   model (U-Net with residual blocks, group norm, attention, time and class embeddings;
//!   DDPM and DDIM sampling with classifier-free guidance), and their measures (class
//!   fidelity, the Fréchet distance in a LeNet-5's features);
//! - [`batch`]: image items and batches;
//! - [`models`]: the seed's convolution / pooling / dense building blocks with `SAME` and
//!   `VALID` padding, an MLP baseline, LeNet-5 and a small ResNet (Config + Module, one file
//!   per model);
//! - [`predict`]: class probabilities from tensors, items or files, and whole-set evaluation;
//! - [`plots`]: confusion-matrix heat maps and grids of misclassified examples (PNG);
//! - [`export`]: a trained classifier as a self-contained folder (config, labels, weights)
//!   that a server loads and feeds PNG/JPEG bytes.
//!
//! ## Cargo features
//!
//! Backends, forwarded to `kiln-core`: `flex` (default), `ndarray`, `wgpu`, `cuda`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod batch;
pub mod corrupt;
pub mod data;
mod error;
pub mod export;
pub mod generative;
pub mod models;
pub mod plots;
pub mod predict;
pub mod robustness;
pub mod transform;
pub mod upload;

pub use batch::{ImageBatch, ImageBatcher, ImageItem};
pub use corrupt::{Corruption, Severity, corrupt_image, corrupt_items};
pub use error::{Result, VisionError};
pub use export::{Architecture, ExportMeta, ExportedClassifier, export_classifier};
pub use models::{ImageClassifier, LeNet5, LeNet5Config, Mlp, MlpConfig, ResNet, ResNetConfig};
pub use predict::{Evaluation, Predictor, evaluate, evaluate_with, predict_proba};
pub use robustness::{Robustness, Suite, evaluate_robustness};
pub use transform::{Pipeline, Transform};
pub use upload::UploadDecoder;

/// Burn's RNG is per device and process-wide: tests that seed it and then draw from it hold
/// this lock, and so do tests that initialise random weights, so that parallel tests do not
/// interleave their draws.
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
