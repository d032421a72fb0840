//! The example runs of `cargo xtask ci`: the refusals of out-of-range flags, then the rows of
//! `example_checks.rs` (each example with small settings and the thresholds its JSON report
//! must meet), kiln-serve on the exports, and a run killed and resumed (`kill_resume.rs`).

use std::path::{Path, PathBuf};

use crate::example_checks::{CHECKS, Ctx, Needs};
use crate::{cargo, run};

/// `cargo run` of example `name`, ready for its own arguments.
fn example_command(features: &str, name: &str) -> std::process::Command {
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
    c
}

/// Starts `kiln-serve` on the recommender and image classifier the examples exported, waits
/// for its address line, and stops it with SIGTERM.
fn serve_exports(out: &Path) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    // The binary the test and data-tests steps built (`cargo test --workspace` builds every
    // package's binaries). Building it here instead costs minutes: a `-p kiln-serve` build
    // resolves Burn's features for that package alone and rebuilds Burn, a workspace
    // `--no-run` relinks every test binary.
    let exe = Path::new("target/debug/kiln-serve");
    if !exe.is_file() {
        return Err(format!(
            "{} is missing: the examples step runs after the test step, which builds it",
            exe.display()
        ));
    }
    let mut child = std::process::Command::new(exe)
        .arg("--models")
        .arg(out)
        .args([
            "--recommend",
            "ml100k-bpr.json",
            "--image-classifier",
            "mnist-lenet",
        ])
        .args(["--port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    let listening = line.starts_with("kiln-serve: listening on http://127.0.0.1:");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().map_err(|e| e.to_string())?;
    if listening && status.success() {
        eprintln!(
            "kiln-serve loaded the exported bundle and classifier ({})",
            line.trim()
        );
        Ok(())
    } else {
        Err(format!(
            "kiln-serve on the exports: first line {line:?}, exit {status}"
        ))
    }
}

/// Runs the examples' refusals, every row of the [table](crate::example_checks::CHECKS)
/// whose folders are set, then (with `KILN_DATA`) kiln-serve on the exports and an MNIST run
/// killed and resumed.
pub(crate) fn run_examples(features: &str, out: &Path) -> Result<(), String> {
    let folder = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let ctx = Ctx {
        out: out.to_path_buf(),
        data: folder("KILN_DATA"),
        models: folder("KILN_MODELS"),
    };
    // KILN_EXAMPLES=a,b runs only those examples' rows (development; CI leaves it unset).
    let only: Option<Vec<String>> = std::env::var("KILN_EXAMPLES")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(str::to_string).collect());
    refusals(features)?;
    for check in CHECKS {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|e| e == check.example))
        {
            continue;
        }
        if !ctx.has(check.needs) {
            eprintln!(
                "\n==> skipped ({}): {}",
                needs_text(check.needs),
                check.what
            );
            continue;
        }
        eprintln!("\n==> {}", check.what);
        if let Some(prepare) = check.prepare {
            prepare(&ctx)?;
        }
        let report = out.join(format!("{}.json", check.example));
        let mut c = example_command(features, check.example);
        c.args(["--quiet", "--report"]).arg(&report);
        c.args((check.args)(&ctx));
        run(c)?;
        let text =
            std::fs::read_to_string(&report).map_err(|e| format!("{}: {e}", report.display()))?;
        let value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", report.display()))?;
        (check.pass)(&ctx, &value).map_err(|e| format!("{}: {e}", check.what))?;
    }
    if let (Some(data), None) = (&ctx.data, &only) {
        // The exports above load in kiln-serve (it prints its address only once every model
        // has loaded) and it stops with status 0 on SIGTERM.
        serve_exports(out)?;
        // An MNIST run killed with SIGKILL mid-epoch and resumed ends as the uninterrupted
        // run does.
        crate::kill_resume::kill_and_resume(features, out, &data.join("mnist"), 1)?;
    }
    Ok(())
}

fn needs_text(needs: Needs) -> &'static str {
    match needs {
        Needs::Nothing => "",
        Needs::Data => "KILN_DATA is not set",
        Needs::Models => "KILN_MODELS is not set",
        Needs::DataAndModels => "KILN_DATA or KILN_MODELS is not set",
    }
}

/// Every example refuses sizes, counts and rates out of range before any work: a usage error
/// (exit status 2) that names the flag and the range.
fn refusals(features: &str) -> Result<(), String> {
    let cases: [(&str, &[&str], &str); 18] = [
        ("mnist", &["--batch-size", "0"], "must be at least 1"),
        ("mnist", &["--replicas", "0"], "must be at least 1"),
        (
            "text_classify",
            &["--batch-size", "0"],
            "must be at least 1",
        ),
        ("text_classify", &["--dropout", "1"], "in [0, 1)"),
        ("translate", &["--beam", "0"], "must be at least 1"),
        ("char_lm", &["--lr", "NaN"], "a finite number above 0"),
        ("char_lm", &["--block", "0"], "must be at least 1"),
        ("movielens", &["--folds", "1"], "must be at least 2"),
        ("robust", &["--limit", "50"], "expected at least 100"),
        ("gen_images", &["--per-class", "1"], "must be at least 2"),
        ("finetune", &["--batch-size", "0"], "must be at least 1"),
        ("embed", &["--batch-size", "0"], "must be at least 1"),
        ("semantic_search", &["--k", "0"], "must be at least 1"),
        ("seed_mlp", &["--alpha=-0.5"], "a finite number above 0"),
        (
            "recsys_scale",
            &["--interactions", "0", "--model", "als"],
            "must be at least 1",
        ),
        (
            "generate",
            &["--max-new-tokens", "0", "--model", "m", "--prompt", "p"],
            "must be at least 1",
        ),
        (
            "generate",
            &["--top-p", "1.5", "--model", "m", "--prompt", "p"],
            "(0, 1]",
        ),
        (
            "rag",
            &[
                "--k",
                "0",
                "--embedder",
                "e",
                "--generator",
                "g",
                "--corpus",
                "c",
                "q",
            ],
            "must be at least 1",
        ),
    ];
    for (name, args, want) in cases {
        let mut c = example_command(features, name);
        c.args(args);
        let shown = format!("{name} {}", args.join(" "));
        eprintln!("\n==> refused: {shown}");
        let out = c.output().map_err(|e| format!("{shown}: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let flag = args[0].split('=').next().unwrap_or(args[0]);
        if out.status.code() != Some(2) || !stderr.contains(want) || !stderr.contains(flag) {
            return Err(format!(
                "{shown}: expected a usage error naming {flag} ({want}), got {} and: {stderr}",
                out.status
            ));
        }
    }
    Ok(())
}
