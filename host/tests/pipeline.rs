//! The HTTP pipeline with a native handler in place of a plugin: proves that
//! nothing reaches a handler unless it is signed, well-formed and routed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use optech_host::config::Config;
use optech_host::delivery::{Deliverer, RetryPolicy};
use optech_host::dispatch::{Call, Handler, HandlerFuture};
use optech_host::jobs::Jobs;
use optech_host::router::{Plugin, Router, Routes};
use optech_host::server::{self, AppState};
use optech_host::signature::Signer;

struct Counting(AtomicUsize);

impl Handler for Counting {
    fn call(&self, call: Call) -> HandlerFuture<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(call.inputs) })
    }
}

#[tokio::test]
async fn no_handler_runs_for_an_unsigned_or_malformed_request() {
    let config = Config::parse("[keys]\necho = \"native\"\n", Path::new("optech.toml")).unwrap();
    let counter = Arc::new(Counting(AtomicUsize::new(0)));
    let plugin = Arc::new(Plugin::new(
        config.plugins["native"].clone(),
        counter.clone(),
        "native".into(),
    ));
    let plugins = BTreeMap::from([("native".to_string(), plugin)]);
    let router = Arc::new(Router::new(Routes::new(&config.keys, &plugins)));
    let signer = Signer::new(b"secret", None);
    let data = tempfile::tempdir().unwrap();
    let deliverer = Deliverer::new(signer.clone(), "id", RetryPolicy::default()).unwrap();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    let jobs = Arc::new(Jobs::new(
        data.path().to_path_buf(),
        deliverer,
        router.clone(),
        in_flight.clone(),
        Duration::from_secs(600),
    ));
    let runtime = optech_host::runtime::Runtime::new(&Default::default()).unwrap();
    let reloader = optech_host::reload::Reloader::new(
        config.clone(),
        plugins.clone(),
        runtime,
        router.clone(),
    );
    let state = Arc::new(AppState {
        router,
        signer: signer.clone(),
        max_body: 1024,
        in_flight,
        jobs,
        reloader,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, server::app(state)).await });

    let client = reqwest::Client::new();
    let body = r#"{"key":"echo","inputs":{"a":"1"}}"#;
    let send = |signature: Option<String>, content_type: &str, body: &str| {
        let mut request = client
            .post(&url)
            .header("content-type", content_type)
            .body(body.to_string());
        if let Some(s) = signature {
            request = request.header("x-optech-signature", s);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };

    assert_eq!(send(None, "application/json", body).await, 401);
    assert_eq!(
        send(Some("0".repeat(64)), "application/json", body).await,
        401
    );
    assert_eq!(
        send(Some(signer.sign(body.as_bytes())), "text/plain", body).await,
        415
    );
    let other = r#"{"key":"other","inputs":{}}"#;
    assert_eq!(
        send(
            Some(signer.sign(other.as_bytes())),
            "application/json",
            other
        )
        .await,
        404
    );
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        0,
        "a handler ran for a refused request"
    );

    assert_eq!(
        send(Some(signer.sign(body.as_bytes())), "application/json", body).await,
        200
    );
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
}
