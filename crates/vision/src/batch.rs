//! Image items and batches: an [`ImageItem`] is one image's pixels (channel-major, `C x H x W`)
//! and its class; the [`ImageBatcher`] stacks them into an [`ImageBatch`].

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;

/// One image and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageItem {
    /// `C * H * W` pixel values, channel-major, already normalised.
    pub pixels: Vec<f32>,
    /// The class index.
    pub label: usize,
}

/// A batch of images.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// `[N, C, H, W]` pixels.
    pub images: Tensor<4>,
    /// `[N]` classes.
    pub targets: Tensor<1, Int>,
}

/// Stacks [`ImageItem`]s of a fixed shape.
#[derive(Debug, Clone, Copy)]
pub struct ImageBatcher {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

impl ImageBatcher {
    /// A batcher for `channels x height x width` images.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }
}

impl Batcher<ImageItem, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        let n = items.len();
        let size = self.channels * self.height * self.width;
        let mut pixels = Vec::with_capacity(n * size);
        for item in &items {
            // Items of the wrong size would silently shift every later image: the datasets
            // check sizes when they are read, so this is a programming error.
            assert_eq!(
                item.pixels.len(),
                size,
                "image of {} values, expected {size}",
                item.pixels.len()
            );
            pixels.extend_from_slice(&item.pixels);
        }
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        ImageBatch {
            images: Tensor::<1>::from_floats(pixels.as_slice(), device).reshape([
                n,
                self.channels,
                self.height,
                self.width,
            ]),
            targets: Tensor::<1, Int>::from_ints(labels.as_slice(), device),
        }
    }
}
