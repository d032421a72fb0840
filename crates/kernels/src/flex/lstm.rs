//! The LSTM layer of [`crate::lstm`] on Burn's autodiff graph: `kiln_core::ops::lstm_sequence`
//! and `lstm_sequence_lookup` on flex, and the view of its hidden states ([`rows`]), whose
//! backward pass writes the full gradient in one pass instead of Burn's zero-then-assign.

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
pub use crate::lstm::LstmDims;
use crate::lstm::{Input, InputGrad, Saved, backward, forward};

#[derive(Debug)]
struct LstmBackward;

impl Backward<Flex, 6> for LstmBackward {
    /// Inputs `w_ih, w_hh, c0`, what the forward pass kept, the sizes.
    type State = ([FlexTensor; 3], Saved, LstmDims);

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let ([w_ih, w_hh, c0], saved, dims) = ops.state;
        let LstmDims { n, t, d, h } = dims;
        let input = InputGrad::Dense { w_ih: slice(&w_ih) };
        let g = backward(input, [&w_hh, &c0, &dy].map(slice), &saved, dims);
        let out = [
            flex_tensor(g.x, [n, t, d]),
            flex_tensor(g.w_ih, [d, 4 * h]),
            flex_tensor(g.w_hh, [h, 4 * h]),
            flex_tensor(g.sums, [4 * h]),
            flex_tensor(g.h0, [n, h]),
            flex_tensor(g.c0, [n, h]),
        ];
        register(ops.parents.map(|p| p.map(|node| node.id)), out, grads);
    }
}

#[derive(Debug)]
struct LstmLookupBackward;

impl Backward<Flex, 4> for LstmLookupBackward {
    /// Inputs `w_hh, c0`, the token ids, what the forward pass kept, the sizes and the
    /// table's height.
    type State = ([FlexTensor; 2], Arc<Vec<u32>>, Saved, LstmDims, usize);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let ([w_hh, c0], ids, saved, dims, vocab) = ops.state;
        let LstmDims { n, h, .. } = dims;
        let input = InputGrad::Lookup { ids: &ids, vocab };
        let g = backward(input, [&w_hh, &c0, &dy].map(slice), &saved, dims);
        let out = [
            flex_tensor(g.sums, [vocab, 4 * h]),
            flex_tensor(g.w_hh, [h, 4 * h]),
            flex_tensor(g.h0, [n, h]),
            flex_tensor(g.c0, [n, h]),
        ];
        register(ops.parents.map(|p| p.map(|node| node.id)), out, grads);
    }
}

/// The layer on flex tensors: `[N T + N, H]` (every sequence's hidden states, batch-major,
/// then every sequence's last cell state), differentiable when the device has autodiff;
/// `None` when the tensors are not (all) flex f32 primitives of the kind expected.
pub fn lstm(
    inputs: [&Tensor<3>; 1],
    params: [&Tensor<2>; 2],
    bias: &Tensor<1>,
    state: [&Tensor<2>; 2],
    dims: LstmDims,
) -> Option<Tensor<2>> {
    let [x] = inputs;
    let [w_ih, w_hh] = params;
    let [h0, c0] = state;
    let f32s = [
        x.dtype(),
        w_ih.dtype(),
        w_hh.dtype(),
        bias.dtype(),
        h0.dtype(),
        c0.dtype(),
    ];
    if f32s.iter().any(|&d| d != DType::F32) || dims.d == 0 {
        return None;
    }
    let shape = [dims.n * (dims.t + 1), dims.h];
    if !x.device().is_autodiff() {
        let x = values(&x.clone().try_into_primitive::<Flex>().ok()?);
        let w_ih = values(&w_ih.clone().try_into_primitive::<Flex>().ok()?);
        let w_hh = values(&w_hh.clone().try_into_primitive::<Flex>().ok()?);
        let b = values(&bias.clone().try_into_primitive::<Flex>().ok()?);
        let h0 = values(&h0.clone().try_into_primitive::<Flex>().ok()?);
        let c0 = values(&c0.clone().try_into_primitive::<Flex>().ok()?);
        let [x, w_ih, bias] = [&x, &w_ih, &b].map(slice);
        let input = Input::Dense { x, w_ih, bias };
        let (y, _) = forward(input, [&w_hh, &h0, &c0].map(slice), dims);
        return Some(Tensor::from_primitive::<Flex>(flex_tensor(y, shape)));
    }
    let ad = |t: Tensor<2>| t.try_into_primitive::<AdFlex>().ok();
    let x = x.clone().try_into_primitive::<AdFlex>().ok()?;
    let (w_ih, w_hh, h0, c0) = (
        ad(w_ih.clone())?,
        ad(w_hh.clone())?,
        ad(h0.clone())?,
        ad(c0.clone())?,
    );
    let bias = bias.clone().try_into_primitive::<AdFlex>().ok()?;
    let nodes = [
        x.node(),
        w_ih.node(),
        w_hh.node(),
        bias.node(),
        h0.node(),
        c0.node(),
    ];
    let [xs, wis, whs, bs, h0s, c0s] = [
        x.primitive(),
        w_ih.primitive(),
        w_hh.primitive(),
        bias.primitive(),
        h0.primitive(),
        c0.primitive(),
    ]
    .map(values);
    let [x, w_ih, bias] = [&xs, &wis, &bs].map(slice);
    let input = Input::Dense { x, w_ih, bias };
    let (y, saved) = forward(input, [&whs, &h0s, &c0s].map(slice), dims);
    // The backward pass needs the weights and c0 (x and h0 are inside `saved`).
    let kept = [wis, whs, c0s];
    let y = flex_tensor(y, shape);
    let out = match LstmBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((kept, saved, dims), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<AdFlex>(out))
}

