//! Data-parallel training support: sharding a batch over devices and processes, combining the
//! replicas' gradients, and [`ProcessGroup`], the MPI link between training processes.
//!
//! The [`Trainer`](crate::Trainer) uses this module when it is built with
//! [`Trainer::data_parallel`](crate::Trainer::data_parallel): every global batch is cut into one
//! contiguous shard per device (per device of every process), each replica computes its shard's
//! mean loss weighted by the shard's share of the batch, and the gradients are summed. Because
//! Kiln's losses are batch means, the sum is the gradient of the whole batch's mean loss: the
//! update equals single-device training on the full batch, up to float rounding.
//!
//! Within a process the gradients of the devices are summed by Burn itself
//! ([`MultiGradientsParams`], the accumulator behind Burn's multi-device training). Across
//! processes they travel as one flat buffer (every gradient, then the step's loss and rank 0's
//! clock) through one MPI all-reduce per step ([`ProcessGroup`], feature `mpi`), in buckets of
//! 4M floats; the initial weights are broadcast from rank 0.
//!
//! Why MPI and not Burn: Burn 0.22's collective operations (`burn::tensor::distributed`,
//! `DistributedContext`) are implemented for the CUDA backend (NCCL) within one process only,
//! and `burn-collective`'s last release targets Burn 0.21. Clusters already run MPI (Open MPI,
//! MPICH, Slurm), which brings the launcher, the transports and tuned all-reduce algorithms;
//! see `docs/distributed.md`.

use std::ops::Range;
use std::time::Duration;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, MultiGradientsParams};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};

mod group;
pub mod launch;
#[cfg(feature = "mpi")]
mod mpi;

pub use group::ProcessGroup;

/// The default of [`ProcessGroup::with_step_timeout`].
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Cuts `0..len` into `parts` contiguous ranges whose lengths differ by at most one (the first
/// ones longer). Ranges are empty when `len < parts`.
pub fn shard_ranges(len: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1);
    let (base, extra) = (len / parts, len % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let n = base + usize::from(i < extra);
            let range = start..start + n;
            start += n;
            range
        })
        .collect()
}

/// Sums the replicas' gradients (one [`GradientsParams`] per device) onto `device` with Burn's
/// multi-device accumulator.
pub(crate) fn sum_on_device<M: Module>(
    model: &M,
    replicas: Vec<(GradientsParams, Device)>,
    device: &Device,
) -> GradientsParams {
    struct Sum<'a> {
        multi: MultiGradientsParams,
        out: GradientsParams,
        device: &'a Device,
    }
    impl ModuleVisitor for Sum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some((grad, _)) = self.multi.remove::<D>(param.id) {
                self.out
                    .register::<D>(param.id, grad.to_device(self.device));
            }
        }
    }
    let mut sum = Sum {
        multi: MultiGradientsParams { grads: replicas },
        out: GradientsParams::new(),
        device,
    };
    model.visit(&mut sum);
    sum.out
}

