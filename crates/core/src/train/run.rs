//! The epoch loop of the [`Trainer`]: the optimizer and schedule (restored when resuming),
//! then per epoch the steps of the execution [`Strategy`] with an update after each, the
//! step-level stop rules, validation, the epoch's record, the monitored metric and the
//! checkpoints, and the epoch-level stop rules.

use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::ModuleOptimizer;
use burn::tensor::GradientCheckpointingStrategy;

use super::run_dir::RunFolder;
use super::strategy::{EpochSteps, Strategy};
use super::*;

/// What a training run carries from epoch to epoch, besides the model.
struct Run<'t> {
    cfg: &'t TrainerConfig,
    optim: ModuleOptimizer,
    scheduler: ModuleLrScheduler,
    state: TrainerState,
    /// Activation checkpointing, re-applied to the parameters after every update.
    checkpointing: Option<GradientCheckpointingStrategy>,
    train_metrics: Vec<Box<dyn Metric>>,
    valid_metrics: Vec<Box<dyn Metric>>,
    monitor: Monitor,
    mode: Mode,
    progress: Progress,
    /// Rank 0's run folder.
    folder: Option<RunFolder>,
    steps_per_epoch: usize,
    /// The learning rate of the last step.
    lr: f64,
    started: Instant,
    /// Training seconds before this process started (a resumed run's).
    elapsed_before: f64,
}

impl Trainer {
    /// Trains `model` from `state` (a fresh one, or a checkpoint's with its `resumed`
    /// sections) until a stop rule fires: on a worker of the CPU pool when
    /// [`on_pool`](Trainer::on_pool) says so, here otherwise.
    pub(super) fn run<M, I, B>(
        &self,
        model: M,
        train: &Data<I, B>,
        valid: Option<&Data<I, B>>,
        state: TrainerState,
        resumed: Option<Sections>,
        ema: Option<M>,
    ) -> Result<Fitted<M>>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        if self.on_pool() {
            return crate::backend::on_cpu_pool(|| {
                self.run_here(model, train, valid, state, resumed, ema)
            });
        }
        self.run_here(model, train, valid, state, resumed, ema)
    }

    /// [`run`](Self::run) on this thread. `ema` is a resumed run's moving average (a fresh
    /// one starts from the prepared model).
    fn run_here<M, I, B>(
        &self,
        model: M,
        train: &Data<I, B>,
        valid: Option<&Data<I, B>>,
        state: TrainerState,
        resumed: Option<Sections>,
        ema: Option<M>,
    ) -> Result<Fitted<M>>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        if train.is_empty() {
            return Err(Error::InvalidConfig(
                "the training data set is empty".into(),
            ));
        }
        let mut run = Run::start(self, state, resumed.as_ref(), valid.is_some(), train.len())?;
        let mut strategy: Box<dyn Strategy<M, I, B> + '_> = self.strategy(run.needs_outputs());
        let autodiff = self.autodiff_device(&self.device);
        let prepared = strategy.prepare(model)?;
        let mut ema = self
            .config
            .ema
            .map(|_| ema.unwrap_or_else(|| prepared.clone()));
        let mut model = prepared.train().fork(&autodiff);
        if let Some(strategy) = run.checkpointing {
            model = with_checkpointing(model, strategy);
        }
        let stop_reason = loop {
            if let Some(reason) = run.epochs_done().or_else(|| run.spent_before()) {
                break reason;
            }
            let epoch = run.state.epoch + 1;
            let epoch_seed = mix(run.state.seed, epoch as u64);
            self.device.seed(epoch_seed);
            autodiff.seed(epoch_seed);
            let steps = strategy.epoch(train, epoch_seed)?;
            let (trained, step_stop) = run.train_epoch(model, &mut ema, steps, epoch)?;
            model = trained;
            // With a moving average, the average is what is validated and checkpointed.
            let valid_values = match valid {
                Some(data) => {
                    let validated = ema.as_ref().unwrap_or(&model);
                    self.validate(validated, data, &mut run.valid_metrics)?
                }
                None => BTreeMap::new(),
            };
            run.end_epoch(&model, ema.as_ref(), epoch, valid_values)?;
            if let Some(reason) = step_stop.or_else(|| run.epoch_rule()) {
                break reason;
            }
        };
        let report = run.finish(stop_reason)?;
        // No rank returns before rank 0 has written the run folder: a rank that goes on to
        // resume or evaluate reads the final checkpoint, not the one before it.
        strategy.finish()?;
        Ok(Fitted {
            model: ema.unwrap_or_else(|| model.valid()),
            report,
        })
    }

    /// The metrics' values over `data` on the model's inference copy.
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

