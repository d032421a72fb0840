//! Bayesian personalised ranking (Rendle et al., 2009, "BPR: Bayesian personalized ranking
//! from implicit feedback"): matrix factorisation with item biases trained by SGD on sampled
//! triples (user, seen item, unseen item) to rank seen items above unseen ones.
//!
//! Fit it on implicit feedback, e.g. `data.implicit(4.0)`: every training record is a positive.

use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{RecsysError, Result};
use crate::models::svd::{dot, normal_init};
use crate::recommender::{DotForm, Fit, Persist, Recommender};
use crate::trainset::TrainSet;
use kiln_core::data::SplitMix64;

/// Parameters of [`Bpr`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BprConfig {
    /// Latent factors.
    pub factors: usize,
    /// Epochs; one epoch draws as many triples as there are positives.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f32,
    /// L2 regularisation of factors and biases.
    pub reg: f32,
    /// Standard deviation of the factors' initialisation.
    pub init_std: f32,
    /// Seed.
    pub seed: u64,
}

impl Default for BprConfig {
    fn default() -> Self {
        Self {
            factors: 64,
            epochs: 60,
            lr: 0.05,
            reg: 0.01,
            init_std: 0.1,
            seed: 0,
        }
    }
}

impl BprConfig {
    /// Kiln's defaults (tuned on ml-100k; see docs/benchmarks.md).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the number of epochs.
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Sets the number of factors.
    pub fn with_factors(mut self, factors: usize) -> Self {
        self.factors = factors;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A fitted [`BprConfig`]: score `b_i + p_u . q_i`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bpr {
    train: TrainSet,
    factors: usize,
    item_bias: Vec<f32>,
    user_factors: Vec<f32>,
    item_factors: Vec<f32>,
}

/// A uniformly drawn item the user has not interacted with (`None` if there is none).
pub(crate) fn sample_negative(train: &TrainSet, user: u32, rng: &mut SplitMix64) -> Option<u32> {
    let n = train.num_items() as u64;
    let seen = train.user(user).0;
    if seen.len() as u64 >= n {
        return None;
    }
    loop {
        let j = rng.below(n) as u32;
        if seen.binary_search(&j).is_err() {
            return Some(j);
        }
    }
}

impl Fit for BprConfig {
    type Model = Bpr;
    fn check(&self) -> Result<()> {
        super::Params::new("bpr")
            .count("factors", self.factors)?
            .positive("lr", self.lr)?
            .non_negative("reg", self.reg)?;
        Ok(())
    }

    fn fit(&self, train: &Interactions) -> Result<Bpr> {
        Fit::check(self)?;
        let set = TrainSet::new(train)?;
        let (nu, ni, f) = (set.num_users(), set.num_items(), self.factors);
        let mut rng = SplitMix64::new(self.seed);
        let mut p = normal_init(nu * f, self.init_std, &mut rng);
        let mut q = normal_init(ni * f, self.init_std, &mut rng);
        let mut b = vec![0f32; ni];
        let positives: Vec<(u32, u32)> = set.ratings().map(|(u, i, _)| (u, i)).collect();
        let mut diff = vec![0f32; f];
        for epoch in 0..self.epochs {
            for _ in 0..positives.len() {
                let (u, i) = positives[rng.below(positives.len() as u64) as usize];
                let Some(j) = sample_negative(&set, u, &mut rng) else {
                    continue;
                };
                let (u, i, j) = (u as usize, i as usize, j as usize);
                for k in 0..f {
                    diff[k] = q[i * f + k] - q[j * f + k];
                }
                let pu = &mut p[u * f..(u + 1) * f];
                let x = b[i] - b[j] + dot(pu, &diff);
                // d/dx log sigmoid(x) = sigmoid(-x)
                let g = 1.0 / (1.0 + x.exp());
                b[i] += self.lr * (g - self.reg * b[i]);
                b[j] += self.lr * (-g - self.reg * b[j]);
                for k in 0..f {
                    let puk = pu[k];
                    pu[k] += self.lr * (g * diff[k] - self.reg * puk);
                    q[i * f + k] += self.lr * (g * puk - self.reg * q[i * f + k]);
                    q[j * f + k] += self.lr * (-g * puk - self.reg * q[j * f + k]);
                }
            }
            if !b.iter().chain(&p).all(|v| v.is_finite()) {
                return Err(RecsysError::Diverged {
                    model: "bpr",
                    epoch: epoch + 1,
                });
            }
        }
        Ok(Bpr {
            train: set,
            factors: f,
            item_bias: b,
            user_factors: p,
            item_factors: q,
        })
    }
}

impl Recommender for Bpr {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }

    fn dot_form(&self) -> Option<DotForm> {
        // [p_u, 1] . [q_i, b_i]; unknown users [0, 1].
        let f = self.factors;
        let d = f + 1;
        let mut users = vec![0f32; self.train.num_users() * d];
        for (u, row) in users.chunks_mut(d).enumerate() {
            if self.train.user_known(u as u32) {
                row[..f].copy_from_slice(&self.user_factors[u * f..(u + 1) * f]);
            }
            row[f] = 1.0;
        }
        let mut items = vec![0f32; self.item_bias.len() * d];
        for (i, row) in items.chunks_mut(d).enumerate() {
            row[..f].copy_from_slice(&self.item_factors[i * f..(i + 1) * f]);
            row[f] = self.item_bias[i];
        }
        Some(DotForm {
            dim: d,
            users,
            items,
        })
    }

    fn score(&self, user: u32, item: u32) -> f32 {
        let f = self.factors;
        let (u, i) = (user as usize, item as usize);
        if i >= self.item_bias.len() {
            return f32::NEG_INFINITY;
        }
        let bias = self.item_bias[i];
        if !self.train.user_known(user) {
            return bias;
        }
        bias + dot(
            &self.user_factors[u * f..(u + 1) * f],
            &self.item_factors[i * f..(i + 1) * f],
        )
    }

    fn item_embedding(&self, item: u32) -> Option<Vec<f32>> {
        let i = item as usize;
        (i < self.item_bias.len())
            .then(|| self.item_factors[i * self.factors..(i + 1) * self.factors].to_vec())
    }
}

impl Persist for Bpr {
    fn check(&self) -> std::result::Result<(), String> {
        use crate::recommender::check_vec;
        let (u, i, f) = (self.train.num_users(), self.train.num_items(), self.factors);
        check_vec("item biases", &self.item_bias, i)?;
        check_vec("user factors", &self.user_factors, u * f)?;
        check_vec("item factors", &self.item_factors, i * f)
    }
    const KIND: &'static str = "bpr";
}
