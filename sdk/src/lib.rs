//! Write OpTech data-request handlers as WebAssembly components.
//!
//! OpTech POSTs a signed data request `{link, key, inputs}` to a host you run;
//! the `optech` host checks it and hands it to the plugin its `key` maps to. A
//! plugin is a crate with one handler, a plain function from a [`Request`] to
//! [`Data`]; one line of [`export!`] turns the crate into a component the host
//! can run:
//!
//! ```no_run
//! use optech_sdk::{Data, Error, Request, config};
//!
//! fn handle(req: Request) -> Result<Data, Error> {
//!     let name = req.inputs().require("name")?;          // 400 invalid_input if absent
//!     let greeting = config("greeting").unwrap_or_else(|| "hello".into());
//!     Ok(Data::new().with("message", format!("{greeting}, {name}!")))
//! }
//!
//! optech_sdk::export!(handle);
//! ```
//!
//! The crate needs `crate-type = ["cdylib"]` and builds with
//! `cargo build --release --target wasm32-wasip2` (or `cargo component build
//! --release`, or `optech build`). `optech new NAME` writes such a crate, with a
//! unit test of its handler that runs with a plain `cargo test`.
//!
//! What a handler has:
//!
//! - [`Request`]: the request's `key` and [`Inputs`] (strings, in request order);
//! - [`Data`]: the answer's `data`, built field by field;
//! - [`Error`]: `invalid_input` (the caller's mistake, answered 400) or `failed`
//!   (the handler's own failure, answered 500);
//! - [`config`]: values from the plugin's `[plugins.<name>.config]`, secrets
//!   included;
//! - [`log`]: lines in the host's log, tagged with the plugin and the request;
//! - [`http`]: requests to the plugin's own back ends, where its
//!   `allowed_hosts` lets it go;
//! - [`store`]: a key-value store that outlives the instance (a cached token,
//!   a counter), in the buckets its `stores` grant.
//!
//! The contract with the host is the WIT world in this crate's `wit/plugin.wit`
//! (`optech:plugin@0.1.0`); any language that builds a component exporting its
//! `handle` works, this crate only saves Rust authors the bindings.
//!
//! By default the host runs every request in a fresh instance, so statics start
//! over each time. When the host's config sets `requests_per_instance = N` for
//! the plugin, one instance serves up to N requests in turn and statics (a parsed
//! table, a cache) carry over between them; write handlers that are correct
//! either way.

#![warn(missing_docs)]

// Lets generated code name this crate the same way from inside and outside it.
extern crate self as optech_sdk;

mod data;
mod error;
pub mod http;
mod inputs;
pub mod log;
pub mod store;

pub use data::Data;
pub use error::Error;
pub use inputs::Inputs;

/// Generated bindings for the `optech:plugin` world. Not part of the stable API:
/// use [`export!`] and the types at the crate root instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "optech:plugin/plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "optech_sdk::bindings",
        runtime_path: "optech_sdk::bindings::__rt",
        // The world imports `wasi:keyvalue`, which has no bindings crate to reuse.
        generate_all,
    });

    #[doc(hidden)]
    pub use wit_bindgen::rt as __rt;
}

/// One data request as the handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    key: String,
    inputs: Inputs,
}

impl Request {
    /// Builds a request by hand, for unit tests of a handler.
    pub fn new(key: impl Into<String>, inputs: Inputs) -> Self {
        Self {
            key: key.into(),
            inputs,
        }
    }

    /// The request's `key`: one plugin may be mapped to several keys.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request's inputs; values that were not JSON strings arrive as their JSON text.
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// Takes the inputs out of the request, e.g. to turn them into [`Data`].
    pub fn into_inputs(self) -> Inputs {
        self.inputs
    }
}

/// Reads a value from this plugin's `[plugins.<name>.config]` table in `optech.toml`.
///
/// Config is read from the host on each call; the host hands each instance the
/// config that was live when its request arrived. A value written
/// `{ env = "NAME" }` in the config arrives resolved: the secret itself. In a
/// handler's unit tests (outside the host), values come from
/// [`testing::set_config`].
pub fn config(name: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return bindings::optech::plugin::host::config(name);
    #[cfg(not(target_arch = "wasm32"))]
    return testing::config(name);
}

/// Helpers for a handler's unit tests, which run on the build machine
/// (`cargo test`), outside the host.
pub mod testing {
    #[cfg(not(target_arch = "wasm32"))]
    use std::cell::RefCell;
    #[cfg(not(target_arch = "wasm32"))]
    use std::collections::HashMap;

    #[cfg(not(target_arch = "wasm32"))]
    thread_local! {
        static CONFIG: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    }

    /// Sets what [`config`](crate::config) returns for `name` in this test
    /// thread. Inside the host it has no effect: the host's config rules.
    pub fn set_config(name: &str, value: &str) {
        #[cfg(not(target_arch = "wasm32"))]
        CONFIG.with(|c| c.borrow_mut().insert(name.to_string(), value.to_string()));
        #[cfg(target_arch = "wasm32")]
        let _ = (name, value);
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn config(name: &str) -> Option<String> {
        CONFIG.with(|c| c.borrow().get(name).cloned())
    }

    /// Empties every bucket of [`store`](crate::store) in this test thread
    /// (each thread starts with none), and sets its clock back. Outside the
    /// host every bucket opens, as if granted. Inside the host it has no effect.
    pub fn clear_store() {
        #[cfg(not(target_arch = "wasm32"))]
        crate::store::clear();
    }

    /// Moves this test thread's store clock on by `by`, so keys set with a
    /// time to live expire without waiting. Inside the host it has no effect.
    pub fn advance_store_clock(by: std::time::Duration) {
        #[cfg(not(target_arch = "wasm32"))]
        crate::store::advance(by);
        #[cfg(target_arch = "wasm32")]
        let _ = by;
    }
}

/// Exports a handler function `fn(Request) -> Result<Data, Error>` as the plugin's `handle`.
///
/// Use it once, at the top level of the plugin crate.
#[macro_export]
macro_rules! export {
    ($handler:path) => {
        const _: () = {
            struct OptechHandler;

            impl $crate::bindings::Guest for OptechHandler {
                fn handle(
                    key: ::std::string::String,
                    inputs: $crate::bindings::optech::plugin::types::Fields,
                ) -> ::std::result::Result<
                    $crate::bindings::optech::plugin::types::Fields,
                    $crate::bindings::optech::plugin::types::Error,
                > {
                    let handler: fn(
                        $crate::Request,
                    )
                        -> ::std::result::Result<$crate::Data, $crate::Error> = $handler;
                    $crate::__private::call(handler, key, inputs)
                }
            }

    $crate::bindings::__export_plugin!(OptechHandler with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use crate::bindings::optech::plugin::types::{Error as WitError, Fields};
    use crate::{Data, Error, Inputs, Request};

    /// The glue between the WIT signature and the handler's Rust signature.
    pub fn call(
        handler: fn(Request) -> Result<Data, Error>,
        key: String,
        inputs: Fields,
    ) -> Result<Fields, WitError> {
        let request = Request::new(key, Inputs::from_pairs(inputs));
        handler(request)
            .map(Data::into_pairs)
            .map_err(Error::into_wit)
    }
}
