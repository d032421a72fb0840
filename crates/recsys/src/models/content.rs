//! Content-based filtering, the seed's linear model `y_ui = sum_j x_ij w_uj`: each user has a
//! weight per item feature (genre, decade, ...), learned from the user's ratings, on top of
//! global feature weights, the global mean and a user bias:
//! `r_ui = mu + b + b_u + x_i . (w + w_u)`, with L2 on the per-user terms.
//!
//! No item identity enters the model, so it scores an item by its description alone, rated or
//! not. The weights are a Burn module trained by the `kiln-core` trainer (any optimizer,
//! schedule and backend); the fitted model keeps them as plain vectors for fast scoring.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Initializer;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::{ProgressMode, StopRules};
use kiln_core::{Data, StepOutput, TrainStep, Trainer, TrainerConfig};
use serde::{Deserialize, Serialize};

use crate::batch::Rating;
use crate::data::{FeatureMatrix, Interactions};
use crate::error::{RecsysError, Result};
use crate::models::host;
use crate::recommender::{Fit, Persist, Recommender};
use crate::trainset::TrainSet;

/// Parameters of [`Content`].
#[derive(Debug, Clone)]
pub struct ContentConfig {
    /// Item features, rows by dense item id.
    pub item_features: Arc<FeatureMatrix>,
    /// L2 penalty on the per-user weights and biases.
    pub reg: f32,
    /// Optimizer, schedule, epochs, batch size, seed, progress (default: Adam 0.01, 10 epochs,
    /// batch 256, quiet).
    pub trainer: TrainerConfig,
    /// The device to train on.
    pub device: Device,
}

impl ContentConfig {
    /// Defaults over `item_features`, trained on `device`.
    pub fn new(item_features: Arc<FeatureMatrix>, device: &Device) -> Self {
        Self {
            item_features,
            reg: 0.05,
            trainer: TrainerConfig::new(OptimizerConfig::adam(), LrSchedule::constant(0.01))
                .with_batch_size(256)
                .with_stop(StopRules::epochs(10))
                .with_progress(ProgressMode::Quiet),
            device: device.clone(),
        }
    }

    /// Sets the trainer configuration.
    pub fn with_trainer(mut self, trainer: TrainerConfig) -> Self {
        self.trainer = trainer;
        self
    }

    /// Sets the per-user L2 penalty.
    pub fn with_reg(mut self, reg: f32) -> Self {
        self.reg = reg;
        self
    }
}

/// A batch of ratings with the rated items' features.
#[derive(Debug, Clone)]
pub struct ContentBatch {
    users: Tensor<1, Int>,
    features: Tensor<2>,
    ratings: Tensor<1>,
}

#[derive(Debug, Clone)]
struct ContentBatcher {
    features: Arc<FeatureMatrix>,
}

impl Batcher<Rating, ContentBatch> for ContentBatcher {
    fn batch(&self, items: Vec<Rating>, device: &Device) -> ContentBatch {
        let f = self.features.num_features();
        let mut dense = vec![0f32; items.len() * f];
        for (row, r) in dense.chunks_mut(f.max(1)).zip(&items) {
            for &(j, v) in self.features.row(r.item) {
                row[j as usize] += v;
            }
        }
        let users: Vec<i64> = items.iter().map(|r| r.user as i64).collect();
        let ratings: Vec<f32> = items.iter().map(|r| r.rating).collect();
        ContentBatch {
            users: Tensor::from_ints(users.as_slice(), device),
            features: Tensor::<1>::from_floats(dense.as_slice(), device).reshape([items.len(), f]),
            ratings: Tensor::from_floats(ratings.as_slice(), device),
        }
    }
}

/// The trainable weights.
#[derive(Module, Debug)]
pub struct ContentNet {
    user_weights: Embedding,
    user_bias: Embedding,
    global: Linear,
    #[module(skip)]
    mean: f32,
    #[module(skip)]
    reg: f32,
}

impl ContentNet {
    /// Predictions and the batch's penalty.
    ///
    /// # Shapes
    /// - `users`: `[N]`, `features`: `[N, F]`
    /// - output: `[N]`, `[1]`
    fn forward(&self, users: Tensor<1, Int>, features: Tensor<2>) -> (Tensor<1>, Tensor<1>) {
        let [n, f] = features.dims();
        let users = users.reshape([n, 1]);
        let wu = self.user_weights.forward(users.clone()).reshape([n, f]);
        let bu = self.user_bias.forward(users).reshape([n]);
        let personal = (wu.clone() * features.clone()).sum_dim(1).reshape([n]);
        let global = self.global.forward(features).reshape([n]);
        let prediction = personal + global + bu.clone() + self.mean;
        let penalty = (wu.square().sum() + bu.square().sum()).mul_scalar(self.reg / n as f32);
        (prediction, penalty)
    }
}

impl TrainStep<ContentBatch> for ContentNet {
    fn train_step(&self, batch: ContentBatch) -> StepOutput {
        let (prediction, penalty) = self.forward(batch.users, batch.features);
        let loss = kiln_core::loss::mse(prediction.clone(), batch.ratings.clone()) + penalty;
        StepOutput::regression(loss, prediction, batch.ratings)
    }
}

/// A fitted [`ContentConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Content {
    train: TrainSet,
    item_features: Arc<FeatureMatrix>,
    num_features: usize,
    /// `num_users x F`.
    user_weights: Vec<f32>,
    user_bias: Vec<f32>,
    global_weights: Vec<f32>,
    /// `mu + b`.
    offset: f32,
}

