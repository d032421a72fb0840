//! A feature-based factorisation model in the manner of LightFM (Kula, 2015, "Metadata
//! embeddings for user and item cold-start recommendations"): a user's (item's) vector and
//! bias are the weighted sums of its features' embeddings and biases, and
//! `score(u, i) = u . i + b_u + b_i`. With identity features it is plain MF; with metadata
//! (genres, decade, age, occupation) it scores items nobody has rated yet.
//!
//! Trained like LightFM: WARP (Weston et al., 2011) or BPR on the implicit positives, Adagrad
//! per parameter, uniform initialisation in `[-0.5, 0.5) / components`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::{FeatureMatrix, Interactions};
use crate::error::{RecsysError, Result};
use crate::models::bpr::sample_negative;
use crate::models::svd::dot;
use crate::recommender::{DotForm, Fit, Persist, Recommender};
use crate::trainset::TrainSet;
use kiln_core::data::{SplitMix64, shuffle};

/// The ranking loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RankLoss {
    /// Weighted approximate-rank pairwise: sample negatives until one is ranked within a
    /// margin of the positive, weighting the step by the estimated rank.
    Warp,
    /// Bayesian personalised ranking: one negative per positive, logistic loss.
    Bpr,
}

/// Parameters of [`LightFm`].
#[derive(Debug, Clone, PartialEq)]
pub struct LightFmConfig {
    /// Embedding size.
    pub components: usize,
    /// Passes over the positives.
    pub epochs: usize,
    /// Adagrad learning rate.
    pub lr: f32,
    /// The loss.
    pub loss: RankLoss,
    /// Most negatives drawn per positive (WARP).
    pub max_sampled: usize,
    /// L2 penalty on user feature parameters.
    pub user_alpha: f32,
    /// L2 penalty on item feature parameters.
    pub item_alpha: f32,
    /// User features (rows by dense user id); `None` is one identity feature per user.
    pub user_features: Option<Arc<FeatureMatrix>>,
    /// Item features (rows by dense item id); `None` is one identity feature per item.
    pub item_features: Option<Arc<FeatureMatrix>>,
    /// Seed.
    pub seed: u64,
}

impl Default for LightFmConfig {
    fn default() -> Self {
        Self {
            components: 64,
            epochs: 30,
            lr: 0.05,
            loss: RankLoss::Warp,
            max_sampled: 10,
            user_alpha: 1e-6,
            item_alpha: 1e-6,
            user_features: None,
            item_features: None,
            seed: 0,
        }
    }
}

impl LightFmConfig {
    /// Kiln's defaults: WARP, 64 components, 30 epochs, identity features.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the user features (include identity columns with
    /// [`FeatureMatrix::identity`] + [`FeatureMatrix::hstack`] to keep per-user terms).
    pub fn with_user_features(mut self, f: Arc<FeatureMatrix>) -> Self {
        self.user_features = Some(f);
        self
    }

    /// Sets the item features.
    pub fn with_item_features(mut self, f: Arc<FeatureMatrix>) -> Self {
        self.item_features = Some(f);
        self
    }

    /// Sets the loss.
    pub fn with_loss(mut self, loss: RankLoss) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the number of epochs.
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Embeddings (`components` + 1 bias per feature) with Adagrad accumulators.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Table {
    dim: usize,
    weights: Vec<f32>,
    #[serde(skip)]
    accum: Vec<f32>,
}

impl Table {
    fn new(features: usize, components: usize, rng: &mut SplitMix64) -> Self {
        let dim = components + 1;
        let mut weights = vec![0f32; features * dim];
        for (k, w) in weights.iter_mut().enumerate() {
            if k % dim != components {
                *w = (rng.uniform() as f32 - 0.5) / components as f32;
            }
        }
        Self {
            dim,
            weights,
            accum: vec![1.0; features * dim],
        }
    }

    /// The representation `sum_f w_f e_f` (bias last).
    fn repr(&self, row: &[(u32, f32)], out: &mut [f32]) {
        out.iter_mut().for_each(|v| *v = 0.0);
        for &(feat, w) in row {
            let e = &self.weights[feat as usize * self.dim..(feat as usize + 1) * self.dim];
            out.iter_mut().zip(e).for_each(|(o, x)| *o += w * x);
        }
    }

