//! What a generation does: [`GenerationConfig`], transformers' `generate` controls (budget,
//! temperature, top-k, top-p, repetition penalty, seed, end-of-sequence ids, stop strings),
//! checked field by field.

use crate::error::{NlpError, Result};

/// What a generation does (the decode loops of [`super`] and its [`Sampler`](super::Sampler)).
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
    ///
    /// # Errors
    /// [`NlpError::Input`] naming the first field out of range.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
