//! The sanitizer runs: `cargo xtask asan` and `cargo xtask fuzz` (below).
//!
//! `cargo xtask asan`: kiln-kernels' tests (its unit tests and `tests/kernels.rs`, the
//! proptests on every tile remainder) under AddressSanitizer, with the nightly toolchain.
//!
//! The crate is built without its `flex` feature, so no Burn is compiled with the sanitizer
//! (the Burn glue is safe Rust; its tests run in the ordinary suite). The tests run twice:
//! at the CPU's widest vector level (the AVX-512 microkernels on this machine kind) and with
//! `KILN_SIMD=baseline` (the row-major fallbacks through the `gemm` crate). Miri cannot be
//! installed here; AddressSanitizer catches the out-of-bounds reads and writes that matter
//! for these kernels, and the debug assertions (on in this build) check the stated
//! invariant of each raw-pointer block.

use std::process::Command;

use crate::run;

/// The target given explicitly, so that the sanitizer flags reach only the test crates and
/// not the build scripts and proc macros (the documented way to use `-Zsanitizer`).
pub(crate) const TARGET: &str = "x86_64-unknown-linux-gnu";

pub(crate) fn asan() -> Result<(), String> {
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        eprintln!("\n==> asan skipped: it runs on x86-64 Linux only");
        return Ok(());
    }
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        return Err(
            "asan needs the nightly toolchain (`rustup toolchain install nightly`); \
             this machine kind ships it"
                .into(),
        );
    }
    for simd in [None, Some("baseline")] {
        // Not through `crate::cargo()`: `CARGO` names the stable toolchain's cargo, and
        // `+nightly` is a rustup proxy argument.
        let mut c = Command::new("cargo");
        c.args([
            "+nightly",
            "test",
            "-p",
            "kiln-kernels",
            "--no-default-features",
            "--target",
            TARGET,
        ])
        .env("RUSTFLAGS", "-Zsanitizer=address")
        .env("RUSTDOCFLAGS", "-Zsanitizer=address")
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
        if let Some(level) = simd {
            c.env("KILN_SIMD", level);
        }
        run(c)?;
    }
    Ok(())
}

/// The flags cargo-fuzz 0.13 gives rustc (libFuzzer's coverage counters and comparisons,
/// AddressSanitizer, the `fuzzing` cfg), for the smoke's plain `cargo build`.
const SMOKE_RUSTFLAGS: [&str; 7] = [
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg=fuzzing",
    "-Zsanitizer=address",
];

/// The fuzz targets of `crates/fuzz` (one per reader family).
pub(crate) const FUZZ_TARGETS: [&str; 8] = [
    "idx",
    "ratings_csv",
    "movielens_dir",
    "text_datasets",
    "bert_files",
    "saved_models",
    "semantic_index",
    "gguf",
];

/// `cargo xtask fuzz [--seconds N] [--targets a,b] [--report FILE] [--smoke]`: builds the fuzz
/// targets with cargo-fuzz (installed from crates.io when missing) and runs each for N seconds
/// (default 600) from its seeds (`crates/fuzz/seeds/`, made by `make_seeds.py`; the gguf
/// ones written first by kiln-nlp's GGUF test, see `gguf_seeds`) and the corpus
/// of earlier runs (`crates/fuzz/corpus/`, not committed). A crash stops the run with
/// libFuzzer's report; its input is in `crates/fuzz/artifacts/TARGET/`. Writes `--report`
/// (default `target/fuzz/report.json`): executions, corpus size and seconds per target.
///
/// `--smoke` (CI's step): the same instrumentation (ASan, libFuzzer's coverage) in a debug
/// build through plain `cargo +nightly build` (no cargo-fuzz to install, no optimisation of
/// Burn: the optimised build alone took about 13 minutes of CI's 2 cores), then each target
/// over its seeds and N seconds (default 5) of fuzzing from a fresh corpus.
/// The gguf target's seeds, written by kiln-nlp's GGUF seed test.
const GGUF_SEEDS: [&str; 2] = ["tiny-llama.gguf", "tiny-llama-spm.gguf"];

/// Where the gguf target's seeds go (absolute: tests run in their crate's folder).
pub(crate) fn gguf_seed_dir() -> Result<std::path::PathBuf, String> {
    Ok(std::env::current_dir()
        .map_err(|e| e.to_string())?
        .join("crates/fuzz/seeds/gguf"))
}

