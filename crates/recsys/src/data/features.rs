//! Sparse feature matrices: one row of `(feature, value)` pairs per user or item, with feature
//! names. Content models read item (and user) rows; the LightFM-style model sums the
//! embeddings of a row's features.

use serde::{Deserialize, Serialize};

/// One sparse row of `(feature index, value)` per entity, and the feature names.
///
/// Its fields are private so that every matrix holds together: each index is below the
/// number of names and each value is finite, checked by [`FeatureMatrix::new`] and when one
/// is read from a saved model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawFeatureMatrix")]
pub struct FeatureMatrix {
    names: Vec<String>,
    rows: Vec<Vec<(u32, f32)>>,
}

/// A [`FeatureMatrix`] as read from a file, before its check.
#[derive(Deserialize)]
struct RawFeatureMatrix {
    names: Vec<String>,
    rows: Vec<Vec<(u32, f32)>>,
}

impl TryFrom<RawFeatureMatrix> for FeatureMatrix {
    type Error = crate::RecsysError;

    fn try_from(raw: RawFeatureMatrix) -> crate::Result<Self> {
        FeatureMatrix::new(raw.names, raw.rows)
    }
}

impl FeatureMatrix {
    /// A matrix with the given names and rows.
    ///
    /// Fails with [`RecsysError::Data`](crate::RecsysError::Data) naming the row when an index
    /// is not below `names.len()` or a value is not finite.
    ///
    /// # Errors
    /// [`RecsysError::Data`](crate::RecsysError::Data) naming the row when an index is not below
    /// `names.len()` or a value is not finite.
    pub fn new(names: Vec<String>, rows: Vec<Vec<(u32, f32)>>) -> crate::Result<Self> {
        for (r, row) in rows.iter().enumerate() {
            if let Some(&(f, _)) = row.iter().find(|(f, _)| *f as usize >= names.len()) {
                return Err(crate::RecsysError::Data(format!(
                    "feature row {r} uses feature {f} of only {}",
                    names.len()
                )));
            }
            if let Some(&(f, v)) = row.iter().find(|(_, v)| !v.is_finite()) {
                return Err(crate::RecsysError::Data(format!(
                    "feature row {r}: feature {f} has the value {v}"
                )));
            }
        }
        Ok(Self { names, rows })
    }

    /// A matrix built by this crate from indices it made below `names.len()` and finite
    /// values (debug-asserted).
    pub(crate) fn from_valid_parts(names: Vec<String>, rows: Vec<Vec<(u32, f32)>>) -> Self {
        debug_assert!(Self::new(names.clone(), rows.clone()).is_ok());
        Self { names, rows }
    }

    /// The feature names, indexed by feature id.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Every entity's non-zero features, by dense user or item id.
    pub fn rows(&self) -> &[Vec<(u32, f32)>] {
        &self.rows
    }

    /// One indicator feature per entity (`prefix:0`, `prefix:1`, ...): the pure
    /// collaborative-filtering case of a feature-based model.
    pub fn identity(n: usize, prefix: &str) -> Self {
        Self {
            names: (0..n).map(|i| format!("{prefix}:{i}")).collect(),
            rows: (0..n).map(|i| vec![(i as u32, 1.0)]).collect(),
        }
    }

    /// Number of entities (rows).
    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    /// Number of features (columns).
    pub fn num_features(&self) -> usize {
        self.names.len()
    }

    /// The features of entity `row` (empty past the end).
    pub fn row(&self, row: u32) -> &[(u32, f32)] {
        self.rows
            .get(row as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Row `row` as a dense vector of `num_features()` values.
    pub fn dense_row(&self, row: u32) -> Vec<f32> {
        let mut out = vec![0.0; self.num_features()];
        for &(f, v) in self.row(row) {
            out[f as usize] += v;
        }
        out
    }

    /// Columns side by side: `self`'s features then `other`'s (rows are matched by index;
    /// the result has as many rows as the longer of the two).
    pub fn hstack(&self, other: &FeatureMatrix) -> FeatureMatrix {
        let offset = self.names.len() as u32;
        let n = self.rows.len().max(other.rows.len());
        FeatureMatrix {
            names: self.names.iter().chain(&other.names).cloned().collect(),
            rows: (0..n as u32)
                .map(|r| {
                    self.row(r)
                        .iter()
                        .copied()
                        .chain(other.row(r).iter().map(|&(f, v)| (f + offset, v)))
                        .collect()
                })
                .collect(),
        }
    }

    /// Scales each row to unit sum of values (LightFM's normalisation, so that an entity with
    /// many features does not get a larger embedding).
    pub fn normalized(&self) -> FeatureMatrix {
        FeatureMatrix {
            names: self.names.clone(),
            rows: self
                .rows
                .iter()
                .map(|row| {
                    let s: f32 = row.iter().map(|&(_, v)| v.abs()).sum();
                    row.iter()
                        .map(|&(f, v)| (f, if s > 0.0 { v / s } else { v }))
                        .collect()
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indices past the names and non-finite values are refused, by `new` and when read.
    #[test]
    fn an_inconsistent_matrix_is_refused() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert!(FeatureMatrix::new(names.clone(), vec![vec![(1, 1.0)]]).is_ok());
        let err = FeatureMatrix::new(names.clone(), vec![vec![], vec![(2, 1.0)]]).unwrap_err();
        assert!(
            err.to_string().contains("row 1 uses feature 2 of only 2"),
            "{err}"
        );
        let err = FeatureMatrix::new(names, vec![vec![(0, f32::NAN)]]).unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
        let json = r#"{"names": ["a"], "rows": [[[0, 1.0]], [[3, 1.0]]]}"#;
        let err = serde_json::from_str::<FeatureMatrix>(json).unwrap_err();
        assert!(
            err.to_string().contains("row 1 uses feature 3 of only 1"),
            "{err}"
        );
        let good: FeatureMatrix =
            serde_json::from_str(r#"{"names": ["a"], "rows": [[[0, 2.0]]]}"#).unwrap();
        assert_eq!(good.rows(), &[vec![(0, 2.0)]]);
    }

    #[test]
    fn hstack_offsets_and_normalises() {
        let a = FeatureMatrix::identity(2, "item");
        let b = FeatureMatrix::new(
            vec!["x".into(), "y".into()],
            vec![vec![(1, 1.0)], vec![(0, 1.0), (1, 1.0)]],
        )
        .unwrap();
        let m = a.hstack(&b);
        assert_eq!(m.num_features(), 4);
        assert_eq!(m.row(1), &[(1, 1.0), (2, 1.0), (3, 1.0)]);
        assert_eq!(m.dense_row(0), vec![1.0, 0.0, 0.0, 1.0]);
        let n = m.normalized();
        assert!((n.row(1).iter().map(|p| p.1).sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(FeatureMatrix::new(vec!["x".into()], vec![vec![(1, 1.0)]]).is_err());
    }
}
