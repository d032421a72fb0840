//! The Fréchet distance between two sets of feature vectors, each summarised by a Gaussian
//! (mean and covariance): `|m1 - m2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)`, the formula
//! of the Fréchet Inception Distance (Heusel et al., 2017). Kiln applies it to a domain
//! classifier's features (see [`super::measures`]), so its values are not Inception FIDs.
//!
//! The matrix square roots come from symmetric eigendecompositions (cyclic Jacobi in `f64`):
//! `Tr((S1^1/2 S2 S1^1/2)^1/2)` is the sum of the square roots of that symmetric matrix's
//! eigenvalues, which are those of `S1 S2` (what `scipy.linalg.sqrtm(S1 @ S2)` takes the trace
//! of in the reference implementation). Eigenvalues below zero (rounding) count as zero.

use crate::error::{Result, VisionError};

/// A Gaussian fitted to feature vectors: the mean and the covariance (`n - 1` in the
/// denominator, as `numpy.cov`).
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// The dimension `d`.
    pub dim: usize,
    /// `[d]` means.
    pub mean: Vec<f64>,
    /// `[d, d]` covariance, row-major.
    pub cov: Vec<f64>,
}

impl Gaussian {
    /// Fits the mean and covariance of `features`, `n` rows of `dim` values.
    ///
    /// # Errors
    /// [`VisionError::Parameter`] when `features` does not hold whole rows of `dim`, holds
    /// fewer than 2 rows, or a value that is not finite.
    pub fn fit(features: &[f32], dim: usize) -> Result<Self> {
        let bad = |reason: String| VisionError::Parameter {
            name: "features",
            reason,
        };
        if dim == 0 || !features.len().is_multiple_of(dim) {
            return Err(bad(format!(
                "{} values are not whole rows of {dim}",
                features.len()
            )));
        }
        let n = features.len() / dim;
        if n < 2 {
            return Err(bad(format!("{n} rows: a covariance needs at least 2")));
        }
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "row {} column {} is {}",
                i / dim,
                i % dim,
                features[i]
            )));
        }
        let mut mean = vec![0.0; dim];
        for row in features.chunks_exact(dim) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, &v)| *m += f64::from(v));
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0; dim * dim];
        let mut centred = vec![0.0; dim];
        for row in features.chunks_exact(dim) {
            centred
                .iter_mut()
                .zip(row.iter().zip(&mean))
                .for_each(|(c, (&v, m))| *c = f64::from(v) - m);
            for i in 0..dim {
                let ci = centred[i];
                for j in i..dim {
                    cov[i * dim + j] += ci * centred[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / (n - 1) as f64;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(Self { dim, mean, cov })
    }
}

/// The Fréchet distance (squared, as FID reports it) between two Gaussians.
///
/// # Errors
/// [`VisionError::Parameter`] when the dimensions differ.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    if a.dim != b.dim || a.mean.len() != a.dim || b.mean.len() != b.dim {
        return Err(VisionError::Parameter {
            name: "features",
            reason: format!("dimensions {} and {} differ", a.dim, b.dim),
        });
    }
    let d = a.dim;
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    // S1^1/2 = V diag(sqrt(l)) V^T.
    let (values, vectors) = symmetric_eigen(&a.cov, d);
    let mut root = vec![0.0; d * d];
    for k in 0..d {
        let s = values[k].max(0.0).sqrt();
        for i in 0..d {
            let vik = vectors[i * d + k] * s;
            for j in 0..d {
                root[i * d + j] += vik * vectors[j * d + k];
            }
        }
    }
    let inner = matmul(&matmul(&root, &b.cov, d), &root, d);
    // Symmetrise away rounding before the eigendecomposition.
    let mut sym = inner.clone();
    for i in 0..d {
        for j in 0..d {
            sym[i * d + j] = 0.5 * (inner[i * d + j] + inner[j * d + i]);
        }
    }
    let (mixed, _) = symmetric_eigen(&sym, d);
    let cross: f64 = mixed.iter().map(|l| l.max(0.0).sqrt()).sum();
    Ok((mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * cross).max(0.0))
}

