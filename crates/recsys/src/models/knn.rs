//! Neighbourhood collaborative filtering (Surprise's `KNNBasic`, `KNNWithMeans`,
//! `KNNBaseline`; Koren, 2010, "Factor in the neighbors", section 2.2), user-based or
//! item-based.
//!
//! Similarities are computed over co-rated entries only:
//! - cosine, mean squared difference (`1 / (msd + 1)`), Pearson, and Pearson of the
//!   baseline residuals shrunk by `(n - 1) / (n - 1 + shrinkage)` (Surprise's
//!   `pearson_baseline`);
//! - the seed's degree-normalised similarity `s_xy = sum_c r_xc r_yc / (sqrt(d_x) sqrt(d_y))`,
//!   `d` the number of ratings, which the seed uses as `y_ui = sum_v s_uv r_vi`.
//!
//! A prediction for `(u, i)` uses the `k` most similar neighbours that rated `i` (user-based)
//! or that `u` rated (item-based), counting only positive similarities.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{RecsysError, Result};
use crate::models::baseline::{BaselineMethod, Biases};
use crate::recommender::{Fit, Persist, Recommender, Scored, top_k};
use crate::trainset::TrainSet;

/// The similarity between two users (or two items).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Similarity {
    /// Cosine of the co-rated ratings.
    Cosine,
    /// `1 / (mean squared difference + 1)`.
    Msd,
    /// Pearson correlation of the co-rated ratings.
    Pearson,
    /// Pearson correlation of baseline residuals, shrunk towards 0 for small supports.
    PearsonBaseline {
        /// Shrinkage (Surprise's default 100).
        shrinkage: f32,
    },
    /// The seed's `sum_c r_xc r_yc / (sqrt(d_x) sqrt(d_y))`.
    Degree,
}

/// How neighbours' ratings become a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KnnPrediction {
    /// Similarity-weighted mean of the neighbours' ratings (`KNNBasic`).
    Basic,
    /// The user's (or item's) mean plus the weighted mean of the neighbours' deviations from
    /// their own means (`KNNWithMeans`).
    WithMeans,
    /// The baseline `mu + b_u + b_i` plus the weighted mean of the neighbours' baseline
    /// residuals (`KNNBaseline`).
    Baseline,
}

/// Parameters of [`Knn`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnConfig {
    /// Largest number of neighbours.
    pub k: usize,
    /// Fewest neighbours (with positive similarity) for a neighbourhood estimate; below it the
    /// fallback (mean or baseline) is used.
    pub min_k: usize,
    /// Compare users (true) or items (false).
    pub user_based: bool,
    /// The similarity.
    pub similarity: Similarity,
    /// The prediction rule.
    pub prediction: KnnPrediction,
    /// Fewest co-ratings for a non-zero similarity.
    pub min_support: usize,
    /// How baselines are fitted (for [`KnnPrediction::Baseline`] and
    /// [`Similarity::PearsonBaseline`]).
    pub baseline: BaselineMethod,
}

impl KnnConfig {
    /// User-based `KNNBasic` with MSD similarity and k = 40 (Surprise's defaults).
    pub fn user_based() -> Self {
        Self {
            k: 40,
            min_k: 1,
            user_based: true,
            similarity: Similarity::Msd,
            prediction: KnnPrediction::Basic,
            min_support: 1,
            baseline: BaselineMethod::default(),
        }
    }

    /// Item-based `KNNBasic` with MSD similarity and k = 40.
    pub fn item_based() -> Self {
        Self {
            user_based: false,
            ..Self::user_based()
        }
    }

    /// Item-based `KNNBaseline` with shrunk Pearson-baseline similarity, k = 40: the
    /// strongest neighbourhood model on MovieLens.
    pub fn item_baseline() -> Self {
        Self {
            similarity: Similarity::PearsonBaseline { shrinkage: 100.0 },
            prediction: KnnPrediction::Baseline,
            ..Self::item_based()
        }
    }

