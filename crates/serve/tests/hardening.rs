//! The server against clients that misbehave, on models that need no shared folder (the tiny
//! Llama fixture, an untrained LeNet-5): half-sent requests and shutdown, the connection cap,
//! the body budget, a client's share, disconnects and the in-flight gauge, request shapes
//! (top-level arrays, unknown fields), huge pictures, the `Host` check, and the start-up
//! validation of durations; continuous batching, whose answers to concurrent requests are
//! each request's answer alone; and tools rendered through a chat template.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_serve::config::ModelEntry;
use kiln_serve::{AppState, Metrics, RunningServer, ServeConfig};
use kiln_vision::{Architecture, ExportMeta, LeNet5Config, Pipeline, export_classifier};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + \
message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ \
'<|im_start|>assistant\n' }}{% endif %}";

/// A models folder with `chat-tiny` (the tiny Llama fixture) and `digits` (LeNet-5, random).
fn models_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../nlp/tests/fixtures/decoders/llama-tiny");
    let chat = dir.path().join("chat-tiny");
    std::fs::create_dir(&chat).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        std::fs::copy(fixture.join(f), chat.join(f)).unwrap();
    }
    std::fs::write(chat.join("chat_template.jinja"), CHATML).unwrap();
    let device = kiln_core::backend::device("cpu").unwrap();
    let lenet = LeNet5Config::new();
    let meta = ExportMeta {
        architecture: Architecture::Lenet5(lenet.clone()),
        channels: 1,
        height: 28,
        width: 28,
        pipeline: Pipeline::new(),
        labels: (0..10).map(|d| d.to_string()).collect(),
    };
    export_classifier(&lenet.init(&device), &meta, dir.path().join("digits")).unwrap();
    dir
}

fn config(dir: &Path) -> ServeConfig {
    let mut c = ServeConfig::new(dir);
    c.port = 0;
    c.generators.push(ModelEntry::new("chat-tiny", "chat-tiny"));
    c.image_classifiers
        .push(ModelEntry::new("digits", "digits"));
    c
}

async fn serve(config: ServeConfig) -> (RunningServer, String, Metrics) {
    let metrics = Metrics::new();
    let m = metrics.clone();
    let state = tokio::task::spawn_blocking(move || AppState::load(config, m))
        .await
        .unwrap()
        .unwrap();
    let server = kiln_serve::start(state).await.unwrap();
    let url = format!("http://{}", server.addr());
    (server, url, metrics)
}

