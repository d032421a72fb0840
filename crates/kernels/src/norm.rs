//! Group normalisation with its affine map and an optional SiLU in one pass over the values,
//! and its backward pass in two: the loops behind `kiln_core::ops::group_norm` on flex.
//!
//! Burn's `GroupNorm` followed by `silu` is eleven tensor operations, each a pass over the
//! activations with its own buffer (and, under autodiff, its own saved copy); in a diffusion
//! U-Net on 2 cores they were a quarter of the forward pass. Here a group of one image (its
//! `C / G` channels, contiguous in `[N, C, H, W]`) is read twice forward (mean, then the
//! centred variance) and written once, and the backward pass recomputes the normalised
//! values and the SiLU from the input instead of keeping them.
//!
//! Statistics follow Burn's: the mean, then the mean of the squared deviations (biased), and
//! `(x - mean) / sqrt(var + eps)`.

use rayon::prelude::*;

use crate::cpu::with_simd;
use crate::math::sigmoid;

/// Sizes of one group normalisation: `n` images of `c` channels of `hw` values, in `groups`
/// groups of `c / groups` channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupShape {
    n: usize,
    c: usize,
    hw: usize,
    groups: usize,
}

impl GroupShape {
    /// `None` for empty inputs or `groups` that do not divide `c`.
    pub fn new(n: usize, c: usize, hw: usize, groups: usize) -> Option<Self> {
        let fits = n > 0 && c > 0 && hw > 0 && groups > 0 && c.is_multiple_of(groups);
        fits.then_some(GroupShape { n, c, hw, groups })
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }

    /// Whether there are no values (never, for a shape from [`new`](Self::new)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values in one group of one image.
    fn block(&self) -> usize {
        self.c / self.groups * self.hw
    }

    /// Channels in one group.
    fn per_group(&self) -> usize {
        self.c / self.groups
    }

    /// (image, group) pairs.
    fn blocks(&self) -> usize {
        self.n * self.groups
    }
}

/// How many blocks one rayon task takes: about 32 K values, at least one block.
fn blocks_per_task(s: &GroupShape) -> usize {
    (32 * 1024 / s.block()).max(1)
}

/// The per-(image, group) statistics of the forward pass, kept for the backward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    /// `[N * G]` means.
    pub mean: Vec<f32>,
    /// `[N * G]` reciprocal standard deviations `1 / sqrt(var + eps)`.
    pub rstd: Vec<f32>,
}

/// Sum of `v` in eight lanes (so that the loop vectorises), then the lanes.
#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    lanes.iter().sum::<f32>() + tail
}

/// Sum of `(v - m)^2` in eight lanes.
#[inline(always)]
fn centred_squares(v: &[f32], m: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            let d = x - m;
            *l += d * d;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|x| (x - m) * (x - m)).sum();
    lanes.iter().sum::<f32>() + tail
}

/// One block forward: returns its (mean, rstd) and writes `y`.
#[inline(always)]
fn forward_block(
    x: &[f32],
    y: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    hw: usize,
    eps: f32,
    silu: bool,
) -> (f32, f32) {
    let len = x.len() as f32;
    let mean = sum(x) / len;
    let var = centred_squares(x, mean) / len;
    let rstd = 1.0 / (var + eps).sqrt();
    for (((xc, yc), &g), &b) in x
        .chunks_exact(hw)
        .zip(y.chunks_exact_mut(hw))
        .zip(gamma)
        .zip(beta)
    {
        // (v - mean) a + b, not v a + (b - mean a): the latter cancels when the mean is
        // large against the spread.
        let a = g * rstd;
        if silu {
            for (o, &v) in yc.iter_mut().zip(xc) {
                let z = (v - mean) * a + b;
                *o = z * sigmoid(z);
            }
        } else {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = (v - mean) * a + b;
            }
        }
    }
    (mean, rstd)
}

