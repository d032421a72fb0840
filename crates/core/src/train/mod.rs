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
//!   atomically ([`checkpoint`]);
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
//! This file is the [`Trainer`] and its loop (one concern: running epochs). Beside it:
//! `data.rs` ([`TrainStep`], [`Data`]), `config.rs` ([`TrainerConfig`] and its checks),
//! `parallel.rs` (the data-parallel step), `accumulate.rs` (micro-batches of one step, and the
//! parameters' strategy under activation checkpointing), `state.rs` (the trainer's checkpoint
//! state, the weights' digest), `optim_check.rs` (a checkpoint's optimizer state against the
//! model), `report.rs` ([`TrainReport`], [`Fitted`]), `stop.rs` (the stop rules),
//! `checkpoint.rs` (atomic checkpoint files), `history.rs` (`metrics.jsonl`, curves),
//! `progress.rs`.

mod accumulate;
pub mod checkpoint;
mod config;
mod data;
mod history;
mod optim_check;
mod parallel;
mod progress;
mod report;
mod state;
mod stop;

pub use config::{GradClipping, Monitor, TrainerConfig};
use data::SharedBatcher;
pub use data::{Data, TrainStep};
pub use report::{Best, Fitted, TrainReport};
use state::{TrainerState, record_err, restore, snapshot};

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
use progress::Progress;

/// Trains models that implement [`TrainStep`].
pub struct Trainer {
    config: TrainerConfig,
    device: Device,
    /// Data-parallel devices (the first is `device`); empty for single-device training.
    devices: Vec<Device>,
    group: Option<ProcessGroup>,
    metrics: Vec<Box<dyn Metric>>,
}

/// What one optimizer step computed before the update.
struct StepResult {
    /// The mean loss over the (global) batch.
    loss: f64,
    /// The number of examples in the (global) batch.
    examples: usize,
    /// One host output per batch or shard, for the metrics.
    outputs: Vec<BatchOutput>,
    grads: GradientsParams,
    /// Seconds since the start of training, as rank 0 counts them.
    elapsed: f64,
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

    /// The path of the latest checkpoint of a run folder.
    pub fn last_checkpoint(run_dir: &Path) -> PathBuf {
        run_dir.join("checkpoints").join("last.ckpt")
    }

    /// The path of the best checkpoint of a run folder.
    pub fn best_checkpoint(run_dir: &Path) -> PathBuf {
        run_dir.join("checkpoints").join("best.ckpt")
    }

