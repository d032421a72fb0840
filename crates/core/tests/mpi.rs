//! Training over MPI: each test starts this test binary under `mpirun -np 2` on one of the
//! `rank_*` functions below (ignored when run directly), which runs on both ranks and checks
//! what a rank can see; the test itself checks the job's exit status and output.
//!
//! - two ranks on a global batch equal one rank on it (every weight within 1e-5 after 12
//!   Adam steps), although rank 1 initialises its model differently (rank 0's weights are
//!   broadcast);
//! - both ranks stop on the same step for a step target, a time budget and a non-finite
//!   loss;
//! - a rank killed mid-run, or one that hangs, ends the job non-zero with a message, within
//!   seconds or the step timeout, never a hang;
//! - a two-rank run resumed from its checkpoint equals the uninterrupted two-rank run.
//!
//! Needs `mpirun` (Debian: `openmpi-bin libopenmpi-dev`); `cargo xtask ci` runs it.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use kiln_core::distributed::ProcessGroup;
use kiln_core::train::StopRules;
use kiln_core::{Data, Error, Trainer};

#[path = "common/net.rs"]
mod net;
use net::*;

/// Runs `rank_test` of this binary on two ranks; returns the exit status's success, the
/// combined output and how long the job took.
fn mpirun(rank_test: &str, dir: Option<&Path>) -> (bool, String, Duration) {
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new("mpirun");
    command
        .args(["-np", "2", "--oversubscribe"])
        // As root (containers, CI) Open MPI wants both variables; they change nothing else.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    if let Some(dir) = dir {
        command
            .env("KILN_TEST_MPI_DIR", dir)
            .args(["-x", "KILN_TEST_MPI_DIR"]);
    }
    command.arg(exe).args([
        rank_test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    let started = Instant::now();
    let output = command
        .output()
        .expect("mpirun not found: install Open MPI (Debian: openmpi-bin libopenmpi-dev)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text, started.elapsed())
}

fn group() -> ProcessGroup {
    let group = ProcessGroup::mpi().unwrap();
    assert_eq!(group.world(), 2, "run under mpirun -np 2");
    group
}

/// The folder the outer test passed down (shared by both ranks).
fn shared_dir() -> PathBuf {
    PathBuf::from(std::env::var("KILN_TEST_MPI_DIR").expect("set by the outer test"))
}

#[test]
#[ignore = "runs on each rank under mpirun, started by two_ranks_equal_one_rank"]
fn rank_two_ranks_equal_one_rank() {
    let group = group();
    let rank = group.rank();
    // The collectives themselves, across a bucket boundary (4M floats per MPI call).
    let mut values: Vec<f32> = (0..(1 << 22) + 3)
        .map(|i| (i % 7) as f32 + rank as f32)
        .collect();
    group.all_reduce_sum(&mut values).unwrap();
    assert_eq!(values[5], 2.0 * 5.0 + 1.0);
    assert_eq!(
        values[(1 << 22) + 2],
        2.0 * (((1 << 22) + 2) % 7) as f32 + 1.0
    );
    let mut from_root = vec![rank as f32; 3];
    group.broadcast(&mut from_root, 0).unwrap();
    assert_eq!(from_root, vec![0.0; 3]);

    let (expected, expected_loss) = single_device();
    let device = cpu();
    // Rank 1 draws other initial weights: training must start from rank 0's anyway.
    let model = if rank == 0 {
        Net::new(&device)
    } else {
        device.seed(99);
        let net = Net::new_unseeded(&device);
        let _ = net.weights();
        net
    };
    let fitted = Trainer::new(config(), &device)
        .with_process_group(group.clone())
        .fit(model, &data(), None)
        .unwrap();
    assert_eq!(fitted.report.steps, 12);
    assert_same(&format!("rank {rank}"), &fitted.model.weights(), &expected);
    let loss = fitted.report.history[0].train["loss"];
    assert!(
        (loss - expected_loss).abs() < 1e-5,
        "rank {rank}: {loss} vs {expected_loss}"
    );
    println!("rank {rank}: equal to one rank");
}

#[test]
fn two_ranks_equal_one_rank() {
    let (ok, text, _) = mpirun("rank_two_ranks_equal_one_rank", None);
    assert!(ok, "{text}");
    assert!(
        text.contains("rank 0: equal") && text.contains("rank 1: equal"),
        "{text}"
    );
}

/// Wraps the test batcher: rank 1's batches are slower (so the ranks' own clocks
/// disagree), and from global step `poison_at` on rank 1's shard holds a NaN.
#[derive(Clone)]
struct SkewedBatcher {
    rank: usize,
    poison_at: Option<usize>,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Batcher<Item, Batch> for SkewedBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> Batch {
        let step = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let mut batch = PointBatcher.batch(items, device);
        if self.rank == 1 {
            std::thread::sleep(Duration::from_millis(30));
            if self.poison_at.is_some_and(|at| step >= at) {
                batch.x = batch.x * f32::NAN;
            }
        }
        batch
    }
}

fn skewed(rank: usize, poison_at: Option<usize>) -> Data<Item, Batch> {
    Data::new(
        points(),
        SkewedBatcher {
            rank,
            poison_at,
            calls: Default::default(),
        },
    )
}

#[test]
#[ignore = "runs on each rank under mpirun, started by ranks_stop_on_the_same_step"]
fn rank_stop_together() {
    let group = group();
    let rank = group.rank();
    let device = cpu();
    let trainer = |stop: StopRules| {
        Trainer::new(config().with_stop(stop), &device).with_process_group(group.clone())
    };
    let steps = trainer(StopRules::steps(5))
        .fit(Net::new(&device), &skewed(rank, None), None)
        .unwrap()
        .report
        .steps;
    println!("rank {rank}: step target stopped at {steps}");
    // A budget of 0.2 s: rank 1's own clock runs ahead, but rank 0's decides for both.
    let budget = trainer(StopRules::epochs(1000).with_time_budget(0.2))
        .fit(Net::new(&device), &skewed(rank, None), None)
        .unwrap()
        .report;
    println!(
        "rank {rank}: time budget stopped at {} ({})",
        budget.steps, budget.stop_reason
    );
    match trainer(StopRules::epochs(3)).fit(Net::new(&device), &skewed(rank, Some(4)), None) {
        Err(Error::NonFiniteLoss { step, .. }) => println!("rank {rank}: non-finite at {step}"),
        other => panic!("rank {rank}: expected a non-finite loss, got {other:?}"),
    }
}

#[test]
fn ranks_stop_on_the_same_step() {
    let (ok, text, _) = mpirun("rank_stop_together", None);
    assert!(ok, "{text}");
    let said = |what: &str| -> Vec<String> {
        (0..2)
            .map(|r| {
                let prefix = format!("rank {r}: {what} ");
                text.lines()
                    .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_owned()))
                    .unwrap_or_else(|| panic!("no `{prefix}` line in\n{text}"))
            })
            .collect()
    };
    let steps = said("step target stopped at");
    assert_eq!(steps, ["5", "5"], "{text}");
    let budget = said("time budget stopped at");
    assert_eq!(budget[0], budget[1], "{text}");
    let poisoned = said("non-finite at");
    assert_eq!(poisoned, ["4", "4"], "{text}");
}

