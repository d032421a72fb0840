//! Top-k ranking metrics with binary relevance. `ranked` is a model's list, best first (already
//! without the user's training items); `relevant` the user's held-out relevant items.
//!
//! Definitions follow the common recommender literature: AP@k divides by `min(|relevant|, k)`
//! (the `apk` of Kaggle's ml_metrics), NDCG@k uses `1 / log2(rank + 1)` gains with the ideal
//! list of `min(|relevant|, k)` hits.

use std::collections::HashSet;

fn hits(ranked: &[u32], relevant: &[u32], k: usize) -> impl Iterator<Item = bool> {
    let rel: HashSet<u32> = relevant.iter().copied().collect();
    ranked
        .iter()
        .take(k)
        .map(move |i| rel.contains(i))
        .collect::<Vec<_>>()
        .into_iter()
}

/// Fraction of the top `k` that is relevant (a short list still divides by `k`).
pub fn precision_at_k(ranked: &[u32], relevant: &[u32], k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    hits(ranked, relevant, k).filter(|&h| h).count() as f64 / k as f64
}

/// Fraction of the relevant items found in the top `k` (0 when nothing is relevant).
pub fn recall_at_k(ranked: &[u32], relevant: &[u32], k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    hits(ranked, relevant, k).filter(|&h| h).count() as f64 / relevant.len() as f64
}

/// 1 when any of the top `k` is relevant, else 0.
pub fn hit_at_k(ranked: &[u32], relevant: &[u32], k: usize) -> f64 {
    if hits(ranked, relevant, k).any(|h| h) {
        1.0
    } else {
        0.0
    }
}

/// Normalised discounted cumulative gain of the top `k`.
pub fn ndcg_at_k(ranked: &[u32], relevant: &[u32], k: usize) -> f64 {
    let gain = |pos: usize| 1.0 / ((pos + 2) as f64).log2();
    let dcg: f64 = hits(ranked, relevant, k)
        .enumerate()
        .filter(|(_, h)| *h)
        .map(|(p, _)| gain(p))
        .sum();
    let ideal: f64 = (0..relevant.len().min(k)).map(gain).sum();
    if ideal > 0.0 { dcg / ideal } else { 0.0 }
}

/// Average precision of the top `k`: the mean of precision@i at each hit i, over
/// `min(|relevant|, k)`.
pub fn average_precision_at_k(ranked: &[u32], relevant: &[u32], k: usize) -> f64 {
    let denom = relevant.len().min(k);
    if denom == 0 {
        return 0.0;
    }
    let mut found = 0;
    let mut sum = 0.0;
    for (p, h) in hits(ranked, relevant, k).enumerate() {
        if h {
            found += 1;
            sum += found as f64 / (p + 1) as f64;
        }
    }
    sum / denom as f64
}

/// `1 / rank` of the first relevant item in `ranked` (the whole list), 0 when none is there.
pub fn reciprocal_rank(ranked: &[u32], relevant: &[u32]) -> f64 {
    hits(ranked, relevant, ranked.len())
        .position(|h| h)
        .map_or(0.0, |p| 1.0 / (p + 1) as f64)
}

/// Fraction of the `num_items` catalogue that appears in at least one list.
pub fn catalogue_coverage<'a>(lists: impl IntoIterator<Item = &'a [u32]>, num_items: usize) -> f64 {
    if num_items == 0 {
        return 0.0;
    }
    let seen: HashSet<u32> = lists.into_iter().flatten().copied().collect();
    seen.len() as f64 / num_items as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed() {
        // Hits at ranks 1 and 3 of 4; three relevant items, one never retrieved.
        let ranked = [7, 2, 5, 9];
        let relevant = [5, 7, 11];
        assert_eq!(precision_at_k(&ranked, &relevant, 4), 0.5);
        assert_eq!(precision_at_k(&ranked, &relevant, 2), 0.5);
        assert!((recall_at_k(&ranked, &relevant, 4) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(hit_at_k(&ranked, &relevant, 1), 1.0);
        assert_eq!(hit_at_k(&[2, 9], &relevant, 2), 0.0);
        // AP@4 = (1/1 + 2/3) / min(3, 4)
        assert!(
            (average_precision_at_k(&ranked, &relevant, 4) - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12
        );
        // DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) + 1/log2(4)
        let idcg = 1.0 + 1.0 / 3f64.log2() + 0.5;
        assert!((ndcg_at_k(&ranked, &relevant, 4) - 1.5 / idcg).abs() < 1e-12);
        assert_eq!(reciprocal_rank(&[2, 9, 5], &relevant), 1.0 / 3.0);
        assert_eq!(reciprocal_rank(&[2, 9], &relevant), 0.0);
        assert_eq!(catalogue_coverage([&ranked[..], &[2, 3][..]], 10), 0.5);
    }

    proptest! {
        #[test]
        fn bounded_and_perfect_is_one(
            ranked in proptest::collection::hash_set(0u32..40, 0..20),
            relevant in proptest::collection::hash_set(0u32..40, 1..10),
            k in 1usize..15,
        ) {
            let ranked: Vec<u32> = ranked.into_iter().collect();
            let relevant: Vec<u32> = relevant.into_iter().collect();
            for m in [
                precision_at_k(&ranked, &relevant, k),
                recall_at_k(&ranked, &relevant, k),
                ndcg_at_k(&ranked, &relevant, k),
                average_precision_at_k(&ranked, &relevant, k),
                hit_at_k(&ranked, &relevant, k),
                reciprocal_rank(&ranked, &relevant),
            ] {
                prop_assert!((0.0..=1.0).contains(&m), "{m}");
            }
            // The relevant items first: NDCG, AP, hit and RR are 1; precision is 1 when k
            // does not exceed the relevant count.
            let mut perfect = relevant.clone();
            perfect.extend(ranked.iter().filter(|i| !relevant.contains(i)));
            prop_assert!((ndcg_at_k(&perfect, &relevant, k) - 1.0).abs() < 1e-12);
            prop_assert!((average_precision_at_k(&perfect, &relevant, k) - 1.0).abs() < 1e-12);
            prop_assert_eq!(reciprocal_rank(&perfect, &relevant), 1.0);
            if k <= relevant.len() {
                prop_assert_eq!(precision_at_k(&perfect, &relevant, k), 1.0);
            }
        }
    }
}
