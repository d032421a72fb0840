//! Data-parallel training support: sharding a batch over devices and processes, combining the
//! replicas' gradients, and [`ProcessGroup`], the TCP link between training processes.
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
//! processes they are summed by [`ProcessGroup::all_reduce_sum`] over TCP.
//!
//! Why not `burn-collective`: its last release (0.21) is built against Burn 0.21's backend
//! traits and cannot take Burn 0.22 tensors, and Burn 0.22's own collective operations
//! (`burn::tensor::distributed::all_reduce`, `DistributedContext`) are implemented for the CUDA
//! backend (NCCL) and `burn-remote` only: on Flex, NdArray and wgpu they are `unimplemented!`.
//! The process group here is the small part that is missing: a star all-reduce (every rank sends
//! its gradients to rank 0, which sums them in rank order and sends the sum back), which is
//! deterministic and exact for two processes and simple to reason about. It moves every gradient
//! through rank 0, so it suits a handful of machines, not hundreds (see `docs/distributed.md`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, MultiGradientsParams};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};

/// The default of [`ProcessGroup::with_step_timeout`].
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Bytes that open every handshake, so that a stray connection is refused, not misread.
const MAGIC: &[u8; 8] = b"KILNPG01";

/// The environment variables read by [`ProcessGroup::from_env`].
pub const ENV_RANK: &str = "KILN_RANK";
/// The number of processes (see [`ProcessGroup::from_env`]).
pub const ENV_WORLD_SIZE: &str = "KILN_WORLD_SIZE";
/// The `host:port` rank 0 listens on (see [`ProcessGroup::from_env`]).
pub const ENV_MASTER_ADDR: &str = "KILN_MASTER_ADDR";

/// The processes of one data-parallel run, linked over TCP.
///
/// Rank 0 listens on the group's address; every other rank connects to it. Each training step,
/// [`all_reduce_sum`](Self::all_reduce_sum) leaves every rank with the element-wise sum of all
/// ranks' buffers.
///
/// ```no_run
/// # fn main() -> kiln_core::Result<()> {
/// use std::time::Duration;
/// use kiln_core::distributed::ProcessGroup;
/// // In process 0 and, with rank 1, in process 1 (possibly on another machine):
/// let mut group = ProcessGroup::connect(0, 2, "10.0.0.1:29500", Duration::from_secs(60))?;
/// let mut values = vec![1.0_f32, 2.0];
/// group.all_reduce_sum(&mut values)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ProcessGroup {
    rank: usize,
    world: usize,
    /// Rank 0: the links to ranks 1.., in rank order. Other ranks: the link to rank 0.
    links: Vec<TcpStream>,
    bytes: Vec<u8>,
}

