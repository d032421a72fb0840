//! `cargo xtask mpi` (and `cargo xtask ci`'s `mpi` step): the `mpi` feature's clippy and
//! tests (`crates/core/tests/mpi.rs`, which start the test binary under `mpirun -np 2`), and,
//! when `KILN_DATA` is set, the MNIST example trained on two ranks with its report checked,
//! then killed on both ranks mid-epoch and resumed.
//! Needs Open MPI (Debian: `openmpi-bin libopenmpi-dev`, and `libclang-dev` for the bindings'
//! build; `.ci/run` installs them).

use std::path::Path;
use std::process::Command;

use crate::{AS_ROOT, cargo, run};

pub(crate) fn mpi(features: &str, out: &Path) -> Result<(), String> {
    if Command::new("mpirun").arg("--version").output().is_err() {
        return Err("the MPI step needs mpirun and the MPI headers: on Debian \
                    apt-get install openmpi-bin libopenmpi-dev libclang-dev (.ci/run does this)"
            .into());
    }
    // The whole workspace with the CI's own features plus `mpi`: the same feature set for
    // Burn as the other steps, so that only Kiln's crates are rebuilt (a `-p kiln-core` build
    // unifies Burn's features differently and rebuilt all of Burn twice, about 8 minutes of
    // a cold CI on 2 cores).
    let features = format!("{features},mpi");
    let mut c = cargo();
    c.args([
        "clippy",
        "--workspace",
        "--features",
        &features,
        "--all-targets",
    ]);
    c.args(["--", "-D", "warnings"]);
    run(c)?;
    let mut c = cargo();
    c.args([
        "test",
        "--workspace",
        "--features",
        &features,
        "--test",
        "mpi",
    ]);
    c.envs(AS_ROOT);
    run(c)?;

    let Some(data) = std::env::var_os("KILN_DATA") else {
        eprintln!("\n==> MNIST on two ranks skipped: KILN_DATA is not set");
        return Ok(());
    };
    let mut c = cargo();
    c.args(["build", "--features", &features, "--example", "mnist"]);
    run(c)?;
    let report = out.join("mnist_mpi.json");
    let runs = out.join("runs").join("mnist_mpi");
    let mnist = Path::new(&data).join("mnist");
    let mut c = Command::new("mpirun");
    c.args(["-np", "2", "--oversubscribe"]).envs(AS_ROOT);
    c.arg(
        Path::new("target")
            .join("debug")
            .join("examples")
            .join("mnist"),
    );
    c.arg("--data").arg(&mnist);
    c.args([
        "--model", "lenet", "--epochs", "1", "--limit", "3000", "--quiet",
    ]);
    c.arg("--run-dir").arg(&runs).arg("--report").arg(&report);
    run(c)?;
    let text =
        std::fs::read_to_string(&report).map_err(|e| format!("{}: {e}", report.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", report.display()))?;
    let accuracy = value["test_accuracy"].as_f64().unwrap_or(f64::NAN);
    if value["ranks"] != 2 || accuracy.is_nan() || accuracy <= 0.6 {
        return Err(format!(
            "mnist on 2 ranks, one epoch on 2,750 images: {} ranks, test accuracy {accuracy}",
            value["ranks"]
        ));
    }
    eprintln!("mnist on 2 ranks: test accuracy {accuracy:.4}");
    // Both ranks killed mid-epoch, then resumed: as the uninterrupted 2-rank run.
    crate::kill_resume::kill_and_resume(&features, out, &mnist, 2)
}
