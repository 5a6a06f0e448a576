//! The HTTP pipeline with a native handler in place of a plugin: proves that
//! nothing reaches a handler unless it is signed, well-formed and routed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use optech_host::config::Config;
use optech_host::dispatch::{Call, Handler, HandlerFuture, Plugin};
use optech_host::runtime::{Runtime, RuntimeOptions};
use optech_host::signature::Signer;
use optech_host::{Host, Identity};

struct Counting(AtomicUsize);

impl Handler for Counting {
    fn call(&self, call: Call) -> HandlerFuture<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(call.inputs) })
    }
}

#[tokio::test]
async fn no_handler_runs_for_an_unsigned_or_malformed_request() {
    let data = tempfile::tempdir().unwrap();
    let config = Config::parse(
        &format!(
            "[server]\ndata_dir = {:?}\nwatch = false\nadmin_listen = \"\"\n[keys]\necho = \"native\"\n",
            data.path().display().to_string()
        ),
        Path::new("optech.toml"),
    )
    .unwrap();
    let counter = Arc::new(Counting(AtomicUsize::new(0)));
    let runtime = Runtime::new(&RuntimeOptions {
        max_instances: 1,
        max_idle: 0,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let plugin = Arc::new(Plugin::new(
        config.plugins["native"].clone(),
        counter.clone(),
        "native".into(),
        runtime.metrics(),
    ));
    let plugins = BTreeMap::from([("native".to_string(), plugin)]);
    let signer = Signer::new(b"secret", None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = Host::start_with_plugins(
        &config,
        Identity::new(signer.clone(), "id"),
        listener,
        runtime,
        plugins,
    )
    .await
    .unwrap();
    let url = format!("http://{}/", host.addr());

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
