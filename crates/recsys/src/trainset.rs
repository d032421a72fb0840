//! The training matrix every model fits on: ratings indexed by user and by item (compressed
//! sparse rows, ids sorted), the global mean and the rating scale. Kept inside fitted models so
//! that `recommend` can leave out what a user has already seen.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{RecsysError, Result};

/// Ratings by user and by item, in compressed sparse rows.
///
/// Read back from a saved model only when its two indexes hold together ([`TrainSet::check`]):
/// a file whose offsets, ids or ratings do not is a deserialisation error naming the part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTrainSet")]
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

/// A [`TrainSet`] as read from a file, before [`TrainSet::check`].
#[derive(Deserialize)]
struct RawTrainSet {
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

impl TryFrom<RawTrainSet> for TrainSet {
    type Error = String;

    fn try_from(r: RawTrainSet) -> std::result::Result<Self, String> {
        let set = TrainSet {
            num_users: r.num_users,
            num_items: r.num_items,
            global_mean: r.global_mean,
            scale: r.scale,
            user_ptr: r.user_ptr,
            user_items: r.user_items,
            user_ratings: r.user_ratings,
            item_ptr: r.item_ptr,
            item_users: r.item_users,
            item_ratings: r.item_ratings,
        };
        set.check()?;
        Ok(set)
    }
}

/// Checks one compressed-sparse-rows index: `rows + 1` non-decreasing offsets from 0 to the
/// number of entries, column ids below `cols`, finite values.
fn check_csr(
    name: &str,
    [rows, cols]: [usize; 2],
    ptr: &[usize],
    ids: &[u32],
    values: &[f32],
) -> std::result::Result<(), String> {
    if ptr.len() != rows + 1 || ptr.first() != Some(&0) {
        return Err(format!(
            "training set {name} index: {} offsets for {rows} rows",
            ptr.len()
        ));
    }
    if ptr.windows(2).any(|w| w[0] > w[1]) || ptr[rows] != ids.len() || ids.len() != values.len() {
        return Err(format!(
            "training set {name} index: offsets that do not cover its {} ids and {} ratings",
            ids.len(),
            values.len()
        ));
    }
    if let Some(id) = ids.iter().find(|&&id| id as usize >= cols) {
        return Err(format!("training set {name} index: id {id} of only {cols}"));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(format!("training set {name} index: rating {v}"));
    }
    Ok(())
}

/// Compressed rows of `(row, col, value)` triples by a counting sort, each row's columns then
/// sorted (in parallel; rows already in order, as generated data, are left as they are).
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
    let mut rows = Vec::with_capacity(n);
    let (mut rest_c, mut rest_v) = (cols.as_mut_slice(), vals.as_mut_slice());
    for w in ptr.windows(2) {
        let (c, tail_c) = rest_c.split_at_mut(w[1] - w[0]);
        let (v, tail_v) = rest_v.split_at_mut(w[1] - w[0]);
        rows.push((c, v));
        (rest_c, rest_v) = (tail_c, tail_v);
    }
    rows.par_iter_mut()
        .filter(|(c, _)| !c.is_sorted())
        .for_each(|(c, v)| {
            let mut pairs: Vec<(u32, f32)> = c.iter().copied().zip(v.iter().copied()).collect();
            pairs.sort_by_key(|p| p.0);
            for (k, (col, val)) in pairs.into_iter().enumerate() {
                c[k] = col;
                v[k] = val;
            }
        });
    (ptr, cols, vals)
}

/// The transpose of a compressed-row matrix with `n` columns: its columns as rows, each in
/// row order (so already sorted).
fn transpose(
    n: usize,
    (ptr, cols, vals): (&[usize], &[u32], &[f32]),
) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    let mut out_ptr = vec![0usize; n + 1];
    for &c in cols {
        out_ptr[c as usize + 1] += 1;
    }
    for i in 0..n {
        out_ptr[i + 1] += out_ptr[i];
    }
    let mut fill = out_ptr.clone();
    let mut out_cols = vec![0u32; cols.len()];
    let mut out_vals = vec![0f32; cols.len()];
    for (row, w) in ptr.windows(2).enumerate() {
        for k in w[0]..w[1] {
            let at = &mut fill[cols[k] as usize];
            out_cols[*at] = row as u32;
            out_vals[*at] = vals[k];
            *at += 1;
        }
    }
    (out_ptr, out_cols, out_vals)
}

impl TrainSet {
    /// Indexes `data`; ids must be below the id maps' sizes.
    ///
    /// # Errors
    /// [`RecsysError::Data`] for no interactions, ids past the id maps or a non-finite rating.
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
        let (user_ptr, user_items, user_ratings) = csr(nu, by_user);
        let (item_ptr, item_users, item_ratings) =
            transpose(ni, (&user_ptr, &user_items, &user_ratings));
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

    /// Checks that the two indexes hold together: offsets, ids within the id maps, the same
    /// number of ratings both ways, finite ratings, mean and scale. [`TrainSet::new`] always
    /// builds one that does; a saved model is checked with this when it is read.
    ///
    /// # Errors
    /// The reason, naming the part that does not hold together.
    pub fn check(&self) -> std::result::Result<(), String> {
        let dims = [self.num_users, self.num_items];
        check_csr(
            "user",
            dims,
            &self.user_ptr,
            &self.user_items,
            &self.user_ratings,
        )?;
        check_csr(
            "item",
            [dims[1], dims[0]],
            &self.item_ptr,
            &self.item_users,
            &self.item_ratings,
        )?;
        if self.user_items.len() != self.item_users.len() {
            return Err(format!(
                "training set: {} ratings by user but {} by item",
                self.user_items.len(),
                self.item_users.len()
            ));
        }
        let (lo, hi) = self.scale;
        if !(self.global_mean.is_finite() && lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(format!(
                "training set: mean {} and scale ({lo}, {hi})",
                self.global_mean
            ));
        }
        Ok(())
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

    /// A saved training set whose parts do not hold together is refused when read, with
    /// the part named; the one [`TrainSet::new`] built round-trips.
    #[test]
    fn only_a_consistent_training_set_is_read_back() {
        let data = Interactions::from_triples(&[(1, 2, 4.0), (0, 1, 3.0), (1, 0, 1.0)]);
        let t = TrainSet::new(&data).unwrap();
        let json = serde_json::to_value(&t).unwrap();
        let back: TrainSet = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, t);
        let broken = |key: &str, value: serde_json::Value| {
            let mut j = json.clone();
            j[key] = value;
            serde_json::from_value::<TrainSet>(j)
                .unwrap_err()
                .to_string()
        };
        let err = broken("user_items", serde_json::json!([1, 9, 2]));
        assert!(err.contains("user index: id 9 of only 3"), "{err}");
        let err = broken("item_ptr", serde_json::json!([0, 1]));
        assert!(err.contains("item index: 2 offsets for 3 rows"), "{err}");
        let err = broken("user_ratings", serde_json::json!([3.0]));
        assert!(err.contains("do not cover"), "{err}");
        let err = broken("num_users", serde_json::json!(1));
        assert!(err.contains("user index"), "{err}");
        let err = broken("scale", serde_json::json!([5.0, 1.0]));
        assert!(err.contains("scale"), "{err}");
    }
}
