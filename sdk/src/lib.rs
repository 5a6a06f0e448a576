//! Write OpTech data-request handlers as WebAssembly components.
//!
//! A handler is a plain function from a [`Request`] to [`Data`]; one line of
//! [`export!`] turns the crate into a component the `optech` host can run:
//!
//! ```ignore
//! use optech_sdk::{Data, Error, Request};
//!
//! fn handle(req: Request) -> Result<Data, Error> {
//!     let name = req.inputs().require("name")?;
//!     Ok(Data::new().with("greeting", format!("hello, {name}")))
//! }
//!
//! optech_sdk::export!(handle);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (or
//! `cargo component build --release`) with `crate-type = ["cdylib"]`.
//! The WIT contract is `wit/plugin.wit` at the root of the optech repository.
//!
//! By default the host runs every request in a fresh instance, so statics start
//! over each time. When the host's config sets `requests_per_instance = N` for
//! the plugin, one instance serves up to N requests in turn and statics (a parsed
//! table, a cache) carry over between them; write handlers that are correct
//! either way.

// Lets generated code name this crate the same way from inside and outside it.
extern crate self as optech_sdk;

mod data;
mod error;
pub mod http;
mod inputs;
pub mod log;

pub use data::Data;
pub use error::Error;
pub use inputs::Inputs;

/// Generated bindings for the `optech:plugin` world. Not part of the stable API:
/// use [`export!`] and the types at the crate root instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "optech:plugin/plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "optech_sdk::bindings",
        runtime_path: "optech_sdk::bindings::__rt",
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
/// config that was live when its request arrived.
pub fn config(name: &str) -> Option<String> {
    bindings::optech::plugin::host::config(name)
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