/// [`lstm`] with the input side looked up: step `s` of sequence `b` adds row
/// `ids[b, s]` of `table [V, 4H]` (`x_t W_ih + b` for every input value) to `h_{t-1} W_hh`.
/// `dims.d` must be 0. `None` when the tensors are not flex f32 primitives of the kind
/// expected, or an id is not a row of the table.
pub fn lstm_lookup(
    ids: &Tensor<2, Int>,
    table: &Tensor<2>,
    w_hh: &Tensor<2>,
    state: [&Tensor<2>; 2],
    dims: LstmDims,
) -> Option<Tensor<2>> {
    let [h0, c0] = state;
    let f32s = [table.dtype(), w_hh.dtype(), h0.dtype(), c0.dtype()];
    let [vocab, width] = table.dims();
    if f32s.iter().any(|&d| d != DType::F32)
        || dims.d != 0
        || width != 4 * dims.h
        || ids.dims() != [dims.n, dims.t]
    {
        return None;
    }
    let ids: Vec<u32> = ids
        .clone()
        .into_data()
        .convert::<i64>()
        .iter::<i64>()
        .map(|id| u32::try_from(id).ok().filter(|&id| (id as usize) < vocab))
        .collect::<Option<_>>()?;
    let shape = [dims.n * (dims.t + 1), dims.h];
    if !table.device().is_autodiff() {
        let [table, w_hh, h0, c0] = [table, w_hh, h0, c0].map(|t| {
            t.clone()
                .try_into_primitive::<Flex>()
                .ok()
                .map(|p| values(&p))
        });
        let [table, w_hh, h0, c0] = [table?, w_hh?, h0?, c0?];
        let input = Input::Lookup {
            ids: &ids,
            table: slice(&table),
        };
        let (y, _) = forward(input, [&w_hh, &h0, &c0].map(slice), dims);
        return Some(Tensor::from_primitive::<Flex>(flex_tensor(y, shape)));
    }
    let [table, w_hh, h0, c0] =
        [table, w_hh, h0, c0].map(|t| t.clone().try_into_primitive::<AdFlex>().ok());
    let [table, w_hh, h0, c0] = [table?, w_hh?, h0?, c0?];
    let nodes = [table.node(), w_hh.node(), h0.node(), c0.node()];
    let [tables, whs, h0s, c0s] = [
        table.primitive(),
        w_hh.primitive(),
        h0.primitive(),
        c0.primitive(),
    ]
    .map(values);
    let input = Input::Lookup {
        ids: &ids,
        table: slice(&tables),
    };
    let (y, saved) = forward(input, [&whs, &h0s, &c0s].map(slice), dims);
    let y = flex_tensor(y, shape);
    let out = match LstmLookupBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(([whs, c0s], Arc::new(ids), saved, dims, vocab), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<AdFlex>(out))
}

/// Rows `start..start + len` of a 2D tensor (the layer's hidden states out of its output).
/// Forward a view, as `narrow`; on flex with autodiff the backward pass builds the
/// full-size gradient in one pass (Burn's slice backward zeroes the whole tensor, then
/// assigns the rows: two passes over megabytes, for every training step).
pub fn rows(y: Tensor<2>, start: usize, len: usize) -> Tensor<2> {
    if !y.device().is_autodiff() || y.dtype() != DType::F32 {
        return y.narrow(0, start, len);
    }
    let [total, cols] = y.dims();
    let ad = match y.clone().try_into_primitive::<AdFlex>() {
        Ok(ad) => ad,
        Err(_) => return y.narrow(0, start, len),
    };
    let view = Tensor::<2>::from_primitive::<Flex>(ad.primitive().clone()).narrow(0, start, len);
    let Ok(view) = view.try_into_primitive::<Flex>() else {
        return y.narrow(0, start, len);
    };
    let out = match RowsBackward
        .prepare::<NoCheckpointing>([ad.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(([total, cols], start), view),
        OpsKind::UnTracked(prep) => prep.finish(view),
    };
    Tensor::from_primitive::<AdFlex>(out)
}

#[derive(Debug)]
struct RowsBackward;

impl Backward<Flex, 1> for RowsBackward {
    /// The input's shape and the first row taken.
    type State = ([usize; 2], usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let ([total, cols], start) = ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let dy = slice(&dy);
            let mut full = Vec::with_capacity(total * cols);
            full.resize(start * cols, 0.0);
            full.extend_from_slice(dy);
            full.resize(total * cols, 0.0);
            grads.register::<Flex>(node.id, flex_tensor(full, [total, cols]));
        }
    }
}
