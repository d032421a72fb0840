//! The all-reduce of one training step's gradients on two ranks over loopback, as the
//! trainer calls it, for the gradient buffers of LeNet-5, the LSTM text classifier and
//! MiniLM. (Until 2026-11-30 it also timed Kiln's former TCP star, in alternating rounds:
//! docs/benchmarks.md.)
//!
//! Started by `cargo bench` (or `cargo xtask bench --features mpi`), the binary starts
//! itself again under `mpirun -np 2`; rank 0 reports. Needs the `mpi` feature and `mpirun`.

use std::process::Command;
use std::time::Instant;

use kiln_core::distributed::{ProcessGroup, launch};
use kiln_dev::bench::{BenchResult, Bencher};

/// Gradient buffers, in floats (plus the trainer's two extra values, which change nothing).
const CASES: [(&str, usize); 3] = [
    // conv 1->6 and 6->16 (5x5), dense 400->120->84->10
    ("LeNet-5", 61_706),
    // embedding 8,000 x 100, LSTM 100->128, dense 128->6 (the TREC classifier)
    (
        "LSTM classifier",
        800_000 + 4 * 128 * (100 + 128 + 1) + 128 * 6 + 6,
    ),
    // all-MiniLM-L6-v2
    ("MiniLM", 22_700_000),
];

fn main() {
    if launch::from_env().is_none() {
        std::process::exit(relaunch());
    }
    let mut bencher = Bencher::from_args();
    let group = ProcessGroup::mpi().expect("MPI");
    let rank = group.rank();
    let rounds = if bencher.tiny() { 1 } else { 15 };
    for (name, floats) in CASES {
        let floats = if bencher.tiny() {
            floats.min(10_000)
        } else {
            floats
        };
        let mut buffer: Vec<f32> = (0..floats).map(|i| (i % 13) as f32 * 1e-3).collect();
        let mut times = Vec::new();
        for round in 0..=rounds {
            group.barrier().unwrap();
            let started = Instant::now();
            // The owned form, as the trainer calls it.
            buffer = group.all_reduce_sum_vec(buffer).unwrap();
            // Round 0 warms up (first touch of the buffers).
            if round > 0 {
                times.push(started.elapsed().as_secs_f64());
            }
        }
        if rank == 0 {
            let mut t = times;
            {
                t.sort_by(f64::total_cmp);
                let median = t[t.len() / 2];
                let mut extra = serde_json::Map::new();
                extra.insert("floats".into(), floats.into());
                extra.insert("min_secs".into(), t[0].into());
                extra.insert("max_secs".into(), t[t.len() - 1].into());
                extra.insert("transport".into(), group.describe().into());
                bencher.record(BenchResult {
                    name: format!("all-reduce {name} ({floats} floats), 2 ranks"),
                    backend: "MPI".into(),
                    iterations: t.len(),
                    median_secs: median,
                    throughput: Some(floats as f64 * 4.0 / median / 1e9),
                    unit: Some("GB".into()),
                    tiny: bencher.tiny(),
                    extra,
                });
            }
        }
    }
    if rank == 0 {
        bencher.finish().unwrap();
    }
}

/// Starts this binary on two ranks with the same arguments; its exit status.
fn relaunch() -> i32 {
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .arg(exe)
        .args(std::env::args().skip(1))
        .status();
    match status {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            eprintln!("all-reduce benchmark skipped: cannot run mpirun ({e}); install Open MPI");
            0
        }
    }
}
