//! The confusion matrix of a classifier as a heat map, for every domain.

use std::path::Path;

use super::HeatMap;
use crate::Result;
use crate::metrics::ConfusionMatrix;

/// The confusion matrix as a heat map: row `t`, column `p` is the share of class `t`
/// predicted as `p`, from white (0) to dark blue (1), with the count written in the cell;
/// rows are true classes, columns predictions, both labelled with `names` (class indices when
/// `names` is empty).
///
/// # Errors
/// [`Error::Shape`](crate::Error::Shape) when `names` is neither empty nor one per class;
/// the heat map's errors when it cannot be drawn or written.
pub fn confusion_heatmap(matrix: &ConfusionMatrix, names: &[&str], path: &Path) -> Result<()> {
    let counts = matrix.counts();
    let shares = counts
        .iter()
        .map(|row| {
            let total = row.iter().sum::<u64>().max(1) as f64;
            row.iter().map(|&n| (n as f64 / total) as f32).collect()
        })
        .collect();
    let text = counts
        .iter()
        .map(|row| row.iter().map(u64::to_string).collect())
        .collect();
    let classes: Vec<String> = match names.len() {
        0 => (0..matrix.num_classes()).map(|c| c.to_string()).collect(),
        n if n == matrix.num_classes() => names.iter().map(|s| s.to_string()).collect(),
        n => {
            return Err(crate::Error::Shape {
                op: "confusion heat map",
                reason: format!("{n} class names for {} classes", matrix.num_classes()),
            });
        }
    };
    let widest = classes.iter().map(|c| c.chars().count()).max().unwrap_or(1);
    let map = HeatMap::new(shares, classes.clone(), classes)?
        .cell_text(text)?
        .cell_size(if widest > 3 { 72 } else { 36 })?
        .title("confusion matrix (share of each true class)")
        .x_desc("predicted")
        .y_desc("true class");
    map.save_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_named_classes_and_rejects_a_wrong_count() {
        let mut m = ConfusionMatrix::new(2);
        m.add(&[0, 1, 1], &[0, 1, 0]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        confusion_heatmap(&m, &["negative", "positive"], &path).unwrap();
        let img = image::open(&path).unwrap();
        assert!(img.width() > 100 && img.height() > 100);
        let e = confusion_heatmap(&m, &["one"], &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 class names for 2 classes"), "{e}");
    }
}
