//! The page in a real browser: headless Chromium driven through WebDriver (chromedriver,
//! Debian's `chromium` and `chromium-driver`, which `.ci/run` installs) loads `/`, types a
//! query, reads the results from the page, asks for a user's recommendations, classifies an
//! uploaded picture and chats with the tiny Llama (the answer streamed into the page equal to
//! the API's greedy answer). A screenshot is saved as `target/kiln-serve-page.png` (needs
//! `KILN_MODELS`, `KILN_DATA` and chromedriver on the PATH or in `CHROMEDRIVER`).

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use common::*;

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let exe = std::env::var_os("CHROMEDRIVER")
        .map_or_else(|| PathBuf::from("chromedriver"), PathBuf::from);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&exe)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (install Debian's chromium and chromium-driver, or set \
                 CHROMEDRIVER)",
                exe.display()
            )
        });
    let url = format!("http://127.0.0.1:{port}");
    // Ready when it answers /status.
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, url }
}

/// Types `text` into the element with id `id`.
async fn type_into(browser: &fantoccini::Client, id: &str, text: &str) {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Clicks the element with id `id`.
async fn click(browser: &fantoccini::Client, id: &str) {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The text of the element with id `id`.
async fn text_of(browser: &fantoccini::Client, id: &str) -> String {
    browser
        .find(Locator::Id(id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The items of list `#id` once it has one (waiting up to 30 s).
async fn list_items(browser: &fantoccini::Client, id: &str) -> Vec<fantoccini::elements::Element> {
    let css = format!("#{id} li");
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(&css))
        .await
        .unwrap();
    browser.find_all(Locator::Css(&css)).await.unwrap()
}

fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("kiln-serve-page.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KILN_MODELS, KILN_DATA and chromedriver"]
async fn the_page_searches_recommends_classifies_and_chats_in_chromium() {
    let dir = models_dir();
    let (server, url) = serve(full_config(dir.path())).await;
    let driver = chromedriver();

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1000,1100"]}),
    );
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session in headless Chromium");
    let wait = Duration::from_secs(30);

    browser.goto(&url).await.unwrap();
    // The page lists the loaded models once /v1/models answers.
    let started = Instant::now();
    loop {
        let status = text_of(&browser, "status").await;
        if status.contains("minilm") {
            break;
        }
        assert!(
            started.elapsed() < wait,
            "the page never listed the models: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Search: type a question, press the button, read the list.
    type_into(&browser, "search-query", "What is the capital of France?").await;
    click(&browser, "search-button").await;
    let results = list_items(&browser, "search-results").await;
    let text = results[0].text().await.unwrap();
    assert!(text.starts_with(CORPUS[0]), "first result {text:?}");
    assert_eq!(results.len(), 5);

    // Recommendations for MovieLens user 196.
    type_into(&browser, "recommend-user", "196").await;
    click(&browser, "recommend-button").await;
    let items = list_items(&browser, "recommend-results").await;
    assert_eq!(items.len(), 10);
    assert_eq!(
        text_of(&browser, "recommend-source").await,
        "from the model"
    );

    // An uploaded picture gets the five most probable digits.
    let picture = dir.path().join("digit.png");
    std::fs::write(&picture, png()).unwrap();
    type_into(&browser, "classify-file", picture.to_str().unwrap()).await;
    click(&browser, "classify-button").await;
    let labels = list_items(&browser, "classify-results").await;
    assert_eq!(labels.len(), 5);
    assert_eq!(
        text_of(&browser, "error").await,
        "",
        "the page shows an error"
    );

    // Chat: a message in the box streams the model's answer into the log; it is the greedy
    // answer the API gives to the same conversation.
    type_into(&browser, "chat-input", "Hello there").await;
    click(&browser, "chat-button").await;
    let done = Locator::Css(".message.assistant[data-done='true']");
    browser
        .wait()
        .at_most(wait)
        .for_element(done)
        .await
        .expect("the answer finished streaming");
    let shown = browser.find(done).await.unwrap().text().await.unwrap();
    let api: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(
            &json!({"model": "chat-tiny", "messages": [{"role": "user", "content": "Hello there"}],
                      "max_tokens": 128, "temperature": 0}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let want = api["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!want.trim().is_empty(), "the model answered nothing");
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        squash(&shown),
        squash(want),
        "the page's answer and the API's"
    );
    assert_eq!(
        text_of(&browser, "error").await,
        "",
        "the page shows an error"
    );

    let png = browser.screenshot().await.unwrap();
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    eprintln!("screenshot: {}", path.display());

    browser.close().await.unwrap();
    drop(driver);
    server.shutdown().await.unwrap();
}
