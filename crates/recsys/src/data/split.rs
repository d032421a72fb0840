//! Train/test splits: seeded random k-fold (Surprise's `KFold`), a seeded random split,
//! per-user leave-last-n by timestamp (the usual ranking protocol) and a global temporal split
//! (train strictly before the test period).

use crate::data::Interactions;
use crate::error::{RecsysError, Result};

/// A train / test pair over the same id maps.
#[derive(Debug, Clone)]
pub struct Fold {
    /// Training interactions.
    pub train: Interactions,
    /// Held-out interactions.
    pub test: Interactions,
}

/// `k` folds: the records shuffled with `seed` and cut into `k` parts whose sizes differ by at
/// most one; fold `f` tests on part `f` and trains on the rest.
///
/// # Errors
/// [`RecsysError::InvalidParam`] unless `2 <= k <= data.len()`.
pub fn k_fold(data: &Interactions, k: usize, seed: u64) -> Result<Vec<Fold>> {
    if k < 2 || k > data.len() {
        return Err(RecsysError::param(
            "k-fold",
            "k",
            format!("{k} with {} records", data.len()),
            "at least 2 and at most the number of records",
        ));
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    kiln_core::data::shuffle(&mut order, seed);
    let n = data.len();
    let bounds: Vec<usize> = (0..=k).map(|f| f * n / k).collect();
    Ok((0..k)
        .map(|f| {
            let test = &order[bounds[f]..bounds[f + 1]];
            let train: Vec<usize> = order[..bounds[f]]
                .iter()
                .chain(&order[bounds[f + 1]..])
                .copied()
                .collect();
            Fold {
                train: data.subset(&train),
                test: data.subset(test),
            }
        })
        .collect())
}

/// A seeded random split holding out `test_fraction` of the records.
///
/// # Errors
/// [`RecsysError::InvalidParam`] unless `test_fraction` is in `[0, 1)`.
pub fn random_split(data: &Interactions, test_fraction: f64, seed: u64) -> Result<Fold> {
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(RecsysError::param(
            "split",
            "test_fraction",
            test_fraction,
            "in [0, 1)",
        ));
    }
    let (train, test) = kiln_core::data::split_indices(data.len(), test_fraction, seed);
    Ok(Fold {
        train: data.subset(&train),
        test: data.subset(&test),
    })
}

/// Per user, the `n` most recent records (by timestamp, ties by file order) are held out;
/// users with `n` records or fewer stay wholly in training.
///
/// # Errors
/// [`RecsysError::InvalidParam`] for `n = 0`.
pub fn leave_last_n(data: &Interactions, n: usize) -> Result<Fold> {
    per_user_holdout(data, n, |_, idx| {
        idx.sort_by_key(|&i| (data.records[i].timestamp, i))
    })
}

