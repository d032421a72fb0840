//! The vector kernels the classical models share: a dot product and a squared distance
//! written with eight independent accumulators, so that the compiler vectorises
//! them (a plain `iter().sum()` is a sequential chain of additions that it must keep in
//! order). They are `#[inline(always)]` so that a caller running under
//! [`kiln_core::kernels::cpu::with_simd`] gets them compiled for AVX2/AVX-512 with FMA.

/// `a . b` over the shorter of the two.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `|a - b|^2` over the shorter of the two, with the same eight accumulators as [`dot`].
#[inline(always)]
pub(crate) fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let mut tail = 0f32;
    for (x, y) in ar.iter().zip(br) {
        tail += (x - y) * (x - y);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dot_matches_f64(v in proptest::collection::vec((-4f32..4.0, -4f32..4.0), 0..100)) {
            let (a, b): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            let bound = 1e-5 * a.iter().zip(&b).map(|(x, y)| f64::from((x * y).abs())).sum::<f64>();
            prop_assert!((f64::from(dot(&a, &b)) - exact).abs() <= bound + 1e-6);
            let sq: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
            prop_assert!((f64::from(squared_distance(&a, &b)) - sq).abs() <= 1e-5 * sq + 1e-6);
        }
    }

    #[test]
    fn shorter_side_bounds_both() {
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
        assert_eq!(squared_distance(&[1.0, 2.0, 3.0], &[4.0, 6.0]), 25.0);
    }
}
