//! The data-parallel step of the [`Trainer`]: one global batch sharded over the devices of
//! this process (replicas in parallel threads), the weighted gradients summed on the first
//! device and then over the process group.

use super::*;

impl Trainer {
    /// One data-parallel step: this process's shards of `chunk` (item indices of one global
    /// batch) run on their replicas in parallel threads; the weighted gradients are summed on
    /// the first device, then over the process group.
    pub(super) fn parallel_step<M, I, B>(
        &self,
        model: &M,
        train: &Data<I, B>,
        chunk: &[usize],
        devices: &[Device],
        needs_outputs: bool,
        elapsed: f64,
    ) -> Result<StepResult>
    where
        M: TrainStep<B>,
        I: Send + Sync + Clone + std::fmt::Debug + 'static,
        B: Send + Clone + std::fmt::Debug + 'static,
    {
        let (rank, world) = self.rank();
        let local = devices.len();
        let shards = shard_ranges(chunk.len(), world * local);
        let total = chunk.len() as f64;
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
        let Some(group) = &self.group else {
            return Ok(StepResult {
                loss,
                examples: chunk.len(),
                outputs,
                grads,
                elapsed,
            });
        };
        // The loss and rank 0's clock travel with the gradients, so that every rank sees the
        // same loss and applies the same stop rules.
        let mut extra = [loss as f32, if rank == 0 { elapsed as f32 } else { 0.0 }];
        let grads = all_reduce_grads(model, grads, &mut extra, group, &self.device)?;
        Ok(StepResult {
            loss: extra[0] as f64,
            examples: chunk.len(),
            outputs,
            grads,
            elapsed: extra[1] as f64,
        })
    }
}
