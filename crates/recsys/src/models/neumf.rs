//! Neural matrix factorisation (He et al., 2017, "Neural collaborative filtering"): a
//! generalised MF branch (element-wise product of user and item embeddings) and an MLP branch
//! over concatenated user and item embeddings, joined by a linear layer into one logit.
//!
//! Trained on implicit feedback with the `kiln-core` trainer: each batch of positives gets
//! `negatives` random items per positive, drawn from the device RNG (which the trainer reseeds
//! every epoch, so runs are reproducible and resumable), and binary cross-entropy. As in the
//! paper's reference code, a drawn negative is not checked against the user's positives
//! (at ml-100k density about 3% of them are). The fitted model keeps its weights as plain
//! vectors and scores on the host.

use burn::data::dataset::InMemDataset;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::{ProgressMode, StopRules};
use kiln_core::{Data, StepOutput, TrainStep, Trainer, TrainerConfig};
use serde::{Deserialize, Serialize};

use crate::batch::{Rating, RatingBatch, RatingBatcher};
use crate::data::Interactions;
use crate::error::Result;
use crate::models::host;
use crate::models::svd::dot;
use crate::recommender::{Fit, Persist, Recommender};
use crate::trainset::TrainSet;

/// Architecture of [`NeuMfNet`].
#[derive(Config, Debug)]
pub struct NeuMfNetConfig {
    /// Number of users.
    pub num_users: usize,
    /// Number of items.
    pub num_items: usize,
    /// GMF embedding size.
    #[config(default = 16)]
    pub gmf_dim: usize,
    /// MLP embedding size (per side; the MLP's input is twice this).
    #[config(default = 32)]
    pub mlp_dim: usize,
    /// Hidden layer widths of the MLP branch.
    #[config(default = "vec![32, 16]")]
    pub hidden: Vec<usize>,
    /// Random negatives per positive.
    #[config(default = 4)]
    pub negatives: usize,
}

impl NeuMfNetConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> NeuMfNet {
        let emb = |n, d| {
            EmbeddingConfig::new(n, d)
                .with_initializer(burn::module::Initializer::Normal {
                    mean: 0.0,
                    std: 0.01,
                })
                .init(device)
        };
        let mut width = 2 * self.mlp_dim;
        let mut layers = Vec::new();
        for &h in &self.hidden {
            layers.push(LinearConfig::new(width, h).init(device));
            width = h;
        }
        NeuMfNet {
            gmf_user: emb(self.num_users, self.gmf_dim),
            gmf_item: emb(self.num_items, self.gmf_dim),
            mlp_user: emb(self.num_users, self.mlp_dim),
            mlp_item: emb(self.num_items, self.mlp_dim),
            layers,
            output: LinearConfig::new(self.gmf_dim + width, 1).init(device),
            num_items: self.num_items,
            negatives: self.negatives,
        }
    }
}

/// The NeuMF network.
#[derive(Module, Debug)]
pub struct NeuMfNet {
    gmf_user: Embedding,
    gmf_item: Embedding,
    mlp_user: Embedding,
    mlp_item: Embedding,
    layers: Vec<Linear>,
    output: Linear,
    #[module(skip)]
    num_items: usize,
    #[module(skip)]
    negatives: usize,
}

impl NeuMfNet {
    /// Logits of `(user, item)` pairs.
    ///
    /// # Shapes
    /// - `users`, `items`: `[N]`
    /// - output: `[N]`
    pub fn forward(&self, users: Tensor<1, Int>, items: Tensor<1, Int>) -> Tensor<1> {
        let [n] = users.dims();
        let (users, items) = (users.reshape([n, 1]), items.reshape([n, 1]));
        let flat = |t: Tensor<3>| t.reshape([n as i32, -1]);
        let gmf =
            flat(self.gmf_user.forward(users.clone())) * flat(self.gmf_item.forward(items.clone()));
        let mut h = Tensor::cat(
            vec![
                flat(self.mlp_user.forward(users)),
                flat(self.mlp_item.forward(items)),
            ],
            1,
        );
        for layer in &self.layers {
            h = burn::tensor::activation::relu(layer.forward(h));
        }
        self.output
            .forward(Tensor::cat(vec![gmf, h], 1))
            .reshape([n])
    }
}

