//! Biased matrix factorisation trained by SGD (Funk, 2006; Koren, Bell and Volinsky, 2009,
//! "Matrix factorization techniques for recommender systems"), called `SVD` in Surprise:
//! `r_ui = mu + b_u + b_i + q_i . p_u`, minimising the squared error plus
//! `reg (b_u^2 + b_i^2 + |p_u|^2 + |q_i|^2)` one rating at a time.
//!
//! Plain Rust on the CPU: at ml-100k size one epoch is ~100k small dot products, far below what
//! a tensor framework's per-step overhead allows. The Burn module
//! [`BiasedMf`](crate::models::BiasedMf) is the same model for the trainer and GPUs.
//! Differences from Surprise: the ratings are reshuffled every epoch (seeded) and the learning
//! rate can decay geometrically, which together reach a lower RMSE in the same epochs.

use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{RecsysError, Result};
pub(crate) use crate::models::vecmath::dot;
use crate::recommender::{Fit, Persist, Recommender};
use crate::trainset::TrainSet;
use kiln_core::data::{SplitMix64, shuffle};

/// Parameters of [`Svd`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SvdConfig {
    /// Latent factors.
    pub factors: usize,
    /// Passes over the ratings.
    pub epochs: usize,
    /// Learning rate of the factors.
    pub lr: f32,
    /// L2 regularisation of the factors.
    pub reg: f32,
    /// Learning rate of the biases.
    pub lr_bias: f32,
    /// L2 regularisation of the biases.
    pub reg_bias: f32,
    /// Each epoch's learning rates are the previous ones times this.
    pub lr_decay: f32,
    /// Standard deviation of the normal initialisation of the factors.
    pub init_std: f32,
    /// Seed of the initialisation and the shuffles.
    pub seed: u64,
}

impl Default for SvdConfig {
    fn default() -> Self {
        Self {
            factors: 50,
            epochs: 20,
            lr: 0.025,
            reg: 0.1,
            lr_bias: 0.025,
            reg_bias: 0.02,
            lr_decay: 0.95,
            init_std: 0.1,
            seed: 0,
        }
    }
}

impl SvdConfig {
    /// Kiln's defaults (tuned on ml-100k 5-fold; see docs/benchmarks.md).
    pub fn new() -> Self {
        Self::default()
    }

    /// Surprise's `SVD()` defaults: 100 factors, 20 epochs, lr 0.005, reg 0.02, no decay.
    pub fn surprise() -> Self {
        Self {
            factors: 100,
            epochs: 20,
            lr: 0.005,
            reg: 0.02,
            lr_bias: 0.005,
            reg_bias: 0.02,
            lr_decay: 1.0,
            init_std: 0.1,
            seed: 0,
        }
    }

    /// Sets the number of factors.
    pub fn with_factors(mut self, factors: usize) -> Self {
        self.factors = factors;
        self
    }

    /// Sets the number of epochs.
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Sets both learning rates.
    pub fn with_lr(mut self, lr: f32) -> Self {
        self.lr = lr;
        self.lr_bias = lr;
        self
    }

    /// Sets the factor regularisation.
    pub fn with_reg(mut self, reg: f32) -> Self {
        self.reg = reg;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub(crate) fn check_as(&self, model: &'static str) -> Result<()> {
        super::Params::new(model)
            .count("factors", self.factors)?
            .positive("lr", self.lr)?
            .positive("lr_bias", self.lr_bias)?
            .non_negative("reg", self.reg)?
            .non_negative("reg_bias", self.reg_bias)?
            .positive("lr_decay", self.lr_decay)?
            .non_negative("init_std", self.init_std)?;
        Ok(())
    }
}

/// A fitted [`SvdConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Svd {
    train: TrainSet,
    factors: usize,
    user_bias: Vec<f32>,
    item_bias: Vec<f32>,
    /// `num_users x factors`, row-major.
    user_factors: Vec<f32>,
    /// `num_items x factors`, row-major.
    item_factors: Vec<f32>,
}

pub(crate) fn normal_init(n: usize, std: f32, rng: &mut SplitMix64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() as f32) * std).collect()
}

impl Fit for SvdConfig {
    type Model = Svd;
    fn check(&self) -> Result<()> {
        self.check_as("svd")
    }

    fn fit(&self, train: &Interactions) -> Result<Svd> {
        Fit::check(self)?;
        let set = TrainSet::new(train)?;
        let f = self.factors;
        let mut rng = SplitMix64::new(self.seed);
        let mut p = normal_init(set.num_users() * f, self.init_std, &mut rng);
        let mut q = normal_init(set.num_items() * f, self.init_std, &mut rng);
        let mut bu = vec![0f32; set.num_users()];
        let mut bi = vec![0f32; set.num_items()];
        let mu = set.global_mean();
        let mut ratings: Vec<(u32, u32, f32)> = set.ratings().collect();
        let (mut lr, mut lr_b) = (self.lr, self.lr_bias);
        for epoch in 0..self.epochs {
            shuffle(
                &mut ratings,
                self.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9),
            );
            for &(u, i, r) in &ratings {
                let (u, i) = (u as usize, i as usize);
                let pu = &mut p[u * f..(u + 1) * f];
                let qi = &mut q[i * f..(i + 1) * f];
                let err = r - (mu + bu[u] + bi[i] + dot(pu, qi));
                bu[u] += lr_b * (err - self.reg_bias * bu[u]);
                bi[i] += lr_b * (err - self.reg_bias * bi[i]);
                for (pf, qf) in pu.iter_mut().zip(qi.iter_mut()) {
                    let (a, b) = (*pf, *qf);
                    *pf += lr * (err * b - self.reg * a);
                    *qf += lr * (err * a - self.reg * b);
                }
            }
            if !bu.iter().chain(&bi).all(|b| b.is_finite()) || !p.iter().all(|x| x.is_finite()) {
                return Err(RecsysError::Diverged {
                    model: "svd",
                    epoch: epoch + 1,
                });
            }
            lr *= self.lr_decay;
            lr_b *= self.lr_decay;
        }
        Ok(Svd {
            train: set,
            factors: f,
            user_bias: bu,
            item_bias: bi,
            user_factors: p,
            item_factors: q,
        })
    }
}