    /// Adagrad step on every feature of `row` for the representation gradient `grad`.
    fn step(&mut self, row: &[(u32, f32)], grad: &[f32], lr: f32, alpha: f32) {
        for &(feat, w) in row {
            let span = feat as usize * self.dim..(feat as usize + 1) * self.dim;
            let weights = &mut self.weights[span.clone()];
            let accum = &mut self.accum[span];
            for ((x, a), g) in weights.iter_mut().zip(accum.iter_mut()).zip(grad) {
                let g = w * g + alpha * *x;
                *a += g * g;
                *x -= lr * g / a.sqrt();
            }
        }
    }
}

/// LightFM's ceiling on one step's loss weight (its `MAX_LOSS`).
const MAX_WARP_WEIGHT: f32 = 10.0;

/// WARP's weight for a violating negative found on draw `trials` (1-based) among `items`
/// items: the log of the positive's estimated rank `floor((items - 1) / trials)`, as LightFM,
/// kept above zero (1e-3) so that a violator still moves the parameters in a tiny catalogue,
/// and capped at [`MAX_WARP_WEIGHT`].
pub(crate) fn warp_weight(items: usize, trials: usize) -> f32 {
    let rank = (items.saturating_sub(1) / trials.max(1)).max(1) as f32;
    rank.ln().clamp(1e-3, MAX_WARP_WEIGHT)
}

/// WARP's sampling: up to `max_sampled` negatives from `draw`, stopping at the first whose
/// score (`score(j)`) is within the margin of 1 of the positive's (`neg > pos - 1`). Returns
/// that negative and its [`warp_weight`], or `None` when no draw violates the margin (the
/// positive is ranked well enough: no step) or `draw` has no negative to give. The last call
/// of `score` is the chosen negative's.
pub(crate) fn warp_negative(
    items: usize,
    pos: f32,
    max_sampled: usize,
    draw: &mut impl FnMut() -> Option<u32>,
    mut score: impl FnMut(u32) -> f32,
) -> Option<(u32, f32)> {
    for trial in 1..=max_sampled {
        let j = draw()?;
        if score(j) > pos - 1.0 {
            return Some((j, warp_weight(items, trial)));
        }
    }
    None
}

/// A fitted [`LightFmConfig`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LightFm {
    train: TrainSet,
    components: usize,
    user_features: Arc<FeatureMatrix>,
    item_features: Arc<FeatureMatrix>,
    users: Table,
    items: Table,
    /// Item representations (`components` + bias), precomputed for scoring.
    item_reprs: Vec<f32>,
}

fn score_of(u: &[f32], i: &[f32], c: usize) -> f32 {
    dot(&u[..c], &i[..c]) + u[c] + i[c]
}

impl Fit for LightFmConfig {
    type Model = LightFm;
    fn check(&self) -> Result<()> {
        super::Params::new("lightfm")
            .count("components", self.components)?
            .positive("lr", self.lr)?
            .count("max_sampled", self.max_sampled)?;
        Ok(())
    }

    fn fit(&self, train: &Interactions) -> Result<LightFm> {
        Fit::check(self)?;
        let set = TrainSet::new(train)?;
        let (nu, ni, c) = (set.num_users(), set.num_items(), self.components);
        let uf = self
            .user_features
            .clone()
            .unwrap_or_else(|| Arc::new(FeatureMatrix::identity(nu, "user")));
        let itf = self
            .item_features
            .clone()
            .unwrap_or_else(|| Arc::new(FeatureMatrix::identity(ni, "item")));
        if uf.num_rows() < nu || itf.num_rows() < ni {
            return Err(RecsysError::Data(format!(
                "lightfm: feature rows for {} users and {} items, the data has {nu} and {ni}",
                uf.num_rows(),
                itf.num_rows()
            )));
        }
        let mut rng = SplitMix64::new(self.seed);
        let mut users = Table::new(uf.num_features(), c, &mut rng);
        let mut items = Table::new(itf.num_features(), c, &mut rng);
        let mut positives: Vec<(u32, u32)> = set.ratings().map(|(u, i, _)| (u, i)).collect();
        let (mut ur, mut ir, mut jr) = (vec![0f32; c + 1], vec![0f32; c + 1], vec![0f32; c + 1]);
        let (mut gu, mut gi, mut gj) = (vec![0f32; c + 1], vec![0f32; c + 1], vec![0f32; c + 1]);
        for epoch in 0..self.epochs {
            shuffle(
                &mut positives,
                self.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9),
            );
            for &(u, i) in &positives {
                users.repr(uf.row(u), &mut ur);
                items.repr(itf.row(i), &mut ir);
                let pos = score_of(&ur, &ir, c);
                // The negative and the weight of the step (its loss derivative).
                let mut draw = || sample_negative(&set, u, &mut rng);
                let chosen = match self.loss {
                    RankLoss::Warp => warp_negative(ni, pos, self.max_sampled, &mut draw, |j| {
                        items.repr(itf.row(j), &mut jr);
                        score_of(&ur, &jr, c)
                    }),
                    RankLoss::Bpr => draw().map(|j| {
                        items.repr(itf.row(j), &mut jr);
                        (j, 1.0 / (1.0 + (pos - score_of(&ur, &jr, c)).exp()))
                    }),
                };
                let Some((j, weight)) = chosen else { continue };
                // Loss weight * (neg - pos): gradients w.r.t. the three representations.
                for k in 0..c {
                    gu[k] = weight * (jr[k] - ir[k]);
                    gi[k] = -weight * ur[k];
                    gj[k] = weight * ur[k];
                }
                gu[c] = 0.0;
                gi[c] = -weight;
                gj[c] = weight;
                users.step(uf.row(u), &gu, self.lr, self.user_alpha);
                items.step(itf.row(i), &gi, self.lr, self.item_alpha);
                items.step(itf.row(j), &gj, self.lr, self.item_alpha);
            }
            if !users
                .weights
                .iter()
                .chain(&items.weights)
                .all(|v| v.is_finite())
            {
                return Err(RecsysError::Diverged {
                    model: "lightfm",
                    epoch: epoch + 1,
                });
            }
        }
        let mut item_reprs = vec![0f32; ni * (c + 1)];
        for (i, out) in item_reprs.chunks_mut(c + 1).enumerate() {
            items.repr(itf.row(i as u32), out);
        }
        Ok(LightFm {
            train: set,
            components: c,
            user_features: uf,
            item_features: itf,
            users,
            items,
            item_reprs,
        })
    }
}

