//! Contender (d): a fresh instance of `echo.wasm` plus one call of `handle`,
//! through the same `WasmHandler` the host uses per request; and, for
//! comparison, one call on a reused instance (`requests_per_instance`).

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use optech_host::config::Config;
use optech_host::dispatch::{Call, Handler};
use optech_host::loader::content_hash;
use optech_host::runtime::{Runtime, RuntimeOptions, WasmHandler};

fn instantiate_and_call(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    optech_host::build::build_all(
        &root.join("plugins"),
        &optech_host::build::BuildDirs::with_target(root.join("target/plugins")),
    )
    .expect("building the plugins");
    let config =
        Config::parse("[keys]\necho = \"echo\"\n", &root.join("optech.toml")).expect("config");
    let settings = &config.plugins["echo"];
    let bytes = std::fs::read(settings.source.file().expect("a file source")).expect("echo.wasm");
    let runtime = Runtime::new(&RuntimeOptions::default()).expect("runtime");
    let handler =
        WasmHandler::load(&runtime, settings, &bytes, &content_hash(&bytes)).expect("load");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let inputs: Vec<(String, String)> = vec![
        ("key1".into(), "value1".into()),
        ("key2".into(), "value2".into()),
    ];

    let mut reusing = settings.clone();
    reusing.requests_per_instance = u32::MAX;
    let reused =
        WasmHandler::load(&runtime, &reusing, &bytes, &content_hash(&bytes)).expect("load");

    for (name, handler) in [
        ("instantiate + call echo.wasm", &handler),
        ("call echo.wasm on a reused instance", &reused),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let call = Call {
                    request_id: optech_host::request_id::RequestId::generate(),
                    key: "echo".into(),
                    inputs: inputs.clone(),
                    deadline: std::time::Instant::now() + std::time::Duration::from_secs(10),
                    trace: None,
                };
                tokio.block_on(handler.call(call)).expect("echo answers")
            })
        });
    }
}

criterion_group!(benches, instantiate_and_call);
criterion_main!(benches);