    /// Sets `k`.
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Sets `min_k`.
    pub fn with_min_k(mut self, min_k: usize) -> Self {
        self.min_k = min_k;
        self
    }

    /// Sets the similarity.
    pub fn with_similarity(mut self, similarity: Similarity) -> Self {
        self.similarity = similarity;
        self
    }

    /// Sets the prediction rule.
    pub fn with_prediction(mut self, prediction: KnnPrediction) -> Self {
        self.prediction = prediction;
        self
    }

    /// Sets the minimum support.
    pub fn with_min_support(mut self, min_support: usize) -> Self {
        self.min_support = min_support;
        self
    }

    /// Sets the baseline fitting method.
    pub fn with_baseline(mut self, baseline: BaselineMethod) -> Self {
        self.baseline = baseline;
        self
    }
}

/// Most users (user-based) or items (item-based) a [`Knn`] accepts: its dense similarity
/// matrix then takes 10 GB.
pub const MAX_ENTITIES: usize = 50_000;

/// A fitted neighbourhood model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Knn {
    train: TrainSet,
    k: usize,
    min_k: usize,
    user_based: bool,
    prediction: KnnPrediction,
    /// Row-major `n x n` similarities between users (user-based) or items.
    sims: Vec<f32>,
    n: usize,
    means: Vec<f32>,
    biases: Option<Biases>,
}

/// Rows of the "x" side (users when user-based, else items) with the values compared.
fn rows(train: &TrainSet, user_based: bool, x: u32) -> (&[u32], &[f32]) {
    if user_based {
        train.user(x)
    } else {
        train.item(x)
    }
}

/// Similarity matrix over the x side. Each row is accumulated through the y side's columns,
/// so the work is the number of co-rated pairs and the memory one row of sums per thread.
pub(crate) fn similarity_matrix(
    train: &TrainSet,
    user_based: bool,
    similarity: Similarity,
    min_support: usize,
    biases: Option<&Biases>,
) -> Vec<f32> {
    let n = if user_based {
        train.num_users()
    } else {
        train.num_items()
    };
    // The values compared: ratings, or baseline residuals for PearsonBaseline.
    let value = |x: u32, y: u32, r: f32| -> f32 {
        match (similarity, biases) {
            (Similarity::PearsonBaseline { .. }, Some(b)) => {
                let (u, i) = if user_based { (x, y) } else { (y, x) };
                r - b.get(u, i)
            }
            _ => r,
        }
    };
    let degree: Vec<f32> = (0..n as u32)
        .map(|x| rows(train, user_based, x).0.len() as f32)
        .collect();
    let mut sims = vec![0f32; n * n];
    sims.par_chunks_mut(n.max(1)).enumerate().for_each_init(
        || vec![[0f64; 6]; n],
        |acc, (x, out)| {
            let x = x as u32;
            for a in acc.iter_mut() {
                *a = [0.0; 6];
            }
            let (ys, rs) = rows(train, user_based, x);
            for (&y, &r) in ys.iter().zip(rs) {
                let vx = value(x, y, r) as f64;
                let (x2s, r2s) = rows(train, !user_based, y);
                for (&x2, &r2) in x2s.iter().zip(r2s) {
                    let vy = value(x2, y, r2) as f64;
                    let a = &mut acc[x2 as usize];
                    a[0] += 1.0;
                    a[1] += vx * vy;
                    a[2] += vx * vx;
                    a[3] += vy * vy;
                    a[4] += vx;
                    a[5] += vy;
                }
            }
            for (x2, (s, a)) in out.iter_mut().zip(acc.iter()).enumerate() {
                let [freq, xy, xx, yy, sx, sy] = *a;
                if freq < min_support.max(1) as f64 {
                    *s = 0.0;
                    continue;
                }
                let sim = match similarity {
                    Similarity::Cosine => {
                        let d = (xx * yy).sqrt();
                        if d > 0.0 { xy / d } else { 0.0 }
                    }
                    Similarity::Msd => 1.0 / ((xx + yy - 2.0 * xy) / freq + 1.0),
                    Similarity::Pearson => {
                        let num = freq * xy - sx * sy;
                        let d = ((freq * xx - sx * sx) * (freq * yy - sy * sy)).sqrt();
                        if d > 0.0 { num / d } else { 0.0 }
                    }
                    Similarity::PearsonBaseline { shrinkage } => {
                        let d = (xx * yy).sqrt();
                        if d > 0.0 {
                            xy / d * (freq - 1.0) / (freq - 1.0 + shrinkage as f64)
                        } else {
                            0.0
                        }
                    }
                    Similarity::Degree => {
                        let d = (degree[x as usize] as f64 * degree[x2] as f64).sqrt();
                        if d > 0.0 { xy / d } else { 0.0 }
                    }
                };
                *s = sim as f32;
            }
            out[x as usize] = 1.0;
        },
    );
    sims
}

