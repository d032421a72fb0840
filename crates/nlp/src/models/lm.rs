//! Language models over token ids (characters or words): the [`LanguageModel`] trait shared by
//! [`CharLstm`](super::CharLstm) and [`Gpt`](super::Gpt), next-token batches cut from a long
//! id sequence, and sampling with temperature and top-k.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use kiln_core::StepOutput;
use kiln_core::data::SplitMix64;
use kiln_core::loss::CrossEntropy;

/// A model that predicts the next token at every position.
pub trait LanguageModel {
    /// Next-token logits at every position.
    ///
    /// # Shapes
    /// - `tokens`: `[N, T]`
    /// - output: `[N, T, vocab]`
    fn logits(&self, tokens: Tensor<2, Int>) -> Tensor<3>;

    /// The longest context the model reads when sampling.
    fn context_len(&self) -> usize;
}

/// The mean next-token cross-entropy (nats per token) of `model` on `batch`, as a train step.
pub fn lm_step(model: &impl LanguageModel, batch: LmBatch) -> StepOutput {
    let logits = model.logits(batch.inputs);
    let [n, t, v] = logits.dims();
    let loss =
        CrossEntropy::new().forward(logits.reshape([n * t, v]), batch.targets.reshape([n * t]));
    StepOutput::loss_only(loss, n)
}

/// Inputs and next-token targets.
#[derive(Debug, Clone)]
pub struct LmBatch {
    /// `[N, T]` token ids.
    pub inputs: Tensor<2, Int>,
    /// `[N, T]` the ids one position later.
    pub targets: Tensor<2, Int>,
}

/// Windows of `len + 1` ids cut from one long sequence: window `i` starts at `i * stride`.
#[derive(Debug, Clone)]
pub struct Windows {
    ids: std::sync::Arc<Vec<u32>>,
    len: usize,
    stride: usize,
}

impl Windows {
    /// Windows of `len` inputs (plus the next target) every `stride` ids.
    pub fn new(ids: std::sync::Arc<Vec<u32>>, len: usize, stride: usize) -> Self {
        Self {
            ids,
            len,
            stride: stride.max(1),
        }
    }
}

impl Dataset<Vec<u32>> for Windows {
    fn get(&self, index: usize) -> Result<Vec<u32>, burn::data::dataset::DatasetError> {
        let start = index * self.stride;
        self.ids
            .get(start..start + self.len + 1)
            .map(<[u32]>::to_vec)
            .ok_or_else(|| {
                burn::data::dataset::DatasetError::new(crate::NlpError::Input(format!(
                    "window {index} is past the end of {} ids",
                    self.ids.len()
                )))
            })
    }

    fn len(&self) -> usize {
        if self.ids.len() <= self.len {
            0
        } else {
            (self.ids.len() - self.len - 1) / self.stride + 1
        }
    }
}

/// Splits windows of `T + 1` ids into inputs and targets.
#[derive(Debug, Clone, Copy, Default)]
pub struct LmBatcher;

impl Batcher<Vec<u32>, LmBatch> for LmBatcher {
    fn batch(&self, items: Vec<Vec<u32>>, device: &Device) -> LmBatch {
        let n = items.len();
        let t = items
            .iter()
            .map(Vec::len)
            .min()
            .unwrap_or(1)
            .saturating_sub(1)
            .max(1);
        let mut inputs = Vec::with_capacity(n * t);
        let mut targets = Vec::with_capacity(n * t);
        for w in &items {
            inputs.extend(w[..t].iter().map(|&i| i as i64));
            targets.extend(w[1..=t].iter().map(|&i| i as i64));
        }
        LmBatch {
            inputs: Tensor::<1, Int>::from_ints(inputs.as_slice(), device).reshape([n, t]),
            targets: Tensor::<1, Int>::from_ints(targets.as_slice(), device).reshape([n, t]),
        }
    }
}

/// How [`sample`] picks each next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Divides the logits: below 1 sharper, above 1 flatter; 0 means greedy (argmax).
    pub temperature: f32,
    /// Sample only among the `k` most probable tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Seed of the sampler.
    pub seed: u64,
}

