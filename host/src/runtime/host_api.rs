//! What a plugin instance can reach: its own config, the log, a WASI context
//! with nothing in it but clocks and random, `wasi:http` through its
//! plugin's egress (`outbound`): only the hosts its allowlist names, and the
//! key-value store through its grant (`keyvalue`).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::optech::plugin::host::{self, Level};
use super::bindings::optech::plugin::types;
use super::info::PluginInfo;
use super::output::{ConsoleSink, PluginOutput};
use crate::outbound::Egress;
use crate::recent::Ticket;

/// Lines a plugin may log per request; past it, lines are dropped (and counted).
const MAX_LOG_LINES: u32 = 100;
/// Longest log line kept; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;

/// The data of one instance's store: lives as long as the instance, one call
/// by default, or up to `requests_per_instance` calls.
pub struct PluginState {
    pub(super) info: Arc<PluginInfo>,
    /// When the current call must stop; read by the epoch callback.
    pub(super) deadline: Instant,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    egress: Egress,
    pub(super) table: ResourceTable,
    pub(super) limits: StoreLimits,
    log_lines: u32,
    stdout: PluginOutput,
    stderr: PluginOutput,
    /// The console's entry of the current call.
    trace: Option<Ticket>,
}

impl PluginState {
    pub fn new(info: Arc<PluginInfo>, deadline: Instant, trace: Option<Ticket>) -> Self {
        let console = ConsoleSink {
            recent: info.recent.clone(),
            redactor: info.redactor.clone(),
        };
        let stdout = PluginOutput::new(info.name.clone(), "stdout", console.clone(), trace);
        let stderr = PluginOutput::new(info.name.clone(), "stderr", console, trace);
        let mut wasi = WasiCtx::builder();
        // The defaults already give no preopens, no env, no args and closed stdin;
        // sockets are refused outright rather than address by address.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(info.memory).unwrap_or(usize::MAX))
            .table_elements(100_000)
            .instances(32)
            .tables(32)
            .memories(4)
            .build();
        let egress = Egress::new(info.egress.clone(), deadline, trace);
        Self {
            info,
            deadline,
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            egress,
            table: ResourceTable::new(),
            limits,
            log_lines: 0,
            stdout,
            stderr,
            trace,
        }
    }

    /// Starts another call on a kept instance: its deadline, fresh log caps,
    /// and the console entry its lines go to.
    pub fn begin(&mut self, deadline: Instant, trace: Option<Ticket>) {
        self.deadline = deadline;
        self.egress.begin(deadline, trace);
        self.log_lines = 0;
        self.trace = trace;
        self.stdout.set_trace(trace);
        self.stderr.set_trace(trace);
    }

    /// Ends a call that returned: its partial output lines are logged now,
    /// while its request's span is still current, and output caps start over.
    pub fn end_call(&mut self) {
        self.stdout.finish_call();
        self.stderr.finish_call();
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: Level, mut message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(plugin = %self.info.name,
                    "plugin log limit of {MAX_LOG_LINES} lines reached; dropping the rest");
            }
            return;
        }
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        let message = self.info.redactor.redact(&message);
        // The request's span (id, key, plugin) is current: the line inherits it.
        // The text log escapes its control characters (`logging`).
        let plugin = &*self.info.name;
        let level = match level {
            Level::Trace => {
                tracing::trace!(target: "plugin", plugin, "{message}");
                "trace"
            }
            Level::Debug => {
                tracing::debug!(target: "plugin", plugin, "{message}");
                "debug"
            }
            Level::Info => {
                tracing::info!(target: "plugin", plugin, "{message}");
                "info"
            }
            Level::Warn => {
                tracing::warn!(target: "plugin", plugin, "{message}");
                "warn"
            }
            Level::Error => {
                tracing::error!(target: "plugin", plugin, "{message}");
                "error"
            }
        };
        self.info.recent.log(self.trace, level, &message);
    }

    fn config(&mut self, name: String) -> Option<String> {
        self.info
            .config
            .get(&name)
            .map(|value| value.expose().to_string())
    }
}
