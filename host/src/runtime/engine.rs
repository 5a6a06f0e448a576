use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::cache::{ComponentCache, DiskCache, FunctionCache};
use super::host_api::PluginState;
use crate::metrics::SharedMetrics;
use crate::outbound::Outbound;
use crate::store::memory::MemoryBackend;
use crate::store::{Limits, Stores};

/// How often the engine's epoch advances: the granularity of timeouts, and how
/// often a busy plugin yields its tokio worker.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Bytes of a freed table slot that stay mapped for the next instance: about
/// 20 times what one request of a TypeScript or Python echo dirties in its
/// tables (30 and 50 KiB).
const TABLE_KEEP_RESIDENT: usize = 1 << 20;

/// Initial memory images up to this size are always mapped copy-on-write,
/// however sparse. componentize-js's snapshot spans 8 MiB of which only 3.4
/// MiB are data, so past wasmtime's default of 16 MiB a larger TypeScript
/// plugin would have its data segments copied into every new instance; 64
/// MiB is the default memory cap a plugin's image must fit in anyway.
const DENSE_IMAGE_SIZE: u64 = crate::config::DEFAULT_MEMORY;

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Instances that may be running at once.
    pub max_instances: u32,
    /// Instances that may be kept between calls, over all plugins with
    /// `requests_per_instance` above 1. The pool has room for both.
    pub max_idle: u32,
    /// Where compiled components are kept between runs; `None` compiles every start.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the on-disk cache may hold before the least recently used files go.
    pub cache_max: u64,
    /// Bytes of its memory a freed pool slot keeps, reset in place, for the
    /// next instance (`[server] keep_resident`).
    pub keep_resident: u64,
    /// Plugins' outbound HTTP; `None` for the system resolver and fresh pools.
    pub outbound: Option<Outbound>,
    /// Plugins' key-value store; `None` keeps it in memory (tests, benchmarks).
    pub stores: Option<Stores>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            max_instances: 512,
            max_idle: 64,
            cache_dir: None,
            cache_max: crate::config::DEFAULT_COMPILE_CACHE_MAX,
            keep_resident: crate::config::DEFAULT_KEEP_RESIDENT,
            outbound: None,
            stores: None,
        }
    }
}

/// The engine and linker shared by every plugin.
#[derive(Clone)]
pub struct Runtime {
    pub(super) engine: Engine,
    pub(super) linker: Arc<Linker<PluginState>>,
    /// Compiled components by content hash, so a reload that changes only a
    /// plugin's settings, or rolls back to a recent version, does not recompile.
    components: Arc<Mutex<ComponentCache>>,
    /// `<dir>/<content sha256>-<engine compatibility hash>.cwasm` files.
    disk_cache: Option<Arc<DiskCache>>,
    /// Slots that idle, reusable instances may hold.
    pub(super) idle: Arc<IdleBudget>,
    /// Plugins' outbound HTTP: the resolver and the pooled clients.
    pub(super) outbound: Outbound,
    /// Plugins' key-value store, which each plugin reaches through its grant.
    pub(super) stores: Stores,
    /// What the host counts; the plugins and the host share it.
    metrics: SharedMetrics,
    _ticker: Arc<EpochTicker>,
}

/// What the pool keeps for instances to come (`Runtime::warm_slots`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmSlots {
    /// Freed memory slots with their image mapped and pages reset in place.
    pub memories: u32,
    /// Bytes those slots, and the warm table slots, keep resident.
    pub bytes: usize,
}

/// A counter of idle instances with a cap, so instances kept for reuse never
/// take the pool slots that running calls need.
pub(super) struct IdleBudget {
    held: AtomicU32,
    max: u32,
}

impl IdleBudget {
    pub(super) fn try_acquire(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .is_ok()
    }