    /// Trains `model` (initialised on the trainer's device) from scratch.
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
            let jsonl = dir.join("metrics.jsonl");
            if jsonl.exists() {
                std::fs::remove_file(&jsonl).map_err(|e| Error::io(&jsonl, e))?;
            }
        }
        let state = TrainerState {
            seed: self.config.seed,
            ..TrainerState::default()
        };
        if self.on_pool() {
            return crate::backend::on_cpu_pool(|| self.run(model, train, valid, state, None));
        }
        self.run(model, train, valid, state, None)
    }

    /// Continues the run whose folder is the configured `run_dir`, from its last checkpoint.
    ///
    /// `model` must have the architecture of the checkpointed one; its weights are replaced.
    /// The configuration may raise the stop rules (more epochs); the optimizer, schedule and
    /// seed should stay those of the original run for the result to equal an uninterrupted one.
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
        if let Some(optimizer) = sections.get("optimizer") {
            optim_check::check_optimizer_state(&model, optimizer, &path)?;
        }
        // A run killed after it logged an epoch but before that epoch's checkpoint: the log
        // goes back to the checkpoint's epochs, which the resumed run then continues.
        if self.rank().0 == 0 {
            history::rewrite_jsonl(&state.history, &dir.join("metrics.jsonl"))?;
        }
        if self.on_pool() {
            let sections = Some(sections);
            return crate::backend::on_cpu_pool(|| self.run(model, train, valid, state, sections));
        }
        self.run(model, train, valid, state, Some(sections))
    }

    /// Loads the model weights of a checkpoint file into `model`.
    pub fn load_model<M: Module>(model: M, checkpoint: &Path) -> Result<M> {
        let sections = Sections::load(checkpoint)?;
        Ok(restore(model, &sections, checkpoint)?.0)
    }

    fn run<M, I, B>(
        &self,
        model: M,
        train: &Data<I, B>,
        valid: Option<&Data<I, B>>,
        mut state: TrainerState,
        resumed: Option<Sections>,
    ) -> Result<Fitted<M>>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        let cfg = &self.config;
        if train.is_empty() {
            return Err(Error::InvalidConfig(
                "the training data set is empty".into(),
            ));
        }
        let steps_per_epoch = steps_per_epoch(train.len(), cfg.batch_size, cfg.accumulate);
        let planned_steps = cfg
            .stop
            .max_steps
            .or(cfg.stop.max_epochs.map(|e| e * steps_per_epoch))
            .unwrap_or(steps_per_epoch);

        let mut optim = cfg.optimizer.init();
        if let Some(clip) = cfg.grad_clipping {
            let clip = match clip {
                GradClipping::Norm(v) => GradientClippingConfig::Norm(v),
                GradClipping::Value(v) => GradientClippingConfig::Value(v),
            };
            optim = optim.with_grad_clipping(clip.init());
        }
        let mut scheduler = cfg.lr.init(planned_steps)?;
        if let Some(sections) = &resumed {
            let path = cfg
                .run_dir
                .as_deref()
                .map(Self::last_checkpoint)
                .unwrap_or_default();
            let section = |name: &str| {
                sections.get(name).ok_or_else(|| Error::Checkpoint {
                    path: path.clone(),
                    reason: format!("missing section `{name}`"),
                })
            };
            optim = optim
                .from_bytes(Bytes::from_bytes_vec(section("optimizer")?.to_vec()))
                .map_err(|e| record_err("optimizer", e))?;
            let record = LrSchedulerRecord::from_bytes(Bytes::from_bytes_vec(
                section("scheduler")?.to_vec(),
            ))
            .map_err(|e| record_err("scheduler", e))?;
            scheduler = scheduler.load_record(record);
        }

        // Activation checkpointing is a property of the autodiff device in Burn 0.22.
        let with_strategy = |device: Device| {
            let device = device.autodiff();
            if cfg.checkpoint_activations {
                device.gradient_checkpointing()
            } else {
                device
            }
        };
        let autodiff = with_strategy(self.device.clone());
        let parallel = !self.devices.is_empty();
        // Every rank starts from rank 0's weights (a resumed run's are equal already).
        let model = match &self.group {
            Some(group) if group.world() > 1 => broadcast_model(model, group)?,
            _ => model,
        };
        let mut model = model.train().fork(&autodiff);
        let checkpointing = cfg
            .checkpoint_activations
            .then_some(burn::tensor::GradientCheckpointingStrategy::Balanced);
        if let Some(strategy) = checkpointing {
            model = with_checkpointing(model, strategy);
        }

        let replica_devices: Vec<Device> = self
            .devices
            .iter()
            .map(|d| with_strategy(d.clone()))
            .collect();
        // Only rank 0 of a process group writes the run folder.
        let run_dir = cfg.run_dir.clone().filter(|_| self.rank().0 == 0);
        if let Some(dir) = &run_dir {
            let config_json = serde_json::to_vec_pretty(cfg).map_err(|e| Error::Json {
                context: "trainer config".into(),
                source: e,
            })?;
            checkpoint::write_atomic(&dir.join("config.json"), |w| {
                std::io::Write::write_all(w, &config_json)
            })?;
        }
        let checkpoints = cfg.checkpoints && run_dir.is_some();

        let mut train_metrics: Vec<Box<dyn Metric>> =
            std::iter::once(Box::new(MeanLoss::new()) as Box<dyn Metric>)
                .chain(self.metrics.iter().map(|m| m.clone_box()))
                .collect();
        let mut valid_metrics: Vec<Box<dyn Metric>> =
            train_metrics.iter().map(|m| m.clone_box()).collect();
        let needs_outputs = !self.metrics.is_empty();

        let monitor = cfg.monitor.clone().unwrap_or_else(|| {
            Monitor::new(if valid.is_some() {
                "valid_loss"
            } else {
                "train_loss"
            })
        });
        let mode = monitor.mode.unwrap_or_else(|| {
            let bare = monitor
                .metric
                .split_once('_')
                .map(|(_, m)| m)
                .unwrap_or(&monitor.metric);
            match train_metrics.iter().find(|m| m.name() == bare) {
                Some(m) if m.higher_is_better() => Mode::Max,
                _ => Mode::Min,
            }
        });

        let mut progress = Progress::new(cfg.progress);
        let started = Instant::now();
        let elapsed_before = state.elapsed_secs;
        let elapsed = || elapsed_before + started.elapsed().as_secs_f64();
        let mut lr = cfg.lr.initial_lr();
        let stop_reason = loop {
            if let Some(max) = cfg.stop.max_epochs
                && state.epoch >= max
            {
                break StopReason::MaxEpochs {
                    epochs: state.epoch,
                };
            }
            let epoch = state.epoch + 1;
            let epoch_seed = mix(state.seed, epoch as u64);
            self.device.seed(epoch_seed);
            autodiff.seed(epoch_seed);

            // Single device: Burn's data loader. Data-parallel: item indices, sharded per step.
            let mut loader = (!parallel).then(|| {
                let mut builder = DataLoaderBuilder::new(SharedBatcher(train.batcher.clone()))
                    .batch_size(cfg.batch_size)
                    .set_device(autodiff.clone());
                if cfg.shuffle {
                    builder = builder.shuffle(epoch_seed);
                }
                if cfg.num_workers > 0 {
                    builder = builder.num_workers(cfg.num_workers);
                }
                builder.build(train.dataset.clone())
            });
            let mut batches = loader.as_mut().map(|l| l.iter());
            let mut order: Vec<usize> = if parallel {
                (0..train.len()).collect()
            } else {
                Vec::new()
            };
            if cfg.shuffle {
                crate::data::shuffle(&mut order, epoch_seed);
            }
            let mut chunks = order.chunks(cfg.batch_size);

            progress.start_epoch(epoch, cfg.stop.max_epochs, steps_per_epoch);
            train_metrics.iter_mut().for_each(|m| m.reset());
            let mut step_stop = None;
            loop {
                let step = match batches.as_mut() {
                    Some(batches) => {
                        // Up to `accumulate` micro-batches, each loss weighted by its size
                        // (the sum is divided by the step's examples below).
                        let accumulating = cfg.accumulate > 1;
                        let mut micro = MicroBatches::new();
                        for _ in 0..cfg.accumulate {
                            let Some(item) = batches.next() else { break };
                            let batch = item.map_err(|e| Error::Data(e.to_string()))?;
                            let (loss_tensor, host) =
                                to_host(model.train_step(batch), needs_outputs)?;
                            let (loss, n) = (host.loss, host.batch_size);
                            let grads = if !loss.is_finite() {
                                GradientsParams::new()
                            } else if accumulating {
                                let weighted = loss_tensor * (n as f32);
                                GradientsParams::from_grads(weighted.backward(), &model)
                            } else {
                                GradientsParams::from_grads(loss_tensor.backward(), &model)
                            };
                            micro.add(&model, grads, loss, n as f64, n, vec![host]);
                        }
                        let Some(first_loss) = micro.first_loss() else {
                            break;
                        };
                        let examples = micro.examples;
                        let mut grads = micro.grads();
                        let loss = if micro.count == 1 {
                            first_loss
                        } else {
                            micro.weighted_loss / examples.max(1) as f64
                        };
                        if accumulating {
                            grads = scale_grads(&model, grads, 1.0 / examples.max(1) as f32);
                        }
                        StepResult {
                            loss,
                            examples,
                            outputs: micro.outputs,
                            grads,
                            elapsed: elapsed(),
                        }
                    }
                    None => {
                        let group: Vec<&[usize]> = chunks.by_ref().take(cfg.accumulate).collect();
                        if group.is_empty() {
                            break;
                        }
                        self.parallel_step(
                            &model,
                            train,
                            &group,
                            &replica_devices,
                            needs_outputs,
                            elapsed(),
                        )?
                    }
                };
                state.step += 1;
                if !step.loss.is_finite() {
                    return Err(Error::NonFiniteLoss {
                        epoch,
                        step: state.step,
                        value: step.loss,
                    });
                }
                let rate = scheduler.step();
                lr = rate.base();
                model = optim.step(rate, model, step.grads);
                if let Some(strategy) = checkpointing {
                    model = with_checkpointing(model, strategy);
                }
                // The loss metric (always first) counts the global batch; the others see this
                // process's outputs.
                train_metrics[0].update(&BatchOutput {
                    loss: step.loss,
                    batch_size: step.examples,
                    output: HostOutput::None,
                });
                for host in &step.outputs {
                    train_metrics[1..].iter_mut().for_each(|m| m.update(host));
                }
                progress.step(step.loss);

                step_stop = step_rule(&cfg.stop, step.loss, state.step, step.elapsed);
                if step_stop.is_some() {
                    break;
                }
            }

            let valid_values = match valid {
                Some(data) => self.validate(&model, data, &mut valid_metrics)?,
                None => BTreeMap::new(),
            };
            let record = EpochRecord {
                epoch,
                step: state.step,
                lr,
                train: values(&train_metrics),
                valid: valid_values,
                elapsed_secs: elapsed(),
            };
            state.epoch = epoch;
            state.elapsed_secs = record.elapsed_secs;
            state.history.push(record.clone());
            progress.end_epoch(&record);
            if let Some(dir) = &run_dir {
                record.append_jsonl(&dir.join("metrics.jsonl"))?;
            }

            let monitored = record.get(&monitor.metric).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "monitored metric `{}` is not computed; available: {}",
                    monitor.metric,
                    available(&record)
                ))
            })?;
            let early = cfg.stop.early_stopping;
            let min_delta = early.map(|e| e.min_delta).unwrap_or(0.0);
            let improved = monitored.is_finite()
                && state
                    .best
                    .as_ref()
                    .is_none_or(|b| mode.improves(monitored, b.value, min_delta));
            if improved {
                state.best = Some(Best {
                    metric: monitor.metric.clone(),
                    value: monitored,
                    epoch,
                });
                state.epochs_without_improvement = 0;
            } else {
                state.epochs_without_improvement += 1;
            }
            if checkpoints && let Some(dir) = &run_dir {
                let sections = snapshot(&model, &optim, &scheduler, &state)?;
                sections.save(&Self::last_checkpoint(dir))?;
                if improved {
                    sections.save(&Self::best_checkpoint(dir))?;
                }
            }

            if let Some(reason) = step_stop {
                break reason;
            }
            if let Some(target) = cfg.stop.target_loss
                && target.scope == LossScope::Epoch
            {
                let loss = record.get("valid_loss").unwrap_or(record.train["loss"]);
                if loss <= target.value {
                    break StopReason::TargetLoss {
                        loss,
                        target: target.value,
                        step: state.step,
                    };
                }
            }
            if let (Some(early), Some(best)) = (early, &state.best)
                && state.epochs_without_improvement >= early.patience
            {
                break StopReason::EarlyStopping {
                    monitor: monitor.metric.clone(),
                    best: best.value,
                    best_epoch: best.epoch,
                    patience: early.patience,
                };
            }
        };

        progress.message(&format!("stopped: {stop_reason}"));
        if let Some(dir) = &run_dir {
            write_curves(&state.history, &dir.join("curves.svg"))?;
            progress.message(&format!("run folder: {}", dir.display()));
        }
        // No rank returns before rank 0 has written the run folder: a rank that goes on to
        // resume or evaluate reads the final checkpoint, not the one before it.
        if let Some(group) = &self.group {
            group.barrier()?;
        }
        let report = TrainReport {
            stop_reason,
            epochs: state.epoch,
            steps: state.step,
            best: state.best,
            history: state.history,
            run_dir,
            train_secs: state.elapsed_secs,
        };
        Ok(Fitted {
            model: model.valid(),
            report,
        })
    }

    fn validate<M, I, B>(
        &self,
        model: &M,
        data: &Data<I, B>,
        metrics: &mut [Box<dyn Metric>],
    ) -> Result<BTreeMap<String, f64>>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        let model = model.valid();
        let loader = DataLoaderBuilder::new(SharedBatcher(data.batcher.clone()))
            .batch_size(
                self.config
                    .valid_batch_size
                    .unwrap_or(self.config.batch_size),
            )
            .set_device(self.device.clone())
            .build(data.dataset.clone());
        metrics.iter_mut().for_each(|m| m.reset());
        for item in loader.iter() {
            let batch = item.map_err(|e| Error::Data(e.to_string()))?;
            let out = model.valid_step(batch);
            let host = BatchOutput {
                loss: out.loss.into_scalar::<f64>(),
                batch_size: out.batch_size,
                output: match out.output {
                    Output::None => HostOutput::None,
                    other if metrics.len() > 1 => HostOutput::from_output(other)?,
                    _ => HostOutput::None,
                },
            };
            metrics.iter_mut().for_each(|m| m.update(&host));
        }
        Ok(values(metrics))
    }
}

