//! End-to-end tests of the trainer: every stop rule, determinism, resume equality, the NaN
//! error with the last good checkpoint kept, gradient clipping, and the run folder.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;
use kiln_core::loss::CrossEntropy;
use kiln_core::metrics::Accuracy;
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::{Ema, GradClipping, Monitor, ProgressMode, StopReason, StopRules};
use kiln_core::{Data, Error, StepOutput, TrainStep, Trainer, TrainerConfig};

#[derive(Module, Debug)]
struct Net {
    hidden: Linear,
    relu: Relu,
    dropout: Dropout,
    out: Linear,
}

impl Net {
    fn new(device: &Device, seed: u64) -> Self {
        device.seed(seed);
        Self {
            hidden: LinearConfig::new(2, 16).init(device),
            relu: Relu::new(),
            dropout: DropoutConfig::new(0.1).init(),
            out: LinearConfig::new(16, 2).init(device),
        }
    }

    /// Every parameter, in module order (parameters are initialised lazily, in this order, on
    /// first use: reading them in another order would draw them differently).
    fn weights(&self) -> Vec<f32> {
        let mut all = Vec::new();
        for l in [&self.hidden, &self.out] {
            all.extend(l.weight.val().into_data().try_to_vec_as::<f32>().unwrap());
            all.extend(
                l.bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .try_to_vec_as::<f32>()
                    .unwrap(),
            );
        }
        all
    }
}

#[derive(Clone, Debug)]
struct Batch {
    x: Tensor<2>,
    y: Tensor<1, Int>,
}

impl TrainStep<Batch> for Net {
    fn train_step(&self, batch: Batch) -> StepOutput {
        let h = self
            .dropout
            .forward(self.relu.forward(self.hidden.forward(batch.x)));
        let logits = self.out.forward(h);
        let loss = CrossEntropy::new().forward(logits.clone(), batch.y.clone());
        StepOutput::classification(loss, logits, batch.y)
    }
}

type Item = ([f32; 2], i64);

/// Builds batches; from the `poison_at`-th batch on (1-based, counted across epochs) the
/// inputs are NaN.
#[derive(Clone, Default)]
struct PointBatcher {
    calls: Arc<AtomicUsize>,
    poison_at: Option<usize>,
}

impl Batcher<Item, Batch> for PointBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> Batch {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let poisoned = self.poison_at.is_some_and(|k| call >= k);
        let n = items.len();
        let x: Vec<f32> = items
            .iter()
            .flat_map(|(p, _)| if poisoned { [f32::NAN; 2] } else { *p })
            .collect();
        let y: Vec<i64> = items.iter().map(|(_, c)| *c).collect();
        Batch {
            x: Tensor::<1>::from_floats(x.as_slice(), device).reshape([n, 2]),
            y: Tensor::<1, Int>::from_ints(y.as_slice(), device),
        }
    }
}

/// 64 points on a grid, labelled by the side of the line x0 + x1 = 0.
fn points(offset: f32) -> Vec<Item> {
    (0..64)
        .map(|i| {
            let p = [
                ((i % 8) as f32 - 3.5) / 4.0 + offset,
                ((i / 8) as f32 - 3.5) / 4.0,
            ];
            (p, i64::from(p[0] + p[1] > 0.0))
        })
        .collect()
}

fn data(batcher: PointBatcher) -> Data<Item, Batch> {
    Data::new(InMemDataset::new(points(0.0)), batcher)
}

fn valid_data() -> Data<Item, Batch> {
    Data::new(InMemDataset::new(points(0.05)), PointBatcher::default())
}

/// Burn's random stream is per device and process-wide: tests that compare seeded runs must
/// not interleave their draws, so each test holds this lock while it uses the device.
static DEVICE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    DEVICE_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn device() -> Device {
    kiln_core::backend::device("cpu").unwrap()
}

fn config(stop: StopRules) -> TrainerConfig {
    TrainerConfig::new(OptimizerConfig::adam(), LrSchedule::constant(0.02))
        .with_batch_size(16)
        .with_stop(stop)
        .with_seed(7)
        .with_progress(ProgressMode::Quiet)
}

fn fit(config: TrainerConfig) -> kiln_core::Fitted<Net> {
    let device = device();
    Trainer::new(config, &device)
        .with_metric(Accuracy::new())
        .fit(
            Net::new(&device, 1),
            &data(PointBatcher::default()),
            Some(&valid_data()),
        )
        .unwrap()
}

