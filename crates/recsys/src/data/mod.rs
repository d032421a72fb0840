//! Interaction data: who rated (or clicked) what, with dense ids.
//!
//! - [`Interactions`]: (user, item, rating, timestamp) records plus the two [`IdMap`]s that
//!   translate the file's raw ids to dense `0..n` ids and back;
//! - [`csv`]: readers for MovieLens `u.data`, `ratings.csv` and any delimited file with a
//!   [column mapping](csv::CsvFormat); bad rows are errors naming file and line, or with
//!   `lenient` skipped and counted;
//! - [`movielens`]: the whole ml-100k folder, with item features from `u.item` and user
//!   features from `u.user`;
//! - [`features`]: sparse feature matrices for content and hybrid models;
//! - [`split`]: seeded k-fold, random, per-user leave-last-n, per-user random and global
//!   temporal splits;
//! - [`synthetic`]: seeded implicit feedback of any size with power-law item popularity and
//!   log-normal user activity (MovieLens 20M's shape by default), for scale benchmarks.

pub mod csv;
pub mod features;
pub mod movielens;
pub mod split;
pub mod synthetic;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use csv::{Column, CsvFormat};
pub use features::FeatureMatrix;
pub use movielens::MovieLens;
pub use split::{Fold, k_fold, leave_last_n, per_user_random, random_split, temporal_split};
pub use synthetic::SyntheticConfig;

/// A two-way map between a file's raw ids (as text) and dense ids `0..len()`, in order of
/// first appearance. Serialised as the list of raw ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct IdMap {
    raw: Vec<String>,
    dense: HashMap<String, u32>,
}

impl From<Vec<String>> for IdMap {
    fn from(raw: Vec<String>) -> Self {
        let mut map = IdMap::new();
        for r in &raw {
            map.insert(r);
        }
        map
    }
}

impl From<IdMap> for Vec<String> {
    fn from(map: IdMap) -> Self {
        map.raw
    }
}

impl IdMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dense id of `raw`, adding it if new.
    pub fn insert(&mut self, raw: &str) -> u32 {
        if let Some(&id) = self.dense.get(raw) {
            return id;
        }
        let id = self.raw.len() as u32;
        self.raw.push(raw.to_owned());
        self.dense.insert(raw.to_owned(), id);
        id
    }

    /// The dense id of `raw`, if known.
    pub fn dense(&self, raw: &str) -> Option<u32> {
        self.dense.get(raw).copied()
    }

    /// The raw id of dense id `id`.
    pub fn raw(&self, id: u32) -> Option<&str> {
        self.raw.get(id as usize).map(String::as_str)
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// True when no id is mapped.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// One interaction: dense user and item ids, the rating (1 for implicit feedback) and a
/// timestamp (0 when the file has none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// Dense user id.
    pub user: u32,
    /// Dense item id.
    pub item: u32,
    /// The rating, or 1 for implicit feedback.
    pub rating: f32,
    /// Seconds since the epoch, or 0.
    pub timestamp: i64,
}

/// A set of interactions over shared user and item id maps. Subsets made by the splits keep the
/// full maps, so a dense id means the same user in every fold.
#[derive(Debug, Clone)]
pub struct Interactions {
    /// The records, in file order (or the split's order).
    pub records: Vec<Interaction>,
    /// Raw user ids.
    pub users: Arc<IdMap>,
    /// Raw item ids.
    pub items: Arc<IdMap>,
    /// Rows skipped by a `lenient` reader.
    pub skipped: usize,
}

impl Interactions {
    /// Interactions over the given id maps.
    pub fn new(records: Vec<Interaction>, users: Arc<IdMap>, items: Arc<IdMap>) -> Self {
        Self {
            records,
            users,
            items,
            skipped: 0,
        }
    }

    /// Interactions from `(user, item, rating)` triples with dense ids, raw ids being the dense
    /// ids as text; for tests and synthetic data.
    pub fn from_triples(triples: &[(u32, u32, f32)]) -> Self {
        let n_users = triples.iter().map(|t| t.0 + 1).max().unwrap_or(0);
        let n_items = triples.iter().map(|t| t.1 + 1).max().unwrap_or(0);
        let map = |n: u32| {
            let mut m = IdMap::new();
            for i in 0..n {
                m.insert(&i.to_string());
            }
            Arc::new(m)
        };
        let records = triples
            .iter()
            .enumerate()
            .map(|(t, &(user, item, rating))| Interaction {
                user,
                item,
                rating,
                timestamp: t as i64,
            })
            .collect();
        Self::new(records, map(n_users), map(n_items))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of users in the id map (including users without records in this subset).
    pub fn num_users(&self) -> usize {
        self.users.len()
    }

    /// Number of items in the id map (including items without records in this subset).
    pub fn num_items(&self) -> usize {
        self.items.len()
    }

    /// The records at `indices`, over the same id maps.
    pub fn subset(&self, indices: &[usize]) -> Self {
        Self::new(
            indices.iter().map(|&i| self.records[i]).collect(),
            self.users.clone(),
            self.items.clone(),
        )
    }

    /// Implicit feedback: the records rated at least `threshold`, each with rating 1.
    pub fn implicit(&self, threshold: f32) -> Self {
        Self::new(
            self.records
                .iter()
                .filter(|r| r.rating >= threshold)
                .map(|r| Interaction { rating: 1.0, ..*r })
                .collect(),
            self.users.clone(),
            self.items.clone(),
        )
    }

    /// Mean rating (0 when empty).
    pub fn mean_rating(&self) -> f64 {
        if self.records.is_empty() {
            return 0.0;
        }
        self.records.iter().map(|r| r.rating as f64).sum::<f64>() / self.records.len() as f64
    }
}
