//! Project automation: `cargo xtask ci` (the whole check and test suite) and
//! `cargo xtask bench` (the benchmarks). Run `cargo xtask help` for the options.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Backend features every CI step builds with, so that Burn is compiled once.
const CI_FEATURES: &str = "ndarray";

const HELP: &str = "\
cargo xtask ci [--features F] [--skip STEP,...]
    fmt, clippy, tests (unit, integration, doc), the #[ignore]d data tests when KILN_DATA or
    KILN_MODELS is set, example runs, and one tiny iteration of every benchmark.
    Default features: ndarray (on top of the default flex backend).
cargo xtask bench [--filter NAME] [--json FILE] [--features F]
    The benchmark suite in release mode, then the Python peers in benches/peers/ (PyTorch,
    sentence-transformers, Surprise) where they are installed; a markdown table on stdout,
    JSON in FILE (default target/bench/results.json).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf();
    std::env::set_current_dir(&root).expect("workspace root");
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(&args[1..]),
        Some("bench") => bench(&args[1..]),
        _ => {
            println!("{HELP}");
            return if args.is_empty() || args[0] == "help" || args[0] == "--help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value following `--name`, if any.
fn option(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("\n==> {shown}");
    let status = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} exited with {status}"))
    }
}

/// One CI step's body.
type StepFn<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;

struct Step {
    name: &'static str,
    seconds: f64,
    outcome: Result<(), String>,
}

fn ci(args: &[String]) -> Result<(), String> {
    let features = option(args, "--features").unwrap_or_else(|| CI_FEATURES.to_string());
    let skip: Vec<String> = option(args, "--skip")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    // Tests run in their crate's folder: make relative data paths absolute first.
    for var in ["KILN_DATA", "KILN_MODELS"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let path = PathBuf::from(&value);
            if path.is_relative() {
                let absolute = std::fs::canonicalize(&path)
                    .map_err(|e| format!("{var}={}: {e}", path.display()))?;
                // SAFETY: xtask is single-threaded here; no other thread reads the environment.
                unsafe { std::env::set_var(var, absolute) };
            }
        }
    }
    let data_env = ["KILN_DATA", "KILN_MODELS"]
        .into_iter()
        .filter(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
        .collect::<Vec<_>>();
    let out = PathBuf::from("target/xtask");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;

    let with_features = |mut c: Command| {
        c.args(["--workspace", "--features", &features]);
        c
    };
    let mut steps: Vec<(&'static str, StepFn)> = vec![
        (
            "fmt",
            Box::new(|| {
                let mut c = cargo();
                c.args(["fmt", "--all", "--", "--check"]);
                run(c)
            }),
        ),
        (
            "clippy",
            Box::new(|| {
                let mut c = cargo();
                c.arg("clippy");
                let mut c = with_features(c);
                c.args(["--all-targets", "--", "-D", "warnings"]);
                run(c)
            }),
        ),
        (
            "test",
            Box::new(|| {
                // Unit and integration tests, builds every example, runs every benchmark once on
                // tiny inputs (bench targets without --bench are smoke runs).
                let mut c = cargo();
                c.arg("test");
                let mut c = with_features(c);
                c.arg("--all-targets");
                run(c)
            }),
        ),
        (
            "doctest",
            Box::new(|| {
                let mut c = cargo();
                c.arg("test");
                let mut c = with_features(c);
                c.arg("--doc");
                run(c)
            }),
        ),
        (
            "data-tests",
            Box::new(|| {
                if data_env.is_empty() {
                    eprintln!("\n==> data tests skipped: neither KILN_DATA nor KILN_MODELS is set");
                    return Ok(());
                }
                let mut c = cargo();
                c.arg("test");
                let mut c = with_features(c);
                c.args(["--lib", "--tests", "--", "--ignored"]);
                run(c)
            }),
        ),
        ("examples", Box::new(|| run_examples(&features, &out))),
    ];
    steps.retain(|(name, _)| !skip.iter().any(|s| s == name));

    let mut done = Vec::new();
    for (name, f) in &steps {
        let started = Instant::now();
        let outcome = f();
        done.push(Step {
            name,
            seconds: started.elapsed().as_secs_f64(),
            outcome,
        });
    }

    println!("\n| step | result | seconds |\n|---|---|---|");
    for s in &done {
        let result = match &s.outcome {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("FAILED: {e}"),
        };
        println!("| {} | {} | {:.1} |", s.name, result, s.seconds);
    }
    let total: f64 = done.iter().map(|s| s.seconds).sum();
    println!("| total | | {total:.1} |");
    let failed = done.iter().filter(|s| s.outcome.is_err()).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} step(s) failed"))
    }
}

