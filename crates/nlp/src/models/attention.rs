//! Attention over a sequence of encoder states, `a_t = Attention(h_t)` in the seed's words:
//! additive (Bahdanau et al., 2015: `v^T tanh(W_q q + W_k k)`) and multiplicative (Luong et
//! al., 2015, "general": `q^T W k`). Padding positions get no weight; the weights are returned
//! with the context so that they can be inspected and drawn.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

/// The score function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttentionKind {
    /// Bahdanau: `score(q, k) = v^T tanh(W_q q + W_k k)`.
    Additive,
    /// Luong "general": `score(q, k) = q^T W k`.
    Multiplicative,
}

/// Configuration of [`Attention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Width of the query (the decoder state).
    pub d_query: usize,
    /// Width of the keys (the encoder states, which are also the values).
    pub d_key: usize,
    /// The score function.
    #[config(default = "AttentionKind::Additive")]
    pub kind: AttentionKind,
    /// Width of the additive score's hidden layer (`d_query` when not set).
    pub d_attention: Option<usize>,
}

impl AttentionConfig {
    /// Builds the module on `device`.
    pub fn init(&self, device: &Device) -> Attention {
        match self.kind {
            AttentionKind::Additive => {
                let d = self.d_attention.unwrap_or(self.d_query);
                Attention {
                    query: LinearConfig::new(self.d_query, d)
                        .with_bias(false)
                        .init(device),
                    key: Some(LinearConfig::new(self.d_key, d).init(device)),
                    score: Some(LinearConfig::new(d, 1).with_bias(false).init(device)),
                }
            }
            AttentionKind::Multiplicative => Attention {
                query: LinearConfig::new(self.d_query, self.d_key)
                    .with_bias(false)
                    .init(device),
                key: None,
                score: None,
            },
        }
    }
}

/// Additive or multiplicative attention (which one is fixed by the config).
#[derive(Module, Debug)]
pub struct Attention {
    /// `W_q` (additive) or `W` (multiplicative, applied to the query).
    pub query: Linear,
    /// `W_k` (additive only).
    pub key: Option<Linear>,
    /// `v` (additive only).
    pub score: Option<Linear>,
}

/// The keys of one batch, prepared once and attended to at every decoder step.
#[derive(Debug, Clone)]
pub struct AttentionMemory {
    /// `[N, T, K]` encoder states (keys and values).
    pub values: Tensor<3>,
    /// `[N, T, A]` `W_k k` for additive attention; the values for multiplicative.
    pub keys: Tensor<3>,
    /// `[N, T]` true on real positions.
    pub mask: Tensor<2, Bool>,
}

impl AttentionMemory {
    /// Repeats every row `times` times (row `i` becomes rows `i*times .. (i+1)*times`), for
    /// beam search.
    pub fn repeat_rows(&self, times: usize) -> Self {
        let rep3 = |x: &Tensor<3>| {
            let [n, t, d] = x.dims();
            x.clone()
                .reshape([n, 1, t, d])
                .expand([n, times, t, d])
                .reshape([n * times, t, d])
        };
        let [n, t] = self.mask.dims();
        Self {
            values: rep3(&self.values),
            keys: rep3(&self.keys),
            mask: self
                .mask
                .clone()
                .reshape([n, 1, t])
                .expand([n, times, t])
                .reshape([n * times, t]),
        }
    }
}

impl Attention {
    /// Prepares the encoder states for attention.
    ///
    /// # Shapes
    /// - `values`: `[N, T, K]`, `mask`: `[N, T]`
    pub fn memory(&self, values: Tensor<3>, mask: Tensor<2, Bool>) -> AttentionMemory {
        let keys = match &self.key {
            Some(key) => kiln_core::ops::linear(key, values.clone()),
            None => values.clone(),
        };
        AttentionMemory { values, keys, mask }
    }

    /// Attends with `query` over `memory`: the context vector and the weights.
    ///
    /// # Shapes
    /// - `query`: `[N, Q]`
    /// - output: context `[N, K]`, weights `[N, T]` (each row sums to 1 over real positions,
    ///   0 on padding)
    pub fn forward(&self, query: Tensor<2>, memory: &AttentionMemory) -> (Tensor<2>, Tensor<2>) {
        let [n, t, k] = memory.values.dims();
        let q = self.query.forward(query);
        let scores = match &self.score {
            Some(v) => {
                let a = q.dims()[1];
                let hidden = (memory.keys.clone() + q.reshape([n, 1, a])).tanh();
                kiln_core::ops::linear(v, hidden).reshape([n, t])
            }
            None => memory
                .keys
                .clone()
                .matmul(q.reshape([n, k, 1]))
                .reshape([n, t]),
        };
        let scores = scores.mask_fill(memory.mask.clone().bool_not(), -1.0e9);
        let weights = softmax(scores, 1);
        let context = weights
            .clone()
            .reshape([n, 1, t])
            .matmul(memory.values.clone())
            .reshape([n, k]);
        (context, weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    /// Weights set by hand; scores, weights and context computed by hand.
    #[test]
    fn matches_hand_computed_scores() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let values = Tensor::<3>::from_floats([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], &device);
        let mask = Tensor::<2, Bool>::from_bool(TensorData::from([[true, true, false]]), &device);
        let query = Tensor::<2>::from_floats([[1.0, 2.0]], &device);

        // Multiplicative with W = I: scores (1, 2), padding excluded.
        let mut att = AttentionConfig::new(2, 2)
            .with_kind(AttentionKind::Multiplicative)
            .init(&device);
        att.query.weight = burn::module::Param::from_tensor(Tensor::eye(2, &device));
        let (context, weights) =
            att.forward(query.clone(), &att.memory(values.clone(), mask.clone()));
        let (e1, e2) = (1f32.exp(), 2f32.exp());
        let (w1, w2) = (e1 / (e1 + e2), e2 / (e1 + e2));
        let tol = Tolerance::absolute(1e-6);
        weights
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::from([[w1, w2, 0.0]]), tol);
        context
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::from([[w1, w2]]), tol);

        // Additive with W_q = W_k = I, no key bias, v = (1, 1): score = sum tanh(q + k).
        let mut att = AttentionConfig::new(2, 2).init(&device);
        att.query.weight = burn::module::Param::from_tensor(Tensor::eye(2, &device));
        let key = att.key.as_mut().unwrap();
        key.weight = burn::module::Param::from_tensor(Tensor::eye(2, &device));
        key.bias = Some(burn::module::Param::from_tensor(Tensor::zeros(
            [2],
            &device,
        )));
        att.score.as_mut().unwrap().weight =
            burn::module::Param::from_tensor(Tensor::ones([2, 1], &device));
        let (_, weights) = att.forward(query, &att.memory(values, mask));
        let s1 = 2f32.tanh() + 2f32.tanh();
        let s2 = 1f32.tanh() + 3f32.tanh();
        let (e1, e2) = (s1.exp(), s2.exp());
        weights.into_data().assert_approx_eq::<f32>(
            &TensorData::from([[e1 / (e1 + e2), e2 / (e1 + e2), 0.0]]),
            tol,
        );
    }
}
