use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings;
use super::host_api::PluginState;

/// How often the engine's epoch advances: the granularity of timeouts, and how
/// often a busy plugin yields its tokio worker.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Instances that may be alive at once (the pool's size).
    pub max_instances: u32,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self { max_instances: 512 }
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
    _ticker: Arc<EpochTicker>,
}

impl Runtime {
    pub fn new(options: &RuntimeOptions) -> anyhow::Result<Self> {
        let slots = options.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust component has one main module plus small shims: a few core
        // instances and tables each, one memory.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(8))
            .total_stacks(slots)
            .max_memory_size(usize::try_from(crate::config::MAX_MEMORY).unwrap_or(usize::MAX));

        let mut config = Config::new();
        config
            .epoch_interruption(true)
            // No WASIp3 concurrency: measurably cheaper store + instantiate + call.
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("creating the wasmtime engine: {e:#}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking WASI: {e:#}"))?;
        bindings::Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("linking the optech host API: {e:#}"))?;

        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            components: Arc::default(),
            _ticker: Arc::new(ticker),
        })
    }

    /// Compiles a component, or returns the one compiled earlier from the same bytes.
    /// CPU-heavy on a miss: call from a blocking thread.
    pub(super) fn compile(&self, bytes: &[u8], sha256: &str) -> wasmtime::Result<Component> {
        if let Some(hit) = self.lock_components().get(sha256) {
            return Ok(hit);
        }
        let component = Component::new(&self.engine, bytes)?;
        self.lock_components().insert(sha256, component.clone());
        Ok(component)
    }

    /// Keeps the components in `live` and the most recently used others, up to
    /// [`RETIRED_KEPT`] of them, for quick rollbacks.
    pub fn retain_components(&self, live: &HashSet<&str>) {
        self.lock_components().trim(live);
    }

    fn lock_components(&self) -> std::sync::MutexGuard<'_, ComponentCache> {
        self.components.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Compiled components no longer live that are kept for a quick rollback.
pub const RETIRED_KEPT: usize = 8;

/// Compiled components by content hash, with a use counter for trimming.
#[derive(Default)]
struct ComponentCache {
    entries: HashMap<String, (Component, u64)>,
    clock: u64,
}

impl ComponentCache {
    fn get(&mut self, sha256: &str) -> Option<Component> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(sha256).map(|(component, used)| {
            *used = clock;
            component.clone()
        })
    }

    fn insert(&mut self, sha256: &str, component: Component) {
        self.clock += 1;
        self.entries
            .insert(sha256.to_string(), (component, self.clock));
    }

    fn trim(&mut self, live: &HashSet<&str>) {
        let mut retired: Vec<(u64, String)> = self
            .entries
            .iter()
            .filter(|(hash, _)| !live.contains(hash.as_str()))
            .map(|(hash, (_, used))| (*used, hash.clone()))
            .collect();
        retired.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        for (_, hash) in retired.into_iter().skip(RETIRED_KEPT) {
            self.entries.remove(&hash);
        }
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
