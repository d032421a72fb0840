//! The forward (noising) process of a diffusion model and the two reverse steps built on it.
//!
//! Steps `t = 0..T` with noise levels `beta_t`; `alpha_bar_t = prod_{s <= t} (1 - beta_s)`, and
//! `x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps` (Ho et al., 2020). The schedules:
//! - **linear**: `beta` from `beta_start` to `beta_end` (DDPM: 1e-4 to 0.02 over 1,000 steps);
//! - **cosine**: `alpha_bar_t = f(t + 1) / f(0)`, `f(t) = cos((t / T + s) / (1 + s) * pi / 2)^2`,
//!   each `beta` capped at 0.999 (Nichol & Dhariwal, 2021; `diffusers`' `squaredcos_cap_v2`).
//!
//! The reverse steps follow `diffusers`' `DDPMScheduler` (variance `fixed_small`, the
//! predicted `x_0` clipped to `[-1, 1]`) and `DDIMScheduler` (`eta = 0`, steps spaced evenly,
//! `leading`), with the conventions of their `step` functions.

use serde::{Deserialize, Serialize};

use crate::error::{Result, VisionError};

/// Which noise schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Schedule {
    /// `beta` rising linearly.
    Linear {
        /// The first step's `beta`.
        beta_start: f64,
        /// The last step's `beta`.
        beta_end: f64,
    },
    /// The cosine schedule with offset `s` (0.008 in the paper).
    Cosine {
        /// The offset that keeps the first steps' noise above zero.
        s: f64,
    },
}

impl Schedule {
    /// DDPM's linear schedule (1e-4 to 0.02).
    pub fn linear() -> Self {
        Schedule::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
        }
    }

    /// The cosine schedule with `s = 0.008`.
    pub fn cosine() -> Self {
        Schedule::Cosine { s: 0.008 }
    }
}

/// The noise levels of every step, from a [`Schedule`].
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alpha_bars: Vec<f64>,
}

impl NoiseSchedule {
    /// The `steps` noise levels of `schedule`.
    ///
    /// # Errors
    /// [`VisionError::Parameter`] for no steps, or betas outside `(0, 1)`.
    pub fn new(schedule: Schedule, steps: usize) -> Result<Self> {
        let bad = |reason: String| VisionError::Parameter {
            name: "schedule",
            reason,
        };
        if steps == 0 {
            return Err(bad("0 diffusion steps: expected at least 1".into()));
        }
        let betas: Vec<f64> = match schedule {
            Schedule::Linear {
                beta_start,
                beta_end,
            } => {
                let ok = |b: f64| b > 0.0 && b < 1.0;
                if !ok(beta_start) || !ok(beta_end) {
                    return Err(bad(format!(
                        "betas {beta_start} to {beta_end}: expected both in (0, 1)"
                    )));
                }
                (0..steps)
                    .map(|i| {
                        let f = if steps == 1 {
                            0.0
                        } else {
                            i as f64 / (steps - 1) as f64
                        };
                        beta_start + f * (beta_end - beta_start)
                    })
                    .collect()
            }
            Schedule::Cosine { s } => {
                if !(s > 0.0 && s.is_finite()) {
                    return Err(bad(format!("cosine offset {s}: expected above 0")));
                }
                let f = |t: f64| {
                    ((t / steps as f64 + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..steps)
                    .map(|i| (1.0 - f(i as f64 + 1.0) / f(i as f64)).min(0.999))
                    .collect()
            }
        };
        let mut alpha_bars = Vec::with_capacity(steps);
        let mut prod = 1.0;
        for b in &betas {
            prod *= 1.0 - b;
            alpha_bars.push(prod);
        }
        Ok(Self { betas, alpha_bars })
    }

    /// The number of steps `T`.
    pub fn steps(&self) -> usize {
        self.betas.len()
    }

    /// `beta_t`.
    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t]
    }

    /// `alpha_bar_t`; `alpha_bar_(-1) = 1` is asked for with `None`.
    pub fn alpha_bar(&self, t: Option<usize>) -> f64 {
        t.map_or(1.0, |t| self.alpha_bars[t])
    }

    /// The coefficients of `x_(t-1) = a x_t + b eps + sigma z` for DDPM's ancestral step at
    /// `t`, with the predicted `x_0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)` clipped to
    /// `[-1, 1]` by the caller: returned as the posterior mean's coefficients on `x_0` and
    /// `x_t`, and `sigma`.
    pub fn ddpm_step(&self, t: usize) -> PosteriorStep {
        let ab = self.alpha_bars[t];
        let ab_prev = self.alpha_bar(t.checked_sub(1));
        let beta = 1.0 - ab / ab_prev;
        let alpha = 1.0 - beta;
        let variance = (1.0 - ab_prev) / (1.0 - ab) * beta;
        PosteriorStep {
            x0: ab_prev.sqrt() * beta / (1.0 - ab),
            xt: alpha.sqrt() * (1.0 - ab_prev) / (1.0 - ab),
            sigma: if t > 0 {
                variance.max(1e-20).sqrt()
            } else {
                0.0
            },
        }
    }

