//! Evaluating fitted models: rating accuracy on held-out ratings, top-k ranking quality with
//! the user's training items excluded, and k-fold cross-validation with fit and test times.

use std::collections::HashMap;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Fold, Interactions};
use crate::error::{RecsysError, Result};
use crate::metrics::{self, ranking};
use crate::recommender::{Fit, Recommender, top_k};
use crate::retrieval::ExactIndex;
use crate::trainset::TrainSet;

/// RMSE and MAE of clipped predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatingScores {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Number of test ratings.
    pub count: usize,
}

/// Predicts every test rating (in parallel) and scores the predictions.
pub fn rating_scores(model: &dyn Recommender, test: &Interactions) -> RatingScores {
    let predicted: Vec<f32> = test
        .records
        .par_iter()
        .map(|r| model.predict(r.user, r.item))
        .collect();
    let actual: Vec<f32> = test.records.iter().map(|r| r.rating).collect();
    RatingScores {
        rmse: metrics::rmse(&predicted, &actual),
        mae: metrics::mae(&predicted, &actual),
        count: actual.len(),
    }
}

/// Means over users of the top-k metrics, plus catalogue coverage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankingScores {
    /// The list length.
    pub k: usize,
    /// Precision@k.
    pub precision: f64,
    /// Recall@k.
    pub recall: f64,
    /// NDCG@k.
    pub ndcg: f64,
    /// MAP@k.
    pub map: f64,
    /// Hit rate@k.
    pub hit_rate: f64,
    /// Mean reciprocal rank of the first relevant item in the full ranking.
    pub mrr: f64,
    /// Fraction of the catalogue recommended to at least one user.
    pub coverage: f64,
    /// Users evaluated (those with at least one relevant test item).
    pub users: usize,
}

/// Ranks every item for each test user with a relevant item (test rating >= `threshold`),
/// leaving out the user's items in `seen` (usually `model.train_set()`, or the full training
/// ratings when the model was fitted on positives only), and averages the top-`k` metrics
/// over those users. Users go in blocks of [`ExactIndex::BLOCK`] (one GEMM each for models
/// with a [dot form](Recommender::dot_form)), metrics in parallel, so memory stays at one
/// block of score rows at MovieLens 20M's size.
///
/// # Errors
/// [`RecsysError::Data`] when `seen` or `test` names an item past the model's items (another id
/// map).
pub fn ranking_scores(
    model: &dyn Recommender,
    seen: &TrainSet,
    test: &Interactions,
    k: usize,
    threshold: f32,
) -> Result<RankingScores> {
    let items = model.train_set().num_items();
    let past = seen
        .ratings()
        .map(|(_, i, _)| i)
        .chain(test.records.iter().map(|r| r.item))
        .find(|&i| i as usize >= items);
    if let Some(item) = past {
        return Err(RecsysError::Data(format!(
            "ranking: item id {item} but the model ranks {items} items (was it fitted on these \
             id maps?)"
        )));
    }
    let mut relevant: HashMap<u32, Vec<u32>> = HashMap::new();
    for r in test.records.iter().filter(|r| r.rating >= threshold) {
        relevant.entry(r.user).or_default().push(r.item);
    }
    let mut users: Vec<(u32, Vec<u32>)> = relevant.into_iter().collect();
    users.sort_unstable_by_key(|u| u.0);
    // Users in blocks, so that memory stays at one block of score rows at any size: models
    // with an inner-product form score a block by one GEMM, others user by user.
    let exact = ExactIndex::of(model);
    let block = ExactIndex::BLOCK;
    let mut rows = vec![0f32; block.min(users.len()) * items];
    let mut per_user: Vec<([f64; 6], Vec<u32>)> = Vec::with_capacity(users.len());
    for chunk in users.chunks(block) {
        let rows = &mut rows[..chunk.len() * items];
        match &exact {
            Some(index) => {
                let ids: Vec<u32> = chunk.iter().map(|u| u.0).collect();
                index.scores(&ids, rows);
            }
            None => rows
                .par_chunks_mut(items.max(1))
                .zip(chunk)
                .for_each(|(row, (u, _))| {
                    let mut scores = Vec::with_capacity(items);
                    model.score_all(*u, &mut scores);
                    row.copy_from_slice(&scores[..items]);
                }),
        }
        per_user.par_extend(
            rows.par_chunks_mut(items.max(1))
                .zip(chunk)
                .map(|(scores, (u, rel))| user_metrics(scores, seen.user(*u).0, rel, k)),
        );
    }
    let n = per_user.len().max(1) as f64;
    let mean = |m: usize| per_user.iter().map(|p| p.0[m]).sum::<f64>() / n;
    Ok(RankingScores {
        k,
        precision: mean(0),
        recall: mean(1),
        ndcg: mean(2),
        map: mean(3),
        hit_rate: mean(4),
        mrr: mean(5),
        coverage: ranking::catalogue_coverage(
            per_user.iter().map(|p| p.1.as_slice()),
            seen.num_items(),
        ),
        users: per_user.len(),
    })
}

