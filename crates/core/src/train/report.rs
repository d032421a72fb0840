//! What a finished run returns: the [`TrainReport`] (stop reason, best epoch, history) and
//! the trained model ([`Fitted`]).

use super::*;

/// The best value of the monitored metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// The monitored metric.
    pub metric: String,
    /// Its best value.
    pub value: f64,
    /// The epoch it was reached.
    pub epoch: usize,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Epochs completed (the last one may be partial when a step-level rule fired).
    pub epochs: usize,
    /// Optimizer steps taken.
    pub steps: usize,
    /// The best epoch by the monitored metric.
    pub best: Option<Best>,
    /// Every epoch's metrics.
    pub history: Vec<EpochRecord>,
    /// The run folder, if any.
    pub run_dir: Option<PathBuf>,
    /// Seconds spent training (resumed runs included).
    pub train_secs: f64,
}

impl TrainReport {
    /// The last epoch's metrics.
    pub fn last(&self) -> Option<&EpochRecord> {
        self.history.last()
    }
}

/// A trained model (in inference mode, [`Module::valid`]) and its report.
#[derive(Debug)]
pub struct Fitted<M> {
    /// The model after the last step.
    pub model: M,
    /// What happened.
    pub report: TrainReport,
}
