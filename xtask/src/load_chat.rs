//! `cargo xtask load --chat`: kiln-serve's chat under many users, on loopback, with the shared
//! SmolLM2 GGUF file (`KILN_MODELS`, or the file `KILN_GGUF` names).
//!
//! Rounds alternate one client with `--clients` (16) concurrent ones, each streaming greedy
//! answers of at most `--max-tokens` (64) to the benchmark sentences as user messages
//! (`kiln-load --chat`). Targets: the aggregate new tokens per second at least 5x one
//! client's, and the 99th percentile of the time between tokens at most 3x one client's
//! median. Then 4x the clients against a queue of twice the batch: only 200 and 429, the
//! resident memory under the file, the cache budget and a margin; then SIGTERM exits 0.
//!
//! The server multiplies with 8-bit activations (`--activations int8`, llama.cpp's
//! arithmetic; `--activations f32` for the f32 path).
//!
//! With `--peer`, llama.cpp's server on the same file with as many slots as clients runs the
//! same loads in the same rounds (the native build `KILN_LLAMA_SERVER` names, else the
//! `xllamacpp` wheel through `benches/peers/chat_llama_cpp.py`): Kiln's aggregate at least
//! 1.0x. Report: target/load/chat-report.json and a markdown table on stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::load::{Server, kiln_load, median, sigterm_exit, with_peak_rss};
use crate::{cargo, option, run};

/// The key/value cache budget given to the server, MiB.
const KV_MIB: usize = 256;
/// Resident memory allowed above the file's size and the cache budget, MiB.
const MARGIN_MIB: f64 = 400.0;

/// Starts `command`, which prints `PREFIX URL` on its first line of stdout.
fn start(mut command: Command, prefix: &str) -> Result<Server, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{command:?}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{command:?} did not start"));
        }
        if let Some(url) = line.trim().strip_prefix(prefix) {
            let url = url.trim().to_owned();
            // Keep draining stdout so that the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            return Ok(Server { child, url });
        }
    }
}