/// Runs the self-contained examples and checks what their reports say.
fn run_examples(features: &str, out: &Path) -> Result<(), String> {
    let example = |name: &str, extra: &[&str]| -> Result<serde_json::Value, String> {
        let report = out.join(format!("{name}.json"));
        let mut c = cargo();
        c.args([
            "run",
            "--quiet",
            "--features",
            features,
            "--example",
            name,
            "--",
        ]);
        c.args(["--quiet", "--report"]).arg(&report);
        c.args(extra);
        run(c)?;
        let text =
            std::fs::read_to_string(&report).map_err(|e| format!("{}: {e}", report.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", report.display()))
    };
    let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };

    let seed = example("seed_mlp", &[])?;
    let gd = &seed["gd"];
    for (got, want) in [
        (&gd["w"][0], &gd["reference_w"][0]),
        (&gd["w"][1], &gd["reference_w"][1]),
        (&gd["b"], &gd["reference_b"]),
    ] {
        let (g, w) = (
            got.as_f64().unwrap_or(f64::NAN),
            want.as_f64().unwrap_or(f64::NAN),
        );
        check(
            (g - w).abs() < 1e-4,
            format!("seed_mlp: gradient descent gave {g}, the hand-written loop {w}"),
        )?;
    }
    check(
        seed["adam"]["stop_reason"]["rule"] == "target_loss",
        format!(
            "seed_mlp: Adam run stopped by {}",
            seed["adam"]["stop_reason"]
        ),
    )?;

    let runs = out.join("runs").join("quickstart");
    let quick = example("quickstart", &["--run-dir", &runs.to_string_lossy()])?;
    let metric = |domain: &str, key: &str| quick[domain][key].as_f64().unwrap_or(f64::NAN);
    check(
        metric("vision", "valid_accuracy") > 0.9,
        format!(
            "quickstart vision accuracy {}",
            metric("vision", "valid_accuracy")
        ),
    )?;
    check(
        metric("nlp", "valid_accuracy") > 0.8,
        format!(
            "quickstart nlp accuracy {}",
            metric("nlp", "valid_accuracy")
        ),
    )?;
    check(
        metric("recsys", "valid_rmse") < 0.8 * metric("recsys", "global_mean_rmse"),
        format!(
            "quickstart recsys RMSE {} vs global mean {}",
            metric("recsys", "valid_rmse"),
            metric("recsys", "global_mean_rmse")
        ),
    )?;
    for domain in ["vision", "nlp", "recsys"] {
        for file in [
            "metrics.jsonl",
            "curves.svg",
            "checkpoints/last.ckpt",
            "checkpoints/best.ckpt",
        ] {
            let path = runs.join(domain).join(file);
            check(
                path.is_file(),
                format!("quickstart did not write {}", path.display()),
            )?;
        }
    }

    // Real data: MovieLens 100K rating prediction and ranking, reports checked.
    if let Some(data) = std::env::var_os("KILN_DATA") {
        let ml = PathBuf::from(data).join("ml-100k");
        let ml = ml.to_string_lossy();
        let mf = example("movielens", &["--data", &ml, "--model", "mf"])?;
        let rmse = mf["rmse"].as_f64().unwrap_or(f64::NAN);
        check(
            rmse <= 0.925 && mf["per_fold"].as_array().is_some_and(|f| f.len() == 5),
            format!("movielens mf: 5-fold RMSE {rmse} (target <= 0.925)"),
        )?;
        let bpr = example("movielens", &["--data", &ml, "--model", "bpr"])?;
        let p10 = bpr["precision_at_10"].as_f64().unwrap_or(f64::NAN);
        check(
            p10 >= 0.11,
            format!("movielens bpr: precision@10 {p10} (target >= 0.11)"),
        )?;
    }

    // Real data, NLP from scratch: short runs of the three examples, reports checked (the
    // full-length targets are measured in docs/benchmarks.md).
    if let Some(data) = std::env::var_os("KILN_DATA") {
        let data = PathBuf::from(data);
        let dir = |name: &str| data.join(name).to_string_lossy().into_owned();
        let runs = out.join("runs");
        let run_dir = |name: &str| runs.join(name).to_string_lossy().into_owned();
        let sms = example(
            "text_classify",
            &[
                "--data",
                &dir("sms-spam"),
                "--dataset",
                "sms-spam",
                "--epochs",
                "3",
                "--limit",
                "2000",
                "--hidden",
                "32",
                "--embed-dim",
                "32",
                "--dropout",
                "0.1",
                "--lr",
                "5e-3",
                "--run-dir",
                &run_dir("text_classify"),
            ],
        )?;
        let acc = sms["test_accuracy"].as_f64().unwrap_or(f64::NAN);
        check(
            acc > 0.9 && sms["macro_f1"].as_f64().is_some(),
            format!("text_classify sms-spam, 3 short epochs: test accuracy {acc} (majority 0.866)"),
        )?;
        let tr = example(
            "translate",
            &[
                "--data",
                &dir("eng-fra"),
                "--epochs",
                "1",
                "--limit",
                "800",
                "--hidden",
                "32",
                "--beam",
                "2",
                "--run-dir",
                &run_dir("translate"),
            ],
        )?;
        let heatmap = PathBuf::from(tr["heatmap"].as_str().unwrap_or_default());
        check(
            tr["bleu_greedy"].as_f64().is_some_and(f64::is_finite)
                && tr["test_pairs"].as_u64().is_some_and(|n| n > 1000)
                && heatmap.is_file(),
            format!("translate: report {tr}"),
        )?;
        let lm = example(
            "char_lm",
            &[
                "--data",
                &dir("tinyshakespeare"),
                "--model",
                "lstm",
                "--minutes",
                "0.25",
                "--epochs",
                "1",
                "--block",
                "32",
                "--width",
                "64",
                "--layers",
                "1",
                "--sample-len",
                "40",
                "--run-dir",
                &run_dir("char_lm"),
            ],
        )?;
        let loss = lm["valid_loss"].as_f64().unwrap_or(f64::NAN);
        check(
            loss < (65f64).ln(),
            format!("char_lm: validation loss {loss} not below uniform guessing"),
        )?;
    }

    // Pretrained model: embed the benchmark sentences, one JSON line per sentence.
    if let Some(models) = std::env::var_os("KILN_MODELS") {
        let models = PathBuf::from(models);
        let input = models
            .join("..")
            .join("reference")
            .join("bench-sentences-1000.txt");
        let output = out.join("embeddings.jsonl");
        let embed = example(
            "embed",
            &[
                "--model",
                &models.join("all-MiniLM-L6-v2").to_string_lossy(),
                "--input",
                &input.to_string_lossy(),
                "--output",
                &output.to_string_lossy(),
            ],
        )?;
        let lines = std::fs::read_to_string(&output)
            .map_err(|e| format!("{}: {e}", output.display()))?
            .lines()
            .count();
        check(
            embed["sentences"] == 1000 && lines == 1000 && embed["dim"] == 384,
            format!(
                "embed: {} sentences reported, {lines} lines written",
                embed["sentences"]
            ),
        )?;
    }
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
    let features = option(args, "--features").unwrap_or_default();
    let json =
        PathBuf::from(option(args, "--json").unwrap_or_else(|| "target/bench/results.json".into()));
    let dir = PathBuf::from("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lines = dir.join("results.jsonl");
    let _ = std::fs::remove_file(&lines);

    let mut c = cargo();
    c.args(["bench", "--workspace", "--benches"]);
    if !features.is_empty() {
        c.args(["--features", &features]);
    }
    c.env(
        "KILN_BENCH_OUT",
        std::fs::canonicalize(&dir)
            .map_err(|e| e.to_string())?
            .join("results.jsonl"),
    );
    if let Some(filter) = option(args, "--filter") {
        c.args(["--", "--filter", &filter]);
    }
    run(c)?;

    let text = std::fs::read_to_string(&lines).unwrap_or_default();
    let mut results: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    results.extend(peers(option(args, "--filter").as_deref()));
    let machine = serde_json::json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    });
    let doc = serde_json::json!({ "machine": machine, "features": features, "results": results });
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", json.display()))?;
    println!("\n{}", markdown(&results));
    println!("{} results written to {}", results.len(), json.display());
    Ok(())
}