impl Fit for KnnConfig {
    type Model = Knn;
    fn check(&self) -> Result<()> {
        if self.k == 0 {
            return Err(RecsysError::param("knn", "k", self.k, "at least 1"));
        }
        if let Similarity::PearsonBaseline { shrinkage } = self.similarity
            && !super::non_negative(shrinkage)
        {
            return Err(RecsysError::param(
                "knn (pearson-baseline)",
                "shrinkage",
                shrinkage,
                "a finite number of at least 0",
            ));
        }
        Ok(())
    }

    fn fit(&self, train: &Interactions) -> Result<Knn> {
        Fit::check(self)?;
        let train = TrainSet::new(train)?;
        let n = if self.user_based {
            train.num_users()
        } else {
            train.num_items()
        };
        // The similarity matrix is dense: refuse sizes that cannot fit rather than abort.
        if n > MAX_ENTITIES {
            return Err(RecsysError::Data(format!(
                "KNN keeps a dense {n} x {n} similarity matrix ({} GiB); at most {MAX_ENTITIES} \
                 {} are supported, use the {} variant or a factorisation model",
                (n as f64).powi(2) * 4.0 / (1u64 << 30) as f64,
                if self.user_based { "users" } else { "items" },
                if self.user_based {
                    "item-based"
                } else {
                    "user-based"
                },
            )));
        }
        let needs_biases = self.prediction == KnnPrediction::Baseline
            || matches!(self.similarity, Similarity::PearsonBaseline { .. });
        let biases = needs_biases
            .then(|| Biases::fit(&train, self.baseline))
            .transpose()?;
        let sims = similarity_matrix(
            &train,
            self.user_based,
            self.similarity,
            self.min_support,
            biases.as_ref(),
        );
        let means = (0..n as u32)
            .map(|x| {
                let r = rows(&train, self.user_based, x).1;
                if r.is_empty() {
                    train.global_mean()
                } else {
                    r.iter().sum::<f32>() / r.len() as f32
                }
            })
            .collect();
        Ok(Knn {
            train,
            k: self.k,
            min_k: self.min_k,
            user_based: self.user_based,
            prediction: self.prediction,
            sims,
            n,
            means,
            biases: if self.prediction == KnnPrediction::Baseline {
                biases
            } else {
                None
            },
        })
    }
}

impl Knn {
    /// The similarity between users (user-based) or items (item-based) `a` and `b`.
    pub fn similarity(&self, a: u32, b: u32) -> f32 {
        let (a, b) = (a as usize, b as usize);
        if a < self.n && b < self.n {
            self.sims[a * self.n + b]
        } else {
            0.0
        }
    }

    fn fallback(&self, user: u32, item: u32) -> f32 {
        match (&self.biases, self.prediction) {
            (Some(b), _) => b.get(user, item),
            (None, KnnPrediction::WithMeans) => {
                let x = if self.user_based { user } else { item };
                self.means
                    .get(x as usize)
                    .copied()
                    .unwrap_or(self.train.global_mean())
            }
            _ => self.train.global_mean(),
        }
    }
}

