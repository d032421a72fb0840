//! The decode loops: [`generate_cached`] continues a batch of prompts (left-padded) on any
//! [`CachedDecoder`], one pass over the prompts then one position per step;
//! [`generate_windowed`] drives a [`LanguageModel`] without a cache, recomputing its window
//! each step (the from-scratch character models). Both pick tokens with a [`Sampler`] and stop
//! on [`StopCriteria`]. (The packed CPU path has its own loop, `LlamaCpu::generate`, and many
//! sequences at once run on [`ContinuousBatch`](super::ContinuousBatch).)

use burn::prelude::*;

use super::{
    CachedDecoder, Generation, GenerationConfig, KvCache, Sampler, StopCriteria, StopReason,
};
use crate::error::{NlpError, Result};
use crate::models::LanguageModel;

/// Generates a continuation of each prompt (left-padded into one batch) with the cache: one
/// pass over the prompts, then one position per step. `on_token(row, id)` sees each new id
/// (return `false` to stop that row); `decode` turns ids into text for stop strings. Rows that
/// stopped are fed their last id until every row has.
///
/// # Errors
/// [`NlpError::Input`] for a bad `config`, no prompt or an empty one, or a prompt past the model's
/// context; the model's own errors.
pub fn generate_cached(
    model: &impl CachedDecoder,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    device: &Device,
    decode: &dyn Fn(&[u32]) -> String,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<Generation>> {
    config.validate()?;
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(NlpError::Input(
            "generation: an empty prompt (give at least one token per prompt)".into(),
        ));
    }
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let max = model.max_positions();
    if width > max {
        return Err(NlpError::Input(format!(
            "generation: a prompt of {width} tokens, the model's context {max}"
        )));
    }
    let pad_id = config.eos_token_ids.first().copied().unwrap_or(0);
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut row = vec![pad_id; width - p.len()];
            row.extend_from_slice(p);
            row
        })
        .collect();
    let mask: Vec<Vec<u8>> = prompts
        .iter()
        .map(|p| {
            let mut m = vec![0u8; width - p.len()];
            m.extend(std::iter::repeat_n(1, p.len()));
            m
        })
        .collect();
    let mut cache = KvCache::new();
    let mut logits = model.forward_cached(&ids, &mask, &mut cache, device)?;
    let mut samplers: Vec<Sampler> = (0..prompts.len())
        .map(|_| Sampler::new(config))
        .collect::<Result<_>>()?;
    let criteria = StopCriteria::new(config);
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut done: Vec<Option<StopReason>> = vec![None; prompts.len()];
    loop {
        let [b, t, v] = logits.dims();
        let last: Vec<f32> = logits
            .narrow(1, t - 1, 1)
            .reshape([b * v])
            .into_data()
            .iter::<f32>()
            .collect();
        let mut step = Vec::with_capacity(b);
        for row in 0..b {
            if done[row].is_some() {
                step.push(vec![*seqs[row].last().unwrap_or(&0)]);
                continue;
            }
            let mut l = last[row * v..(row + 1) * v].to_vec();
            let id = samplers[row].next(&mut l, &seqs[row]);
            seqs[row].push(id);
            step.push(vec![id]);
            let generated = &seqs[row][prompts[row].len()..];
            if !on_token(row, id) {
                done[row] = Some(StopReason::Callback);
            } else if let Some(stop) = criteria.check(generated, decode) {
                done[row] = Some(stop);
            } else if cache.real[row] + 1 >= max {
                // The next position would be past the context: stop as at the budget.
                done[row] = Some(StopReason::MaxNewTokens);
            }
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        logits = model.forward_cached(&step, &vec![vec![1u8]; b], &mut cache, device)?;
    }
    Ok(seqs
        .into_iter()
        .zip(prompts)
        .zip(done)
        .map(|((s, p), stop)| Generation {
            ids: s[p.len()..].to_vec(),
            stop: stop.unwrap_or(StopReason::MaxNewTokens),
        })
        .collect())
}

/// Continues `prompt` with `model` under `config`: each step runs the model on the last
/// [`LanguageModel::context_len`] ids (a sliding window once the sequence is longer), picks
/// the next id with a [`Sampler`], calls `on_token` with it (return `false` to stop), and
/// stops on [`StopCriteria`]. `decode` turns ids into text for stop strings.
///
/// An empty prompt, a prompt longer than the model's context or a bad `config` is an
/// [`NlpError::Input`].
///
/// # Errors
/// [`NlpError::Input`] for an empty prompt, one past the model's context, or a bad `config`.
pub fn generate_windowed(
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
        let g = generate_windowed(
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
        let g = generate_windowed(&m, &[0], &eos, &device, &none, |_| true).unwrap();
        assert_eq!((g.ids, g.stop), (vec![1, 2, 3], StopReason::Eos(3)));
        let mut streamed = Vec::new();
        let g = generate_windowed(
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
            generate_windowed(&m, prompt, c, &device, &none, |_| true)
                .unwrap_err()
                .to_string()
        };
        assert!(e(&[], &GenerationConfig::greedy(2)).contains("prompt is empty"));
        assert!(e(&[1, 2, 3, 4, 5], &GenerationConfig::greedy(2)).contains("5 tokens"));
        assert!(e(&[1], &GenerationConfig::greedy(0)).contains("max_new_tokens"));
    }
}
