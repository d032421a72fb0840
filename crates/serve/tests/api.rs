//! The server on an ephemeral loopback port: every endpoint against the models it serves
//! called directly, every error status with its JSON body, the bearer token, back-pressure,
//! timeouts (needs `KILN_MODELS` and `KILN_DATA`).

mod common;

use kiln_nlp::SentenceEncoder;
use kiln_nlp::chat::ChatMessage;
use kiln_nlp::generation::GenerationConfig;
use kiln_nlp::generation::{Engine, TextGenerator};
use kiln_nlp::gguf::Activations;
use kiln_nlp::models::Precision;
use reqwest::StatusCode;
use serde_json::{Value, json};

use common::*;

async fn post(client: &reqwest::Client, url: &str, body: Value) -> (StatusCode, Value) {
    let r = client.post(url).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `body` is the JSON error of `status`.
fn is_error(status: StatusCode, body: &Value, want: u16, needle: &str) {
    assert_eq!(status.as_u16(), want, "{body}");
    assert_eq!(body["error"]["code"], json!(want), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{want}: {message:?} lacks {needle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KILN_MODELS and KILN_DATA"]
async fn every_endpoint_answers_as_the_models_do() {
    let dir = models_dir();
    let (server, url) = serve(full_config(dir.path())).await;
    let client = reqwest::Client::new();

    check_embeddings(&client, &url).await;
    check_search(&client, &url).await;
    check_recommend(&client, &url).await;
    check_text_classification(&client, &url).await;
    check_image_classification(&client, &url).await;
    check_chat(&client, &url, dir.path()).await;
    check_service_routes(&client, &url).await;

    server.shutdown().await.unwrap();
}

/// `every_endpoint_answers_as_the_models_do`: embeddings.
async fn check_embeddings(client: &reqwest::Client, url: &str) {
    // Embeddings: OpenAI's shape, the encoder's own vectors.
    let texts = [
        "The quick brown fox.",
        "A second, longer sentence about servers.",
    ];
    let (status, body) = post(
        client,
        &format!("{url}/v1/embeddings"),
        json!({"input": texts, "model": "minilm"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "minilm");
    let device = kiln_core::backend::device("cpu").unwrap();
    let encoder = SentenceEncoder::load(minilm(), &device).unwrap();
    let want = encoder.encode(&texts, 8).unwrap();
    let tokens: usize = texts
        .iter()
        .map(|t| encoder.tokenize(t).unwrap().ids.len())
        .sum();
    assert_eq!(body["usage"]["prompt_tokens"], json!(tokens));
    for (i, w) in want.iter().enumerate() {
        assert_eq!(body["data"][i]["index"], json!(i));
        let got: Vec<f32> = serde_json::from_value(body["data"][i]["embedding"].clone()).unwrap();
        assert_eq!(got.len(), 384);
        let diff = got
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "embedding {i} differs by {diff}");
    }
    // One string, no model named (the only one).
    let (status, body) = post(
        client,
        &format!("{url}/v1/embeddings"),
        json!({"input": "one"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
}

/// `every_endpoint_answers_as_the_models_do`: search.
async fn check_search(client: &reqwest::Client, url: &str) {
    // Search: the corpus sentence that answers the question comes first.
    let (status, body) = post(
        client,
        &format!("{url}/v1/search"),
        json!({"query": ["What is the capital of France?", "Who invented the telephone?"], "k": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["corpus_size"], json!(CORPUS.len()));
    assert_eq!(body["results"][0][0]["text"], CORPUS[0]);
    assert_eq!(body["results"][1][0]["text"], CORPUS[3]);
    assert_eq!(body["results"][0].as_array().unwrap().len(), 3);
}

/// `every_endpoint_answers_as_the_models_do`: recommend.
async fn check_recommend(client: &reqwest::Client, url: &str) {
    // Recommend: a known user gets the model's list (unseen items, titles); unknown users the
    // stated fallbacks.
    let (status, body) = post(
        client,
        &format!("{url}/v1/recommend"),
        json!({"user": "196", "k": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "model");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 10);
    assert!(
        items
            .iter()
            .all(|i| !i["title"].as_str().unwrap().is_empty())
    );
    let ml = kiln_recsys::data::MovieLens::load(env_dirs().1.join("ml-100k")).unwrap();
    let u = ml.ratings.users.dense("196").unwrap();
    let seen: Vec<&str> = ml
        .ratings
        .records
        .iter()
        .filter(|r| r.user == u)
        .map(|r| ml.ratings.items.raw(r.item).unwrap())
        .collect();
    assert!(
        items
            .iter()
            .all(|i| !seen.contains(&i["id"].as_str().unwrap()))
    );
    let (_, body) = post(
        client,
        &format!("{url}/v1/recommend"),
        json!({"user": "new-user", "k": 3}),
    )
    .await;
    assert_eq!(body["source"], "popularity");
    assert_eq!(body["items"][0]["title"], "Star Wars (1977)");
    let (_, body) = post(
        client,
        &format!("{url}/v1/recommend"),
        json!({"user": "new-user", "k": 3, "description": "Toy Story"}),
    )
    .await;
    assert_eq!(body["source"], "text");
    assert!(
        body["items"][0]["title"]
            .as_str()
            .unwrap()
            .starts_with("Toy Story"),
        "{body}"
    );
}

/// `every_endpoint_answers_as_the_models_do`: text classification.
async fn check_text_classification(client: &reqwest::Client, url: &str) {
    // Text classification: probabilities over the labels.
    let (status, body) = post(
        client,
        &format!("{url}/v1/classify"),
        json!({"input": ["WIN a FREE prize now", "see you at lunch"], "model": "spam"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for row in body["data"].as_array().unwrap() {
        let s = &row["scores"];
        let total = s["ham"].as_f64().unwrap() + s["spam"].as_f64().unwrap();
        assert!((total - 1.0).abs() < 1e-5);
        assert!(["ham", "spam"].contains(&row["label"].as_str().unwrap()));
    }
}

/// `every_endpoint_answers_as_the_models_do`: image classification.
async fn check_image_classification(client: &reqwest::Client, url: &str) {
    // Image classification: a multipart upload and a raw PNG body agree.
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(png()).file_name("x.png"),
    );
    let r = client
        .post(format!("{url}/v1/classify"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let multipart: Value = r.json().await.unwrap();
    assert_eq!(multipart["model"], "digits");
    assert_eq!(
        multipart["data"][0]["scores"].as_object().unwrap().len(),
        10
    );
    let r = client
        .post(format!("{url}/v1/classify?model=digits"))
        .header("Content-Type", "image/png")
        .body(png())
        .send()
        .await
        .unwrap();
    let raw: Value = r.json().await.unwrap();
    assert_eq!(raw["data"][0]["scores"], multipart["data"][0]["scores"]);
}

/// `every_endpoint_answers_as_the_models_do`: chat.
async fn check_chat(client: &reqwest::Client, url: &str, models: &std::path::Path) {
    let device = kiln_core::backend::device("cpu").unwrap();
    // Chat: the reply equals the model's own greedy continuation of the templated prompt.
    let messages = vec![ChatMessage::new("user", "hello there")];
    let generator = TextGenerator::load(
        models.join("chat-tiny"),
        &device,
        Engine::Auto,
        Precision::F32,
    )
    .unwrap();
    let ids = generator.encode_chat(&messages).unwrap();
    let want = generator
        .generate(&ids, &GenerationConfig::greedy(12), |_| true)
        .unwrap();
    let want_text = generator.decode(&want.ids).unwrap();
    let (status, body) = post(
        client,
        &format!("{url}/v1/chat/completions"),
        json!({"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 12}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], json!(want_text));
    assert_eq!(body["usage"]["prompt_tokens"], json!(ids.len()));
    assert_eq!(body["usage"]["completion_tokens"], json!(want.ids.len()));

    // The same, streamed as server-sent events: the deltas add up to the same text.
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 12, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let mut streamed = String::new();
    let mut finish = Value::Null;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(c);
        }
        if !v["choices"][0]["finish_reason"].is_null() {
            finish = v["choices"][0]["finish_reason"].clone();
        }
    }
    assert_eq!(streamed, want_text);
    assert_eq!(finish, json!(body["choices"][0]["finish_reason"]));

    // Plain completions.
    let (status, body) = post(
        client,
        &format!("{url}/v1/completions"),
        json!({"prompt": "hello", "max_tokens": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["choices"][0]["text"].is_string());
}

/// `every_endpoint_answers_as_the_models_do`: service routes.
async fn check_service_routes(client: &reqwest::Client, url: &str) {
    // Health, models, metrics, the page.
    let health: Value = client
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let models: Value = client
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 4);
    assert_eq!(models["recommend"]["items"], json!(1682));
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "kiln_requests_total{route=\"/v1/embeddings\",status=\"200\"} 2",
        "kiln_request_duration_seconds_bucket{route=\"/v1/search\"",
        "kiln_batch_size_count{model=\"minilm\"}",
        "kiln_queue_depth{model=\"minilm\"} 0",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
    let page = client.get(url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<title>Kiln</title>") && page.contains("/static/app.js"));
    let js = client
        .get(format!("{url}/static/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KILN_MODELS and KILN_DATA"]
async fn bad_requests_get_4xx_with_a_json_body() {
    let dir = models_dir();
    let mut config = full_config(dir.path());
    config.limits.max_inputs = 4;
    config.limits.max_input_bytes = 200;
    config.limits.max_body_bytes = 4096;
    config.limits.max_k = 20;
    config.limits.max_new_tokens = 16;
    let (server, url) = serve(config).await;
    let client = reqwest::Client::new();
    let emb = format!("{url}/v1/embeddings");

    let send = |body: &'static str, ctype: &'static str| {
        let client = client.clone();
        let emb = emb.clone();
        async move {
            let r = client
                .post(&emb)
                .header("Content-Type", ctype)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = send("{\"input\": ", "application/json").await;
    is_error(s, &b, 400, "JSON");
    let (s, b) = send("{\"input\": 5}", "application/json").await;
    is_error(s, &b, 422, "input");
    let (s, b) = send("{\"input\": \"x\"}", "text/plain").await;
    is_error(s, &b, 415, "application/json");
    let (s, b) = send("{\"input\": \"x\", \"colour\": 1}", "application/json").await;
    is_error(s, &b, 422, "colour");

    let (s, b) = post(&client, &emb, json!({"input": []})).await;
    is_error(s, &b, 400, "empty list");
    let (s, b) = post(&client, &emb, json!({"input": ["ok", "  "]})).await;
    is_error(s, &b, 400, "input[1] is empty");
    let (s, b) = post(&client, &emb, json!({"input": ["a", "b", "c", "d", "e"]})).await;
    is_error(s, &b, 413, "at most 4");
    let (s, b) = post(&client, &emb, json!({"input": "x".repeat(300)})).await;
    is_error(s, &b, 413, "300 bytes");
    let big = vec!["y".repeat(150); 40];
    let (s, b) = post(&client, &emb, json!({ "input": big })).await;
    is_error(s, &b, 413, "");
    let (s, b) = post(&client, &emb, json!({"input": "x", "model": "nope"})).await;
    is_error(s, &b, 404, "nope");
    let (s, b) = post(&client, &emb, json!({"input": "x", "model": "../minilm"})).await;
    is_error(s, &b, 400, "not a model name");
    let (s, b) = post(
        &client,
        &emb,
        json!({"input": "x", "encoding_format": "base64"}),
    )
    .await;
    is_error(s, &b, 400, "base64");

    let search = format!("{url}/v1/search");
    let (s, b) = post(&client, &search, json!({"query": "x", "k": 0})).await;
    is_error(s, &b, 400, "k must be");
    let (s, b) = post(&client, &search, json!({"query": "x", "k": 21})).await;
    is_error(s, &b, 413, "at most 20");
    let (s, b) = post(&client, &format!("{url}/v1/recommend"), json!({"user": ""})).await;
    is_error(s, &b, 400, "user");
    let (s, b) = post(
        &client,
        &format!("{url}/v1/classify"),
        json!({"input": "x", "model": "digits"}),
    )
    .await;
    is_error(s, &b, 404, "text classifier");

    let r = client
        .post(format!("{url}/v1/classify"))
        .header("Content-Type", "image/png")
        .body("not a picture")
        .send()
        .await
        .unwrap();
    let (s, b) = (r.status(), r.json::<Value>().await.unwrap());
    is_error(s, &b, 400, "PNG or JPEG");
    let r = client
        .post(format!("{url}/v1/classify"))
        .header("Content-Type", "application/x-thing")
        .body("x")
        .send()
        .await
        .unwrap();
    let (s, b) = (r.status(), r.json::<Value>().await.unwrap());
    is_error(s, &b, 415, "Content-Type");

    let chat = format!("{url}/v1/chat/completions");
    let (s, b) = post(&client, &chat, json!({"messages": []})).await;
    is_error(s, &b, 400, "empty");
    let hi = json!([{"role": "user", "content": "hi"}]);
    let (s, b) = post(&client, &chat, json!({"messages": hi, "max_tokens": 17})).await;
    is_error(s, &b, 400, "1..=16");
    let (s, b) = post(&client, &chat, json!({"messages": hi, "temperature": -1})).await;
    is_error(s, &b, 400, "temperature");
    let (s, b) = post(&client, &chat, json!({"messages": "hi"})).await;
    is_error(s, &b, 422, "messages");

    let r = client
        .get(format!("{url}/v2/nothing"))
        .send()
        .await
        .unwrap();
    let (s, b) = (r.status(), r.json::<Value>().await.unwrap());
    is_error(s, &b, 404, "no route");
    let r = client.get(&emb).send().await.unwrap();
    let (s, b) = (r.status(), r.json::<Value>().await.unwrap());
    is_error(s, &b, 405, "");

    // After all of that the server still answers.
    let (s, _) = post(&client, &emb, json!({"input": "still here"})).await;
    assert_eq!(s, StatusCode::OK);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KILN_MODELS and KILN_DATA"]
async fn the_token_guards_the_api_but_not_health() {
    let dir = models_dir();
    let mut config = kiln_serve::ServeConfig::new(dir.path());
    config.port = 0;
    config.token = Some("s3cret".into());
    config
        .embeddings
        .push(kiln_serve::config::ModelEntry::new("minilm", "minilm"));
    let (server, url) = serve(config).await;
    let client = reqwest::Client::new();
    let emb = format!("{url}/v1/embeddings");
    let body = json!({"input": "x"});
    let r = client.post(&emb).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["type"], "authentication_error");
    let r = client
        .post(&emb)
        .bearer_auth("s3cres")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .post(&emb)
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs KILN_MODELS and KILN_DATA"]
async fn a_full_queue_answers_429_and_a_slow_request_503() {
    let dir = models_dir();
    let mut config = kiln_serve::ServeConfig::new(dir.path());
    config.port = 0;
    config.batching.queue = 2;
    config.batching.max_batch = 4;
    config
        .embeddings
        .push(kiln_serve::config::ModelEntry::new("minilm", "minilm"));
    let (server, url) = serve(config).await;
    let client = reqwest::Client::new();
    let texts: Vec<String> = (0..32)
        .map(|i| format!("sentence number {i} about a long and winding road through the hills"))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let (client, url, texts) = (client.clone(), url.clone(), texts.clone());
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{url}/v1/embeddings"))
                .json(&json!({"input": texts}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(body["error"]["type"], "rate_limit_error");
                refused += 1;
            }
            other => panic!("status {other}: {body}"),
        }
    }
    assert!(ok >= 1 && refused >= 1, "{ok} answered, {refused} refused");
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(&format!(
        "kiln_rejected_total{{model=\"minilm\"}} {refused}"
    )));
    server.shutdown().await.unwrap();

    // A timeout shorter than one model call.
    let mut config = kiln_serve::ServeConfig::new(dir.path());
    config.port = 0;
    config.limits.timeout_secs = 0.005;
    config
        .embeddings
        .push(kiln_serve::config::ModelEntry::new("minilm", "minilm"));
    let (server, url) = serve(config).await;
    let (s, b) = post(
        &client,
        &format!("{url}/v1/embeddings"),
        json!({"input": texts}),
    )
    .await;
    is_error(s, &b, 503, "longer than");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KILN_MODELS and KILN_DATA"]
async fn search_serves_a_saved_index_too() {
    let dir = models_dir();
    let device = kiln_core::backend::device("cpu").unwrap();
    let encoder = SentenceEncoder::load(minilm(), &device).unwrap();
    let vectors = encoder.encode(&CORPUS, 8).unwrap();
    let mut index = kiln_nlp::SemanticIndex::new(encoder.dim());
    index.add(&CORPUS, &vectors).unwrap();
    index.save(dir.path().join("corpus.kidx")).unwrap();

    let mut config = kiln_serve::ServeConfig::new(dir.path());
    config.port = 0;
    config
        .embeddings
        .push(kiln_serve::config::ModelEntry::new("minilm", "minilm"));
    config.search = Some(kiln_serve::config::SearchEntry {
        embedder: "minilm".into(),
        corpus: None,
        index: Some("corpus.kidx".into()),
    });
    let (server, url) = serve(config).await;
    let client = reqwest::Client::new();
    let (status, body) = post(
        &client,
        &format!("{url}/v1/search"),
        json!({"query": "Which mountain is the tallest?", "k": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["corpus_size"], json!(CORPUS.len()));
    assert_eq!(body["results"][0][0]["text"], CORPUS[5]);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KILN_MODELS and KILN_DATA"]
async fn a_gguf_file_serves_chat_as_the_model_answers() {
    // The shared SmolLM2 Q4_1 file as a generator: its own tokenizer and chat template.
    let dir = tempfile::tempdir().unwrap();
    let file = env_dirs()
        .0
        .join("smollm2-135m-instruct-gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    std::os::unix::fs::symlink(&file, dir.path().join("smollm2.gguf")).unwrap();
    let mut config = kiln_serve::ServeConfig::new(dir.path());
    config.port = 0;
    config.generators.push(kiln_serve::config::ModelEntry::new(
        "smollm2",
        "smollm2.gguf",
    ));
    // The same file with llama.cpp's arithmetic (`activations = "int8"`).
    let mut int8 = kiln_serve::config::ModelEntry::new("smollm2-int8", "smollm2.gguf");
    int8.activations = Some(kiln_serve::config::ActivationsSetting::Int8);
    config.generators.push(int8);
    let (server, url) = serve(config).await;
    let question = "What is the capital of France?";
    let device = kiln_core::backend::device("cpu").unwrap();
    let mut answers = Vec::new();
    for (name, activations) in [
        ("smollm2", Activations::F32),
        ("smollm2-int8", Activations::Int8),
    ] {
        let (status, body) = post(
            &reqwest::Client::new(),
            &format!("{url}/v1/chat/completions"),
            json!({"model": name, "max_tokens": 24,
                   "messages": [{"role": "user", "content": question}]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let model = TextGenerator::load(&file, &device, Engine::Auto, Precision::F32)
            .unwrap()
            .with_activations(activations);
        let prompt = model
            .encode_chat(&[ChatMessage::new("user", question)])
            .unwrap();
        let direct = model
            .generate(&prompt, &GenerationConfig::greedy(24), |_| true)
            .unwrap();
        let mut ids = direct.ids.clone();
        ids.retain(|id| !model.eos_ids().contains(id));
        let text = model.decode(&ids).unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            json!(text),
            "{name}"
        );
        assert_eq!(body["usage"]["prompt_tokens"], json!(prompt.len()));
        answers.push(text);
    }
    assert!(answers[0].contains("Paris"), "{}", answers[0]);
    // The 8-bit arithmetic answers otherwise on this small model (as llama.cpp does): the
    // setting reached the model.
    assert_ne!(answers[0], answers[1]);
    server.shutdown().await.unwrap();
}

/// `/v1/search` with the multilingual EmbeddingGemma-300M (its folder named by
/// `KILN_EMBEDDINGGEMMA`; skipped without it): a corpus of English passages embedded with the
/// model's document prompt at start, Chinese queries embedded with its query prompt, each
/// finding its English passage first; and the reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KILN_EMBEDDINGGEMMA"]
async fn a_chinese_query_finds_the_english_passage() {
    let Some(model) = std::env::var_os("KILN_EMBEDDINGGEMMA") else {
        eprintln!("skipped: KILN_EMBEDDINGGEMMA does not name the EmbeddingGemma folder");
        return;
    };
    let pairs = [
        (
            "长江是中国最长的河流。",
            "The Yangtze is the longest river in China.",
        ),
        ("我喜欢养猫。", "I like keeping cats."),
        ("我喜欢养狗。", "I like keeping dogs."),
        (
            "电池不耐用，半天就没电了。",
            "The battery does not last; it is empty after half a day.",
        ),
        (
            "这家酒店的房间很干净。",
            "The rooms in this hotel are very clean.",
        ),
    ];
    for (corpus_side, query_side) in [(1usize, 0usize), (0, 1)] {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&model, dir.path().join("gemma")).unwrap();
        let side = |p: &(&'static str, &'static str), i: usize| if i == 0 { p.0 } else { p.1 };
        let corpus: Vec<&str> = pairs.iter().map(|p| side(p, corpus_side)).collect();
        std::fs::write(dir.path().join("corpus.txt"), corpus.join("\n")).unwrap();
        let mut config = kiln_serve::ServeConfig::new(dir.path());
        config.port = 0;
        config
            .embeddings
            .push(kiln_serve::config::ModelEntry::new("gemma", "gemma"));
        config.search = Some(kiln_serve::config::SearchEntry {
            embedder: "gemma".into(),
            corpus: Some("corpus.txt".into()),
            index: None,
        });
        let (server, url) = serve(config).await;
        let client = reqwest::Client::new();
        let queries: Vec<&str> = pairs.iter().map(|p| side(p, query_side)).collect();
        let (status, body) = post(
            &client,
            &format!("{url}/v1/search"),
            json!({"query": queries, "k": 1}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for (i, q) in queries.iter().enumerate() {
            assert_eq!(
                body["results"][i][0]["text"], corpus[i],
                "query {q}: {body}"
            );
        }
        server.shutdown().await.unwrap();
    }
}
