//! Seeded synthetic implicit feedback with the shape of real interaction logs, so that scale
//! benchmarks run without a download: item popularity follows a power law (Zipf, exponent
//! [`SyntheticConfig::popularity_exponent`]) over a shuffled catalogue, per-user activity is
//! log-normal ([`SyntheticConfig::activity_sigma`]) scaled to the requested total, and every
//! user has at least one distinct item. [`SyntheticConfig::movielens_20m`] has MovieLens 20M's
//! size: 138,000 users, 27,000 items, 20M interactions.
//!
//! Users are generated in parallel, each from its own seeded stream, so the data depends on
//! the seed only (not on the thread count). Light users draw items by inverse-CDF sampling
//! with rejection of repeats; heavy ones (more than an eighth of the catalogue) by weighted
//! sampling without replacement (Efraimidis and Spirakis, 2006), which does not slow down as
//! the popular items run out.

use std::collections::HashSet;
use std::sync::Arc;

use rayon::prelude::*;

use crate::data::{IdMap, Interaction, Interactions};
use crate::error::{RecsysError, Result};
use kiln_core::data::{SplitMix64, shuffle};

/// Parameters of a synthetic data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticConfig {
    /// Users (each gets at least one interaction).
    pub users: usize,
    /// Items in the catalogue (some may get none).
    pub items: usize,
    /// Distinct (user, item) interactions in total.
    pub interactions: usize,
    /// Zipf exponent of item popularity: the item of popularity rank `r` (from 1) is drawn
    /// with weight `r^-exponent`.
    pub popularity_exponent: f64,
    /// Standard deviation of the log of per-user activity.
    pub activity_sigma: f64,
    /// Seed.
    pub seed: u64,
}

impl SyntheticConfig {
    /// MovieLens 20M's size (138,000 users, 27,000 items, 20M interactions), Zipf exponent
    /// 1.0 and log-activity sigma 1.0.
    pub fn movielens_20m() -> Self {
        Self {
            users: 138_000,
            items: 27_000,
            interactions: 20_000_000,
            popularity_exponent: 1.0,
            activity_sigma: 1.0,
            seed: 0,
        }
    }