impl TrainStep<RatingBatch> for NeuMfNet {
    fn train_step(&self, batch: RatingBatch) -> StepOutput {
        let device = batch.users.device();
        let [n] = batch.users.dims();
        let k = self.negatives;
        let negatives: Tensor<1, Int> = Tensor::<1>::random(
            [n * k],
            Distribution::Uniform(0.0, self.num_items as f64),
            &device,
        )
        .int()
        .clamp(0, self.num_items as i64 - 1);
        let users = Tensor::cat(vec![batch.users.clone(), batch.users.repeat_dim(0, k)], 0);
        let items = Tensor::cat(vec![batch.items, negatives], 0);
        let labels = Tensor::cat(
            vec![
                Tensor::<1, Int>::ones([n], &device),
                Tensor::<1, Int>::zeros([n * k], &device),
            ],
            0,
        );
        let logits = self.forward(users, items);
        StepOutput::loss_only(kiln_core::loss::bce_with_logits(logits, labels), n)
    }
}

/// Parameters of [`NeuMf`].
#[derive(Debug, Clone)]
pub struct NeuMfConfig {
    /// Embedding sizes, hidden widths and negatives (`num_users` / `num_items` are set from
    /// the data).
    pub gmf_dim: usize,
    /// MLP embedding size.
    pub mlp_dim: usize,
    /// MLP hidden widths.
    pub hidden: Vec<usize>,
    /// Negatives per positive.
    pub negatives: usize,
    /// Optimizer, schedule, epochs, batch size, seed, progress (default: Adam 1e-3, 20 epochs,
    /// batch 256, quiet).
    pub trainer: TrainerConfig,
    /// The device to train on.
    pub device: Device,
}

impl NeuMfConfig {
    /// Defaults, trained on `device`.
    pub fn new(device: &Device) -> Self {
        Self {
            gmf_dim: 16,
            mlp_dim: 32,
            hidden: vec![32, 16],
            negatives: 4,
            trainer: TrainerConfig::new(OptimizerConfig::adam(), LrSchedule::constant(1e-3))
                .with_batch_size(256)
                .with_stop(StopRules::epochs(20))
                .with_progress(ProgressMode::Quiet),
            device: device.clone(),
        }
    }

    /// Sets the trainer configuration.
    pub fn with_trainer(mut self, trainer: TrainerConfig) -> Self {
        self.trainer = trainer;
        self
    }
}

/// A dense layer on the host: `[in x out]` row-major weights and `out` biases.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HostLinear {
    inputs: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl HostLinear {
    fn from(l: &Linear) -> Self {
        let [inputs, _] = l.weight.val().dims();
        Self {
            inputs,
            weight: l
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap_or_default(),
            bias: l
                .bias
                .as_ref()
                .map(|b| b.val().into_data().try_to_vec::<f32>().unwrap_or_default())
                .unwrap_or_default(),
        }
    }

    fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `x W[rows] (+ b)`, using only weight rows `rows` (a slice of the input).
    fn apply(&self, x: &[f32], row0: usize, bias: bool, out: &mut [f32]) {
        let o = self.outputs();
        if bias {
            out.copy_from_slice(&self.bias);
        } else {
            out.iter_mut().for_each(|v| *v = 0.0);
        }
        for (r, &xv) in x.iter().enumerate() {
            let w = &self.weight[(row0 + r) * o..(row0 + r + 1) * o];
            out.iter_mut().zip(w).for_each(|(a, b)| *a += xv * b);
        }
    }
}

