//! Gradient accumulation: `accumulate(n)` micro-batches per optimizer step give the update of
//! one step on a batch `n` times larger, within 1e-5 on every weight after 12 Adam steps, on
//! one device and data-parallel, with a short last micro-batch in the epoch.

use kiln_core::train::StopRules;
use kiln_core::{Error, Trainer};

#[path = "common/net.rs"]
mod net;
use net::*;

/// Trains 12 optimizer steps with `batch` examples per micro-batch and `accumulate`
/// micro-batches per step, on `replicas` replicas (0: the single-device trainer).
fn train(batch: usize, accumulate: usize, replicas: usize) -> (Vec<f32>, usize, f64) {
    let device = cpu();
    let config = config()
        .with_batch_size(batch)
        .with_accumulate(accumulate)
        .with_stop(StopRules::steps(12));
    let trainer = if replicas == 0 {
        Trainer::new(config, &device)
    } else {
        Trainer::data_parallel(config, &vec![device.clone(); replicas]).unwrap()
    };
    let fitted = trainer.fit(Net::new(&device), &data(), None).unwrap();
    (
        fitted.model.weights(),
        fitted.report.steps,
        fitted.report.history[0].train["loss"],
    )
}

#[test]
fn micro_batches_equal_one_large_batch() {
    let _serial = serial();
    // 90 points: steps of 32, 32, 26 examples, as micro-batches of 8 (the last group 8, 8,
    // 8, 2) or of 16 and 16 (the last 16, 10).
    let (expected, steps, expected_loss) = train(32, 1, 0);
    assert_eq!(steps, 12);
    for (batch, accumulate, replicas) in [(8, 4, 0), (16, 2, 0), (8, 4, 2), (16, 2, 3)] {
        let (weights, steps, loss) = train(batch, accumulate, replicas);
        let what = format!("batch {batch} x {accumulate} on {replicas} replicas");
        assert_eq!(steps, 12, "{what}: optimizer steps");
        assert_same(&what, &weights, &expected);
        assert!(
            (loss - expected_loss).abs() < 1e-5,
            "{what}: loss {loss} vs {expected_loss}"
        );
    }
    // A last step shorter than the others: 90 = 3 x 28 + 6 in micro-batches of 7.
    let (expected, ..) = train(28, 1, 0);
    assert_same("batch 7 x 4", &train(7, 4, 0).0, &expected);
}

#[test]
fn accumulating_changes_the_update() {
    let _serial = serial();
    // The check above is not vacuous: micro-batches stepped one by one differ.
    let (large, ..) = train(32, 1, 0);
    let (small, ..) = train(8, 1, 0);
    assert!(large.iter().zip(&small).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn zero_micro_batches_are_refused() {
    let _serial = serial();
    let device = cpu();
    let err = Trainer::new(config().with_accumulate(0), &device)
        .fit(Net::new(&device), &data(), None)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(
        err.to_string().contains("accumulate must be at least 1"),
        "{err}"
    );
}