impl<'t> Run<'t> {
    /// The optimizer and schedule (restored from `resumed`), the metrics, the monitored
    /// metric and rank 0's run folder with its `config.json` written.
    fn start(
        trainer: &'t Trainer,
        state: TrainerState,
        resumed: Option<&Sections>,
        has_valid: bool,
        items: usize,
    ) -> Result<Self> {
        let cfg = &trainer.config;
        let steps_per_epoch = steps_per_epoch(items, cfg.batch_size, cfg.accumulate);
        let planned_steps = cfg
            .stop
            .max_steps
            .or(cfg.stop.max_epochs.map(|e| e * steps_per_epoch))
            .unwrap_or(steps_per_epoch);
        let (optim, scheduler) = optimizer(cfg, planned_steps, resumed)?;

        let folder = cfg
            .run_dir
            .as_deref()
            .filter(|_| trainer.rank().0 == 0)
            .map(RunFolder::new);
        if let Some(folder) = &folder {
            folder.write_config(cfg)?;
        }
        let train_metrics: Vec<Box<dyn Metric>> =
            std::iter::once(Box::new(MeanLoss::new()) as Box<dyn Metric>)
                .chain(trainer.metrics.iter().map(|m| m.clone_box()))
                .collect();
        let valid_metrics = train_metrics.iter().map(|m| m.clone_box()).collect();
        let (monitor, mode) = monitored(cfg, has_valid, &train_metrics);
        Ok(Self {
            cfg,
            optim,
            scheduler,
            elapsed_before: state.elapsed_secs,
            state,
            checkpointing: cfg
                .checkpoint_activations
                .then_some(GradientCheckpointingStrategy::Balanced),
            train_metrics,
            valid_metrics,
            monitor,
            mode,
            progress: Progress::new(cfg.progress),
            folder,
            steps_per_epoch,
            lr: cfg.lr.initial_lr(),
            started: Instant::now(),
        })
    }

    /// Whether a metric besides the loss reads the model's outputs.
    fn needs_outputs(&self) -> bool {
        self.train_metrics.len() > 1
    }

    /// Seconds of training, a resumed run's earlier ones included.
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// The epoch limit, checked before each epoch.
    fn epochs_done(&self) -> Option<StopReason> {
        let max = self.cfg.stop.max_epochs?;
        (self.state.epoch >= max).then_some(StopReason::MaxEpochs {
            epochs: self.state.epoch,
        })
    }

    /// A resumed run's steps or time already spent before its first step (the step-level
    /// rules are otherwise checked only after a step, which a finished run must not take).
    fn spent_before(&self) -> Option<StopReason> {
        let stop = &self.cfg.stop;
        if let Some(max) = stop.max_steps
            && self.state.step >= max
        {
            return Some(StopReason::MaxSteps {
                steps: self.state.step,
            });
        }
        match stop.time_budget_secs {
            Some(budget) if self.elapsed_before > 0.0 && self.elapsed_before >= budget => {
                Some(StopReason::TimeBudget { seconds: budget })
            }
            _ => None,
        }
    }

    /// One epoch's steps, each followed by the update (and the moving average's), until the
    /// epoch ends or a step-level stop rule fires (returned).
    fn train_epoch<M: TrainStep<B>, B>(
        &mut self,
        mut model: M,
        ema: &mut Option<M>,
        mut steps: Box<dyn EpochSteps<M> + '_>,
        epoch: usize,
    ) -> Result<(M, Option<StopReason>)> {
        self.progress
            .start_epoch(epoch, self.cfg.stop.max_epochs, self.steps_per_epoch);
        self.train_metrics.iter_mut().for_each(|m| m.reset());
        let (started, before) = (self.started, self.elapsed_before);
        let clock = move || before + started.elapsed().as_secs_f64();
        while let Some(step) = steps.next(&model, &clock)? {
            self.state.step += 1;
            if !step.loss.is_finite() {
                return Err(Error::NonFiniteLoss {
                    epoch,
                    step: self.state.step,
                    value: step.loss,
                });
            }
            let rate = self.scheduler.step();
            self.lr = rate.base();
            model = self.optim.step(rate, model, step.grads);
            if let Some(strategy) = self.checkpointing {
                model = with_checkpointing(model, strategy);
            }
            if let (Some(average), Some(config)) = (ema.take(), self.cfg.ema) {
                let d = config.decay_at(self.state.step);
                *ema = Some(super::ema::blend(average, &model.valid(), d));
            }
            // The loss metric (always first) counts the global batch; the others see this
            // process's outputs.
            self.train_metrics[0].update(&BatchOutput {
                loss: step.loss,
                batch_size: step.examples,
                output: HostOutput::None,
            });
            for host in &step.outputs {
                self.train_metrics[1..]
                    .iter_mut()
                    .for_each(|m| m.update(host));
            }
            self.progress.step(step.loss);
            let stop = step_rule(&self.cfg.stop, step.loss, self.state.step, step.elapsed);
            if stop.is_some() {
                return Ok((model, stop));
            }
        }
        Ok((model, None))
    }

