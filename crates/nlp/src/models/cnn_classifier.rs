//! A convolutional text classifier (Kim, 2014): token embeddings, one 1-D convolution per
//! window width (each an n-gram detector over the sequence), ReLU, the maximum of each
//! filter over the windows that lie inside the text, dropout and a linear layer to class
//! logits. Padding embeddings are zeroed and windows reaching into padding are left out of
//! the maximum, so a padded batch gives the logits of each text alone; a text shorter than a
//! width gets that width's single window, zero-padded.

use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use kiln_core::{StepOutput, TrainStep};

use crate::batch::{TextBatch, TextClassifier, classification_step};

/// Configuration of [`CnnClassifier`].
#[derive(Config, Debug)]
pub struct CnnClassifierConfig {
    /// Vocabulary size (token ids are below it).
    pub vocab_size: usize,
    /// The number of classes.
    pub num_classes: usize,
    /// Embedding width.
    #[config(default = 128)]
    pub embed_dim: usize,
    /// Window widths, one convolution each.
    #[config(default = "vec![2, 3, 4, 5]")]
    pub widths: Vec<usize>,
    /// Filters per width.
    #[config(default = 128)]
    pub filters: usize,
    /// Dropout on the embeddings and on the pooled features.
    #[config(default = 0.5)]
    pub dropout: f64,
}

impl CnnClassifierConfig {
    /// Builds the model on `device`.
    ///
    /// # Panics
    /// When `widths` is empty or holds a zero (a configuration error, not a data one).
    pub fn init(&self, device: &Device) -> CnnClassifier {
        assert!(
            !self.widths.is_empty() && !self.widths.contains(&0),
            "CnnClassifierConfig: widths must be positive and at least one, got {:?}",
            self.widths
        );
        CnnClassifier {
            embedding: EmbeddingConfig::new(self.vocab_size, self.embed_dim).init(device),
            convs: self
                .widths
                .iter()
                .map(|&w| Conv1dConfig::new(self.embed_dim, self.filters, w).init(device))
                .collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(self.filters * self.widths.len(), self.num_classes)
                .init(device),
        }
    }
}

/// Embedding + convolutions of several widths + masked max over time + linear.
#[derive(Module, Debug)]
pub struct CnnClassifier {
    embedding: Embedding,
    convs: Vec<Conv1d>,
    dropout: Dropout,
    output: Linear,
}

impl CnnClassifier {
    /// Class logits.
    ///
    /// # Shapes
    /// - `tokens`: `[N, T]`, `mask`: `[N, T]` (true on real tokens)
    /// - output: `[N, num_classes]`
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        let device = tokens.device();
        let [n, t] = tokens.dims();
        let real = mask.clone().float().reshape([n, t, 1]);
        let x = self.dropout.forward(self.embedding.forward(tokens)) * real;
        let widest = self.convs.iter().map(|c| c.kernel_size).max().unwrap_or(1);
        // At least one whole window of the widest convolution.
        let (x, t_in) = if t < widest {
            let pad = Tensor::zeros([n, widest - t, x.dims()[2]], &device);
            (Tensor::cat(vec![x, pad], 1), widest)
        } else {
            (x, t)
        };
        let x = x.swap_dims(1, 2);
        let lengths = mask.int().sum_dim(1).reshape([n, 1]);
        let pooled: Vec<Tensor<2>> = self
            .convs
            .iter()
            .map(|conv| {
                let w = conv.kernel_size;
                let h = burn::tensor::activation::relu(conv.forward(x.clone()));
                let [_, f, windows] = h.dims();
                debug_assert_eq!(windows, t_in + 1 - w);
                // Window j reads tokens j..j+w: inside the text when j + w <= length, and the
                // first window always counts.
                let starts = Tensor::<1, Int>::arange(0..windows as i64, &device)
                    .reshape([1, windows])
                    .expand([n, windows]);
                let last = (lengths.clone() - w as i64)
                    .clamp_min(0)
                    .expand([n, windows]);
                let outside = starts
                    .greater(last)
                    .reshape([n, 1, windows])
                    .expand([n, f, windows]);
                h.mask_fill(outside, -1.0e4).max_dim(2).reshape([n, f])
            })
            .collect();
        self.output
            .forward(self.dropout.forward(Tensor::cat(pooled, 1)))
    }
}

impl TrainStep<TextBatch> for CnnClassifier {
    fn train_step(&self, batch: TextBatch) -> StepOutput {
        classification_step(self, batch)
    }
}

impl TextClassifier for CnnClassifier {
    fn logits(&self, tokens: Tensor<2, Int>, mask: Tensor<2, Bool>) -> Tensor<2> {
        self.forward(tokens, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(rows: &[&[i64]], device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>) {
        let t = rows.iter().map(|r| r.len()).max().unwrap();
        let flat: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.iter().copied().chain(std::iter::repeat(0)).take(t))
            .collect();
        let mask: Vec<bool> = rows
            .iter()
            .flat_map(|r| (0..t).map(move |i| i < r.len()))
            .collect();
        (
            Tensor::<1, Int>::from_ints(flat.as_slice(), device).reshape([rows.len(), t]),
            Tensor::<1, Bool>::from_bool(TensorData::from(mask.as_slice()), device)
                .reshape([rows.len(), t]),
        )
    }

    #[test]
    fn padding_does_not_change_the_logits() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let model = CnnClassifierConfig::new(20, 3)
            .with_embed_dim(6)
            .with_filters(5)
            .with_widths(vec![1, 3])
            .init(&device);
        for text in [&[4i64, 5, 6, 7, 8][..], &[9, 10][..]] {
            let (tokens, mask) = ids(&[text], &device);
            let alone = model.forward(tokens, mask);
            let (tokens, mask) = ids(&[text, &[1, 2, 3, 4, 5, 6, 7, 8, 9]], &device);
            let batched = model.forward(tokens, mask).slice([0..1, 0..3]);
            alone.into_data().assert_approx_eq::<f32>(
                &batched.into_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
        }
    }

    #[test]
    fn a_text_reaches_the_logits_only_through_its_windows() {
        let device = kiln_core::backend::device("cpu").unwrap();
        device.seed(7);
        // Two tokens and width 2: one window, so the max over windows is that window and a
        // change of its last token reaches every filter (with 16 filters, not all of them
        // stay below ReLU's zero; with 3 filters and three tokens, a draw of weights whose
        // maxima sat in the first window made this test fail now and then).
        let model = CnnClassifierConfig::new(20, 2)
            .with_embed_dim(4)
            .with_filters(16)
            .with_widths(vec![2])
            .init(&device);
        let (a, ma) = ids(&[&[3, 4]], &device);
        let (b, mb) = ids(&[&[3, 6]], &device);
        let diff: f32 = (model.forward(a, ma) - model.forward(b, mb))
            .abs()
            .max()
            .into_scalar();
        assert!(diff > 0.0, "changing the last token must change the logits");
    }
}
