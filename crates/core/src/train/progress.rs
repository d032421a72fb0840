//! Progress reporting: an `indicatif` bar when stderr is a terminal, one plain line per epoch
//! when it is not (logs, CI), nothing when quiet.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::history::EpochRecord;

/// How a run reports its progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
    /// A progress bar on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// One plain line per epoch.
    Plain,
    /// Nothing.
    Quiet,
}

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode) -> Self {
        let terminal = std::io::stderr().is_terminal();
        Self {
            bar: None,
            plain: match mode {
                ProgressMode::Auto => !terminal,
                ProgressMode::Plain => true,
                ProgressMode::Quiet => false,
            },
        }
        .with_bars(mode == ProgressMode::Auto && terminal)
    }

    fn with_bars(mut self, bars: bool) -> Self {
        if bars {
            self.bar = Some(ProgressBar::hidden());
        }
        self
    }

    pub(crate) fn start_epoch(&mut self, epoch: usize, max_epochs: Option<usize>, batches: usize) {
        if self.bar.is_some() {
            let bar = ProgressBar::new(batches as u64);
            let of = max_epochs.map(|m| format!("/{m}")).unwrap_or_default();
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "epoch {epoch}{of} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}, eta {{eta}})"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
    }

    pub(crate) fn step(&self, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!("loss {loss:.4}"));
        }
    }

    pub(crate) fn end_epoch(&self, record: &EpochRecord) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.plain || self.bar.is_some() {
            eprintln!("{}", record.summary_line());
        }
    }

    pub(crate) fn message(&self, text: &str) {
        if self.plain || self.bar.is_some() {
            eprintln!("{text}");
        }
    }
}