impl Recommender for Knn {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }

    fn score(&self, user: u32, item: u32) -> f32 {
        if !self.train.user_known(user) || !self.train.item_known(item) {
            return self.fallback(user, item);
        }
        let (x, y) = if self.user_based {
            (user, item)
        } else {
            (item, user)
        };
        let row = &self.sims[x as usize * self.n..(x as usize + 1) * self.n];
        let (x2s, r2s) = rows(&self.train, !self.user_based, y);
        let mut neighbours: Vec<(f32, u32, f32)> = x2s
            .iter()
            .zip(r2s)
            .map(|(&x2, &r)| (row[x2 as usize], x2, r))
            .collect();
        if neighbours.len() > self.k {
            neighbours.select_nth_unstable_by(self.k - 1, |a, b| b.0.total_cmp(&a.0));
            neighbours.truncate(self.k);
        }
        let (mut sum_sim, mut sum, mut count) = (0f32, 0f32, 0usize);
        for &(s, x2, r) in &neighbours {
            if s > 0.0 {
                let dev = match self.prediction {
                    KnnPrediction::Basic => r,
                    KnnPrediction::WithMeans => r - self.means[x2 as usize],
                    KnnPrediction::Baseline => {
                        let (u2, i2) = if self.user_based { (x2, y) } else { (y, x2) };
                        r - self.biases.as_ref().map_or(0.0, |b| b.get(u2, i2))
                    }
                };
                sum_sim += s;
                sum += s * dev;
                count += 1;
            }
        }
        let base = match self.prediction {
            KnnPrediction::Basic => 0.0,
            KnnPrediction::WithMeans => self.means[x as usize],
            KnnPrediction::Baseline => self.fallback(user, item),
        };
        if count < self.min_k || sum_sim <= 0.0 {
            return self.fallback(user, item);
        }
        base + sum / sum_sim
    }

    fn similar_items(&self, item: u32, k: usize) -> Vec<Scored> {
        if self.user_based || item as usize >= self.n {
            return self.default_similar_items(item, k);
        }
        let mut row = self.sims[item as usize * self.n..(item as usize + 1) * self.n].to_vec();
        row[item as usize] = f32::NEG_INFINITY;
        top_k(&row, k)
    }
}

impl Knn {
    fn default_similar_items(&self, item: u32, k: usize) -> Vec<Scored> {
        struct Plain<'a>(&'a TrainSet);
        impl Recommender for Plain<'_> {
            fn train_set(&self) -> &TrainSet {
                self.0
            }
            fn score(&self, _: u32, _: u32) -> f32 {
                0.0
            }
        }
        Plain(&self.train).similar_items(item, k)
    }
}

impl Persist for Knn {
    fn check(&self) -> std::result::Result<(), String> {
        use crate::recommender::check_vec;
        let n = if self.user_based {
            self.train.num_users()
        } else {
            self.train.num_items()
        };
        if self.n != n || self.k == 0 {
            return Err(format!(
                "{} similarities with k = {} for {n} {}",
                self.n,
                self.k,
                if self.user_based { "users" } else { "items" }
            ));
        }
        check_vec("similarities", &self.sims, n * n)?;
        check_vec("means", &self.means, n)?;
        match &self.biases {
            Some(b) => b.check(&self.train),
            None => Ok(()),
        }
    }
    const KIND: &'static str = "knn";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 4 x 5 user-item matrix used for the hand computations (0 = not rated).
    const R: [[f32; 5]; 4] = [
        [5.0, 3.0, 0.0, 1.0, 0.0],
        [4.0, 0.0, 0.0, 1.0, 2.0],
        [1.0, 1.0, 0.0, 5.0, 0.0],
        [0.0, 0.0, 5.0, 4.0, 3.0],
    ];

    fn data() -> Interactions {
        let mut t = Vec::new();
        for (u, row) in R.iter().enumerate() {
            for (i, &r) in row.iter().enumerate() {
                if r > 0.0 {
                    t.push((u as u32, i as u32, r));
                }
            }
        }
        Interactions::from_triples(&t)
    }

