//! The data-parallel step of the [`Trainer`]: each global batch sharded over the devices of
//! this process (replicas in parallel threads), the weighted gradients summed on the first
//! device, over the step's micro-batches, and then over the process group.

use super::*;

impl Trainer {
    /// One data-parallel optimizer step over `group`, the global batches (item indices) of
    /// its micro-batches (one without gradient accumulation): each runs on this process's
    /// replicas ([`local_step`](Self::local_step)) with its loss weighted by its share of
    /// all of the step's examples, the gradients are summed, then reduced over the process
    /// group once.
    pub(super) fn parallel_step<M, I, B>(
        &self,
        model: &M,
        train: &Data<I, B>,
        group: &[&[usize]],
        devices: &[Device],
        needs_outputs: bool,
        elapsed: f64,
    ) -> Result<StepResult>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        let total: usize = group.iter().map(|chunk| chunk.len()).sum();
        let mut micro = MicroBatches::new();
        for chunk in group {
            let (loss, outputs, grads) =
                self.local_step(model, train, chunk, total, devices, needs_outputs)?;
            micro.add(model, grads, loss, 1.0, chunk.len(), outputs);
        }
        let loss = micro.weighted_loss;
        let outputs = std::mem::take(&mut micro.outputs);
        let grads = micro.grads();
        let Some(group) = &self.group else {
            return Ok(StepResult {
                loss,
                examples: total,
                outputs,
                grads,
                elapsed,
            });
        };
        // The loss and rank 0's clock travel with the gradients, so that every rank sees the
        // same loss and applies the same stop rules.
        let rank = group.rank();
        let mut extra = [loss as f32, if rank == 0 { elapsed as f32 } else { 0.0 }];
        let grads = all_reduce_grads(model, grads, &mut extra, group, &self.device)?;
        Ok(StepResult {
            loss: extra[0] as f64,
            examples: total,
            outputs,
            grads,
            elapsed: extra[1] as f64,
        })
    }

    /// This process's shards of `chunk` (item indices of one global batch) on its replicas,
    /// in parallel threads, each loss weighted by its shard's share of `total` examples;
    /// the gradients summed on the first device. Returns the weighted loss, the host
    /// outputs and the gradients.
    fn local_step<M, I, B>(
        &self,
        model: &M,
        train: &Data<I, B>,
        chunk: &[usize],
        total: usize,
        devices: &[Device],
        needs_outputs: bool,
    ) -> Result<(f64, Vec<BatchOutput>, GradientsParams)>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        let (rank, world) = self.rank();
        let local = devices.len();
        let shards = shard_ranges(chunk.len(), world * local);
        let total = total as f64;
        let mut jobs = Vec::with_capacity(local);
        for (device, range) in devices
            .iter()
            .zip(&shards[rank * local..(rank + 1) * local])
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
                .map(|h| {
                    h.join().map_err(|panic| {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        Error::Data(format!("a data-parallel replica panicked: {message}"))
                    })?
                })
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
        let grads = sum_on_device(model, replicas, &self.device);
        Ok((loss, outputs, grads))
    }
}
