//! MNIST and Fashion-MNIST from their four IDX files (`train-images-idx3-ubyte[.gz]`,
//! `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`)
//! in one folder, as published. Both data sets share the layout: 28x28 greyscale, 10 classes.

use std::path::{Path, PathBuf};

use burn::data::dataset::{Dataset, DatasetError};

use super::idx::{IdxImages, read_images, read_labels};
use crate::batch::ImageItem;
use crate::error::{Result, VisionError};

/// Which half of the data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The 60,000 training images.
    Train,
    /// The 10,000 test images.
    Test,
}

/// The class names of Fashion-MNIST, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// One split of MNIST or Fashion-MNIST, kept as bytes; items are made on demand with pixels
/// scaled to `[0, 1]`.
#[derive(Debug, Clone)]
pub struct MnistDataset {
    images: IdxImages,
    labels: Vec<u8>,
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let path = dir.join(&name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(VisionError::Dataset(format!(
        "{}: neither {stem}.gz nor {stem} found (expected the four MNIST IDX files; pass the folder with --data DIR)",
        dir.display()
    )))
}

impl MnistDataset {
    /// Reads one split from `dir`, checking that images and labels agree.
    pub fn load(dir: &Path, split: Split) -> Result<Self> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = read_images(&images_path)?;
        let labels = read_labels(&labels_path)?;
        if images.count != labels.len() {
            return Err(VisionError::Dataset(format!(
                "{} holds {} images but {} holds {} labels",
                images_path.display(),
                images.count,
                labels_path.display(),
                labels.len()
            )));
        }
        if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| **l > 9) {
            return Err(VisionError::Idx {
                path: labels_path,
                reason: format!("label {l} at index {i} is not a digit class 0-9"),
            });
        }
        Ok(Self { images, labels })
    }

    /// Keeps the first `n` items (for quick runs and tests).
    pub fn truncate(mut self, n: usize) -> Self {
        let n = n.min(self.labels.len());
        self.labels.truncate(n);
        self.images.count = n;
        self.images
            .pixels
            .truncate(n * self.images.rows * self.images.cols);
        self
    }

    /// Image height.
    pub fn rows(&self) -> usize {
        self.images.rows
    }

    /// Image width.
    pub fn cols(&self) -> usize {
        self.images.cols
    }

    /// The labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}

impl Dataset<ImageItem> for MnistDataset {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        if index >= self.labels.len() {
            return Err(DatasetError::new(VisionError::Dataset(format!(
                "index {index} out of range for {} images",
                self.labels.len()
            ))));
        }
        Ok(ImageItem {
            pixels: self
                .images
                .image(index)
                .iter()
                .map(|&p| p as f32 / 255.0)
                .collect(),
            label: self.labels[index] as usize,
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}
