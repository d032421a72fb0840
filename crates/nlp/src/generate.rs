//! Text generation from any next-token model, with the controls of transformers' `generate`:
//! greedy decoding or sampling with a temperature, top-k, top-p (nucleus) and a repetition
//! penalty, reproducible from a seed; stopping on end-of-sequence ids, on stop strings or at
//! a token budget; a callback per token for streaming.
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
//! not). [`generate`] drives a [`LanguageModel`] by recomputing the whole window each step.

pub mod continuous;

use burn::prelude::*;
use kiln_core::data::SplitMix64;

use crate::error::{NlpError, Result};
use crate::models::LanguageModel;

/// What [`generate`] and [`Sampler`] do.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens to add (at least 1).
    pub max_new_tokens: usize,
    /// Divides the logits before sampling; 0 is greedy decoding (the arg max).
    pub temperature: f32,
    /// Sample among the `k` most probable tokens only (`None`: all).
    pub top_k: Option<usize>,
    /// Sample among the most probable tokens whose probabilities sum to `p` (`None`: all).
    pub top_p: Option<f32>,
    /// Repetition penalty (1: none; transformers' `repetition_penalty`).
    pub repetition_penalty: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// Ids that end the sequence (kept as the last token).
    pub eos_token_ids: Vec<u32>,
    /// Texts that end the sequence once the decoded continuation contains one (the tokens
    /// that complete it are kept).
    pub stop_strings: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
            eos_token_ids: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

impl GenerationConfig {
    /// Greedy decoding of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            ..Self::default()
        }
    }

    /// Sampling at `temperature` with `seed`.
    pub fn sampling(max_new_tokens: usize, temperature: f32, seed: u64) -> Self {
        Self {
            max_new_tokens,
            temperature,
            seed,
            ..Self::default()
        }
    }

    /// Sets top-k.
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }

    /// Sets top-p.
    pub fn with_top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }

    /// Sets the repetition penalty.
    pub fn with_repetition_penalty(mut self, penalty: f32) -> Self {
        self.repetition_penalty = penalty;
        self
    }

    /// Sets the end-of-sequence ids.
    pub fn with_eos(mut self, ids: impl Into<Vec<u32>>) -> Self {
        self.eos_token_ids = ids.into();
        self
    }

    /// Sets the stop strings.
    pub fn with_stop_strings(mut self, stops: Vec<String>) -> Self {
        self.stop_strings = stops;
        self
    }

    /// Checks every field, naming the first that is out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, value: String, expected: &str| {
            Err(NlpError::Input(format!(
                "generation: {field} is {value}, expected {expected}"
            )))
        };
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "0".into(), "at least 1");
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                self.temperature.to_string(),
                "a finite number >= 0 (0 is greedy)",
            );
        }
        if self.top_k == Some(0) {
            return bad("top_k", "0".into(), "at least 1");
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("top_p", p.to_string(), "in (0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "repetition_penalty",
                self.repetition_penalty.to_string(),
                "a finite number above 0 (1 is none)",
            );
        }
        if let Some(s) = self.stop_strings.iter().find(|s| s.is_empty()) {
            return bad("stop_strings", format!("{s:?}"), "non-empty strings");
        }
        Ok(())
    }
}

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

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-sequence id was generated (it is the last id).
    Eos(u32),
    /// The decoded continuation contains this stop string.
    StopString(String),
    /// `max_new_tokens` were generated.
    MaxNewTokens,
    /// The callback asked to stop.
    Callback,
}

/// The generated ids (without the prompt) and why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The new ids.
    pub ids: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
}

/// Watches the generated ids for an end-of-sequence id, a stop string or the budget.
#[derive(Debug, Clone)]
pub struct StopCriteria<'a> {
    config: &'a GenerationConfig,
}

impl<'a> StopCriteria<'a> {
    /// Criteria of `config`.
    pub fn new(config: &'a GenerationConfig) -> Self {
        Self { config }
    }

    /// Whether to stop after `generated` (the new ids so far); `decode` turns ids into text,
    /// called only when there are stop strings.
    pub fn check(
        &self,
        generated: &[u32],
        decode: &dyn Fn(&[u32]) -> String,
    ) -> Option<StopReason> {
        let &last = generated.last()?;
        if self.config.eos_token_ids.contains(&last) {
            return Some(StopReason::Eos(last));
        }
        if !self.config.stop_strings.is_empty() {
            let text = decode(generated);
            if let Some(s) = self
                .config
                .stop_strings
                .iter()
                .find(|s| text.contains(s.as_str()))
            {
                return Some(StopReason::StopString(s.clone()));
            }
        }
        (generated.len() >= self.config.max_new_tokens).then_some(StopReason::MaxNewTokens)
    }
}

