//! Flags every example takes: `--data DIR`, `--backend NAME`, `--quiet`, `--report FILE.json`
//! and `--run-dir DIR`.

use std::path::PathBuf;

use burn::tensor::Device;
use kiln_core::train::ProgressMode;

/// The flags shared by every example.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Folder with the example's data set (ignored by examples that generate their data).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Backend: cpu (the default CPU backend), flex, ndarray, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
    /// Write the final metrics to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Run folder for logs, checkpoints and curves (default: runs/<example>).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

/// The flags of the examples that train with the `Trainer`.
#[derive(clap::Args, Debug, Clone)]
#[allow(dead_code)] // Each training example uses the fields it supports.
pub struct TrainArgs {
    /// Micro-batches per optimizer step (gradient accumulation): the update of a batch N
    /// times larger, with the memory of one batch. Step counts and schedules count
    /// optimizer steps.
    #[arg(long, value_parser = positive, default_value_t = 1, value_name = "N")]
    pub accumulate: usize,
    /// Continue the run in the run folder from its last checkpoint (after Ctrl-C, kill -9 or
    /// a lost machine); the other flags must be those of the interrupted run.
    #[arg(long)]
    pub resume: bool,
    /// Activation checkpointing: recompute memory-bound activations in the backward pass
    /// instead of keeping them (less memory, more compute; same gradients).
    #[arg(long)]
    pub checkpoint_activations: bool,
}

#[allow(dead_code)]
impl TrainArgs {
    /// `config` with these flags' gradient accumulation and activation checkpointing.
    pub fn apply(&self, config: kiln_core::TrainerConfig) -> kiln_core::TrainerConfig {
        config
            .with_accumulate(self.accumulate)
            .with_checkpoint_activations(self.checkpoint_activations)
    }

    /// Optimizer steps per epoch for `items` examples in batches of `batch_size`.
    pub fn steps_per_epoch(&self, items: usize, batch_size: usize) -> usize {
        kiln_core::train::steps_per_epoch(items, batch_size, self.accumulate)
    }

    /// `trainer.fit`, or with `--resume` `trainer.resume` from the run folder.
    pub fn fit<M, I, B>(
        &self,
        trainer: &kiln_core::Trainer,
        model: M,
        train: &kiln_core::Data<I, B>,
        valid: Option<&kiln_core::Data<I, B>>,
    ) -> kiln_core::Result<kiln_core::Fitted<M>>
    where
        M: kiln_core::TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        if self.resume {
            trainer.resume(model, train, valid)
        } else {
            trainer.fit(model, train, valid)
        }
    }
}

/// The peak resident memory of this process so far, in MiB (Linux: `VmHWM`), for reports.
#[allow(dead_code)]
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[allow(dead_code)] // Each example uses the helpers it needs.
impl CommonArgs {
    /// The device named by `--backend` (named on stderr unless `--quiet`).
    pub fn device(&self) -> kiln_core::Result<Device> {
        let device = kiln_core::backend::device(&self.backend)?;
        if !self.quiet {
            eprintln!("device: {}", kiln_core::backend::describe(&device));
        }
        Ok(device)
    }

    /// Quiet, or progress as the terminal allows.
    pub fn progress(&self) -> ProgressMode {
        if self.quiet {
            ProgressMode::Quiet
        } else {
            ProgressMode::Auto
        }
    }

    /// The run folder: `--run-dir`, else `runs/<name>`.
    pub fn run_dir(&self, name: &str) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(name))
    }

    /// Writes `report` to `--report` if given.
    pub fn write_report(&self, report: &serde_json::Value) -> kiln_core::Result<()> {
        match &self.report {
            Some(path) => kiln_core::write_report(path, report),
            None => Ok(()),
        }
    }

    /// Prints unless `--quiet`.
    pub fn say(&self, text: impl AsRef<str>) {
        if !self.quiet {
            println!("{}", text.as_ref());
        }
    }
}

/// The exit status of an example's `run`: success, or the error printed on stderr.
#[allow(dead_code)]
pub fn exit(result: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Ends one rank of a multi-process run: on an error, the error is printed with the rank
/// and the whole MPI job is aborted, so that the other ranks do not wait for this one until
/// their step timeout. A lone process just returns `result`.
#[allow(dead_code)]
pub fn end_rank<E: std::fmt::Display>(
    group: Option<&kiln_core::distributed::ProcessGroup>,
    result: Result<(), E>,
) -> Result<(), E> {
    match (result, group) {
        (Err(e), Some(group)) if group.world() > 1 => {
            eprintln!("error on rank {} of {}: {e}", group.rank(), group.world());
            group.abort(1)
        }
        (result, _) => result,
    }
}

/// The lines of a text file, each UTF-8 or else Latin-1, without line ends; blank lines are
/// kept only when `keep_blank`.
#[allow(dead_code)]
pub fn read_lines(path: &std::path::Path, keep_blank: bool) -> Result<Vec<String>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = kiln_core::data::text::all_lines(&bytes);
    if !keep_blank {
        lines.retain(|l| !l.trim().is_empty());
    }
    Ok(lines)
}

// Value ranges of the examples' flags, checked by clap before any work: a bad value is a
// usage error naming the flag, never a panic or a silently useless run.

/// A count or size of at least 1 (batch sizes, epochs, widths, beams, k).
#[allow(dead_code)]
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// A count of at least 2 (cross-validation folds, images for a covariance).
#[allow(dead_code)]
pub fn at_least_two(s: &str) -> Result<usize, String> {
    match positive(s)? {
        1 => Err("must be at least 2".into()),
        n => Ok(n),
    }
}

fn number<T: std::str::FromStr<Err = std::num::ParseFloatError> + Into<f64> + Copy>(
    s: &str,
    ok: impl Fn(f64) -> bool,
    want: &str,
) -> Result<T, String> {
    let v: T = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if ok(v.into()) {
        Ok(v)
    } else {
        Err(format!("must be {want}"))
    }
}

/// A finite number above 0 (learning rates, time budgets).
#[allow(dead_code)]
pub fn positive_rate(s: &str) -> Result<f64, String> {
    number(s, |v| v.is_finite() && v > 0.0, "a finite number above 0")
}

/// [`positive_rate`] in single precision.
#[allow(dead_code)]
pub fn positive_rate_f32(s: &str) -> Result<f32, String> {
    number(s, |v| v.is_finite() && v > 0.0, "a finite number above 0")
}

/// A probability in `[0, 1)` (dropout).
#[allow(dead_code)]
pub fn probability(s: &str) -> Result<f64, String> {
    number(s, |v| (0.0..1.0).contains(&v), "in [0, 1)")
}

/// A finite number of at least 0 (regularisation, a target loss, a temperature).
#[allow(dead_code)]
pub fn non_negative(s: &str) -> Result<f64, String> {
    number(
        s,
        |v| v.is_finite() && v >= 0.0,
        "a finite number of at least 0",
    )
}

/// [`non_negative`] in single precision.
#[allow(dead_code)]
pub fn non_negative_f32(s: &str) -> Result<f32, String> {
    number(
        s,
        |v| v.is_finite() && v >= 0.0,
        "a finite number of at least 0",
    )
}

/// Any finite number (rating thresholds, length penalties).
#[allow(dead_code)]
pub fn finite_f32(s: &str) -> Result<f32, String> {
    number(s, f64::is_finite, "a finite number")
}
