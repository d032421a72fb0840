//! SVD++ (Koren, 2008, "Factorization meets the neighborhood"): biased MF whose user vector is
//! augmented by the items the user rated, `r_ui = mu + b_u + b_i + q_i . (p_u + |N(u)|^-1/2
//! sum_{j in N(u)} y_j)`.
//!
//! Surprise updates every `y_j` of the user after every rating, `O(|N(u)| f)` per rating. Here
//! the ratings are visited user by user: the implicit sum is computed once per user, its
//! gradient accumulated over the user's ratings and applied once, `O(f)` per rating, the usual
//! way to make SVD++ practical; the model is the same.

use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{RecsysError, Result};
use crate::models::svd::{SvdConfig, biased_score, factor_row, normal_init};
use crate::recommender::{Fit, Persist, Recommender};
use crate::trainset::TrainSet;
use kiln_core::data::{SplitMix64, shuffle};

/// Parameters of [`SvdPp`]: the same fields as [`SvdConfig`] (the implicit factors `y` share
/// the factors' learning rate and regularisation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SvdPpConfig {
    /// The shared SGD parameters.
    pub sgd: SvdConfig,
}

impl Default for SvdPpConfig {
    fn default() -> Self {
        Self {
            sgd: SvdConfig {
                factors: 20,
                epochs: 40,
                lr: 0.007,
                reg: 0.1,
                lr_bias: 0.007,
                reg_bias: 0.02,
                lr_decay: 0.95,
                init_std: 0.1,
                seed: 0,
            },
        }
    }
}

impl SvdPpConfig {
    /// Kiln's defaults (tuned on ml-100k 5-fold; see docs/benchmarks.md).
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the SGD parameters.
    pub fn with_sgd(mut self, sgd: SvdConfig) -> Self {
        self.sgd = sgd;
        self
    }
}

/// A fitted [`SvdPpConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SvdPp {
    train: TrainSet,
    factors: usize,
    user_bias: Vec<f32>,
    item_bias: Vec<f32>,
    /// `p_u + |N(u)|^-1/2 sum y_j`, precomputed per user after training.
    user_vectors: Vec<f32>,
    item_factors: Vec<f32>,
}

impl Fit for SvdPpConfig {
    type Model = SvdPp;
    fn check(&self) -> Result<()> {
        self.sgd.check_as("svdpp")
    }

    fn fit(&self, train: &Interactions) -> Result<SvdPp> {
        Fit::check(self)?;
        let c = &self.sgd;
        let set = TrainSet::new(train)?;
        let (nu, ni, f) = (set.num_users(), set.num_items(), c.factors);
        let mut rng = SplitMix64::new(c.seed);
        let mut p = normal_init(nu * f, c.init_std, &mut rng);
        let mut q = normal_init(ni * f, c.init_std, &mut rng);
        let mut y = normal_init(ni * f, c.init_std, &mut rng);
        let mut bu = vec![0f32; nu];
        let mut bi = vec![0f32; ni];
        let mu = set.global_mean();
        let mut users: Vec<u32> = (0..nu as u32).filter(|&u| set.user_known(u)).collect();
        let mut order: Vec<usize> = Vec::new();
        let mut z = vec![0f32; f];
        let mut grad_z = vec![0f32; f];
        let (mut lr, mut lr_b) = (c.lr, c.lr_bias);
        for epoch in 0..c.epochs {
            let seed = c.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9);
            shuffle(&mut users, seed);
            for &u in &users {
                let (items, ratings) = set.user(u);
                let norm = 1.0 / (items.len() as f32).sqrt();
                z.iter_mut().for_each(|v| *v = 0.0);
                for &j in items {
                    let yj = &y[j as usize * f..(j as usize + 1) * f];
                    z.iter_mut().zip(yj).for_each(|(a, b)| *a += b);
                }
                z.iter_mut().for_each(|v| *v *= norm);
                grad_z.iter_mut().for_each(|v| *v = 0.0);
                order.clear();
                order.extend(0..items.len());
                shuffle(&mut order, seed ^ u as u64);
                let u = u as usize;
                for &k in &order {
                    let (i, r) = (items[k] as usize, ratings[k]);
                    let pu = &mut p[u * f..(u + 1) * f];
                    let qi = &mut q[i * f..(i + 1) * f];
                    let mut est = mu + bu[u] + bi[i];
                    for ((a, b), zz) in pu.iter().zip(qi.iter()).zip(&z) {
                        est += (a + zz) * b;
                    }
                    let err = r - est;
                    bu[u] += lr_b * (err - c.reg_bias * bu[u]);
                    bi[i] += lr_b * (err - c.reg_bias * bi[i]);
                    for (((pf, qf), zz), g) in pu
                        .iter_mut()
                        .zip(qi.iter_mut())
                        .zip(&z)
                        .zip(grad_z.iter_mut())
                    {
                        let (a, b) = (*pf, *qf);
                        *g += err * b;
                        *pf += lr * (err * b - c.reg * a);
                        *qf += lr * (err * (a + zz) - c.reg * b);
                    }
                }
                // One step for every y_j of the user with the accumulated gradient; the
                // penalty is applied once per user rather than once per rating.
                for &j in items {
                    let yj = &mut y[j as usize * f..(j as usize + 1) * f];
                    for (v, g) in yj.iter_mut().zip(&grad_z) {
                        *v += lr * (g * norm - c.reg * *v);
                    }
                }
            }
            if !bu.iter().chain(&bi).chain(&y).all(|b| b.is_finite()) {
                return Err(RecsysError::Diverged {
                    model: "svdpp",
                    epoch: epoch + 1,
                });
            }
            lr *= c.lr_decay;
            lr_b *= c.lr_decay;
        }
        // Fold the implicit part into one vector per user for fast scoring.
        for u in 0..nu as u32 {
            let (items, _) = set.user(u);
            if items.is_empty() {
                continue;
            }
            let norm = 1.0 / (items.len() as f32).sqrt();
            let pu = &mut p[u as usize * f..(u as usize + 1) * f];
            for &j in items {
                let yj = &y[j as usize * f..(j as usize + 1) * f];
                pu.iter_mut().zip(yj).for_each(|(a, b)| *a += norm * b);
            }
        }
        Ok(SvdPp {
            train: set,
            factors: f,
            user_bias: bu,
            item_bias: bi,
            user_vectors: p,
            item_factors: q,
        })
    }
}

impl Recommender for SvdPp {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }

    fn score(&self, user: u32, item: u32) -> f32 {
        biased_score(
            &self.train,
            (&self.user_bias, &self.item_bias),
            (&self.user_vectors, &self.item_factors),
            self.factors,
            (user, item),
        )
    }

    fn item_embedding(&self, item: u32) -> Option<Vec<f32>> {
        factor_row(&self.train, &self.item_factors, self.factors, item)
    }
}

impl Persist for SvdPp {
    fn check(&self) -> std::result::Result<(), String> {
        use crate::recommender::check_vec;
        let (u, i, f) = (self.train.num_users(), self.train.num_items(), self.factors);
        check_vec("user biases", &self.user_bias, u)?;
        check_vec("item biases", &self.item_bias, i)?;
        check_vec("user vectors", &self.user_vectors, u * f)?;
        check_vec("item factors", &self.item_factors, i * f)
    }
    const KIND: &'static str = "svdpp";
}
