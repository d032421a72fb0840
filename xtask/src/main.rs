//! Project automation: `cargo xtask ci` (the whole check and test suite, `ci.rs`; the example
//! runs and their thresholds, `examples.rs`), `cargo xtask asan` and `cargo xtask fuzz` (the
//! kernels under AddressSanitizer, the readers under libFuzzer, `sanitize.rs`), `cargo xtask
//! bench` (the benchmarks, `bench.rs`), `cargo xtask scale` (recommenders at 20M
//! interactions beside implicit and LightFM, `scale.rs`), `cargo xtask load` (kiln-serve under load,
//! `load.rs`, its chat `load_chat.rs`) and `cargo xtask gpu-check` (the conformance suite and
//! benchmarks on a GPU machine, `gpu_check.rs`). This file: the command line and the helpers
//! that run cargo. Run `cargo xtask help` for the options.

#![forbid(unsafe_code)]

mod bench;
mod ci;
mod example_checks;
mod examples;
mod gpu_check;
mod kill_resume;
mod load;
mod load_chat;
mod mpi;
mod sanitize;
mod scale;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Backend features every CI step builds with, so that Burn is compiled once: both CPU
/// backends and wgpu, whose conformance tests run on Mesa's software Vulkan device (lavapipe)
/// on GPU-less machines. Never add `vulkan`: it segfaults on lavapipe and breaks wgpu too.
pub(crate) const CI_FEATURES: &str = "ndarray,wgpu";

/// Features of `cargo xtask gpu-check`.
pub(crate) const GPU_FEATURES: &str = "cuda,wgpu";

const HELP: &str = "\
cargo xtask ci [--features F] [--skip STEP,...] [--reclaim-disk]
    fmt, clippy, cargo doc (warnings denied), tests (unit, integration, doc), the #[ignore]d
    data tests when KILN_DATA or KILN_MODELS is set, example runs (and flags they must
    refuse), one tiny iteration of every benchmark, `mpi` (below), `asan`, and `fuzz --smoke`. The step table shows
    the disk's free space after each step; --reclaim-disk (.ci/run on a fresh machine)
    deletes target/debug after the examples and the asan build after asan.
    KILN_EXAMPLES=a,b limits the example runs to those examples' rows (development).
    Default features: ndarray,wgpu (on top of the default flex backend); the wgpu tests need a
    Vulkan driver (on Debian without a GPU: apt-get install mesa-vulkan-drivers libvulkan1).
cargo xtask mpi
    The `mpi` feature's clippy and tests (two ranks under mpirun: equal to one rank, stopping
    together, a dead or hanging rank ending the job, resume), and with KILN_DATA the MNIST
    example on two ranks. Needs Open MPI (Debian: openmpi-bin libopenmpi-dev libclang-dev).
cargo xtask asan
    The kiln-kernels tests under AddressSanitizer (nightly toolchain, no Burn: about a minute),
    at the CPU's widest vector level and again with KILN_SIMD=baseline (the fallback paths).
cargo xtask fuzz [--seconds N] [--targets a,b] [--report FILE] [--smoke]
    The readers' fuzz targets (crates/fuzz: IDX, rating files, MovieLens folders, TREC / SMS /
    Tatoeba, BERT config.json and safetensors, saved recommenders, semantic indexes, GGUF)
    under cargo-fuzz (nightly; installed when missing), N seconds each (default 600); a crash
    fails with its input saved; executions and corpus sizes go to FILE (default
    target/fuzz/report.json). --smoke (CI): the same instrumentation in a debug build by plain
    cargo, each target over its seeds and N seconds (default 5) from a fresh corpus.
cargo xtask bench [--filter NAME] [--json FILE] [--features F] [--no-scale]
    The benchmark suite in release mode, then the Python peers in benches/peers/ (PyTorch,
    sentence-transformers, Surprise, implicit, LightFM) where they are installed; a markdown
    table on stdout, JSON in FILE (default target/bench/results.json); then `scale` (below)
    unless --no-scale or a filter that does not contain `scale`.
cargo xtask scale [--sizes 1000000,5000000,20000000] [--threads 2]
    Recommenders on synthetic data of MovieLens 20M's shape: ALS, BPR and WARP fit time per
    iteration and peak memory beside implicit and LightFM on the same data (each model in its
    own process, alternating), ranking and HNSW recall at the largest size; about 6 minutes
    on 2 cores. Reports in target/bench/scale/.
cargo xtask load [--seconds 20] [--rounds 3] [--clients 64]
    kiln-serve under load on loopback (needs KILN_MODELS): rounds alternating the embed
    example's offline rate with 64 closed-loop clients on /v1/embeddings (target: served at
    least 90% of offline, median), then an open loop at 4x the sustained rate (only 200 or
    429/503, resident memory under 1 GiB, still answering, SIGTERM exits 0). About 3 minutes
    plus the release build. Report: target/load/report.json.
cargo xtask load --chat [--seconds 20] [--rounds 3] [--clients 16] [--max-tokens 64] [--peer]
                  [--activations int8|f32]
    kiln-serve's chat under load (the SmolLM2 Q4_1 GGUF of KILN_MODELS, or KILN_GGUF; 8-bit
    activations unless --activations f32): rounds
    alternating 1 and 16 streaming clients (targets: aggregate tokens/s at least 5x one
    client's, p99 time between tokens at most 3x the single step), then 64 clients against a
    queue of 32 (only 200 or 429, memory under the file + the cache budget + 400 MiB), SIGTERM
    exits 0. --peer: llama.cpp's server with 16 slots on the same file in the same rounds
    (KILN_LLAMA_SERVER, else the xllamacpp wheel; target 1.0x). Report:
    target/load/chat-report.json.
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
        Some("ci") => ci::ci(&args[1..]),
        Some("asan") => sanitize::asan(),
        Some("mpi") => mpi::mpi(CI_FEATURES, Path::new("target/xtask")),
        Some("fuzz") => sanitize::fuzz(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("scale") => scale::scale(&args[1..]),
        Some("load") => load::load(&args[1..]),
        Some("gpu-check") => gpu_check::gpu_check(&args[1..]),
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

/// Open MPI's variables for running as root (containers, CI); harmless otherwise.
pub(crate) const AS_ROOT: [(&str, &str); 2] = [
    ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
    ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
];

/// The value following `--name`, if any.
pub(crate) fn option(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Environment variables every cargo command of this run gets (the data folders made
/// absolute), set on the commands rather than on this process.
pub(crate) static CARGO_ENV: std::sync::OnceLock<Vec<(&'static str, PathBuf)>> =
    std::sync::OnceLock::new();

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.envs(CARGO_ENV.get().into_iter().flatten().map(|(k, v)| (k, v)));
    c
}

pub(crate) fn run(mut cmd: Command) -> Result<(), String> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("\n==> {shown}");
    let status = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} exited with {status}"))
    }
}

pub(crate) fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Runs a command, echoing and returning its standard output (stderr passes through).
pub(crate) fn run_capture(mut cmd: Command) -> Result<String, String> {
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
pub(crate) fn test_lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("test "))
        .filter_map(|l| l.rsplit_once(" ... "))
        .map(|(name, result)| serde_json::json!({ "test": name, "result": result }))
        .collect()
}

/// libtest's `test result:` lines, joined.
pub(crate) fn summary_line(output: &str) -> String {
    output
        .lines()
        .filter(|l| l.starts_with("test result:"))
        .collect::<Vec<_>>()
        .join("; ")
}
