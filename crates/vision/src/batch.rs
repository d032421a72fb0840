//! Image items and batches: an [`ImageItem`] is one image's pixels (channel-major, `C x H x W`)
//! and its class; the [`ImageBatcher`] applies its [`Pipeline`] of transforms (normalisation,
//! seeded augmentation) and stacks them into an [`ImageBatch`].

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;

use crate::transform::Pipeline;

/// One image and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageItem {
    /// `C * H * W` pixel values, channel-major, in `[0, 1]` for data read from files.
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

/// Transforms and stacks [`ImageItem`]s of a fixed shape.
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Transforms applied to every image, in order.
    pub pipeline: Pipeline,
}

impl ImageBatcher {
    /// A batcher for `channels x height x width` images, without transforms.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
            pipeline: Pipeline::new(),
        }
    }

    /// Sets the transforms.
    pub fn with_pipeline(mut self, pipeline: Pipeline) -> Self {
        self.pipeline = pipeline;
        self
    }

    /// The same batcher with augmentation off (for evaluation).
    pub fn for_eval(&self) -> Self {
        self.clone().with_pipeline(self.pipeline.for_eval())
    }
}

impl ImageBatcher {
    /// Checks that every item holds one image of this batcher's shape (before batching, which
    /// cannot return an error).
    ///
    /// # Errors
    /// [`VisionError::Parameter`](crate::VisionError::Parameter) naming the first item of
    /// another size.
    pub fn check_items(&self, items: &[ImageItem]) -> crate::Result<()> {
        let size = self.channels * self.height * self.width;
        match items.iter().position(|it| it.pixels.len() != size) {
            None => Ok(()),
            Some(i) => Err(crate::VisionError::Parameter {
                name: "items",
                reason: format!(
                    "item {i} has {} values, expected a {}x{}x{} image ({size} values)",
                    items[i].pixels.len(),
                    self.channels,
                    self.height,
                    self.width
                ),
            }),
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
        self.pipeline.apply(
            &mut pixels,
            n,
            [self.channels, self.height, self.width],
            device,
        );
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