#[test]
#[ignore = "runs on each rank under mpirun, started by a_dead_rank_ends_the_job"]
fn rank_dies() {
    let group = group();
    let rank = group.rank();
    let device = cpu();
    // Rank 1 is killed (SIGKILL, as by the OOM killer) in its third batch.
    let data = Data::new(points(), FaultyBatcher::new(rank, Fault::Die));
    let result = Trainer::new(config().with_stop(StopRules::epochs(100)), &device)
        .with_process_group(group.clone())
        .fit(Net::new(&device), &data, None);
    println!(
        "rank {rank}: training ended: {:?}",
        result.map(|f| f.report.steps)
    );
}

/// What rank 1 does in its third batch.
#[derive(Clone, Copy)]
enum Fault {
    /// SIGKILL itself.
    Die,
    /// Sleep for an hour.
    Hang,
}

/// The plain batcher, except on rank 1 at its third batch.
#[derive(Clone)]
struct FaultyBatcher {
    fault: Option<Fault>,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultyBatcher {
    fn new(rank: usize, fault: Fault) -> Self {
        FaultyBatcher {
            fault: (rank == 1).then_some(fault),
            calls: Default::default(),
        }
    }
}

impl Batcher<Item, Batch> for FaultyBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> Batch {
        let calls = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.fault {
            Some(Fault::Die) if calls == 2 => {
                let pid = std::process::id().to_string();
                let _ = Command::new("kill").args(["-9", &pid]).status();
                std::thread::sleep(Duration::from_secs(60));
            }
            Some(Fault::Hang) if calls == 2 => std::thread::sleep(Duration::from_secs(3600)),
            _ => {}
        }
        PointBatcher.batch(items, device)
    }
}

