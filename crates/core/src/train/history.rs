//! The record of a run: one [`EpochRecord`] per epoch, appended to `RUN_DIR/metrics.jsonl` as
//! it happens and drawn as loss/metric curves (`RUN_DIR/curves.svg`) at the end.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The metrics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Optimizer steps taken so far in the run.
    pub step: usize,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Training metrics (`loss`, `accuracy`, ...), averaged over the epoch.
    pub train: BTreeMap<String, f64>,
    /// Validation metrics after the epoch (empty without validation data).
    pub valid: BTreeMap<String, f64>,
    /// Seconds since the start of the run (resumed runs included).
    pub elapsed_secs: f64,
}

impl EpochRecord {
    /// A metric by its prefixed name (`train_loss`, `valid_accuracy`, ...).
    pub fn get(&self, name: &str) -> Option<f64> {
        if let Some(m) = name.strip_prefix("train_") {
            self.train.get(m).copied()
        } else if let Some(m) = name.strip_prefix("valid_") {
            self.valid.get(m).copied()
        } else {
            None
        }
    }

    /// The flat JSON object written to `metrics.jsonl`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("epoch".into(), self.epoch.into());
        obj.insert("step".into(), self.step.into());
        obj.insert("lr".into(), self.lr.into());
        for (prefix, map) in [("train", &self.train), ("valid", &self.valid)] {
            for (k, v) in map {
                obj.insert(format!("{prefix}_{k}"), (*v).into());
            }
        }
        obj.insert("elapsed_secs".into(), self.elapsed_secs.into());
        serde_json::Value::Object(obj)
    }

    /// One human-readable line.
    pub fn summary_line(&self) -> String {
        let mut line = format!(
            "epoch {:>3}  step {:>6}  lr {:.2e}",
            self.epoch, self.step, self.lr
        );
        for (prefix, map) in [("train", &self.train), ("valid", &self.valid)] {
            for (k, v) in map {
                line.push_str(&format!("  {prefix}_{k} {v:.4}"));
            }
        }
        line.push_str(&format!("  {:.1}s", self.elapsed_secs));
        line
    }

    /// Appends this record as one JSON line to `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it cannot be opened or written.
    pub fn append_jsonl(&self, path: &Path) -> Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        writeln!(file, "{}", self.to_json()).map_err(|e| Error::io(path, e))
    }
}

/// Rewrites `path` (a run's `metrics.jsonl`) to hold exactly `history`, atomically.
pub(super) fn rewrite_jsonl(history: &[EpochRecord], path: &Path) -> Result<()> {
    super::checkpoint::write_atomic(path, |w| {
        for record in history {
            writeln!(w, "{}", record.to_json())?;
        }
        Ok(())
    })
}

/// One line of a panel: its split name, its (epoch, value) points and its colour.
type Series = (&'static str, Vec<(f64, f64)>, RGBColor);

/// Draws every metric of `history` against the epoch, one panel per metric name (the loss
/// first), training and validation as two series. Written as SVG.
///
/// # Errors
/// [`Error::Plot`] when the curves cannot be drawn or written.
pub fn write_curves(history: &[EpochRecord], path: &Path) -> Result<()> {
    let plot_err = |e: String| Error::Plot {
        path: path.to_path_buf(),
        reason: e,
    };
    let mut names: Vec<String> = history
        .iter()
        .flat_map(|r| r.train.keys().chain(r.valid.keys()).cloned())
        .collect();
    names.sort_by_key(|n| (n != "loss", n.clone()));
    names.dedup();
    if history.is_empty() || names.is_empty() {
        return Ok(());
    }
    crate::plot::font::register();
    let height = 260 * names.len() as u32;
    let root = SVGBackend::new(path, (720, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
    let panels = root.split_evenly((names.len(), 1));
    let last_epoch = history.last().map(|r| r.epoch).unwrap_or(1).max(2);
    for (panel, name) in panels.iter().zip(&names) {
        let series: Vec<Series> = [("train", BLUE), ("valid", RED)]
            .into_iter()
            .map(|(split, color)| {
                let points = history
                    .iter()
                    .filter_map(|r| {
                        let map = if split == "train" { &r.train } else { &r.valid };
                        map.get(name)
                            .filter(|v| v.is_finite())
                            .map(|v| (r.epoch as f64, *v))
                    })
                    .collect();
                (split, points, color)
            })
            .collect();
        let values = series
            .iter()
            .flat_map(|(_, p, _)| p.iter().map(|(_, v)| *v));
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if !lo.is_finite() {
            continue;
        }
        let pad = ((hi - lo) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(panel)
            .caption(name, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(1f64..last_epoch as f64, (lo - pad)..(hi + pad))
            .map_err(|e| plot_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| plot_err(e.to_string()))?;
        for (split, points, color) in series {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, &color))
                .map_err(|e| plot_err(e.to_string()))?
                .label(split)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| plot_err(e.to_string()))?;
    }
    root.present().map_err(|e| plot_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, loss: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            step: epoch * 10,
            lr: 0.1,
            train: BTreeMap::from([("loss".into(), loss), ("accuracy".into(), 0.5)]),
            valid: BTreeMap::from([("loss".into(), loss + 0.1)]),
            elapsed_secs: epoch as f64,
        }
    }

    #[test]
    fn a_resumed_log_goes_back_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("metrics.jsonl");
        let history: Vec<_> = (1..=3).map(|e| record(e, 1.0 / e as f64)).collect();
        for r in &history {
            r.append_jsonl(&jsonl).unwrap();
        }
        // Killed after logging epoch 3, before its checkpoint: the checkpoint holds 1..=2.
        rewrite_jsonl(&history[..2], &jsonl).unwrap();
        let text = std::fs::read_to_string(&jsonl).unwrap();
        let epochs: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(epochs, [1, 2]);
    }

    #[test]
    fn json_lines_and_curves_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("metrics.jsonl");
        let history: Vec<_> = (1..=3).map(|e| record(e, 1.0 / e as f64)).collect();
        for r in &history {
            r.append_jsonl(&jsonl).unwrap();
        }
        let text = std::fs::read_to_string(&jsonl).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["train_loss"], 0.5);
        assert_eq!(lines[1]["valid_loss"], 0.6);
        assert_eq!(history[1].get("valid_loss"), Some(0.6));

        let svg = dir.path().join("curves.svg");
        write_curves(&history, &svg).unwrap();
        let content = std::fs::read_to_string(&svg).unwrap();
        assert!(
            content.starts_with("<svg") && content.contains("polyline"),
            "{}",
            &content[..200]
        );
        assert!(content.contains("accuracy") && content.contains("loss"));
    }
}