/// Picks an index from `logits` under `sampling`, drawing from `rng`.
pub fn pick(logits: &[f32], sampling: &Sampling, rng: &mut SplitMix64) -> usize {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0)
    };
    if sampling.temperature <= 0.0 || logits.len() < 2 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let k = sampling
        .top_k
        .unwrap_or(logits.len())
        .clamp(1, logits.len());
    let top = &order[..k];
    let max = logits[top[0]];
    let weights: Vec<f64> = top
        .iter()
        .map(|&i| (((logits[i] - max) / sampling.temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() * total;
    for (&i, w) in top.iter().zip(&weights) {
        if u < *w {
            return i;
        }
        u -= w;
    }
    top[k - 1]
}

/// Continues `prompt` by `n` tokens, one at a time, each from the model's distribution over
/// the last [`LanguageModel::context_len`] tokens.
pub fn sample(
    model: &impl LanguageModel,
    prompt: &[u32],
    n: usize,
    sampling: &Sampling,
    device: &Device,
) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    if ids.is_empty() {
        ids.push(0);
    }
    let mut rng = SplitMix64::new(sampling.seed);
    for _ in 0..n {
        let ctx = &ids[ids.len().saturating_sub(model.context_len())..];
        let t = ctx.len();
        let input: Vec<i64> = ctx.iter().map(|&i| i as i64).collect();
        let logits =
            model.logits(Tensor::<1, Int>::from_ints(input.as_slice(), device).reshape([1, t]));
        let v = logits.dims()[2];
        let last: Vec<f32> = logits
            .narrow(1, t - 1, 1)
            .reshape([v])
            .into_data()
            .iter::<f32>()
            .collect();
        ids.push(pick(&last, sampling, &mut rng) as u32);
    }
    ids.split_off(ids.len() - n)
}

/// The probabilities of `logits` (softmax), for inspection.
pub fn probabilities(logits: Tensor<1>) -> Vec<f32> {
    softmax(logits, 0).into_data().iter::<f32>().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_batches_shift_by_one() {
        let ids = std::sync::Arc::new((0..10u32).collect::<Vec<_>>());
        let w = Windows::new(ids, 4, 3);
        assert_eq!(w.len(), 2);
        assert_eq!(w.get(1).unwrap(), vec![3, 4, 5, 6, 7]);
        assert!(w.get(2).is_err());
        let device = kiln_core::backend::device("cpu").unwrap();
        let b = LmBatcher.batch(vec![w.get(0).unwrap(), w.get(1).unwrap()], &device);
        let inputs: Vec<i64> = b.inputs.into_data().iter::<i64>().collect();
        let targets: Vec<i64> = b.targets.into_data().iter::<i64>().collect();
        assert_eq!(inputs, vec![0, 1, 2, 3, 3, 4, 5, 6]);
        assert_eq!(targets, vec![1, 2, 3, 4, 4, 5, 6, 7]);
    }

    #[test]
    fn sampling_respects_temperature_and_top_k() {
        let logits = [0.0, 3.0, 1.0, 2.0];
        let mut rng = SplitMix64::new(1);
        let greedy = Sampling {
            temperature: 0.0,
            top_k: None,
            seed: 0,
        };
        assert_eq!(pick(&logits, &greedy, &mut rng), 1);
        let top2 = Sampling {
            temperature: 1.0,
            top_k: Some(2),
            seed: 0,
        };
        let mut counts = [0usize; 4];
        for _ in 0..2000 {
            counts[pick(&logits, &top2, &mut rng)] += 1;
        }
        assert_eq!(counts[0] + counts[2], 0, "only the two best can be drawn");
        // p(1) / p(3) = e^1 within sampling noise.
        let ratio = counts[1] as f64 / counts[3] as f64;
        assert!((ratio - std::f64::consts::E).abs() < 0.5, "{ratio}");
        let cold = Sampling {
            temperature: 0.05,
            top_k: None,
            seed: 0,
        };
        assert!((0..100).all(|_| pick(&logits, &cold, &mut rng) == 1));
    }
}
