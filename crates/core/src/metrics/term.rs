//! [`Term`]: the example-weighted mean of one named term a model reports beside its loss
//! ([`Output::Terms`](super::Output::Terms)), e.g. a VAE's reconstruction and KL divergence.

use super::{BatchOutput, HostOutput, Metric, WeightedMean};

/// The mean of the term `name` over the epoch's batches, weighted by batch size; lower is
/// better. Batches that do not report it are skipped.
#[derive(Debug, Clone)]
pub struct Term {
    name: &'static str,
    mean: WeightedMean,
}

impl Term {
    /// The mean of the term called `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            mean: WeightedMean::default(),
        }
    }
}

impl Metric for Term {
    fn name(&self) -> String {
        self.name.into()
    }
    fn update(&mut self, batch: &BatchOutput) {
        if let HostOutput::Terms(terms) = &batch.output
            && let Some((_, v)) = terms.iter().find(|(n, _)| *n == self.name)
        {
            self.mean.add(*v, batch.batch_size);
        }
    }
    fn value(&self) -> f64 {
        self.mean.value()
    }
    fn reset(&mut self) {
        self.mean = WeightedMean::default();
    }
    fn higher_is_better(&self) -> bool {
        false
    }
    fn clone_box(&self) -> Box<dyn Metric> {
        Box::new(Self::new(self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_term_is_averaged_by_batch_size() {
        let mut kl = Term::new("kl");
        assert!(kl.value().is_nan());
        let batch = |kl: f64, recon: f64, n: usize| BatchOutput {
            loss: kl + recon,
            batch_size: n,
            output: HostOutput::Terms(vec![("recon", recon), ("kl", kl)]),
        };
        kl.update(&batch(2.0, 100.0, 3));
        kl.update(&batch(6.0, 50.0, 1));
        // A batch without terms leaves the mean alone.
        kl.update(&BatchOutput {
            loss: 1.0,
            batch_size: 5,
            output: HostOutput::None,
        });
        assert_eq!(kl.value(), (2.0 * 3.0 + 6.0) / 4.0);
        assert_eq!(kl.name(), "kl");
        assert!(!kl.higher_is_better());
        kl.reset();
        assert!(kl.value().is_nan());
    }
}