/// Continues `prompt` with `model` under `config`: each step runs the model on the last
/// [`LanguageModel::context_len`] ids (a sliding window once the sequence is longer), picks
/// the next id with a [`Sampler`], calls `on_token` with it (return `false` to stop), and
/// stops on [`StopCriteria`]. `decode` turns ids into text for stop strings.
///
/// An empty prompt, a prompt longer than the model's context or a bad `config` is an
/// [`NlpError::Input`].
pub fn generate(
    model: &impl LanguageModel,
    prompt: &[u32],
    config: &GenerationConfig,
    device: &Device,
    decode: &dyn Fn(&[u32]) -> String,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    let mut sampler = Sampler::new(config)?;
    let context = model.context_len();
    if prompt.is_empty() {
        return Err(NlpError::Input(
            "generation: the prompt is empty (give at least one token)".into(),
        ));
    }
    if prompt.len() > context {
        return Err(NlpError::Input(format!(
            "generation: the prompt has {} tokens, the model's context {context}",
            prompt.len()
        )));
    }
    let criteria = StopCriteria::new(config);
    let mut ids = prompt.to_vec();
    loop {
        let window = &ids[ids.len().saturating_sub(context)..];
        let t = window.len();
        let input: Vec<i64> = window.iter().map(|&i| i64::from(i)).collect();
        let logits =
            model.logits(Tensor::<1, Int>::from_ints(input.as_slice(), device).reshape([1, t]));
        let v = logits.dims()[2];
        let mut last: Vec<f32> = logits
            .narrow(1, t - 1, 1)
            .reshape([v])
            .into_data()
            .iter::<f32>()
            .collect();
        let next = sampler.next(&mut last, &ids);
        ids.push(next);
        let generated = &ids[prompt.len()..];
        if !on_token(next) {
            return Ok(Generation {
                ids: generated.to_vec(),
                stop: StopReason::Callback,
            });
        }
        if let Some(stop) = criteria.check(generated, decode) {
            return Ok(Generation {
                ids: generated.to_vec(),
                stop,
            });
        }
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

    #[test]
    fn bad_settings_are_named() {
        let e = |c: GenerationConfig| c.validate().unwrap_err().to_string();
        assert!(e(GenerationConfig::greedy(0)).contains("max_new_tokens is 0"));
        assert!(e(GenerationConfig::sampling(4, -1.0, 0)).contains("temperature is -1"));
        assert!(e(GenerationConfig::sampling(4, f32::NAN, 0)).contains("temperature is NaN"));
        assert!(e(GenerationConfig::greedy(4).with_top_k(0)).contains("top_k is 0"));
        assert!(e(GenerationConfig::greedy(4).with_top_p(1.5)).contains("top_p is 1.5"));
        assert!(e(GenerationConfig::greedy(4).with_top_p(0.0)).contains("top_p is 0"));
        assert!(
            e(GenerationConfig::greedy(4).with_repetition_penalty(0.0))
                .contains("repetition_penalty is 0")
        );
        assert!(
            e(GenerationConfig::greedy(4).with_stop_strings(vec![String::new()]))
                .contains("stop_strings")
        );
    }

    #[test]
    fn stop_criteria_see_eos_stop_strings_and_the_budget() {
        let decode = |ids: &[u32]| ids.iter().map(|&i| char::from(b'a' + i as u8)).collect();
        let c = GenerationConfig::greedy(5)
            .with_eos([25u32])
            .with_stop_strings(vec!["cd".into()]);
        let s = StopCriteria::new(&c);
        assert_eq!(s.check(&[], &decode), None);
        assert_eq!(s.check(&[0, 1], &decode), None);
        assert_eq!(s.check(&[0, 25], &decode), Some(StopReason::Eos(25)));
        assert_eq!(
            s.check(&[1, 2, 3], &decode),
            Some(StopReason::StopString("cd".into()))
        );
        assert_eq!(
            s.check(&[0, 0, 0, 0, 0], &decode),
            Some(StopReason::MaxNewTokens)
        );
    }
}

#[cfg(test)]
mod generate_tests {
    use super::*;

    /// A model whose next token is always `last + 1` (mod the vocabulary).
    struct Counter {
        vocab: usize,
        context: usize,
    }

    impl LanguageModel for Counter {
        fn logits(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
            let [n, t] = tokens.dims();
            let device = tokens.device();
            let ids: Vec<i64> = tokens.into_data().iter::<i64>().collect();
            let mut out = vec![0f32; n * t * self.vocab];
            for (p, &id) in ids.iter().enumerate() {
                out[p * self.vocab + (id as usize + 1) % self.vocab] = 5.0;
            }
            Tensor::<1>::from_floats(out.as_slice(), &device).reshape([n, t, self.vocab])
        }

        fn context_len(&self) -> usize {
            self.context
        }
    }

    #[test]
    fn generate_counts_stops_and_refuses_bad_prompts() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let m = Counter {
            vocab: 10,
            context: 4,
        };
        let none = |_: &[u32]| String::new();
        let g = generate(
            &m,
            &[0],
            &GenerationConfig::greedy(6),
            &device,
            &none,
            |_| true,
        )
        .unwrap();
        // Past the 4-token context the window slides; the model still counts.
        assert_eq!(g.ids, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(g.stop, StopReason::MaxNewTokens);
        let eos = GenerationConfig::greedy(6).with_eos([3u32]);
        let g = generate(&m, &[0], &eos, &device, &none, |_| true).unwrap();
        assert_eq!((g.ids, g.stop), (vec![1, 2, 3], StopReason::Eos(3)));
        let mut streamed = Vec::new();
        let g = generate(
            &m,
            &[8],
            &GenerationConfig::greedy(6),
            &device,
            &none,
            |id| {
                streamed.push(id);
                streamed.len() < 2
            },
        )
        .unwrap();
        assert_eq!((g.ids.clone(), g.stop), (vec![9, 0], StopReason::Callback));
        assert_eq!(streamed, g.ids);
        let e = |prompt: &[u32], c: &GenerationConfig| {
            generate(&m, prompt, c, &device, &none, |_| true)
                .unwrap_err()
                .to_string()
        };
        assert!(e(&[], &GenerationConfig::greedy(2)).contains("prompt is empty"));
        assert!(e(&[1, 2, 3, 4, 5], &GenerationConfig::greedy(2)).contains("5 tokens"));
        assert!(e(&[1], &GenerationConfig::greedy(0)).contains("max_new_tokens"));
    }
}
