//! Stop rules: when a run ends, and why. Every rule that is set applies; the first to fire ends
//! the run and becomes its [`StopReason`].

use serde::{Deserialize, Serialize};

/// Whether smaller or larger values of a monitored metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Smaller is better (losses, errors).
    Min,
    /// Larger is better (accuracy, F1).
    Max,
}

impl Mode {
    /// Whether `value` improves on `best` by more than `min_delta`.
    pub fn improves(self, value: f64, best: f64, min_delta: f64) -> bool {
        match self {
            Mode::Min => value < best - min_delta,
            Mode::Max => value > best + min_delta,
        }
    }
}

/// Which loss the target-loss rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossScope {
    /// The loss of each training step, as in the seed's loop (checked after every step).
    #[default]
    Step,
    /// The epoch's monitored loss: validation loss with validation data, else the mean
    /// training loss (checked after every epoch).
    Epoch,
}

/// Stop once the loss reaches a preset threshold (the seed's rule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetLoss {
    /// The threshold: training stops when the loss is at or below it.
    pub value: f64,
    /// Which loss is compared.
    #[serde(default)]
    pub scope: LossScope,
}

/// Stop when the monitored metric has not improved for `patience` epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The smallest change that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
}

/// The stop rules of a run. At least one of `max_epochs`, `max_steps` and
/// `time_budget_secs` must be set, so that every run ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StopRules {
    /// Stop after this many epochs.
    pub max_epochs: Option<usize>,
    /// Stop after this many optimizer steps (mid-epoch if need be).
    pub max_steps: Option<usize>,
    /// Stop when the loss reaches a threshold.
    pub target_loss: Option<TargetLoss>,
    /// Stop when the monitored metric stops improving.
    pub early_stopping: Option<EarlyStopping>,
    /// Stop (after the current step) once this many seconds of training have passed.
    pub time_budget_secs: Option<f64>,
}

impl StopRules {
    /// Rules that stop after `epochs` epochs.
    pub fn epochs(epochs: usize) -> Self {
        Self {
            max_epochs: Some(epochs),
            ..Self::default()
        }
    }

    /// Rules that stop after `steps` optimizer steps.
    pub fn steps(steps: usize) -> Self {
        Self {
            max_steps: Some(steps),
            ..Self::default()
        }
    }

    /// Adds a step-level target loss.
    pub fn with_target_loss(mut self, value: f64) -> Self {
        self.target_loss = Some(TargetLoss {
            value,
            scope: LossScope::Step,
        });
        self
    }

    /// Adds early stopping on the monitored metric.
    pub fn with_early_stopping(mut self, patience: usize, min_delta: f64) -> Self {
        self.early_stopping = Some(EarlyStopping {
            patience,
            min_delta,
        });
        self
    }

    /// Adds a wall-clock budget.
    pub fn with_time_budget(mut self, seconds: f64) -> Self {
        self.time_budget_secs = Some(seconds);
        self
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        if self.max_epochs.is_none() && self.max_steps.is_none() && self.time_budget_secs.is_none()
        {
            return Err(crate::Error::InvalidConfig(
                "stop rules need at least one of max_epochs, max_steps or time_budget_secs, \
                 or the run may never end"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum StopReason {
    /// `max_epochs` epochs were completed.
    MaxEpochs {
        /// The epoch count.
        epochs: usize,
    },
    /// `max_steps` optimizer steps were taken.
    MaxSteps {
        /// The step count.
        steps: usize,
    },
    /// The loss reached the target.
    TargetLoss {
        /// The loss that reached it.
        loss: f64,
        /// The target.
        target: f64,
        /// The step at which it was reached.
        step: usize,
    },
    /// The monitored metric did not improve for `patience` epochs.
    EarlyStopping {
        /// The monitored metric.
        monitor: String,
        /// Its best value.
        best: f64,
        /// The epoch of the best value.
        best_epoch: usize,
        /// The patience that ran out.
        patience: usize,
    },
    /// The wall-clock budget ran out.
    TimeBudget {
        /// The budget, in seconds.
        seconds: f64,
    },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::MaxEpochs { epochs } => write!(f, "reached max_epochs ({epochs})"),
            StopReason::MaxSteps { steps } => write!(f, "reached max_steps ({steps})"),
            StopReason::TargetLoss { loss, target, step } => {
                write!(
                    f,
                    "loss {loss:.6} reached the target {target} at step {step}"
                )
            }
            StopReason::EarlyStopping {
                monitor,
                best,
                best_epoch,
                patience,
            } => write!(
                f,
                "early stopping: {monitor} did not improve for {patience} epochs (best {best:.6} at epoch {best_epoch})"
            ),
            StopReason::TimeBudget { seconds } => write!(f, "time budget of {seconds}s ran out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn improvement_respects_mode_and_delta() {
        assert!(Mode::Min.improves(0.9, 1.0, 0.05));
        assert!(!Mode::Min.improves(0.97, 1.0, 0.05));
        assert!(Mode::Max.improves(0.9, 0.8, 0.0));
        assert!(!Mode::Max.improves(0.8, 0.8, 0.0));
    }

    #[test]
    fn rules_without_an_end_are_rejected() {
        assert!(
            StopRules::default()
                .with_target_loss(0.1)
                .validate()
                .is_err()
        );
        assert!(StopRules::epochs(1).validate().is_ok());
        assert!(
            StopRules::default()
                .with_time_budget(1.0)
                .validate()
                .is_ok()
        );
    }
}