#[test]
fn max_epochs_fires() {
    let _guard = lock();
    let fitted = fit(config(StopRules::epochs(3)));
    assert_eq!(
        fitted.report.stop_reason,
        StopReason::MaxEpochs { epochs: 3 }
    );
    assert_eq!(fitted.report.history.len(), 3);
    assert_eq!(fitted.report.steps, 12);
}

#[test]
fn max_steps_fires_mid_epoch() {
    let _guard = lock();
    let fitted = fit(config(StopRules::steps(6)));
    assert_eq!(fitted.report.stop_reason, StopReason::MaxSteps { steps: 6 });
    assert_eq!((fitted.report.epochs, fitted.report.steps), (2, 6));
}

#[test]
fn target_loss_fires() {
    let _guard = lock();
    let fitted = fit(config(StopRules::epochs(200).with_target_loss(0.15)));
    match fitted.report.stop_reason {
        StopReason::TargetLoss { loss, target, step } => {
            assert!(loss <= target && target == 0.15);
            assert!(step < 200 * 4, "took {step} steps");
        }
        other => panic!("expected the target loss to fire, got {other:?}"),
    }
}

#[test]
fn early_stopping_fires_when_nothing_improves() {
    let _guard = lock();
    // A zero learning rate cannot improve the validation loss after the first epoch.
    let cfg = config(StopRules::epochs(50).with_early_stopping(2, 0.0));
    let cfg = TrainerConfig {
        lr: LrSchedule::constant(0.0),
        ..cfg
    };
    let fitted = fit(cfg);
    match &fitted.report.stop_reason {
        StopReason::EarlyStopping {
            monitor,
            best_epoch,
            patience,
            ..
        } => {
            assert_eq!(
                (monitor.as_str(), *best_epoch, *patience),
                ("valid_loss", 1, 2)
            );
        }
        other => panic!("expected early stopping, got {other:?}"),
    }
    assert_eq!(fitted.report.epochs, 3);
}

#[test]
fn early_stopping_on_a_max_metric() {
    let _guard = lock();
    let cfg = config(StopRules::epochs(60).with_early_stopping(3, 0.0))
        .with_monitor(Monitor::new("valid_accuracy"));
    let fitted = fit(cfg);
    let best = fitted.report.best.clone().unwrap();
    assert_eq!(best.metric, "valid_accuracy");
    // Accuracy is maximised: no later epoch beats the best one.
    for r in &fitted.report.history {
        assert!(r.valid["accuracy"] <= best.value);
    }
    assert!(matches!(
        fitted.report.stop_reason,
        StopReason::EarlyStopping { .. }
    ));
    assert!(best.value > 0.85, "{best:?}");
}

#[test]
fn time_budget_fires() {
    let _guard = lock();
    let fitted = fit(config(StopRules::epochs(1000).with_time_budget(0.0)));
    assert!(matches!(
        fitted.report.stop_reason,
        StopReason::TimeBudget { .. }
    ));
    assert_eq!(fitted.report.steps, 1);
}

