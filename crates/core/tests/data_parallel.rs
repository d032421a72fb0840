//! Data-parallel training equals single-device training on the full batch: several replicas in
//! one process (the same CPU device twice, and two different CPU backends when both are
//! compiled in), and two processes linked over TCP on 127.0.0.1.
//!
//! Tolerance: after 12 Adam steps every weight is within 1e-5 (absolute) of the single-device
//! run's; the only difference is the order of float32 additions in the gradient sum.

use std::net::TcpListener;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::prelude::*;
use kiln_core::distributed::ProcessGroup;
use kiln_core::loss::CrossEntropy;
use kiln_core::metrics::Accuracy;
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::{ProgressMode, StopRules};
use kiln_core::{Backend, Data, StepOutput, TrainStep, Trainer, TrainerConfig};

#[derive(Module, Debug)]
struct Net {
    hidden: Linear,
    relu: Relu,
    out: Linear,
}

impl Net {
    /// The same weights every time (the tests hold [`serial`]'s lock).
    fn new(device: &Device) -> Self {
        device.seed(7);
        let net = Self {
            hidden: LinearConfig::new(3, 16).init(device),
            relu: Relu::new(),
            out: LinearConfig::new(16, 3).init(device),
        };
        // Draw the lazily initialised weights now, while this test holds the generator.
        let _ = net.weights();
        net
    }

    fn weights(&self) -> Vec<f32> {
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
struct Batch {
    x: Tensor<2>,
    y: Tensor<1, Int>,
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

type Item = ([f32; 3], i64);

#[derive(Clone)]
struct PointBatcher;

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
fn data() -> Data<Item, Batch> {
    let items: Vec<Item> = (0..90)
        .map(|i| {
            let t = i as f32 * 0.37;
            let p = [t.sin(), (1.3 * t).cos(), ((i % 7) as f32 - 3.0) / 3.0];
            let class = i64::from(p[0] + p[1] > 0.0) + i64::from(p[2] > 0.5);
            (p, class)
        })
        .collect();
    Data::new(InMemDataset::new(items), PointBatcher)
}

fn config() -> TrainerConfig {
    TrainerConfig::new(OptimizerConfig::adam(), LrSchedule::constant(0.01))
        .with_batch_size(16)
        .with_shuffle(false)
        .with_stop(StopRules::steps(12))
        .with_progress(ProgressMode::Quiet)
}

/// The tests share the CPU device's random generator (seeded for the weights): they run one
/// at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn cpu() -> Device {
    kiln_core::backend::device("cpu").unwrap()
}

/// The single-device run every data-parallel run must equal.
fn single_device() -> (Vec<f32>, f64) {
    let device = cpu();
    let fitted = Trainer::new(config(), &device)
        .fit(Net::new(&device), &data(), None)
        .unwrap();
    (
        fitted.model.weights(),
        fitted.report.history[0].train["loss"],
    )
}

fn assert_same(what: &str, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    let max = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0f32, f32::max);
    assert!(max <= 1e-5, "{what}: weights differ by up to {max:e}");
}

#[test]
fn data_parallel_over_replicas_on_one_cpu_equals_one_device() {
    let _serial = serial();
    let (expected, expected_loss) = single_device();
    let initial = Net::new(&cpu()).weights();
    assert!(
        assert_differs(&initial, &expected),
        "training must move the weights"
    );
    for replicas in [1, 2, 3] {
        let devices = vec![cpu(); replicas];
        let fitted = Trainer::data_parallel(config(), &devices)
            .unwrap()
            .with_metric(Accuracy::new())
            .fit(Net::new(&cpu()), &data(), None)
            .unwrap();
        assert_eq!(fitted.report.steps, 12);
        assert_same(
            &format!("{replicas} replicas"),
            &fitted.model.weights(),
            &expected,
        );
        let loss = fitted.report.history[0].train["loss"];
        assert!(
            (loss - expected_loss).abs() < 1e-5,
            "{replicas} replicas: epoch loss {loss}, one device {expected_loss}"
        );
    }
}

fn assert_differs(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3)
}

#[test]
fn data_parallel_over_two_cpu_backends_equals_one_device() {
    let _serial = serial();
    let backends: Vec<Backend> = kiln_core::backend::compiled()
        .into_iter()
        .filter(|b| b.is_cpu())
        .collect();
    if backends.len() < 2 {
        eprintln!("only one CPU backend compiled in; the same-backend test covers this build");
        return;
    }
    let (expected, _) = single_device();
    let devices: Vec<Device> = backends.iter().map(|b| b.device().unwrap()).collect();
    let fitted = Trainer::data_parallel(config(), &devices)
        .unwrap()
        .fit(Net::new(&devices[0]), &data(), None)
        .unwrap();
    assert_same("flex + ndarray", &fitted.model.weights(), &expected);
}

#[test]
fn data_parallel_needs_a_device() {
    let message = Trainer::data_parallel(config(), &[])
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("at least one device"), "{message}");
}

/// Environment variables of a worker process (set by the test that starts it).
const WORKER_RANK: &str = "KILN_TEST_DP_RANK";
const WORKER_ADDR: &str = "KILN_TEST_DP_ADDR";
const WORKER_OUT: &str = "KILN_TEST_DP_OUT";

/// Trains as one rank of a two-process group and writes the final weights to a file.
fn train_as_rank(rank: usize, addr: &str, out: &std::path::Path) {
    let group = ProcessGroup::connect(rank, 2, addr, Duration::from_secs(60)).unwrap();
    let device = cpu();
    let fitted = Trainer::new(config(), &device)
        .with_process_group(group)
        .fit(Net::new(&device), &data(), None)
        .unwrap();
    let mut text: Vec<String> = fitted
        .model
        .weights()
        .iter()
        .map(|w| w.to_string())
        .collect();
    text.push(fitted.report.history[0].train["loss"].to_string());
    std::fs::write(out, text.join("\n")).unwrap();
}

/// Not a test of its own: the worker process of
/// `two_processes_over_tcp_equal_one_device`, which starts this test binary twice with the
/// worker variables set. Run without them (`--ignored`), it has nothing to do.
#[test]
#[ignore = "worker process of two_processes_over_tcp_equal_one_device, started by it"]
fn data_parallel_worker_process() {
    let (Ok(rank), Ok(addr), Ok(out)) = (
        std::env::var(WORKER_RANK),
        std::env::var(WORKER_ADDR),
        std::env::var(WORKER_OUT),
    ) else {
        return;
    };
    train_as_rank(rank.parse().unwrap(), &addr, std::path::Path::new(&out));
}

#[test]
fn two_processes_over_tcp_equal_one_device() {
    let _serial = serial();
    let (expected, expected_loss) = single_device();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let workers: Vec<_> = (0..2)
        .map(|rank| {
            let out = dir.path().join(format!("rank{rank}.txt"));
            let child = Command::new(&exe)
                .args([
                    "data_parallel_worker_process",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WORKER_RANK, rank.to_string())
                .env(WORKER_ADDR, &addr)
                .env(WORKER_OUT, &out)
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    for (rank, (mut child, out)) in workers.into_iter().enumerate() {
        let status = child.wait().unwrap();
        assert!(status.success(), "rank {rank} exited with {status}");
        let values: Vec<f64> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let (weights, loss) = values.split_at(values.len() - 1);
        let weights: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
        assert_same(&format!("rank {rank}"), &weights, &expected);
        assert!(
            (loss[0] - expected_loss).abs() < 1e-5,
            "rank {rank}: epoch loss {}, one device {expected_loss}",
            loss[0]
        );
    }
}
