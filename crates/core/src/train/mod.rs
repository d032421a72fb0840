//! The training engine: the seed's loop (initialise, forward, loss, back-propagate, update,
//! repeat until a stop rule fires) as a library.
//!
//! A model implements [`TrainStep`] for its batch type: it returns the loss and the outputs the
//! metrics need. The [`Trainer`] owns the rest: epochs over Burn's `DataLoader`, validation,
//! metrics, [stop rules](StopRules), the learning-rate schedule, gradient clipping, checkpoints,
//! progress, `metrics.jsonl` and the curves image.
//!
//! # Run folder
//! With a run folder set ([`TrainerConfig::with_run_dir`]) a run writes:
//! - `config.json`: the trainer configuration;
//! - `metrics.jsonl`: one JSON object per epoch (`epoch`, `step`, `lr`, `train_*`, `valid_*`,
//!   `elapsed_secs`);
//! - `checkpoints/last.ckpt` after every epoch and `checkpoints/best.ckpt` whenever the
//!   monitored metric improves: model, optimizer, scheduler and trainer state, written
//!   atomically ([`checkpoint`]); with a moving average of the weights ([`Ema`]) the model
//!   is the average, and the trained weights are kept beside it for resuming;
//! - `curves.svg` at the end.
//!
//! # Determinism and resuming
//! At the start of every epoch the trainer reseeds the device and the data-loader shuffle from
//! `(seed, epoch)`. The "RNG state" of a checkpoint is therefore the seed and the epoch, and a
//! run resumed from the checkpoint of epoch `e` ([`Trainer::resume`]) replays epochs `e + 1..`
//! exactly as an uninterrupted run would (on the CPU backends). Seed the device before
//! initialising the model (`device.seed(seed)`) for the whole run to be reproducible.
//!
//! # Data-parallel training
//! [`Trainer::data_parallel`] trains on several devices: each global batch is cut into one
//! contiguous shard per device, every device runs a replica of the model on its shard, and the
//! gradients are summed (weighted by shard size) before one optimizer step, so the update equals
//! the single-device update on the whole batch. [`Trainer::with_process_group`] extends this to
//! several processes or machines ([`ProcessGroup`]): each
//! process owns a slice of every batch, gradients are summed by an MPI all-reduce, and rank 0 alone writes
//! the run folder. A data-parallel run reads its items in the order of
//! [`shuffle`](crate::data::shuffle) seeded by `(seed, epoch)` (or in data-set order without
//! shuffling), so it visits the same batches as a single-device run only with shuffling off.
//! Models with batch statistics (batch norm) see per-shard statistics, as in PyTorch's DDP
//! without SyncBatchNorm. See `docs/distributed.md`.
//!
//! # Files
//! This file is the [`Trainer`]: its devices, process group and metrics, and `fit` / `resume`
//! preparing the state a run starts from. Beside it: `run.rs` (the epoch loop: updates, stop
//! rules, validation, records, checkpoints), `strategy.rs` (the execution modes behind one
//! trait: one device; several devices and a process group in `parallel.rs`), `run_dir.rs` (the
//! run folder's files), `data.rs` ([`TrainStep`], [`Data`]), `config.rs` ([`TrainerConfig`]
//! and its checks), `accumulate.rs` (micro-batches of one step, and the
//! parameters' strategy under activation checkpointing), `state.rs` (the trainer's checkpoint
//! state, the weights' digest), `optim_check.rs` (a checkpoint's optimizer state against the
//! model), `ema.rs` (the moving average of the weights), `report.rs` ([`TrainReport`], [`Fitted`]), `stop.rs` (the stop rules),
//! `checkpoint.rs` (atomic checkpoint files), `history.rs` (`metrics.jsonl`, curves),
//! `progress.rs`.

mod accumulate;
pub mod checkpoint;
mod config;
mod data;
mod ema;
mod history;
mod optim_check;
mod parallel;
mod progress;
mod report;
mod run;
mod run_dir;
mod state;
mod stop;
mod strategy;

pub use config::{GradClipping, Monitor, TrainerConfig};
use data::SharedBatcher;
pub use data::{Data, TrainStep};
pub use ema::Ema;
pub use report::{Best, Fitted, TrainReport};
use state::{TrainerState, load_weights, record_err, restore, snapshot};

pub use history::{EpochRecord, write_curves};
pub use progress::ProgressMode;
pub use stop::{EarlyStopping, LossScope, Mode, StopReason, StopRules, TargetLoss};