impl Recommender for Svd {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }

    fn score(&self, user: u32, item: u32) -> f32 {
        biased_score(
            &self.train,
            (&self.user_bias, &self.item_bias),
            (&self.user_factors, &self.item_factors),
            self.factors,
            (user, item),
        )
    }

    fn item_embedding(&self, item: u32) -> Option<Vec<f32>> {
        factor_row(&self.train, &self.item_factors, self.factors, item)
    }
}

/// `mu + b_u + b_i + p_u . q_i`, with the terms of unknown users or items left out (the
/// prediction rule of Surprise's SVD and SVD++).
pub(crate) fn biased_score(
    train: &TrainSet,
    (user_bias, item_bias): (&[f32], &[f32]),
    (users, items): (&[f32], &[f32]),
    f: usize,
    (user, item): (u32, u32),
) -> f32 {
    let mut est = train.global_mean();
    let ku = train.user_known(user);
    let ki = train.item_known(item);
    let (u, i) = (user as usize, item as usize);
    if ku {
        est += user_bias[u];
    }
    if ki {
        est += item_bias[i];
    }
    if ku && ki {
        est += dot(&users[u * f..(u + 1) * f], &items[i * f..(i + 1) * f]);
    }
    est
}

/// Row `item` of a factor matrix, for items with training ratings.
pub(crate) fn factor_row(train: &TrainSet, items: &[f32], f: usize, item: u32) -> Option<Vec<f32>> {
    let i = item as usize;
    train
        .item_known(item)
        .then(|| items[i * f..(i + 1) * f].to_vec())
}

impl Persist for Svd {
    fn check(&self) -> std::result::Result<(), String> {
        use crate::recommender::check_vec;
        let (u, i, f) = (self.train.num_users(), self.train.num_items(), self.factors);
        check_vec("user biases", &self.user_bias, u)?;
        check_vec("item biases", &self.item_bias, i)?;
        check_vec("user factors", &self.user_factors, u * f)?;
        check_vec("item factors", &self.item_factors, i * f)
    }
    const KIND: &'static str = "svd";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ratings from a rank-2 model plus biases: a good MF must fit them far better than the mean.
    pub(crate) fn low_rank(n_users: u32, n_items: u32, seed: u64) -> Interactions {
        let mut rng = SplitMix64::new(seed);
        let pu: Vec<[f32; 2]> = (0..n_users)
            .map(|_| [rng.normal() as f32, rng.normal() as f32])
            .collect();
        let qi: Vec<[f32; 2]> = (0..n_items)
            .map(|_| [rng.normal() as f32, rng.normal() as f32])
            .collect();
        let mut t = Vec::new();
        for u in 0..n_users {
            for i in 0..n_items {
                if rng.uniform() < 0.5 {
                    let s = 3.0
                        + 0.8
                            * (pu[u as usize][0] * qi[i as usize][0]
                                + pu[u as usize][1] * qi[i as usize][1]);
                    t.push((u, i, s.clamp(1.0, 5.0)));
                }
            }
        }
        Interactions::from_triples(&t)
    }

    #[test]
    fn fits_a_low_rank_matrix_and_round_trips() {
        let data = low_rank(40, 30, 1);
        let fold = crate::data::random_split(&data, 0.2, 2).unwrap();
        let m = SvdConfig {
            lr_decay: 1.0,
            ..SvdConfig::new()
                .with_factors(4)
                .with_epochs(300)
                .with_lr(0.03)
                .with_reg(0.05)
        }
        .fit(&fold.train)
        .unwrap();
        let mean = crate::models::GlobalMeanConfig.fit(&fold.train).unwrap();
        let rmse = |m: &dyn Recommender| crate::eval::rating_scores(m, &fold.test).rmse;
        let (a, b) = (rmse(&m), rmse(&mean));
        assert!(a < 0.7 * b, "svd {a} vs mean {b}");
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path().join("svd.json")).unwrap();
        let back = Svd::load(dir.path().join("svd.json")).unwrap();
        assert_eq!(back.predict(3, 4), m.predict(3, 4));
        let e = crate::models::Baseline::load(dir.path().join("svd.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds a svd model"), "{e}");
    }

    #[test]
    fn divergence_is_an_error_and_params_are_checked() {
        let data = low_rank(10, 10, 3);
        let e = SvdConfig::new().with_lr(50.0).fit(&data).unwrap_err();
        assert!(matches!(e, RecsysError::Diverged { .. }), "{e}");
        assert!(SvdConfig::new().with_factors(0).fit(&data).is_err());
        // Each bad parameter is named, with its value and the range it must be in.
        let e = SvdConfig::new().with_lr(f32::NAN).fit(&data).unwrap_err();
        assert!(
            matches!(
                &e,
                RecsysError::InvalidParam {
                    context: "svd",
                    param: "lr",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "svd: lr = NaN, expected a finite number above 0"
        );
        let e = SvdConfig::new().with_reg(-1.0).fit(&data).unwrap_err();
        assert!(
            matches!(e, RecsysError::InvalidParam { param: "reg", .. }),
            "{e}"
        );
    }
}