    /// The epoch's record (logged), the monitored metric's best, and the checkpoints (with a
    /// moving average, `average` as the model and `model` as the trained weights).
    fn end_epoch<M: Module>(
        &mut self,
        model: &M,
        average: Option<&M>,
        epoch: usize,
        valid: BTreeMap<String, f64>,
    ) -> Result<()> {
        let record = EpochRecord {
            epoch,
            step: self.state.step,
            lr: self.lr,
            train: values(&self.train_metrics),
            valid,
            elapsed_secs: self.elapsed(),
        };
        self.state.epoch = epoch;
        self.state.elapsed_secs = record.elapsed_secs;
        self.progress.end_epoch(&record);
        if let Some(folder) = &self.folder {
            folder.log(&record)?;
        }
        let monitored = record.get(&self.monitor.metric).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "monitored metric `{}` is not computed; available: {}",
                self.monitor.metric,
                available(&record)
            ))
        });
        self.state.history.push(record);
        let monitored = monitored?;
        let min_delta = self.cfg.stop.early_stopping.map_or(0.0, |e| e.min_delta);
        let improved = monitored.is_finite()
            && self
                .state
                .best
                .as_ref()
                .is_none_or(|b| self.mode.improves(monitored, b.value, min_delta));
        if improved {
            self.state.best = Some(Best {
                metric: self.monitor.metric.clone(),
                value: monitored,
                epoch,
            });
            self.state.epochs_without_improvement = 0;
        } else {
            self.state.epochs_without_improvement += 1;
        }
        if self.cfg.checkpoints
            && let Some(folder) = &self.folder
        {
            let sections = snapshot(model, average, &self.optim, &self.scheduler, &self.state)?;
            folder.save_checkpoint(&sections, improved)?;
        }
        Ok(())
    }

    /// The epoch-level stop rules (target loss per epoch, early stopping), checked after an
    /// epoch has been recorded.
    fn epoch_rule(&self) -> Option<StopReason> {
        let record = self.state.history.last()?;
        if let Some(target) = self.cfg.stop.target_loss
            && target.scope == LossScope::Epoch
        {
            let loss = record.get("valid_loss").unwrap_or(record.train["loss"]);
            if loss <= target.value {
                return Some(StopReason::TargetLoss {
                    loss,
                    target: target.value,
                    step: self.state.step,
                });
            }
        }
        if let (Some(early), Some(best)) = (self.cfg.stop.early_stopping, &self.state.best)
            && self.state.epochs_without_improvement >= early.patience
        {
            return Some(StopReason::EarlyStopping {
                monitor: self.monitor.metric.clone(),
                best: best.value,
                best_epoch: best.epoch,
                patience: early.patience,
            });
        }
        None
    }

    /// The curves, and the report.
    fn finish(self, stop_reason: StopReason) -> Result<TrainReport> {
        self.progress.message(&format!("stopped: {stop_reason}"));
        if let Some(folder) = &self.folder {
            folder.write_curves(&self.state.history)?;
            self.progress
                .message(&format!("run folder: {}", folder.dir().display()));
        }
        Ok(TrainReport {
            stop_reason,
            epochs: self.state.epoch,
            steps: self.state.step,
            best: self.state.best,
            history: self.state.history,
            run_dir: self.folder.map(|f| f.dir().to_path_buf()),
            train_secs: self.state.elapsed_secs,
        })
    }
}

/// The optimizer (with gradient clipping) and the learning-rate schedule over
/// `planned_steps`, restored from a checkpoint's sections when resuming.
fn optimizer(
    cfg: &TrainerConfig,
    planned_steps: usize,
    resumed: Option<&Sections>,
) -> Result<(ModuleOptimizer, ModuleLrScheduler)> {
    let mut optim = cfg.optimizer.init();
    if let Some(clip) = cfg.grad_clipping {
        let clip = match clip {
            GradClipping::Norm(v) => GradientClippingConfig::Norm(v),
            GradClipping::Value(v) => GradientClippingConfig::Value(v),
        };
        optim = optim.with_grad_clipping(clip.init());
    }
    let mut scheduler = cfg.lr.init(planned_steps)?;
    if let Some(sections) = resumed {
        let path = cfg
            .run_dir
            .as_deref()
            .map(run_dir::last_checkpoint)
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
        let record =
            LrSchedulerRecord::from_bytes(Bytes::from_bytes_vec(section("scheduler")?.to_vec()))
                .map_err(|e| record_err("scheduler", e))?;
        scheduler = scheduler.load_record(record);
    }
    Ok((optim, scheduler))
}

/// The monitored metric (the configured one, else the validation or training loss) and
/// whether it improves downwards or upwards (configured, else from the metric).
fn monitored(cfg: &TrainerConfig, has_valid: bool, metrics: &[Box<dyn Metric>]) -> (Monitor, Mode) {
    let monitor = cfg.monitor.clone().unwrap_or_else(|| {
        Monitor::new(if has_valid {
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
        match metrics.iter().find(|m| m.name() == bare) {
            Some(m) if m.higher_is_better() => Mode::Max,
            _ => Mode::Min,
        }
    });
    (monitor, mode)
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
