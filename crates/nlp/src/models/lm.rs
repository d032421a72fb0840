//! Language models over token ids (characters or words): the [`LanguageModel`] trait shared by
//! [`CharLstm`](super::CharLstm) and [`Gpt`](super::Gpt), next-token batches cut from a long
//! id sequence. Their text is sampled by
//! [`generate_windowed`](crate::generation::generate_windowed).

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use kiln_core::StepOutput;
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
}
