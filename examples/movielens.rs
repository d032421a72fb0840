//! MovieLens 100K with kiln-recsys: rating prediction by k-fold cross-validation, or top-k
//! ranking on a per-user leave-last-n split.
//!
//! ```sh
//! cargo run --release --example movielens -- --data ../shared/data/ml-100k --model mf
//! cargo run --release --example movielens -- --data ../shared/data/ml-100k --model lightfm
//! cargo run --release --example movielens -- --data ../shared/data/ml-100k --model lightfm \
//!     --features metadata
//! ```
//!
//! Rating models (`mean`, `baseline`, `knn-user`, `knn-item`, `knn-baseline`, `content`,
//! `hybrid`, `mf`, `svdpp`) default to `--task rating`: `--folds` random folds (Surprise's
//! protocol), RMSE and MAE. Ranking models (`popularity`, `bpr`, `als`, `lightfm`, `neumf`) default to
//! `--task ranking`: `--holdout` ratings per user are held out (at random, or the latest with
//! `--holdout-by last`), ratings >=
//! `--threshold` count as relevant, implicit models train on the training ratings >=
//! `--threshold`, and every list leaves out the user's training items.

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::builder::PossibleValuesParser;
use clap::{Parser, ValueEnum};
use kiln_recsys::data::{
    FeatureMatrix, Interactions, MovieLens, k_fold, leave_last_n, per_user_random,
};
use kiln_recsys::eval::{ranking_scores, rating_scores};
use kiln_recsys::models::{RECOMMENDERS, Settings, Task, recommender};
use kiln_recsys::{Persist, RecommenderBundle, TrainSet};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HoldoutBy {
    Last,
    Random,
}

/// What `lightfm` knows of users and items besides their ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Features {
    /// One identity feature per user and per item: pure collaborative filtering, as LightFM's
    /// own benchmark and the peer script.
    None,
    /// Identity plus genres and release decade (items) and age, gender and occupation (users),
    /// each row normalised to sum 1: scores items nobody has rated, at some cost in P@10 for
    /// known items (each id's own embedding gets a share of the row).
    Metadata,
}

/// `--task`: the registry's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TaskArg {
    Rating,
    Ranking,
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Self {
        match t {
            TaskArg::Rating => Task::Rating,
            TaskArg::Ranking => Task::Ranking,
        }
    }
}

/// Rating prediction or top-k ranking on MovieLens 100K.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: common::CommonArgs,
    /// The model (kiln_recsys::models::RECOMMENDERS).
    #[arg(long, default_value = "mf", value_parser = PossibleValuesParser::new(RECOMMENDERS.iter().map(|e| e.name)))]
    model: String,
    /// rating (k-fold RMSE / MAE) or ranking (leave-last-n top-k); default by model.
    #[arg(long, value_enum)]
    task: Option<TaskArg>,
    /// Folds for the rating task.
    #[arg(long, value_parser = common::at_least_two, default_value_t = 5)]
    folds: usize,
    /// Seed of the folds and the models.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Length of the ranked lists.
    #[arg(long, value_parser = common::positive, default_value_t = 10)]
    k: usize,
    /// Ratings at or above it are relevant (ranking) and positives (implicit models).
    #[arg(long, value_parser = common::finite_f32, default_value_t = 4.0)]
    threshold: f32,
    /// Ratings held out per user for the ranking task.
    #[arg(long, value_parser = common::positive, default_value_t = 10)]
    holdout: usize,
    /// How the ranking task picks each user's held-out ratings: at random (as MovieLens's own
    /// ua/ub splits and LightFM's benchmark) or the latest by timestamp.
    #[arg(long, value_enum, default_value = "random")]
    holdout_by: HoldoutBy,
    /// Implicit models train on the ratings at or above it (default: --threshold).
    #[arg(long, value_parser = common::finite_f32)]
    positives: Option<f32>,
    /// Latent factors (mf, svdpp, bpr, lightfm).
    #[arg(long, value_parser = common::positive)]
    factors: Option<usize>,
    /// Epochs (mf, svdpp, bpr, lightfm).
    #[arg(long, value_parser = common::positive)]
    epochs: Option<usize>,
    /// Learning rate (mf, svdpp, bpr, lightfm).
    #[arg(long, value_parser = common::positive_rate_f32)]
    lr: Option<f32>,
    /// Regularisation (mf, svdpp, bpr).
    #[arg(long, value_parser = common::non_negative_f32)]
    reg: Option<f32>,
    /// Side features of `lightfm`.
    #[arg(long, value_enum, default_value = "none")]
    features: Features,
    /// Neighbours (knn-*).
    #[arg(long, value_parser = common::positive)]
    neighbours: Option<usize>,
    /// After the evaluation, fit the model on all ratings and save it with the raw user and
    /// movie ids and the titles (a `RecommenderBundle`, which `kiln-serve` loads).
    #[arg(long)]
    export: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}

type BoxError = Box<dyn std::error::Error>;

/// The registry's settings from the flags: overrides, the seed, the side information.
fn settings(args: &Args, ml: &MovieLens) -> Result<Settings, BoxError> {
    let lightfm_features = (args.features == Features::Metadata).then(|| {
        let users = FeatureMatrix::identity(ml.users.len(), "user").hstack(&ml.user_features());
        let items = FeatureMatrix::identity(ml.movies.len(), "item").hstack(&ml.item_features());
        (Arc::new(users.normalized()), Arc::new(items.normalized()))
    });
    Ok(Settings {
        factors: args.factors,
        epochs: args.epochs,
        lr: args.lr,
        reg: args.reg,
        neighbours: args.neighbours,
        seed: args.seed,
        content_features: Some(Arc::new(ml.item_features())),
        lightfm_features,
        device: Some(args.common.device()?),
        progress: Some(args.common.progress()),
    })
}

