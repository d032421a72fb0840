//! How classifiers hold up under the [corruption suite](crate::corrupt): accuracy on the clean
//! test set and on every corruption at every severity, the mean over the corrupted sets (the
//! "mean corrupted accuracy" of MNIST-C / ImageNet-C) and per family of conditions.
//!
//! Several models are measured on the same corrupted images (each set is made once and fed to
//! every model), so that their numbers compare like for like.

use std::collections::BTreeMap;

use burn::data::dataset::InMemDataset;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::batch::{ImageBatcher, ImageItem};
use crate::corrupt::{Corruption, Severity, corrupt_items};
use crate::error::{Result, VisionError};
use crate::models::ImageClassifier;
use crate::predict::evaluate;

/// Which corrupted sets to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    /// The seed of every corruption's random streams.
    pub seed: u64,
    /// The corruptions, in the order of the report.
    pub corruptions: Vec<Corruption>,
    /// The severities.
    pub severities: Vec<Severity>,
    /// Images per inference batch.
    pub batch_size: usize,
}

impl Suite {
    /// Every corruption at every severity, seed 0, batches of 500.
    pub fn full() -> Self {
        Suite {
            seed: 0,
            corruptions: Corruption::ALL.to_vec(),
            severities: Severity::ALL.to_vec(),
            batch_size: 500,
        }
    }

    /// The same suite with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks that the suite measures something.
    ///
    /// # Errors
    /// [`VisionError::Parameter`] when it has no corruption, no severity or a zero batch size.
    pub fn check(&self) -> Result<()> {
        let reason = if self.corruptions.is_empty() {
            "no corruption to measure"
        } else if self.severities.is_empty() {
            "no severity to measure"
        } else if self.batch_size == 0 {
            "batch size 0"
        } else {
            return Ok(());
        };
        Err(VisionError::Parameter {
            name: "suite",
            reason: format!("{reason}: expected at least one"),
        })
    }
}

/// One corruption's accuracies, one per severity of the suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorruptionAccuracy {
    /// The corruption.
    pub corruption: Corruption,
    /// `(severity, accuracy)` in the suite's order.
    pub accuracy: Vec<(Severity, f64)>,
}

impl CorruptionAccuracy {
    /// The mean over the severities.
    pub fn mean(&self) -> f64 {
        mean(self.accuracy.iter().map(|(_, a)| *a))
    }
}

/// A model's accuracy on the clean set and on every corrupted set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Robustness {
    /// Accuracy on the clean images.
    pub clean: f64,
    /// Per corruption, per severity.
    pub corrupted: Vec<CorruptionAccuracy>,
}

impl Robustness {
    /// The mean accuracy over every corrupted set (all corruptions, all severities).
    pub fn mean_corrupted(&self) -> f64 {
        mean(
            self.corrupted
                .iter()
                .flat_map(|c| c.accuracy.iter().map(|(_, a)| *a)),
        )
    }