/// Reads a training step's loss and copies its outputs to the host for the metrics (only when
/// a metric needs them). Returns the loss tensor, still in the graph, and the host copy.
fn to_host(out: StepOutput, needs_outputs: bool) -> Result<(Tensor<1>, BatchOutput)> {
    let host = BatchOutput {
        loss: out.loss.clone().into_scalar::<f64>(),
        batch_size: out.batch_size,
        output: if needs_outputs {
            HostOutput::from_output(out.output)?
        } else {
            HostOutput::None
        },
    };
    Ok((out.loss, host))
}

/// The step-level stop rules, checked after every optimizer step.
fn step_rule(stop: &StopRules, loss: f64, step: usize, elapsed: f64) -> Option<StopReason> {
    if let Some(target) = stop.target_loss
        && target.scope == LossScope::Step
        && loss <= target.value
    {
        return Some(StopReason::TargetLoss {
            loss,
            target: target.value,
            step,
        });
    }
    if let Some(max) = stop.max_steps
        && step >= max
    {
        return Some(StopReason::MaxSteps { steps: step });
    }
    if let Some(budget) = stop.time_budget_secs
        && elapsed >= budget
    {
        return Some(StopReason::TimeBudget { seconds: budget });
    }
    None
}

fn values(metrics: &[Box<dyn Metric>]) -> BTreeMap<String, f64> {
    metrics.iter().map(|m| (m.name(), m.value())).collect()
}

fn available(record: &EpochRecord) -> String {
    let mut names: Vec<String> = record.train.keys().map(|k| format!("train_{k}")).collect();
    names.extend(record.valid.keys().map(|k| format!("valid_{k}")));
    names.join(", ")
}

/// SplitMix64 of the seed and the epoch: independent streams per epoch from one seed.
fn mix(seed: u64, epoch: u64) -> u64 {
    let mut z = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
