use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::Instrument as _;
use wasmtime::{Store, UpdateDeadline};

use super::Runtime;
use super::bindings::{Plugin as PluginWorld, PluginPre, optech::plugin::types::Error as WitError};
use super::host_api::PluginState;
use super::info::{PluginInfo, StoreMeter};
use prometheus_client::metrics::histogram::Histogram;

use crate::config::PluginConfig;
use crate::dispatch::{Call, Handler, HandlerError, HandlerFuture};
use crate::metrics::Metrics;
use crate::protocol::Fields;
use crate::recent::Ticket;
use crate::redact::Redactor;
use crate::telemetry;

/// Why a component cannot serve as a plugin.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error(
        "not a WebAssembly component ({0}); build it with `optech build` or `cargo build --target wasm32-wasip2`"
    )]
    NotAComponent(&'static str),
    #[error("does not compile: {0}")]
    Compile(String),
    #[error("imports something the host does not provide: {0}")]
    Imports(String),
    #[error("does not export `handle` as wit/plugin.wit defines it: {0}")]
    Exports(String),
}

/// A compiled plugin, ready to instantiate once per call (or, with
/// `requests_per_instance` above 1, to reuse an instance a bounded number of times).
pub struct WasmHandler {
    runtime: Runtime,
    /// Time to make a fresh instance of this plugin.
    instantiation: Histogram,
    pre: PluginPre<PluginState>,
    info: Arc<PluginInfo>,
    /// Only to word a timeout: the deadline itself comes with each call.
    timeout: Duration,
    requests_per_instance: u32,
    /// Instances that finished a call cleanly and may serve another.
    idle: Mutex<Vec<Instance>>,
}

/// A live instance and its store.
struct Instance {
    store: Store<PluginState>,
    plugin: PluginWorld,
    served: u32,
}

/// Raised from the epoch callback when a call passes its deadline.
#[derive(Debug, Error)]
#[error("deadline exceeded")]
struct DeadlineExceeded;

impl WasmHandler {
    /// Compiles `bytes` and checks them against the WIT world. CPU-heavy: call it
    /// off the async workers (`spawn_blocking`). `sha256` is the bytes' content
    /// hash: the same bytes are compiled once per process, whatever the settings.
    pub fn load(
        runtime: &Runtime,
        settings: &PluginConfig,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<Self, LoadError> {
        check_component_header(bytes)?;
        let component = runtime
            .compile(bytes, sha256)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let instance_pre = runtime
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports(format!("{e:#}")))?;
        let pre = PluginPre::new(instance_pre).map_err(|e| LoadError::Exports(format!("{e:#}")))?;
        let egress = runtime
            .outbound
            .for_plugin(&settings.name, &settings.egress);
        let instantiation = runtime
            .metrics()
            .instantiation_seconds
            .get_or_create_owned(&Metrics::plugin(&settings.name));
        Ok(Self {
            runtime: runtime.clone(),
            instantiation,
            pre,
            info: Arc::new(PluginInfo {
                name: settings.name.as_str().into(),
                config: settings.config.clone(),
                memory: settings.memory,
                egress,
                redactor: Redactor::for_config(&settings.config),
                recent: runtime.metrics().recent.clone(),
                grant: runtime
                    .stores
                    .grant(&settings.name, settings.stores.iter().cloned()),
                store_meter: StoreMeter::new(runtime.metrics(), &settings.name),
            }),
            timeout: settings.timeout,
            requests_per_instance: settings.requests_per_instance,
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn run(&self, call: Call) -> Result<Fields, HandlerError> {
        let mut instance = match self.take_idle() {
            Some(mut instance) => {
                // A kept instance takes this call's deadline, log tags and caps.
                instance.store.data_mut().begin(call.deadline, call.trace);
                instance.store.set_epoch_deadline(1);
                instance
            }
            None => self.instantiate(call.deadline, call.trace).await?,
        };
        // A trap, a timeout or a cancelled call leaves the instance in an unknown
        // state: it is dropped with this future and never reused.
        let answer = instance
            .plugin
            .call_handle(&mut instance.store, &call.key, &call.inputs)
            .instrument(telemetry::spans::call())
            .await
            .map_err(|e| self.classify(e))?;
        instance.served += 1;
        instance.store.data_mut().end_call();
        self.put_idle(instance);
        match answer {
            Ok(data) => Ok(data),
            Err(WitError::InvalidInput(m)) => Err(HandlerError::InvalidInput(
                self.info.redactor.redact_owned(m),
            )),
            Err(WitError::Failed(m)) => {
                Err(HandlerError::Failed(self.info.redactor.redact_owned(m)))
            }
        }
    }

    async fn instantiate(
        &self,
        deadline: Instant,
        trace: Option<Ticket>,
    ) -> Result<Instance, HandlerError> {
        let mut store = Store::new(
            &self.runtime.engine,
            PluginState::new(self.info.clone(), deadline, trace),
        );
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Err(DeadlineExceeded.into())
            } else {
                // Hand the tokio worker back once per tick, then carry on.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let started = Instant::now();
        let plugin = self
            .pre
            .instantiate_async(&mut store)
            .instrument(telemetry::spans::instantiate())
            .await
            .map_err(|e| self.classify(e))?;
        let took = started.elapsed();
        self.instantiation.observe(took.as_secs_f64());
        self.info.recent.instantiated(trace, took);
        Ok(Instance {
            store,
            plugin,
            served: 0,
        })
    }

    fn take_idle(&self) -> Option<Instance> {
        let instance = self.lock_idle().pop()?;
        self.runtime.idle.release();
        Some(instance)
    }

    /// Keeps an instance for another call if it has calls left and the
    /// runtime's idle budget has room; otherwise drops it.
    fn put_idle(&self, instance: Instance) {
        if instance.served < self.requests_per_instance && self.runtime.idle.try_acquire() {
            self.lock_idle().push(instance);
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn classify(&self, error: wasmtime::Error) -> HandlerError {
        if error.downcast_ref::<DeadlineExceeded>().is_some() {
            return HandlerError::TimedOut(self.timeout);
        }
        if error
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return HandlerError::Unavailable(error.to_string());
        }
        tracing::warn!(plugin = %self.info.name, "plugin trapped: {error:?}");
        let reason = match error.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        HandlerError::Trapped(reason)
    }
}

impl Drop for WasmHandler {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        for _ in &idle {
            self.runtime.idle.release();
        }
    }
}

impl Handler for WasmHandler {
    fn call(&self, call: Call) -> HandlerFuture<'_> {
        Box::pin(self.run(call))
    }
}

/// Tells a core module or garbage apart from a component before compiling.
fn check_component_header(bytes: &[u8]) -> Result<(), LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(LoadError::NotAComponent(
            "it is a core wasm module, e.g. built for wasm32-wasip1 without `cargo component`",
        )),
        _ => Err(LoadError::NotAComponent(
            "it does not start with the wasm magic bytes",
        )),
    }
}
