//! The data-parallel strategies of the [`Trainer`]: [`Replicas`] shards each global batch over
//! the devices of this process (replicas in parallel threads) and sums the weighted gradients
//! on the first device, over the step's micro-batches; [`Distributed`] then sums them over a
//! process group. Both read item indices in the order of [`crate::data::shuffle`].

use super::strategy::{EpochSteps, StepPlan, StepResult, Strategy, to_host};
use super::*;

/// Several devices of this process (this rank's share of a process group's shards).
pub(super) struct Replicas {
    /// The trainer's (non-autodiff) device, where the replicas' gradients are summed.
    pub(super) main: Device,
    /// The replicas' autodiff devices.
    pub(super) devices: Vec<Device>,
    pub(super) plan: StepPlan,
    /// This process's rank and the group's size (`(0, 1)` without a group).
    pub(super) rank: usize,
    pub(super) world: usize,
}

/// [`Replicas`] whose gradients are summed over an MPI process group.
pub(super) struct Distributed<'g> {
    pub(super) replicas: Replicas,
    pub(super) group: &'g ProcessGroup,
}

impl<M, I, B> Strategy<M, I, B> for Replicas
where
    M: TrainStep<B>,
    I: Send + Sync + Clone + std::fmt::Debug + 'static,
    B: Send + Clone + std::fmt::Debug + 'static,
{
    fn epoch<'a>(
        &'a mut self,
        train: &'a Data<I, B>,
        seed: u64,
    ) -> Result<Box<dyn EpochSteps<M> + 'a>> {
        Ok(Box::new(ReplicaSteps::new(self, None, train, seed)))
    }
}

impl<M, I, B> Strategy<M, I, B> for Distributed<'_>
where
    M: TrainStep<B>,
    I: Send + Sync + Clone + std::fmt::Debug + 'static,
    B: Send + Clone + std::fmt::Debug + 'static,
{
    /// Every rank starts from rank 0's weights (a resumed run's are equal already).
    fn prepare(&self, model: M) -> Result<M> {
        if self.group.world() > 1 {
            broadcast_model(model, self.group)
        } else {
            Ok(model)
        }
    }

    fn epoch<'a>(
        &'a mut self,
        train: &'a Data<I, B>,
        seed: u64,
    ) -> Result<Box<dyn EpochSteps<M> + 'a>> {
        Ok(Box::new(ReplicaSteps::new(
            &self.replicas,
            Some(self.group),
            train,
            seed,
        )))
    }

    fn finish(&self) -> Result<()> {
        self.group.barrier()
    }
}

/// The steps of one data-parallel epoch: the shuffled item indices, `batch_size` a batch,
/// `accumulate` batches a step.
struct ReplicaSteps<'a, I, B> {
    replicas: &'a Replicas,
    group: Option<&'a ProcessGroup>,
    train: &'a Data<I, B>,
    order: Vec<usize>,
    /// The next batch's first position in `order`.
    next: usize,
}

impl<'a, I, B> ReplicaSteps<'a, I, B> {
    fn new(
        replicas: &'a Replicas,
        group: Option<&'a ProcessGroup>,
        train: &'a Data<I, B>,
        seed: u64,
    ) -> Self {
        let mut order: Vec<usize> = (0..train.len()).collect();
        if replicas.plan.shuffle {
            crate::data::shuffle(&mut order, seed);
        }
        Self {
            replicas,
            group,
            train,
            order,
            next: 0,
        }
    }
}

