//! Top-k retrieval for serving many items from a model whose score is an inner product
//! ([`Recommender::dot_form`]): exact, by blocks of users times all items as one GEMM, or
//! approximate, through an HNSW graph (Malkov and Yashunin) from the `instant-distance` crate.
//!
//! HNSW searches nearest neighbours, not largest inner products; the items are lifted to
//! `[y, sqrt(M^2 - |y|^2)]` (`M` the largest item norm) and the query to `[x, 0]`, so that
//! `|q - p|^2 = |x|^2 + M^2 - 2 x . y` ranks items exactly as the inner product does
//! (Bachrach et al., 2014). [`recall_at_k`] measures how much of the exact top k an
//! approximate index finds.

use instant_distance::{Builder, HnswMap, Point, Search};
use rayon::prelude::*;

use crate::error::{RecsysError, Result};
use crate::recommender::{DotForm, Recommender, Scored, top_k};
use kiln_core::kernels::gemm::{Gemm, Parallelism};

/// Users scored per GEMM by [`ExactIndex::top_k_batch`]: bounds the score block to
/// `BLOCK x items` floats.
const BLOCK: usize = 256;

fn dot_form_of(model: &dyn Recommender) -> Result<DotForm> {
    let form = model.dot_form().ok_or_else(|| {
        RecsysError::Data(
            "retrieval: this model's score is not an inner product (no dot form); use \
             Recommender::recommend"
                .into(),
        )
    })?;
    if form.dim == 0 || form.items.len() % form.dim != 0 || form.users.len() % form.dim != 0 {
        return Err(RecsysError::Data(format!(
            "retrieval: dot form of width {} over {} user and {} item values",
            form.dim,
            form.users.len(),
            form.items.len()
        )));
    }
    Ok(form)
}

/// Exact top-k over every item.
#[derive(Debug, Clone)]
pub struct ExactIndex {
    form: DotForm,
}

impl ExactIndex {
    /// The index of `model`'s items (an error for models without a dot form).
    ///
    /// # Errors
    /// [`RecsysError::Data`] for a model without a dot form.
    pub fn new(model: &dyn Recommender) -> Result<Self> {
        Ok(Self {
            form: dot_form_of(model)?,
        })
    }

    /// The index of `model`'s items, or `None` for models without a dot form.
    pub fn of(model: &dyn Recommender) -> Option<Self> {
        dot_form_of(model).ok().map(|form| Self { form })
    }

    /// The model's inner-product form.
    pub fn form(&self) -> &DotForm {
        &self.form
    }

    /// Users per block of [`scores`](Self::scores) that [`top_k_batch`](Self::top_k_batch)
    /// and [`crate::eval::ranking_scores`] use.
    pub const BLOCK: usize = BLOCK;

    /// Every item's score for each of `users` into `out` (`users.len() x items`, row-major):
    /// one threaded GEMM. Unknown users score 0 everywhere.
    ///
    /// # Panics
    /// When `out` is shorter than `users.len() x items`.
    pub fn scores(&self, users: &[u32], out: &mut [f32]) {
        let (d, n, m) = (self.form.dim, self.form.num_items(), users.len());
        let mut queries = vec![0f32; m * d];
        for (q, &u) in queries.chunks_mut(d).zip(users) {
            if let Some(row) = self.form.user(u) {
                q.copy_from_slice(row);
            }
        }
        Gemm::new([m, n, d]).parallelism(Parallelism::Rayon(0)).run(
            &mut out[..m * n],
            n,
            &queries,
            [d, 1],
            &self.form.items,
            [1, d],
        );
    }

    /// The `k` best items for each of `users` (unknown ids get an empty list), best first,
    /// leaving out `exclude(user)`: blocks of [`BLOCK`](Self::BLOCK) users scored by
    /// [`scores`](Self::scores), so memory stays at one block whatever the user count.
    pub fn top_k_batch<'a>(
        &self,
        users: &[u32],
        k: usize,
        exclude: impl Fn(u32) -> &'a [u32] + Sync,
    ) -> Vec<Vec<Scored>> {
        let n = self.form.num_items();
        let mut out = Vec::with_capacity(users.len());
        let mut scores = vec![0f32; BLOCK.min(users.len()) * n];
        for block in users.chunks(BLOCK) {
            self.scores(block, &mut scores);
            let lists: Vec<Vec<Scored>> = scores[..block.len() * n]
                .par_chunks_mut(n.max(1))
                .zip(block)
                .map(|(row, &u)| {
                    if self.form.user(u).is_none() {
                        return Vec::new();
                    }
                    for &i in exclude(u) {
                        if let Some(s) = row.get_mut(i as usize) {
                            *s = f32::NEG_INFINITY;
                        }
                    }
                    top_k(row, k)
                })
                .collect();
            out.extend(lists);
        }
        out
    }
}

