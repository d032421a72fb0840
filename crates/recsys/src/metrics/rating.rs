//! Rating accuracy: root mean squared error and mean absolute error.

/// Root mean squared error of `predicted` against `actual` (0 for empty input).
///
/// # Panics
/// If the slices differ in length (a programming error, not bad data).
pub fn rmse(predicted: &[f32], actual: &[f32]) -> f64 {
    assert_eq!(predicted.len(), actual.len(), "rmse: length mismatch");
    if predicted.is_empty() {
        return 0.0;
    }
    let se: f64 = predicted
        .iter()
        .zip(actual)
        .map(|(p, a)| (*p as f64 - *a as f64).powi(2))
        .sum();
    (se / predicted.len() as f64).sqrt()
}

/// Mean absolute error of `predicted` against `actual` (0 for empty input).
///
/// # Panics
/// If the slices differ in length.
pub fn mae(predicted: &[f32], actual: &[f32]) -> f64 {
    assert_eq!(predicted.len(), actual.len(), "mae: length mismatch");
    if predicted.is_empty() {
        return 0.0;
    }
    predicted
        .iter()
        .zip(actual)
        .map(|(p, a)| (*p as f64 - *a as f64).abs())
        .sum::<f64>()
        / predicted.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_computed() {
        // errors 1, -2, 0, 3: squared 1 4 0 9 -> mean 3.5; absolute 1 2 0 3 -> 1.5
        let p = [4.0, 1.0, 3.0, 5.0];
        let a = [3.0, 3.0, 3.0, 2.0];
        assert!((rmse(&p, &a) - 3.5f64.sqrt()).abs() < 1e-12);
        assert!((mae(&p, &a) - 1.5).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn rmse_at_least_mae(v in proptest::collection::vec((0f32..5.0, 0f32..5.0), 1..50)) {
            let (p, a): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            prop_assert!(rmse(&p, &a) + 1e-9 >= mae(&p, &a));
            prop_assert!(mae(&p, &a) >= 0.0);
        }
    }
}
