//! The one API every model shares, in linfa's shape: a parameter struct implements [`Fit`]
//! (`MfConfig::new().fit(&train)?`), the fitted model implements [`Recommender`]
//! (`predict`, `recommend`, `similar_items`) and [`Persist`] (`save` / `load`).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{RecsysError, Result};
use crate::trainset::TrainSet;

/// An item and its score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Dense item id.
    pub item: u32,
    /// The model's score (a predicted rating for rating models).
    pub score: f32,
}

/// A model's scores as inner products: `score(u, i) = users[u] . items[i]`, rows of `dim`
/// values (row-major), one per dense user and item id.
#[derive(Debug, Clone, PartialEq)]
pub struct DotForm {
    /// Values per row.
    pub dim: usize,
    /// User rows.
    pub users: Vec<f32>,
    /// Item rows.
    pub items: Vec<f32>,
}

impl DotForm {
    /// User `u`'s row (`None` past the users).
    pub fn user(&self, u: u32) -> Option<&[f32]> {
        let d = self.dim;
        self.users.get(u as usize * d..(u as usize + 1) * d)
    }

    /// Number of items.
    pub fn num_items(&self) -> usize {
        self.items.len().checked_div(self.dim).unwrap_or(0)
    }
}

/// Model parameters that can be fitted to interactions.
pub trait Fit {
    /// The fitted model.
    type Model: Recommender;

    /// Checks the parameters without any data, as [`fit`](Self::fit) does first (linfa's
    /// `ParamGuard`): a program can refuse a bad configuration before reading its data.
    ///
    /// # Errors
    /// [`RecsysError::InvalidParam`] naming the first parameter out of range.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Fits a model to `train`.
    ///
    /// # Errors
    /// [`RecsysError::InvalidParam`] naming a parameter out of range; [`RecsysError::Data`] for
    /// data it cannot be fitted on (no interactions, ids past the id maps);
    /// [`RecsysError::Diverged`] when training diverges.
    fn fit(&self, train: &Interactions) -> Result<Self::Model>;
}

/// A fitted recommender.
pub trait Recommender: Send + Sync {
    /// The training matrix the model was fitted on.
    fn train_set(&self) -> &TrainSet;

    /// The model's raw score for `(user, item)`: an unclipped rating estimate for rating
    /// models, a ranking score for implicit-feedback ones. Unknown users and items get the
    /// model's fallback (biases or the global mean), never a panic.
    fn score(&self, user: u32, item: u32) -> f32;

    /// Scores of every item for `user` into `out` (resized to the number of items). Models
    /// override it when a whole row is cheaper than item-by-item scoring.
    fn score_all(&self, user: u32, out: &mut Vec<f32>) {
        let n = self.train_set().num_items() as u32;
        out.clear();
        out.extend((0..n).map(|i| self.score(user, i)));
    }

    /// The predicted rating: [`score`](Self::score) clipped to the training rating scale.
    fn predict(&self, user: u32, item: u32) -> f32 {
        let (lo, hi) = self.train_set().scale();
        self.score(user, item).clamp(lo, hi)
    }

    /// The `k` best-scored items `user` has not interacted with in training, best first.
    fn recommend(&self, user: u32, k: usize) -> Vec<Scored> {
        self.recommend_excluding(user, k, self.train_set().user(user).0)
    }