impl LightFm {
    /// The score of an item described only by its features (e.g. a new movie's genres), for
    /// `user`.
    pub fn score_features(&self, user: u32, item_features: &[(u32, f32)]) -> f32 {
        let c = self.components;
        let (mut ur, mut ir) = (vec![0f32; c + 1], vec![0f32; c + 1]);
        self.users.repr(self.user_features.row(user), &mut ur);
        self.items.repr(item_features, &mut ir);
        score_of(&ur, &ir, c)
    }
}

impl Recommender for LightFm {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }

    fn score(&self, user: u32, item: u32) -> f32 {
        let c = self.components;
        let i = item as usize;
        if i * (c + 1) >= self.item_reprs.len() {
            return f32::NEG_INFINITY;
        }
        let mut ur = vec![0f32; c + 1];
        self.users.repr(self.user_features.row(user), &mut ur);
        score_of(&ur, &self.item_reprs[i * (c + 1)..(i + 1) * (c + 1)], c)
    }

    fn score_all(&self, user: u32, out: &mut Vec<f32>) {
        let c = self.components;
        let mut ur = vec![0f32; c + 1];
        self.users.repr(self.user_features.row(user), &mut ur);
        out.clear();
        out.extend(self.item_reprs.chunks(c + 1).map(|ir| score_of(&ur, ir, c)));
    }

    fn dot_form(&self) -> Option<DotForm> {
        // [u, b_u, 1] . [i, 1, b_i] = u . i + b_u + b_i.
        let c = self.components;
        let d = c + 2;
        let mut users = vec![0f32; self.train.num_users() * d];
        let mut ur = vec![0f32; c + 1];
        for (u, row) in users.chunks_mut(d).enumerate() {
            self.users.repr(self.user_features.row(u as u32), &mut ur);
            row[..=c].copy_from_slice(&ur);
            row[c + 1] = 1.0;
        }
        let mut items = vec![0f32; self.train.num_items() * d];
        for (row, ir) in items.chunks_mut(d).zip(self.item_reprs.chunks(c + 1)) {
            row[..c].copy_from_slice(&ir[..c]);
            row[c] = 1.0;
            row[c + 1] = ir[c];
        }
        Some(DotForm {
            dim: d,
            users,
            items,
        })
    }

    fn item_embedding(&self, item: u32) -> Option<Vec<f32>> {
        let c = self.components;
        let i = item as usize;
        self.item_reprs
            .get(i * (c + 1)..i * (c + 1) + c)
            .map(<[f32]>::to_vec)
    }
}