fn matmul(x: &[f64], y: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let xik = x[i * d + k];
            if xik == 0.0 {
                continue;
            }
            for j in 0..d {
                out[i * d + j] += xik * y[k * d + j];
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (columns of the row-major `[d, d]` result) of the symmetric
/// matrix `m`, by cyclic Jacobi rotations until the off-diagonal mass is below `1e-22` of the
/// total (or 100 sweeps).
pub(crate) fn symmetric_eigen(m: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = m.to_vec();
    let mut v = vec![0.0; d * d];
    (0..d).for_each(|i| v[i * d + i] = 1.0);
    let total: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _ in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off <= 1e-22 * total {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, 8.5.2).
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gaussian(mean: Vec<f64>, cov: Vec<f64>) -> Gaussian {
        Gaussian {
            dim: mean.len(),
            mean,
            cov,
        }
    }

    #[test]
    fn one_dimension_is_the_closed_form() {
        // W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
        let a = gaussian(vec![1.0], vec![4.0]);
        let b = gaussian(vec![-2.0], vec![9.0]);
        let d = frechet_distance(&a, &b).unwrap();
        assert!((d - (9.0 + 1.0)).abs() < 1e-12, "{d}");
    }

    #[test]
    fn commuting_covariances_are_the_closed_form() {
        // Diagonal covariances: the sum over axes of (sqrt(a) - sqrt(b))^2, plus the means.
        let a = gaussian(
            vec![0.0, 1.0, 2.0],
            vec![4.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.25],
        );
        let b = gaussian(
            vec![1.0, 1.0, 0.0],
            vec![1.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0],
        );
        let want = 1.0 + 4.0 + (2.0f64 - 1.0).powi(2) + (1.0f64 - 3.0).powi(2) + 0.25;
        let d = frechet_distance(&a, &b).unwrap();
        assert!((d - want).abs() < 1e-10, "{d} vs {want}");
    }

    #[test]
    fn a_rotated_pair_matches_scipy() {
        // The reference's formula with S1 = [[2, 1], [1, 2]], S2 = [[1, 0.5], [0.5, 3]] and
        // means [0, 0], [1, 2]: 5 + 4 + 4 - 2 * trace(sqrtm(S1 @ S2)).
        let a = gaussian(vec![0.0, 0.0], vec![2.0, 1.0, 1.0, 2.0]);
        let b = gaussian(vec![1.0, 2.0], vec![1.0, 0.5, 0.5, 3.0]);
        // trace(sqrtm(S1 S2)) = sqrt(l1) + sqrt(l2) with l the eigenvalues of S1 S2
        // = [[2.5, 4], [2, 6.5]]: trace 9, determinant 8.25.
        let (t, det) = (9.0f64, 8.25f64);
        let disc = (t * t / 4.0 - det).sqrt();
        let cross = (t / 2.0 + disc).sqrt() + (t / 2.0 - disc).sqrt();
        let want = 5.0 + 4.0 + 4.0 - 2.0 * cross;
        let d = frechet_distance(&a, &b).unwrap();
        assert!((d - want).abs() < 1e-10, "{d} vs {want}");
    }

    #[test]
    fn fit_is_numpy_mean_and_cov() {
        // numpy.cov([[1, 2, 4], [2, 4, 5]]) = [[7/3, 13/6], [13/6, 7/3]].
        let g = Gaussian::fit(&[1.0, 2.0, 2.0, 4.0, 4.0, 5.0], 2).unwrap();
        assert_eq!(g.mean, vec![7.0 / 3.0, 11.0 / 3.0]);
        let want = [7.0 / 3.0, 13.0 / 6.0, 13.0 / 6.0, 7.0 / 3.0];
        for (g, w) in g.cov.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
    }

    #[test]
    fn bad_features_are_named_errors() {
        assert!(
            Gaussian::fit(&[1.0, 2.0, 3.0], 2)
                .unwrap_err()
                .to_string()
                .contains("whole rows")
        );
        assert!(
            Gaussian::fit(&[1.0, 2.0], 2)
                .unwrap_err()
                .to_string()
                .contains("at least 2")
        );
        let err = Gaussian::fit(&[1.0, 2.0, f32::NAN, 1.0], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 1 column 0"), "{err}");
        let a = gaussian(vec![0.0], vec![1.0]);
        let b = gaussian(vec![0.0, 0.0], vec![1.0, 0.0, 0.0, 1.0]);
        assert!(frechet_distance(&a, &b).is_err());
    }

    proptest! {
        #[test]
        fn eigen_reconstructs_and_the_distance_is_a_distance(
            d in 1usize..7,
            seed in any::<u64>(),
            n in 8usize..30,
        ) {
            let mut rng = kiln_core::data::SplitMix64::new(seed);
            let mut draw = |rows: usize, shift: f64| -> Vec<f32> {
                (0..rows * d).map(|_| (rng.normal() + shift) as f32).collect()
            };
            let (x, y) = (draw(n, 0.0), draw(n, 0.5));
            let (a, b) = (Gaussian::fit(&x, d).unwrap(), Gaussian::fit(&y, d).unwrap());
            // V diag(l) V^T is the matrix again.
            let (l, v) = symmetric_eigen(&a.cov, d);
            for i in 0..d {
                for j in 0..d {
                    let r: f64 = (0..d).map(|k| v[i * d + k] * l[k] * v[j * d + k]).sum();
                    prop_assert!((r - a.cov[i * d + j]).abs() < 1e-9);
                }
            }
            let ab = frechet_distance(&a, &b).unwrap();
            let ba = frechet_distance(&b, &a).unwrap();
            prop_assert!(ab >= 0.0);
            prop_assert!((ab - ba).abs() < 1e-8 * (1.0 + ab));
            prop_assert!(frechet_distance(&a, &a).unwrap() < 1e-8);
        }
    }
}
