//! The front door up to dispatch: signature check, content type, JSON envelope
//! and routing, on arbitrary headers and bodies. Half the inputs carry a valid
//! signature so the fuzzer gets past the HMAC gate into the JSON parser.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use optech_host::config::Config;
use optech_host::dispatch::{Call, Handler, HandlerFuture, Plugin};
use optech_host::router::{Router, Routes};
use optech_host::server::check_request;
use optech_host::signature::{SIGNATURE_HEADER, Signer};

struct Never;

impl Handler for Never {
    fn call(&self, _: Call) -> HandlerFuture<'_> {
        unreachable!("check_request never runs a handler")
    }
}

fn fixture() -> &'static (Router, Signer) {
    static FIXTURE: OnceLock<(Router, Signer)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::parse("[keys]\necho = \"p\"\n\"ünï\" = \"p\"\n", Path::new("optech.toml")).unwrap();
        let plugin = Arc::new(Plugin::new(config.plugins["p"].clone(), Arc::new(Never), "0".into(), &Default::default()));
        let plugins = BTreeMap::from([("p".to_string(), plugin)]);
        (Router::new(Routes::new(&config.keys, &plugins)), Signer::new(b"fuzz", Some(b"old")))
    })
}

fuzz_target!(|data: &[u8]| {
    let (router, signer) = fixture();
    let Some((&flags, rest)) = data.split_first() else { return };
    // The first line of the rest is a content type; the remainder is the body.
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(0);
    let (content_type, body) = rest.split_at(split);
    let body = body.strip_prefix(b"\n").unwrap_or(body);

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(content_type) {
        headers.insert("content-type", value);
    }
    let signature = match flags % 4 {
        0 => Some(signer.sign(body)),
        1 => Some(format!("sha256={}", signer.sign(body).to_uppercase())),
        2 => String::from_utf8(content_type.to_vec()).ok(),
        _ => None,
    };
    if let Some(value) = signature.and_then(|s| HeaderValue::from_str(&s).ok()) {
        headers.insert(SIGNATURE_HEADER, value);
    }
    let _ = check_request(router, signer, &headers, body);
});