/// `y = act(gamma_c (x - mean_g) / sqrt(var_g + eps) + beta_c)` over `x [N, C, HW]`, with
/// `act` the SiLU or the identity, on every core; returns `y` and the statistics.
///
/// # Panics
/// When the slices' lengths do not match `shape` (`x`: `N C HW`, `gamma` and `beta`: `C`).
pub fn group_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    shape: GroupShape,
    eps: f32,
    silu: bool,
) -> (Vec<f32>, GroupStats) {
    assert_eq!(x.len(), shape.len(), "group norm: input length");
    assert_eq!(gamma.len(), shape.c, "group norm: gamma length");
    assert_eq!(beta.len(), shape.c, "group norm: beta length");
    let (block, per_group, hw) = (shape.block(), shape.per_group(), shape.hw);
    let mut y = vec![0f32; x.len()];
    let mut mean = vec![0f32; shape.blocks()];
    let mut rstd = vec![0f32; shape.blocks()];
    let per = blocks_per_task(&shape);
    y.par_chunks_mut(per * block)
        .zip(x.par_chunks(per * block))
        .zip(mean.par_chunks_mut(per).zip(rstd.par_chunks_mut(per)))
        .enumerate()
        .for_each(|(task, ((y, x), (mean, rstd)))| {
            with_simd(|| {
                for (i, ((yb, xb), (m, r))) in y
                    .chunks_exact_mut(block)
                    .zip(x.chunks_exact(block))
                    .zip(mean.iter_mut().zip(rstd.iter_mut()))
                    .enumerate()
                {
                    let g = (task * per + i) % shape.groups;
                    let channels = g * per_group..(g + 1) * per_group;
                    let (mb, rb) = forward_block(
                        xb,
                        yb,
                        &gamma[channels.clone()],
                        &beta[channels],
                        hw,
                        eps,
                        silu,
                    );
                    *m = mb;
                    *r = rb;
                }
            })
        });
    (y, GroupStats { mean, rstd })
}

/// The gradients of [`group_norm_forward`]: `dx [N, C, HW]`, `dgamma [C]`, `dbeta [C]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupNormGrads {
    /// Gradient of the input.
    pub dx: Vec<f32>,
    /// Gradient of the scale.
    pub dgamma: Vec<f32>,
    /// Gradient of the shift.
    pub dbeta: Vec<f32>,
}

/// One block backward: writes `dx` and adds this image's per-channel sums to `dgamma` and
/// `dbeta` (the group's channels only).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_block(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    (mean, rstd): (f32, f32),
    hw: usize,
    silu: bool,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    // Pass 1: dz (through the SiLU), the affine map's sums, and dxhat = dz gamma in dx.
    let (mut s1, mut s2) = (0f32, 0f32);
    for (c, ((xc, dyc), dxc)) in x
        .chunks_exact(hw)
        .zip(dy.chunks_exact(hw))
        .zip(dx.chunks_exact_mut(hw))
        .enumerate()
    {
        let a = gamma[c] * rstd;
        let shift = beta[c];
        let (mut dg, mut db) = ([0f32; 8], [0f32; 8]);
        let (mut l1, mut l2) = ([0f32; 8], [0f32; 8]);
        let lanes = hw / 8 * 8;
        let step = |v: f32, d: f32| -> (f32, f32) {
            let dz = if silu {
                let z = (v - mean) * a + shift;
                let s = sigmoid(z);
                d * s * (1.0 + z * (1.0 - s))
            } else {
                d
            };
            let xhat = (v - mean) * rstd;
            (dz, xhat)
        };
        for i in 0..lanes / 8 {
            for k in 0..8 {
                let j = i * 8 + k;
                let (dz, xhat) = step(xc[j], dyc[j]);
                dg[k] += dz * xhat;
                db[k] += dz;
                let dxhat = dz * gamma[c];
                dxc[j] = dxhat;
                l1[k] += dxhat;
                l2[k] += dxhat * xhat;
            }
        }
        let (mut tg, mut tb, mut t1, mut t2) = (0f32, 0f32, 0f32, 0f32);
        for j in lanes..hw {
            let (dz, xhat) = step(xc[j], dyc[j]);
            tg += dz * xhat;
            tb += dz;
            let dxhat = dz * gamma[c];
            dxc[j] = dxhat;
            t1 += dxhat;
            t2 += dxhat * xhat;
        }
        dgamma[c] += dg.iter().sum::<f32>() + tg;
        dbeta[c] += db.iter().sum::<f32>() + tb;
        s1 += l1.iter().sum::<f32>() + t1;
        s2 += l2.iter().sum::<f32>() + t2;
    }
    // Pass 2: dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)).
    let len = x.len() as f32;
    let (m1, m2) = (s1 / len, s2 / len);
    for (d, &v) in dx.iter_mut().zip(x) {
        let xhat = (v - mean) * rstd;
        *d = rstd * (*d - m1 - xhat * m2);
    }
}

