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

/// Which of the two data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MnistKind {
    /// LeCun, Cortes and Burges's handwritten digits.
    Digits,
    /// Zalando's Fashion-MNIST article images.
    Fashion,
}

/// The four files, each with its published SHA-256 (the originals, gzip-compressed).
const FILES: [(&str, [&str; 2]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        [
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ],
    ),
    (
        "train-labels-idx1-ubyte.gz",
        [
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ],
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        [
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ],
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        [
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ],
    ),
];

/// Downloads the four files of `kind` into the downloader's cache (`mnist/` or
/// `fashion-mnist/` inside it), verifying each file's SHA-256, and returns the folder to pass
/// to [`MnistDataset::load`]. Files already in the cache with the right digest are not fetched
/// again. `base_url` defaults to the torchvision mirror for the digits and Zalando's bucket
/// for Fashion-MNIST.
///
/// # Errors
/// The downloader's errors ([`kiln_core::Error::Download`] for a failed request or a digest that
/// does not match), as [`VisionError::Core`].
pub fn download(
    kind: MnistKind,
    downloader: &kiln_core::data::Downloader,
    base_url: Option<&str>,
) -> Result<PathBuf> {
    let (folder, default_url, which) = match kind {
        MnistKind::Digits => ("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist", 0),
        MnistKind::Fashion => (
            "fashion-mnist",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
            1,
        ),
    };
    let base = base_url.unwrap_or(default_url).trim_end_matches('/');
    let mut dir = None;
    for (name, digests) in FILES {
        let path = downloader.fetch(
            &format!("{base}/{name}"),
            &format!("{folder}/{name}"),
            digests[which],
        )?;
        dir = path.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| VisionError::Dataset("no file was downloaded".into()))
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
    ///
    /// # Errors
    /// [`VisionError::Dataset`] when a file is missing or the image and label counts differ;
    /// [`VisionError::Io`] or [`VisionError::Idx`] for an unreadable or malformed file or a label
    /// past 9.
    pub fn load(dir: &Path, split: Split) -> Result<Self> {
        let prefix = match split {
            Split::Train => "train",
            Split::Test => "t10k",
        };
        let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images = read_images(&images_path)?;
        let labels = read_labels(&labels_path)?;
        if images.count() != labels.len() {
            return Err(VisionError::Dataset(format!(
                "{} holds {} images but {} holds {} labels",
                images_path.display(),
                images.count(),
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
        self.images.truncate(n);
        self
    }

    /// Image height.
    pub fn rows(&self) -> usize {
        self.images.rows()
    }

    /// Image width.
    pub fn cols(&self) -> usize {
        self.images.cols()
    }

    /// The labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}

impl Dataset<ImageItem> for MnistDataset {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        let out_of_range = || {
            DatasetError::new(VisionError::Dataset(format!(
                "index {index} out of range for {} images",
                self.labels.len()
            )))
        };
        let (Some(image), Some(_)) = (self.images.image(index), self.labels.get(index)) else {
            return Err(out_of_range());
        };
        Ok(ImageItem {
            pixels: image.iter().map(|&p| p as f32 / 255.0).collect(),
            label: self.labels[index] as usize,
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}
