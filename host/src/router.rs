//! The routing table: request key -> live plugin, behind one swappable handle.
//!
//! Invariant: a request looks the table up once and keeps the `Arc` it got, so
//! a swap (hot reload) never changes the plugin under a request in flight.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::dispatch::Plugin;
use crate::recent::Names;

/// One consistent version of the key -> plugin mapping.
#[derive(Default)]
pub struct Routes {
    by_key: BTreeMap<String, Route>,
}

/// Where a key routes: its plugin, and the names the console and the
/// metrics record its requests under (made once here, shared by each).
#[derive(Clone)]
pub struct Route {
    pub names: Arc<Names>,
    pub plugin: Arc<Plugin>,
}

impl Routes {
    /// Builds a table from the config's `[keys]` and the loaded plugins by name;
    /// a key whose plugin is not in `plugins` is left out.
    pub fn new(keys: &BTreeMap<String, String>, plugins: &BTreeMap<String, Arc<Plugin>>) -> Self {
        let by_key = keys
            .iter()
            .filter_map(|(key, name)| {
                let plugin = plugins.get(name)?.clone();
                let names = Arc::new(Names {
                    key: key.as_str().into(),
                    plugin: plugin.console_name().clone(),
                });
                Some((key.clone(), Route { names, plugin }))
            })
            .collect();
        Self { by_key }
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Plugin>> {
        self.by_key.get(key).map(|route| &route.plugin)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Plugin>)> {
        self.by_key.iter().map(|(k, r)| (k.as_str(), &r.plugin))
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
        self.routes.load().by_key.get(key).cloned()
    }

    pub fn swap(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }
}
