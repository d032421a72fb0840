//! Softmax cross-entropy of flex f32 logits as one operation: a pass per row for the loss,
//! and the gradient `(softmax - one_hot) / count` from the probabilities kept.
//!
//! Burn's `CrossEntropyLoss` composes it from `log_softmax`, `gather`, masks and a mean,
//! each a pass and a graph node forward and backward: 1.1 ms for the LSTM benchmark's
//! `[2048, 65]` logits, against about 0.1 ms here. Label smoothing and class weights stay
//! with Burn.

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::{AdFlex, slice, values};
use crate::cpu::with_simd;
use crate::math::exp;

/// Rows per rayon task.
const ROWS: usize = 256;

/// What the backward pass needs: the softmax of every row, the targets (`None` for an
/// ignored row), the number of rows counted, and the class count.
#[derive(Debug, Clone)]
struct Saved {
    probs: Arc<Vec<f32>>,
    targets: Arc<Vec<Option<usize>>>,
    count: usize,
    classes: usize,
}

/// One row: its softmax into `probs`, and `logsumexp - z[target]`.
#[inline(always)]
fn row(z: &[f32], target: usize, probs: &mut [f32]) -> f32 {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // A NaN anywhere makes the row's loss NaN (max ignores NaN, the sum does not).
    let mut sum = 0.0;
    for (p, &v) in probs.iter_mut().zip(z) {
        *p = exp(v - max);
        sum += *p;
    }
    let inv = 1.0 / sum;
    for p in probs.iter_mut() {
        *p *= inv;
    }
    max + sum.ln() - z[target]
}

/// The mean loss over the counted rows and the probabilities.
fn forward(z: &[f32], targets: &[Option<usize>], classes: usize) -> (f32, Vec<f32>) {
    let mut probs = vec![0f32; z.len()];
    let total: f64 = probs
        .par_chunks_mut(ROWS * classes)
        .zip(z.par_chunks(ROWS * classes))
        .zip(targets.par_chunks(ROWS))
        .map(|((probs, z), targets)| {
            let mut sum = 0f64;
            let rows = probs.chunks_exact_mut(classes).zip(z.chunks_exact(classes));
            for ((p, z), t) in rows.zip(targets) {
                if let Some(t) = *t {
                    sum += with_simd(|| row(z, t, p)) as f64;
                }
            }
            sum
        })
        .sum();
    let count = targets.iter().flatten().count();
    ((total / count as f64) as f32, probs)
}

fn backward(saved: &Saved, scale: f32) -> Vec<f32> {
    let c = saved.classes;
    let mut dz = vec![0f32; saved.probs.len()];
    let per_row = scale / saved.count as f32;
    dz.par_chunks_mut(ROWS * c)
        .zip(saved.probs.par_chunks(ROWS * c))
        .zip(saved.targets.par_chunks(ROWS))
        .for_each(|((dz, p), targets)| {
            let rows = dz.chunks_exact_mut(c).zip(p.chunks_exact(c));
            for ((dz, p), t) in rows.zip(targets) {
                if let Some(t) = *t {
                    for (d, &p) in dz.iter_mut().zip(p) {
                        *d = p * per_row;
                    }
                    dz[t] -= per_row;
                }
            }
        });
    dz
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl Backward<Flex, 1> for CrossEntropyBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = values(&grads.consume::<Flex>(&ops.node));
        let saved = ops.state;
        if let Some(node) = node {
            let dz = backward(&saved, slice(&dy)[0]);
            let n = saved.targets.len();
            let grad = FlexTensor::from_data(TensorData::new(dz, [n, saved.classes]));
            grads.register::<Flex>(node.id, grad);
        }
    }
}

