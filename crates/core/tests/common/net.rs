//! The small classifier, data and configuration the data-parallel tests train (shared by
//! `data_parallel.rs` and `mpi.rs`).
#![allow(dead_code)]

use std::sync::Mutex;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::prelude::*;
use kiln_core::loss::CrossEntropy;
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::{ProgressMode, StopRules};
use kiln_core::{Data, StepOutput, TrainStep, Trainer, TrainerConfig};

#[derive(Module, Debug)]
pub struct Net {
    hidden: Linear,
    relu: Relu,
    out: Linear,
}

impl Net {
    /// The same weights every time (the tests hold [`serial`]'s lock).
    pub fn new(device: &Device) -> Self {
        device.seed(7);
        let net = Self::new_unseeded(device);
        // Draw the lazily initialised weights now, while this test holds the generator.
        let _ = net.weights();
        net
    }

    /// A net drawn from the device's generator as it stands.
    pub fn new_unseeded(device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(3, 16).init(device),
            relu: Relu::new(),
            out: LinearConfig::new(16, 3).init(device),
        }
    }

    pub fn weights(&self) -> Vec<f32> {
        let mut all = Vec::new();
        for l in [&self.hidden, &self.out] {
            all.extend(
                l.weight
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
            let bias = l.bias.as_ref().unwrap().val();
            all.extend(
                bias.into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap(),
            );
        }
        all
    }
}

#[derive(Clone, Debug)]
pub struct Batch {
    pub x: Tensor<2>,
    pub y: Tensor<1, Int>,
}

impl TrainStep<Batch> for Net {
    fn train_step(&self, batch: Batch) -> StepOutput {
        let logits = self
            .out
            .forward(self.relu.forward(self.hidden.forward(batch.x)));
        let loss = CrossEntropy::new().forward(logits.clone(), batch.y.clone());
        StepOutput::classification(loss, logits, batch.y)
    }
}

pub type Item = ([f32; 3], i64);

#[derive(Clone)]
pub struct PointBatcher;

impl Batcher<Item, Batch> for PointBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> Batch {
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|(p, _)| *p).collect();
        let y: Vec<i64> = items.iter().map(|(_, c)| *c).collect();
        Batch {
            x: Tensor::<1>::from_floats(x.as_slice(), device).reshape([n, 3]),
            y: Tensor::<1, Int>::from_ints(y.as_slice(), device),
        }
    }
}

/// 90 points in three classes; 90 is not a multiple of the batch size (16), so the last batch
/// is short and its shards are uneven.
pub fn points() -> InMemDataset<Item> {
    let items: Vec<Item> = (0..90)
        .map(|i| {
            let t = i as f32 * 0.37;
            let p = [t.sin(), (1.3 * t).cos(), ((i % 7) as f32 - 3.0) / 3.0];
            let class = i64::from(p[0] + p[1] > 0.0) + i64::from(p[2] > 0.5);
            (p, class)
        })
        .collect();
    InMemDataset::new(items)
}

/// [`points`] with the plain batcher.
pub fn data() -> Data<Item, Batch> {
    Data::new(points(), PointBatcher)
}

pub fn config() -> TrainerConfig {
    TrainerConfig::new(OptimizerConfig::adam(), LrSchedule::constant(0.01))
        .with_batch_size(16)
        .with_shuffle(false)
        .with_stop(StopRules::steps(12))
        .with_progress(ProgressMode::Quiet)
}

/// The tests share the CPU device's random generator (seeded for the weights): they run one
/// at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn cpu() -> Device {
    kiln_core::backend::device("cpu").unwrap()
}

/// The single-device run every data-parallel run must equal.
pub fn single_device() -> (Vec<f32>, f64) {
    let device = cpu();
    let fitted = Trainer::new(config(), &device)
        .fit(Net::new(&device), &data(), None)
        .unwrap();
    (
        fitted.model.weights(),
        fitted.report.history[0].train["loss"],
    )
}

pub fn assert_same(what: &str, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    let max = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0f32, f32::max);
    assert!(max <= 1e-5, "{what}: weights differ by up to {max:e}");
}