/// llama.cpp's server on `file` with `slots` slots, answering once `/health` does.
fn start_peer(file: &Path, slots: usize) -> Result<(Server, String), String> {
    let context = (slots * 512).to_string();
    let (process, name) = if let Some(native) = std::env::var_os("KILN_LLAMA_SERVER") {
        let port = free_port()?;
        let mut c = Command::new(native);
        c.arg("-m")
            .arg(file)
            .args(["-t", "2", "-tb", "2", "-c", &context]);
        c.args(["-np", &slots.to_string(), "--host", "127.0.0.1", "--port"]);
        c.arg(port.to_string());
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("KILN_LLAMA_SERVER: {e}"))?;
        let url = format!("http://127.0.0.1:{port}");
        (Server { child, url }, "llama.cpp native (AVX-512)")
    } else {
        let mut c = Command::new("python3");
        c.arg("benches/peers/chat_llama_cpp.py")
            .arg(file)
            .args([&slots.to_string(), &context]);
        (
            start(c, "listening on")?,
            "llama.cpp xllamacpp wheel (AVX2)",
        )
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("{}/health", process.url)])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok((process, name.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!(
        "llama.cpp's server at {} never answered",
        process.url
    ))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// One chat load: `clients` closed-loop clients for `seconds`; the report's `chat` part
/// and the statuses.
fn chat_load(
    url: &str,
    input: &Path,
    clients: usize,
    max_tokens: usize,
    seconds: f64,
    report: &Path,
) -> Result<Value, String> {
    kiln_load(
        url,
        input,
        &[
            "--chat",
            "--max-tokens",
            &max_tokens.to_string(),
            "--clients",
            &clients.to_string(),
        ],
        seconds,
        report,
    )
}

fn number(v: &Value, key: &str) -> f64 {
    v["chat"][key].as_f64().unwrap_or(f64::NAN)
}

pub(crate) fn load_chat(args: &[String]) -> Result<(), String> {
    let parse = |name: &str, default: &str| -> Result<f64, String> {
        option(args, name)
            .unwrap_or_else(|| default.into())
            .parse()
            .map_err(|e| format!("{name}: {e}"))
    };
    let seconds = parse("--seconds", "20")?;
    let rounds = parse("--rounds", "3")? as usize;
    let clients = parse("--clients", "16")? as usize;
    let max_tokens = parse("--max-tokens", "64")? as usize;
    let peer = args.iter().any(|a| a == "--peer");
    // llama.cpp's arithmetic by default, as its server computes.
    let activations = option(args, "--activations").unwrap_or_else(|| "int8".into());
    if !["f32", "int8"].contains(&activations.as_str()) {
        return Err(format!("--activations {activations}: f32 or int8"));
    }
    if !(seconds > 0.0 && seconds <= 600.0) || rounds == 0 || !(1..=256).contains(&clients) {
        return Err("--seconds in (0, 600], --rounds at least 1, --clients in 1..=256".into());
    }
    if !(1..=4096).contains(&max_tokens) {
        return Err("--max-tokens in 1..=4096".into());
    }
    let models = PathBuf::from(
        std::env::var_os("KILN_MODELS").ok_or("KILN_MODELS must name the shared models folder")?,
    );
    let models =
        std::fs::canonicalize(&models).map_err(|e| format!("{}: {e}", models.display()))?;
    let file = match std::env::var_os("KILN_GGUF") {
        Some(f) => std::fs::canonicalize(&f).map_err(|e| format!("KILN_GGUF: {e}"))?,
        None => models.join("smollm2-135m-instruct-gguf/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    let file_mib = std::fs::metadata(&file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .len() as f64
        / (1 << 20) as f64;
    let prompts = models.join("../reference/bench-sentences-1000.txt");
    if !prompts.is_file() {
        return Err(format!("{}: not found", prompts.display()));
    }
    let out = PathBuf::from("target/load");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut c = cargo();
    c.args(["build", "--release", "-p", "kiln-serve", "--bins"]);
    run(c)?;

    let mut serve = Command::new("target/release/kiln-serve");
    serve
        .arg("--models")
        .arg(file.parent().ok_or("the file has no folder")?)
        .arg("--generator")
        .arg(format!(
            "chat={}",
            file.file_name().unwrap_or_default().to_string_lossy()
        ))
        .args(["--activations", &activations])
        .args(["--port", "0", "--chat-batch", &clients.to_string()])
        .args(["--queue", &(2 * clients).to_string()])
        .args(["--kv-cache-mib", &KV_MIB.to_string()])
        .args(["--max-requests-per-client", "1024"]);
    let server = start(serve, "kiln-serve: listening on ")?;
    let pid = server.child.id();
    let peer = if peer {
        Some(start_peer(&file, clients)?)
    } else {
        None
    };

    let mut table = Vec::new();
    for round in 0..rounds {
        let mut row = json!({"round": round});
        let mut targets = vec![("kiln", server.url.clone())];
        if let Some((p, _)) = &peer {
            targets.push(("peer", p.url.clone()));
        }
        // The peer first in odd rounds: drift hits both alike.
        if round % 2 == 1 {
            targets.reverse();
        }
        for (who, url) in targets {
            for n in [1, clients] {
                let report = out.join(format!("chat-{who}-{n}-{round}.json"));
                let r = chat_load(&url, &prompts, n, max_tokens, seconds, &report)?;
                eprintln!(
                    "round {round} {who} {n} client(s): {:.1} tokens/s, gap p50 {:.1} ms p99 {:.1} ms, statuses {}",
                    number(&r, "tokens_per_second"),
                    number(&r, "token_gap_ms_p50"),
                    number(&r, "token_gap_ms_p99"),
                    r["statuses"]
                );
                row[format!("{who}_{n}")] = r;
            }
        }
        table.push(row);
    }
    let with_peer = peer.is_some();
    drop(peer);

    // 4x the clients against a queue of twice the batch: 200 or 429 only, memory bounded.
    let (overload, peak_mib) = with_peak_rss(pid, || {
        chat_load(
            &server.url,
            &prompts,
            4 * clients,
            max_tokens,
            seconds,
            &out.join("chat-overload.json"),
        )
    });
    let overload = overload?;
    let bound_mib = file_mib + KV_MIB as f64 + MARGIN_MIB;
    let mut server = server;
    let exit = sigterm_exit(&mut server.child)?;

    let per_round = |key: &str, f: &dyn Fn(&Value) -> f64| -> Vec<f64> {
        table.iter().map(|r| f(&r[key])).collect()
    };
    let single = per_round("kiln_1", &|r| number(r, "tokens_per_second"));
    let multi_key = format!("kiln_{clients}");
    let multi = per_round(&multi_key, &|r| number(r, "tokens_per_second"));
    let speedups: Vec<f64> = multi.iter().zip(&single).map(|(m, s)| m / s).collect();
    let step = per_round("kiln_1", &|r| number(r, "token_gap_ms_p50"));
    let p99 = per_round(&multi_key, &|r| number(r, "token_gap_ms_p99"));
    let gap_ratios: Vec<f64> = p99.iter().zip(&step).map(|(p, s)| p / s).collect();
    let peer_key = format!("peer_{clients}");
    let versus: Vec<f64> = if with_peer {
        multi
            .iter()
            .zip(per_round(&peer_key, &|r| number(r, "tokens_per_second")))
            .map(|(k, p)| k / p)
            .collect()
    } else {
        Vec::new()
    };
    let statuses = overload["statuses"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let unexpected: Vec<String> = statuses
        .keys()
        .filter(|k| !["200", "429"].contains(&k.as_str()))
        .cloned()
        .collect();
    let report = json!({
        "file": file,
        "activations": activations,
        "clients": clients,
        "max_tokens": max_tokens,
        "seconds": seconds,
        "rounds": table,
        "speedup_per_round": speedups,
        "gap_p99_over_single_step_per_round": gap_ratios,
        "kiln_over_peer_per_round": versus,
        "overload": overload,
        "resident_mib_peak_during_overload": peak_mib,
        "resident_bound_mib": bound_mib,
        "sigterm_exit_code": exit,
    });
    let path = out.join("chat-report.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;

    let range = |v: &[f64]| {
        (
            v.iter().cloned().fold(f64::INFINITY, f64::min),
            v.iter().cloned().fold(0.0, f64::max),
        )
    };
    println!(
        "\n| round | 1 client (tokens/s) | step p50 | {clients} clients (tokens/s) | gap p99 | speedup |{}",
        if versus.is_empty() {
            ""
        } else {
            " llama.cpp 16 slots (tokens/s) | Kiln / llama.cpp |"
        }
    );
    println!(
        "|---|---|---|---|---|---|{}",
        if versus.is_empty() { "" } else { "---|---|" }
    );
    for (i, r) in table.iter().enumerate() {
        let peer_cells = if versus.is_empty() {
            String::new()
        } else {
            format!(
                " {:.1} | {:.2} |",
                number(&r[&peer_key], "tokens_per_second"),
                versus[i]
            )
        };
        println!(
            "| {i} | {:.1} | {:.1} ms | {:.1} | {:.1} ms | {:.2} |{peer_cells}",
            single[i], step[i], multi[i], p99[i], speedups[i]
        );
    }
    let speedup = median(speedups.clone());
    let gap = median(gap_ratios.clone());
    println!(
        "\nspeedup median {speedup:.2} (range {:.2}-{:.2}); gap p99 / single step median {gap:.2}; \
         overload {} clients: statuses {}; resident peak {peak_mib:.0} MiB (bound {bound_mib:.0}); \
         SIGTERM exit {exit:?}",
        range(&speedups).0,
        range(&speedups).1,
        4 * clients,
        Value::Object(statuses.clone()),
    );
    println!("report: {}", path.display());

    let mut failures = Vec::new();
    if speedup < 5.0 {
        failures.push(format!("aggregate {speedup:.2}x one client's, target 5x"));
    }
    if gap > 3.0 {
        failures.push(format!(
            "p99 time between tokens {gap:.2}x the single step, target at most 3x"
        ));
    }
    if !versus.is_empty() && median(versus.clone()) < 1.0 {
        failures.push(format!(
            "aggregate {:.2}x llama.cpp's, target 1.0x",
            median(versus.clone())
        ));
    }
    if !unexpected.is_empty() {
        failures.push(format!(
            "overload answers other than 200/429: {unexpected:?}"
        ));
    }
    if peak_mib > bound_mib {
        failures.push(format!(
            "resident memory {peak_mib:.0} MiB past {bound_mib:.0} MiB"
        ));
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
