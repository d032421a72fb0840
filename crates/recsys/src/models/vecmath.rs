//! The vector kernels the classical models share: a dot product and `y += a x` written with
//! eight independent accumulators, so that the compiler vectorises them (a plain
//! `iter().sum()` is a sequential chain of additions that it must keep in order).

/// `a . b` over the shorter of the two.
#[inline]
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

/// `y += a x` over the shorter of the two.
#[inline]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yk, &xk) in y.iter_mut().zip(x) {
        *yk += a * xk;
    }
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
            let mut y = b.clone();
            axpy(0.5, &a, &mut y);
            for k in 0..a.len() {
                prop_assert_eq!(y[k], b[k] + 0.5 * a[k]);
            }
        }
    }

    #[test]
    fn shorter_side_bounds_both() {
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
        let mut y = [1.0, 1.0];
        axpy(2.0, &[1.0, 2.0, 3.0], &mut y);
        assert_eq!(y, [3.0, 5.0]);
    }
}
