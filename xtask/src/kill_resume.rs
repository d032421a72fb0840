//! An MNIST run killed with SIGKILL mid-epoch and resumed must end as the uninterrupted run
//! does: used by the examples step on one process and by the MPI step on two ranks.

use std::path::Path;

use crate::{cargo, run};

/// Trains LeNet-5 for two epochs on 20,000 MNIST images twice, on `ranks` processes (under
/// `mpirun` for more than one; `features` must then include `mpi`): once through, and once
/// killed with SIGKILL (every rank) during the second epoch and restarted with `--resume`.
/// The final weights (their SHA-256), the report's metrics and the run log must be equal,
/// bit for bit.
pub(crate) fn kill_and_resume(
    features: &str,
    out: &Path,
    mnist: &Path,
    ranks: usize,
) -> Result<(), String> {
    let mut c = cargo();
    c.args([
        "build",
        "--quiet",
        "--features",
        features,
        "--example",
        "mnist",
    ]);
    run(c)?;
    let exe = Path::new("target")
        .join("debug")
        .join("examples")
        .join("mnist");
    let runs = out.join("runs").join(format!("kill_resume_{ranks}"));
    let _ = std::fs::remove_dir_all(&runs);
    let command = |name: &str| {
        let mut c = if ranks > 1 {
            let mut c = std::process::Command::new("mpirun");
            c.arg("-np").arg(ranks.to_string()).arg("--oversubscribe");
            c.envs(crate::AS_ROOT).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        c.arg("--data").arg(mnist);
        c.args([
            "--model", "lenet", "--epochs", "2", "--limit", "20000", "--quiet",
        ]);
        c.arg("--run-dir").arg(runs.join(name));
        c.arg("--report").arg(runs.join(format!("{name}.json")));
        c
    };
    let report = |name: &str| -> Result<serde_json::Value, String> {
        let path = runs.join(format!("{name}.json"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    };
    // The run log without its clock.
    let log = |name: &str| -> Result<Vec<serde_json::Value>, String> {
        let path = runs.join(name).join("metrics.jsonl");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value =
                    serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display()))?;
                v.as_object_mut().map(|o| o.remove("elapsed_secs"));
                Ok(v)
            })
            .collect()
    };

    run(command("whole"))?;
    // The first epoch's length, from the uninterrupted run's log.
    let whole_log = runs.join("whole").join("metrics.jsonl");
    let epoch_secs = std::fs::read_to_string(&whole_log)
        .ok()
        .and_then(|t| t.lines().next().map(str::to_owned))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .and_then(|v| v["elapsed_secs"].as_f64())
        .ok_or_else(|| format!("{}: no first epoch", whole_log.display()))?;

    eprintln!(
        "\n==> mnist on {ranks} rank(s) killed with SIGKILL in its second epoch, then --resume"
    );
    let mut child = command("parts")
        .spawn()
        .map_err(|e| format!("mnist: {e}"))?;
    let checkpoint = runs.join("parts").join("checkpoints").join("last.ckpt");
    let started = std::time::Instant::now();
    while !checkpoint.exists() {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Err("mnist ended before its first checkpoint".into());
        }
        if started.elapsed().as_secs() > 600 {
            let _ = child.kill();
            return Err("no checkpoint after 10 minutes".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Halfway through the second epoch.
    std::thread::sleep(std::time::Duration::from_secs_f64(epoch_secs * 0.5));
    if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
        return Err(format!(
            "mnist finished ({status}) before it could be killed mid-epoch"
        ));
    }
    if ranks > 1 {
        // Every rank, as when the machines are lost (mpirun then ends too).
        let pattern = runs.join("parts").to_string_lossy().into_owned();
        let mut pkill = std::process::Command::new("pkill");
        pkill
            .args(["-9", "-f"])
            .arg(format!("examples/mnist .*{pattern}"));
        pkill.status().map_err(|e| format!("pkill: {e}"))?;
    } else {
        child.kill().map_err(|e| format!("kill: {e}"))?; // SIGKILL
    }
    let _ = child.wait();
    let mut resume = command("parts");
    resume.arg("--resume");
    run(resume)?;

    let (whole, parts) = (report("whole")?, report("parts")?);
    for key in [
        "weights_sha256",
        "test_accuracy",
        "test_macro_f1",
        "best_epoch",
        "best_valid_accuracy",
        "epochs",
    ] {
        if whole[key] != parts[key] || whole[key].is_null() {
            return Err(format!(
                "killed and resumed mnist: {key} is {} against {} uninterrupted",
                parts[key], whole[key]
            ));
        }
    }
    if parts["resumed"] != true {
        return Err("the resumed report does not say it resumed".into());
    }
    let (whole_log, parts_log) = (log("whole")?, log("parts")?);
    if whole_log != parts_log {
        return Err(format!(
            "killed and resumed mnist logged {parts_log:?}, the uninterrupted run {whole_log:?}"
        ));
    }
    eprintln!(
        "{ranks} rank(s) killed mid-epoch and resumed: same weights ({}), test accuracy {}",
        whole["weights_sha256"], whole["test_accuracy"]
    );
    Ok(())
}
