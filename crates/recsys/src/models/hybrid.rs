//! Hybrid filtering: a linear blend of several models' predictions (collaborative and
//! content-based), its weights fitted by ridge least squares on a held-out slice of the
//! training ratings, then every member refitted on all of them (the "blending" of the Netflix
//! Prize solutions; Koren, 2009, "The BellKor solution to the Netflix Grand Prize").
//! Its members are [`AnyModel`]s (`registry.rs`), so a blend is saved and loaded as one file.

use serde::{Deserialize, Serialize};

use super::registry::{AnyModel, FitAny};
use crate::data::{Interactions, random_split};
use crate::error::{RecsysError, Result};
use crate::recommender::{Fit, Persist, Recommender};
use crate::trainset::TrainSet;

/// Parameters of [`Blend`].
pub struct BlendConfig {
    /// The models blended.
    pub members: Vec<Box<dyn FitAny>>,
    /// Fraction of the training ratings held out to fit the blend weights.
    pub valid_fraction: f64,
    /// Ridge penalty on the weights.
    pub ridge: f64,
    /// Seed of the held-out slice.
    pub seed: u64,
}

impl BlendConfig {
    /// A blend of `members`, weights fitted on 10% of the training ratings.
    pub fn new(members: Vec<Box<dyn FitAny>>) -> Self {
        Self {
            members,
            valid_fraction: 0.1,
            ridge: 1e-3,
            seed: 0,
        }
    }

    /// Sets the held-out fraction.
    pub fn with_valid_fraction(mut self, fraction: f64) -> Self {
        self.valid_fraction = fraction;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A fitted blend: `w_0 + sum_k w_k predict_k(u, i)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blend {
    members: Vec<AnyModel>,
    /// Intercept then one weight per member.
    weights: Vec<f64>,
    /// Blend RMSE on the held-out slice (members fitted without it).
    valid_rmse: f64,
}

impl Blend {
    /// The intercept, then one weight per member.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The blend's RMSE on the held-out slice (members fitted without it).
    pub fn valid_rmse(&self) -> f64 {
        self.valid_rmse
    }

    /// The blended models.
    pub fn members(&self) -> &[AnyModel] {
        &self.members
    }
}

/// Solves `(X'X + ridge I) w = X'y` (no penalty on the intercept, column 0) by Gaussian
/// elimination with partial pivoting; `x` is row-major with `m` columns.
fn ridge_solve(x: &[f64], y: &[f64], m: usize, ridge: f64) -> Option<Vec<f64>> {
    let mut a = vec![0f64; m * (m + 1)];
    for (row, &t) in x.chunks(m).zip(y) {
        for i in 0..m {
            for j in 0..m {
                a[i * (m + 1) + j] += row[i] * row[j];
            }
            a[i * (m + 1) + m] += row[i] * t;
        }
    }
    let n = y.len() as f64;
    for i in 1..m {
        a[i * (m + 1) + i] += ridge * n;
    }
    for c in 0..m {
        let p = (c..m).max_by(|&r, &s| {
            a[r * (m + 1) + c]
                .abs()
                .total_cmp(&a[s * (m + 1) + c].abs())
        })?;
        if a[p * (m + 1) + c].abs() < 1e-12 {
            return None;
        }
        for k in 0..=m {
            a.swap(c * (m + 1) + k, p * (m + 1) + k);
        }
        for r in 0..m {
            if r != c {
                let f = a[r * (m + 1) + c] / a[c * (m + 1) + c];
                for k in c..=m {
                    a[r * (m + 1) + k] -= f * a[c * (m + 1) + k];
                }
            }
        }
    }
    Some(
        (0..m)
            .map(|i| a[i * (m + 1) + m] / a[i * (m + 1) + i])
            .collect(),
    )
}

impl Fit for BlendConfig {
    type Model = Blend;
    fn check(&self) -> Result<()> {
        if self.members.is_empty() {
            return Err(RecsysError::param("blend", "members", 0, "at least 1"));
        }
        if !(self.valid_fraction > 0.0 && self.valid_fraction < 1.0) {
            return Err(RecsysError::param(
                "blend",
                "valid_fraction",
                self.valid_fraction,
                "in (0, 1)",
            ));
        }
        Ok(())
    }

    fn fit(&self, train: &Interactions) -> Result<Blend> {
        Fit::check(self)?;
        let fold = random_split(train, self.valid_fraction, self.seed)?;
        let m = self.members.len() + 1;
        let mut x = vec![1f64; fold.test.len() * m];
        for (k, member) in self.members.iter().enumerate() {
            let model = member.fit_any(&fold.train)?;
            for (row, r) in x.chunks_mut(m).zip(&fold.test.records) {
                row[k + 1] = model.predict(r.user, r.item) as f64;
            }
        }
        let y: Vec<f64> = fold.test.records.iter().map(|r| r.rating as f64).collect();
        let weights = ridge_solve(&x, &y, m, self.ridge).ok_or_else(|| {
            RecsysError::Data("blend: the members' held-out predictions are degenerate".into())
        })?;
        let se: f64 = x
            .chunks(m)
            .zip(&y)
            .map(|(row, t)| (row.iter().zip(&weights).map(|(a, b)| a * b).sum::<f64>() - t).powi(2))
            .sum();
        let valid_rmse = (se / y.len().max(1) as f64).sqrt();
        let members = self
            .members
            .iter()
            .map(|member| member.fit_any(train))
            .collect::<Result<Vec<_>>>()?;
        Ok(Blend {
            members,
            weights,
            valid_rmse,
        })
    }
}

impl Recommender for Blend {
    fn train_set(&self) -> &TrainSet {
        self.members[0].train_set()
    }

    fn score(&self, user: u32, item: u32) -> f32 {
        let mut est = self.weights[0];
        for (m, w) in self.members.iter().zip(&self.weights[1..]) {
            est += w * m.predict(user, item) as f64;
        }
        est as f32
    }
}

impl Persist for Blend {
    fn check(&self) -> std::result::Result<(), String> {
        let Some(first) = self.members.first() else {
            return Err("a blend with no members".into());
        };
        if self.weights.len() != self.members.len() + 1
            || self.weights.iter().any(|w| !w.is_finite())
        {
            return Err(format!(
                "{} weights for {} members (expected an intercept and one per member, finite)",
                self.weights.len(),
                self.members.len()
            ));
        }
        let dims = |m: &AnyModel| (m.train_set().num_users(), m.train_set().num_items());
        for (k, member) in self.members.iter().enumerate() {
            member.check().map_err(|e| format!("member {k}: {e}"))?;
            if dims(member) != dims(first) {
                return Err(format!(
                    "member {k} was fitted on {:?} users and items, member 0 on {:?}",
                    dims(member),
                    dims(first)
                ));
            }
        }
        Ok(())
    }
    const KIND: &'static str = "blend";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_exact_weights() {
        // y = 0.5 + 2 a - b on four points.
        let pts = [(1.0, 2.0), (2.0, 0.0), (3.0, 5.0), (0.0, 1.0)];
        let x: Vec<f64> = pts.iter().flat_map(|&(a, b)| [1.0, a, b]).collect();
        let y: Vec<f64> = pts.iter().map(|&(a, b)| 0.5 + 2.0 * a - b).collect();
        let w = ridge_solve(&x, &y, 3, 0.0).unwrap();
        for (got, want) in w.iter().zip([0.5, 2.0, -1.0]) {
            assert!((got - want).abs() < 1e-9, "{w:?}");
        }
        assert!(ridge_solve(&[1.0, 1.0, 1.0, 1.0], &[1.0, 2.0], 2, 0.0).is_none());
    }
}
