//! Recommenders at MovieLens 20M's scale on one machine: fit time per iteration and peak
//! memory of ALS, BPR or WARP on 20M implicit interactions, ranking metrics on held-out
//! interactions of sampled users (blocked GEMM scoring), and HNSW retrieval's recall@10 and
//! speed against exact top-k.
//!
//! ```sh
//! # Synthetic data with MovieLens 20M's shape (no download): 138,000 users, 27,000 items.
//! cargo run --release --example recsys_scale --features recsys -- --model als
//! # 1M interactions (users scale with the total), 2 threads, data for the Python peer.
//! cargo run --release --example recsys_scale --features recsys -- --model bpr \
//!     --interactions 1000000 --threads 2 --export target/scale-1m
//! # A real ml-20m / ml-25m folder (ratings.csv, streamed): ratings >= 4 as positives.
//! cargo run --release --example recsys_scale --features recsys -- --data ml-20m --model als
//! ```
//!
//! `--iterations` counts ALS alternations or BPR / WARP epochs. `--export DIR` writes the
//! training interactions as `users.u32` and `items.u32` (little-endian) with `meta.json`, which
//! `benches/peers/implicit_lightfm_scale.py` reads to run implicit and LightFM on the same data.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use kiln_core::data::SplitMix64;
use kiln_recsys::data::{CsvFormat, Interactions, SyntheticConfig};
use kiln_recsys::eval::ranking_scores;
use kiln_recsys::models::{AlsConfig, BprConfig, LightFmConfig};
use kiln_recsys::retrieval::{ExactIndex, HnswConfig, HnswIndex, recall_at_k};
use kiln_recsys::{Fit, Recommender};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Model {
    Als,
    Bpr,
    Warp,
}

/// Fit time and memory of implicit recommenders at MovieLens 20M's scale.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// The model.
    #[arg(long, value_enum)]
    model: Model,
    /// Synthetic interactions (without --data); users scale with it, 27,000 items.
    #[arg(long, value_parser = common::positive, default_value_t = 20_000_000)]
    interactions: usize,
    /// ALS alternations, or BPR / WARP epochs.
    #[arg(long, value_parser = common::positive, default_value_t = 3)]
    iterations: usize,
    /// Latent factors.
    #[arg(long, value_parser = common::positive, default_value_t = 64)]
    factors: usize,
    /// Worker threads (default: every core).
    #[arg(long, value_parser = common::positive)]
    threads: Option<usize>,
    /// Seed of the data, the held-out interactions and the model.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Users whose one random interaction is held out for ranking metrics and retrieval
    /// recall (0: no evaluation).
    #[arg(long, default_value_t = 10_000)]
    eval_users: usize,
    /// HNSW candidates kept while building (efConstruction).
    #[arg(long, value_parser = common::positive, default_value_t = HnswConfig::default().ef_construction)]
    ef_construction: usize,
    /// HNSW candidates kept while searching (ef): recall against speed.
    #[arg(long, value_parser = common::positive, default_value_t = HnswConfig::default().ef_search)]
    ef_search: usize,
    /// With --data: ratings at or above it are the positives.
    #[arg(long, value_parser = common::finite_f32, default_value_t = 4.0)]
    positives: f32,
    /// Write the training interactions for the Python peer to this folder.
    #[arg(long, value_name = "DIR")]
    export: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}

type BoxError = Box<dyn std::error::Error>;

/// Holds out one interaction (chosen uniformly, in one pass) of each of `n` users drawn at
/// random among users with at least two, removing it from `data` in place.
fn hold_out(data: &mut Interactions, n: usize, seed: u64) -> Interactions {
    let mut count = vec![0u32; data.num_users()];
    for r in &data.records {
        count[r.user as usize] += 1;
    }
    let mut eligible: Vec<u32> = (0..count.len() as u32)
        .filter(|&u| count[u as usize] >= 2)
        .collect();
    kiln_core::data::shuffle(&mut eligible, seed);
    eligible.truncate(n);
    // Reservoir sampling of one record per chosen user.
    let mut chosen = vec![false; count.len()];
    eligible.iter().for_each(|&u| chosen[u as usize] = true);
    let mut seen = vec![0u32; count.len()];
    let mut pick = vec![usize::MAX; count.len()];
    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    for (i, r) in data.records.iter().enumerate() {
        let u = r.user as usize;
        if chosen[u] {
            seen[u] += 1;
            if rng.below(u64::from(seen[u])) == 0 {
                pick[u] = i;
            }
        }
    }
    let mut held = vec![false; data.records.len()];
    let mut test = Vec::with_capacity(eligible.len());
    for &u in &eligible {
        let i = pick[u as usize];
        held[i] = true;
        test.push(data.records[i]);
    }
    let mut i = 0;
    data.records.retain(|_| {
        i += 1;
        !held[i - 1]
    });
    Interactions::new(test, data.users.clone(), data.items.clone())
}

fn export(dir: &Path, data: &Interactions) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let write = |name: &str, values: &mut dyn Iterator<Item = u32>| -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        for v in values {
            out.write_all(&v.to_le_bytes())?;
        }
        out.flush()
    };
    write("users.u32", &mut data.records.iter().map(|r| r.user))?;
    write("items.u32", &mut data.records.iter().map(|r| r.item))?;
    let meta = json!({
        "users": data.num_users(), "items": data.num_items(), "interactions": data.len(),
    });
    std::fs::write(dir.join("meta.json"), meta.to_string())
}

