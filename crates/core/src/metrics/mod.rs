//! Streaming metrics: each [`Metric`] is fed one [`BatchOutput`] per batch and reports a value
//! for the epoch. The trainer owns one set for training and one for validation.
//!
//! Built in: [`MeanLoss`], [`Accuracy`], [`TopKAccuracy`], macro [`Precision`] / [`Recall`] /
//! [`F1`] (over a [`ConfusionMatrix`]), [`Rmse`] and [`Mae`], and [`Term`] (a named part
//! of the loss a model reports beside it, such as a VAE's KL divergence). Domain crates implement
//! [`Metric`] for their own (ranking metrics live in `kiln-recsys`).

mod classification;
mod regression;
mod term;

pub use classification::{Accuracy, ConfusionMatrix, F1, Precision, Recall, TopKAccuracy};
pub use regression::{Mae, Rmse};
pub use term::Term;

use burn::prelude::*;

/// What a model's step hands to the metrics, still on the device.
#[derive(Debug, Clone)]
pub enum Output {
    /// Only the loss is meaningful.
    None,
    /// Class scores (logits or probabilities) and the true classes.
    Classification {
        /// `[N, C]` scores; the predicted class is the arg-max of a row.
        scores: Tensor<2>,
        /// `[N]` true classes.
        targets: Tensor<1, Int>,
        /// A target class to leave out of every metric (padding in sequence models).
        ignore_index: Option<usize>,
    },
    /// Real-valued predictions and targets.
    Regression {
        /// `[N]` predictions.
        predictions: Tensor<1>,
        /// `[N]` targets.
        targets: Tensor<1>,
    },
    /// Named scalar (`[1]`) terms, each a mean over the batch (the parts of a loss).
    Terms(Vec<(&'static str, Tensor<1>)>),
}

/// What a model returns for one batch: the loss to minimise and outputs for the metrics.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The scalar (`[1]`) loss, averaged over the batch.
    pub loss: Tensor<1>,
    /// The number of examples in the batch (weights the epoch's mean loss).
    pub batch_size: usize,
    /// Outputs for the metrics.
    pub output: Output,
}

impl StepOutput {
    /// A step that only reports its loss.
    pub fn loss_only(loss: Tensor<1>, batch_size: usize) -> Self {
        Self {
            loss,
            batch_size,
            output: Output::None,
        }
    }

    /// A classification step.
    pub fn classification(loss: Tensor<1>, scores: Tensor<2>, targets: Tensor<1, Int>) -> Self {
        let batch_size = targets.dims()[0];
        Self {
            loss,
            batch_size,
            output: Output::Classification {
                scores,
                targets,
                ignore_index: None,
            },
        }
    }

    /// A regression step.
    pub fn regression(loss: Tensor<1>, predictions: Tensor<1>, targets: Tensor<1>) -> Self {
        let batch_size = targets.dims()[0];
        Self {
            loss,
            batch_size,
            output: Output::Regression {
                predictions,
                targets,
            },
        }
    }
}

/// One batch's outputs, copied to host memory once so that every metric can read them.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutput {
    /// The batch's mean loss.
    pub loss: f64,
    /// The number of examples in the batch.
    pub batch_size: usize,
    /// The outputs.
    pub output: HostOutput,
}

