//! Data-parallel training equals single-device training on the full batch: several replicas in
//! one process (the same CPU device twice, and two different CPU backends when both are
//! compiled in). Several processes are `tests/mpi.rs` (feature `mpi`); here, a build without
//! it refuses to run under a launcher.
//!
//! Tolerance: after 12 Adam steps every weight is within 1e-5 (absolute) of the single-device
//! run's; the only difference is the order of float32 additions in the gradient sum.

use burn::prelude::*;
use kiln_core::metrics::Accuracy;
use kiln_core::{Backend, Trainer};

#[path = "common/net.rs"]
mod net;
use net::*;

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

/// Not a test of its own: the process `a_build_without_mpi_refuses_a_launcher` starts with
/// Open MPI's variables set, as `mpirun -np 2` would.
#[test]
#[ignore = "started by a_build_without_mpi_refuses_a_launcher"]
fn launched_process_without_mpi() {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_none() {
        return;
    }
    let err = kiln_core::distributed::ProcessGroup::from_launcher().unwrap_err();
    println!("refused: {err}");
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_a_launcher() {
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args([
            "launched_process_without_mpi",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("OMPI_COMM_WORLD_RANK", "1")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(
            "refused: process group (rank 1 of 2): Open MPI's mpirun started this process"
        ) && text.contains("`mpi` feature")
            && text.contains("libopenmpi-dev"),
        "{text}"
    );
}