    #[test]
    fn seed_degree_similarity_by_hand() {
        let m = KnnConfig::user_based()
            .with_similarity(Similarity::Degree)
            .fit(&data())
            .unwrap();
        // Users 0 and 1 co-rate items 0 and 3: (5*4 + 1*1) / (sqrt(3) sqrt(3)) = 21 / 3 = 7.
        assert!((m.similarity(0, 1) - 7.0).abs() < 1e-5);
        // Users 0 and 2 co-rate items 0, 1, 3: (5 + 3 + 5) / 3 = 13 / 3.
        assert!((m.similarity(0, 2) - 13.0 / 3.0).abs() < 1e-5);
        // Users 0 and 3 co-rate item 3: 4 / sqrt(9) = 4 / 3.
        assert!((m.similarity(3, 0) - 4.0 / 3.0).abs() < 1e-5);
        // Users 1 and 3 co-rate items 3 and 4: (1*4 + 2*3) / sqrt(9) = 10 / 3.
        assert!((m.similarity(1, 3) - 10.0 / 3.0).abs() < 1e-5);
        // Prediction for user 0, item 4 (rated by users 1 and 3):
        // (7 * 2 + 4/3 * 3) / (7 + 4/3) = 18 / (25/3) = 2.16.
        assert!((m.score(0, 4) - 2.16).abs() < 1e-5);
    }

    #[test]
    fn cosine_pearson_msd_by_hand() {
        let fit = |s| {
            KnnConfig::user_based()
                .with_similarity(s)
                .fit(&data())
                .unwrap()
        };
        // Users 0 and 2 on items 0, 1, 3: x = (5, 3, 1), y = (1, 1, 5).
        let cos = 13.0 / (35f32.sqrt() * 27f32.sqrt());
        assert!((fit(Similarity::Cosine).similarity(0, 2) - cos).abs() < 1e-6);
        // Pearson: means 3 and 7/3; dx = (2, 0, -2), dy = (-4/3, -4/3, 8/3) -> -24/3 / (sqrt(8) sqrt(96/9)).
        let pearson = (-8.0) / (8f32.sqrt() * (96.0f32 / 9.0).sqrt());
        assert!((fit(Similarity::Pearson).similarity(0, 2) - pearson).abs() < 1e-6);
        // MSD: (16 + 4 + 16) / 3 = 12 -> 1 / 13.
        assert!((fit(Similarity::Msd).similarity(0, 2) - 1.0 / 13.0).abs() < 1e-6);
    }

    #[test]
    fn with_means_and_k_limit() {
        let m = KnnConfig::user_based()
            .with_similarity(Similarity::Msd)
            .with_prediction(KnnPrediction::WithMeans)
            .with_k(1)
            .fit(&data())
            .unwrap();
        // Item 2 is rated only by user 3. User 1 (mean 7/3) vs user 3 (mean 4): msd on items
        // 3, 4 = (9 + 1) / 2 = 5 -> sim 1/6 > 0, so 7/3 + (5 - 4) = 10/3.
        assert!((m.score(1, 2) - 10.0 / 3.0).abs() < 1e-5);
        // Unknown user: falls back without panicking.
        assert!(m.score(99, 0).is_finite());
        assert!(KnnConfig::user_based().with_k(0).fit(&data()).is_err());
    }

    #[test]
    fn item_based_similar_items_use_the_matrix() {
        let m = KnnConfig::item_based()
            .with_similarity(Similarity::Cosine)
            .fit(&data())
            .unwrap();
        let top = m.similar_items(0, 2);
        assert_eq!(top.len(), 2);
        assert!(top[0].score >= top[1].score);
        assert!(top.iter().all(|s| s.item != 0));
        let recs = m.recommend(0, 5);
        assert!(recs.iter().all(|s| s.item == 2 || s.item == 4));
    }
}