/// Resuming a run whose time or steps are spent returns its model without another step.
#[test]
fn resuming_a_spent_run_takes_no_step() {
    let _guard = lock();
    let device = device();
    let train = data(PointBatcher::default());
    for stop in [
        StopRules::epochs(1000).with_time_budget(0.0),
        StopRules::steps(3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let first = Trainer::new(resumable(stop.clone(), dir.path()), &device)
            .fit(Net::new(&device, 1), &train, None)
            .unwrap();
        let again = Trainer::new(resumable(stop.clone(), dir.path()), &device)
            .resume(Net::new(&device, 99), &train, None)
            .unwrap();
        assert_eq!(again.report.steps, first.report.steps, "{stop:?}");
        assert_eq!(again.model.weights(), first.model.weights(), "{stop:?}");
    }
}

#[test]
fn same_seed_same_result() {
    let _guard = lock();
    let a = fit(config(StopRules::epochs(3)));
    let b = fit(config(StopRules::epochs(3)));
    assert_eq!(a.model.weights(), b.model.weights());
    let c = fit(config(StopRules::epochs(3)).with_seed(8));
    assert_ne!(
        a.model.weights(),
        c.model.weights(),
        "the seed must matter (shuffle, dropout)"
    );
}

fn resumable(stop: StopRules, dir: &std::path::Path) -> TrainerConfig {
    // The schedule's length is explicit so that it does not depend on the stop rules.
    TrainerConfig {
        lr: LrSchedule::Cosine {
            lr: 0.05,
            min_lr: 0.001,
            steps: Some(16),
        },
        ..config(stop)
    }
    .with_run_dir(dir)
}

/// An uninterrupted 4-epoch run, and a run stopped after 2 epochs and resumed to 4 into a
/// fresh, differently initialised model (a new process), both with `ema` when set; and the
/// uninterrupted run's folder.
fn whole_and_resumed(
    ema: Option<Ema>,
) -> (
    kiln_core::Fitted<Net>,
    kiln_core::Fitted<Net>,
    tempfile::TempDir,
) {
    let device = device();
    let config = |epochs, dir: &std::path::Path| {
        let c = resumable(StopRules::epochs(epochs), dir);
        match ema {
            Some(e) => c.with_ema(e),
            None => c,
        }
    };
    let (train, valid) = (data(PointBatcher::default()), valid_data());
    let whole = tempfile::tempdir().unwrap();
    let uninterrupted = Trainer::new(config(4, whole.path()), &device)
        .fit(Net::new(&device, 1), &train, Some(&valid))
        .unwrap();
    let parts = tempfile::tempdir().unwrap();
    let first = Trainer::new(config(2, parts.path()), &device)
        .fit(Net::new(&device, 1), &train, Some(&valid))
        .unwrap();
    assert_eq!(first.report.epochs, 2);
    let resumed = Trainer::new(config(4, parts.path()), &device)
        .resume(Net::new(&device, 99), &train, Some(&valid))
        .unwrap();
    (uninterrupted, resumed, whole)
}

fn valid_losses(r: &kiln_core::TrainReport) -> Vec<f64> {
    r.history.iter().map(|e| e.valid["loss"]).collect()
}

#[test]
fn interrupted_and_resumed_equals_uninterrupted() {
    let _guard = lock();
    let (uninterrupted, resumed, _dir) = whole_and_resumed(None);
    assert_eq!(resumed.report.epochs, 4);
    assert_eq!(resumed.report.steps, uninterrupted.report.steps);
    assert_eq!(resumed.model.weights(), uninterrupted.model.weights());
    assert_eq!(
        valid_losses(&resumed.report),
        valid_losses(&uninterrupted.report)
    );
}

#[test]
fn nan_loss_stops_with_an_error_and_keeps_the_last_good_checkpoint() {
    let _guard = lock();
    let device = device();
    let dir = tempfile::tempdir().unwrap();
    // 4 batches per epoch; the 6th batch (epoch 2, step 6) is poisoned.
    let poisoned = PointBatcher {
        calls: Arc::default(),
        poison_at: Some(6),
    };
    let err = Trainer::new(
        config(StopRules::epochs(5)).with_run_dir(dir.path()),
        &device,
    )
    .fit(Net::new(&device, 1), &data(poisoned), None)
    .unwrap_err();
    match err {
        Error::NonFiniteLoss { epoch, step, value } => {
            assert_eq!((epoch, step), (2, 6));
            assert!(value.is_nan());
        }
        other => panic!("expected a non-finite loss error, got {other}"),
    }
    assert!(err_message_names_epoch_and_step());

    // The checkpoint is the one of epoch 1, equal to a clean one-epoch run.
    let clean = Trainer::new(config(StopRules::epochs(1)), &device)
        .fit(Net::new(&device, 1), &data(PointBatcher::default()), None)
        .unwrap();
    let ckpt = Trainer::last_checkpoint(dir.path());
    let restored = Trainer::load_model(Net::new(&device, 5), &ckpt).unwrap();
    assert_eq!(restored.weights(), clean.model.weights());
    let lines = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 1);
}

fn err_message_names_epoch_and_step() -> bool {
    let text = Error::NonFiniteLoss {
        epoch: 2,
        step: 6,
        value: f64::NAN,
    }
    .to_string();
    text.contains("epoch 2") && text.contains("step 6") && text.contains("last good checkpoint")
}