    pub(super) fn release(&self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Runtime {
    pub fn new(options: &RuntimeOptions) -> anyhow::Result<Self> {
        let slots = options
            .max_instances
            .max(1)
            .saturating_add(options.max_idle);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust component has one main module plus small shims: a few core
        // instances and tables each, one memory.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(8))
            .total_stacks(slots)
            .max_memory_size(usize::try_from(crate::config::MAX_MEMORY).unwrap_or(usize::MAX))
            // No decommit batching (wasmtime's default of 1): a freed slot that
            // gave pages back waits in the queue until the batch fills, so the
            // next request of the same plugin takes a cold slot and faults its
            // heap in. Batches of 64 measured 2,902 against 3,756 TypeScript
            // and 3,363 against 3,898 Python requests/s, Python's peak RSS 611
            // against 309 MiB, and Rust the same (BENCHMARKS.md).
            .decommit_batch_size(1)
            // Free slots kept warm for plugins not running now (image mapped,
            // pages reset in place) before one with no warm slot of its own
            // takes the least recently used, so a plugin that comes back does
            // not map its image and fault its heap in again: as many as may
            // idle (wasmtime's default is 100). Each holds up to `keep_resident`.
            .max_unused_warm_slots(options.max_idle);
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            // Keep a freed slot's touched pages mapped and reset only those
            // (Linux 6.7+ `PAGEMAP_SCAN` finds them, all of them with the patch
            // in vendor/wasmtime): the next instance takes no page faults and
            // no `madvise`. Without the scan, resetting would mean a memset of
            // the whole resident size per request, which costs more than the
            // faults it saves.
            let keep_resident = usize::try_from(options.keep_resident).unwrap_or(usize::MAX);
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(keep_resident)
                .table_keep_resident(TABLE_KEEP_RESIDENT.min(keep_resident));
        }

        let mut config = Config::new();
        if std::env::var_os("OPTECH_PROFILE").is_some_and(|v| v == "perfmap") {
            // Names plugins' compiled functions for `perf` (/tmp/perf-<pid>.map).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(dir) = &options.cache_dir {
            // A new version of a JS or Python plugin is mostly the same engine
            // (SpiderMonkey, CPython) with another script: Cranelift compiles
            // only the functions it has not seen, about 20 s down to a few.
            config
                .enable_incremental_compilation(Arc::new(FunctionCache::new(
                    dir.join("functions"),
                    options.cache_max,
                )))
                .map_err(|e| anyhow::anyhow!("enabling incremental compilation: {e:#}"))?;
        }
        config
            .epoch_interruption(true)
            // No WASIp3 concurrency: measurably cheaper store + instantiate + call.
            .concurrency_support(false)
            .memory_guaranteed_dense_image_size(DENSE_IMAGE_SIZE)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e:#}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        // Linked for every plugin; a plugin whose allowlist is empty is refused
        // every request (deny by default), and one that never calls out does
        // not even import it.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking wasi:http: {e:#}"))?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("linking the optech host API: {e:#}"))?;

        let ticker = EpochTicker::start(engine.clone());
        let metrics = SharedMetrics::default();
        let disk_cache = options
            .cache_dir
            .clone()
            .map(|dir| Arc::new(DiskCache::new(dir, &engine, options.cache_max)));
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            components: Arc::default(),
            disk_cache,
            idle: Arc::new(IdleBudget {
                held: AtomicU32::new(0),
                max: options.max_idle,
            }),
            outbound: options
                .outbound
                .clone()
                .unwrap_or_default()
                .with_metrics(metrics.clone()),
            stores: options.stores.clone().unwrap_or_else(|| {
                Stores::new(Arc::new(MemoryBackend::default()), Limits::default())
            }),
            metrics,
            _ticker: Arc::new(ticker),
        })
    }

    /// Compiles a component, or returns the one compiled earlier from the same bytes.
    /// CPU-heavy on a miss: call from a blocking thread.
    pub(super) fn compile(&self, bytes: &[u8], sha256: &str) -> wasmtime::Result<Component> {
        if let Some(hit) = self.lock_components().get(sha256) {
            return Ok(hit);
        }
        let component = match &self.disk_cache {
            Some(cache) => cache.load_or_compile(&self.engine, bytes, sha256)?,
            None => Component::new(&self.engine, bytes)?,
        };
        self.lock_components().insert(sha256, component.clone());
        Ok(component)
    }

    /// Freed pool slots kept warm and the bytes they keep resident (memories
    /// and tables); zeros when the engine does not pool.
    pub fn warm_slots(&self) -> WarmSlots {
        match self.engine.pooling_allocator_metrics() {
            Some(pool) => WarmSlots {
                memories: pool.unused_warm_memories(),
                bytes: pool
                    .unused_memory_bytes_resident()
                    .saturating_add(pool.unused_table_bytes_resident()),
            },
            None => WarmSlots::default(),
        }
    }

    /// The key-value store plugins are granted buckets of.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The metrics of the host this runtime belongs to.
    pub fn metrics(&self) -> &SharedMetrics {
        &self.metrics
    }

    /// Keeps the components in `live` and the most recently used others, up to
    /// [`super::cache::RETIRED_KEPT`] of them, for quick rollbacks.
    pub fn retain_components(&self, live: &HashSet<&str>) {
        self.lock_components().trim(live);
    }

    fn lock_components(&self) -> std::sync::MutexGuard<'_, ComponentCache> {
        self.components.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A thread that advances the engine's epoch until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("optech-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            // Without the ticker no timeout would fire: better not to start.
            .unwrap_or_else(|e| panic!("cannot start the epoch thread: {e}"));
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