impl ProcessGroup {
    /// Joins the group of `world` processes as `rank`. Rank 0 listens on `addr`; the others
    /// connect to it, retrying until `timeout` (processes need not start in order).
    pub fn connect(
        rank: usize,
        world: usize,
        addr: impl ToSocketAddrs,
        timeout: Duration,
    ) -> Result<Self> {
        let fail = |reason: String| Error::Distributed {
            rank,
            world,
            reason,
        };
        if world == 0 || rank >= world {
            return Err(fail(format!(
                "rank must be below the number of processes ({world})"
            )));
        }
        let addr: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|e| fail(format!("address: {e}")))?
            .next()
            .ok_or_else(|| fail("the address resolves to nothing".into()))?;
        let deadline = Instant::now() + timeout;
        let links = if rank == 0 {
            accept_workers(world, addr, deadline).map_err(fail)?
        } else {
            vec![connect_to_root(rank, world, addr, deadline).map_err(fail)?]
        };
        for link in &links {
            link.set_nodelay(true)
                .map_err(|e| fail(format!("socket options: {e}")))?;
        }
        Self {
            rank,
            world,
            links,
            bytes: Vec::new(),
        }
        .with_step_timeout(DEFAULT_STEP_TIMEOUT)
    }

    /// How long one [`all_reduce_sum`](Self::all_reduce_sum) may wait for a peer before it
    /// fails naming that peer (default 30 minutes). Rank 0 also waits through the other ranks'
    /// training steps and validation, so keep it above the longest step plus one validation
    /// pass; a peer that dies is noticed at once anyway (the connection closes).
    pub fn with_step_timeout(self, timeout: Duration) -> Result<Self> {
        for link in &self.links {
            link.set_read_timeout(Some(timeout))
                .map_err(|e| Error::Distributed {
                    rank: self.rank,
                    world: self.world,
                    reason: format!("socket options: {e}"),
                })?;
        }
        Ok(self)
    }

    /// Joins the group described by `KILN_RANK`, `KILN_WORLD_SIZE` and `KILN_MASTER_ADDR`
    /// (`host:port` of rank 0), or returns `None` when `KILN_WORLD_SIZE` is not set.
    pub fn from_env(timeout: Duration) -> Result<Option<Self>> {
        let Ok(world) = std::env::var(ENV_WORLD_SIZE) else {
            return Ok(None);
        };
        let parse = |name: &str, value: String| {
            value.trim().parse::<usize>().map_err(|_| {
                Error::InvalidConfig(format!("{name}=`{value}` is not a non-negative integer"))
            })
        };
        let world = parse(ENV_WORLD_SIZE, world)?;
        let rank = parse(
            ENV_RANK,
            std::env::var(ENV_RANK).map_err(|_| {
                Error::InvalidConfig(format!("{ENV_WORLD_SIZE} is set but {ENV_RANK} is not"))
            })?,
        )?;
        let addr = std::env::var(ENV_MASTER_ADDR).map_err(|_| {
            Error::InvalidConfig(format!(
                "{ENV_WORLD_SIZE} is set but {ENV_MASTER_ADDR} (host:port of rank 0) is not"
            ))
        })?;
        Self::connect(rank, world, addr.as_str(), timeout).map(Some)
    }

    /// This process's rank (0 is the one that listens, validates and writes checkpoints).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Replaces `values` on every rank by the element-wise sum over all ranks.
    ///
    /// Rank 0 adds the buffers in rank order, so every run with the same inputs gives the same
    /// bits. Every rank must call this with a buffer of the same length, in the same order.
    pub fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<()> {
        let (rank, world) = (self.rank, self.world);
        let fail = |reason: String| Error::Distributed {
            rank,
            world,
            reason,
        };
        if self.rank == 0 {
            for (i, link) in self.links.iter_mut().enumerate() {
                let peer = i + 1;
                let n = read_len(link).map_err(|e| fail(format!("rank {peer}: {e}")))?;
                if n != values.len() {
                    return Err(fail(format!(
                        "rank {peer} sent {n} values, rank 0 has {}: do the processes train the same model?",
                        values.len()
                    )));
                }
                self.bytes.resize(n * 4, 0);
                link.read_exact(&mut self.bytes)
                    .map_err(|e| fail(format!("rank {peer}: {e}")))?;
                for (v, b) in values.iter_mut().zip(self.bytes.chunks_exact(4)) {
                    *v += f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            encode(values, &mut self.bytes);
            for (i, link) in self.links.iter_mut().enumerate() {
                send(link, values.len(), &self.bytes)
                    .map_err(|e| fail(format!("rank {}: {e}", i + 1)))?;
            }
        } else {
            let link = &mut self.links[0];
            encode(values, &mut self.bytes);
            send(link, values.len(), &self.bytes).map_err(|e| fail(format!("rank 0: {e}")))?;
            let n = read_len(link).map_err(|e| fail(format!("rank 0: {e}")))?;
            if n != values.len() {
                return Err(fail(format!(
                    "rank 0 answered with {n} values, expected {}",
                    values.len()
                )));
            }
            link.read_exact(&mut self.bytes)
                .map_err(|e| fail(format!("rank 0: {e}")))?;
            for (v, b) in values.iter_mut().zip(self.bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(())
    }
}

fn encode(values: &[f32], bytes: &mut Vec<u8>) {
    bytes.clear();
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
}

fn send(link: &mut TcpStream, n: usize, bytes: &[u8]) -> std::io::Result<()> {
    link.write_all(&(n as u64).to_le_bytes())?;
    link.write_all(bytes)?;
    link.flush()
}

fn read_len(link: &mut TcpStream) -> std::io::Result<usize> {
    let mut header = [0u8; 8];
    link.read_exact(&mut header)?;
    Ok(u64::from_le_bytes(header) as usize)
}

fn accept_workers(
    world: usize,
    addr: SocketAddr,
    deadline: Instant,
) -> std::result::Result<Vec<TcpStream>, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("listening on {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listening on {addr}: {e}"))?;
    let mut links: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
    while links.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((mut stream, from)) => {
                stream
                    .set_nonblocking(false)
                    .and_then(|_| stream.set_read_timeout(Some(Duration::from_secs(30))))
                    .map_err(|e| format!("{from}: {e}"))?;
                let mut hello = [0u8; 16];
                if stream.read_exact(&mut hello).is_err() || &hello[..8] != MAGIC {
                    continue; // not one of ours: ignore it
                }
                let peer = u32::from_le_bytes(hello[8..12].try_into().unwrap()) as usize;
                let peer_world = u32::from_le_bytes(hello[12..16].try_into().unwrap()) as usize;
                if peer_world != world {
                    return Err(format!(
                        "{from} joined as rank {peer} of {peer_world} processes, this group has {world}"
                    ));
                }
                let slot = peer
                    .checked_sub(1)
                    .and_then(|i| links.get_mut(i))
                    .ok_or_else(|| format!("{from} joined with rank {peer}, out of range"))?;
                if slot.is_some() {
                    return Err(format!("two processes joined as rank {peer}"));
                }
                stream
                    .write_all(MAGIC)
                    .map_err(|e| format!("rank {peer}: {e}"))?;
                *slot = Some(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let missing: Vec<String> = links
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| l.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    return Err(format!(
                        "timed out on {addr} waiting for rank(s) {}",
                        missing.join(", ")
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("accepting on {addr}: {e}")),
        }
    }
    Ok(links.into_iter().map(Option::unwrap).collect())
}

fn connect_to_root(
    rank: usize,
    world: usize,
    addr: SocketAddr,
    deadline: Instant,
) -> std::result::Result<TcpStream, String> {
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut stream) => {
                let mut hello = MAGIC.to_vec();
                hello.extend((rank as u32).to_le_bytes());
                hello.extend((world as u32).to_le_bytes());
                stream
                    .write_all(&hello)
                    .map_err(|e| format!("rank 0 at {addr}: {e}"))?;
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(|e| format!("rank 0 at {addr}: {e}"))?;
                let mut answer = [0u8; 8];
                stream.read_exact(&mut answer).map_err(|e| {
                    format!("rank 0 at {addr} refused the handshake (another rank {rank}?): {e}")
                })?;
                if &answer != MAGIC {
                    return Err(format!("{addr} is not a Kiln process group"));
                }
                return Ok(stream);
            }
            Err(e) if Instant::now() > deadline => {
                return Err(format!("could not reach rank 0 at {addr}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

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
    group: &mut ProcessGroup,
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
    group.all_reduce_sum(&mut buffer)?;
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

    fn free_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn three_ranks_sum_in_rank_order() {
        let addr = free_addr();
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                std::thread::spawn(move || {
                    let mut group =
                        ProcessGroup::connect(rank, 3, addr, Duration::from_secs(20)).unwrap();
                    let mut values = vec![rank as f32, 1.0, 0.5 * rank as f32];
                    group.all_reduce_sum(&mut values).unwrap();
                    group.all_reduce_sum(&mut values).unwrap();
                    values
                })
            })
            .collect();
        for handle in handles {
            // First sum: [3, 3, 1.5]; the second sums three copies of it.
            assert_eq!(handle.join().unwrap(), vec![9.0, 9.0, 4.5]);
        }
    }

    #[test]
    fn a_silent_peer_times_out_with_its_rank_named() {
        let addr = free_addr();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let group = ProcessGroup::connect(1, 2, addr, Duration::from_secs(20)).unwrap();
            // Joined, then silent until rank 0 has given up.
            wait.recv().unwrap();
            drop(group);
        });
        let mut group = ProcessGroup::connect(0, 2, addr, Duration::from_secs(20))
            .unwrap()
            .with_step_timeout(Duration::from_millis(200))
            .unwrap();
        let message = group.all_reduce_sum(&mut [1.0]).unwrap_err().to_string();
        assert!(
            message.contains("rank 0 of 2") && message.contains("rank 1:"),
            "{message}"
        );
        done.send(()).unwrap();
        worker.join().unwrap();
    }

    #[test]
    fn mismatched_buffers_and_ranks_are_errors() {
        let addr = free_addr();
        let worker = std::thread::spawn(move || {
            let mut group = ProcessGroup::connect(1, 2, addr, Duration::from_secs(20)).unwrap();
            group.all_reduce_sum(&mut [1.0, 2.0, 3.0])
        });
        let mut group = ProcessGroup::connect(0, 2, addr, Duration::from_secs(20)).unwrap();
        let message = group.all_reduce_sum(&mut [1.0]).unwrap_err().to_string();
        assert!(
            message.contains("rank 1 sent 3 values, rank 0 has 1"),
            "{message}"
        );
        drop(group);
        assert!(worker.join().unwrap().is_err());

        let message = ProcessGroup::connect(2, 2, addr, Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(message.contains("rank must be below"), "{message}");
        let message = ProcessGroup::connect(1, 2, free_addr(), Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(message.contains("could not reach rank 0"), "{message}");
    }
}