#[test]
fn gradient_clipping_bounds_each_update() {
    let _guard = lock();
    let device = device();
    let cfg = TrainerConfig::new(OptimizerConfig::sgd(), LrSchedule::constant(1.0))
        .with_batch_size(64)
        .with_stop(StopRules::steps(1))
        .with_shuffle(false)
        .with_progress(ProgressMode::Quiet)
        .with_grad_clipping(GradClipping::Value(1e-3));
    let before = Net::new(&device, 1).weights();
    let after = Trainer::new(cfg, &device)
        .fit(Net::new(&device, 1), &data(PointBatcher::default()), None)
        .unwrap()
        .model
        .weights();
    let max_change = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        max_change <= 1e-3 + 1e-6,
        "an update moved a weight by {max_change}"
    );
    assert!(max_change > 0.0);
}

#[test]
fn run_folder_holds_config_metrics_checkpoints_and_curves() {
    let _guard = lock();
    let dir = tempfile::tempdir().unwrap();
    let fitted = fit(config(StopRules::epochs(3)).with_run_dir(dir.path()));
    let jsonl = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["epoch"], i + 1);
        for key in [
            "train_loss",
            "train_accuracy",
            "valid_loss",
            "valid_accuracy",
            "lr",
        ] {
            assert!(line[key].is_number(), "{key} missing in {line}");
        }
    }
    let config: TrainerConfig =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config.batch_size, 16);
    assert!(dir.path().join("curves.svg").is_file());
    let best = fitted.report.best.unwrap();
    assert!(Trainer::best_checkpoint(dir.path()).is_file());
    let best_model = Trainer::load_model(
        Net::new(&device(), 3),
        &Trainer::best_checkpoint(dir.path()),
    )
    .unwrap();
    assert_eq!(best.metric, "valid_loss");
    if best.epoch == 3 {
        assert_eq!(best_model.weights(), fitted.model.weights());
    }
}

#[test]
fn bad_configurations_are_errors() {
    let _guard = lock();
    let device = device();
    let unknown = config(StopRules::epochs(1)).with_monitor(Monitor::new("valid_f1"));
    let err = Trainer::new(unknown, &device)
        .fit(
            Net::new(&device, 1),
            &data(PointBatcher::default()),
            Some(&valid_data()),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("valid_f1") && !err.contains("valid_accuracy") && err.contains("valid_loss"),
        "{err}"
    );

    let empty: Data<Item, Batch> = Data::new(InMemDataset::new(vec![]), PointBatcher::default());
    let err = Trainer::new(config(StopRules::epochs(1)), &device)
        .fit(Net::new(&device, 1), &empty, None)
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");

    let endless = config(StopRules::default().with_target_loss(0.1));
    assert!(
        Trainer::new(endless, &device)
            .fit(Net::new(&device, 1), &data(PointBatcher::default()), None)
            .is_err()
    );

    for decay in [-0.1, 1.5, f64::NAN] {
        let bad = config(StopRules::epochs(1)).with_ema(Ema::new(decay));
        let err = Trainer::new(bad, &device)
            .fit(Net::new(&device, 1), &data(PointBatcher::default()), None)
            .unwrap_err();
        assert!(err.to_string().contains("ema decay"), "{err}");
    }

    let no_dir = config(StopRules::epochs(1));
    let err = Trainer::new(no_dir, &device)
        .resume(Net::new(&device, 1), &data(PointBatcher::default()), None)
        .unwrap_err();
    assert!(err.to_string().contains("run_dir"), "{err}");
}

/// Rewrites the optimizer section of the checkpoint in `dir`: the first moment tensor gets
/// one more row (its parameter id kept), as a checkpoint of a wider model would have it.
fn widen_first_moment(dir: &std::path::Path) -> String {
    use kiln_core::train::checkpoint::Sections;
    let path = Trainer::last_checkpoint(dir);
    let mut sections = Sections::load(&path).unwrap();
    let bytes = burn::tensor::Bytes::from_bytes_vec(sections.get("optimizer").unwrap().to_vec());
    let reader = burn_pack::Reader::from_bytes(bytes).unwrap();
    let scalars = reader.scalars().clone();
    let metadata = reader.metadata().clone();
    let mut tensors = reader.into_tensors().unwrap();
    let first = tensors.remove(0);
    let name = first.name.clone();
    let (name_, dtype, shape, id, data) = first.into_parts().unwrap();
    let mut dims = shape.to_vec();
    let row = data.len() / dims[0];
    dims[0] += 1;
    let mut wider = data.to_vec();
    wider.extend(std::iter::repeat_n(0u8, row));
    tensors.insert(
        0,
        burn_pack::Tensor::new(
            name_,
            dtype,
            dims,
            id,
            burn::tensor::Bytes::from_bytes_vec(wider),
        ),
    );
    let mut writer = burn_pack::Writer::new(tensors);
    for (k, v) in &scalars {
        writer = writer.with_scalar(k, *v);
    }
    for (k, v) in &metadata {
        writer = writer.with_metadata(k, v);
    }
    sections.insert("optimizer", writer.into_bytes().unwrap().to_vec());
    sections.save(&path).unwrap();
    name
}

