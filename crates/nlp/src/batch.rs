//! Token sequences and their batches: a [`TextItem`] is one sequence of token ids and its
//! class; the [`TextBatcher`] pads (or truncates) a batch to its longest sequence and builds the
//! padding mask. [`TextClassifier`] is what every text classifier offers (logits of a padded
//! batch), with the training step and the test-set evaluation they all share.

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;

/// One token sequence and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextItem {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// The class index.
    pub label: usize,
}

/// A padded batch.
#[derive(Debug, Clone)]
pub struct TextBatch {
    /// `[N, T]` token ids, padded with the pad id.
    pub tokens: Tensor<2, Int>,
    /// `[N, T]` true where a position holds a real token.
    pub mask: Tensor<2, Bool>,
    /// `[N]` classes.
    pub targets: Tensor<1, Int>,
}

/// Pads sequences to the longest in the batch (at most `max_len`).
#[derive(Debug, Clone, Copy)]
pub struct TextBatcher {
    /// The padding token id.
    pub pad_id: u32,
    /// Sequences are truncated to this length.
    pub max_len: usize,
}

impl TextBatcher {
    /// A batcher padding with `pad_id` and truncating at `max_len` tokens.
    pub fn new(pad_id: u32, max_len: usize) -> Self {
        Self { pad_id, max_len }
    }
}

impl Batcher<TextItem, TextBatch> for TextBatcher {
    fn batch(&self, items: Vec<TextItem>, device: &Device) -> TextBatch {
        let seqs: Vec<&[u32]> = items.iter().map(|i| i.tokens.as_slice()).collect();
        let (tokens, mask) =
            crate::PaddedBatch::new(&seqs, self.pad_id, Some(self.max_len)).to_tensors(device);
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        TextBatch {
            tokens,
            mask,
            targets: Tensor::<1, Int>::from_ints(labels.as_slice(), device),
        }
    }
}

/// Encodes labelled texts with `tokenizer` into [`TextItem`]s.
///
/// # Errors
/// The tokenizer's errors ([`NlpError::Tokenizer`](crate::NlpError::Tokenizer)).
pub fn encode_labeled(
    tokenizer: &(impl crate::Tokenizer + ?Sized),
    texts: &[crate::data::LabeledText],
) -> crate::Result<Vec<TextItem>> {
    texts
        .iter()
        .map(|t| {
            Ok(TextItem {
                tokens: tokenizer.encode(&t.text)?.ids,
                label: t.label,
            })
        })
        .collect()
}

/// A model that scores padded token batches into class logits.
pub trait TextClassifier {
    /// Class logits.
    ///
    /// # Shapes
    /// - `tokens`, `mask`: `[N, T]` (mask true on real tokens)
    /// - output: `[N, classes]`
    fn logits(&self, tokens: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2>;
}

/// The training step of every [`TextClassifier`]: cross-entropy on the logits, with the
/// logits kept for the trainer's metrics.
pub fn classification_step(model: &impl TextClassifier, batch: TextBatch) -> kiln_core::StepOutput {
    let logits = model.logits(batch.tokens, batch.mask);
    let loss = kiln_core::loss::CrossEntropy::new().forward(logits.clone(), batch.targets.clone());
    kiln_core::StepOutput::classification(loss, logits, batch.targets)
}

/// The predicted class of every item, computed in batches of `batch_size`.
pub fn predict(
    model: &impl TextClassifier,
    items: &[TextItem],
    batcher: &TextBatcher,
    batch_size: usize,
    device: &Device,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch_size.max(1)) {
        let batch = batcher.batch(chunk.to_vec(), device);
        out.extend(
            model
                .logits(batch.tokens, batch.mask)
                .argmax(1)
                .into_data()
                .iter::<i64>()
                .map(|p| p as usize),
        );
    }
    out
}

/// Predicts every item in batches of `batch_size` and counts the outcomes.
pub fn evaluate(
    model: &impl TextClassifier,
    items: &[TextItem],
    batcher: &TextBatcher,
    num_classes: usize,
    batch_size: usize,
    device: &Device,
) -> kiln_core::metrics::ConfusionMatrix {
    let mut cm = kiln_core::metrics::ConfusionMatrix::new(num_classes);
    let predicted = predict(model, items, batcher, batch_size, device);
    let truth: Vec<usize> = items.iter().map(|i| i.label).collect();
    cm.add(&predicted, &truth);
    cm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_truncates_and_masks() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let items = vec![
            TextItem {
                tokens: vec![5, 6, 7, 8, 9],
                label: 1,
            },
            TextItem {
                tokens: vec![3],
                label: 0,
            },
        ];
        let batch = TextBatcher::new(0, 4).batch(items, &device);
        let ids: Vec<i64> = batch.tokens.into_data().try_to_vec_as().unwrap();
        assert_eq!(ids, vec![5, 6, 7, 8, 3, 0, 0, 0]);
        let mask: Vec<bool> = batch.mask.into_data().try_to_vec().unwrap();
        assert_eq!(
            mask,
            vec![true, true, true, true, true, false, false, false]
        );
    }
}
