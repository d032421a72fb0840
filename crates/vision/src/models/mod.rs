//! Image classifiers, one file per model, each a Burn Config + Module pair, plus the seed's
//! building blocks ([`blocks`]).
//!
//! | model | file | what |
//! |---|---|---|
//! | [`Mlp`] | `mlp.rs` | flattened pixels through dense ReLU layers (the baseline) |
//! | [`LeNet5`] | `lenet.rs` | LeCun et al.'s LeNet-5 with ReLU and max pooling |
//! | [`ResNet`] | `resnet.rs` | a small residual network (basic blocks, batch norm) |
//!
//! Every model implements [`ImageClassifier`] (logits from images) and
//! `kiln_core::TrainStep<ImageBatch>` (cross-entropy training).

pub mod blocks;
mod lenet;
mod mlp;
mod resnet;

pub use lenet::{LeNet5, LeNet5Config};
pub use mlp::{Mlp, MlpConfig};
pub use resnet::{ResNet, ResNetConfig};

use burn::prelude::*;
use kiln_core::StepOutput;
use kiln_core::loss::CrossEntropy;

/// A model that maps images to class logits.
pub trait ImageClassifier: Module {
    /// Class logits.
    ///
    /// # Shapes
    /// - `images`: `[N, C, H, W]`
    /// - output: `[N, num_classes]`
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
}

/// The cross-entropy training step every classifier here shares.
pub(crate) fn classification_step(
    model: &impl ImageClassifier,
    batch: crate::batch::ImageBatch,
) -> StepOutput {
    let logits = model.logits(batch.images);
    let loss = CrossEntropy::new().forward(logits.clone(), batch.targets.clone());
    StepOutput::classification(loss, logits, batch.targets)
}

/// Implements `TrainStep<ImageBatch>` through [`classification_step`].
macro_rules! image_train_step {
    ($model:ty) => {
        impl kiln_core::TrainStep<$crate::batch::ImageBatch> for $model {
            fn train_step(&self, batch: $crate::batch::ImageBatch) -> kiln_core::StepOutput {
                $crate::models::classification_step(self, batch)
            }
        }
    };
}
pub(crate) use image_train_step;
