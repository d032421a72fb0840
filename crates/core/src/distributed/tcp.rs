//! The hand-written TCP star all-reduce Kiln used before MPI (kept only until the
//! all-reduce benchmark has measured it next to MPI; see issue 18).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Bytes that open every handshake, so that a stray connection is refused, not misread.
const MAGIC: &[u8; 8] = b"KILNPG01";

/// The processes of one data-parallel run, linked over TCP.
///
/// Rank 0 listens on the group's address; every other rank connects to it. Each training step,
/// [`all_reduce_sum`](Self::all_reduce_sum) leaves every rank with the element-wise sum of all
/// ranks' buffers.
///
#[derive(Debug)]
pub(crate) struct TcpLink {
    rank: usize,
    world: usize,
    /// Rank 0: the links to ranks 1.., in rank order. Other ranks: the link to rank 0.
    links: Vec<TcpStream>,
    bytes: Vec<u8>,
}

impl TcpLink {
    /// Joins the group of `world` processes as `rank`. Rank 0 listens on `addr`; the others
    /// connect to it, retrying until `timeout` (processes need not start in order).
    pub(crate) fn connect(
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
        .with_step_timeout(super::DEFAULT_STEP_TIMEOUT)
    }

    /// How long one [`all_reduce_sum`](Self::all_reduce_sum) may wait for a peer before it
    /// fails naming that peer (default 30 minutes). Rank 0 also waits through the other ranks'
    /// training steps and validation, so keep it above the longest step plus one validation
    /// pass; a peer that dies is noticed at once anyway (the connection closes).
    pub(crate) fn with_step_timeout(self, timeout: Duration) -> Result<Self> {
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

    /// This process's rank (0 is the one that listens, validates and writes checkpoints).
    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub(crate) fn world(&self) -> usize {
        self.world
    }

    /// Replaces `values` on every rank by the element-wise sum over all ranks.
    ///
    /// Rank 0 adds the buffers in rank order, so every run with the same inputs gives the same
    /// bits. Every rank must call this with a buffer of the same length, in the same order.
    pub(crate) fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<()> {
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
