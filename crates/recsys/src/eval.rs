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
/// over those users.
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
    let per_user: Vec<([f64; 6], Vec<u32>)> = users
        .par_iter()
        .map(|(u, rel)| {
            let mut scores = Vec::new();
            model.score_all(*u, &mut scores);
            for &i in seen.user(*u).0 {
                scores[i as usize] = f32::NEG_INFINITY;
            }
            let ranked: Vec<u32> = top_k(&scores, k).into_iter().map(|s| s.item).collect();
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
        })
        .collect();
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
