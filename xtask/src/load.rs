//! `cargo xtask load`: kiln-serve under load on loopback, MiniLM from `KILN_MODELS`.
//!
//! Rounds alternate the `embed` example (the offline rate, sentences per second over the
//! 1,000 benchmark sentences) with `kiln-load`'s 64 closed-loop clients on `/v1/embeddings`
//! (one sentence a request) against the same release build, so that drift in the machine's
//! speed hits both alike; the target is a served rate of at least 90% of the offline one
//! (median of the rounds' ratios). Then an open loop at 4x the sustained request rate: the
//! server must answer only 200 or 429/503, stay up, keep its resident memory under the bound,
//! and stop with exit status 0 on SIGTERM. Report: target/load/report.json and a markdown
//! table on stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{cargo, option, run, run_capture};

/// Resident memory the server may reach under overload (MiniLM's weights twice, as Burn
/// tensors and as the CPU engine's copy, are about 180 MB of it).
const RSS_BOUND_MIB: f64 = 1024.0;

/// A served rate at least this share of the offline one.
const TARGET_RATIO: f64 = 0.9;

/// A server process on loopback, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(models: &Path, max_batch: usize) -> Result<Server, String> {
    let mut child = Command::new("target/release/kiln-serve")
        .arg("--models")
        .arg(models)
        .args(["--embeddings", "all-MiniLM-L6-v2", "--port", "0"])
        .args(["--max-batch", &max_batch.to_string(), "--queue", "128"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("target/release/kiln-serve: {e}"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let url = line
        .trim()
        .strip_prefix("kiln-serve: listening on ")
        .ok_or_else(|| format!("kiln-serve did not start: {line:?}"))?
        .to_owned();
    Ok(Server { child, url })
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `VmRSS` or `VmHWM` of `pid` in MiB.
pub(crate) fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub(crate) fn kiln_load(
    url: &str,
    input: &Path,
    mode: &[&str],
    seconds: f64,
    report: &Path,
) -> Result<Value, String> {
    let mut c = Command::new("target/release/kiln-load");
    c.args(["--url", url])
        .arg("--input")
        .arg(input)
        .args(mode)
        .args(["--seconds", &seconds.to_string()])
        .arg("--report")
        .arg(report)
        .stdout(Stdio::null());
    run(c)?;
    read_json(report)
}

/// Runs `f` while sampling the resident memory of `pid` every 50 ms; `f`'s result and the
/// peak in MiB.
pub(crate) fn with_peak_rss<T>(pid: u32, f: impl FnOnce() -> T) -> (T, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(m) = memory_mib(pid, "VmRSS") {
                    peak.fetch_max(m as u64, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    (out, peak.load(Ordering::Relaxed) as f64)
}

/// Sends SIGTERM to `child` and waits for it: its exit code (`None` if the signal could not
/// be sent or it died by a signal).
pub(crate) fn sigterm_exit(child: &mut Child) -> Result<Option<i32>, String> {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    if killed.success() {
        Ok(child.wait().map_err(|e| e.to_string())?.code())
    } else {
        Ok(None)
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

pub(crate) fn load(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--chat") {
        return crate::load_chat::load_chat(args);
    }
    let seconds: f64 = option(args, "--seconds")
        .unwrap_or_else(|| "20".into())
        .parse()
        .map_err(|e| format!("--seconds: {e}"))?;
    let rounds: usize = option(args, "--rounds")
        .unwrap_or_else(|| "3".into())
        .parse()
        .map_err(|e| format!("--rounds: {e}"))?;
    let clients: usize = option(args, "--clients")
        .unwrap_or_else(|| "64".into())
        .parse()
        .map_err(|e| format!("--clients: {e}"))?;
    if !(seconds > 0.0 && seconds <= 600.0) || rounds == 0 || clients == 0 {
        return Err("--seconds in (0, 600], --rounds and --clients at least 1".into());
    }
    let models = PathBuf::from(
        std::env::var_os("KILN_MODELS").ok_or("KILN_MODELS must name the shared models folder")?,
    );
    let models =
        std::fs::canonicalize(&models).map_err(|e| format!("{}: {e}", models.display()))?;
    let sentences = models.join("../reference/bench-sentences-1000.txt");
    if !sentences.is_file() {
        return Err(format!("{}: not found", sentences.display()));
    }
    let out = PathBuf::from("target/load");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;

    let mut c = cargo();
    c.args(["build", "--release", "-p", "kiln-serve", "--bins"]);
    run(c)?;
    let mut c = cargo();
    c.args(["build", "--release", "--example", "embed"]);
    run(c)?;

    let batch = 32;
    let server = start_server(&models, batch)?;
    let pid = server.child.id();
    let mut table = Vec::new();
    let mut ratios = Vec::new();
    let mut served = Vec::new();
    for round in 0..rounds {
        let report = out.join(format!("embed-{round}.json"));
        let mut c = Command::new("target/release/examples/embed");
        c.arg("--model")
            .arg(models.join("all-MiniLM-L6-v2"))
            .arg("--input")
            .arg(&sentences)
            .args(["--batch-size", &batch.to_string(), "--quiet", "--report"])
            .arg(&report);
        run_capture(c)?;
        let offline = read_json(&report)?["sentences_per_second"]
            .as_f64()
            .ok_or("embed's report has no sentences_per_second")?;
        let closed = kiln_load(
            &server.url,
            &sentences,
            &["--clients", &clients.to_string()],
            seconds,
            &out.join(format!("closed-{round}.json")),
        )?;
        let rate = closed["texts_per_second"].as_f64().unwrap_or(0.0);
        let ratio = rate / offline;
        eprintln!(
            "round {round}: offline {offline:.1}/s, served {rate:.1}/s ({:.1}%), p50 {:.1} ms, p99 {:.1} ms",
            100.0 * ratio,
            closed["latency_ms_p50"].as_f64().unwrap_or(f64::NAN),
            closed["latency_ms_p99"].as_f64().unwrap_or(f64::NAN)
        );
        ratios.push(ratio);
        served.push(closed["requests_per_second"].as_f64().unwrap_or(0.0));
        table.push(json!({"round": round, "offline_per_second": offline, "closed": closed, "ratio": ratio}));
    }
    let sustained = median(served);
    let resident_before = memory_mib(pid, "VmRSS");

    // Open loop at 4x: sample the server's resident memory while it runs.
    let overload_rate = 4.0 * sustained;
    let (overload, peak_mib) = with_peak_rss(pid, || {
        kiln_load(
            &server.url,
            &sentences,
            &["--rate", &format!("{overload_rate:.0}")],
            seconds,
            &out.join("overload.json"),
        )
    });
    let overload = overload?;
    let hwm = memory_mib(pid, "VmHWM");

    // Still answering afterwards.
    let after = kiln_load(
        &server.url,
        &sentences,
        &["--clients", "4"],
        2.0,
        &out.join("after.json"),
    )?;
    let mut server = server;
    let exit = sigterm_exit(&mut server.child)?;

    let statuses = overload["statuses"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let unexpected: Vec<String> = statuses
        .keys()
        .filter(|k| !["200", "429", "503"].contains(&k.as_str()))
        .cloned()
        .collect();
    let ratio = median(ratios.clone());
    let report = json!({
        "rounds": table,
        "median_ratio": ratio,
        "sustained_requests_per_second": sustained,
        "overload_rate": overload_rate,
        "overload": overload,
        "resident_mib_before_overload": resident_before,
        "resident_mib_peak_during_overload": peak_mib,
        "resident_mib_high_water_mark": hwm,
        "resident_bound_mib": RSS_BOUND_MIB,
        "after_overload": after,
        "sigterm_exit_code": exit,
    });
    let path = out.join("report.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;

    println!(
        "\n| round | embed offline (sentences/s) | served, {clients} clients (sentences/s) | ratio | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &table {
        let c = &r["closed"];
        println!(
            "| {} | {:.1} | {:.1} | {:.3} | {:.1} ms | {:.1} ms |",
            r["round"],
            r["offline_per_second"].as_f64().unwrap_or(f64::NAN),
            c["texts_per_second"].as_f64().unwrap_or(f64::NAN),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
            c["latency_ms_p50"].as_f64().unwrap_or(f64::NAN),
            c["latency_ms_p99"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!(
        "\nmedian ratio {ratio:.3} (range {:.3}-{:.3}); overload at {overload_rate:.0} requests/s for {seconds} s: \
         statuses {}, p50 {:.1} ms, p99 {:.1} ms of the 200s; resident memory {:.0} MiB before, \
         peak {peak_mib:.0} MiB (bound {RSS_BOUND_MIB} MiB); afterwards {} answered; SIGTERM exit {:?}",
        ratios.iter().cloned().fold(f64::INFINITY, f64::min),
        ratios.iter().cloned().fold(0.0, f64::max),
        Value::Object(statuses.clone()),
        overload["latency_ms_p50"].as_f64().unwrap_or(f64::NAN),
        overload["latency_ms_p99"].as_f64().unwrap_or(f64::NAN),
        resident_before.unwrap_or(f64::NAN),
        after["statuses"]["200"],
        exit,
    );
    println!("report: {}", path.display());

    let mut failures = Vec::new();
    if ratio < TARGET_RATIO {
        failures.push(format!(
            "served rate {ratio:.3} of the offline one, target {TARGET_RATIO}"
        ));
    }
    if !unexpected.is_empty() {
        failures.push(format!(
            "overload answers other than 200/429/503: {unexpected:?}"
        ));
    }
    if peak_mib > RSS_BOUND_MIB {
        failures.push(format!(
            "resident memory {peak_mib:.0} MiB past {RSS_BOUND_MIB} MiB"
        ));
    }
    if after["statuses"]["200"].as_u64().unwrap_or(0) == 0 {
        failures.push("no answer after the overload".into());
    }
    if exit != Some(0) {
        failures.push(format!("SIGTERM exit code {exit:?}, expected 0"));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
