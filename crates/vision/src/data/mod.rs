//! Image data sets: MNIST-format IDX files ([`idx`], [`mnist`]) and folders of PNG/JPEG
//! pictures, one subfolder per class ([`folder`]).

pub mod folder;
pub mod idx;
pub mod mnist;

pub use folder::{FolderOptions, ImageFolder};
pub use mnist::{FASHION_CLASSES, MnistDataset, MnistKind, Split, download};
