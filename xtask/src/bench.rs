//! `cargo xtask bench`: the benchmark suite in release mode and the Python peers, as one
//! markdown table and a JSON file.

use std::path::PathBuf;
use std::process::Command;

use crate::{cargo, option, run};

pub(crate) fn bench(args: &[String]) -> Result<(), String> {
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
    let filter = option(args, "--filter");
    if !args.iter().any(|a| a == "--no-scale") && filter.is_none_or(|f| f.contains("scale")) {
        crate::scale::scale(&[])?;
    }
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
pub(crate) fn markdown(results: &[serde_json::Value]) -> String {
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
