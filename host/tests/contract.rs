//! One contract: the WIT the host links against (`wit/plugin.wit`) and the
//! copies the published SDKs carry (`sdk/wit/plugin.wit` for Rust,
//! `sdk-py/src/optech_sdk/wit/plugin.wit` for Python, `sdk-js/wit/plugin.wit`
//! for TypeScript/JavaScript) must never drift apart; nor the `wasi:keyvalue`
//! package it imports (`wit/deps/keyvalue/keyvalue.wit`).

use std::path::Path;

#[test]
fn the_sdk_carries_the_same_wit_as_the_host() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let host = std::fs::read_to_string(root.join("wit/plugin.wit")).unwrap();
    let sdk = std::fs::read_to_string(root.join("sdk/wit/plugin.wit")).unwrap();
    assert!(
        host == sdk,
        "sdk/wit/plugin.wit differs from wit/plugin.wit: copy the contract over (cp wit/plugin.wit sdk/wit/)"
    );
}

#[test]
fn the_npm_sdk_carries_the_same_wit_as_the_host() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let host = std::fs::read_to_string(root.join("wit/plugin.wit")).unwrap();
    let sdk = std::fs::read_to_string(root.join("sdk-js/wit/plugin.wit")).unwrap();
    assert!(
        host == sdk,
        "sdk-js/wit/plugin.wit differs from wit/plugin.wit: copy the contract over (cp wit/plugin.wit sdk-js/wit/)"
    );
    // The `js` world is the host's `plugin` world plus imports the host links for every plugin.
    let js = std::fs::read_to_string(root.join("sdk-js/wit/js.wit")).unwrap();
    assert!(js.contains("include plugin;"), "{js}");
}

#[test]
fn the_python_sdk_carries_the_same_wit_as_the_host() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let host = std::fs::read_to_string(root.join("wit/plugin.wit")).unwrap();
    let sdk = std::fs::read_to_string(root.join("sdk-py/src/optech_sdk/wit/plugin.wit")).unwrap();
    assert!(
        host == sdk,
        "sdk-py/src/optech_sdk/wit/plugin.wit differs from wit/plugin.wit: copy the contract over"
    );
}

#[test]
fn every_sdk_carries_the_same_keyvalue_package_as_the_host() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let host = std::fs::read_to_string(root.join("wit/deps/keyvalue/keyvalue.wit")).unwrap();
    for copy in [
        "sdk/wit/deps/keyvalue/keyvalue.wit",
        "sdk-js/wit/deps/keyvalue.wit",
        "sdk-py/src/optech_sdk/wit/deps/keyvalue/keyvalue.wit",
    ] {
        let sdk = std::fs::read_to_string(root.join(copy)).unwrap();
        assert!(
            host == sdk,
            "{copy} differs from wit/deps/keyvalue/keyvalue.wit: copy it over"
        );
    }
}
