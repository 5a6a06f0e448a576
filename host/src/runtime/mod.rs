//! Runs plugins: one wasmtime engine, components compiled once at load, and a
//! fresh sandboxed instance per call (by default).
//!
//! Invariants:
//! - every call gets a new `Store` and instance, so no state crosses requests,
//!   unless the plugin sets `requests_per_instance`; then only an instance whose
//!   last call returned cleanly serves again, and never more than N calls;
//! - a plugin reaches only what `host_api` gives it: its config, the log,
//!   clocks and random (no files, env, sockets or stdin), `wasi:http` within
//!   its allowlist, and `keyvalue`: the buckets its `stores` grant, each call
//!   bounded by the request's deadline;
//! - time is bounded by epoch interruption (the call yields to tokio every
//!   tick and traps at its deadline), memory by a `ResourceLimiter`, and the
//!   number of live instances by the pooling allocator.

mod cache;
mod engine;
mod host_api;
mod info;
mod keyvalue;
mod output;
mod plugin;

pub use engine::{Runtime, RuntimeOptions, WarmSlots};
pub use plugin::{LoadError, WasmHandler};

/// Host-side bindings of `wit/plugin.wit`.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "optech:plugin/plugin",
        // The store's calls wait on a database; the host's own do not.
        imports: {
            "wasi:keyvalue": async,
            "optech:plugin/keyvalue-extras": async,
        },
        exports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": super::keyvalue::BucketHandle,
            "wasi:keyvalue/atomics.cas": super::keyvalue::CasHandle,
        },
    });
}
