//! What every cached decoder shares: the key/value cache and the bookkeeping of a step (input
//! checks, positions from the attention mask, the causal and padding bias).
//! [`Gpt2`](crate::models::Gpt2), [`Llama`](crate::models::Llama) and
//! [`Gpt`](crate::models::Gpt) implement [`CachedDecoder`];
//! [`generate_cached`](super::generate_cached) drives any of them.

use burn::prelude::*;

use crate::error::{NlpError, Result};

/// Keys and values of every layer for the positions seen so far, the key mask (1 for real
/// tokens, 0 for padding) and each row's count of real tokens (its next position).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<(Tensor<4>, Tensor<4>)>,
    mask: Vec<Vec<u8>>,
    pub(super) real: Vec<usize>,
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

    /// Layer `l`'s cached keys and values (`[B, heads, positions, head size]`), before
    /// the current step's.
    pub fn layer(&self, l: usize) -> Option<&(Tensor<4>, Tensor<4>)> {
        self.layers.get(l)
    }

    /// Replaces every layer's keys and values with the ones that include the current step
    /// (a decoder's `forward_cached` calls it once per step, after [`begin_step`]).
    pub fn set_layers(&mut self, layers: Vec<(Tensor<4>, Tensor<4>)>) {
        self.layers = layers;
    }
}

/// One step's inputs after [`begin_step`]: the ids as a tensor, each new position's index
/// (`[B, T]`, from the mask: the first real token of a row is 0), the additive attention bias
/// (`[B, 1, T, past + T]`: 0 where a query may see a key, `f32::MIN` for the future and for
/// padding) and the batch and step sizes.
pub struct Step {
    /// The step's ids, `[B, T]`.
    pub ids: Tensor<2, Int>,
    /// Each new position's index, row-major `B x T`.
    pub positions: Vec<usize>,
    /// The additive attention bias, `[B, 1, T, past + T]`.
    pub bias: Tensor<4>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
}

/// What [`begin_step`] checks a step against: the vocabulary, the context and the cache's
/// layers, key/value heads and head size.
pub struct ModelShape {
    /// The vocabulary size.
    pub vocab: usize,
    /// The longest context.
    pub max_positions: usize,
    /// Layers, key/value heads and head size.
    pub cache: [usize; 3],
}

/// Checks a step's `ids` and `mask` against the model and the cache (one filled by a model of
/// another shape is refused), extends the cache's mask and counts, and builds the step's
/// tensors. `name` names the model in errors.
///
/// # Errors
/// [`NlpError::Input`] for rows of unequal or zero length, a mask of another shape, a batch size
/// other than the cache's, an id past the vocabulary, a position past the context or a cache filled
/// by a model of another shape.
pub fn begin_step(
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
    let (b, t) = check_rows(name, ids, mask)?;
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

/// Checks that `ids` and `mask` are rows of one non-zero length, as many of each, and returns
/// the batch size and that length; `name` names the model in the error.
///
/// # Errors
/// [`NlpError::Input`] for rows of unequal or zero length, or a mask of another shape.
pub(crate) fn check_rows(name: &str, ids: &[Vec<u32>], mask: &[Vec<u8>]) -> Result<(usize, usize)> {
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
    Ok((b, t))
}

/// A decoder that extends a [`KvCache`] by each step's tokens.
pub trait CachedDecoder {
    /// Next-token logits of every new position (`[B, T, vocab]`), extending `cache`; `mask`
    /// marks real tokens (1) and left padding (0).
    ///
    /// # Errors
    /// [`NlpError::Input`] for inputs the model or the cache cannot take (see [`begin_step`]).
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
