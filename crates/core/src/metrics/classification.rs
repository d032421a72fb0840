//! Classification metrics: accuracy, top-k accuracy, and macro precision / recall / F1 over a
//! confusion matrix.

use super::{BatchOutput, HostOutput, Metric};

/// Index of the largest score in a row (the first one on ties).
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Predicted classes of a batch of class scores.
fn predictions(batch: &BatchOutput) -> Option<(usize, Vec<usize>, &[usize])> {
    match &batch.output {
        HostOutput::Classification {
            num_classes,
            scores,
            targets,
        } if *num_classes > 0 => Some((
            *num_classes,
            scores.chunks(*num_classes).map(argmax).collect(),
            targets,
        )),
        _ => None,
    }
}

/// A `C x C` confusion matrix: `counts[t][p]` is the number of examples of true class `t`
/// predicted as `p`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ConfusionMatrix {
    counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// An empty matrix for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self {
            counts: vec![vec![0; num_classes]; num_classes],
        }
    }

    /// The matrix of predicted against true classes. Classes beyond the current size grow it.
    pub fn from_predictions(num_classes: usize, predicted: &[usize], truth: &[usize]) -> Self {
        let mut m = Self::new(num_classes);
        m.add(predicted, truth);
        m
    }

    /// Adds pairs of (predicted, true) classes.
    pub fn add(&mut self, predicted: &[usize], truth: &[usize]) {
        for (&p, &t) in predicted.iter().zip(truth) {
            self.grow(p.max(t) + 1);
            self.counts[t][p] += 1;
        }
    }

    fn grow(&mut self, n: usize) {
        if n > self.counts.len() {
            for row in &mut self.counts {
                row.resize(n, 0);
            }
            self.counts.resize(n, vec![0; n]);
        }
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.counts.len()
    }

    /// `counts[true][predicted]`.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// The number of examples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Fraction of examples on the diagonal (NaN when empty).
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.num_classes()).map(|i| self.counts[i][i]).sum();
        correct as f64 / self.total() as f64
    }

    fn true_positives(&self, c: usize) -> u64 {
        self.counts[c][c]
    }
    fn predicted(&self, c: usize) -> u64 {
        self.counts.iter().map(|row| row[c]).sum()
    }
    fn actual(&self, c: usize) -> u64 {
        self.counts[c].iter().sum()
    }

    /// Precision of class `c`, `tp / predicted`; 0 when the class is never predicted.
    pub fn precision(&self, c: usize) -> f64 {
        ratio(self.true_positives(c), self.predicted(c))
    }

    /// Recall of class `c`, `tp / actual`; 0 when the class never occurs.
    pub fn recall(&self, c: usize) -> f64 {
        ratio(self.true_positives(c), self.actual(c))
    }

    /// F1 of class `c`, the harmonic mean of its precision and recall (0 when both are 0).
    pub fn f1(&self, c: usize) -> f64 {
        let (p, r) = (self.precision(c), self.recall(c));
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// Classes that occur or are predicted: the ones macro averages run over, as in
    /// scikit-learn's default `labels` (the union of true and predicted labels).
    fn present(&self) -> Vec<usize> {
        (0..self.num_classes())
            .filter(|&c| self.actual(c) + self.predicted(c) > 0)
            .collect()
    }

    fn macro_avg(&self, f: impl Fn(usize) -> f64) -> f64 {
        let classes = self.present();
        if classes.is_empty() {
            return f64::NAN;
        }
        classes.iter().map(|&c| f(c)).sum::<f64>() / classes.len() as f64
    }

    /// Unweighted mean of the per-class precisions.
    pub fn macro_precision(&self) -> f64 {
        self.macro_avg(|c| self.precision(c))
    }
    /// Unweighted mean of the per-class recalls.
    pub fn macro_recall(&self) -> f64 {
        self.macro_avg(|c| self.recall(c))
    }
    /// Unweighted mean of the per-class F1 scores.
    pub fn macro_f1(&self) -> f64 {
        self.macro_avg(|c| self.f1(c))
    }

    /// Adds a batch of classification outputs.
    pub fn update(&mut self, batch: &BatchOutput) {
        if let Some((c, predicted, truth)) = predictions(batch) {
            self.grow(c);
            self.add(&predicted, truth);
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Fraction of examples whose top-scored class is the true one.
#[derive(Debug, Clone, Default)]
pub struct Accuracy {
    correct: u64,
    total: u64,
}

impl Accuracy {
    /// A fresh accuracy.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Metric for Accuracy {
    fn name(&self) -> String {
        "accuracy".into()
    }
    fn update(&mut self, batch: &BatchOutput) {
        if let Some((_, predicted, truth)) = predictions(batch) {
            self.correct += predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as u64;
            self.total += truth.len() as u64;
        }
    }
    fn value(&self) -> f64 {
        self.correct as f64 / self.total as f64
    }
    fn reset(&mut self) {
        *self = Self::default();
    }
    fn higher_is_better(&self) -> bool {
        true
    }
    fn clone_box(&self) -> Box<dyn Metric> {
        Box::new(Self::new())
    }
}

/// Fraction of examples whose true class is among the `k` top-scored classes.
#[derive(Debug, Clone)]
pub struct TopKAccuracy {
    k: usize,
    correct: u64,
    total: u64,
}

impl TopKAccuracy {
    /// Top-`k` accuracy (`k >= 1`).
    pub fn new(k: usize) -> Self {
        Self {
            k: k.max(1),
            correct: 0,
            total: 0,
        }
    }
}

impl Metric for TopKAccuracy {
    fn name(&self) -> String {
        format!("top{}_accuracy", self.k)
    }
    fn update(&mut self, batch: &BatchOutput) {
        if let HostOutput::Classification {
            num_classes,
            scores,
            targets,
        } = &batch.output
        {
            for (row, &t) in scores.chunks(*num_classes).zip(targets) {
                // The true class is in the top k when fewer than k classes score higher.
                let higher = row.iter().filter(|&&s| s > row[t]).count();
                if higher < self.k {
                    self.correct += 1;
                }
                self.total += 1;
            }
        }
    }
    fn value(&self) -> f64 {
        self.correct as f64 / self.total as f64
    }
    fn reset(&mut self) {
        self.correct = 0;
        self.total = 0;
    }
    fn higher_is_better(&self) -> bool {
        true
    }
    fn clone_box(&self) -> Box<dyn Metric> {
        Box::new(Self::new(self.k))
    }
}

macro_rules! macro_metric {
    ($name:ident, $label:literal, $method:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            matrix: ConfusionMatrix,
        }

        impl $name {
            /// A fresh metric.
            pub fn new() -> Self {
                Self::default()
            }
        }

        impl Metric for $name {
            fn name(&self) -> String {
                $label.into()
            }
            fn update(&mut self, batch: &BatchOutput) {
                self.matrix.update(batch);
            }
            fn value(&self) -> f64 {
                self.matrix.$method()
            }
            fn reset(&mut self) {
                self.matrix = ConfusionMatrix::default();
            }
            fn higher_is_better(&self) -> bool {
                true
            }
            fn clone_box(&self) -> Box<dyn Metric> {
                Box::new(Self::new())
            }
        }
    };
}

macro_metric!(
    Precision,
    "macro_precision",
    macro_precision,
    "Macro-averaged precision."
);
macro_metric!(
    Recall,
    "macro_recall",
    macro_recall,
    "Macro-averaged recall."
);
macro_metric!(F1, "macro_f1", macro_f1, "Macro-averaged F1 score.");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(num_classes: usize, scores: Vec<f32>, targets: Vec<usize>) -> BatchOutput {
        BatchOutput {
            loss: 0.0,
            batch_size: targets.len(),
            output: HostOutput::Classification {
                num_classes,
                scores,
                targets,
            },
        }
    }

    #[test]
    fn hand_computed_three_class_case() {
        // truth:     0 0 1 1 2 2
        // predicted: 0 1 1 1 0 2
        let m = ConfusionMatrix::from_predictions(3, &[0, 1, 1, 1, 0, 2], &[0, 0, 1, 1, 2, 2]);
        assert_eq!(m.counts(), &[vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]);
        assert!((m.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        // precision: c0 1/2, c1 2/3, c2 1/1; recall: 1/2, 1, 1/2
        assert!((m.macro_precision() - (0.5 + 2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
        assert!((m.macro_recall() - (0.5 + 1.0 + 0.5) / 3.0).abs() < 1e-12);
        let f1 = [0.5, 0.8, 2.0 / 3.0];
        assert!((m.macro_f1() - f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    }

    #[test]
    fn streaming_metrics_agree_with_the_matrix() {
        let b = batch(
            3,
            vec![
                0.9, 0.1, 0.0, // -> 0, true 0
                0.2, 0.5, 0.3, // -> 1, true 2 (2 is second)
                0.1, 0.1, 0.8, // -> 2, true 2
                0.4, 0.35, 0.25, // -> 0, true 1 (1 is second)
            ],
            vec![0, 2, 2, 1],
        );
        let mut acc = Accuracy::new();
        let mut top2 = TopKAccuracy::new(2);
        let mut f1 = F1::new();
        for m in [&mut acc as &mut dyn Metric, &mut top2, &mut f1] {
            m.update(&b);
        }
        assert_eq!(acc.value(), 0.5);
        assert_eq!(top2.value(), 1.0);
        assert_eq!(top2.name(), "top2_accuracy");
        let m = ConfusionMatrix::from_predictions(3, &[0, 1, 2, 0], &[0, 2, 2, 1]);
        assert_eq!(f1.value(), m.macro_f1());
        acc.reset();
        assert!(acc.value().is_nan());
    }

    proptest! {
        #[test]
        fn invariants(
            pairs in prop::collection::vec((0usize..5, 0usize..5), 1..200),
        ) {
            let (predicted, truth): (Vec<_>, Vec<_>) = pairs.iter().cloned().unzip();
            let m = ConfusionMatrix::from_predictions(5, &predicted, &truth);
            prop_assert_eq!(m.total(), pairs.len() as u64);
            for v in [m.accuracy(), m.macro_precision(), m.macro_recall(), m.macro_f1()] {
                prop_assert!((0.0..=1.0).contains(&v), "{} out of [0, 1]", v);
            }
            // A perfect prediction scores 1 everywhere.
            let perfect = ConfusionMatrix::from_predictions(5, &truth, &truth);
            prop_assert_eq!(perfect.accuracy(), 1.0);
            prop_assert!((perfect.macro_f1() - 1.0).abs() < 1e-12);
        }

        #[test]
        fn topk_is_monotone_in_k(
            rows in prop::collection::vec((prop::collection::vec(-5f32..5.0, 4), 0usize..4), 1..50),
        ) {
            let scores: Vec<f32> = rows.iter().flat_map(|(r, _)| r.clone()).collect();
            let targets: Vec<usize> = rows.iter().map(|(_, t)| *t).collect();
            let b = batch(4, scores, targets);
            let mut last = 0.0;
            for k in 1..=4 {
                let mut m = TopKAccuracy::new(k);
                m.update(&b);
                prop_assert!(m.value() >= last && m.value() <= 1.0);
                last = m.value();
            }
            prop_assert_eq!(last, 1.0);
            let mut acc = Accuracy::new();
            acc.update(&b);
            let mut top1 = TopKAccuracy::new(1);
            top1.update(&b);
            prop_assert!(top1.value() >= acc.value());
        }
    }
}
