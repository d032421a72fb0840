//! The `kiln-serve` binary: SIGTERM while requests are in flight finishes every one of them,
//! refuses new connections, and exits 0; bad flags are refused before anything loads (needs
//! `KILN_MODELS`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn minilm_parent() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("KILN_MODELS").expect("KILN_MODELS is set"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs KILN_MODELS"]
async fn sigterm_finishes_the_requests_in_flight_then_exits_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
        .args(["--models"])
        .arg(minilm_parent())
        .args([
            "--embeddings",
            "all-MiniLM-L6-v2",
            "--port",
            "0",
            "--max-batch",
            "8",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("kiln-serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let client = reqwest::Client::new();
    let texts: Vec<String> = (0..64)
        .map(|i| format!("request text {i}, long enough to keep the encoder busy for a while"))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (client, url, texts) = (client.clone(), url.clone(), texts.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{url}/v1/embeddings"))
                .json(&json!({"input": texts}))
                .send()
                .await?;
            let status = r.status().as_u16();
            let body: Value = r.json().await?;
            let n = body["data"].as_array().map_or(0, Vec::len);
            Ok::<_, reqwest::Error>((status, n, Instant::now()))
        }));
    }
    // Let the requests reach the server, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut after = 0;
    for t in tasks {
        let (status, n, done) = t.await.unwrap().expect("a request in flight was lost");
        assert_eq!((status, n), (200, 64));
        after += usize::from(done > signalled);
    }
    // The signal came while requests were still being served.
    assert!(after > 0, "every request had finished before SIGTERM");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("finishing the requests in flight"),
        "{stderr}"
    );
    assert!(client.get(format!("{url}/health")).send().await.is_err());
}

#[test]
fn bad_flags_are_refused_naming_them() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--models"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
        .arg("--models")
        .arg(dir.path())
        .args(["--embeddings", "../../etc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused") && err.contains(".."), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
        .arg("--models")
        .arg(dir.path())
        .args(["--max-inputs", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.max_inputs"), "{err}");
}
