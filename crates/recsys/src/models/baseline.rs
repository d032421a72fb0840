//! Baselines: the global mean, user and item biases `r_ui = mu + b_u + b_i` (Surprise's
//! `BaselineOnly`, fitted by alternating least squares or SGD as in Koren, 2010, "Factor in the
//! neighbors", section 2.1), and item popularity for ranking.

use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{RecsysError, Result};
use crate::recommender::{Fit, Persist, Recommender};
use crate::trainset::TrainSet;

/// Predicts the training mean for everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalMeanConfig;

/// A fitted [`GlobalMeanConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GlobalMean {
    train: TrainSet,
}

impl Fit for GlobalMeanConfig {
    type Model = GlobalMean;
    fn fit(&self, train: &Interactions) -> Result<GlobalMean> {
        Ok(GlobalMean {
            train: TrainSet::new(train)?,
        })
    }
}

impl Recommender for GlobalMean {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }
    fn score(&self, _user: u32, _item: u32) -> f32 {
        self.train.global_mean()
    }
}

impl Persist for GlobalMean {
    fn check(&self) -> std::result::Result<(), String> {
        Ok(())
    }
    const KIND: &'static str = "global-mean";
}

/// How the biases are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum BaselineMethod {
    /// Alternating least squares: items then users, `epochs` rounds, with shrinkage
    /// `reg_item` and `reg_user` (Surprise's default: 10 epochs, 10 and 15).
    Als {
        /// Rounds.
        epochs: usize,
        /// Item-bias shrinkage.
        reg_item: f32,
        /// User-bias shrinkage.
        reg_user: f32,
    },
    /// Stochastic gradient descent on the regularised squared error (Surprise: 20 epochs,
    /// rate 0.005, reg 0.02).
    Sgd {
        /// Passes over the ratings.
        epochs: usize,
        /// Learning rate.
        lr: f32,
        /// L2 regularisation.
        reg: f32,
    },
}

impl Default for BaselineMethod {
    fn default() -> Self {
        BaselineMethod::Als {
            epochs: 10,
            reg_item: 10.0,
            reg_user: 15.0,
        }
    }
}

/// User and item biases around the global mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Biases {
    /// Global mean `mu`.
    pub mean: f32,
    /// `b_u` by user.
    pub user: Vec<f32>,
    /// `b_i` by item.
    pub item: Vec<f32>,
}

impl Biases {
    /// Whether there is one finite bias per user and item of `train`, and a finite mean.
    ///
    /// # Errors
    /// The reason, naming the vector that does not fit.
    pub fn check(&self, train: &TrainSet) -> std::result::Result<(), String> {
        use crate::recommender::check_vec;
        check_vec("user biases", &self.user, train.num_users())?;
        check_vec("item biases", &self.item, train.num_items())?;
        check_vec("mean", &[self.mean], 1)
    }

    /// Fits the biases on `train`.
    ///
    /// # Errors
    /// [`RecsysError::InvalidParam`] for a negative regularisation or a non-positive learning rate.
    pub fn fit(train: &TrainSet, method: BaselineMethod) -> Result<Self> {
        let mu = train.global_mean();
        let mut bu = vec![0f32; train.num_users()];
        let mut bi = vec![0f32; train.num_items()];
        match method {
            BaselineMethod::Als {
                epochs,
                reg_item,
                reg_user,
            } => {
                method.check()?;
                for _ in 0..epochs {
                    for (i, b) in bi.iter_mut().enumerate() {
                        let (users, ratings) = train.item(i as u32);
                        let dev: f32 = users
                            .iter()
                            .zip(ratings)
                            .map(|(&u, &r)| r - mu - bu[u as usize])
                            .sum();
                        *b = dev / (reg_item + users.len() as f32);
                    }
                    for (u, b) in bu.iter_mut().enumerate() {
                        let (items, ratings) = train.user(u as u32);
                        let dev: f32 = items
                            .iter()
                            .zip(ratings)
                            .map(|(&i, &r)| r - mu - bi[i as usize])
                            .sum();
                        *b = dev / (reg_user + items.len() as f32);
                    }
                }
            }
            BaselineMethod::Sgd { epochs, lr, reg } => {
                method.check()?;
                for _ in 0..epochs {
                    for (u, i, r) in train.ratings() {
                        let (u, i) = (u as usize, i as usize);
                        let err = r - (mu + bu[u] + bi[i]);
                        bu[u] += lr * (err - reg * bu[u]);
                        bi[i] += lr * (err - reg * bi[i]);
                    }
                }
            }
        }
        if bu.iter().chain(&bi).any(|b| !b.is_finite()) {
            return Err(RecsysError::Diverged {
                model: "baseline",
                epoch: 0,
            });
        }
        Ok(Self {
            mean: mu,
            user: bu,
            item: bi,
        })
    }