/// A fitted [`NeuMfConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NeuMf {
    train: TrainSet,
    gmf_dim: usize,
    mlp_dim: usize,
    gmf_user: Vec<f32>,
    gmf_item: Vec<f32>,
    mlp_user: Vec<f32>,
    /// The item half of the first MLP layer, precomputed per item.
    item_first: Vec<f32>,
    layers: Vec<HostLinear>,
    output: HostLinear,
}

impl Fit for NeuMfConfig {
    type Model = NeuMf;
    fn check(&self) -> Result<()> {
        super::Params::new("neumf")
            .count("gmf_dim", self.gmf_dim)?
            .count("mlp_dim", self.mlp_dim)?
            .count("negatives", self.negatives)?
            .count("hidden layers", self.hidden.len())?;
        Ok(())
    }

    fn fit(&self, train: &Interactions) -> Result<NeuMf> {
        Fit::check(self)?;
        let set = TrainSet::new(train)?;
        // The initial weights come from the device RNG: seed it so that a fit is reproducible.
        self.device.seed(self.trainer.seed);
        let net = NeuMfNetConfig::new(set.num_users(), set.num_items())
            .with_gmf_dim(self.gmf_dim)
            .with_mlp_dim(self.mlp_dim)
            .with_hidden(self.hidden.clone())
            .with_negatives(self.negatives)
            .init(&self.device);
        let items: Vec<Rating> = train
            .records
            .iter()
            .map(|r| Rating {
                user: r.user,
                item: r.item,
                rating: 1.0,
            })
            .collect();
        let data = Data::new(InMemDataset::new(items), RatingBatcher);
        let net = Trainer::new(self.trainer.clone(), &self.device)
            .fit(net, &data, None)?
            .model;
        let layers: Vec<HostLinear> = net.layers.iter().map(HostLinear::from).collect();
        let mlp_item = host(net.mlp_item.weight.val());
        let m = self.mlp_dim;
        let h1 = layers[0].outputs();
        let mut item_first = vec![0f32; set.num_items() * h1];
        for (i, out) in item_first.chunks_mut(h1).enumerate() {
            layers[0].apply(&mlp_item[i * m..(i + 1) * m], m, false, out);
        }
        Ok(NeuMf {
            gmf_dim: self.gmf_dim,
            mlp_dim: m,
            gmf_user: host(net.gmf_user.weight.val()),
            gmf_item: host(net.gmf_item.weight.val()),
            mlp_user: host(net.mlp_user.weight.val()),
            item_first,
            output: HostLinear::from(&net.output),
            layers,
            train: set,
        })
    }
}

impl NeuMf {
    fn user_first(&self, user: u32) -> Vec<f32> {
        let m = self.mlp_dim;
        let u = user as usize;
        let mut out = vec![0f32; self.layers[0].outputs()];
        self.layers[0].apply(&self.mlp_user[u * m..(u + 1) * m], 0, true, &mut out);
        out
    }

    fn logit(&self, user: u32, item: u32, user_first: &[f32]) -> f32 {
        let (g, h1) = (self.gmf_dim, self.layers[0].outputs());
        let (u, i) = (user as usize, item as usize);
        let mut h: Vec<f32> = user_first
            .iter()
            .zip(&self.item_first[i * h1..(i + 1) * h1])
            .map(|(a, b)| (a + b).max(0.0))
            .collect();
        for layer in &self.layers[1..] {
            let mut next = vec![0f32; layer.outputs()];
            layer.apply(&h, 0, true, &mut next);
            next.iter_mut().for_each(|v| *v = v.max(0.0));
            h = next;
        }
        let gu = &self.gmf_user[u * g..(u + 1) * g];
        let gi = &self.gmf_item[i * g..(i + 1) * g];
        let w = &self.output.weight;
        let gmf: f32 = gu.iter().zip(gi).zip(w).map(|((a, b), c)| a * b * c).sum();
        gmf + dot(&h, &w[g..]) + self.output.bias[0]
    }
}