#[test]
fn a_dead_rank_ends_the_job() {
    let (ok, text, took) = mpirun("rank_dies", None);
    assert!(!ok, "the job must fail:\n{text}");
    assert!(took < Duration::from_secs(60), "took {took:?}:\n{text}");
    assert!(!text.contains("rank 0: training ended: Ok"), "{text}");
    // Open MPI names the rank that died.
    assert!(
        text.contains("rank 1") && text.contains("signal 9"),
        "{text}"
    );
}

#[test]
#[ignore = "runs on each rank under mpirun, started by a_hanging_rank_times_out"]
fn rank_hangs() {
    let group = group().with_step_timeout(Duration::from_secs(3));
    let rank = group.rank();
    let device = cpu();
    let data = Data::new(points(), FaultyBatcher::new(rank, Fault::Hang));
    let result = Trainer::new(config().with_stop(StopRules::epochs(100)), &device)
        .with_process_group(group.clone())
        .fit(Net::new(&device), &data, None);
    match result {
        // What the examples do: say why, and end the whole job.
        Err(e) => {
            eprintln!("rank {rank} failed: {e}");
            group.abort(3)
        }
        Ok(f) => println!("rank {rank}: finished {} steps", f.report.steps),
    }
}

#[test]
fn a_hanging_rank_times_out() {
    let (ok, text, took) = mpirun("rank_hangs", None);
    assert!(!ok, "the job must fail:\n{text}");
    assert!(took < Duration::from_secs(60), "took {took:?}:\n{text}");
    assert!(
        text.contains("rank 0 failed: process group (rank 0 of 2): no all-reduce answer"),
        "{text}"
    );
}

#[test]
#[ignore = "runs on each rank under mpirun, started by two_rank_resume_equals_the_uninterrupted_run"]
fn rank_resume() {
    let group = group();
    let rank = group.rank();
    let device = cpu();
    let dir = shared_dir();
    let run = |name: &str, epochs: usize| {
        config()
            .with_stop(StopRules::epochs(epochs))
            .with_run_dir(dir.join(name))
    };
    let trainer = |config| Trainer::new(config, &device).with_process_group(group.clone());
    let whole = trainer(run("whole", 4))
        .fit(Net::new(&device), &data(), None)
        .unwrap();
    let first = trainer(run("parts", 2))
        .fit(Net::new(&device), &data(), None)
        .unwrap();
    assert_eq!(first.report.epochs, 2);
    // Each rank reads the checkpoint rank 0 wrote, into a fresh, differently drawn model.
    device.seed(1234 + rank as u64);
    let resumed = trainer(run("parts", 4))
        .resume(Net::new_unseeded(&device), &data(), None)
        .unwrap();
    assert_eq!(resumed.report.steps, whole.report.steps);
    assert_eq!(
        resumed.model.weights(),
        whole.model.weights(),
        "rank {rank}"
    );
    println!("rank {rank}: resumed run equals the whole run");
}

#[test]
fn two_rank_resume_equals_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text, _) = mpirun("rank_resume", Some(dir.path()));
    assert!(ok, "{text}");
    assert!(
        text.contains("rank 0: resumed run equals") && text.contains("rank 1: resumed"),
        "{text}"
    );
}