/// A lifted vector (see the module docs) with squared Euclidean distance.
#[derive(Debug, Clone)]
struct Lifted(Vec<f32>);

impl Point for Lifted {
    fn distance(&self, other: &Self) -> f32 {
        crate::models::squared_distance(&self.0, &other.0)
    }
}

/// Parameters of [`HnswIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswConfig {
    /// Candidates kept while inserting (`efConstruction`).
    pub ef_construction: usize,
    /// Candidates kept while searching (`ef`): the most results one search returns, and the
    /// knob between speed and recall.
    pub ef_search: usize,
    /// Seed of the layer assignment.
    pub seed: u64,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self {
            ef_construction: 64,
            ef_search: 64,
            seed: 0,
        }
    }
}

/// Approximate top-k through an HNSW graph over the lifted items.
pub struct HnswIndex {
    form: DotForm,
    map: HnswMap<Lifted, u32>,
    ef_search: usize,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("items", &self.form.num_items())
            .field("dim", &self.form.dim)
            .field("ef_search", &self.ef_search)
            .finish()
    }
}

impl HnswIndex {
    /// Builds the graph of `model`'s items (threaded); an error for models without a dot form
    /// or a zero `ef`.
    ///
    /// # Errors
    /// [`RecsysError::InvalidParam`] for a zero `ef`; [`RecsysError::Data`] for a model without a
    /// dot form.
    pub fn new(model: &dyn Recommender, config: HnswConfig) -> Result<Self> {
        if config.ef_search == 0 || config.ef_construction == 0 {
            return Err(RecsysError::param(
                "hnsw",
                "ef_search / ef_construction",
                0,
                "at least 1",
            ));
        }
        let form = dot_form_of(model)?;
        let d = form.dim;
        let norms: Vec<f32> = form
            .items
            .chunks(d)
            .map(|y| y.iter().map(|v| v * v).sum::<f32>())
            .collect();
        let max = norms.iter().copied().fold(0f32, f32::max);
        let points: Vec<Lifted> = form
            .items
            .chunks(d)
            .zip(&norms)
            .map(|(y, n)| {
                let mut p = y.to_vec();
                p.push((max - n).max(0.0).sqrt());
                Lifted(p)
            })
            .collect();
        let values: Vec<u32> = (0..points.len() as u32).collect();
        let map = Builder::default()
            .ef_construction(config.ef_construction)
            .ef_search(config.ef_search)
            .seed(config.seed)
            .build(points, values);
        Ok(Self {
            form,
            map,
            ef_search: config.ef_search,
        })
    }

    /// Up to `k` items for `user`, best first, skipping `exclude` (sorted or not). At most
    /// `ef_search` candidates are visited, so a user who has seen many of them can get fewer
    /// than `k`; an unknown user gets none.
    pub fn top_k(&self, user: u32, k: usize, exclude: &[u32]) -> Vec<Scored> {
        let Some(x) = self.form.user(user) else {
            return Vec::new();
        };
        let mut q = x.to_vec();
        q.push(0.0);
        let mut search = Search::default();
        let d = self.form.dim;
        self.map
            .search(&Lifted(q), &mut search)
            .map(|item| *item.value)
            .filter(|i| !exclude.contains(i))
            .take(k)
            .map(|i| Scored {
                item: i,
                score: crate::models::dot(
                    x,
                    &self.form.items[i as usize * d..(i as usize + 1) * d],
                ),
            })
            .collect()
    }
}