/// Writes the gguf target's seeds (not committed: binary files) into `dir` by running
/// kiln-nlp's test that builds them and checks that they load and tokenize, with
/// `KILN_FUZZ_SEEDS` naming the folder (CI's test step sets it for the whole suite).
fn gguf_seeds(dir: &std::path::Path) -> Result<(), String> {
    let mut c = crate::cargo();
    c.args([
        "test",
        "--workspace",
        "--features",
        crate::CI_FEATURES,
        "--test",
        "gguf_files",
        "the_fuzz_seed",
    ]);
    c.env("KILN_FUZZ_SEEDS", dir);
    run(c)?;
    for name in GGUF_SEEDS {
        if !dir.join(name).is_file() {
            return Err(format!("{}: the seed test wrote no {name}", dir.display()));
        }
    }
    Ok(())
}

pub(crate) fn fuzz(args: &[String]) -> Result<(), String> {
    let smoke = args.iter().any(|a| a == "--smoke");
    let seconds: u64 = crate::option(args, "--seconds")
        .map(|s| s.parse().map_err(|e| format!("--seconds {s}: {e}")))
        .transpose()?
        .unwrap_or(if smoke { 5 } else { 600 });
    let targets: Vec<String> = match crate::option(args, "--targets") {
        Some(list) => list.split(',').map(str::to_string).collect(),
        None => FUZZ_TARGETS.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(bad) = targets.iter().find(|t| !FUZZ_TARGETS.contains(&t.as_str())) {
        return Err(format!(
            "no fuzz target {bad}; the targets: {FUZZ_TARGETS:?}"
        ));
    }
    if targets.iter().any(|t| t == "gguf") {
        // CI's test step wrote them already (the smoke runs after `target/debug` is
        // reclaimed); a full run always writes them afresh.
        let dir = gguf_seed_dir()?;
        let present = GGUF_SEEDS.iter().all(|n| dir.join(n).is_file());
        if !(smoke && present) {
            gguf_seeds(&dir)?;
        }
    }
    let nightly = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.arg("+nightly").args(args);
        c.env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTUP_TOOLCHAIN");
        c
    };
    let dir = "crates/fuzz";
    if smoke {
        let mut c = nightly(&[
            "build",
            "--manifest-path",
            &format!("{dir}/Cargo.toml"),
            "--target",
            TARGET,
            "--bins",
        ]);
        c.env("RUSTFLAGS", SMOKE_RUSTFLAGS.join(" "));
        run(c)?;
    } else {
        let has_fuzz = nightly(&["fuzz", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_fuzz {
            let mut c = Command::new("cargo");
            c.args(["install", "cargo-fuzz", "--locked", "--version", "0.13.2"]);
            c.env_remove("CARGO");
            run(c)?;
        }
        run(nightly(&["fuzz", "build", "--fuzz-dir", dir, "-O"]))?;
    }
    let mut report = Vec::new();
    for target in &targets {
        // The smoke starts from the seeds alone each time (a fresh corpus folder).
        let corpus = if smoke {
            format!("{dir}/target/smoke-corpus/{target}")
        } else {
            format!("{dir}/corpus/{target}")
        };
        if smoke {
            let _ = std::fs::remove_dir_all(&corpus);
        }
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{corpus}: {e}"))?;
        let seeds = format!("{dir}/seeds/{target}");
        let started = std::time::Instant::now();
        let mut c = if smoke {
            let mut c = Command::new(format!("{dir}/target/{TARGET}/debug/{target}"));
            c.args([&corpus, &seeds]);
            c.arg(format!("-artifact_prefix={dir}/artifacts/{target}/"));
            std::fs::create_dir_all(format!("{dir}/artifacts/{target}"))
                .map_err(|e| format!("{dir}/artifacts/{target}: {e}"))?;
            c
        } else {
            let mut c = nightly(&[
                "fuzz",
                "run",
                "--fuzz-dir",
                dir,
                "-O",
                target,
                &corpus,
                &seeds,
            ]);
            c.arg("--");
            c
        };
        c.args([
            &format!("-max_total_time={seconds}"),
            "-timeout=30",
            "-rss_limit_mb=4096",
            "-print_final_stats=1",
        ]);
        let shown = format!("fuzz {target} for {seconds} s");
        eprintln!("\n==> {shown}");
        let out = c
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| format!("{shown}: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let files = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
        let line = serde_json::json!({
            "target": target,
            "seconds": started.elapsed().as_secs_f64().round(),
            "executions": stat("number_of_executed_units"),
            "peak_rss_mb": stat("peak_rss_mb"),
            "corpus_files": files,
            "ok": out.status.success(),
        });
        eprintln!("{line}");
        report.push(line);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "{shown}: a crash (input in {dir}/artifacts/{target}/):\n{}",
                tail.join("\n")
            ));
        }
    }
    let path = crate::option(args, "--report").unwrap_or_else(|| "target/fuzz/report.json".into());
    if let Some(parent) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{path}: {e}"))?;
    Ok(())
}
