//! Alternating least squares for implicit feedback (Hu, Koren and Volinsky, 2008,
//! "Collaborative filtering for implicit feedback datasets"), with the conjugate-gradient
//! solver of Takács et al. (2011) that the `implicit` library uses.
//!
//! Every (user, item) pair is a preference `p = 1` if the user interacted with the item and
//! `0` otherwise, with confidence `c = 1 + alpha r` for an interaction of strength `r` and 1
//! for the rest. With item factors `Y` fixed, a user's factors minimise
//! `sum_i c_ui (p_ui - x_u . y_i)^2 + reg |x_u|^2`, whose solution satisfies
//! `(YᵀY + Yᵀ(C_u - I)Y + reg I) x_u = Yᵀ C_u p_u`: `YᵀY` is shared by all users and the
//! correction touches only the user's own items, so each solve costs `O(n_u f + f^2)` per
//! conjugate-gradient step. Users are solved in parallel, then items the same way.
//!
//! Fit it on implicit feedback, e.g. `data.implicit(4.0)`; the strength `r` is the
//! interaction's value.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Interactions;
use crate::error::{RecsysError, Result};
use crate::models::vecmath::dot;
use crate::recommender::{DotForm, Fit, Persist, Recommender};
use crate::trainset::TrainSet;
use kiln_core::data::SplitMix64;
use kiln_core::kernels::gemm::{Gemm, Parallelism};
use kiln_core::kernels::sparse_cg::implicit_cg_row;

/// Parameters of [`Als`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlsConfig {
    /// Latent factors.
    pub factors: usize,
    /// Alternations (each solves every user, then every item).
    pub iterations: usize,
    /// L2 regularisation.
    pub reg: f32,
    /// Confidence slope: an interaction of strength `r` has confidence `1 + alpha r`.
    pub alpha: f32,
    /// Conjugate-gradient steps per solve, warm-started from the previous factors
    /// (`implicit` uses 3; `factors` steps solve exactly up to rounding).
    pub cg_steps: usize,
    /// Seed of the initial factors.
    pub seed: u64,
}

impl Default for AlsConfig {
    fn default() -> Self {
        Self {
            factors: 64,
            iterations: 15,
            reg: 0.01,
            alpha: 1.0,
            cg_steps: 3,
            seed: 0,
        }
    }
}

impl AlsConfig {
    /// `implicit` 0.7's defaults: 64 factors, 15 iterations, `reg` 0.01, `alpha` 1, 3 CG
    /// steps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the number of factors.
    pub fn with_factors(mut self, factors: usize) -> Self {
        self.factors = factors;
        self
    }

    /// Sets the number of alternations.
    pub fn with_iterations(mut self, iterations: usize) -> Self {
        self.iterations = iterations;
        self
    }

    /// Sets the regularisation.
    pub fn with_reg(mut self, reg: f32) -> Self {
        self.reg = reg;
        self
    }

    /// Sets the confidence slope.
    pub fn with_alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// Sets the conjugate-gradient steps per solve.
    pub fn with_cg_steps(mut self, steps: usize) -> Self {
        self.cg_steps = steps;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A fitted [`AlsConfig`]: score `x_u . y_i`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Als {
    train: TrainSet,
    factors: usize,
    user_factors: Vec<f32>,
    item_factors: Vec<f32>,
}

/// `gram = fixedᵀ fixed + reg I` (`f x f`, row-major) over every row of `fixed`: one threaded
/// GEMM.
fn gram(fixed: &[f32], f: usize, reg: f32) -> Vec<f32> {
    let n = fixed.len() / f;
    let mut g = vec![0f32; f * f];
    Gemm::new([f, f, n]).parallelism(Parallelism::Rayon(0)).run(
        &mut g,
        f,
        fixed,
        [1, f],
        fixed,
        [f, 1],
    );
    for a in 0..f {
        g[a * f + a] += reg;
    }
    g
}

/// One row's system: its partners' ids and interaction strengths, and the confidence slope.
#[derive(Clone, Copy)]
struct Entries<'a> {
    ids: &'a [u32],
    values: &'a [f32],
    alpha: f32,
}

/// Improves `x` towards the solution of `(gram + Yᵀ(C - I)Y) x = Yᵀ C p` for one row (a user
/// with its items, or an item with its users) by `steps` conjugate-gradient steps: kiln-kernels'
/// [`implicit_cg_row`], compiled for the widest vector instructions the CPU has.
fn solve(
    gram: &[f32],
    fixed: &[f32],
    e: Entries,
    steps: usize,
    x: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    implicit_cg_row(gram, fixed, e.ids, e.values, e.alpha, steps, x, scratch);
}

/// One half of an alternation: every row of `solved` (one per user, or per item) solved
/// against `fixed`, in parallel. `entries(i)` lists row `i`'s partners and strengths.
fn half_step<'a>(
    solved: &mut [f32],
    fixed: &[f32],
    f: usize,
    (reg, alpha, steps): (f32, f32, usize),
    entries: impl Fn(usize) -> (&'a [u32], &'a [f32]) + Sync,
) {
    let gram = gram(fixed, f, reg);
    solved
        .par_chunks_mut(f)
        .enumerate()
        .with_min_len(64)
        .for_each_init(Vec::new, |scratch, (i, x)| {
            let (ids, values) = entries(i);
            let e = Entries { ids, values, alpha };
            solve(&gram, fixed, e, steps, x, scratch);
        });
}