/// Mean over `users` of the fraction of the exact top `k` (nothing excluded) that the
/// approximate index returns in its top `k`.
pub fn recall_at_k(exact: &ExactIndex, approx: &HnswIndex, users: &[u32], k: usize) -> f64 {
    if users.is_empty() || k == 0 {
        return 0.0;
    }
    let truth = exact.top_k_batch(users, k, |_| &[]);
    let found: f64 = users
        .par_iter()
        .zip(&truth)
        .map(|(&u, t)| {
            if t.is_empty() {
                return 1.0;
            }
            let got = approx.top_k(u, k, &[]);
            let hits = t
                .iter()
                .filter(|s| got.iter().any(|g| g.item == s.item))
                .count();
            hits as f64 / t.len() as f64
        })
        .sum();
    found / users.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fit;
    use crate::data::Interactions;
    use crate::models::{AlsConfig, BprConfig, LightFmConfig, PopularityConfig};

    fn data() -> Interactions {
        let mut t = Vec::new();
        for u in 0..60u32 {
            for i in 0..120u32 {
                if (u * 7 + i * 3) % 11 < 2 || (u % 4 == i % 4 && i < 40) {
                    t.push((u, i, 1.0));
                }
            }
        }
        Interactions::from_triples(&t)
    }

    /// The dot form reproduces every model's own scores, and the exact index its
    /// `recommend` lists.
    #[test]
    fn dot_forms_equal_the_models_scores_and_exact_lists_equal_recommend() {
        let data = data();
        let models: Vec<Box<dyn Recommender>> = vec![
            Box::new(
                AlsConfig::new()
                    .with_factors(8)
                    .with_iterations(3)
                    .fit(&data)
                    .unwrap(),
            ),
            Box::new(
                BprConfig::new()
                    .with_factors(8)
                    .with_epochs(3)
                    .fit(&data)
                    .unwrap(),
            ),
            Box::new(LightFmConfig::new().with_epochs(3).fit(&data).unwrap()),
        ];
        let users: Vec<u32> = (0..60).collect();
        for m in &models {
            let form = m.dot_form().unwrap();
            for u in [0u32, 17, 59] {
                for i in [0u32, 55, 119] {
                    let d = form.dim;
                    let via = crate::models::dot(
                        form.user(u).unwrap(),
                        &form.items[i as usize * d..(i as usize + 1) * d],
                    );
                    let own = m.score(u, i);
                    assert!(
                        (via - own).abs() <= 1e-4 * own.abs().max(1.0),
                        "{via} vs {own}"
                    );
                }
            }
            let exact = ExactIndex::new(m.as_ref()).unwrap();
            let lists = exact.top_k_batch(&users, 10, |u| m.train_set().user(u).0);
            for (&u, list) in users.iter().zip(&lists) {
                let want: Vec<u32> = m.recommend(u, 10).iter().map(|s| s.item).collect();
                let got: Vec<u32> = list.iter().map(|s| s.item).collect();
                // Same items; ties within rounding may swap neighbours.
                let mut a = want.clone();
                let mut b = got.clone();
                a.sort_unstable();
                b.sort_unstable();
                assert_eq!(a, b, "user {u}");
            }
        }
        let pop = PopularityConfig::default().fit(&data).unwrap();
        assert!(
            ExactIndex::new(&pop)
                .unwrap_err()
                .to_string()
                .contains("dot form")
        );
    }

    #[test]
    fn hnsw_recall_is_high_and_exclusions_hold() {
        let data = data();
        let m = AlsConfig::new()
            .with_factors(8)
            .with_iterations(3)
            .fit(&data)
            .unwrap();
        let exact = ExactIndex::new(&m).unwrap();
        let ann = HnswIndex::new(&m, HnswConfig::default()).unwrap();
        let users: Vec<u32> = (0..60).collect();
        let recall = recall_at_k(&exact, &ann, &users, 10);
        // 120 items and ef 100: the graph search is all but exhaustive.
        assert!(recall > 0.95, "recall {recall}");
        let seen = m.train_set().user(3).0;
        let got = ann.top_k(3, 10, seen);
        assert!(got.iter().all(|s| !seen.contains(&s.item)));
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score - 1e-4));
        assert!(ann.top_k(10_000, 10, &[]).is_empty());
        let bad = HnswConfig {
            ef_search: 0,
            ..HnswConfig::default()
        };
        assert!(HnswIndex::new(&m, bad).is_err());
    }
}