/// The mean softmax cross-entropy of `logits [N, C]` against `targets [N]`, rows whose
/// target is `ignore` left out, as a `[1]` tensor; `None` (for Burn's loss to handle) when
/// the logits are not flex f32, a counted target is not a class, or no row is counted.
pub fn cross_entropy(
    logits: &Tensor<2>,
    targets: &Tensor<1, Int>,
    ignore: Option<usize>,
) -> Option<Tensor<1>> {
    if logits.dtype() != DType::F32 {
        return None;
    }
    let [n, classes] = logits.dims();
    if targets.dims() != [n] || classes == 0 {
        return None;
    }
    // Each row's class, or None for an ignored row; a target that is neither a class nor
    // the ignored index leaves the call to Burn.
    let mut ids = Vec::with_capacity(n);
    for t in targets.to_data().iter::<i64>() {
        let t = usize::try_from(t).ok()?;
        match t {
            t if Some(t) == ignore => ids.push(None),
            t if t < classes => ids.push(Some(t)),
            _ => return None,
        }
    }
    let count = ids.iter().flatten().count();
    if count == 0 {
        return None;
    }
    let out = |loss: f32| FlexTensor::from_data(TensorData::new(vec![loss], [1]));
    if !logits.device().is_autodiff() {
        let z = values(&logits.clone().try_into_primitive::<Flex>().ok()?);
        let (loss, _) = forward(slice(&z), &ids, classes);
        return Some(Tensor::from_primitive::<Flex>(out(loss)));
    }
    let z = logits.clone().try_into_primitive::<AdFlex>().ok()?;
    let values_z = values(z.primitive());
    let (loss, probs) = forward(slice(&values_z), &ids, classes);
    let y = match CrossEntropyBackward
        .prepare::<NoCheckpointing>([z.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                probs: Arc::new(probs),
                targets: Arc::new(ids),
                count,
                classes,
            };
            prep.finish(saved, out(loss))
        }
        OpsKind::UnTracked(prep) => prep.finish(out(loss)),
    };
    Some(Tensor::from_primitive::<AdFlex>(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::Distribution;

    /// The fused loss against Burn's `CrossEntropyLoss`: value and gradient, over more rows
    /// than one task takes, with logits far from zero, without and with an ignored class.
    #[test]
    fn fused_loss_equals_burns_in_value_and_gradient() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let (n, c) = (700, 17);
        let logits = Tensor::<2>::random([n, c], Distribution::Normal(3.0, 4.0), &device);
        let targets = Tensor::<1>::random([n], Distribution::Uniform(0.0, c as f64), &device).int();
        for ignore in [None, Some(4)] {
            let config = CrossEntropyLossConfig::new().with_pad_tokens(ignore.map(|i| vec![i]));
            let run = |fused: bool| {
                let z = logits.clone().require_grad();
                let loss = if fused {
                    cross_entropy(&z, &targets, ignore).expect("the fused path")
                } else {
                    config.init(&device).forward(z.clone(), targets.clone())
                };
                // An upstream gradient other than 1 reaches the logits scaled.
                let grads = (loss.clone() * 3.0).backward();
                (loss.into_scalar::<f32>(), z.grad(&grads).unwrap())
            };
            let (fused, g1) = run(true);
            let (burn, g2) = run(false);
            assert!((fused - burn).abs() < 1e-5, "{fused} vs {burn}");
            let diff = (g1 - g2).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-6, "gradient differs by {diff}");
        }
        // What the fused path leaves to Burn: a target that is not a class, and no row
        // counted.
        let bad = Tensor::<1, Int>::from_ints([0, 17], &device);
        assert!(cross_entropy(&logits.clone().narrow(0, 0, 2), &bad, None).is_none());
        let all_ignored = Tensor::<1, Int>::from_ints([3, 3], &device);
        assert!(cross_entropy(&logits.narrow(0, 0, 2), &all_ignored, Some(3)).is_none());
    }

    #[test]
    fn a_nan_logit_makes_the_loss_nan() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_floats([[0.0, f32::NAN], [1.0, 2.0]], &device);
        let targets = Tensor::<1, Int>::from_ints([0, 1], &device);
        let loss = cross_entropy(&logits, &targets, None).unwrap();
        assert!(loss.into_scalar::<f32>().is_nan());
    }
}
