//! Biased matrix factorisation (Koren, Bell and Volinsky, 2009, "Matrix factorization
//! techniques for recommender systems"; Surprise's `SVD`): `r_ui = mu + b_u + b_i + p_u . q_i`,
//! trained on squared error with L2 regularisation of the factors and biases of each batch.

use burn::module::Initializer;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use kiln_core::{StepOutput, TrainStep};

use crate::batch::RatingBatch;

/// Configuration of [`BiasedMf`].
#[derive(Config, Debug)]
pub struct BiasedMfConfig {
    /// Number of users (dense ids below it).
    pub num_users: usize,
    /// Number of items (dense ids below it).
    pub num_items: usize,
    /// The global mean rating `mu` (the training set's mean).
    pub global_mean: f32,
    /// Latent factors per user and item.
    #[config(default = 32)]
    pub factors: usize,
    /// Standard deviation of the factors' normal initialisation.
    #[config(default = 0.1)]
    pub init_std: f64,
    /// L2 penalty on the factors and biases of each batch.
    #[config(default = 0.02)]
    pub reg: f32,
}

impl BiasedMfConfig {
    /// Builds the model on `device`.
    pub fn init(&self, device: &Device) -> BiasedMf {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: self.init_std,
        };
        let factors = |n| {
            EmbeddingConfig::new(n, self.factors)
                .with_initializer(normal.clone())
                .init(device)
        };
        let bias = |n| {
            EmbeddingConfig::new(n, 1)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        BiasedMf {
            user_factors: factors(self.num_users),
            item_factors: factors(self.num_items),
            user_bias: bias(self.num_users),
            item_bias: bias(self.num_items),
            global_mean: self.global_mean,
            reg: self.reg,
        }
    }
}

/// `r_ui = mu + b_u + b_i + p_u . q_i`.
#[derive(Module, Debug)]
pub struct BiasedMf {
    user_factors: Embedding,
    item_factors: Embedding,
    user_bias: Embedding,
    item_bias: Embedding,
    #[module(skip)]
    global_mean: f32,
    #[module(skip)]
    reg: f32,
}

impl BiasedMf {
    /// Predicted ratings and the batch's L2 penalty.
    ///
    /// # Shapes
    /// - `users`, `items`: `[N]`
    /// - output: `[N]` predictions, `[1]` penalty
    fn forward_with_penalty(
        &self,
        users: Tensor<1, Int>,
        items: Tensor<1, Int>,
    ) -> (Tensor<1>, Tensor<1>) {
        let [n] = users.dims();
        let users = users.reshape([n, 1]);
        let items = items.reshape([n, 1]);
        let p = self
            .user_factors
            .forward(users.clone())
            .reshape([n as i32, -1]);
        let q = self
            .item_factors
            .forward(items.clone())
            .reshape([n as i32, -1]);
        let bu = self.user_bias.forward(users).reshape([n]);
        let bi = self.item_bias.forward(items).reshape([n]);
        let dot = (p.clone() * q.clone()).sum_dim(1).reshape([n]);
        let prediction = dot + bu.clone() + bi.clone() + self.global_mean;
        let penalty = (p.square().sum() + q.square().sum() + bu.square().sum() + bi.square().sum())
            .mul_scalar(self.reg / n as f32);
        (prediction, penalty)
    }

    /// Predicted ratings.
    ///
    /// # Shapes
    /// - `users`, `items`: `[N]`
    /// - output: `[N]`
    pub fn forward(&self, users: Tensor<1, Int>, items: Tensor<1, Int>) -> Tensor<1> {
        self.forward_with_penalty(users, items).0
    }
}

impl TrainStep<RatingBatch> for BiasedMf {
    fn train_step(&self, batch: RatingBatch) -> StepOutput {
        let (prediction, penalty) = self.forward_with_penalty(batch.users, batch.items);
        let loss = kiln_core::loss::mse(prediction.clone(), batch.ratings.clone()) + penalty;
        StepOutput::regression(loss, prediction, batch.ratings)
    }

    fn valid_step(&self, batch: RatingBatch) -> StepOutput {
        let prediction = self.forward(batch.users, batch.items);
        let loss = kiln_core::loss::mse(prediction.clone(), batch.ratings.clone());
        StepOutput::regression(loss, prediction, batch.ratings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_factors_predict_the_global_mean() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let model = BiasedMfConfig::new(3, 4, 3.5)
            .with_init_std(0.0)
            .init(&device);
        let users = Tensor::<1, Int>::from_ints([0, 2], &device);
        let items = Tensor::<1, Int>::from_ints([3, 1], &device);
        let got: Vec<f32> = model
            .forward(users, items)
            .into_data()
            .try_to_vec_as()
            .unwrap();
        assert_eq!(got, vec![3.5, 3.5]);
    }
}