#[test]
fn resuming_with_optimizer_moments_of_another_shape_is_a_typed_error() {
    let _guard = lock();
    let device = device();
    let dir = tempfile::tempdir().unwrap();
    let config = resumable(StopRules::epochs(1), dir.path());
    Trainer::new(config, &device)
        .fit(Net::new(&device, 1), &data(PointBatcher::default()), None)
        .unwrap();
    let tensor = widen_first_moment(dir.path());

    // Before: Burn took the record and panicked on the first step's shape mismatch.
    let err = Trainer::new(resumable(StopRules::epochs(2), dir.path()), &device)
        .resume(Net::new(&device, 1), &data(PointBatcher::default()), None)
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{text}");
    assert!(text.contains(&format!("`{tensor}`")), "{text}");
    assert!(text.contains("checkpoint"), "{text}");
    assert!(text.contains("hidden.") || text.contains("out."), "{text}");
}

/// The weights after `steps` optimizer steps, without a moving average.
fn weights_after(steps: usize) -> Vec<f32> {
    if steps == 0 {
        return Net::new(&device(), 1).weights();
    }
    fit(config(StopRules::steps(steps))).model.weights()
}

#[test]
fn the_moving_average_weighs_the_trajectory_as_its_decay_says() {
    let _guard = lock();
    let trajectory: Vec<Vec<f32>> = (0..=3).map(weights_after).collect();
    // d = 0.5 from the first update: avg_3 = d^3 w0 + (1-d) d^2 w1 + (1-d) d w2 + (1-d) w3.
    let ema = Ema::new(0.5).with_warmup(false);
    let averaged = fit(config(StopRules::steps(3)).with_ema(ema));
    let coefficients = [0.125f32, 0.125, 0.25, 0.5];
    let expected: Vec<f32> = (0..trajectory[0].len())
        .map(|i| (0..4).map(|t| coefficients[t] * trajectory[t][i]).sum())
        .collect();
    let got = averaged.model.weights();
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!((g - e).abs() < 1e-6, "weight {i}: {g} vs {e}");
    }
    // The average differs from the trained weights it follows.
    assert!(
        got.iter()
            .zip(&trajectory[3])
            .any(|(a, b)| (a - b).abs() > 1e-4)
    );
    // The warm-up's decay: (1 + n) / (10 + n) until it reaches the configured one.
    assert_eq!(Ema::new(0.999).decay_at(1), 2.0 / 11.0);
    assert_eq!(Ema::new(0.5).decay_at(100), 0.5);
    // Decay 0 is no average at all; decay 1 keeps the initial weights.
    let none = fit(config(StopRules::steps(3)).with_ema(Ema::new(0.0)));
    assert_eq!(none.model.weights(), trajectory[3]);
    let frozen = Ema::new(1.0).with_warmup(false);
    let frozen = fit(config(StopRules::steps(3)).with_ema(frozen));
    assert_eq!(frozen.model.weights(), trajectory[0]);
}

#[test]
fn a_run_with_a_moving_average_resumes_exactly() {
    let _guard = lock();
    let (uninterrupted, resumed, whole) = whole_and_resumed(Some(Ema::new(0.9)));
    assert_eq!(resumed.model.weights(), uninterrupted.model.weights());
    assert_eq!(
        valid_losses(&resumed.report),
        valid_losses(&uninterrupted.report)
    );
    // The checkpoint's model is the average (what was validated and returned).
    let device = device();
    let last = Trainer::load_model(
        Net::new(&device, 5),
        &Trainer::last_checkpoint(whole.path()),
    )
    .unwrap();
    assert_eq!(last.weights(), uninterrupted.model.weights());
}
