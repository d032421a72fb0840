//! A small benchmark harness shared by every crate's `benches/` (`harness = false`).
//!
//! - `cargo bench` (or `cargo xtask bench`) passes `--bench`: each case is warmed up, then run
//!   for about [`Bencher::budget`] seconds, and its median time reported.
//! - Without `--bench` (as `cargo test --benches` and `cargo xtask ci` run them) every case runs
//!   once on tiny inputs, so the suite is checked cheaply.
//! - `--filter TEXT` (or a bare `TEXT`) keeps the cases whose name contains it.
//! - Results are printed as a markdown table and appended as JSON lines to the file named by
//!   `KILN_BENCH_OUT`, which `cargo xtask bench` collects.
//! - `KILN_BENCH_BACKENDS=flex` (a comma-separated list) limits the backends measured
//!   ([`backends`]); by default every compiled-in CPU backend runs.

use std::io::Write;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The backends a benchmark measures: every compiled-in CPU backend, or the compiled-in ones
/// named in `KILN_BENCH_BACKENDS` (comma-separated, e.g. `flex` or `flex,cuda,wgpu`).
pub fn backends() -> Vec<kiln_core::Backend> {
    let chosen = std::env::var("KILN_BENCH_BACKENDS").ok();
    kiln_core::backend::compiled()
        .into_iter()
        .filter(|b| {
            chosen.as_deref().map_or(b.is_cpu(), |list| {
                list.split(',').any(|name| name.trim() == b.name())
            })
        })
        .collect()
}

/// One benchmark result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Case name, e.g. `lenet_train_step`.
    pub name: String,
    /// Backend or implementation measured, e.g. `flex`.
    pub backend: String,
    /// Timed iterations.
    pub iterations: usize,
    /// Median seconds per iteration.
    pub median_secs: f64,
    /// Items per second at the median (images, tokens, ratings, ...), when meaningful.
    pub throughput: Option<f64>,
    /// What the throughput counts.
    pub unit: Option<String>,
    /// Whether this was a tiny (smoke) run.
    pub tiny: bool,
    /// Case-specific numbers (losses, accuracy, ...).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Runs and records benchmark cases.
#[derive(Debug)]
pub struct Bencher {
    tiny: bool,
    filter: Option<String>,
    budget: Duration,
    results: Vec<BenchResult>,
}

impl Bencher {
    /// Reads `--bench` and `--filter` from the command line.
    pub fn from_args() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        let mut filter = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--filter" {
                filter = it.next().cloned();
            } else if !a.starts_with("--") {
                filter = Some(a.clone());
            }
        }
        let budget = std::env::var("KILN_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(3.0);
        Self {
            tiny: !full,
            filter,
            budget: Duration::from_secs_f64(budget),
            results: Vec::new(),
        }
    }

    /// True when running as a smoke test: use tiny inputs and one iteration.
    pub fn tiny(&self) -> bool {
        self.tiny
    }

    /// The time budget of one case in a full run.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether a case passes the filter.
    pub fn enabled(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }

    /// Times `f`: one warm-up call, then repeated calls until the budget is spent (at least 3),
    /// or a single call in a tiny run. `items` is what one call processes, for the throughput.
    pub fn run(
        &mut self,
        name: &str,
        backend: &str,
        items: Option<(f64, &str)>,
        mut f: impl FnMut(),
    ) -> Option<&mut BenchResult> {
        if !self.enabled(name) {
            return None;
        }
        let mut times = Vec::new();
        if self.tiny {
            let t = Instant::now();
            f();
            times.push(t.elapsed().as_secs_f64());
        } else {
            f();
            let start = Instant::now();
            while times.len() < 3 || start.elapsed() < self.budget {
                let t = Instant::now();
                f();
                times.push(t.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        self.results.push(BenchResult {
            name: name.to_string(),
            backend: backend.to_string(),
            iterations: times.len(),
            median_secs: median,
            throughput: items.map(|(n, _)| n / median),
            unit: items.map(|(_, u)| u.to_string()),
            tiny: self.tiny,
            extra: serde_json::Map::new(),
        });
        self.results.last_mut()
    }

    /// Records a result measured by the caller.
    pub fn record(&mut self, result: BenchResult) {
        if self.enabled(&result.name) {
            self.results.push(result);
        }
    }

    /// The results so far.
    pub fn results(&self) -> &[BenchResult] {
        &self.results
    }

    /// Prints the results as a markdown table and appends them to `KILN_BENCH_OUT`.
    ///
    /// # Errors
    /// [`kiln_core::Error::Io`] when `KILN_BENCH_OUT` cannot be opened or written.
    pub fn finish(self) -> kiln_core::Result<()> {
        println!("{}", markdown(&self.results));
        if let Some(path) = std::env::var_os("KILN_BENCH_OUT") {
            let path = std::path::PathBuf::from(path);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| kiln_core::Error::io(&path, e))?;
            for r in &self.results {
                let line = serde_json::to_string(r).map_err(|e| kiln_core::Error::Json {
                    context: "bench result".into(),
                    source: e,
                })?;
                writeln!(file, "{line}").map_err(|e| kiln_core::Error::io(&path, e))?;
            }
        }
        Ok(())
    }
}

/// A markdown table of results.
pub fn markdown(results: &[BenchResult]) -> String {
    let mut out = String::from(
        "| case | backend | median ms | throughput | iterations | extra |\n|---|---|---|---|---|---|\n",
    );
    for r in results {
        let throughput = match (r.throughput, &r.unit) {
            (Some(t), Some(u)) => format!("{t:.1} {u}/s"),
            _ => "-".into(),
        };
        let extra = r
            .extra
            .iter()
            .map(|(k, v)| match v.as_f64() {
                Some(f) => format!("{k} {f:.4}"),
                None => format!("{k} {v}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| {}{} | {} | {:.3} | {} | {} | {} |\n",
            r.name,
            if r.tiny { " (tiny)" } else { "" },
            r.backend,
            r.median_secs * 1e3,
            throughput,
            r.iterations,
            extra
        ));
    }
    out
}