    /// DDIM's `n` steps spaced evenly from the end (`diffusers`' `leading` spacing:
    /// `t_i = i * (T / n)`, descending), each with the step it leads to (`None`: the end).
    ///
    /// # Errors
    /// [`VisionError::Parameter`] when `n` is 0 or above `T`.
    pub fn ddim_steps(&self, n: usize) -> Result<Vec<(usize, Option<usize>)>> {
        let total = self.steps();
        if n == 0 || n > total {
            return Err(VisionError::Parameter {
                name: "sample_steps",
                reason: format!("{n} sampling steps: expected 1 to {total}"),
            });
        }
        let stride = total / n;
        let ts: Vec<usize> = (0..n).rev().map(|i| i * stride).collect();
        Ok(ts
            .iter()
            .enumerate()
            .map(|(k, &t)| (t, ts.get(k + 1).copied()))
            .collect())
    }
}

/// One ancestral step: `x_(t-1) = x0 * x_0 + xt * x_t + sigma * z`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PosteriorStep {
    /// The coefficient on the predicted `x_0`.
    pub x0: f64,
    /// The coefficient on `x_t`.
    pub xt: f64,
    /// The noise's standard deviation (0 at the last step).
    pub sigma: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_is_ddpm_s() {
        let s = NoiseSchedule::new(Schedule::linear(), 1000).unwrap();
        assert_eq!(s.steps(), 1000);
        assert!((s.beta(0) - 1e-4).abs() < 1e-15 && (s.beta(999) - 0.02).abs() < 1e-15);
        // numpy: np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[[0, 499, 999]]
        let want = [0.9999, 0.078_587_242_881_778_24, 4.035_829_765_375_676e-5];
        for (t, w) in [0, 499, 999].into_iter().zip(want) {
            let got = s.alpha_bar(Some(t));
            assert!((got - w).abs() < 1e-12 * w, "t {t}: {got} vs {w}");
        }
    }

    #[test]
    fn cosine_schedule_follows_its_formula_and_cap() {
        let s = NoiseSchedule::new(Schedule::cosine(), 1000).unwrap();
        let f = |t: f64| {
            ((t / 1000.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        // Without the cap alpha_bar_t = f(t + 1) / f(0); the cap only bites at the very end.
        for t in [0usize, 10, 500, 900] {
            let got = s.alpha_bar(Some(t));
            let want = f(t as f64 + 1.0) / f(0.0);
            assert!((got - want).abs() < 1e-12, "t {t}: {got} vs {want}");
        }
        assert_eq!(s.beta(999), 0.999);
        assert!(NoiseSchedule::new(Schedule::cosine(), 0).is_err());
        assert!(
            NoiseSchedule::new(
                Schedule::Linear {
                    beta_start: 0.0,
                    beta_end: 0.02
                },
                10
            )
            .is_err()
        );
    }

    #[test]
    fn ddpm_step_is_the_gaussian_posterior() {
        // The posterior mean's coefficients sum the forward process back: with x_t from x_0 and
        // no noise, the mean at t = 1 equals the forward mean of x_0 at t = 0, i.e.
        // x0 + xt * sqrt(ab_1) = sqrt(ab_0).
        let s = NoiseSchedule::new(Schedule::linear(), 1000).unwrap();
        for t in [1usize, 10, 500, 999] {
            let p = s.ddpm_step(t);
            let lhs = p.x0 + p.xt * s.alpha_bar(Some(t)).sqrt();
            let rhs = s.alpha_bar(Some(t - 1)).sqrt();
            assert!((lhs - rhs).abs() < 1e-12, "t {t}: {lhs} vs {rhs}");
            assert!(p.sigma > 0.0);
        }
        let last = s.ddpm_step(0);
        assert_eq!(last.sigma, 0.0);
        assert!((last.x0 - 1.0).abs() < 1e-12 && last.xt.abs() < 1e-12);
    }

    #[test]
    fn ddim_steps_are_diffusers_leading_spacing() {
        let s = NoiseSchedule::new(Schedule::linear(), 1000).unwrap();
        let steps = s.ddim_steps(50).unwrap();
        assert_eq!(steps.len(), 50);
        assert_eq!(steps[0], (980, Some(960)));
        assert_eq!(steps[49], (0, None));
        assert!(s.ddim_steps(0).is_err() && s.ddim_steps(1001).is_err());
    }
}