/// Runs the Python peers in `benches/peers/` (PyTorch and friends) when their libraries are
/// installed, in the same run as the Rust benchmarks; each prints JSON lines of results.
fn peers(filter: Option<&str>) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir("benches/peers") else {
        return Vec::new();
    };
    let mut scripts: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    scripts.sort();
    let mut results = Vec::new();
    for script in scripts {
        let name = script
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if filter.is_some_and(|f| !name.contains(f) && !name.replace("_torch", "").contains(f)) {
            continue;
        }
        eprintln!("\n==> python3 {}", script.display());
        match Command::new("python3").arg(&script).output() {
            Ok(out) if out.status.success() => {
                results.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()),
                );
            }
            Ok(out) => eprintln!(
                "peer {} skipped: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("failed")
            ),
            Err(e) => eprintln!("peer {} skipped: {e}", script.display()),
        }
    }
    results
}

/// The results as one markdown table.
fn markdown(results: &[serde_json::Value]) -> String {
    let mut out = String::from(
        "| case | backend | median ms | throughput | extra |\n|---|---|---|---|---|\n",
    );
    for r in results {
        let throughput = match (r["throughput"].as_f64(), r["unit"].as_str()) {
            (Some(t), Some(u)) => format!("{t:.1} {u}/s"),
            _ => "-".into(),
        };
        let extra = r["extra"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {:.3} | {} | {} |\n",
            r["name"].as_str().unwrap_or("?"),
            r["backend"].as_str().unwrap_or("?"),
            r["median_secs"].as_f64().unwrap_or(f64::NAN) * 1e3,
            throughput,
            extra
        ));
    }
    out
}