impl<M, I, B> EpochSteps<M> for ReplicaSteps<'_, I, B>
where
    M: TrainStep<B>,
    I: Send + Sync + Clone + std::fmt::Debug + 'static,
    B: Send + Clone + std::fmt::Debug + 'static,
{
    /// One data-parallel optimizer step over the step's global batches (item indices), one per
    /// micro-batch: each runs on this process's replicas ([`Replicas::local_step`]) with its
    /// loss weighted by its share of all of the step's examples, the gradients are summed,
    /// then reduced over the process group once.
    fn next(&mut self, model: &M, clock: &dyn Fn() -> f64) -> Result<Option<StepResult>> {
        let elapsed = clock();
        let plan = self.replicas.plan;
        let start = self.next;
        let end = (start + plan.batch_size * plan.accumulate).min(self.order.len());
        if start >= end {
            return Ok(None);
        }
        self.next = end;
        let group: Vec<&[usize]> = self.order[start..end].chunks(plan.batch_size).collect();
        let total = end - start;
        let mut micro = MicroBatches::new();
        for chunk in group {
            let (loss, outputs, grads) =
                self.replicas.local_step(model, self.train, chunk, total)?;
            micro.add(model, grads, loss, 1.0, chunk.len(), outputs);
        }
        let loss = micro.weighted_loss;
        let outputs = std::mem::take(&mut micro.outputs);
        let grads = micro.grads();
        let Some(group) = self.group else {
            return Ok(Some(StepResult {
                loss,
                examples: total,
                outputs,
                grads,
                elapsed,
            }));
        };
        // The loss and rank 0's clock travel with the gradients, so that every rank sees the
        // same loss and applies the same stop rules.
        let rank = group.rank();
        let mut extra = [loss as f32, if rank == 0 { elapsed as f32 } else { 0.0 }];
        let grads = all_reduce_grads(model, grads, &mut extra, group, &self.replicas.main)?;
        Ok(Some(StepResult {
            loss: extra[0] as f64,
            examples: total,
            outputs,
            grads,
            elapsed: extra[1] as f64,
        }))
    }
}

impl Replicas {
    /// This process's shards of `chunk` (item indices of one global batch) on its replicas,
    /// in parallel threads, each loss weighted by its shard's share of `total` examples;
    /// the gradients summed on the main device. Returns the weighted loss, the host
    /// outputs and the gradients.
    fn local_step<M, I, B>(
        &self,
        model: &M,
        train: &Data<I, B>,
        chunk: &[usize],
        total: usize,
    ) -> Result<(f64, Vec<BatchOutput>, GradientsParams)>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        let local = self.devices.len();
        let shards = shard_ranges(chunk.len(), self.world * local);
        let total = total as f64;
        let needs_outputs = self.plan.needs_outputs;
        let mut jobs = Vec::with_capacity(local);
        for (device, range) in self
            .devices
            .iter()
            .zip(&shards[self.rank * local..(self.rank + 1) * local])
        {
            if range.is_empty() {
                continue;
            }
            let items = chunk[range.clone()]
                .iter()
                .map(|&i| {
                    train
                        .dataset
                        .get(i)
                        .map_err(|e| Error::Data(format!("item {i} of {}: {e}", train.len())))
                })
                .collect::<Result<Vec<I>>>()?;
            let batch = train.batcher.batch(items, device);
            let weight = range.len() as f64 / total;
            jobs.push((model.clone().fork(device), batch, weight, device.clone()));
        }
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(replica, batch, weight, device)| {
                    scope.spawn(move || -> Result<_> {
                        let (loss_tensor, host) =
                            to_host(replica.train_step(batch), needs_outputs)?;
                        let loss = host.loss;
                        let grads = if loss.is_finite() {
                            let weighted = loss_tensor * (weight as f32);
                            GradientsParams::from_grads(weighted.backward(), &replica)
                        } else {
                            GradientsParams::new()
                        };
                        Ok((loss * weight, host, grads, device.inner()))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(replica_panic)?)
                .collect::<Result<Vec<_>>>()
        })?;
        let mut loss = 0.0;
        let mut outputs = Vec::with_capacity(results.len());
        let mut replicas = Vec::with_capacity(results.len());
        for (weighted_loss, host, grads, device) in results {
            loss += weighted_loss;
            outputs.push(host);
            replicas.push((grads, device));
        }
        let grads = sum_on_device(model, replicas, &self.main);
        Ok((loss, outputs, grads))
    }
}

/// A replica thread's panic as an error carrying its message.
fn replica_panic(panic: Box<dyn std::any::Any + Send>) -> Error {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    Error::Data(format!("a data-parallel replica panicked: {message}"))
}
