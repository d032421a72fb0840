//! Project automation: `cargo xtask ci` (the whole check and test suite), `cargo xtask bench`
//! (the benchmarks) and `cargo xtask gpu-check` (the conformance suite and benchmarks on a GPU
//! machine). Run `cargo xtask help` for the options.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Backend features every CI step builds with, so that Burn is compiled once: both CPU
/// backends and wgpu, whose conformance tests run on Mesa's software Vulkan device (lavapipe)
/// on GPU-less machines. Never add `vulkan`: it segfaults on lavapipe and breaks wgpu too.
const CI_FEATURES: &str = "ndarray,wgpu";

/// Features of `cargo xtask gpu-check`.
const GPU_FEATURES: &str = "cuda,wgpu";

const HELP: &str = "\
cargo xtask ci [--features F] [--skip STEP,...]
    fmt, clippy, tests (unit, integration, doc), the #[ignore]d data tests when KILN_DATA or
    KILN_MODELS is set, example runs, and one tiny iteration of every benchmark.
    Default features: ndarray,wgpu (on top of the default flex backend); the wgpu tests need a
    Vulkan driver (on Debian without a GPU: apt-get install mesa-vulkan-drivers libvulkan1).
cargo xtask bench [--filter NAME] [--json FILE] [--features F]
    The benchmark suite in release mode, then the Python peers in benches/peers/ (PyTorch,
    sentence-transformers, Surprise) where they are installed; a markdown table on stdout,
    JSON in FILE (default target/bench/results.json).
cargo xtask gpu-check [--features F] [--json FILE]
    On a machine with an NVIDIA GPU (under 8 minutes with 16 cores): builds with cuda,wgpu,
    runs the conformance suites on those backends, the data-parallel tests and the backend
    benchmarks, and writes a JSON report (default target/gpu-check/report.json).";

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
        Some("gpu-check") => gpu_check(&args[1..]),
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

