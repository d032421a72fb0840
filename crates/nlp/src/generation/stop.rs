//! When a generation ends: [`StopCriteria`] (an end-of-sequence id, a stop string in the
//! decoded continuation, the token budget), [`StopReason`], and the [`Generation`] a decode
//! loop returns.

use super::GenerationConfig;

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

#[cfg(test)]
mod tests {
    use super::*;

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