/// Sums `grads` (and `extra` scalars, appended to the same message) over the processes of
/// `group`, in place. A parameter no rank has a gradient for stays without one.
pub(crate) fn all_reduce_grads<M: Module>(
    model: &M,
    grads: GradientsParams,
    extra: &mut [f32],
    group: &ProcessGroup,
    device: &Device,
) -> Result<GradientsParams> {
    struct Flatten {
        grads: GradientsParams,
        present: Vec<f32>,
        values: Vec<f32>,
        failure: Option<String>,
    }
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n = param.lazy_shape().num_elements();
            match self.grads.remove::<D>(param.id) {
                Some(grad) => match grad.into_data().convert::<f32>().try_into_vec::<f32>() {
                    Ok(v) => {
                        self.present.push(1.0);
                        self.values.extend(v);
                    }
                    Err(e) => {
                        self.failure
                            .get_or_insert(format!("gradient of {}: {e:?}", param.id));
                        self.present.push(0.0);
                        self.values.extend(std::iter::repeat_n(0.0, n));
                    }
                },
                None => {
                    self.present.push(0.0);
                    self.values.extend(std::iter::repeat_n(0.0, n));
                }
            }
        }
    }
    let mut flat = Flatten {
        grads,
        present: Vec::new(),
        values: Vec::new(),
        failure: None,
    };
    model.visit(&mut flat);
    if let Some(reason) = flat.failure {
        return Err(Error::Distributed {
            rank: group.rank(),
            world: group.world(),
            reason,
        });
    }
    let params = flat.present.len();
    let mut buffer = flat.present;
    buffer.extend(extra.iter().copied());
    buffer.extend(flat.values);
    let buffer = group.all_reduce_sum_vec(buffer)?;
    extra.copy_from_slice(&buffer[params..params + extra.len()]);

    struct Unflatten<'a> {
        present: &'a [f32],
        values: &'a [f32],
        index: usize,
        offset: usize,
        out: GradientsParams,
        device: &'a Device,
    }
    impl ModuleVisitor for Unflatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let shape = param.lazy_shape();
            let n = shape.num_elements();
            let values = &self.values[self.offset..self.offset + n];
            if self.present[self.index] > 0.0 {
                let data = TensorData::new(values.to_vec(), shape);
                self.out
                    .register::<D>(param.id, Tensor::from_data(data, self.device));
            }
            self.index += 1;
            self.offset += n;
        }
    }
    let (present, rest) = buffer.split_at(params);
    let mut unflatten = Unflatten {
        present,
        values: &rest[extra.len()..],
        index: 0,
        offset: 0,
        out: GradientsParams::new(),
        device,
    };
    model.visit(&mut unflatten);
    Ok(unflatten.out)
}

/// Replaces every float parameter of `model` on every rank by rank 0's, so that all ranks
/// start from the same weights however each one initialised its model. Fails, on every
/// rank, when the ranks' models do not have the same number of values.
pub(crate) fn broadcast_model<M: Module>(model: M, group: &ProcessGroup) -> Result<M> {
    struct Flatten {
        values: Vec<f32>,
        failure: Option<String>,
    }
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            match param
                .val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
            {
                Ok(v) => self.values.extend(v),
                Err(e) => {
                    self.failure
                        .get_or_insert(format!("parameter {}: {e:?}", param.id));
                }
            }
        }
    }
    let fail = |reason: String| Error::Distributed {
        rank: group.rank(),
        world: group.world(),
        reason,
    };
    let mut flat = Flatten {
        values: Vec::new(),
        failure: None,
    };
    model.visit(&mut flat);
    if let Some(reason) = flat.failure {
        return Err(fail(reason));
    }
    // Every rank must bring the same number of values: compare the sums of the counts (cut
    // in two parts that f32 holds exactly) with world times this rank's.
    let n = flat.values.len();
    let parts = [(n >> 20) as f32, (n & 0xF_FFFF) as f32];
    let mut sums = parts;
    group.all_reduce_sum(&mut sums)?;
    let world = group.world() as f32;
    if sums != [parts[0] * world, parts[1] * world] {
        return Err(fail(format!(
            "this rank's model has {n} values and the ranks' models differ in size: do they \
             build the same model?"
        )));
    }
    group.broadcast(&mut flat.values, 0)?;

    struct Load<'a> {
        values: &'a [f32],
        offset: usize,
    }
    impl ModuleMapper for Load<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let shape = param.lazy_shape();
            let n = shape.num_elements();
            let values = self.values[self.offset..self.offset + n].to_vec();
            self.offset += n;
            param.map(|tensor| {
                let data = TensorData::new(values, shape).convert_dtype(tensor.dtype());
                Tensor::from_data(data, &tensor.device())
            })
        }
    }
    Ok(model.map(&mut Load {
        values: &flat.values,
        offset: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        assert_eq!(shard_ranges(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(shard_ranges(2, 3), vec![0..1, 1..2, 2..2]);
        assert_eq!(shard_ranges(0, 2), vec![0..0, 0..0]);
        assert_eq!(shard_ranges(5, 0), vec![0..5]);
    }
}