impl Recommender for NeuMf {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }

    fn score(&self, user: u32, item: u32) -> f32 {
        if user as usize >= self.train.num_users() || item as usize >= self.train.num_items() {
            return f32::NEG_INFINITY;
        }
        self.logit(user, item, &self.user_first(user))
    }

    fn score_all(&self, user: u32, out: &mut Vec<f32>) {
        out.clear();
        if user as usize >= self.train.num_users() {
            out.resize(self.train.num_items(), f32::NEG_INFINITY);
            return;
        }
        let first = self.user_first(user);
        out.extend((0..self.train.num_items() as u32).map(|i| self.logit(user, i, &first)));
    }

    fn item_embedding(&self, item: u32) -> Option<Vec<f32>> {
        let g = self.gmf_dim;
        let i = item as usize;
        self.gmf_item.get(i * g..(i + 1) * g).map(<[f32]>::to_vec)
    }
}

impl Persist for NeuMf {
    fn check(&self) -> std::result::Result<(), String> {
        use crate::recommender::check_vec;
        let (u, i) = (self.train.num_users(), self.train.num_items());
        let (g, m) = (self.gmf_dim, self.mlp_dim);
        check_vec("GMF user embeddings", &self.gmf_user, u * g)?;
        check_vec("GMF item embeddings", &self.gmf_item, i * g)?;
        check_vec("MLP user embeddings", &self.mlp_user, u * m)?;
        let Some(first) = self.layers.first() else {
            return Err("no hidden layer".into());
        };
        let mut inputs = 2 * m;
        for (k, layer) in self.layers.iter().chain([&self.output]).enumerate() {
            let name = if k == self.layers.len() {
                "output layer".to_string()
            } else {
                format!("hidden layer {k}")
            };
            if k == self.layers.len() {
                inputs += g;
            }
            if layer.inputs != inputs || layer.outputs() == 0 {
                return Err(format!(
                    "{name} takes {} inputs to {} outputs, expected {inputs} inputs",
                    layer.inputs,
                    layer.outputs()
                ));
            }
            check_vec(
                &format!("{name} weights"),
                &layer.weight,
                inputs * layer.outputs(),
            )?;
            check_vec(&format!("{name} biases"), &layer.bias, layer.outputs())?;
            inputs = layer.outputs();
        }
        if self.output.outputs() != 1 {
            return Err(format!("output layer of {} values", self.output.outputs()));
        }
        check_vec(
            "item halves of the first layer",
            &self.item_first,
            i * first.outputs(),
        )
    }
    const KIND: &'static str = "neumf";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_held_out_items_of_the_users_group_first() {
        // Two groups of 12 users; group g interacts with items 10g..10g+10 except the item
        // (10g + u % 10), held out. A collaborative model must rank the held-out item above
        // every item of the other group.
        let mut t = Vec::new();
        for u in 0..24u32 {
            let g = u / 12;
            for i in 10 * g..10 * g + 10 {
                if i != 10 * g + u % 10 {
                    t.push((u, i, 1.0));
                }
            }
        }
        let data = Interactions::from_triples(&t);
        let device = kiln_core::backend::device("cpu").unwrap();
        let mut cfg = NeuMfConfig::new(&device);
        cfg.trainer = cfg
            .trainer
            .with_batch_size(32)
            .with_stop(StopRules::epochs(40));
        cfg.trainer.lr = LrSchedule::constant(1e-2);
        let m = cfg.fit(&data).unwrap();
        let mut ok = 0;
        for u in 0..24u32 {
            let g = u / 12;
            let held = m.score(u, 10 * g + u % 10);
            let other = (10 * (1 - g)..10 * (1 - g) + 10)
                .map(|i| m.score(u, i))
                .fold(f32::MIN, f32::max);
            ok += usize::from(held > other);
        }
        assert!(ok >= 22, "{ok} of 24 users rank their held-out item first");
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path().join("neumf.json")).unwrap();
        let back = NeuMf::load(dir.path().join("neumf.json")).unwrap();
        assert_eq!(back.score(3, 4), m.score(3, 4));
    }
}
