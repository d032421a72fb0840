//! The all-reduce of one training step's gradients on two ranks over loopback: MPI (what the
//! trainer uses) next to Kiln's former TCP star, alternating rounds, for the gradient
//! buffers of LeNet-5, the LSTM text classifier and MiniLM.
//!
//! Started by `cargo bench` (or `cargo xtask bench --features mpi`), the binary starts
//! itself again under `mpirun -np 2`; rank 0 reports. Needs the `mpi` feature and `mpirun`.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_core::bench::{BenchResult, Bencher};
use kiln_core::distributed::{ProcessGroup, launch};

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
    // Rank 0 listens for the TCP star on a free port and tells rank 1 which.
    let mut port = [0.0f32];
    let listener = (rank == 0).then(|| TcpListener::bind("127.0.0.1:0").unwrap());
    if let Some(l) = &listener {
        port[0] = f32::from(l.local_addr().unwrap().port());
    }
    group.broadcast(&mut port, 0).unwrap();
    drop(listener);
    let addr = format!("127.0.0.1:{}", port[0] as u16);
    let tcp = ProcessGroup::connect_tcp(rank, 2, addr.as_str(), Duration::from_secs(30)).unwrap();
    let rounds = if bencher.tiny() { 1 } else { 15 };
    for (name, floats) in CASES {
        let floats = if bencher.tiny() {
            floats.min(10_000)
        } else {
            floats
        };
        let mut buffer: Option<Vec<f32>> =
            Some((0..floats).map(|i| (i % 13) as f32 * 1e-3).collect());
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..=rounds {
            for (which, link) in [&tcp, &group].into_iter().enumerate() {
                group.barrier().unwrap();
                let started = Instant::now();
                // The owned form, as the trainer calls it.
                buffer = Some(link.all_reduce_sum_vec(buffer.take().unwrap()).unwrap());
                // Round 0 warms up (first-touch of the buffers, connection set-up).
                if round > 0 {
                    times[which].push(started.elapsed().as_secs_f64());
                }
            }
        }
        if rank == 0 {
            for (which, label) in ["TCP star (removed)", "MPI"].into_iter().enumerate() {
                let mut t = times[which].clone();
                t.sort_by(f64::total_cmp);
                let median = t[t.len() / 2];
                let mut extra = serde_json::Map::new();
                extra.insert("floats".into(), floats.into());
                extra.insert("min_secs".into(), t[0].into());
                extra.insert("max_secs".into(), t[t.len() - 1].into());
                extra.insert("transport".into(), group.describe().into());
                bencher.record(BenchResult {
                    name: format!("all-reduce {name} ({floats} floats), 2 ranks"),
                    backend: label.into(),
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