fn run(args: &Args) -> Result<(), BoxError> {
    let start = Instant::now();
    let dir = args
        .common
        .data
        .clone()
        .ok_or("--data DIR is required (the ml-100k folder, e.g. ../shared/data/ml-100k)")?;
    let ml = MovieLens::load(&dir)?;
    let entry = recommender(&args.model)?;
    let settings = settings(args, &ml)?;
    let fit = |train: &Interactions| entry.fit(&settings, train);
    let task = args.task.map_or(entry.task, Task::from);
    let name = entry.name;
    args.common.say(format!(
        "{name}: {} ratings, {} users, {} items, task {task:?}",
        ml.ratings.len(),
        ml.ratings.num_users(),
        ml.ratings.num_items()
    ));
    let mut report = json!({ "model": name, "task": format!("{task:?}").to_lowercase() });
    match task {
        Task::Rating => {
            let folds = k_fold(&ml.ratings, args.folds, args.seed)?;
            let mut per_fold = Vec::new();
            for (f, fold) in folds.iter().enumerate() {
                let t = Instant::now();
                let model = fit(&fold.train)?;
                let fit_seconds = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let s = rating_scores(&model, &fold.test);
                let test_seconds = t.elapsed().as_secs_f64();
                args.common.say(format!(
                    "fold {}: rmse {:.4}  mae {:.4}  fit {fit_seconds:.2} s  test {test_seconds:.2} s",
                    f + 1,
                    s.rmse,
                    s.mae
                ));
                per_fold.push(json!({
                    "rmse": s.rmse, "mae": s.mae,
                    "fit_seconds": fit_seconds, "test_seconds": test_seconds,
                }));
            }
            let mean = |key: &str| {
                per_fold
                    .iter()
                    .map(|f| f[key].as_f64().unwrap_or(f64::NAN))
                    .sum::<f64>()
                    / per_fold.len() as f64
            };
            report["rmse"] = json!(mean("rmse"));
            report["mae"] = json!(mean("mae"));
            report["fit_seconds"] = json!(mean("fit_seconds"));
            report["folds"] = json!(args.folds);
            report["per_fold"] = Value::Array(per_fold);
            args.common.say(format!(
                "{name}: {}-fold rmse {:.4}  mae {:.4}  fit {:.2} s per fold",
                args.folds,
                report["rmse"].as_f64().unwrap_or(f64::NAN),
                report["mae"].as_f64().unwrap_or(f64::NAN),
                report["fit_seconds"].as_f64().unwrap_or(f64::NAN),
            ));
        }
        Task::Ranking => {
            let fold = match args.holdout_by {
                HoldoutBy::Last => leave_last_n(&ml.ratings, args.holdout)?,
                HoldoutBy::Random => per_user_random(&ml.ratings, args.holdout, args.seed)?,
            };
            let train = if entry.implicit() {
                fold.train
                    .implicit(args.positives.unwrap_or(args.threshold))
            } else {
                fold.train.clone()
            };
            let t = Instant::now();
            let model = fit(&train)?;
            let fit_seconds = t.elapsed().as_secs_f64();
            let seen = TrainSet::new(&fold.train)?;
            let s = ranking_scores(&model, &seen, &fold.test, args.k, args.threshold)?;
            let k = args.k;
            for (key, v) in [
                ("precision", s.precision),
                ("recall", s.recall),
                ("ndcg", s.ndcg),
                ("map", s.map),
                ("hit_rate", s.hit_rate),
            ] {
                report[format!("{key}_at_{k}")] = json!(v);
            }
            report["mrr"] = json!(s.mrr);
            report["coverage"] = json!(s.coverage);
            report["users"] = json!(s.users);
            report["k"] = json!(k);
            report["fit_seconds"] = json!(fit_seconds);
            args.common.say(format!(
                "{name}: P@{k} {:.4}  R@{k} {:.4}  NDCG@{k} {:.4}  MAP@{k} {:.4}  HR@{k} {:.4}  \
                 MRR {:.4}  coverage {:.3}  ({} users, fit {fit_seconds:.2} s)",
                s.precision, s.recall, s.ndcg, s.map, s.hit_rate, s.mrr, s.coverage, s.users
            ));
        }
    }
    if let Some(path) = &args.export {
        // The served model learns from every rating (implicit ones from the positives).
        let all = if entry.implicit() {
            ml.ratings
                .implicit(args.positives.unwrap_or(args.threshold))
        } else {
            ml.ratings.clone()
        };
        let model = fit(&all)?;
        let titles = ml.movies.iter().map(|m| m.title.clone()).collect();
        RecommenderBundle::new(model, &ml.ratings.users, &ml.ratings.items, titles)?
            .with_seen(&ml.ratings)?
            .save(path)?;
        args.common.say(format!(
            "{name}: fitted on all {} ratings, saved with ids and titles to {}",
            all.len(),
            path.display()
        ));
        report["export"] = json!(path);
    }
    report["total_seconds"] = json!(start.elapsed().as_secs_f64());
    args.common.write_report(&report)?;
    Ok(())
}
