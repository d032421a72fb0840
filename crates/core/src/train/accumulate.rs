//! Gradient accumulation (and the parameters' autodiff strategy under activation
//! checkpointing): the micro-batches of one optimizer step
//! ([`TrainerConfig::accumulate`](super::TrainerConfig::accumulate)), their gradients summed
//! with the weights that make the update equal one step on their union.
//!
//! Kiln's losses are batch means, so the gradient of the union's mean loss is
//! `sum_i (n_i / N) grad L_i` over micro-batches of `n_i` examples, `N = sum_i n_i`. The
//! data-parallel path knows every `n_i` before it runs (item indices) and weights each loss
//! by `n_i / N` before backward; the single-device path learns `n_i` from each step's output,
//! so it weights by `n_i` and divides the sum by `N` at the end ([`scale_grads`]).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{GradientCheckpointingStrategy, Tensor};

use crate::metrics::BatchOutput;

/// The micro-batches of one optimizer step so far.
pub(super) struct MicroBatches<M> {
    grads: GradientsAccumulator<M>,
    /// The sum of the micro-batches' losses, each times its weight.
    pub(super) weighted_loss: f64,
    /// The first micro-batch's own loss (the step's loss when it is the only one).
    first_loss: Option<f64>,
    pub(super) examples: usize,
    pub(super) outputs: Vec<BatchOutput>,
    pub(super) count: usize,
}

impl<M: Module> MicroBatches<M> {
    pub(super) fn new() -> Self {
        MicroBatches {
            grads: GradientsAccumulator::new(),
            weighted_loss: 0.0,
            first_loss: None,
            examples: 0,
            outputs: Vec::new(),
            count: 0,
        }
    }

    /// Adds a micro-batch: its gradients (of its loss times `weight`), its mean `loss`, its
    /// number of examples and its host outputs.
    pub(super) fn add(
        &mut self,
        model: &M,
        grads: GradientsParams,
        loss: f64,
        weight: f64,
        examples: usize,
        outputs: Vec<BatchOutput>,
    ) {
        self.grads.accumulate(model, grads);
        self.weighted_loss += loss * weight;
        self.first_loss.get_or_insert(loss);
        self.examples += examples;
        self.outputs.extend(outputs);
        self.count += 1;
    }

    /// The summed gradients.
    pub(super) fn grads(&mut self) -> GradientsParams {
        self.grads.grads()
    }

    /// The first micro-batch's own loss.
    pub(super) fn first_loss(&self) -> Option<f64> {
        self.first_loss
    }
}

/// Every gradient of `grads` times `factor`.
pub(super) fn scale_grads<M: Module>(
    model: &M,
    grads: GradientsParams,
    factor: f32,
) -> GradientsParams {
    struct Scale {
        grads: GradientsParams,
        factor: f32,
    }
    impl ModuleVisitor for Scale {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                self.grads.register::<D>(param.id, grad * self.factor);
            }
        }
    }
    let mut scale = Scale { grads, factor };
    model.visit(&mut scale);
    scale.grads
}

/// Tags every float parameter of `model` with the autodiff checkpointing `strategy`.
///
/// Burn 0.22 takes the strategy from the device a tensor is created on, but a module forked
/// onto a checkpointing device keeps its parameters' strategy (device equality ignores it),
/// and optimizers rebuild parameters with the default one; operations then refuse to mix
/// the parameters with the batch. The trainer re-tags after forking and after each step
/// (metadata only: no copy, the autodiff node is kept).
pub(super) fn with_checkpointing<M: Module>(
    model: M,
    strategy: GradientCheckpointingStrategy,
) -> M {
    struct Tag(GradientCheckpointingStrategy);
    impl ModuleMapper for Tag {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let strategy = self.0;
            param.map(|tensor| {
                if tensor
                    .gradient_checkpointing_strategy()
                    .is_some_and(|s| s != strategy)
                {
                    tensor.with_gradient_checkpointing_strategy(strategy)
                } else {
                    tensor
                }
            })
        }
    }
    model.map(&mut Tag(strategy))
}