/// The backward pass of [`group_norm_forward`] for the output gradient `dy`, from the input
/// and the statistics the forward pass returned, on every core.
///
/// # Panics
/// When the slices' lengths do not match `shape`.
pub fn group_norm_backward(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &GroupStats,
    shape: GroupShape,
    silu: bool,
) -> GroupNormGrads {
    assert_eq!(x.len(), shape.len(), "group norm backward: input length");
    assert_eq!(
        dy.len(),
        shape.len(),
        "group norm backward: gradient length"
    );
    assert_eq!(gamma.len(), shape.c, "group norm backward: gamma length");
    assert_eq!(beta.len(), shape.c, "group norm backward: beta length");
    assert_eq!(
        stats.mean.len(),
        shape.blocks(),
        "group norm backward: statistics"
    );
    assert_eq!(
        stats.rstd.len(),
        shape.blocks(),
        "group norm backward: statistics"
    );
    let (block, per_group, hw, c) = (shape.block(), shape.per_group(), shape.hw, shape.c);
    let mut dx = vec![0f32; x.len()];
    // Tasks of whole images, so that each keeps its own per-channel sums.
    let image = c * hw;
    let per_images = (32 * 1024 / image).max(1);
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per_images * image)
        .zip(x.par_chunks(per_images * image))
        .zip(dy.par_chunks(per_images * image))
        .enumerate()
        .map(|(task, ((dx, x), dy))| {
            let mut dgamma = vec![0f32; c];
            let mut dbeta = vec![0f32; c];
            with_simd(|| {
                for (i, ((dxb, xb), dyb)) in dx
                    .chunks_exact_mut(block)
                    .zip(x.chunks_exact(block))
                    .zip(dy.chunks_exact(block))
                    .enumerate()
                {
                    let b = task * per_images * shape.groups + i;
                    let g = b % shape.groups;
                    let channels = g * per_group..(g + 1) * per_group;
                    backward_block(
                        xb,
                        dyb,
                        dxb,
                        &gamma[channels.clone()],
                        &beta[channels.clone()],
                        (stats.mean[b], stats.rstd[b]),
                        hw,
                        silu,
                        &mut dgamma[channels.clone()],
                        &mut dbeta[channels],
                    );
                }
            });
            (dgamma, dbeta)
        })
        .collect();
    let mut dgamma = vec![0f32; c];
    let mut dbeta = vec![0f32; c];
    for (g, b) in partial {
        for (a, v) in dgamma.iter_mut().zip(g) {
            *a += v;
        }
        for (a, v) in dbeta.iter_mut().zip(b) {
            *a += v;
        }
    }
    GroupNormGrads { dx, dgamma, dbeta }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward pass in f64, by the definition.
    fn reference(x: &[f32], gamma: &[f32], beta: &[f32], s: GroupShape, silu: bool) -> Vec<f64> {
        let mut y = vec![0f64; x.len()];
        let block = s.block();
        for b in 0..s.blocks() {
            let xb = &x[b * block..(b + 1) * block];
            let mean = xb.iter().map(|&v| f64::from(v)).sum::<f64>() / block as f64;
            let var = xb
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / block as f64;
            let g = b % s.groups;
            for (j, &v) in xb.iter().enumerate() {
                let ch = g * s.per_group() + j / s.hw;
                let z = f64::from(gamma[ch]) * (f64::from(v) - mean) / (var + 1e-5).sqrt()
                    + f64::from(beta[ch]);
                y[b * block + j] = if silu { z / (1.0 + (-z).exp()) } else { z };
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        // A small deterministic generator (no rand dependency here).
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 20_000) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    /// The scalar loss `sum(y * probe)` in f64, for finite differences.
    fn loss(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        probe: &[f32],
        s: GroupShape,
        silu: bool,
    ) -> f64 {
        reference(x, gamma, beta, s, silu)
            .iter()
            .zip(probe)
            .map(|(y, &p)| y * f64::from(p))
            .sum()
    }

    #[test]
    fn forward_matches_the_definition_with_and_without_silu() {
        for (n, c, hw, groups) in [(2, 4, 9, 2), (3, 6, 17, 3), (1, 8, 1, 8), (2, 2, 33, 1)] {
            let s = GroupShape::new(n, c, hw, groups).unwrap();
            let x: Vec<f32> = values(s.len(), 1).iter().map(|v| v * 3.0 + 0.5).collect();
            let gamma = values(c, 2);
            let beta = values(c, 3);
            for silu in [false, true] {
                let (y, stats) = group_norm_forward(&x, &gamma, &beta, s, 1e-5, silu);
                assert_eq!(stats.mean.len(), n * groups);
                for (a, b) in y.iter().zip(reference(&x, &gamma, &beta, s, silu)) {
                    assert!(
                        (f64::from(*a) - b).abs() < 1e-5 * (1.0 + b.abs()),
                        "{n}x{c}x{hw}/{groups} silu {silu}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// Moves one of (x, gamma, beta) by a step.
    type Bump<'a> = dyn Fn(&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>, f32) + 'a;

    #[test]
    fn backward_matches_finite_differences() {
        for (n, c, hw, groups) in [(2, 4, 9, 2), (1, 6, 11, 3), (3, 2, 1, 2)] {
            let s = GroupShape::new(n, c, hw, groups).unwrap();
            let x = values(s.len(), 4);
            let gamma: Vec<f32> = values(c, 5).iter().map(|v| v + 1.0).collect();
            let beta = values(c, 6);
            let probe = values(s.len(), 7);
            for silu in [false, true] {
                let (_, stats) = group_norm_forward(&x, &gamma, &beta, s, 1e-5, silu);
                let g = group_norm_backward(&x, &probe, &gamma, &beta, &stats, s, silu);
                let h = 1e-3f32;
                let numeric = |bump: &Bump<'_>| {
                    let (mut xp, mut gp, mut bp) = (x.clone(), gamma.clone(), beta.clone());
                    bump(&mut xp, &mut gp, &mut bp, h);
                    let up = loss(&xp, &gp, &bp, &probe, s, silu);
                    let (mut xm, mut gm, mut bm) = (x.clone(), gamma.clone(), beta.clone());
                    bump(&mut xm, &mut gm, &mut bm, -h);
                    let down = loss(&xm, &gm, &bm, &probe, s, silu);
                    (up - down) / (2.0 * f64::from(h))
                };
                let close = |a: f32, b: f64, what: &str| {
                    assert!(
                        (f64::from(a) - b).abs() < 2e-3 * (1.0 + b.abs()),
                        "{what} (silu {silu}, {n}x{c}x{hw}/{groups}): {a} vs {b}"
                    );
                };
                for i in (0..s.len()).step_by(5) {
                    let d = numeric(&|x, _, _, e| x[i] += e);
                    close(g.dx[i], d, "dx");
                }
                for ch in 0..c {
                    close(g.dgamma[ch], numeric(&|_, gm, _, e| gm[ch] += e), "dgamma");
                    close(g.dbeta[ch], numeric(&|_, _, bm, e| bm[ch] += e), "dbeta");
                }
            }
        }
    }

    #[test]
    fn shapes_that_do_not_split_into_groups_are_refused() {
        assert!(GroupShape::new(1, 6, 4, 4).is_none());
        assert!(GroupShape::new(0, 4, 4, 2).is_none());
        assert!(GroupShape::new(1, 4, 0, 2).is_none());
        assert!(GroupShape::new(1, 4, 4, 0).is_none());
        assert_eq!(GroupShape::new(2, 4, 3, 2).map(|s| s.len()), Some(24));
    }
}