/// Optimizer steps in one epoch of `items` examples: batches of `batch_size` (the last one
/// may be short), `accumulate` batches summed per step (the last step may take fewer). The
/// one place this is computed: the trainer, its progress and the examples' plans.
pub fn steps_per_epoch(items: usize, batch_size: usize, accumulate: usize) -> usize {
    items.div_ceil(batch_size).div_ceil(accumulate.max(1))
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::data::dataloader::{DataLoaderBuilder, batcher::Batcher};
use burn::data::dataset::Dataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::lr_scheduler::LrSchedulerRecord;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::distributed::{
    ProcessGroup, all_reduce_grads, broadcast_model, shard_ranges, sum_on_device,
};
use crate::error::{Error, Result};
use crate::metrics::{BatchOutput, HostOutput, MeanLoss, Metric, Output, StepOutput};
use crate::optim::{LrSchedule, OptimizerConfig};
use accumulate::{MicroBatches, scale_grads, with_checkpointing};
use checkpoint::Sections;
use parallel::{Distributed, Replicas};
use progress::Progress;
use run_dir::RunFolder;
use strategy::{SingleDevice, StepPlan, Strategy};

/// Trains models that implement [`TrainStep`].
pub struct Trainer {
    config: TrainerConfig,
    device: Device,
    /// Data-parallel devices (the first is `device`); empty for single-device training.
    devices: Vec<Device>,
    group: Option<ProcessGroup>,
    metrics: Vec<Box<dyn Metric>>,
}

impl Trainer {
    /// A trainer that trains on `device` (autodiff is enabled on it internally).
    pub fn new(config: TrainerConfig, device: &Device) -> Self {
        Self {
            config,
            device: device.clone().inner(),
            devices: Vec::new(),
            group: None,
            metrics: Vec::new(),
        }
    }

    /// A trainer that trains data-parallel on `devices` (see the module docs): every batch is
    /// split over the devices and their gradients are summed before each step. The first device
    /// holds the model, validates and checkpoints. A device may be listed more than once (two
    /// replicas on one CPU, say).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty device list.
    pub fn data_parallel(config: TrainerConfig, devices: &[Device]) -> Result<Self> {
        let first = devices.first().ok_or_else(|| {
            Error::InvalidConfig("data-parallel training needs at least one device".into())
        })?;
        let mut trainer = Self::new(config, first);
        trainer.devices = devices.iter().map(|d| d.clone().inner()).collect();
        Ok(trainer)
    }

    /// Trains as one rank of a multi-process group: this process takes its slice of every
    /// batch, and gradients are summed over the group before each step. Every rank must run the
    /// same model, data and configuration; only rank 0 writes the run folder.
    pub fn with_process_group(mut self, group: ProcessGroup) -> Self {
        if self.devices.is_empty() {
            self.devices = vec![self.device.clone()];
        }
        self.group = Some(group);
        self
    }

    /// This process's rank and the number of processes (`(0, 1)` without a process group).
    pub fn rank(&self) -> (usize, usize) {
        self.group
            .as_ref()
            .map_or((0, 1), |g| (g.rank(), g.world()))
    }

    /// Adds a metric, computed on training and on validation batches. The loss is always
    /// reported as `loss`.
    pub fn with_metric(mut self, metric: impl Metric + 'static) -> Self {
        self.metrics.push(Box::new(metric));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// Whether the training loop runs on a worker of the CPU thread pool
    /// ([`crate::backend::on_cpu_pool`]): for one device of a CPU backend, when the pool has
    /// another thread for the kernels' parallel work (data-parallel replicas run on their own
    /// threads and would wait on a busy pool).
    fn on_pool(&self) -> bool {
        self.devices.is_empty()
            && crate::Backend::of(&self.device).is_some_and(|b| b.is_cpu())
            && rayon::current_num_threads() > 1
    }

    /// `device` as the trainer differentiates on it: autodiff, with activation checkpointing
    /// when configured (a property of the autodiff device in Burn 0.22).
    fn autodiff_device(&self, device: &Device) -> Device {
        let device = device.clone().autodiff();
        if self.config.checkpoint_activations {
            device.gradient_checkpointing()
        } else {
            device
        }
    }

    /// The execution strategy of this trainer's devices and process group.
    fn strategy<'t, M, I, B>(&'t self, needs_outputs: bool) -> Box<dyn Strategy<M, I, B> + 't>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        let cfg = &self.config;
        let plan = StepPlan {
            batch_size: cfg.batch_size,
            accumulate: cfg.accumulate,
            shuffle: cfg.shuffle,
            needs_outputs,
        };
        if self.devices.is_empty() {
            return Box::new(SingleDevice {
                device: self.autodiff_device(&self.device),
                plan,
                num_workers: cfg.num_workers,
                loader: None,
                items: std::marker::PhantomData,
            });
        }
        let (rank, world) = self.rank();
        let replicas = Replicas {
            main: self.device.clone(),
            devices: self
                .devices
                .iter()
                .map(|d| self.autodiff_device(d))
                .collect(),
            plan,
            rank,
            world,
        };
        match &self.group {
            Some(group) => Box::new(Distributed { replicas, group }),
            None => Box::new(replicas),
        }
    }

    /// The path of the latest checkpoint of a run folder.
    pub fn last_checkpoint(run_dir: &Path) -> PathBuf {
        run_dir::last_checkpoint(run_dir)
    }

    /// The path of the best checkpoint of a run folder.
    pub fn best_checkpoint(run_dir: &Path) -> PathBuf {
        run_dir::best_checkpoint(run_dir)
    }

    /// Trains `model` (initialised on the trainer's device) from scratch.
    ///
    /// # Errors
    /// A configuration that fails its checks or an empty training set ([`Error::InvalidConfig`]), a
    /// monitored metric that is not computed, a non-finite loss ([`Error::NonFiniteLoss`], the last
    /// good checkpoint kept), a data-loading failure, an unwritable run folder, or a process group
    /// that fails.
    pub fn fit<M, I, B>(
        &self,
        model: M,
        train: &Data<I, B>,
        valid: Option<&Data<I, B>>,
    ) -> Result<Fitted<M>>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        self.config.validate()?;
        if let Some(dir) = &self.config.run_dir
            && self.rank().0 == 0
        {
            RunFolder::new(dir).start_fresh()?;
        }
        let state = TrainerState {
            seed: self.config.seed,
            ..TrainerState::default()
        };
        self.run(model, train, valid, state, None, None)
    }

    /// Continues the run whose folder is the configured `run_dir`, from its last checkpoint.
    ///
    /// `model` must have the architecture of the checkpointed one; its weights are replaced.
    /// The configuration may raise the stop rules (more epochs); the optimizer, schedule and
    /// seed should stay those of the original run for the result to equal an uninterrupted one.
    ///
    /// # Errors
    /// As [`Self::fit`]; also no `run_dir`, a missing, truncated or corrupted checkpoint, or one
    /// whose model or optimizer state does not match `model` ([`Error::Checkpoint`]).
    pub fn resume<M, I, B>(
        &self,
        model: M,
        train: &Data<I, B>,
        valid: Option<&Data<I, B>>,
    ) -> Result<Fitted<M>>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        self.config.validate()?;
        let dir = self.config.run_dir.as_ref().ok_or_else(|| {
            Error::InvalidConfig(
                "resume needs the run folder of the interrupted run (run_dir)".into(),
            )
        })?;
        let path = Self::last_checkpoint(dir);
        let sections = Sections::load(&path)?;
        let (model, state) = restore(model, &sections, &path)?;
        // A run with a moving average checkpoints the average as `model` and the weights it
        // trains as `trained`.
        let (model, ema) = match sections.get("trained") {
            Some(bytes) => (
                load_weights(model.clone(), bytes, "trained", &path)?,
                Some(model),
            ),
            None => (model, None),
        };
        if let Some(optimizer) = sections.get("optimizer") {
            optim_check::check_optimizer_state(&model, optimizer, &path)?;
        }
        // A run killed after it logged an epoch but before that epoch's checkpoint: the log
        // goes back to the checkpoint's epochs, which the resumed run then continues.
        if self.rank().0 == 0 {
            RunFolder::new(dir).rewind_log(&state.history)?;
        }
        self.run(model, train, valid, state, Some(sections), ema)
    }

    /// Loads the model weights of a checkpoint file into `model`.
    ///
    /// # Errors
    /// An unreadable, truncated or corrupted file, or weights that do not match `model`
    /// ([`Error::Checkpoint`]).
    pub fn load_model<M: Module>(model: M, checkpoint: &Path) -> Result<M> {
        let sections = Sections::load(checkpoint)?;
        Ok(restore(model, &sections, checkpoint)?.0)
    }
}
