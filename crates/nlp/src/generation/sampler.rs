//! The sampler: greedy decoding or sampling with a temperature, top-k, top-p (nucleus) and a
//! repetition penalty, reproducible from a seed.
//!
//! The logits go through transformers' processors in transformers' order and with their
//! semantics, so that greedy decoding picks the same token as `generate(do_sample=False)`:
//!
//! 1. repetition penalty (CTRL, Keskar et al. 2019): every id already in the sequence (prompt
//!    included) has its logit divided by the penalty when positive, multiplied when negative;
//! 2. temperature: logits divided by it (0 means greedy: the arg max, first index on ties);
//! 3. top-k: logits below the k-th largest set to `-inf` (ties with it kept);
//! 4. top-p: in ascending order of probability, tokens whose cumulative probability is at most
//!    `1 - p` are removed; the most probable token always stays.
//!
//! Sampling draws from the softmax of what is left with Kiln's seeded generator (not
//! PyTorch's, so sampled text differs from transformers' for the same seed; greedy text does
//! not).

use kiln_core::data::SplitMix64;

use super::GenerationConfig;
use crate::error::Result;

/// Applies the repetition penalty, temperature, top-k and top-p to `logits` in place (removed
/// tokens become `-inf`), given the ids of the sequence so far. With temperature 0 only the
/// repetition penalty applies (greedy decoding takes the arg max of the rest).
pub fn process_logits(logits: &mut [f32], previous: &[u32], config: &GenerationConfig) {
    if config.repetition_penalty != 1.0 {
        let mut seen = vec![false; logits.len()];
        for &id in previous {
            if let Some(s) = seen.get_mut(id as usize)
                && !*s
            {
                *s = true;
                let l = &mut logits[id as usize];
                *l = if *l < 0.0 {
                    *l * config.repetition_penalty
                } else {
                    *l / config.repetition_penalty
                };
            }
        }
    }
    if config.temperature <= 0.0 {
        return;
    }
    if config.temperature != 1.0 {
        logits.iter_mut().for_each(|l| *l /= config.temperature);
    }
    if let Some(k) = config.top_k
        && k < logits.len()
    {
        let mut sorted: Vec<f32> = logits.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k.max(1) - 1];
        logits
            .iter_mut()
            .filter(|l| **l < kth)
            .for_each(|l| *l = f32::NEG_INFINITY);
    }
    if let Some(p) = config.top_p
        && p < 1.0
    {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        // Ascending, as transformers sorts; ties by index.
        order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(a.cmp(&b)));
        let probs = softmax(logits);
        let mut cumulative = 0f64;
        let last = order.len().saturating_sub(1);
        for (rank, &i) in order.iter().enumerate() {
            cumulative += probs[i];
            if cumulative <= f64::from(1.0 - p) && rank < last {
                logits[i] = f32::NEG_INFINITY;
            }
        }
    }
}

