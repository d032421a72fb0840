//! Measures of generated images, both read through a LeNet-5 trained by Kiln on the real
//! training set (the *judge*):
//!
//! - **class fidelity**: the fraction of generated images the judge classifies as the class
//!   they were generated for;
//! - **Fréchet distance in the judge's features**: [`frechet_distance`] between Gaussians
//!   fitted to the judge's penultimate-layer activations (84 per image) of the generated and
//!   of the real test images. This is the FID recipe with a domain feature extractor: its
//!   values are not comparable to Inception FIDs. Read it beside the real-vs-real distance
//!   (training images against test images) and a noise baseline, measured the same way.

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;

use super::frechet::{Gaussian, frechet_distance};
use crate::batch::{ImageBatcher, ImageItem};
use crate::error::{Result, VisionError};
use crate::models::{ImageClassifier, LeNet5};

/// What the judge saw in a set of images.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The judge's class for each image.
    pub predicted: Vec<usize>,
    /// `[N, 84]` penultimate-layer features, row-major.
    pub features: Vec<f32>,
}

impl Judged {
    /// The fraction of images classified as `requested` (one class per image).
    ///
    /// # Errors
    /// [`VisionError::Parameter`] when the lengths differ or there are no images.
    pub fn class_fidelity(&self, requested: &[usize]) -> Result<f64> {
        if requested.len() != self.predicted.len() || requested.is_empty() {
            return Err(VisionError::Parameter {
                name: "requested",
                reason: format!(
                    "{} requested classes for {} images",
                    requested.len(),
                    self.predicted.len()
                ),
            });
        }
        let hits = self
            .predicted
            .iter()
            .zip(requested)
            .filter(|(p, r)| p == r)
            .count();
        Ok(hits as f64 / requested.len() as f64)
    }

    /// The Gaussian of the features.
    ///
    /// # Errors
    /// As [`Gaussian::fit`] (fewer than 2 images).
    pub fn gaussian(&self) -> Result<Gaussian> {
        Gaussian::fit(
            &self.features,
            self.features.len() / self.predicted.len().max(1),
        )
    }

    /// The Fréchet distance between these images' features and `other`'s.
    ///
    /// # Errors
    /// As [`Gaussian::fit`].
    pub fn frechet_distance(&self, other: &Judged) -> Result<f64> {
        frechet_distance(&self.gaussian()?, &other.gaussian()?)
    }
}

/// Runs the judge over `items` (`[0, 1]` pixels; `batcher` normalises them as the judge was
/// trained, and must not augment), 500 at a time.
///
/// # Errors
/// [`VisionError::Parameter`] when an item does not have the batcher's size.
pub fn judge(
    judge: &LeNet5,
    items: &[ImageItem],
    batcher: &ImageBatcher,
    device: &Device,
) -> Result<Judged> {
    batcher.check_items(items)?;
    let mut predicted = Vec::with_capacity(items.len());
    let mut features = Vec::new();
    for chunk in items.chunks(500) {
        let batch = batcher.batch(chunk.to_vec(), device);
        let f = judge.features(batch.images.clone());
        let logits = judge.logits(batch.images);
        let classes = logits.argmax(1).into_data();
        predicted.extend(
            classes
                .try_to_vec_as::<i64>()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c as usize),
        );
        features.extend(f.into_data().try_to_vec_as::<f32>().unwrap_or_default());
    }
    Ok(Judged {
        predicted,
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_judge_reads_every_image_and_fidelity_counts_hits() {
        let _rng = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        device.seed(1);
        let lenet = crate::LeNet5Config::new().init(&device);
        let items: Vec<ImageItem> = (0..3)
            .map(|i| ImageItem {
                pixels: vec![i as f32 / 3.0; 784],
                label: i,
            })
            .collect();
        let batcher = ImageBatcher::new(1, 28, 28);
        let judged = judge(&lenet, &items, &batcher, &device).unwrap();
        assert_eq!(judged.predicted.len(), 3);
        assert_eq!(judged.features.len(), 3 * 84);
        let p = judged.predicted.clone();
        assert_eq!(judged.class_fidelity(&p).unwrap(), 1.0);
        let wrong: Vec<usize> = p.iter().map(|c| (c + 1) % 10).collect();
        assert_eq!(judged.class_fidelity(&wrong).unwrap(), 0.0);
        assert!(judged.class_fidelity(&[0]).is_err());
        assert!(judged.frechet_distance(&judged).unwrap() < 1e-6);
        let short = vec![ImageItem {
            pixels: vec![0.0; 10],
            label: 0,
        }];
        let err = judge(&lenet, &short, &batcher, &device).unwrap_err();
        assert!(
            err.to_string()
                .contains("item 0 has 10 values, expected a 1x28x28"),
            "{err}"
        );
    }
}
