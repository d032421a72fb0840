//! MovieLens 100K top-10 ranking with the `movielens --task ranking` protocol (per user 10
//! random ratings held out, implicit models trained on the remaining ratings >= 4, training
//! items excluded from the lists), for split seeds 0, 1 and 2: fit seconds (median over the
//! seeds) and the mean P@10, R@10, NDCG@10 over the seeds.
//!
//! Each seed's split is written to `target/bench/ml100k-ranking/seed{S}/{train,test}.tsv`
//! (dense `user item rating` rows) so that the peer, `benches/peers/ml100k_ranking_implicit_lightfm.py`
//! (implicit's ALS and BPR, LightFM's WARP), run by `cargo xtask bench` in the same minutes,
//! ranks exactly the same split; case names match.
//!
//! Full runs read `$KILN_DATA/ml-100k`; tiny runs (smoke tests) use 3,000 generated ratings and
//! export nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod common;

use common::generated;
use kiln_dev::bench::{BenchResult, Bencher};
use kiln_recsys::data::{Interactions, MovieLens, per_user_random};
use kiln_recsys::eval::ranking_scores;
use kiln_recsys::models::{AlsConfig, BprConfig, LightFmConfig};
use kiln_recsys::{Fit, TrainSet};

const SEEDS: [u64; 3] = [0, 1, 2];

fn write_tsv(path: &Path, data: &Interactions) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in &data.records {
        writeln!(out, "{}\t{}\t{}", r.user, r.item, r.rating)?;
    }
    out.flush()
}

/// Fits `make(seed)` on each seed's implicit training set and records the ranking metrics.
fn case<F: Fit>(
    bench: &mut Bencher,
    name: &str,
    data: &Interactions,
    export: Option<&Path>,
    make: impl Fn(u64) -> F,
) -> Result<(), Box<dyn std::error::Error>> {
    if !bench.enabled(name) {
        return Ok(());
    }
    let (mut fits, mut sums) = (Vec::new(), [0f64; 3]);
    let mut per_seed = Vec::new();
    for seed in SEEDS {
        let fold = per_user_random(data, 10, seed)?;
        if let Some(dir) = export {
            let dir = dir.join(format!("seed{seed}"));
            std::fs::create_dir_all(&dir)?;
            write_tsv(&dir.join("train.tsv"), &fold.train)?;
            write_tsv(&dir.join("test.tsv"), &fold.test)?;
        }
        let train = fold.train.implicit(4.0);
        let t = Instant::now();
        let model = make(seed).fit(&train)?;
        fits.push(t.elapsed().as_secs_f64());
        let seen = TrainSet::new(&fold.train)?;
        let s = ranking_scores(&model, &seen, &fold.test, 10, 4.0)?;
        for (sum, v) in sums.iter_mut().zip([s.precision, s.recall, s.ndcg]) {
            *sum += v / SEEDS.len() as f64;
        }
        per_seed.push(s.precision);
    }
    fits.sort_by(f64::total_cmp);
    let mut extra = serde_json::Map::new();
    extra.insert("precision_at_10".into(), sums[0].into());
    extra.insert("recall_at_10".into(), sums[1].into());
    extra.insert("ndcg_at_10".into(), sums[2].into());
    extra.insert("precision_at_10_per_seed".into(), per_seed.into());
    bench.record(BenchResult {
        name: name.into(),
        backend: "kiln".into(),
        iterations: fits.len(),
        median_secs: fits[fits.len() / 2],
        throughput: None,
        unit: None,
        tiny: bench.tiny(),
        extra,
    });
    Ok(())
}

/// Every case below, so that a filter matching none of them needs no data.
const CASES: [&str; 3] = [
    "ml100k_ranking_als",
    "ml100k_ranking_bpr",
    "ml100k_ranking_warp",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut bench = Bencher::from_args();
    let (data, export) = if bench.tiny() {
        (generated(3_000), None)
    } else if !CASES.iter().any(|c| bench.enabled(c)) {
        return Ok(bench.finish()?);
    } else {
        let root = std::env::var_os("KILN_DATA")
            .ok_or("the ranking benchmark needs KILN_DATA (the folder holding ml-100k)")?;
        // Benchmarks run in the crate's folder; the splits go to the workspace's target/.
        let export =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench/ml100k-ranking");
        (
            MovieLens::load(PathBuf::from(root).join("ml-100k"))?.ratings,
            Some(export),
        )
    };
    let export = export.as_deref();
    let tiny = bench.tiny();
    let (epochs, iterations) = if tiny { (2, 2) } else { (30, 15) };
    case(&mut bench, "ml100k_ranking_als", &data, export, |seed| {
        AlsConfig::new().with_seed(seed).with_iterations(iterations)
    })?;
    case(&mut bench, "ml100k_ranking_bpr", &data, export, |seed| {
        let c = BprConfig::new().with_seed(seed);
        if tiny { c.with_epochs(epochs) } else { c }
    })?;
    case(&mut bench, "ml100k_ranking_warp", &data, export, |seed| {
        LightFmConfig::new().with_seed(seed).with_epochs(epochs)
    })?;
    bench.finish()?;
    Ok(())
}
