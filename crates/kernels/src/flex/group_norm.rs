//! The flex side of `kiln_core::ops::group_norm`: group normalisation, its affine map and an
//! optional SiLU as one operation on Burn's autodiff graph, on the loops of
//! [`crate::norm`].

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;

use super::{AdFlex, flex_tensor, register, slice, values};
use crate::norm::{GroupShape, GroupStats, group_norm_backward, group_norm_forward};

/// What the backward pass needs: the input, the affine parameters, the statistics.
#[derive(Debug, Clone)]
struct State {
    x: FlexTensor,
    gamma: Arc<[f32]>,
    beta: Arc<[f32]>,
    stats: Arc<GroupStats>,
    shape: GroupShape,
    dims: [usize; 4],
    silu: bool,
}

#[derive(Debug)]
struct GroupNormBackward;

impl Backward<Flex, 3> for GroupNormBackward {
    type State = State;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let s = ops.state;
        let g = group_norm_backward(
            slice(&s.x),
            slice(&dy),
            &s.gamma,
            &s.beta,
            &s.stats,
            s.shape,
            s.silu,
        );
        let c = s.dims[1];
        register(
            ops.parents.map(|p| p.map(|p| p.id)),
            [
                flex_tensor(g.dx, s.dims),
                flex_tensor(g.dgamma, [c]),
                flex_tensor(g.dbeta, [c]),
            ],
            grads,
        );
    }
}

/// The f32 values of a flex (or autodiff flex) 1-D tensor.
fn host_values(t: &Tensor<1>) -> Option<Vec<f32>> {
    t.clone().into_data().try_to_vec::<f32>().ok()
}

/// `act(gamma (x - mean) / sqrt(var + eps) + beta)` per group of `groups` channel groups of
/// each image of `x [N, C, H, W]`, with `act` the SiLU when `silu`, on flex f32 tensors,
/// differentiable in all three when the device has autodiff; `None` when the tensors are not
/// flex f32 primitives or the groups do not divide `C`.
pub fn group_norm(
    x: &Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Option<Tensor<4>> {
    let dims = x.dims();
    let [n, c, h, w] = dims;
    let fits = x.dtype() == DType::F32
        && gamma.dtype() == DType::F32
        && beta.dtype() == DType::F32
        && gamma.dims() == [c]
        && beta.dims() == [c];
    let shape = GroupShape::new(n, c, h * w, groups).filter(|_| fits)?;
    let eps = eps as f32;
    if !x.device().is_autodiff() {
        let xv = values(&x.clone().try_into_primitive::<Flex>().ok()?);
        let (gv, bv) = (host_values(gamma)?, host_values(beta)?);
        let (y, _) = group_norm_forward(slice(&xv), &gv, &bv, shape, eps, silu);
        return Some(Tensor::from_primitive::<Flex>(flex_tensor(y, dims)));
    }
    let xa = x.clone().try_into_primitive::<AdFlex>().ok()?;
    let ga = gamma.clone().try_into_primitive::<AdFlex>().ok()?;
    let ba = beta.clone().try_into_primitive::<AdFlex>().ok()?;
    let xv = values(xa.primitive());
    let gv: Arc<[f32]> = slice(&values(ga.primitive())).into();
    let bv: Arc<[f32]> = slice(&values(ba.primitive())).into();
    let (y, stats) = group_norm_forward(slice(&xv), &gv, &bv, shape, eps, silu);
    let y = flex_tensor(y, dims);
    let out = match GroupNormBackward
        .prepare::<NoCheckpointing>([xa.node(), ga.node(), ba.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            State {
                x: xv,
                gamma: gv,
                beta: bv,
                stats: Arc::new(stats),
                shape,
                dims,
                silu,
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<AdFlex>(out))
}