/// Environment variables every cargo command of this run gets (the data folders made
/// absolute), set on the commands rather than on this process.
static CARGO_ENV: std::sync::OnceLock<Vec<(&'static str, PathBuf)>> = std::sync::OnceLock::new();

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.envs(CARGO_ENV.get().into_iter().flatten().map(|(k, v)| (k, v)));
    c
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
    let mut absolute_env = Vec::new();
    for var in ["KILN_DATA", "KILN_MODELS"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let path = PathBuf::from(&value);
            if path.is_relative() {
                let absolute = std::fs::canonicalize(&path)
                    .map_err(|e| format!("{var}={}: {e}", path.display()))?;
                absolute_env.push((var, absolute));
            }
        }
    }
    let _ = CARGO_ENV.set(absolute_env);
    let data_env = ["KILN_DATA", "KILN_MODELS"]
        .into_iter()
        .filter(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
        .collect::<Vec<_>>();
    let out = PathBuf::from("target/xtask");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    if features.split(',').any(|f| f.trim() == "vulkan") {
        return Err("never enable `vulkan`: it segfaults on lavapipe and breaks wgpu".into());
    }
    if features.split(',').any(|f| f.trim() == "wgpu") && !vulkan_driver_present() {
        return Err(
            "the wgpu conformance tests need a Vulkan driver and none is installed \
             (Debian without a GPU: apt-get install mesa-vulkan-drivers libvulkan1; \
             .ci/run does this), or run `cargo xtask ci --features ndarray`"
                .into(),
        );
    }

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

    // Real data, data-parallel: a short LeNet-5 run on MNIST with two replicas.
    if let Some(data) = std::env::var_os("KILN_DATA") {
        let mnist = PathBuf::from(data).join("mnist");
        let runs = out.join("runs").join("mnist_replicas");
        let dp = example(
            "mnist",
            &[
                "--data",
                &mnist.to_string_lossy(),
                "--model",
                "lenet",
                "--epochs",
                "1",
                "--limit",
                "3000",
                "--replicas",
                "2",
                "--run-dir",
                &runs.to_string_lossy(),
            ],
        )?;
        let acc = dp["test_accuracy"].as_f64().unwrap_or(f64::NAN);
        check(
            acc > 0.6 && dp["replicas"] == 2,
            format!("mnist --replicas 2, one epoch on 2,750 images: test accuracy {acc}"),
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

/// Whether a Vulkan ICD (driver manifest) is installed, where the loader looks for one.
fn vulkan_driver_present() -> bool {
    if std::env::var_os("VK_ICD_FILENAMES").is_some()
        || std::env::var_os("VK_DRIVER_FILES").is_some()
    {
        return true;
    }
    [
        "/usr/share/vulkan/icd.d",
        "/etc/vulkan/icd.d",
        "/usr/local/share/vulkan/icd.d",
    ]
    .iter()
    .any(|d| {
        std::fs::read_dir(d).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
        })
    })
}

/// `cargo xtask gpu-check`: conformance, data-parallel tests and benchmarks on CUDA and wgpu,
/// with a JSON report. Everything builds in the test profile (dependencies optimised), once.
fn gpu_check(args: &[String]) -> Result<(), String> {
    let features = option(args, "--features").unwrap_or_else(|| GPU_FEATURES.to_string());
    let json = PathBuf::from(
        option(args, "--json").unwrap_or_else(|| "target/gpu-check/report.json".into()),
    );
    let dir = json
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let started = Instant::now();
    let gpu = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    eprintln!(
        "gpu: {}",
        gpu.as_deref().unwrap_or("nvidia-smi found no GPU")
    );
    // Burn 0.22.1's CUDA backend builds cubecl-llvm, whose build script downloads an LLVM
    // bundle from GitHub (tracel-ai/tracel-llvm) unless it is already installed.
    let llvm = dirs_home().map(|h| h.join(".local/share/tracel/tracel-llvm-23.1.0-4"));
    let llvm_ready = llvm
        .as_ref()
        .is_some_and(|d| d.join(".tracel-llvm-installed").exists());
    if features.contains("cuda") && !llvm_ready {
        eprintln!(
            "note: the cuda build downloads LLVM from github.com/tracel-ai/tracel-llvm into {} \
             (not there yet): it needs network access once",
            llvm.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    let gpu_backends: Vec<&str> = features
        .split(',')
        .map(str::trim)
        .filter(|f| matches!(*f, "cuda" | "wgpu"))
        .collect();

    let mut steps = Vec::new();
    let mut record = |name: &str, seconds: f64, outcome: &Result<String, String>| {
        steps.push(serde_json::json!({
            "step": name,
            "seconds": seconds,
            "ok": outcome.is_ok(),
            "detail": match outcome { Ok(s) | Err(s) => s.clone() },
        }));
    };

    // 1. Build everything once.
    let t = Instant::now();
    let mut c = cargo();
    c.args([
        "test",
        "--workspace",
        "--features",
        &features,
        "--tests",
        "--benches",
        "--no-run",
    ]);
    let build = run(c).map(|_| String::new());
    record("build", t.elapsed().as_secs_f64(), &build);

    // 2. The conformance suites on the GPU backends, and the data-parallel tests.
    let mut tests = Vec::new();
    if build.is_ok() {
        let mut suite = |name: &str, filters: &[String]| {
            let t = Instant::now();
            let mut c = cargo();
            c.args([
                "test",
                "--workspace",
                "--features",
                &features,
                "--test",
                name,
                "--",
            ]);
            c.args(filters);
            let outcome = run_capture(c);
            tests.extend(test_lines(outcome.as_ref().unwrap_or_else(|e| e)));
            record(
                name,
                t.elapsed().as_secs_f64(),
                &outcome.map(|o| summary_line(&o)),
            );
        };
        let filters: Vec<String> = gpu_backends.iter().map(|b| format!("::{b}")).collect();
        suite("conformance", &filters);
        suite("data_parallel", &[]);

        // 3. The backend benchmarks (LeNet-5 and LSTM training steps) on every backend.
        let t = Instant::now();
        let lines = std::fs::canonicalize(&dir)
            .map_err(|e| e.to_string())?
            .join("bench.jsonl");
        let _ = std::fs::remove_file(&lines);
        let mut c = cargo();
        c.args([
            "test",
            "--features",
            &features,
            "--bench",
            "backends",
            "--",
            "--bench",
        ]);
        c.env("KILN_BENCH_OUT", &lines)
            .env("KILN_BENCH_SECS", "2")
            .env(
                "KILN_BENCH_BACKENDS",
                format!("flex,{}", gpu_backends.join(",")),
            );
        let bench = run_capture(c).map(|_| String::new());
        record("bench", t.elapsed().as_secs_f64(), &bench);
        let results: Vec<serde_json::Value> = std::fs::read_to_string(&lines)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        println!("\n{}", markdown(&results));
        steps.push(serde_json::json!({ "step": "bench results", "results": results }));
    }

    let ok = steps.iter().all(|s| s["ok"].as_bool() != Some(false));
    let doc = serde_json::json!({
        "gpu": gpu,
        "features": features,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "total_seconds": started.elapsed().as_secs_f64(),
        "llvm_bundle_preinstalled": llvm_ready,
        "ok": ok,
        "steps": steps,
        "tests": tests,
    });
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", json.display()))?;
    println!(
        "gpu-check report: {} ({:.0} s)",
        json.display(),
        started.elapsed().as_secs_f64()
    );
    if ok {
        Ok(())
    } else {
        Err("gpu-check: some steps failed (see the report)".into())
    }
}

fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Runs a command, echoing and returning its standard output (stderr passes through).
fn run_capture(mut cmd: Command) -> Result<String, String> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("\n==> {shown}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stdout)
    }
}

/// `test NAME ... ok|FAILED` lines of libtest's output, as JSON.
fn test_lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("test "))
        .filter_map(|l| l.rsplit_once(" ... "))
        .map(|(name, result)| serde_json::json!({ "test": name, "result": result }))
        .collect()
}

/// libtest's `test result:` lines, joined.
fn summary_line(output: &str) -> String {
    output
        .lines()
        .filter(|l| l.starts_with("test result:"))
        .collect::<Vec<_>>()
        .join("; ")
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