    /// The same catalogue and per-user activity with `interactions` in total: users scale
    /// with the total (as taking a sample of MovieLens 20M's users would).
    pub fn movielens_like(interactions: usize) -> Self {
        let full = Self::movielens_20m();
        let users = (full.users as f64 * interactions as f64 / full.interactions as f64).round();
        Self {
            users: (users as usize).max(1),
            interactions,
            ..full
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Most items one user may have: half the catalogue.
    fn cap(&self) -> usize {
        (self.items / 2).max(1)
    }

    fn check(&self) -> Result<()> {
        let bad = |name: &'static str, value: String, expected: &'static str| {
            Err(RecsysError::param("synthetic", name, value, expected))
        };
        if self.users == 0 || self.users > u32::MAX as usize {
            return bad("users", self.users.to_string(), "between 1 and 2^32 - 1");
        }
        if self.items == 0 || self.items > u32::MAX as usize {
            return bad("items", self.items.to_string(), "between 1 and 2^32 - 1");
        }
        let most = self.users.saturating_mul(self.cap());
        if self.interactions < self.users || self.interactions > most {
            return Err(RecsysError::Data(format!(
                "synthetic: interactions {} must be between the user count ({}) and users x \
                 half the catalogue ({most})",
                self.interactions, self.users
            )));
        }
        if !(self.popularity_exponent.is_finite() && self.popularity_exponent >= 0.0) {
            return bad(
                "popularity_exponent",
                self.popularity_exponent.to_string(),
                "a finite number >= 0",
            );
        }
        if !(self.activity_sigma.is_finite() && self.activity_sigma >= 0.0) {
            return bad(
                "activity_sigma",
                self.activity_sigma.to_string(),
                "a finite number >= 0",
            );
        }
        Ok(())
    }

    /// Per-user interaction counts: log-normal shares of the total, each in `1..=cap`,
    /// summing to exactly `interactions`.
    fn activity(&self) -> Vec<usize> {
        let mut rng = SplitMix64::new(self.seed ^ 0xAC71_7175);
        let weights: Vec<f64> = (0..self.users)
            .map(|_| (self.activity_sigma * rng.normal()).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let cap = self.cap();
        let mut counts: Vec<usize> = weights
            .iter()
            .map(|w| ((w / total * self.interactions as f64) as usize).clamp(1, cap))
            .collect();
        let mut sum: usize = counts.iter().sum();
        // Hand out (or take back) the difference one interaction at a time, in a seeded order
        // of users, skipping users at their bound.
        let mut order: Vec<usize> = (0..self.users).collect();
        shuffle(&mut order, self.seed ^ 0x0D0E_5EED);
        while sum != self.interactions {
            for &u in &order {
                if sum < self.interactions && counts[u] < cap {
                    counts[u] += 1;
                    sum += 1;
                } else if sum > self.interactions && counts[u] > 1 {
                    counts[u] -= 1;
                    sum -= 1;
                }
                if sum == self.interactions {
                    break;
                }
            }
        }
        counts
    }

    /// Generates the interactions (rating 1, timestamp 0), grouped by user; raw ids are the
    /// dense ids as text.
    ///
    /// # Errors
    /// [`RecsysError::InvalidParam`] naming a size, count or rate out of range;
    /// [`RecsysError::Data`] when the settings cannot give the asked number of interactions.
    pub fn generate(&self) -> Result<Interactions> {
        self.check()?;
        // Item of popularity rank r: a seeded permutation of the catalogue.
        let mut by_rank: Vec<u32> = (0..self.items as u32).collect();
        shuffle(&mut by_rank, self.seed ^ 0x17E3_5EED);
        let weights: Vec<f64> = (0..self.items)
            .map(|r| ((r + 1) as f64).powf(-self.popularity_exponent))
            .collect();
        let mut cdf = Vec::with_capacity(self.items);
        let mut acc = 0.0;
        for w in &weights {
            acc += w;
            cdf.push(acc);
        }
        let counts = self.activity();
        let heavy = (self.items / 8).max(1);
        let per_user: Vec<Vec<u32>> = counts
            .par_iter()
            .enumerate()
            .map(|(u, &n)| {
                let mut rng =
                    SplitMix64::new(self.seed ^ (u as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let ranks = if n > heavy {
                    weighted_without_replacement(&weights, n, &mut rng)
                } else {
                    let mut seen = HashSet::with_capacity(n * 2);
                    let mut out = Vec::with_capacity(n);
                    while out.len() < n {
                        let x = rng.uniform() * acc;
                        let r = cdf.partition_point(|&c| c <= x).min(self.items - 1);
                        if seen.insert(r) {
                            out.push(r);
                        }
                    }
                    out
                };
                let mut items: Vec<u32> = ranks.into_iter().map(|r| by_rank[r]).collect();
                items.sort_unstable();
                items
            })
            .collect();
        let mut records = Vec::with_capacity(self.interactions);
        for (u, items) in per_user.into_iter().enumerate() {
            records.extend(items.into_iter().map(|item| Interaction {
                user: u as u32,
                item,
                rating: 1.0,
                timestamp: 0,
            }));
        }
        let map = |n: usize| {
            let mut m = IdMap::new();
            for i in 0..n {
                m.insert(&i.to_string());
            }
            Arc::new(m)
        };
        Ok(Interactions::new(records, map(self.users), map(self.items)))
    }
}

/// `n` distinct indices of `weights`, drawn with probability proportional to weight without
/// replacement: the `n` largest keys `u^(1/w)` (Efraimidis and Spirakis), compared as
/// `ln(u) / w`.
fn weighted_without_replacement(weights: &[f64], n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut keys: Vec<(f64, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let u = rng.uniform().max(f64::MIN_POSITIVE);
            (
                if w > 0.0 {
                    u.ln() / w
                } else {
                    f64::NEG_INFINITY
                },
                i,
            )
        })
        .collect();
    let n = n.min(keys.len());
    if n < keys.len() {
        keys.select_nth_unstable_by(n, |a, b| b.0.total_cmp(&a.0));
    }
    keys.truncate(n);
    keys.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SyntheticConfig {
        SyntheticConfig {
            users: 2_000,
            items: 800,
            interactions: 60_000,
            popularity_exponent: 1.0,
            activity_sigma: 1.0,
            seed,
        }
    }

    #[test]
    fn shape_statistics_match_the_parameters() {
        let cfg = small(3);
        let data = cfg.generate().unwrap();
        assert_eq!(data.len(), cfg.interactions);
        assert_eq!((data.num_users(), data.num_items()), (cfg.users, cfg.items));
        // Distinct pairs, every user present.
        let pairs: HashSet<(u32, u32)> = data.records.iter().map(|r| (r.user, r.item)).collect();
        assert_eq!(pairs.len(), data.len());
        let mut per_user = vec![0usize; cfg.users];
        let mut per_item = vec![0usize; cfg.items];
        for r in &data.records {
            per_user[r.user as usize] += 1;
            per_item[r.item as usize] += 1;
        }
        assert!(per_user.iter().all(|&n| (1..=cfg.items / 2).contains(&n)));
        // Log-normal activity: the log-counts' spread is near sigma (rounding and the floor of
        // one interaction pull it a little).
        let logs: Vec<f64> = per_user.iter().map(|&n| (n as f64).ln()).collect();
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
        assert!((0.85..1.1).contains(&sd), "sd of log activity {sd}");
        // Power-law popularity: the log-log slope of count against rank over the head
        // (ranks 1-50, before repeats saturate) is near -1, and the top 10% of items hold far
        // more than 10% of the interactions.
        per_item.sort_unstable_by(|a, b| b.cmp(a));
        let head: Vec<(f64, f64)> = (0..50)
            .map(|r| (((r + 1) as f64).ln(), (per_item[r] as f64).ln()))
            .collect();
        let (mx, my) = (
            head.iter().map(|p| p.0).sum::<f64>() / 50.0,
            head.iter().map(|p| p.1).sum::<f64>() / 50.0,
        );
        let slope = head.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / head.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        assert!((-1.0..-0.3).contains(&slope), "log-log slope {slope}");
        let top: usize = per_item[..cfg.items / 10].iter().sum();
        assert!(
            top as f64 > 0.3 * cfg.interactions as f64,
            "top decile {top}"
        );
    }

    #[test]
    fn the_seed_alone_decides_the_data() {
        let a = small(5).generate().unwrap();
        let b = small(5).generate().unwrap();
        let c = small(6).generate().unwrap();
        assert_eq!(a.records, b.records);
        assert_ne!(a.records, c.records);
        // Same data on one thread.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let d = pool.install(|| small(5).generate().unwrap());
        assert_eq!(a.records, d.records);
    }

    #[test]
    fn heavy_users_draw_distinct_popular_items() {
        let mut rng = SplitMix64::new(1);
        let weights: Vec<f64> = (0..100).map(|r| 1.0 / (r + 1) as f64).collect();
        let picks = weighted_without_replacement(&weights, 60, &mut rng);
        let set: HashSet<usize> = picks.iter().copied().collect();
        assert_eq!(set.len(), 60);
        // The head is almost surely in: rank 1 has 100x the weight of rank 100.
        assert!(set.contains(&0) && set.contains(&1));
        assert_eq!(
            weighted_without_replacement(&weights, 200, &mut rng).len(),
            100
        );
    }

    #[test]
    fn impossible_shapes_are_refused() {
        let e = |c: SyntheticConfig| c.generate().unwrap_err().to_string();
        let base = small(0);
        assert!(e(SyntheticConfig { users: 0, ..base }).contains("users"));
        let err = e(SyntheticConfig {
            interactions: 10,
            ..base
        });
        assert!(
            err.contains("interactions") && err.contains("2000"),
            "{err}"
        );
        let err = e(SyntheticConfig {
            interactions: 2_000 * 401,
            ..base
        });
        assert!(err.contains("800000"), "{err}");
        assert!(
            e(SyntheticConfig {
                popularity_exponent: f64::NAN,
                ..base
            })
            .contains("popularity_exponent")
        );
        let c = SyntheticConfig::movielens_like(1_000_000);
        assert_eq!((c.users, c.items), (6_900, 27_000));
    }
}
