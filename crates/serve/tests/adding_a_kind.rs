//! The "Adding a served model kind" recipe of docs/architecture.md, done once from outside the
//! crate with a toy kind (`Shout`: a suffix read from the models folder, a route that upper-cases
//! the text it is given): `impl Kind`, `AppState::load_with(.., &[KindLoader::of::<Shout>()])`
//! and `start_with(state, routes)`. Its route is served behind the built-in layers (the
//! token, JSON errors), beside the built-in routes.

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use kiln_serve::{
    ApiError, AppState, Kind, KindLoader, LoadContext, Metrics, ServeConfig, ServeError, Shared,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The toy kind: what its route needs.
struct Shout {
    suffix: String,
}

impl Kind for Shout {
    type Loaded = Shout;

    fn load(ctx: &LoadContext<'_>) -> Result<Shout, ServeError> {
        let path = ctx.config.resolve("shout.txt".as_ref())?;
        let suffix = std::fs::read_to_string(&path).map_err(|e| ServeError::Model {
            name: "shout".into(),
            reason: e.to_string(),
        })?;
        Ok(Shout {
            suffix: suffix.trim().to_string(),
        })
    }
}

/// `POST /v1/shout {"text": ..}`: the text upper-cased, with the loaded suffix.
async fn shout(
    State(state): State<Shared>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let model = state
        .extensions
        .get::<Shout>()
        .ok_or_else(|| ApiError::internal("the shout kind is not loaded"))?;
    let text = body["text"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("`text` must be a string"))?;
    Ok(Json(
        json!({"text": format!("{}{}", text.to_uppercase(), model.suffix)}),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_added_by_a_program_loads_and_serves_behind_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::new(dir.path());
    config.port = 0;
    config.token = Some("secret".into());

    // Its loader's error stops the server, as a built-in model's does.
    let c = config.clone();
    let err = tokio::task::spawn_blocking(move || {
        AppState::load_with(c, Metrics::new(), &[KindLoader::of::<Shout>()])
    })
    .await
    .unwrap()
    .err()
    .expect("no shout.txt: the load fails")
    .to_string();
    assert!(err.contains("shout.txt"), "{err}");

    std::fs::write(dir.path().join("shout.txt"), "!\n").unwrap();
    let state = tokio::task::spawn_blocking(move || {
        AppState::load_with(config, Metrics::new(), &[KindLoader::of::<Shout>()])
    })
    .await
    .unwrap()
    .unwrap();
    let routes = axum::Router::new().route("/v1/shout", post(shout));
    let server = kiln_serve::start_with(state, routes).await.unwrap();
    let url = format!("http://{}", server.addr());
    let client = reqwest::Client::new();

    let answer = client
        .post(format!("{url}/v1/shout"))
        .bearer_auth("secret")
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body, json!({"text": "HELLO!"}));

    // The token guards it as it guards the built-in API; bad input is a JSON 4xx.
    let refused = client
        .post(format!("{url}/v1/shout"))
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let bad = client
        .post(format!("{url}/v1/shout"))
        .bearer_auth("secret")
        .json(&json!({"text": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let error: Value = bad.json().await.unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("text"),
        "{error}"
    );

    // The built-in routes are still there.
    let health = client.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.shutdown().await.unwrap();
}
