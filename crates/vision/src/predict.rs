//! Inference: class probabilities for a tensor of images, for decoded items, or for picture
//! files, and the evaluation of a model on a whole data set (accuracy, confusion matrix,
//! misclassified examples).

use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use kiln_core::metrics::ConfusionMatrix;

use crate::batch::{ImageBatcher, ImageItem};
use crate::data::FolderOptions;
use crate::data::folder::load_picture;
use crate::error::{Result, VisionError};
use crate::models::ImageClassifier;

/// Class probabilities (softmax of the logits).
///
/// # Shapes
/// - `images`: `[N, C, H, W]`, already transformed as in training
/// - output: `[N, num_classes]`, rows summing to 1
pub fn predict_proba(model: &impl ImageClassifier, images: Tensor<4>) -> Tensor<2> {
    softmax(model.logits(images), 1)
}

/// A trained classifier with the preprocessing it was trained with.
#[derive(Debug, Clone)]
pub struct Predictor<M> {
    model: M,
    batcher: ImageBatcher,
    device: Device,
}

impl<M: ImageClassifier> Predictor<M> {
    /// Wraps a model (in inference mode) and the batcher used in training; augmentation is
    /// turned off.
    pub fn new(model: M, batcher: &ImageBatcher, device: &Device) -> Self {
        Self {
            model: model.valid(),
            batcher: batcher.for_eval(),
            device: device.clone(),
        }
    }

    /// Class probabilities for decoded items, one row per item.
    pub fn predict_items(&self, items: Vec<ImageItem>) -> Vec<Vec<f32>> {
        if items.is_empty() {
            return Vec::new();
        }
        let batch = self.batcher.batch(items, &self.device);
        let probs = predict_proba(&self.model, batch.images);
        let [_, c] = probs.dims();
        let flat: Vec<f32> = probs.into_data().try_to_vec_as().unwrap_or_default();
        flat.chunks(c).map(<[f32]>::to_vec).collect()
    }

    /// Class probabilities for a PNG or JPEG file, resized to the model's input size.
    ///
    /// # Errors
    /// [`VisionError::Image`] naming `path` when the model takes other than 1 or 3 channels, or the
    /// picture cannot be opened or decoded.
    pub fn predict_file(&self, path: &Path) -> Result<Vec<f32>> {
        let options = FolderOptions {
            height: self.batcher.height as u32,
            width: self.batcher.width as u32,
            grayscale: self.batcher.channels == 1,
        };
        if self.batcher.channels != options.channels() {
            return Err(VisionError::Image {
                path: path.to_path_buf(),
                reason: format!(
                    "the model takes {} channels; only 1 or 3 can be read from a picture",
                    self.batcher.channels
                ),
            });
        }
        let pixels = load_picture(path, options)?;
        let item = ImageItem {
            pixels: pixels.iter().map(|&p| p as f32 / 255.0).collect(),
            label: 0,
        };
        Ok(self.predict_items(vec![item]).remove(0))
    }
}

/// The result of [`evaluate`].
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Predicted against true classes.
    pub confusion: ConfusionMatrix,
    /// The predicted class of every item, in data-set order.
    pub predictions: Vec<usize>,
    /// The true class of every item.
    pub targets: Vec<usize>,
}

impl Evaluation {
    /// Fraction predicted correctly.
    pub fn accuracy(&self) -> f64 {
        self.confusion.accuracy()
    }

    /// Indices of the misclassified items.
    pub fn misclassified(&self) -> Vec<usize> {
        (0..self.targets.len())
            .filter(|&i| self.predictions[i] != self.targets[i])
            .collect()
    }
}

/// Runs `model` (inference mode) over a whole data set in batches of `batch_size`.
///
/// # Errors
/// [`VisionError::Dataset`] when an item cannot be read from `dataset`.
pub fn evaluate<M: ImageClassifier>(
    model: &M,
    dataset: &impl Dataset<ImageItem>,
    batcher: &ImageBatcher,
    num_classes: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    evaluate_with(
        model,
        dataset,
        batcher,
        num_classes,
        batch_size,
        device,
        false,
    )
}

