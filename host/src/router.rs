//! The routing table: request key -> live plugin, behind one swappable handle.
//!
//! Invariant: a request looks the table up once and keeps the `Arc` it got, so
//! a swap (hot reload) never changes the plugin under a request in flight.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::dispatch::Plugin;

/// One consistent version of the key -> plugin mapping.
#[derive(Default)]
pub struct Routes {
    /// Keys are shared, so a request carries its key to the metrics and the
    /// console without copying it.
    by_key: BTreeMap<Arc<str>, Arc<Plugin>>,
}

/// Where a key routes: the table's copy of the key, and its plugin.
#[derive(Clone)]
pub struct Route {
    pub key: Arc<str>,
    pub plugin: Arc<Plugin>,
}

impl Routes {
    /// Builds a table from the config's `[keys]` and the loaded plugins by name;
    /// a key whose plugin is not in `plugins` is left out.
    pub fn new(keys: &BTreeMap<String, String>, plugins: &BTreeMap<String, Arc<Plugin>>) -> Self {
        let by_key = keys
            .iter()
            .filter_map(|(key, name)| Some((key.as_str().into(), plugins.get(name)?.clone())))
            .collect();
        Self { by_key }
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Plugin>> {
        self.by_key.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Plugin>)> {
        self.by_key.iter().map(|(k, p)| (&**k, p))
    }
}

/// The live routing table, swapped whole.
#[derive(Default)]
pub struct Router {
    routes: ArcSwap<Routes>,
}

impl Router {
    pub fn new(routes: Routes) -> Self {
        Self {
            routes: ArcSwap::from_pointee(routes),
        }
    }

    /// The table as of now; hold on to it for the whole request.
    pub fn snapshot(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Looks one key up in the current table.
    pub fn route(&self, key: &str) -> Option<Route> {
        let routes = self.routes.load();
        let (key, plugin) = routes.by_key.get_key_value(key)?;
        Some(Route {
            key: key.clone(),
            plugin: plugin.clone(),
        })
    }

    pub fn swap(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }
}
