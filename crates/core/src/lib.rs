//! # kiln-core
//!
//! The training engine every Kiln domain crate builds on:
//!
//! - [`train`]: the [`Trainer`] (epochs, validation, stop rules, LR schedules, gradient
//!   clipping, checkpoints and resume, progress, `metrics.jsonl`, curves) and the
//!   [`TrainStep`] trait models implement;
//! - [`loss`]: MSE (and the seed's `1/(2N) sum (y - y_hat)^2`), MAE, Huber, cross-entropy with
//!   label smoothing and an ignore index, binary cross-entropy on logits;
//! - [`ops`]: faster (or exact) forms of a few Burn operations: [`ops::linear`] as one GEMM,
//!   [`ops::gelu_exact`] with an exact gradient and a multi-threaded CPU inference kernel;
//! - [`optim`]: serde-able configs over Burn's optimizers and LR schedulers;
//! - [`metrics`]: streaming metrics and the [`Metric`] trait;
//! - [`data`]: seeded splits and a checksummed downloader;
//! - [`plot`]: labelled heat maps and captioned image grids as PNGs, drawn by plotters with
//!   the font this crate ships;
//! - [`backend`]: turns `cpu` / `flex` / `ndarray` / `wgpu` / `cuda` into a device.
//!
//! ## Cargo features
//!
//! | feature | backend |
//! |---|---|
//! | `flex` (default) | Burn's pure-Rust CPU backend, the default CPU backend |
//! | `ndarray` | Burn's ndarray CPU backend (deprecated by Burn 0.22) |
//! | `wgpu` | GPUs through wgpu (Vulkan, Metal, DX12) |
//! | `cuda` | NVIDIA GPUs through CUDA |
//! | `mpi` | (not a backend) [`distributed::ProcessGroup`] on MPI: training across processes |
//!
//! ## Example
//!
//! ```
//! use burn::prelude::*;
//! use burn::nn::{Linear, LinearConfig};
//! use kiln_core::{Data, StepOutput, TrainStep, Trainer, TrainerConfig, loss};
//! use kiln_core::optim::{LrSchedule, OptimizerConfig};
//! use kiln_core::train::StopRules;
//! use burn::data::dataloader::batcher::Batcher;
//! use burn::data::dataset::InMemDataset;
//!
//! #[derive(Module, Debug)]
//! struct Line { linear: Linear }
//!
//! #[derive(Clone, Debug)]
//! struct Batch { x: Tensor<2>, y: Tensor<2> }
//!
//! #[derive(Clone)]
//! struct Pairs;
//! impl Batcher<(f32, f32), Batch> for Pairs {
//!     fn batch(&self, items: Vec<(f32, f32)>, device: &Device) -> Batch {
//!         let n = items.len();
//!         let x: Vec<f32> = items.iter().map(|p| p.0).collect();
//!         let y: Vec<f32> = items.iter().map(|p| p.1).collect();
//!         Batch {
//!             x: Tensor::<1>::from_floats(x.as_slice(), device).reshape([n, 1]),
//!             y: Tensor::<1>::from_floats(y.as_slice(), device).reshape([n, 1]),
//!         }
//!     }
//! }
//!
//! impl TrainStep<Batch> for Line {
//!     fn train_step(&self, batch: Batch) -> StepOutput {
//!         let n = batch.x.dims()[0];
//!         StepOutput::loss_only(loss::mse(self.linear.forward(batch.x), batch.y), n)
//!     }
//! }
//!
//! let device = kiln_core::backend::device("cpu").unwrap();
//! device.seed(0);
//! let points: Vec<(f32, f32)> = (0..32).map(|i| (i as f32 / 32.0, 2.0 * i as f32 / 32.0 + 1.0)).collect();
//! let data = Data::new(InMemDataset::new(points), Pairs);
//! let config = TrainerConfig::new(OptimizerConfig::adam(), LrSchedule::constant(0.05))
//!     .with_batch_size(8)
//!     .with_stop(StopRules::epochs(40))
//!     .with_progress(kiln_core::train::ProgressMode::Quiet);
//! let fitted = Trainer::new(config, &device)
//!     .fit(Line { linear: LinearConfig::new(1, 1).init(&device) }, &data, None)
//!     .unwrap();
//! assert!(fitted.report.last().unwrap().train["loss"] < 0.05);
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

/// Kiln's CPU kernels (the `kiln-kernels` crate): the one checked GEMM, packed products,
/// the LSTM kernel, the flex glue. Domain crates reach them through here.
pub use kiln_kernels as kernels;

pub mod backend;
pub mod data;
pub mod distributed;
mod error;
pub mod loss;
pub mod metrics;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod train;

pub use backend::Backend;
pub use error::{Error, Result};
pub use metrics::{Metric, Output, StepOutput};
pub use train::{Data, Fitted, TrainReport, TrainStep, Trainer, TrainerConfig};

/// Writes a JSON report (an example's final metrics) atomically, creating parent folders.
///
/// # Errors
/// [`Error::Json`] when the report cannot be serialised; [`Error::Io`] when the file cannot be
/// written.
pub fn write_report(path: &std::path::Path, report: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(report).map_err(|e| Error::Json {
        context: format!("report {}", path.display()),
        source: e,
    })?;
    train::checkpoint::write_atomic(path, |w| std::io::Write::write_all(w, &text))
}

#[cfg(test)]
pub(crate) fn test_device() -> burn::tensor::Device {
    backend::device("cpu").expect("a CPU backend is compiled in")
}