impl Fit for AlsConfig {
    type Model = Als;
    fn check(&self) -> Result<()> {
        super::Params::new("als")
            .count("factors", self.factors)?
            .count("cg_steps", self.cg_steps)?
            .non_negative("reg", self.reg)?
            .non_negative("alpha", self.alpha)?;
        Ok(())
    }
    fn fit(&self, train: &Interactions) -> Result<Als> {
        self.fit_timed(train).map(|(model, _)| model)
    }
}

impl AlsConfig {
    /// [`fit`](Fit::fit), also returning each alternation's seconds (users then items, without
    /// the setup: indexing the interactions and the initial factors), for benchmarks that
    /// compare iterations with `implicit`'s.
    ///
    /// # Errors
    /// As [`fit`](Fit::fit).
    pub fn fit_timed(&self, train: &Interactions) -> Result<(Als, Vec<f64>)> {
        Fit::check(self)?;
        let set = TrainSet::new(train)?;
        let (nu, ni, f) = (set.num_users(), set.num_items(), self.factors);
        let mut rng = SplitMix64::new(self.seed);
        // Small uniform factors, as implicit starts (its `rand * 0.01`).
        let mut init =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform() as f32 * 0.01).collect() };
        let mut x = init(nu * f);
        let mut y = init(ni * f);
        let params = (self.reg, self.alpha, self.cg_steps);
        let mut seconds = Vec::with_capacity(self.iterations);
        for iteration in 0..self.iterations {
            let start = std::time::Instant::now();
            half_step(&mut x, &y, f, params, |u| set.user(u as u32));
            half_step(&mut y, &x, f, params, |i| set.item(i as u32));
            if !x.iter().chain(&y).all(|v| v.is_finite()) {
                return Err(RecsysError::Diverged {
                    model: "als",
                    epoch: iteration + 1,
                });
            }
            seconds.push(start.elapsed().as_secs_f64());
        }
        let model = Als {
            train: set,
            factors: f,
            user_factors: x,
            item_factors: y,
        };
        Ok((model, seconds))
    }
}

impl Recommender for Als {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }

    fn score(&self, user: u32, item: u32) -> f32 {
        let f = self.factors;
        let (u, i) = (user as usize, item as usize);
        if (i + 1) * f > self.item_factors.len() {
            return f32::NEG_INFINITY;
        }
        if !self.train.user_known(user) {
            return 0.0;
        }
        dot(
            &self.user_factors[u * f..(u + 1) * f],
            &self.item_factors[i * f..(i + 1) * f],
        )
    }

    fn dot_form(&self) -> Option<DotForm> {
        let f = self.factors;
        let mut users = self.user_factors.clone();
        for (u, row) in users.chunks_mut(f).enumerate() {
            if !self.train.user_known(u as u32) {
                row.fill(0.0);
            }
        }
        Some(DotForm {
            dim: f,
            users,
            items: self.item_factors.clone(),
        })
    }

    fn item_embedding(&self, item: u32) -> Option<Vec<f32>> {
        let (i, f) = (item as usize, self.factors);
        ((i + 1) * f <= self.item_factors.len())
            .then(|| self.item_factors[i * f..(i + 1) * f].to_vec())
    }
}