    /// `mu + b_u + b_i`, with 0 for ids past the end.
    #[inline]
    pub fn get(&self, user: u32, item: u32) -> f32 {
        self.mean
            + self.user.get(user as usize).copied().unwrap_or(0.0)
            + self.item.get(item as usize).copied().unwrap_or(0.0)
    }
}

/// `r_ui = mu + b_u + b_i` (Surprise's `BaselineOnly`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BaselineConfig {
    /// How the biases are fitted.
    pub method: BaselineMethod,
}

impl BaselineConfig {
    /// ALS with Surprise's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the fitting method.
    pub fn with_method(mut self, method: BaselineMethod) -> Self {
        self.method = method;
        self
    }
}

/// A fitted [`BaselineConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    train: TrainSet,
    /// The fitted biases.
    pub biases: Biases,
}

impl BaselineMethod {
    /// Its regularisation and learning rate, checked.
    fn check(self) -> Result<()> {
        match self {
            BaselineMethod::Als {
                reg_item, reg_user, ..
            } => {
                super::Params::new("baseline (ALS)")
                    .non_negative("reg_item", reg_item)?
                    .non_negative("reg_user", reg_user)?;
            }
            BaselineMethod::Sgd { lr, reg, .. } => {
                super::Params::new("baseline (SGD)")
                    .positive("lr", lr)?
                    .non_negative("reg", reg)?;
            }
        }
        Ok(())
    }
}

impl Fit for BaselineConfig {
    type Model = Baseline;
    fn check(&self) -> Result<()> {
        self.method.check()
    }

    fn fit(&self, train: &Interactions) -> Result<Baseline> {
        let train = TrainSet::new(train)?;
        let biases = Biases::fit(&train, self.method)?;
        Ok(Baseline { train, biases })
    }
}

impl Recommender for Baseline {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }
    fn score(&self, user: u32, item: u32) -> f32 {
        self.biases.get(user, item)
    }
}

impl Persist for Baseline {
    fn check(&self) -> std::result::Result<(), String> {
        self.biases.check(&self.train)
    }
    const KIND: &'static str = "baseline";
}

/// Ranks items by how many training interactions they have (rated at least `threshold`).
#[derive(Debug, Clone, Copy)]
pub struct PopularityConfig {
    /// Ratings below it do not count.
    pub threshold: f32,
}

impl Default for PopularityConfig {
    fn default() -> Self {
        Self {
            threshold: f32::NEG_INFINITY,
        }
    }
}

/// A fitted [`PopularityConfig`]: the score of an item is its interaction count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Popularity {
    train: TrainSet,
    counts: Vec<f32>,
}

impl Fit for PopularityConfig {
    type Model = Popularity;
    fn fit(&self, train: &Interactions) -> Result<Popularity> {
        let set = TrainSet::new(train)?;
        let counts = (0..set.num_items() as u32)
            .map(|i| {
                set.item(i)
                    .1
                    .iter()
                    .filter(|&&r| r >= self.threshold)
                    .count() as f32
            })
            .collect();
        Ok(Popularity { train: set, counts })
    }
}

impl Recommender for Popularity {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }
    fn score(&self, _user: u32, item: u32) -> f32 {
        self.counts.get(item as usize).copied().unwrap_or(0.0)
    }
}

impl Persist for Popularity {
    fn check(&self) -> std::result::Result<(), String> {
        crate::recommender::check_vec("item counts", &self.counts, self.train.num_items())
    }
    const KIND: &'static str = "popularity";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn als_biases_hand_computed() {
        // mu = 3; one ALS round with no shrinkage: b_i = mean deviation of the item's ratings,
        // then b_u = mean of (r - mu - b_i) over the user's items.
        let data =
            Interactions::from_triples(&[(0, 0, 4.0), (1, 0, 2.0), (0, 1, 5.0), (1, 1, 1.0)]);
        let m = BaselineConfig::new()
            .with_method(BaselineMethod::Als {
                epochs: 1,
                reg_item: 0.0,
                reg_user: 0.0,
            })
            .fit(&data)
            .unwrap();
        assert_eq!(m.biases.item, vec![0.0, 0.0]);
        assert_eq!(m.biases.user, vec![1.5, -1.5]);
        assert_eq!(m.predict(0, 1), 4.5);
        // Unknown ids fall back to the mean.
        assert_eq!(m.score(9, 9), 3.0);
    }

    #[test]
    fn popularity_recommends_the_most_rated_unseen() {
        let data = Interactions::from_triples(&[
            (0, 0, 5.0),
            (1, 0, 5.0),
            (2, 0, 5.0),
            (1, 1, 4.0),
            (2, 1, 4.0),
            (2, 2, 1.0),
        ]);
        let m = PopularityConfig::default().fit(&data).unwrap();
        let recs: Vec<u32> = m.recommend(0, 2).iter().map(|s| s.item).collect();
        assert_eq!(recs, vec![1, 2]);
        let m = PopularityConfig { threshold: 4.0 }.fit(&data).unwrap();
        assert_eq!(m.score(0, 2), 0.0);
    }
}