/// [`evaluate`], optionally with test-time flip averaging: the prediction is the arg-max of
/// the mean of the logits of each image and of its left-right mirror (for data where a mirror
/// keeps the class, as clothes; not digits).
///
/// # Errors
/// [`VisionError::Dataset`] when an item cannot be read from `dataset`.
pub fn evaluate_with<M: ImageClassifier>(
    model: &M,
    dataset: &impl Dataset<ImageItem>,
    batcher: &ImageBatcher,
    num_classes: usize,
    batch_size: usize,
    device: &Device,
    flip_average: bool,
) -> Result<Evaluation> {
    let model = model.valid();
    let batcher = batcher.for_eval();
    let mut confusion = ConfusionMatrix::new(num_classes);
    let (mut predictions, mut targets) = (Vec::new(), Vec::new());
    let n = dataset.len();
    for start in (0..n).step_by(batch_size.max(1)) {
        let items = dataset
            .get_many((start..(start + batch_size).min(n)).collect())
            .map_err(|e| VisionError::Dataset(e.to_string()))?;
        let labels: Vec<usize> = items.iter().map(|i| i.label).collect();
        let batch = batcher.batch(items, device);
        let mut logits = model.logits(batch.images.clone());
        if flip_average {
            logits = (logits + model.logits(batch.images.flip([3]))) / 2.0;
        }
        let predicted: Vec<i64> = logits
            .argmax(1)
            .into_data()
            .try_to_vec_as()
            .unwrap_or_default();
        let predicted: Vec<usize> = predicted.into_iter().map(|p| p as usize).collect();
        confusion.add(&predicted, &labels);
        predictions.extend(predicted);
        targets.extend(labels);
    }
    Ok(Evaluation {
        confusion,
        predictions,
        targets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::LeNet5Config;
    use crate::transform::{Pipeline, Transform};
    use burn::data::dataset::InMemDataset;

    #[test]
    fn file_and_item_predictions_agree_and_are_distributions() {
        let _rng = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        let model = LeNet5Config::new().with_num_classes(3).init(&device);
        let batcher = ImageBatcher::new(1, 28, 28).with_pipeline(
            Pipeline::new()
                .then(Transform::RandomShift { max: 3 })
                .with_augment(true),
        );
        let predictor = Predictor::new(model.clone(), &batcher, &device);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("digit.png");
        let img =
            image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 3) % 256) as u8]));
        img.save(&path).unwrap();
        let from_file = predictor.predict_file(&path).unwrap();
        assert_eq!(from_file.len(), 3);
        assert!((from_file.iter().sum::<f32>() - 1.0).abs() < 1e-5);

        // The same pixels as an item give the same probabilities (augmentation is off).
        let item = ImageItem {
            pixels: img.pixels().map(|p| p.0[0] as f32 / 255.0).collect(),
            label: 0,
        };
        let from_item = predictor.predict_items(vec![item.clone()]).remove(0);
        for (a, b) in from_file.iter().zip(&from_item) {
            assert!((a - b).abs() < 1e-6, "{from_file:?} vs {from_item:?}");
        }

        // evaluate() agrees with the arg-max of the probabilities.
        let data = InMemDataset::new(vec![item; 3]);
        let eval = evaluate(&model, &data, &batcher, 3, 2, &device).unwrap();
        let best = from_item
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(eval.predictions, vec![best; 3]);
        assert_eq!(eval.confusion.total(), 3);
        // Flip averaging on a left-right symmetric image changes nothing.
        let symmetric = ImageItem {
            pixels: (0..28 * 28)
                .map(|i| ((i % 28).min(27 - i % 28) as f32) / 14.0)
                .collect(),
            label: 1,
        };
        let data = InMemDataset::new(vec![symmetric]);
        let plain = evaluate(&model, &data, &batcher, 3, 1, &device).unwrap();
        let averaged = evaluate_with(&model, &data, &batcher, 3, 1, &device, true).unwrap();
        assert_eq!(plain.predictions, averaged.predictions);

        let missing = predictor
            .predict_file(&dir.path().join("missing.png"))
            .unwrap_err();
        assert!(missing.to_string().contains("missing.png"), "{missing}");
    }
}