impl Persist for LightFm {
    fn check(&self) -> std::result::Result<(), String> {
        use crate::recommender::check_vec;
        let dim = self.components + 1;
        for (name, table, features, rows) in [
            (
                "user",
                &self.users,
                &self.user_features,
                self.train.num_users(),
            ),
            (
                "item",
                &self.items,
                &self.item_features,
                self.train.num_items(),
            ),
        ] {
            if table.dim != dim || features.num_rows() < rows {
                return Err(format!(
                    "{name} table of width {} (expected {dim}) over {} feature rows for {rows}",
                    table.dim,
                    features.num_rows()
                ));
            }
            check_vec(
                &format!("{name} embeddings"),
                &table.weights,
                features.num_features() * dim,
            )?;
        }
        check_vec(
            "item representations",
            &self.item_reprs,
            self.train.num_items() * dim,
        )
    }
    const KIND: &'static str = "lightfm";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warp_weights_are_the_log_of_the_estimated_rank() {
        // 100 items: a violator on the first draw ranks the positive about 99th.
        assert!((warp_weight(100, 1) - 99f32.ln()).abs() < 1e-6);
        // On the third: floor(99 / 3) = 33.
        assert!((warp_weight(100, 3) - 33f32.ln()).abs() < 1e-6);
        // floor(99 / 10) = 9.
        assert!((warp_weight(100, 10) - 9f32.ln()).abs() < 1e-6);
        // Past the catalogue the estimate is rank 1: the floor keeps a tiny step.
        assert_eq!(warp_weight(5, 10), 1e-3);
        assert_eq!(warp_weight(1, 1), 1e-3);
        // A huge catalogue is capped at LightFM's MAX_LOSS.
        assert_eq!(warp_weight(1 << 40, 1), MAX_WARP_WEIGHT);
    }

    #[test]
    fn warp_sampling_stops_at_the_first_margin_violator() {
        let scores = [0.0f32, 2.5, 1.9, 3.0, 0.5];
        let run = |order: &[u32], max_sampled: usize| {
            let mut it = order.iter().copied();
            let mut scored = Vec::new();
            let got = warp_negative(100, 3.0, max_sampled, &mut || it.next(), |j| {
                scored.push(j);
                scores[j as usize]
            });
            (got, scored)
        };
        // Positive at 3.0: a negative violates when its score is above 2.0. Items 0 and 2
        // (1.9) do not; item 1 (2.5) does, on the third draw: weight ln(floor(99 / 3)).
        let (got, scored) = run(&[0, 2, 1, 3], 10);
        assert_eq!(got, Some((1, 33f32.ln())));
        assert_eq!(scored, [0, 2, 1], "stops at the violator");
        // Item 3 (3.0, equal to the positive) violates on the first draw.
        assert_eq!(run(&[3], 10).0, Some((3, 99f32.ln())));
        // No violator within max_sampled: no step, and no more draws than allowed.
        let (got, scored) = run(&[0, 2, 4, 1], 3);
        assert_eq!(got, None);
        assert_eq!(scored, [0, 2, 4]);
        // A user who has seen every item has no negative.
        assert_eq!(run(&[], 10).0, None);
    }

    #[test]
    fn metadata_scores_items_nobody_rated() {
        // 10 items: 0..5 are genre A, 5..10 genre B. Users interact with A items 0..4 only;
        // items 4 (A) and 9 (B) have no interactions at all.
        let genres = FeatureMatrix::new(
            vec!["A".into(), "B".into()],
            (0..10).map(|i| vec![(u32::from(i >= 5), 1.0)]).collect(),
        )
        .unwrap();
        let items = FeatureMatrix::identity(10, "item")
            .hstack(&genres)
            .normalized();
        let mut t = Vec::new();
        for u in 0..20u32 {
            for i in 0..4 {
                if (u + i) % 4 != 0 {
                    t.push((u, i, 1.0));
                }
            }
        }
        // Make items 4..10 known to the id map.
        let mut data = Interactions::from_triples(&t);
        data.items = Arc::new(
            (0..10)
                .map(|i: u32| i.to_string())
                .collect::<Vec<_>>()
                .into(),
        );
        let m = LightFmConfig::new()
            .with_item_features(Arc::new(items))
            .with_epochs(40)
            .fit(&data)
            .unwrap();
        let (a, b) = (m.score(0, 4), m.score(0, 9));
        assert!(a > b, "cold A item {a} should outrank cold B item {b}");
        // A brand-new item described by its genre alone.
        let new_a = m.score_features(0, &[(10, 1.0)]);
        let new_b = m.score_features(0, &[(11, 1.0)]);
        assert!(new_a > new_b, "{new_a} vs {new_b}");
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path().join("lightfm.json")).unwrap();
        assert_eq!(
            LightFm::load(dir.path().join("lightfm.json"))
                .unwrap()
                .score(3, 2),
            m.score(3, 2)
        );
    }
}
