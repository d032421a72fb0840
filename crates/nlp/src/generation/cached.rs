//! What every cached decoder shares: the key/value cache, the bookkeeping of a step (input
//! checks, positions from the attention mask, the causal and padding bias) and batched
//! generation with left padding. [`Gpt2`](super::Gpt2) and [`Llama`](super::Llama) implement
//! [`CachedDecoder`]; [`generate`] drives either.

use burn::prelude::*;

use crate::error::{NlpError, Result};
use crate::generate::{Generation, GenerationConfig, Sampler, StopCriteria, StopReason};

/// Keys and values of every layer for the positions seen so far, the key mask (1 for real
/// tokens, 0 for padding) and each row's count of real tokens (its next position).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<(Tensor<4>, Tensor<4>)>,
    mask: Vec<Vec<u8>>,
    real: Vec<usize>,
    /// Layers, key/value heads and head size of the model that filled it.
    shape: Option<[usize; 3]>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions held (padding included).
    pub fn len(&self) -> usize {
        self.mask.first().map_or(0, Vec::len)
    }

    /// True before the first forward pass.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Layer `l`'s cached keys and values.
    pub(crate) fn layer(&self, l: usize) -> Option<&(Tensor<4>, Tensor<4>)> {
        self.layers.get(l)
    }
}

/// One step's inputs after [`begin_step`]: the ids as a tensor, each new position's index
/// (`[B, T]`, from the mask: the first real token of a row is 0), the additive attention bias
/// (`[B, 1, T, past + T]`: 0 where a query may see a key, `f32::MIN` for the future and for
/// padding) and the batch and step sizes.
pub(crate) struct Step {
    pub ids: Tensor<2, Int>,
    pub positions: Vec<usize>,
    pub bias: Tensor<4>,
    pub batch: usize,
    pub len: usize,
}

/// What [`begin_step`] checks a step against: the vocabulary, the context and the cache's
/// layers, key/value heads and head size.
pub(crate) struct ModelShape {
    pub vocab: usize,
    pub max_positions: usize,
    pub cache: [usize; 3],
}

/// Checks a step's `ids` and `mask` against the model and the cache (one filled by a model of
/// another shape is refused), extends the cache's mask and counts, and builds the step's
/// tensors.
pub(crate) fn begin_step(
    name: &str,
    ids: &[Vec<u32>],
    mask: &[Vec<u8>],
    cache: &mut KvCache,
    shape: &ModelShape,
    device: &Device,
) -> Result<Step> {
    let (vocab, max_positions) = (shape.vocab, shape.max_positions);
    if let Some(held) = cache.shape
        && held != shape.cache
    {
        return Err(NlpError::Input(format!(
            "{name}: the cache holds layers x key/value heads x head size {held:?}, this model \
             has {:?}",
            shape.cache
        )));
    }
    let b = ids.len();
    let t = ids.first().map_or(0, Vec::len);
    if b == 0
        || t == 0
        || ids.iter().any(|r| r.len() != t)
        || mask.len() != b
        || mask.iter().any(|r| r.len() != t)
    {
        return Err(NlpError::Input(format!(
            "{name}: ids and mask must be equal non-empty rows ({b} rows of {t} ids, {} mask \
             rows)",
            mask.len()
        )));
    }
    if !cache.is_empty() && cache.mask.len() != b {
        return Err(NlpError::Input(format!(
            "{name}: a batch of {b} on a cache of {}",
            cache.mask.len()
        )));
    }
    if let Some(&bad) = ids.iter().flatten().find(|&&i| i as usize >= vocab) {
        return Err(NlpError::Input(format!(
            "{name}: token id {bad} past the vocabulary of {vocab}"
        )));
    }
    // Positions of the new tokens, checked before the cache changes.
    let mut positions = Vec::with_capacity(b * t);
    for (row, m) in mask.iter().enumerate() {
        let mut real = cache.real.get(row).copied().unwrap_or(0);
        for &r in m {
            positions.push(real.saturating_sub(usize::from(r == 0)));
            real += usize::from(r != 0);
        }
    }
    if let Some(&p) = positions.iter().max()
        && p >= max_positions
    {
        return Err(NlpError::Input(format!(
            "{name}: position {p} past the model's context of {max_positions}"
        )));
    }
    if cache.real.is_empty() {
        cache.real = vec![0; b];
        cache.mask = vec![Vec::new(); b];
        cache.shape = Some(shape.cache);
    }
    let past = cache.len();
    for (row, m) in mask.iter().enumerate() {
        cache.real[row] += m.iter().filter(|&&r| r != 0).count();
        cache.mask[row].extend_from_slice(m);
    }
    let s = past + t;
    let mut bias = vec![0f32; b * t * s];
    for row in 0..b {
        for i in 0..t {
            for j in 0..s {
                if j > past + i || cache.mask[row][j] == 0 {
                    bias[(row * t + i) * s + j] = f32::MIN;
                }
            }
        }
    }
    let flat: Vec<i64> = ids.iter().flatten().map(|&i| i64::from(i)).collect();
    Ok(Step {
        ids: Tensor::<1, Int>::from_ints(flat.as_slice(), device).reshape([b, t]),
        positions,
        bias: Tensor::<1>::from_floats(bias.as_slice(), device).reshape([b, 1, t, s]),
        batch: b,
        len: t,
    })
}

/// A decoder that extends a [`KvCache`] by each step's tokens.
pub trait CachedDecoder {
    /// Next-token logits of every new position (`[B, T, vocab]`), extending `cache`; `mask`
    /// marks real tokens (1) and left padding (0).
    fn forward_cached(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u8>],
        cache: &mut KvCache,
        device: &Device,
    ) -> Result<Tensor<3>>;

    /// The longest context.
    fn max_positions(&self) -> usize;
}

/// Generates a continuation of each prompt (left-padded into one batch) with the cache: one
/// pass over the prompts, then one position per step. `on_token(row, id)` sees each new id
/// (return `false` to stop that row); `decode` turns ids into text for stop strings. Rows that
/// stopped are fed their last id until every row has.
pub fn generate(
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