/// The fitted model, and for ALS each alternation's seconds without the setup.
fn fit(args: &Args, train: &Interactions) -> Result<(Box<dyn Recommender>, Vec<f64>), BoxError> {
    let (f, it, seed) = (args.factors, args.iterations, args.seed);
    Ok(match args.model {
        Model::Als => {
            let (model, seconds) = AlsConfig::new()
                .with_factors(f)
                .with_iterations(it)
                .with_seed(seed)
                .fit_timed(train)?;
            (Box::new(model), seconds)
        }
        Model::Bpr => (
            Box::new(
                BprConfig::new()
                    .with_factors(f)
                    .with_epochs(it)
                    .with_seed(seed)
                    .fit(train)?,
            ),
            Vec::new(),
        ),
        Model::Warp => {
            let mut c = LightFmConfig::new().with_epochs(it).with_seed(seed);
            c.components = f;
            (Box::new(c.fit(train)?), Vec::new())
        }
    })
}

fn run(args: &Args) -> Result<(), BoxError> {
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()?;
    }
    let t = Instant::now();
    let mut data = match &args.common.data {
        Some(dir) => {
            let path = dir.join("ratings.csv");
            CsvFormat::movielens_csv()
                .read(&path)?
                .implicit(args.positives)
        }
        None => SyntheticConfig::movielens_like(args.interactions)
            .with_seed(args.seed)
            .generate()?,
    };
    let load_seconds = t.elapsed().as_secs_f64();
    args.common.say(format!(
        "{} interactions, {} users, {} items ({load_seconds:.1} s to {})",
        data.len(),
        data.num_users(),
        data.num_items(),
        if args.common.data.is_some() {
            "read"
        } else {
            "generate"
        }
    ));
    let test = hold_out(&mut data, args.eval_users, args.seed);
    if let Some(dir) = &args.export {
        export(dir, &data)?;
    }
    let t = Instant::now();
    let (model, iteration_seconds) = fit(args, &data)?;
    let fit_seconds = t.elapsed().as_secs_f64();
    let name = format!("{:?}", args.model).to_lowercase();
    let threads = rayon::current_num_threads();
    args.common.say(format!(
        "{name}: fit {fit_seconds:.2} s, {:.2} s per iteration ({} iterations, {threads} threads)",
        fit_seconds / args.iterations as f64,
        args.iterations
    ));
    let mut report = json!({
        "model": name, "interactions": data.len() + test.len(), "train_interactions": data.len(),
        "users": data.num_users(), "items": data.num_items(), "threads": threads,
        "iterations": args.iterations, "factors": args.factors, "load_seconds": load_seconds,
        "fit_seconds": fit_seconds,
        "seconds_per_iteration": fit_seconds / args.iterations as f64,
    });
    if !iteration_seconds.is_empty() {
        let mut sorted = iteration_seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        args.common.say(format!(
            "{name}: iterations alone {iteration_seconds:.2?} s (median {median:.2} s)"
        ));
        report["iteration_seconds"] = json!(iteration_seconds);
        report["median_iteration_seconds"] = json!(median);
    }
    if !test.is_empty() {
        let t = Instant::now();
        let seen = model.train_set();
        let s = ranking_scores(model.as_ref(), seen, &test, 10, 0.0)?;
        let eval_seconds = t.elapsed().as_secs_f64();
        let users: Vec<u32> = test.records.iter().map(|r| r.user).collect();
        let exact = ExactIndex::new(model.as_ref())?;
        let t = Instant::now();
        let _ = exact.top_k_batch(&users, 10, |u| seen.user(u).0);
        let exact_ms = t.elapsed().as_secs_f64() * 1e3 / users.len() as f64;
        // One user at a time, as a server without batching would ask.
        let single = &users[..users.len().min(1000)];
        let t = Instant::now();
        for &u in single {
            let _ = exact.top_k_batch(&[u], 10, |u| seen.user(u).0);
        }
        let single_ms = t.elapsed().as_secs_f64() * 1e3 / single.len() as f64;
        let t = Instant::now();
        let config = HnswConfig {
            ef_construction: args.ef_construction,
            ef_search: args.ef_search,
            seed: args.seed,
        };
        let ann = HnswIndex::new(model.as_ref(), config)?;
        let build_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for &u in &users {
            let _ = ann.top_k(u, 10, &[]);
        }
        let ann_ms = t.elapsed().as_secs_f64() * 1e3 / users.len() as f64;
        let recall = recall_at_k(&exact, &ann, &users, 10);
        args.common.say(format!(
            "{} held-out users: P@10 {:.4}  R@10 {:.4}  NDCG@10 {:.4} ({eval_seconds:.2} s); \
             exact top-10 {exact_ms:.3} ms/user in blocks, {single_ms:.3} ms one by one; \
             HNSW {ann_ms:.3} ms/user (built in {build_seconds:.1} s), recall@10 {recall:.3}",
            s.users, s.precision, s.recall, s.ndcg
        ));
        report["eval"] = json!({
            "users": s.users, "precision_at_10": s.precision, "recall_at_10": s.recall,
            "ndcg_at_10": s.ndcg, "seconds": eval_seconds,
            "exact_ms_per_user": exact_ms, "exact_single_ms_per_user": single_ms,
            "hnsw_ms_per_user": ann_ms, "hnsw_ef_construction": args.ef_construction,
            "hnsw_ef_search": args.ef_search,
            "hnsw_build_seconds": build_seconds, "hnsw_recall_at_10": recall,
        });
    }
    let peak = common::peak_rss_mib();
    report["peak_rss_mib"] = json!(peak);
    args.common.say(format!(
        "peak resident memory {:.0} MiB",
        peak.unwrap_or(f64::NAN)
    ));
    args.common.write_report(&report)?;
    Ok(())
}