    /// The mean accuracy per family of conditions ([`Corruption::family`]).
    pub fn family_means(&self) -> BTreeMap<&'static str, f64> {
        let mut by_family: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for c in &self.corrupted {
            by_family
                .entry(c.corruption.family())
                .or_default()
                .extend(c.accuracy.iter().map(|(_, a)| *a));
        }
        by_family
            .into_iter()
            .map(|(f, v)| (f, mean(v.into_iter())))
            .collect()
    }

    /// The accuracy of `corruption` at `severity`, if the suite measured it.
    pub fn accuracy(&self, corruption: Corruption, severity: Severity) -> Option<f64> {
        self.corrupted
            .iter()
            .find(|c| c.corruption == corruption)?
            .accuracy
            .iter()
            .find(|(s, _)| *s == severity)
            .map(|(_, a)| *a)
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Measures every model on `items` (clean images in `[0, 1]`, before the batcher's
/// transforms) and on each corrupted copy the suite makes; the batcher's evaluation pipeline
/// (its normalisation) applies to every set. Returns one [`Robustness`] per model, in order.
///
/// # Errors
/// [`VisionError::Parameter`] for an empty suite or an item that does not hold a
/// `C x H x W` image of the batcher's shape.
pub fn evaluate_robustness<M: ImageClassifier>(
    models: &[&M],
    items: &[ImageItem],
    batcher: &ImageBatcher,
    num_classes: usize,
    suite: &Suite,
    device: &Device,
) -> Result<Vec<Robustness>> {
    suite.check()?;
    batcher.check_items(items)?;
    let shape = [batcher.channels, batcher.height, batcher.width];
    let accuracy = |model: &M, set: Vec<ImageItem>| -> Result<f64> {
        let set = InMemDataset::new(set);
        Ok(evaluate(model, &set, batcher, num_classes, suite.batch_size, device)?.accuracy())
    };
    let mut out: Vec<Robustness> = models
        .iter()
        .map(|m| {
            Ok(Robustness {
                clean: accuracy(m, items.to_vec())?,
                corrupted: Vec::new(),
            })
        })
        .collect::<Result<_>>()?;
    for &corruption in &suite.corruptions {
        for r in &mut out {
            r.corrupted.push(CorruptionAccuracy {
                corruption,
                accuracy: Vec::new(),
            });
        }
        for &severity in &suite.severities {
            let set = corrupt_items(items, shape, corruption, severity, suite.seed)?;
            for (model, r) in models.iter().zip(&mut out) {
                let a = accuracy(model, set.clone())?;
                if let Some(row) = r.corrupted.last_mut() {
                    row.accuracy.push((severity, a));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{LeNet5, LeNet5Config};

    /// Uniform images: dark ones of class 0, lighter ones of class 1.
    fn threshold_items() -> Vec<ImageItem> {
        (0..40)
            .map(|i| {
                let level = if i % 2 == 0 { 0.1 } else { 0.4 };
                ImageItem {
                    pixels: vec![level; 28 * 28],
                    label: i % 2,
                }
            })
            .collect()
    }

    #[test]
    fn means_and_lookups() {
        let s = |l| Severity::new(l).unwrap();
        let r = Robustness {
            clean: 0.99,
            corrupted: vec![
                CorruptionAccuracy {
                    corruption: Corruption::Blur,
                    accuracy: vec![(s(1), 0.9), (s(5), 0.5)],
                },
                CorruptionAccuracy {
                    corruption: Corruption::Strokes,
                    accuracy: vec![(s(1), 0.8), (s(5), 0.2)],
                },
            ],
        };
        assert!((r.mean_corrupted() - 0.6).abs() < 1e-12);
        assert!((r.corrupted[0].mean() - 0.7).abs() < 1e-12);
        assert_eq!(r.family_means().get("background"), Some(&0.5));
        assert_eq!(r.accuracy(Corruption::Strokes, s(5)), Some(0.2));
        assert_eq!(r.accuracy(Corruption::Strokes, s(3)), None);
        let empty = Suite {
            severities: vec![],
            ..Suite::full()
        };
        assert!(
            empty
                .check()
                .unwrap_err()
                .to_string()
                .contains("no severity")
        );
    }

    #[test]
    fn one_set_per_corruption_and_severity_and_the_clean_accuracy_is_evaluate_s() {
        let _rng = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        let model: LeNet5 = LeNet5Config::new().with_num_classes(2).init(&device);
        let items = threshold_items();
        let batcher = ImageBatcher::new(1, 28, 28);
        let suite = Suite {
            corruptions: vec![Corruption::Brightness, Corruption::GaussianNoise],
            severities: vec![Severity::new(1).unwrap(), Severity::new(5).unwrap()],
            batch_size: 16,
            seed: 3,
        };
        let r =
            evaluate_robustness(&[&model, &model], &items, &batcher, 2, &suite, &device).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], r[1], "the same model on the same sets");
        let set = InMemDataset::new(items.clone());
        let direct = evaluate(&model, &set, &batcher, 2, 7, &device).unwrap();
        assert_eq!(r[0].clean, direct.accuracy());
        assert_eq!(r[0].corrupted.len(), 2);
        assert!(r[0].corrupted.iter().all(|c| c.accuracy.len() == 2));
        // Brightness 0.5 on a uniform image is a uniform image of 0.6 / 0.9: the same for
        // the evaluation as evaluating that set directly.
        let bright = corrupt_items(
            &items,
            [1, 28, 28],
            Corruption::Brightness,
            Severity::new(5).unwrap(),
            3,
        )
        .unwrap();
        let direct = evaluate(&model, &InMemDataset::new(bright), &batcher, 2, 40, &device)
            .unwrap()
            .accuracy();
        assert_eq!(
            r[0].accuracy(Corruption::Brightness, Severity::new(5).unwrap()),
            Some(direct)
        );
        let e = evaluate_robustness(
            &[&model],
            &items[..1],
            &ImageBatcher::new(1, 4, 4),
            2,
            &suite,
            &device,
        )
        .unwrap_err();
        assert!(e.to_string().contains("item 0"), "{e}");
    }
}