/// One user's precision, recall, NDCG, AP, hit and reciprocal rank, and the top-k list, from
/// the user's scores over every item (seen items are set to `-inf` here).
fn user_metrics(scores: &mut [f32], seen: &[u32], rel: &[u32], k: usize) -> ([f64; 6], Vec<u32>) {
    for &i in seen {
        if let Some(s) = scores.get_mut(i as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
    let ranked: Vec<u32> = top_k(scores, k).into_iter().map(|s| s.item).collect();
    let best = rel
        .iter()
        .map(|&i| scores.get(i as usize).copied().unwrap_or(f32::NEG_INFINITY))
        .fold(f32::NEG_INFINITY, f32::max);
    let rank = 1 + scores.iter().filter(|&&s| s > best).count();
    let rr = if best > f32::NEG_INFINITY {
        1.0 / rank as f64
    } else {
        0.0
    };
    (
        [
            ranking::precision_at_k(&ranked, rel, k),
            ranking::recall_at_k(&ranked, rel, k),
            ranking::ndcg_at_k(&ranked, rel, k),
            ranking::average_precision_at_k(&ranked, rel, k),
            ranking::hit_at_k(&ranked, rel, k),
            rr,
        ],
        ranked,
    )
}

/// One fold's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FoldScores {
    /// Rating accuracy on the fold's test set.
    pub rating: RatingScores,
    /// Seconds to fit.
    pub fit_seconds: f64,
    /// Seconds to predict the test set.
    pub test_seconds: f64,
}

/// Fits `params` on each fold's training part and scores its test part.
///
/// # Errors
/// The first fold's fitting error.
pub fn cross_validate<F: Fit>(params: &F, folds: &[Fold]) -> Result<Vec<FoldScores>> {
    folds
        .iter()
        .map(|fold| {
            let start = Instant::now();
            let model = params.fit(&fold.train)?;
            let fit_seconds = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let rating = rating_scores(&model, &fold.test);
            Ok(FoldScores {
                rating,
                fit_seconds,
                test_seconds: start.elapsed().as_secs_f64(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::per_user_random;
    use crate::models::AlsConfig;

    /// A model seen only through `score`: no dot form, so ranking goes user by user.
    struct Opaque<'a>(&'a dyn Recommender);

    impl Recommender for Opaque<'_> {
        fn train_set(&self) -> &TrainSet {
            self.0.train_set()
        }
        fn score(&self, user: u32, item: u32) -> f32 {
            self.0.score(user, item)
        }
    }

    /// The blocked GEMM path and the per-user path give the same metrics, over more users
    /// than one block.
    #[test]
    fn gemm_blocks_and_per_user_scoring_agree() {
        let mut t = Vec::new();
        for u in 0..600u32 {
            for i in 0..50u32 {
                if (u * 7 + i * 3) % 5 < 2 {
                    t.push((u, i, 1.0 + ((u + i) % 5) as f32));
                }
            }
        }
        let data = Interactions::from_triples(&t);
        let fold = per_user_random(&data, 3, 0).unwrap();
        let model = AlsConfig::new()
            .with_factors(6)
            .with_iterations(2)
            .fit(&fold.train.implicit(3.0))
            .unwrap();
        assert!(model.dot_form().is_some());
        let seen = TrainSet::new(&fold.train).unwrap();
        let a = ranking_scores(&model, &seen, &fold.test, 5, 3.0).unwrap();
        let b = ranking_scores(&Opaque(&model), &seen, &fold.test, 5, 3.0).unwrap();
        assert!(a.users > ExactIndex::BLOCK, "{} users", a.users);
        assert_eq!(a.users, b.users);
        for (x, y) in [
            (a.precision, b.precision),
            (a.recall, b.recall),
            (a.ndcg, b.ndcg),
            (a.mrr, b.mrr),
            (a.coverage, b.coverage),
        ] {
            assert!((x - y).abs() < 1e-3, "{a:?} vs {b:?}");
        }
        assert!(a.precision > 0.0);
    }
}
