//! The trainer's configuration: [`TrainerConfig`] (batch sizes, stop rules, the monitored
//! metric, gradient clipping, moving average, seed, run folder), checked by `validate` when a run starts.

use super::*;

/// Gradient clipping, applied by Burn's optimizer before each update.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradClipping {
    /// Rescale each parameter's gradient to at most this L2 norm.
    Norm(f32),
    /// Clamp every gradient element to `[-v, v]`.
    Value(f32),
}

/// The metric that picks the best checkpoint and drives early stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Monitor {
    /// A prefixed metric name: `valid_loss`, `valid_accuracy`, `train_loss`, ...
    pub metric: String,
    /// Whether smaller or larger is better; inferred from the metric when unset.
    pub mode: Option<Mode>,
}

impl Monitor {
    /// Monitors `metric`, its direction inferred.
    pub fn new(metric: &str) -> Self {
        Self {
            metric: metric.to_string(),
            mode: None,
        }
    }
}

/// Everything about a run except the model, the data and the metrics. Serializable, and saved
/// as `config.json` in the run folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub lr: LrSchedule,
    /// Training batch size: the examples of one forward and backward pass (a micro-batch
    /// when [`accumulate`](Self::accumulate) is above 1).
    pub batch_size: usize,
    /// Micro-batches per optimizer step (gradient accumulation, default 1): the update
    /// equals one step on a batch `accumulate` times larger, with the memory of one
    /// micro-batch. Steps, schedules and stop rules count optimizer steps.
    #[serde(default = "one")]
    pub accumulate: usize,
    /// Activation checkpointing: Burn's autodiff recomputes memory-bound operations'
    /// outputs during the backward pass instead of keeping them (its `Balanced` strategy),
    /// trading compute for peak memory. Gradients are unchanged.
    #[serde(default)]
    pub checkpoint_activations: bool,
    /// Validation batch size (the training one when unset).
    pub valid_batch_size: Option<usize>,
    /// When to stop.
    pub stop: StopRules,
    /// The metric for best checkpoints and early stopping (default `valid_loss` with
    /// validation data, else `train_loss`).
    pub monitor: Option<Monitor>,
    /// Gradient clipping.
    pub grad_clipping: Option<GradClipping>,
    /// An exponential moving average of the weights, validated, checkpointed and returned
    /// in their place ([`Ema`]).
    #[serde(default)]
    pub ema: Option<Ema>,
    /// Seed of the per-epoch device reseeding and data shuffling.
    pub seed: u64,
    /// Shuffle the training data every epoch.
    pub shuffle: bool,
    /// Data-loading worker threads (0: load on the training thread).
    pub num_workers: usize,
    /// Where logs, checkpoints and curves go; nothing is written when unset.
    pub run_dir: Option<PathBuf>,
    /// Write checkpoints (needs a run folder).
    pub checkpoints: bool,
    /// Progress output on stderr.
    pub progress: ProgressMode,
}

impl TrainerConfig {
    /// A configuration with batch size 32, one epoch, seed 42, shuffling, checkpoints on.
    pub fn new(optimizer: OptimizerConfig, lr: LrSchedule) -> Self {
        Self {
            optimizer,
            lr,
            batch_size: 32,
            accumulate: 1,
            checkpoint_activations: false,
            valid_batch_size: None,
            stop: StopRules::epochs(1),
            monitor: None,
            grad_clipping: None,
            ema: None,
            seed: 42,
            shuffle: true,
            num_workers: 0,
            run_dir: None,
            checkpoints: true,
            progress: ProgressMode::Auto,
        }
    }

    /// Sets the training batch size.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    /// Sets the micro-batches per optimizer step (gradient accumulation).
    pub fn with_accumulate(mut self, micro_batches: usize) -> Self {
        self.accumulate = micro_batches;
        self
    }
    /// Turns activation checkpointing on or off.
    pub fn with_checkpoint_activations(mut self, on: bool) -> Self {
        self.checkpoint_activations = on;
        self
    }
    /// Sets the validation batch size.
    pub fn with_valid_batch_size(mut self, batch_size: usize) -> Self {
        self.valid_batch_size = Some(batch_size);
        self
    }
    /// Sets the stop rules.
    pub fn with_stop(mut self, stop: StopRules) -> Self {
        self.stop = stop;
        self
    }
    /// Sets the monitored metric.
    pub fn with_monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = Some(monitor);
        self
    }
    /// Sets gradient clipping.
    pub fn with_grad_clipping(mut self, clipping: GradClipping) -> Self {
        self.grad_clipping = Some(clipping);
        self
    }
    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Turns shuffling on or off.
    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
    /// Sets the number of data-loading threads.
    pub fn with_num_workers(mut self, workers: usize) -> Self {
        self.num_workers = workers;
        self
    }
    /// Sets the run folder.
    pub fn with_run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }
    /// Turns checkpoints on or off.
    pub fn with_checkpoints(mut self, on: bool) -> Self {
        self.checkpoints = on;
        self
    }
    /// Keeps an exponential moving average of the weights ([`Ema`]): the run validates,
    /// checkpoints, picks the best epoch by and returns the average.
    pub fn with_ema(mut self, ema: Ema) -> Self {
        self.ema = Some(ema);
        self
    }

    /// Sets the progress output.
    pub fn with_progress(mut self, progress: ProgressMode) -> Self {
        self.progress = progress;
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        self.stop.validate()?;
        if self.batch_size == 0 || self.valid_batch_size == Some(0) {
            return Err(Error::InvalidConfig(
                "batch sizes must be at least 1".into(),
            ));
        }
        if self.accumulate == 0 {
            return Err(Error::InvalidConfig(
                "accumulate must be at least 1 micro-batch per step".into(),
            ));
        }
        if let Some(ema) = &self.ema {
            ema.validate()?;
        }
        if let Some(GradClipping::Norm(v) | GradClipping::Value(v)) = self.grad_clipping
            && !(v > 0.0 && v.is_finite())
        {
            return Err(Error::InvalidConfig(format!(
                "gradient clipping threshold must be positive, got {v}"
            )));
        }
        Ok(())
    }
}

/// The serde default of [`TrainerConfig::accumulate`] (configs saved before it existed).
fn one() -> usize {
    1
}