/// Softmax in f64 (`-inf` gives 0).
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; logits.len()];
    }
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// The arg max, first index on ties (as `torch.argmax`); 0 for an empty slice.
fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Picks next tokens under a [`GenerationConfig`], with its own seeded generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: GenerationConfig,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler for `config` (validated).
    ///
    /// # Errors
    /// [`NlpError::Input`](crate::NlpError::Input) naming the first field of `config` out of range.
    pub fn new(config: &GenerationConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: config.clone(),
            rng: SplitMix64::new(config.seed),
        })
    }

    /// The next id after `previous` (prompt and generated ids) from the model's `logits` for
    /// the next position, which are processed in place.
    pub fn next(&mut self, logits: &mut [f32], previous: &[u32]) -> u32 {
        process_logits(logits, previous, &self.config);
        if self.config.temperature <= 0.0 {
            return argmax(logits) as u32;
        }
        let probs = softmax(logits);
        let mut u = self.rng.uniform();
        let mut fallback = argmax(logits);
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                fallback = i;
                if u < p {
                    return i as u32;
                }
                u -= p;
            }
        }
        // Rounding left `u` past the last probability: the last token with any.
        fallback as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processed(logits: &[f32], previous: &[u32], config: &GenerationConfig) -> Vec<f32> {
        let mut l = logits.to_vec();
        process_logits(&mut l, previous, config);
        l
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let c = GenerationConfig::greedy(1).with_repetition_penalty(2.0);
        // Ids 0 and 2 were seen (2 twice: penalised once).
        let got = processed(&[4.0, 1.0, -3.0, 0.5], &[2, 0, 2], &c);
        assert_eq!(got, vec![2.0, 1.0, -6.0, 0.5]);
        // Greedy then prefers id 0 (2.0) over 1 (1.0); without the penalty too.
        let mut s = Sampler::new(&c).unwrap();
        assert_eq!(s.next(&mut [1.0, 1.5, -3.0, 0.5], &[1]), 0);
        // Ids past the vocabulary are ignored, not a panic.
        assert_eq!(processed(&[1.0], &[7], &c), vec![1.0]);
    }

    #[test]
    fn temperature_top_k_and_top_p_filter_as_transformers() {
        // Temperature 0.5 doubles the logits.
        let c = GenerationConfig::sampling(1, 0.5, 0);
        assert_eq!(processed(&[1.0, -1.0], &[], &c), vec![2.0, -2.0]);
        // Top-2 keeps the two largest and ties with the second.
        let c = GenerationConfig::sampling(1, 1.0, 0).with_top_k(2);
        let got = processed(&[3.0, 1.0, 2.0, 2.0, 0.0], &[], &c);
        let inf = f32::NEG_INFINITY;
        assert_eq!(got, vec![3.0, inf, 2.0, 2.0, inf]);
        // Top-p 0.7 over probabilities (0.5, 0.3, 0.15, 0.05): ascending cumulative sums are
        // 0.05, 0.20, 0.50, 1.0; those <= 0.3 go (0.05 and 0.15), 0.3 and 0.5 stay.
        let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let c = GenerationConfig::sampling(1, 1.0, 0).with_top_p(0.7);
        let got = processed(&logits, &[], &c);
        assert!(got[0].is_finite() && got[1].is_finite());
        assert_eq!((got[2], got[3]), (inf, inf));
        // A tiny p keeps the most probable token alone.
        let c = GenerationConfig::sampling(1, 1.0, 0).with_top_p(1e-6);
        let got = processed(&logits, &[], &c);
        assert_eq!(got.iter().filter(|l| l.is_finite()).count(), 1);
        assert!(got[0].is_finite());
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let logits: Vec<f32> = [0.6f32, 0.3, 0.1].iter().map(|p| p.ln()).collect();
        let c = GenerationConfig::sampling(1, 1.0, 9);
        let mut s = Sampler::new(&c).unwrap();
        let mut counts = [0usize; 3];
        let draws: Vec<u32> = (0..20_000)
            .map(|_| s.next(&mut logits.clone(), &[]))
            .collect();
        draws.iter().for_each(|&d| counts[d as usize] += 1);
        for (count, p) in counts.iter().zip([0.6, 0.3, 0.1]) {
            let f = *count as f64 / 20_000.0;
            assert!((f - p).abs() < 0.015, "{counts:?}");
        }
        // Same seed, same draws; another seed, others.
        let mut again = Sampler::new(&c).unwrap();
        let replay: Vec<u32> = (0..20_000)
            .map(|_| again.next(&mut logits.clone(), &[]))
            .collect();
        assert_eq!(draws, replay);
        let mut other = Sampler::new(&GenerationConfig::sampling(1, 1.0, 10)).unwrap();
        let diff: Vec<u32> = (0..100)
            .map(|_| other.next(&mut logits.clone(), &[]))
            .collect();
        assert_ne!(&draws[..100], diff.as_slice());
        // Top-k 1 is greedy whatever the seed.
        let mut k1 = Sampler::new(&GenerationConfig::sampling(1, 2.0, 3).with_top_k(1)).unwrap();
        assert!((0..50).all(|_| k1.next(&mut logits.clone(), &[]) == 0));
        // Greedy takes the first of tied maxima, as torch.argmax.
        let mut g = Sampler::new(&GenerationConfig::greedy(1)).unwrap();
        assert_eq!(g.next(&mut [1.0, 3.0, 3.0], &[]), 1);
    }
}
