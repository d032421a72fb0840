//! `cargo xtask ci`: fmt, clippy, the API docs (`cargo doc`, warnings denied), the tests (unit, integration, the MPI tests (`mpi.rs`), doc,
//! the data tests when the data folders are set), the example runs (`examples.rs`) and the
//! AddressSanitizer run (`sanitize.rs`), each timed, with a table of the steps at the end.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::{CARGO_ENV, CI_FEATURES, cargo, option, run};

/// One CI step's body.
type StepFn<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;

struct Step {
    name: &'static str,
    seconds: f64,
    outcome: Result<(), String>,
    /// Free space on the target folder's disk after the step (CI machines' disks vary).
    free_gib: Option<f64>,
}

pub(crate) fn ci(args: &[String]) -> Result<(), String> {
    let features = option(args, "--features").unwrap_or_else(|| CI_FEATURES.to_string());
    let reclaim_disk = args.iter().any(|a| a == "--reclaim-disk");
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
            "doc",
            Box::new(|| {
                // The API docs build without a warning (broken or private links, bad HTML):
                // docs/ and the crates' docs are kept true with every change.
                let mut c = cargo();
                c.arg("doc");
                let mut c = with_features(c);
                c.arg("--no-deps").env("RUSTDOCFLAGS", "-D warnings");
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
                // kiln-nlp's GGUF seed test also writes the gguf fuzz target's seeds (not
                // committed) for the fuzz step, which comes after `target/debug` is reclaimed.
                c.env("KILN_FUZZ_SEEDS", crate::sanitize::gguf_seed_dir()?);
                run(c)
            }),
        ),
        (
            "mpi",
            Box::new(|| {
                std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
                crate::mpi::mpi(&features, &out)
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
        (
            "examples",
            Box::new(|| {
                crate::examples::run_examples(&features, &out)?;
                // Nothing after this step reads the dev profile's outputs (the sanitizer
                // builds have their own folders): a fresh CI machine's disk can be small.
                if reclaim_disk {
                    reclaim("target/debug");
                }
                Ok(())
            }),
        ),
        (
            "asan",
            Box::new(|| {
                crate::sanitize::asan()?;
                if reclaim_disk {
                    reclaim(&format!("target/{}", crate::sanitize::TARGET));
                }
                Ok(())
            }),
        ),
        (
            "fuzz",
            // A smoke (a debug build, seeds and 5 s per target); the optimised 10-minute runs
            // are `cargo xtask fuzz`, recorded in docs/robustness.md.
            Box::new(|| crate::sanitize::fuzz(&["--smoke".to_string()])),
        ),
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
            free_gib: free_disk_gib(),
        });
    }

    println!("\n| step | result | seconds | disk free after (GiB) |\n|---|---|---|---|");
    for s in &done {
        let result = match &s.outcome {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("FAILED: {e}"),
        };
        let free = s.free_gib.map_or("?".to_string(), |g| format!("{g:.1}"));
        println!("| {} | {} | {:.1} | {free} |", s.name, result, s.seconds);
    }
    let total: f64 = done.iter().map(|s| s.seconds).sum();
    println!("| total | | {total:.1} | |");
    let failed = done.iter().filter(|s| s.outcome.is_err()).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} step(s) failed"))
    }
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

/// Removes a build folder no later step needs (`--reclaim-disk`, which `.ci/run` passes on a
/// fresh machine); a failure only costs disk, so it is reported and the run goes on.
fn reclaim(dir: &str) {
    let before = free_disk_gib();
    match std::fs::remove_dir_all(dir) {
        Ok(()) => eprintln!(
            "\n==> removed {dir} (disk free: {} -> {} GiB)",
            before.map_or("?".into(), |g| format!("{g:.1}")),
            free_disk_gib().map_or("?".into(), |g| format!("{g:.1}"))
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("\n==> could not remove {dir}: {e}"),
    }
}

/// Free space (GiB) on the disk holding `target/`, read from POSIX `df -Pk`.
fn free_disk_gib() -> Option<f64> {
    let out = Command::new("df").args(["-Pk", "target"]).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kib: f64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib / (1024.0 * 1024.0))
}
