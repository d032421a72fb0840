//! The kernels on Burn's flex backend: each takes Burn tensors, runs on their values in
//! place when they are flex f32 primitives, registers its own backward pass on Burn's
//! autodiff graph, and returns `None` (the caller then runs Burn's own operation) for any
//! other tensor. `kiln_core::ops` dispatches to these; every other backend uses Burn's.
//!
//! No `unsafe` here: the glue reads and writes the tensors' values as slices and hands them
//! to the checked kernels of this crate.

pub mod adam;
pub mod conv;
pub mod cross_entropy;
pub mod group_norm;
pub mod linear;
pub mod lstm;
pub mod pool;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::TensorData;

/// The autodiff backend the fast paths handle (flex, no gradient checkpointing).
pub(crate) type AdFlex = Autodiff<Flex, NoCheckpointing>;

/// `t` with its values in one contiguous run (read through [`slice`]): itself (a cheap
/// clone) when they already are, as in a view of leading rows, else a copy.
pub(crate) fn values(t: &FlexTensor) -> FlexTensor {
    if t.layout().contiguous_offsets().is_some() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

/// The f32 values of a tensor that [`values`] made contiguous.
///
/// # Panics
/// When the tensor does not hold f32 values (the fast paths check the dtype before they
/// are taken).
pub(crate) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("the CPU fast paths are only taken for f32 tensors, made contiguous")
}

/// A flex tensor of `shape` holding `values`.
pub(crate) fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Registers each gradient for its parent node, where that node tracks one.
pub(crate) fn register<const N: usize>(
    parents: [Option<NodeId>; N],
    out: [FlexTensor; N],
    grads: &mut Gradients,
) {
    for (node, grad) in parents.into_iter().zip(out) {
        if let Some(node) = node {
            grads.register::<Flex>(node, grad);
        }
    }
}