    /// The `k` best-scored items outside `exclude`, best first: for a model fitted on
    /// positives only, pass all of the user's interactions to leave out the disliked ones too.
    fn recommend_excluding(&self, user: u32, k: usize, exclude: &[u32]) -> Vec<Scored> {
        let mut scores = Vec::new();
        self.score_all(user, &mut scores);
        for &i in exclude {
            if let Some(s) = scores.get_mut(i as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        top_k(&scores, k)
    }

    /// The model as inner products, for models whose score is one: `score(u, i)` equals
    /// `users[u] . items[i]` of the returned [`DotForm`] (biases folded into extra
    /// coordinates). Retrieval indexes ([`crate::retrieval`]) are built from it.
    fn dot_form(&self) -> Option<DotForm> {
        None
    }

    /// An item's embedding, for models that have one (used by
    /// [`similar_items`](Self::similar_items)).
    fn item_embedding(&self, _item: u32) -> Option<Vec<f32>> {
        None
    }

    /// The `k` items most similar to `item`, best first: cosine of the item embeddings where
    /// the model has them, else cosine of the items' training rating vectors.
    fn similar_items(&self, item: u32, k: usize) -> Vec<Scored> {
        let train = self.train_set();
        let n = train.num_items();
        if item as usize >= n {
            return Vec::new();
        }
        let mut sims = vec![0f32; n];
        if let Some(e) = self.item_embedding(item) {
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let ne = norm(&e);
            for (j, s) in sims.iter_mut().enumerate() {
                if let Some(f) = self.item_embedding(j as u32) {
                    let d = norm(&f) * ne;
                    *s = if d > 0.0 {
                        e.iter().zip(&f).map(|(a, b)| a * b).sum::<f32>() / d
                    } else {
                        0.0
                    };
                }
            }
        } else {
            let (users, ratings) = train.item(item);
            let mut sq = vec![0f32; n];
            for (&u, &r) in users.iter().zip(ratings) {
                let (items, rs) = train.user(u);
                for (&j, &rj) in items.iter().zip(rs) {
                    sims[j as usize] += r * rj;
                }
            }
            for (j, s) in sq.iter_mut().enumerate() {
                *s = train
                    .item(j as u32)
                    .1
                    .iter()
                    .map(|r| r * r)
                    .sum::<f32>()
                    .sqrt();
            }
            let own = sq[item as usize];
            for (s, q) in sims.iter_mut().zip(&sq) {
                *s = if own * q > 0.0 { *s / (own * q) } else { 0.0 };
            }
        }
        sims[item as usize] = f32::NEG_INFINITY;
        top_k(&sims, k)
    }
}

/// The `k` highest finite-or-not scores (ties by lower id), best first; `-inf` entries are
/// never returned.
pub fn top_k(scores: &[f32], k: usize) -> Vec<Scored> {
    let mut idx: Vec<u32> = (0..scores.len() as u32)
        .filter(|&i| scores[i as usize] > f32::NEG_INFINITY)
        .collect();
    let by_score = |a: &u32, b: &u32| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    };
    if k < idx.len() {
        if k == 0 {
            return Vec::new();
        }
        idx.select_nth_unstable_by(k - 1, by_score);
        idx.truncate(k);
    }
    idx.sort_unstable_by(by_score);
    idx.into_iter()
        .map(|item| Scored {
            item,
            score: scores[item as usize],
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    kind: String,
    version: u32,
    model: T,
}

/// Saving and loading fitted models as JSON (written atomically: a crash leaves the old file).
pub trait Persist: Serialize + DeserializeOwned {
    /// The model's name in the file, checked on load.
    const KIND: &'static str;

    /// Whether the model's parts hold together: every vector as long as the training set's
    /// sizes and the model's dimensions say, finite values, members present.
    /// [`load`](Self::load) refuses a file whose model does not, with this reason, so that a loaded
    /// model never indexes past its vectors.
    ///
    /// # Errors
    /// The reason, naming the part that does not fit.
    fn check(&self) -> std::result::Result<(), String>;

    /// Writes the model to `path`.
    ///
    /// # Errors
    /// [`RecsysError::Model`] when the model does not serialise; [`RecsysError::Io`] when the file
    /// cannot be written (the old file is kept).
    fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let env = Envelope {
            kind: Self::KIND.to_owned(),
            version: 1,
            model: self,
        };
        let bytes = serde_json::to_vec(&env).map_err(|e| RecsysError::Model {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        kiln_core::train::checkpoint::write_atomic(path, |w| std::io::Write::write_all(w, &bytes))?;
        Ok(())
    }

    /// Reads a model written by [`save`](Self::save).
    ///
    /// # Errors
    /// [`RecsysError::Io`] when the file cannot be read; [`RecsysError::Model`] naming it when it
    /// is not a Kiln model file, holds another kind or format, does not parse, or fails
    /// [`check`](Self::check).
    fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| RecsysError::io(path, e))?;
        let bad = |reason: String| RecsysError::Model {
            path: path.to_owned(),
            reason,
        };
        let head: Envelope<serde::de::IgnoredAny> = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("not a Kiln model file: {e}")))?;
        if head.kind != Self::KIND || head.version != 1 {
            return Err(bad(format!(
                "holds a {} model (format {}), expected {} (format 1)",
                head.kind,
                head.version,
                Self::KIND
            )));
        }
        let env: Envelope<Self> = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        env.model
            .check()
            .map_err(|reason| bad(format!("inconsistent {} model: {reason}", Self::KIND)))?;
        Ok(env.model)
    }
}

/// `Err` naming `what` unless it has `want` values, all finite: the check of one of a saved
/// model's vectors.
pub(crate) fn check_vec(
    what: &str,
    values: &[f32],
    want: usize,
) -> std::result::Result<(), String> {
    if values.len() != want {
        return Err(format!(
            "{what} has {} values, expected {want}",
            values.len()
        ));
    }
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(format!("{what}[{i}] is {}", values[i])),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_skips_masked() {
        let s = [0.5, f32::NEG_INFINITY, 2.0, 0.5, 1.0];
        let got: Vec<u32> = top_k(&s, 3).iter().map(|x| x.item).collect();
        assert_eq!(got, vec![2, 4, 0]);
        assert_eq!(top_k(&s, 10).len(), 4);
        assert!(top_k(&s, 0).is_empty());
    }
}