impl Fit for ContentConfig {
    type Model = Content;
    fn fit(&self, train: &Interactions) -> Result<Content> {
        let set = TrainSet::new(train)?;
        let f = self.item_features.num_features();
        if f == 0 || self.item_features.num_rows() < set.num_items() {
            return Err(RecsysError::Data(format!(
                "content: {} feature rows with {f} features for {} items",
                self.item_features.num_rows(),
                set.num_items()
            )));
        }
        let zeros = Initializer::Zeros;
        let net = ContentNet {
            user_weights: EmbeddingConfig::new(set.num_users(), f)
                .with_initializer(zeros.clone())
                .init(&self.device),
            user_bias: EmbeddingConfig::new(set.num_users(), 1)
                .with_initializer(zeros.clone())
                .init(&self.device),
            global: LinearConfig::new(f, 1)
                .with_initializer(zeros)
                .init(&self.device),
            mean: set.global_mean(),
            reg: self.reg,
        };
        let items: Vec<Rating> = train
            .records
            .iter()
            .map(|r| Rating {
                user: r.user,
                item: r.item,
                rating: r.rating,
            })
            .collect();
        let data = Data::new(
            InMemDataset::new(items),
            ContentBatcher {
                features: self.item_features.clone(),
            },
        );
        let fitted = Trainer::new(self.trainer.clone(), &self.device).fit(net, &data, None)?;
        let net = fitted.model;
        let bias = net
            .global
            .bias
            .as_ref()
            .map(|b| b.val().into_data().try_to_vec::<f32>().unwrap_or_default()[0])
            .unwrap_or(0.0);
        Ok(Content {
            item_features: self.item_features.clone(),
            num_features: f,
            user_weights: host(net.user_weights.weight.val()),
            user_bias: host(net.user_bias.weight.val()),
            global_weights: host(net.global.weight.val()),
            offset: set.global_mean() + bias,
            train: set,
        })
    }
}

impl Content {
    /// The score of an item described only by its features, for `user`.
    pub fn score_features(&self, user: u32, features: &[(u32, f32)]) -> f32 {
        let f = self.num_features;
        let u = user as usize;
        let known = self.train.user_known(user);
        let mut est = self.offset + if known { self.user_bias[u] } else { 0.0 };
        for &(j, v) in features {
            let j = j as usize;
            if j < f {
                let personal = if known {
                    self.user_weights[u * f + j]
                } else {
                    0.0
                };
                est += v * (self.global_weights[j] + personal);
            }
        }
        est
    }

    /// User `user`'s learned weight per feature (global plus personal).
    pub fn user_profile(&self, user: u32) -> Vec<f32> {
        let f = self.num_features;
        let u = user as usize;
        (0..f)
            .map(|j| {
                self.global_weights[j]
                    + if self.train.user_known(user) {
                        self.user_weights[u * f + j]
                    } else {
                        0.0
                    }
            })
            .collect()
    }
}

impl Recommender for Content {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }

    fn score(&self, user: u32, item: u32) -> f32 {
        self.score_features(user, self.item_features.row(item))
    }

    /// The item's feature vector: similar items are items with similar descriptions.
    fn item_embedding(&self, item: u32) -> Option<Vec<f32>> {
        ((item as usize) < self.item_features.num_rows())
            .then(|| self.item_features.dense_row(item))
    }
}

impl Persist for Content {
    fn check(&self) -> std::result::Result<(), String> {
        use crate::recommender::check_vec;
        let (u, f) = (self.train.num_users(), self.num_features);
        if self.item_features.num_features() != f
            || self.item_features.num_rows() < self.train.num_items()
        {
            return Err(format!(
                "item features of {} rows and {} features for {} items and {f} features",
                self.item_features.num_rows(),
                self.item_features.num_features(),
                self.train.num_items()
            ));
        }
        check_vec("user weights", &self.user_weights, u * f)?;
        check_vec("user biases", &self.user_bias, u)?;
        check_vec("global weights", &self.global_weights, f)?;
        check_vec("offset", &[self.offset], 1)
    }
    const KIND: &'static str = "content";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_each_users_genre_taste_and_scores_unrated_items() {
        // Items 0..6 are genre A (feature 0), 6..12 genre B (feature 1). Even users love A and
        // hate B, odd users the reverse; each rates only items 0..4 and 6..10.
        let features = FeatureMatrix::new(
            vec!["A".into(), "B".into()],
            (0..12).map(|i| vec![(u32::from(i >= 6), 1.0)]).collect(),
        )
        .unwrap();
        let mut t = Vec::new();
        for u in 0..8u32 {
            for i in (0..4).chain(6..10) {
                let likes = (i < 6) == (u % 2 == 0);
                t.push((u, i, if likes { 5.0 } else { 1.0 }));
            }
        }
        let mut data = Interactions::from_triples(&t);
        // Items 10 and 11 exist in the id map but have no ratings.
        data.items = std::sync::Arc::new(
            (0..12)
                .map(|i: u32| i.to_string())
                .collect::<Vec<_>>()
                .into(),
        );
        let device = kiln_core::backend::device("cpu").unwrap();
        let mut cfg = ContentConfig::new(Arc::new(features), &device).with_reg(0.0);
        cfg.trainer = cfg
            .trainer
            .with_batch_size(8)
            .with_stop(StopRules::epochs(60));
        let m = cfg.fit(&data).unwrap();
        // Unrated items 5 (A) and 11 (B): user 0 prefers A, user 1 prefers B.
        assert!(
            m.predict(0, 5) > 4.0 && m.predict(0, 11) < 2.0,
            "{} {}",
            m.predict(0, 5),
            m.predict(0, 11)
        );
        assert!(m.predict(1, 11) > 4.0 && m.predict(1, 5) < 2.0);
        let recs: Vec<u32> = m.recommend(0, 2).iter().map(|s| s.item).collect();
        assert_eq!(recs, vec![4, 5]);
        let profile = m.user_profile(1);
        assert!(profile[1] > profile[0]);
    }
}