/// Per user, `n` records drawn at random (seeded) are held out; users with `n` records or
/// fewer stay wholly in training.
///
/// # Errors
/// [`RecsysError::InvalidParam`] for `n = 0`.
pub fn per_user_random(data: &Interactions, n: usize, seed: u64) -> Result<Fold> {
    per_user_holdout(data, n, |u, idx| {
        kiln_core::data::shuffle(idx, seed ^ (u as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    })
}

/// Groups record indices by user, orders each user's records with `order` and holds out the
/// last `n` of users that have more than `n`.
fn per_user_holdout(
    data: &Interactions,
    n: usize,
    order: impl Fn(usize, &mut [usize]),
) -> Result<Fold> {
    if n == 0 {
        return Err(RecsysError::param("per-user holdout", "n", n, "at least 1"));
    }
    let mut by_user: Vec<Vec<usize>> = vec![Vec::new(); data.num_users()];
    for (i, r) in data.records.iter().enumerate() {
        by_user[r.user as usize].push(i);
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (u, mut idx) in by_user.into_iter().enumerate() {
        order(u, &mut idx);
        let cut = if idx.len() > n {
            idx.len() - n
        } else {
            idx.len()
        };
        train.extend_from_slice(&idx[..cut]);
        test.extend_from_slice(&idx[cut..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(Fold {
        train: data.subset(&train),
        test: data.subset(&test),
    })
}

/// The last `test_fraction` of the records in time are held out: every test record is at or
/// after every training record's timestamp.
///
/// # Errors
/// [`RecsysError::InvalidParam`] unless `test_fraction` is in `[0, 1)`.
pub fn temporal_split(data: &Interactions, test_fraction: f64) -> Result<Fold> {
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(RecsysError::param(
            "split",
            "test_fraction",
            test_fraction,
            "in [0, 1)",
        ));
    }
    let mut order: Vec<usize> = (0..data.len()).collect();
    order.sort_by_key(|&i| (data.records[i].timestamp, i));
    let cut = data.len() - (data.len() as f64 * test_fraction).round() as usize;
    let (train, test) = order.split_at(cut);
    let (mut train, mut test) = (train.to_vec(), test.to_vec());
    train.sort_unstable();
    test.sort_unstable();
    Ok(Fold {
        train: data.subset(&train),
        test: data.subset(&test),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(n_users: u32, per_user: u32) -> Interactions {
        let mut t = Vec::new();
        for u in 0..n_users {
            for i in 0..per_user {
                t.push((u, (u * 7 + i) % 13, 1.0 + (i % 5) as f32));
            }
        }
        let mut d = Interactions::from_triples(&t);
        // Timestamps descending in file order, so that "last" is not "last in the file".
        let len = d.records.len() as i64;
        for (k, r) in d.records.iter_mut().enumerate() {
            r.timestamp = len - k as i64;
        }
        d
    }

    proptest! {
        #[test]
        fn k_fold_partitions_the_records(k in 2usize..7, seed: u64) {
            let d = data(5, 6);
            let folds = k_fold(&d, k, seed).unwrap();
            let mut tests: Vec<(u32, u32)> = folds
                .iter()
                .flat_map(|f| f.test.records.iter().map(|r| (r.user, r.item)))
                .collect();
            tests.sort_unstable();
            let mut all: Vec<(u32, u32)> = d.records.iter().map(|r| (r.user, r.item)).collect();
            all.sort_unstable();
            prop_assert_eq!(tests, all);
            for f in &folds {
                prop_assert_eq!(f.train.len() + f.test.len(), d.len());
                let sizes = folds.iter().map(|f| f.test.len());
                prop_assert!(sizes.clone().max().unwrap() - sizes.min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn leave_last_n_holds_out_each_users_latest() {
        let mut d = data(3, 5);
        // User 2 has only these 5 records; give user 0 a sixth.
        d.records.push(crate::data::Interaction {
            user: 0,
            item: 12,
            rating: 3.0,
            timestamp: 0,
        });
        let fold = leave_last_n(&d, 5).unwrap();
        // User 0 (6 records) loses its 5 latest; users 1 and 2 (5 each) stay in training.
        assert_eq!(fold.test.len(), 5);
        assert!(fold.test.records.iter().all(|r| r.user == 0));
        let latest_train = fold
            .train
            .records
            .iter()
            .filter(|r| r.user == 0)
            .map(|r| r.timestamp)
            .max();
        let earliest_test = fold.test.records.iter().map(|r| r.timestamp).min();
        assert!(latest_train < earliest_test);
        assert!(leave_last_n(&d, 0).is_err());
        let random = per_user_random(&d, 5, 9).unwrap();
        assert_eq!(random.test.len(), 5);
        assert!(random.test.records.iter().all(|r| r.user == 0));
    }

    #[test]
    fn temporal_split_puts_the_future_in_test() {
        let d = data(4, 5);
        let fold = temporal_split(&d, 0.25).unwrap();
        assert_eq!(fold.test.len(), 5);
        let t_max = fold
            .train
            .records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap();
        let t_min = fold.test.records.iter().map(|r| r.timestamp).min().unwrap();
        assert!(t_max <= t_min);
        assert!(k_fold(&d, 1, 0).is_err());
        assert!(random_split(&d, 1.5, 0).is_err());
        assert_eq!(random_split(&d, 0.2, 3).unwrap().test.len(), 4);
    }
}
