//! Regression metrics: root mean squared error and mean absolute error.

use super::{BatchOutput, HostOutput, Metric};

/// Running sums of a regression batch's errors.
#[derive(Debug, Clone, Default)]
struct Errors {
    squared: f64,
    absolute: f64,
    count: usize,
}

impl Errors {
    fn update(&mut self, batch: &BatchOutput) {
        if let HostOutput::Regression {
            predictions,
            targets,
        } = &batch.output
        {
            for (&p, &t) in predictions.iter().zip(targets) {
                let e = (p - t) as f64;
                self.squared += e * e;
                self.absolute += e.abs();
                self.count += 1;
            }
        }
    }
}

/// Root mean squared error, `sqrt(1/N sum (y - y_hat)^2)`.
#[derive(Debug, Clone, Default)]
pub struct Rmse(Errors);

/// Mean absolute error, `1/N sum |y - y_hat|`.
#[derive(Debug, Clone, Default)]
pub struct Mae(Errors);

impl Rmse {
    /// A fresh RMSE.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Mae {
    /// A fresh MAE.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Metric for Rmse {
    fn name(&self) -> String {
        "rmse".into()
    }
    fn update(&mut self, batch: &BatchOutput) {
        self.0.update(batch);
    }
    fn value(&self) -> f64 {
        (self.0.squared / self.0.count as f64).sqrt()
    }
    fn reset(&mut self) {
        self.0 = Errors::default();
    }
    fn higher_is_better(&self) -> bool {
        false
    }
    fn clone_box(&self) -> Box<dyn Metric> {
        Box::new(Self::new())
    }
}

impl Metric for Mae {
    fn name(&self) -> String {
        "mae".into()
    }
    fn update(&mut self, batch: &BatchOutput) {
        self.0.update(batch);
    }
    fn value(&self) -> f64 {
        self.0.absolute / self.0.count as f64
    }
    fn reset(&mut self) {
        self.0 = Errors::default();
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
    use proptest::prelude::*;

    fn batch(predictions: Vec<f32>, targets: Vec<f32>) -> BatchOutput {
        BatchOutput {
            loss: 0.0,
            batch_size: targets.len(),
            output: HostOutput::Regression {
                predictions,
                targets,
            },
        }
    }

    #[test]
    fn hand_computed_errors_over_two_batches() {
        let (mut rmse, mut mae) = (Rmse::new(), Mae::new());
        // errors 1, -2 | 0.5 -> squared 1 + 4 + 0.25, absolute 3.5
        for b in [
            batch(vec![2.0, 0.0], vec![1.0, 2.0]),
            batch(vec![3.5], vec![3.0]),
        ] {
            rmse.update(&b);
            mae.update(&b);
        }
        assert!((rmse.value() - (5.25f64 / 3.0).sqrt()).abs() < 1e-9);
        assert!((mae.value() - 3.5 / 3.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn rmse_at_least_mae_at_least_zero(
            pairs in prop::collection::vec((-100f32..100.0, -100f32..100.0), 1..100),
        ) {
            let (p, t): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
            let b = batch(p, t);
            let (mut rmse, mut mae) = (Rmse::new(), Mae::new());
            rmse.update(&b);
            mae.update(&b);
            prop_assert!(mae.value() >= 0.0);
            prop_assert!(rmse.value() + 1e-9 >= mae.value(), "{} < {}", rmse.value(), mae.value());
        }
    }
}