/// Host copy of an [`Output`].
#[derive(Debug, Clone, PartialEq)]
pub enum HostOutput {
    /// No outputs besides the loss.
    None,
    /// Classification outputs, ignored targets already removed.
    Classification {
        /// The number of classes `C`.
        num_classes: usize,
        /// Row-major `[N, C]` scores.
        scores: Vec<f32>,
        /// `[N]` true classes.
        targets: Vec<usize>,
    },
    /// Regression outputs.
    Regression {
        /// `[N]` predictions.
        predictions: Vec<f32>,
        /// `[N]` targets.
        targets: Vec<f32>,
    },
    /// Named batch means.
    Terms(Vec<(&'static str, f64)>),
}

impl HostOutput {
    /// Copies device outputs to the host, dropping ignored targets (the ignore index, and
    /// negative targets: padding).
    ///
    /// Fails with [`Error::BadTarget`](crate::Error::BadTarget) for a target that is not one
    /// of the scores' classes, or a batch with fewer score rows than targets.
    ///
    /// # Errors
    /// [`Error::BadTarget`](crate::Error::BadTarget) for a target that is not one of the scores'
    /// classes, or fewer score rows than targets.
    pub fn from_output(output: Output) -> crate::Result<Self> {
        Ok(match output {
            Output::None => HostOutput::None,
            Output::Classification {
                scores,
                targets,
                ignore_index,
            } => {
                let [_, num_classes] = scores.dims();
                let all_scores = scores
                    .into_data()
                    .try_to_vec_as::<f32>()
                    .unwrap_or_default();
                let all_targets = targets
                    .into_data()
                    .try_to_vec_as::<i64>()
                    .unwrap_or_default();
                let mut kept_scores = Vec::with_capacity(all_scores.len());
                let mut kept_targets = Vec::with_capacity(all_targets.len());
                for (row, &t) in all_targets.iter().enumerate() {
                    if t < 0 || ignore_index == Some(t as usize) {
                        continue;
                    }
                    let scores = all_scores.get(row * num_classes..(row + 1) * num_classes);
                    let (Some(scores), true) = (scores, (t as usize) < num_classes) else {
                        return Err(crate::Error::BadTarget {
                            row,
                            target: t,
                            classes: if scores.is_some() { num_classes } else { 0 },
                        });
                    };
                    kept_targets.push(t as usize);
                    kept_scores.extend_from_slice(scores);
                }
                HostOutput::Classification {
                    num_classes,
                    scores: kept_scores,
                    targets: kept_targets,
                }
            }
            Output::Terms(terms) => HostOutput::Terms(
                terms
                    .into_iter()
                    .map(|(name, t)| (name, t.into_scalar::<f64>()))
                    .collect(),
            ),
            Output::Regression {
                predictions,
                targets,
            } => HostOutput::Regression {
                predictions: predictions
                    .into_data()
                    .try_to_vec_as::<f32>()
                    .unwrap_or_default(),
                targets: targets
                    .into_data()
                    .try_to_vec_as::<f32>()
                    .unwrap_or_default(),
            },
        })
    }
}

/// A metric accumulated over the batches of an epoch. `Sync` because the trainer runs its
/// loop on a worker of the CPU thread pool ([`crate::backend::on_cpu_pool`]).
pub trait Metric: Send + Sync {
    /// The name used in logs and reports (`accuracy`, `macro_f1`, `rmse`, ...).
    fn name(&self) -> String;
    /// Adds one batch.
    fn update(&mut self, batch: &BatchOutput);
    /// The value over every batch since the last reset (NaN before any batch).
    fn value(&self) -> f64;
    /// Forgets every batch.
    fn reset(&mut self);
    /// Whether a larger value is better (used by early stopping and best checkpoints).
    fn higher_is_better(&self) -> bool;
    /// A fresh copy of this metric (the trainer keeps one per split).
    fn clone_box(&self) -> Box<dyn Metric>;
}

impl Clone for Box<dyn Metric> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// A running mean weighted by batch size (the loss, and [`Term`]s).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct WeightedMean {
    sum: f64,
    count: usize,
}

impl WeightedMean {
    /// Adds a batch mean `value` over `n` examples.
    pub(crate) fn add(&mut self, value: f64, n: usize) {
        self.sum += value * n as f64;
        self.count += n;
    }

    /// The mean so far (NaN before any example).
    pub(crate) fn value(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

/// The example-weighted mean of the batch losses.
#[derive(Debug, Clone, Default)]
pub struct MeanLoss(WeightedMean);

impl MeanLoss {
    /// An empty mean.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Metric for MeanLoss {
    fn name(&self) -> String {
        "loss".into()
    }
    fn update(&mut self, batch: &BatchOutput) {
        self.0.add(batch.loss, batch.batch_size);
    }
    fn value(&self) -> f64 {
        self.0.value()
    }
    fn reset(&mut self) {
        *self = Self::default();
    }
    fn higher_is_better(&self) -> bool {
        false
    }
    fn clone_box(&self) -> Box<dyn Metric> {
        Box::new(Self::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_loss_is_weighted_by_batch_size() {
        let mut m = MeanLoss::new();
        assert!(m.value().is_nan());
        for (loss, n) in [(1.0, 3), (3.0, 1)] {
            m.update(&BatchOutput {
                loss,
                batch_size: n,
                output: HostOutput::None,
            });
        }
        assert!((m.value() - 1.5).abs() < 1e-12);
    }

    /// A label past the classes (which top-k accuracy would index with) and a batch with
    /// more targets than score rows are typed errors naming the row.
    #[test]
    fn targets_that_do_not_fit_the_scores_are_errors() {
        let device = crate::test_device();
        let scores = Tensor::<2>::from_floats([[0.0, 1.0], [2.0, 0.0]], &device);
        let bad = |targets: &[i64]| {
            HostOutput::from_output(Output::Classification {
                scores: scores.clone(),
                targets: Tensor::<1, Int>::from_ints(targets, &device),
                ignore_index: None,
            })
            .unwrap_err()
        };
        let e = bad(&[1, 2]);
        assert!(
            matches!(
                e,
                crate::Error::BadTarget {
                    row: 1,
                    target: 2,
                    classes: 2
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("row 1 of the batch has target class 2"),
            "{e}"
        );
        let e = bad(&[0, 1, 1]);
        assert!(
            matches!(
                e,
                crate::Error::BadTarget {
                    row: 2,
                    classes: 0,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn host_output_drops_ignored_targets() {
        let device = crate::test_device();
        let scores = Tensor::<2>::from_floats([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]], &device);
        let targets = Tensor::<1, Int>::from_ints([1, 0, 0], &device);
        let host = HostOutput::from_output(Output::Classification {
            scores,
            targets,
            ignore_index: Some(0),
        })
        .unwrap();
        assert_eq!(
            host,
            HostOutput::Classification {
                num_classes: 2,
                scores: vec![0.0, 1.0],
                targets: vec![1],
            }
        );
    }
}
