//! `cargo xtask gpu-check`: on a machine with an NVIDIA GPU, the conformance suites, the
//! data-parallel tests and the backend benchmarks on CUDA and wgpu, with a JSON report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::bench::markdown;
use crate::{GPU_FEATURES, cargo, dirs_home, option, run, run_capture, summary_line, test_lines};

/// `cargo xtask gpu-check`: conformance, data-parallel tests and benchmarks on CUDA and wgpu,
/// with a JSON report. Everything builds in the test profile (dependencies optimised), once.
pub(crate) fn gpu_check(args: &[String]) -> Result<(), String> {
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
