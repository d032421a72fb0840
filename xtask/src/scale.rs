//! `cargo xtask scale` (also the last part of `cargo xtask bench`): recommenders at MovieLens
//! 20M's scale beside their Python peers, in the same minutes. For each size (1M, 5M, 20M
//! synthetic interactions by default) the `recsys_scale` example writes the data once, then
//! each model runs in Kiln and in its peer alternately (ALS: implicit, 3 iterations; BPR:
//! implicit, 1 epoch; WARP: LightFM, 1 epoch), each in its own process, so that each peak
//! resident memory is that model's. ALS at the largest size also measures ranking on 10,000
//! held-out users and HNSW retrieval. A markdown table on stdout, the reports in
//! `target/bench/scale/scale.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{cargo, option, run, run_capture};

const PEER: &str = "benches/peers/scale/implicit_lightfm_scale.py";

/// (model, iterations, peer) of each case.
const MODELS: [(&str, usize, &str); 3] = [
    ("als", 3, "implicit"),
    ("bpr", 1, "implicit"),
    ("warp", 1, "lightfm"),
];

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether python3 can import the peer libraries.
fn peers_available() -> bool {
    Command::new("python3")
        .args(["-c", "import implicit, lightfm, scipy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn scale(args: &[String]) -> Result<(), String> {
    let sizes: Vec<usize> = match option(args, "--sizes") {
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n >= 10_000)
                    .ok_or_else(|| format!("--sizes: '{s}' is not a count of at least 10000"))
            })
            .collect::<Result<_, _>>()?,
        None => vec![1_000_000, 5_000_000, 20_000_000],
    };
    let threads = option(args, "--threads").unwrap_or_else(|| "2".into());
    if !threads.parse::<usize>().is_ok_and(|t| t >= 1) {
        return Err(format!("--threads: '{threads}' is not a positive count"));
    }
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--example",
        "recsys_scale",
        "--features",
        "recsys",
    ]);
    run(build)?;
    let example = PathBuf::from("target/release/examples/recsys_scale");
    let dir = PathBuf::from("target/bench/scale");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let with_peers = peers_available();
    if !with_peers {
        eprintln!("scale: python3 lacks implicit/lightfm; Kiln alone (see docs/benchmarks.md)");
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mut rows = Vec::new();
    for &n in &sizes {
        let data = dir.join(format!("data-{n}"));
        for (i, &(model, iterations, peer)) in MODELS.iter().enumerate() {
            let report = dir.join(format!("{n}-{model}-kiln.json"));
            let eval = if model == "als" && n == largest {
                "10000"
            } else {
                "0"
            };
            let mut c = Command::new(&example);
            c.args([
                "--model",
                model,
                "--quiet",
                "--threads",
                &threads,
                "--eval-users",
                eval,
            ])
            .args(["--interactions", &n.to_string()])
            .args(["--iterations", &iterations.to_string()])
            .arg("--report")
            .arg(&report);
            if i == 0 {
                c.arg("--export").arg(&data);
            }
            run(c)?;
            rows.push(("kiln", read_json(&report)?));
            if with_peers {
                let mut p = Command::new("python3");
                p.arg(PEER)
                    .arg("--dir")
                    .arg(&data)
                    .args(["--model", model, "--threads", &threads])
                    .args(["--iterations", &iterations.to_string()]);
                // A failing peer is reported and skipped: Kiln's numbers still stand.
                let out = run_capture(p).unwrap_or_default();
                let line = out.lines().last().unwrap_or_default();
                match serde_json::from_str::<Value>(line) {
                    Ok(v) => rows.push((peer, v)),
                    Err(_) => eprintln!("scale: {PEER} failed for {model} at {n}; skipped"),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&data);
    }
    println!("\n{}", markdown(&rows));
    let all: Vec<Value> = rows
        .iter()
        .map(|(who, v)| {
            let mut v = v.clone();
            v["implementation"] = Value::from(*who);
            v
        })
        .collect();
    let out = dir.join("scale.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", out.display()))?;
    println!("written to {}", out.display());
    Ok(())
}

fn markdown(rows: &[(&str, Value)]) -> String {
    let mut out = String::from(
        "| interactions | model | implementation | fit s | s / iteration | iteration alone (median) | peak MiB |\n|---|---|---|---|---|---|---|\n",
    );
    for (who, v) in rows {
        let f = |k: &str| v[k].as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
        out.push_str(&format!(
            "| {} | {} | {who} | {} | {} | {} | {} |\n",
            v["interactions"],
            v["model"].as_str().unwrap_or("?"),
            f("fit_seconds"),
            f("seconds_per_iteration"),
            f("median_iteration_seconds"),
            v["peak_rss_mib"]
                .as_f64()
                .map_or("-".to_owned(), |x| format!("{x:.0}")),
        ));
    }
    out
}