impl Persist for Als {
    fn check(&self) -> std::result::Result<(), String> {
        use crate::recommender::check_vec;
        let (u, i, f) = (self.train.num_users(), self.train.num_items(), self.factors);
        if f == 0 {
            return Err("als model with 0 factors".into());
        }
        check_vec("user factors", &self.user_factors, u * f)?;
        check_vec("item factors", &self.item_factors, i * f)
    }
    const KIND: &'static str = "als";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `A x = b` by Gaussian elimination with partial pivoting, in f64.
    fn dense_solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for col in 0..n {
            let pivot = (col..n)
                .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
                .unwrap();
            for k in 0..n {
                a.swap(col * n + k, pivot * n + k);
            }
            b.swap(col, pivot);
            for r in col + 1..n {
                let m = a[r * n + col] / a[col * n + col];
                for k in col..n {
                    a[r * n + k] -= m * a[col * n + k];
                }
                b[r] -= m * b[col];
            }
        }
        let mut x = vec![0f64; n];
        for r in (0..n).rev() {
            let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
            x[r] = (b[r] - s) / a[r * n + r];
        }
        x
    }

    #[test]
    fn conjugate_gradient_reaches_the_closed_form_solution() {
        let (items, f, reg) = (12usize, 5usize, 0.1f32);
        let mut rng = SplitMix64::new(7);
        let fixed: Vec<f32> = (0..items * f).map(|_| rng.uniform() as f32 - 0.5).collect();
        let ids = [1u32, 4, 5, 9];
        let (values, alpha) = ([0.5f32, 2.0, 0.25, 1.0], 2.0f32);
        // The normal equations, written out densely in f64.
        let mut a = vec![0f64; f * f];
        let mut b = vec![0f64; f];
        for j in 0..items {
            let c = ids
                .iter()
                .position(|&i| i as usize == j)
                .map_or(1.0, |k| 1.0 + f64::from(alpha * values[k]));
            let p = if c > 1.0 { 1.0 } else { 0.0 };
            let y = &fixed[j * f..(j + 1) * f];
            for r in 0..f {
                b[r] += c * p * f64::from(y[r]);
                for s in 0..f {
                    a[r * f + s] += c * f64::from(y[r]) * f64::from(y[s]);
                }
            }
        }
        for r in 0..f {
            a[r * f + r] += f64::from(reg);
        }
        let exact = dense_solve(a, b);
        let gram = gram(&fixed, f, reg);
        let mut x = vec![0.01f32; f];
        let e = Entries {
            ids: &ids,
            values: &values,
            alpha,
        };
        solve(&gram, &fixed, e, 2 * f, &mut x, &mut Vec::new());
        for (got, want) in x.iter().zip(&exact) {
            assert!((f64::from(*got) - want).abs() < 1e-4, "{x:?} vs {exact:?}");
        }
    }

    #[test]
    fn fitted_factors_rank_a_user_s_items_and_bad_parameters_are_refused() {
        // Two groups of users, each with its own items: a user's unseen items of its own
        // group must outscore the other group's.
        let mut records = Vec::new();
        for u in 0..20u32 {
            let group = u % 2;
            for i in 0..10u32 {
                if (u + i) % 3 != 0 {
                    records.push((u, group * 10 + i, 1.0));
                }
            }
        }
        let data = Interactions::from_triples(&records);
        let model = AlsConfig::new()
            .with_factors(4)
            .with_iterations(10)
            .with_cg_steps(4)
            .fit(&data)
            .unwrap();
        // User 0 has not seen item 3 ((0 + 3) % 3 == 0), of its own group; item 13 is the
        // other group's.
        assert!(!model.train_set().contains(0, 3));
        assert!(
            model.score(0, 3) > model.score(0, 13) + 0.1,
            "{} vs {}",
            model.score(0, 3),
            model.score(0, 13)
        );
        assert!(AlsConfig::new().with_factors(0).fit(&data).is_err());
        assert!(AlsConfig::new().with_alpha(f32::NAN).fit(&data).is_err());
    }
}
