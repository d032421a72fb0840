//! The MNIST-format files of `--data` for the vision examples that take `--limit` and
//! `--test-limit` (`robust`, `gen_images`): included with `#[path]` by those examples only,
//! since the other examples are built without kiln-vision.

use std::path::Path;

use clap::ValueEnum;

use burn::data::dataset::Dataset;
use kiln_vision::data::{MnistDataset, Split};
use kiln_vision::{ImageItem, VisionError};

/// The training and test sets in `data` (the folder of the four IDX files), the training set
/// cut to its first `limit` images and the test set to its first `test_limit`.
pub fn splits(
    data: Option<&Path>,
    limit: Option<usize>,
    test_limit: Option<usize>,
) -> Result<(MnistDataset, MnistDataset), VisionError> {
    let data = data.ok_or_else(|| {
        VisionError::Dataset(
            "pass the folder with the four IDX files with --data DIR (e.g. ../shared/data/mnist)"
                .into(),
        )
    })?;
    let mut train = MnistDataset::load(data, Split::Train)?;
    if let Some(n) = limit {
        train = train.truncate(n);
    }
    let mut test = MnistDataset::load(data, Split::Test)?;
    if let Some(n) = test_limit {
        test = test.truncate(n);
    }
    Ok((train, test))
}

/// Every image of `set`, decoded.
pub fn items(set: &MnistDataset) -> Result<Vec<ImageItem>, VisionError> {
    (0..set.len())
        .map(|i| set.get(i))
        .collect::<Result<_, _>>()
        .map_err(|e| VisionError::Dataset(e.to_string()))
}

/// Which MNIST-format data set `--data` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    Mnist,
    Fashion,
}

impl DatasetName {
    /// The name in run folders and reports.
    pub fn name(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::Fashion => "fashion",
        }
    }

    /// The training set's pixel mean and standard deviation (for normalisation).
    pub fn stats(self) -> (f32, f32) {
        match self {
            DatasetName::Mnist => (0.1307, 0.3081),
            DatasetName::Fashion => (0.2860, 0.3530),
        }
    }
}
