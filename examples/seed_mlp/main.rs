//! The primer's own network, trained with kiln-core.
//!
//! `y_hat = sigmoid(W x + b)` on `x = [[1,2],[2,3],[3,4]]`, `y = [0,0,1]`, loss
//! `L = 1/(2N) sum (y - y_hat)^2`:
//! 1. plain gradient descent `W <- W - 0.01 dL/dW` for 1000 steps, as the primer does, next to
//!    the same loop written out by hand in f64;
//! 2. the same data with Adam and the target-loss stop rule (the primer's "repeat until the
//!    loss reaches a preset threshold").
//!
//! `cargo run --release --example seed_mlp -- [--backend cpu] [--quiet] [--report seed.json]`

#[path = "../common/mod.rs"]
mod common;
mod seed;

use clap::Parser;
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::StopRules;
use kiln_core::{Trainer, TrainerConfig};
use seed::SeedNetConfig;
use serde_json::json;

/// Train the primer's sigmoid unit by gradient descent, then with Adam to a target loss.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// Learning rate of the gradient-descent run.
    #[arg(long, value_parser = common::positive_rate, default_value_t = 0.01)]
    alpha: f64,
    /// Steps of the gradient-descent run.
    #[arg(long, value_parser = common::positive, default_value_t = 1000)]
    steps: usize,
    /// Loss threshold of the Adam run.
    #[arg(long, value_parser = common::non_negative, default_value_t = 0.05)]
    target_loss: f64,
}

fn main() -> kiln_core::Result<()> {
    let args = Args::parse();
    let device = args.common.device()?;
    let data = seed::data();
    let base = |optimizer, lr| {
        TrainerConfig::new(optimizer, LrSchedule::constant(lr))
            .with_batch_size(3)
            .with_shuffle(false)
            .with_progress(kiln_core::train::ProgressMode::Quiet)
    };

    // 1. The primer's loop: plain gradient descent, fixed step count.
    let gd = Trainer::new(
        base(OptimizerConfig::sgd(), args.alpha).with_stop(StopRules::steps(args.steps)),
        &device,
    )
    .fit(SeedNetConfig::new().init(&device), &data, None)?;
    let (w, b) = gd.model.parameters();
    let gd_loss = gd
        .report
        .last()
        .map(|r| r.train["loss"])
        .unwrap_or(f64::NAN);
    let (ref_w, ref_b) = seed::reference_descent(args.alpha, args.steps);
    let inputs: Vec<[f64; 2]> = seed::INPUTS.iter().map(|x| x.map(f64::from)).collect();
    let targets: Vec<f64> = seed::TARGETS.iter().map(|&y| f64::from(y)).collect();
    let ref_loss = seed::loss(&ref_w, ref_b, &inputs, &targets);
    args.common.say(format!(
        "gradient descent, alpha {}, {} steps:\n  W = [{:.6}, {:.6}]  b = {:.6}  loss = {:.6}\n  by hand (f64): W = [{:.6}, {:.6}]  b = {:.6}  loss = {:.6}",
        args.alpha, args.steps, w[0], w[1], b, gd_loss, ref_w[0], ref_w[1], ref_b, ref_loss
    ));

    // 2. Adam until the loss reaches the threshold (with a step cap so it always ends).
    let adam = Trainer::new(
        base(OptimizerConfig::adam(), 0.1)
            .with_stop(StopRules::steps(10_000).with_target_loss(args.target_loss)),
        &device,
    )
    .fit(SeedNetConfig::new().init(&device), &data, None)?;
    let (aw, ab) = adam.model.parameters();
    let adam_loss = adam
        .report
        .last()
        .map(|r| r.train["loss"])
        .unwrap_or(f64::NAN);
    args.common.say(format!(
        "Adam (lr 0.1) to loss <= {}:\n  W = [{:.6}, {:.6}]  b = {:.6}  after {} steps ({})",
        args.target_loss, aw[0], aw[1], ab, adam.report.steps, adam.report.stop_reason
    ));

    args.common.write_report(&json!({
        "gd": { "w": w, "b": b, "loss": gd_loss, "steps": gd.report.steps, "reference_w": ref_w, "reference_b": ref_b, "reference_loss": ref_loss },
        "adam": { "w": aw, "b": ab, "steps": adam.report.steps, "stop_reason": adam.report.stop_reason, "last_epoch_loss": adam_loss },
    }))
}
