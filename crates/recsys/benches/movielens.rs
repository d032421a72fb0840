//! MovieLens 100K, 5-fold cross-validation (Surprise's protocol) for each model family that
//! Surprise also has: fit seconds per fold (median over the folds), RMSE and MAE, and the whole
//! 5-fold run's seconds including prediction. The Surprise peer is
//! `benches/peers/surprise_ml100k.py`, run by `cargo xtask bench` in the same run; case names
//! match.
//!
//! Full runs read `$KILN_DATA/ml-100k`; tiny runs (smoke tests) use 3,000 generated ratings.

use std::time::Instant;

mod common;

use common::generated;
use kiln_dev::bench::{BenchResult, Bencher};
use kiln_recsys::Fit;
use kiln_recsys::data::{Interactions, MovieLens, k_fold};
use kiln_recsys::eval::rating_scores;
use kiln_recsys::models::{
    BaselineConfig, KnnConfig, KnnPrediction, Similarity, SvdConfig, SvdPpConfig,
};

fn cross_validate<F: Fit>(
    bench: &mut Bencher,
    name: &str,
    params: &F,
    data: &Interactions,
) -> kiln_recsys::Result<()> {
    if !bench.enabled(name) {
        return Ok(());
    }
    let start = Instant::now();
    let folds = k_fold(data, 5, 0)?;
    let (mut fits, mut rmse, mut mae) = (Vec::new(), 0.0, 0.0);
    for fold in &folds {
        let t = Instant::now();
        let model = params.fit(&fold.train)?;
        fits.push(t.elapsed().as_secs_f64());
        let s = rating_scores(&model, &fold.test);
        rmse += s.rmse / folds.len() as f64;
        mae += s.mae / folds.len() as f64;
    }
    let total = start.elapsed().as_secs_f64();
    fits.sort_by(f64::total_cmp);
    let mut extra = serde_json::Map::new();
    extra.insert("rmse".into(), rmse.into());
    extra.insert("mae".into(), mae.into());
    extra.insert("total_seconds".into(), total.into());
    bench.record(BenchResult {
        name: name.into(),
        backend: "kiln".into(),
        iterations: fits.len(),
        median_secs: fits[fits.len() / 2],
        throughput: Some(data.len() as f64 * 0.8 / fits[fits.len() / 2]),
        unit: Some("ratings".into()),
        tiny: bench.tiny(),
        extra,
    });
    Ok(())
}

/// Every case below, so that a filter matching none of them needs no data.
const CASES: [&str; 7] = [
    "ml100k_baseline_5fold",
    "ml100k_knn_basic_5fold",
    "ml100k_knn_baseline_item_5fold",
    "ml100k_knn_means_item_pearson_5fold",
    "ml100k_svd_5fold",
    "ml100k_svd_surprise_params_5fold",
    "ml100k_svdpp_5fold",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut bench = Bencher::from_args();
    let data = if bench.tiny() {
        generated(3_000)
    } else if !CASES.iter().any(|c| bench.enabled(c)) {
        // The filter keeps none of these cases: no data needed.
        return Ok(bench.finish()?);
    } else {
        let root = std::env::var_os("KILN_DATA")
            .ok_or("the full MovieLens benchmark needs KILN_DATA (the folder holding ml-100k)")?;
        MovieLens::load(std::path::PathBuf::from(root).join("ml-100k"))?.ratings
    };
    cross_validate(
        &mut bench,
        "ml100k_baseline_5fold",
        &BaselineConfig::new(),
        &data,
    )?;
    cross_validate(
        &mut bench,
        "ml100k_knn_basic_5fold",
        &KnnConfig::user_based(),
        &data,
    )?;
    cross_validate(
        &mut bench,
        "ml100k_knn_baseline_item_5fold",
        &KnnConfig::item_baseline(),
        &data,
    )?;
    cross_validate(
        &mut bench,
        "ml100k_knn_means_item_pearson_5fold",
        &KnnConfig::item_based()
            .with_similarity(Similarity::Pearson)
            .with_prediction(KnnPrediction::WithMeans),
        &data,
    )?;
    cross_validate(&mut bench, "ml100k_svd_5fold", &SvdConfig::new(), &data)?;
    cross_validate(
        &mut bench,
        "ml100k_svd_surprise_params_5fold",
        &SvdConfig::surprise(),
        &data,
    )?;
    cross_validate(&mut bench, "ml100k_svdpp_5fold", &SvdPpConfig::new(), &data)?;
    bench.finish()?;
    Ok(())
}
