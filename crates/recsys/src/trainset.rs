//! The training matrix every model fits on: ratings indexed by user and by item (compressed
//! sparse rows, ids sorted), the global mean and the rating scale. Kept inside fitted models so
//! that `recommend` can leave out what a user has already seen.

use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{RecsysError, Result};

/// Ratings by user and by item, in compressed sparse rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSet {
    num_users: usize,
    num_items: usize,
    global_mean: f32,
    scale: (f32, f32),
    user_ptr: Vec<usize>,
    user_items: Vec<u32>,
    user_ratings: Vec<f32>,
    item_ptr: Vec<usize>,
    item_users: Vec<u32>,
    item_ratings: Vec<f32>,
}

fn csr(
    n: usize,
    triples: impl Iterator<Item = (u32, u32, f32)> + Clone,
) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    let mut ptr = vec![0usize; n + 1];
    for (row, _, _) in triples.clone() {
        ptr[row as usize + 1] += 1;
    }
    for i in 0..n {
        ptr[i + 1] += ptr[i];
    }
    let nnz = ptr[n];
    let mut fill = ptr.clone();
    let mut cols = vec![0u32; nnz];
    let mut vals = vec![0f32; nnz];
    for (row, col, v) in triples {
        let at = &mut fill[row as usize];
        cols[*at] = col;
        vals[*at] = v;
        *at += 1;
    }
    for r in 0..n {
        let (s, e) = (ptr[r], ptr[r + 1]);
        let mut pairs: Vec<(u32, f32)> = cols[s..e]
            .iter()
            .copied()
            .zip(vals[s..e].iter().copied())
            .collect();
        pairs.sort_by_key(|p| p.0);
        for (k, (c, v)) in pairs.into_iter().enumerate() {
            cols[s + k] = c;
            vals[s + k] = v;
        }
    }
    (ptr, cols, vals)
}

impl TrainSet {
    /// Indexes `data`; ids must be below the id maps' sizes.
    pub fn new(data: &Interactions) -> Result<Self> {
        if data.is_empty() {
            return Err(RecsysError::Data(
                "cannot fit on an empty set of interactions".into(),
            ));
        }
        let (nu, ni) = (data.num_users(), data.num_items());
        if let Some(r) = data
            .records
            .iter()
            .find(|r| r.user as usize >= nu || r.item as usize >= ni)
        {
            return Err(RecsysError::Data(format!(
                "interaction ({}, {}) is outside the id maps ({nu} users, {ni} items)",
                r.user, r.item
            )));
        }
        let by_user = data.records.iter().map(|r| (r.user, r.item, r.rating));
        let by_item = data.records.iter().map(|r| (r.item, r.user, r.rating));
        let (user_ptr, user_items, user_ratings) = csr(nu, by_user);
        let (item_ptr, item_users, item_ratings) = csr(ni, by_item);
        let (lo, hi) = data
            .records
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| {
                (lo.min(r.rating), hi.max(r.rating))
            });
        Ok(Self {
            num_users: nu,
            num_items: ni,
            global_mean: data.mean_rating() as f32,
            scale: (lo, hi),
            user_ptr,
            user_items,
            user_ratings,
            item_ptr,
            item_users,
            item_ratings,
        })
    }

    /// Number of users (the id map's size, rated or not).
    pub fn num_users(&self) -> usize {
        self.num_users
    }

    /// Number of items (the id map's size, rated or not).
    pub fn num_items(&self) -> usize {
        self.num_items
    }

    /// Number of ratings.
    pub fn num_ratings(&self) -> usize {
        self.user_items.len()
    }

    /// Mean training rating.
    pub fn global_mean(&self) -> f32 {
        self.global_mean
    }

    /// Lowest and highest training rating; predictions are clipped to it.
    pub fn scale(&self) -> (f32, f32) {
        self.scale
    }

    /// The items user `u` rated (ascending ids) and the ratings; empty for unknown users.
    pub fn user(&self, u: u32) -> (&[u32], &[f32]) {
        let u = u as usize;
        if u >= self.num_users {
            return (&[], &[]);
        }
        let (s, e) = (self.user_ptr[u], self.user_ptr[u + 1]);
        (&self.user_items[s..e], &self.user_ratings[s..e])
    }

    /// The users who rated item `i` (ascending ids) and the ratings; empty for unknown items.
    pub fn item(&self, i: u32) -> (&[u32], &[f32]) {
        let i = i as usize;
        if i >= self.num_items {
            return (&[], &[]);
        }
        let (s, e) = (self.item_ptr[i], self.item_ptr[i + 1]);
        (&self.item_users[s..e], &self.item_ratings[s..e])
    }

    /// Whether user `u` has training ratings.
    pub fn user_known(&self, u: u32) -> bool {
        !self.user(u).0.is_empty()
    }

    /// Whether item `i` has training ratings.
    pub fn item_known(&self, i: u32) -> bool {
        !self.item(i).0.is_empty()
    }

    /// Whether user `u` rated item `i` in training.
    pub fn contains(&self, u: u32, i: u32) -> bool {
        self.user(u).0.binary_search(&i).is_ok()
    }

    /// Every `(user, item, rating)`, user by user.
    pub fn ratings(&self) -> impl Iterator<Item = (u32, u32, f32)> + '_ {
        (0..self.num_users as u32).flat_map(move |u| {
            let (items, ratings) = self.user(u);
            items.iter().zip(ratings).map(move |(&i, &r)| (u, i, r))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_both_ways() {
        let data =
            Interactions::from_triples(&[(1, 2, 4.0), (0, 1, 3.0), (1, 0, 1.0), (2, 2, 5.0)]);
        let t = TrainSet::new(&data).unwrap();
        assert_eq!(t.user(1), (&[0u32, 2][..], &[1.0f32, 4.0][..]));
        assert_eq!(t.item(2), (&[1u32, 2][..], &[4.0f32, 5.0][..]));
        assert_eq!(t.global_mean(), 3.25);
        assert_eq!(t.scale(), (1.0, 5.0));
        assert!(t.contains(0, 1) && !t.contains(0, 2));
        assert!(!t.user_known(7));
        assert_eq!(t.ratings().count(), 4);
        assert!(TrainSet::new(&Interactions::from_triples(&[])).is_err());
    }
}