/// Opens a connection and sends `head` (no more).
async fn half_sent(addr: std::net::SocketAddr, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Reads until the server closes the connection (or `within` passes: `None`).
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

const PARTIAL_HEAD: &str = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_does_not_delay_shutdown_past_the_grace_period() {
    let dir = models_dir();
    let mut c = config(dir.path());
    c.limits.header_timeout_secs = 60.0;
    c.limits.shutdown_grace_secs = 0.5;
    let (server, _, _) = serve(c).await;
    let mut stalled = half_sent(server.addr(), PARTIAL_HEAD).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    // The connection was closed, not left open.
    assert!(
        read_to_close(&mut stalled, Duration::from_secs(2))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_not_finished_in_time_close_the_connection() {
    let dir = models_dir();
    let mut c = config(dir.path());
    c.limits.header_timeout_secs = 0.3;
    let (server, _, _) = serve(c).await;
    let mut stalled = half_sent(server.addr(), PARTIAL_HEAD).await;
    let started = Instant::now();
    let closed = read_to_close(&mut stalled, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "still open after 5 s");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503_and_are_closed() {
    let dir = models_dir();
    let mut c = config(dir.path());
    c.limits.max_connections = 2;
    let (server, url, metrics) = serve(c).await;
    let _a = half_sent(server.addr(), "GET /health HTTP/1.1\r\n").await;
    let _b = half_sent(server.addr(), "GET /health HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(server.addr()).await.unwrap();
    let answer = read_to_close(&mut third, Duration::from_secs(3))
        .await
        .expect("closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connections open"), "{answer}");
    assert!(
        metrics
            .render()
            .contains("kiln_refused_total{reason=\"connections\"} 1")
    );
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = reqwest::get(format!("{url}/health")).await.unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_and_a_clients_share_are_bounded() {
    let dir = models_dir();
    let mut c = config(dir.path());
    c.limits.max_body_bytes = 4096;
    c.limits.max_body_bytes_in_flight = 6000;
    let (server, url, _) = serve(c).await;
    // A request that declares 4000 bytes and sends 10: its reservation holds.
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"messages\"";
    let held = half_sent(server.addr(), head).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = reqwest::Client::new();
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(3000)}]});
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request bodies")
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let small = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await.unwrap();

    // One request in flight per client: a second from the same address is a 429.
    let mut c = config(dir.path());
    c.limits.max_requests_per_client = 1;
    let (server, url, _) = serve(c).await;
    let held = half_sent(server.addr(), head).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_gauge_returns_to_0_after_50_disconnects() {
    let dir = models_dir();
    let (server, url, metrics) = serve(config(dir.path())).await;
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"messa";
    let mut open = Vec::new();
    for _ in 0..50 {
        open.push(half_sent(server.addr(), head).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.in_flight.get(), 50);
    drop(open);
    let started = Instant::now();
    while metrics.in_flight.get() != 0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metrics.in_flight.get(), 0);
    // Streams dropped by their clients count out too.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let r = client
            .post(format!("{url}/v1/chat/completions"))
            .json(&json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        drop(r);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.in_flight.get(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_shapes_are_checked() {
    let dir = models_dir();
    let (server, url, _) = serve(config(dir.path())).await;
    let client = reqwest::Client::new();
    let post = |body: Value| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(format!("{url}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let message = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!(["hello", "chat-tiny"]), "JSON object"),
        (json!({"messages": message, "n": 3}), "n is 3"),
        (
            json!({"messages": message, "frobnicate": 1, "tools": []}),
            "frobnicate",
        ),
        (json!({"messages": message, "logprobs": true}), "logprobs"),
        (
            json!({"messages": message, "response_format": {"type": "json_object"}}),
            "response_format",
        ),
    ];
    for (body, needle) in cases {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let msg = answer["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let (status, answer) = post(json!({"messages": message, "n": 1, "max_tokens": 2,
        "logprobs": false, "user": "u1", "response_format": {"type": "text"}}))
    .await;
    assert_eq!(status, 200, "{answer}");
    // The completions endpoint refuses unknown fields too.
    let r = client
        .post(format!("{url}/v1/completions"))
        .json(&json!({"prompt": "a", "echo": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A Host that is not this loopback server's (DNS rebinding) is refused.
    let r = client
        .get(format!("{url}/health"))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    let r = client
        .get(format!("{url}/health"))
        .header("Host", "localhost:1234")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await.unwrap();
}

/// A 1x1 PNG whose header (checksum fixed) claims `width` x `height`.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let img = image::GrayImage::from_pixel(1, 1, image::Luma([7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    let mut bytes = out.into_inner();
    bytes[16..20].copy_from_slice(&width.to_be_bytes());
    bytes[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = !0u32;
    for &b in &bytes[12..29] {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    bytes[29..33].copy_from_slice(&(!crc).to_be_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16000_square_png_is_413_before_decoding() {
    let dir = models_dir();
    let (server, url, _) = serve(config(dir.path())).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let r = client
        .post(format!("{url}/v1/classify"))
        .header("Content-Type", "image/png")
        .body(png_claiming(16_000, 16_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("16000x16000"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A picture within the bound is classified.
    let r = client
        .post(format!("{url}/v1/classify"))
        .header("Content-Type", "image/png")
        .body({
            let img = image::GrayImage::from_pixel(40, 30, image::Luma([200]));
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png).unwrap();
            out.into_inner()
        })
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.shutdown().await.unwrap();
}

#[test]
fn durations_past_a_day_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--timeout-secs", "1e20"),
        ("--timeout-secs", "NaN"),
        ("--header-timeout-secs", "0"),
        ("--shutdown-grace-secs", "-1"),
        ("--max-connections", "0"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
            .arg("--models")
            .arg(dir.path())
            .arg(format!("{flag}={value}"))
            .args(["--port", "0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        let field = flag.trim_start_matches("--").replace('-', "_");
        assert!(err.contains(&field), "{flag} {value}: {err}");
    }
    // Beyond loopback without a token: refused unless --allow-public.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
        .arg("--models")
        .arg(dir.path())
        .args(["--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-public"));
    // --activations: only f32 or int8, and only with a --generator to apply to.
    for args in [
        &["--activations", "int8"][..],
        &["--generator", "g", "--activations", "int4"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
            .arg("--models")
            .arg(dir.path())
            .args(args)
            .args(["--port", "0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--activations") || err.contains("activations"),
            "{args:?}: {err}"
        );
    }
}

/// Starts the binary on the tiny chat model with `flags`; returns it and its address.
fn spawn_binary(dir: &Path, flags: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-serve"))
        .arg("--models")
        .arg(dir)
        .args(["--generator", "chat-tiny", "--port", "0"])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("kiln-serve: listening on http://")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn signal(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits up to `within` for the process to exit.
fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_half_sent_request_exits_0_after_the_grace_and_a_second_signal_at_once() {
    let dir = models_dir();
    let (mut child, addr) = spawn_binary(
        dir.path(),
        &["--header-timeout-secs", "60", "--shutdown-grace-secs", "1"],
    );
    let _stalled = half_sent(addr, PARTIAL_HEAD).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child);
    let status = wait_exit(&mut child, Duration::from_secs(5)).expect("still running after 5 s");
    assert!(status.success(), "{status}");

    // A grace period of a minute: the second signal ends it at once.
    let (mut child, addr) = spawn_binary(
        dir.path(),
        &["--header-timeout-secs", "60", "--shutdown-grace-secs", "60"],
    );
    let _stalled = half_sent(addr, PARTIAL_HEAD).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before the grace period"
    );
    signal(&child);
    let status =
        wait_exit(&mut child, Duration::from_secs(3)).expect("a second signal did not end it");
    assert!(!status.success());
}

/// One completion of `prompt` (greedy, `max_tokens` 10), streamed or whole; its text and
/// usage.
async fn complete(
    client: &reqwest::Client,
    url: &str,
    prompt: &str,
    stream: bool,
) -> (String, Value) {
    let body = json!({"model": "chat-tiny", "prompt": prompt, "max_tokens": 10,
                      "temperature": 0, "stream": stream,
                      "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }});
    let body = if stream {
        body
    } else {
        let mut b = body;
        b.as_object_mut().unwrap().remove("stream_options");
        b
    };
    let r = client
        .post(format!("{url}/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    if !stream {
        let v: Value = r.json().await.unwrap();
        return (
            v["choices"][0]["text"].as_str().unwrap().to_owned(),
            v["usage"].clone(),
        );
    }
    let text = r.text().await.unwrap();
    let mut out = String::new();
    let mut usage = Value::Null;
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(line).unwrap();
        if v["usage"].is_object() {
            assert_eq!(v["choices"], json!([]));
            usage = v["usage"].clone();
        } else {
            out.push_str(v["choices"][0]["text"].as_str().unwrap_or(""));
        }
    }
    (out, usage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_the_answers_they_get_alone() {
    let dir = models_dir();
    let mut c = config(dir.path());
    // Fewer decoding at once than the requests: some wait for room and join later.
    c.batching.chat_batch = 3;
    c.batching.prefill_chunk = 2;
    let (server, url, _) = serve(c).await;
    let client = reqwest::Client::new();
    let prompts: Vec<String> = (0..8)
        .map(|i| "the quick brown fox jumps over the lazy dog ".repeat(3)[..8 + 4 * i].to_owned())
        .collect();
    let mut alone = Vec::new();
    for p in &prompts {
        alone.push(complete(&client, &url, p, false).await);
    }
    let together = futures_util::future::join_all(
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| complete(&client, &url, p, i % 2 == 0)),
    )
    .await;
    for (i, ((text, usage), (want, want_usage))) in together.iter().zip(&alone).enumerate() {
        assert_eq!(text, want, "prompt {i}");
        assert_eq!(usage, want_usage, "prompt {i}");
    }
    assert!(
        alone.iter().any(|a| a.0 != alone[0].0),
        "one answer for all prompts"
    );
    server.shutdown().await.unwrap();
}

/// A generator whose template renders tools (Qwen2.5's, from the chat fixtures) on the tiny
/// Llama: `tools` reach the prompt, `tool_choice: "none"` keeps them out, an earlier call and
/// its result render, and malformed tools are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_rendered_through_the_template() {
    let dir = models_dir();
    let qwen: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../nlp/tests/fixtures/chat/qwen-tools/tokenizer_config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let chat = dir.path().join("chat-tiny");
    // Rotary positions: the weights serve a longer context (tool schemas make long prompts).
    let config_path = chat.join("config.json");
    let mut model_config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    model_config["max_position_embeddings"] = json!(1024);
    std::fs::write(&config_path, model_config.to_string()).unwrap();
    std::fs::write(
        chat.join("chat_template.jinja"),
        qwen["chat_template"].as_str().unwrap(),
    )
    .unwrap();
    let (server, url, _) = serve(config(dir.path())).await;
    let client = reqwest::Client::new();
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "The weather in a city.", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let user = json!({"role": "user", "content": "Weather in Paris?"});
    let ask = |body: Value| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client
                .post(format!("{url}/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let prompt_tokens = |v: &Value| v["usage"]["prompt_tokens"].as_u64().unwrap();
    let (status, plain) = ask(json!({"messages": [user], "max_tokens": 2})).await;
    assert_eq!(status, 200, "{plain}");
    let (status, with) = ask(json!({"messages": [user], "max_tokens": 2, "tools": tools})).await;
    assert_eq!(status, 200, "{with}");
    assert!(
        prompt_tokens(&with) > prompt_tokens(&plain) + 20,
        "{with} {plain}"
    );
    let (_, none) = ask(json!({"messages": [user], "max_tokens": 2, "tools": tools,
                               "tool_choice": "none"}))
    .await;
    assert_eq!(prompt_tokens(&none), prompt_tokens(&plain));
    // A call made earlier (OpenAI's shape: arguments as a string, content null) and its result.
    let turn = json!([user,
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21}"}]);
    let (status, next) = ask(json!({"messages": turn, "max_tokens": 2, "tools": tools})).await;
    assert_eq!(status, 200, "{next}");
    assert!(prompt_tokens(&next) > prompt_tokens(&with));
    let streamed = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"messages": [user], "max_tokens": 2, "tools": tools, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let text = streamed.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    for (body, needle) in [
        (
            json!({"messages": [user], "tools": [{"type": "function"}]}),
            "tools[0]",
        ),
        (
            json!({"messages": [user], "tools": tools, "tool_choice": "required"}),
            "required",
        ),
    ] {
        let (status, answer) = ask(body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle)
        );
    }
    let r = client
        .post(format!("{url}/v1/completions"))
        .json(&json!({"prompt": "hi", "tools": tools}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.shutdown().await.unwrap();
}
