//! `[keys]` and `[plugins.NAME]`: which plugin answers which key, how (mode,
//! limits), and what it may read (`[plugins.NAME.config]`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::egress::{self, EgressSettings};
use super::read::{Reader, Section, quote_key, scalar_text};
use crate::credentials::Environment;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SYNC_BUDGET: Duration = Duration::from_secs(2);
pub const DEFAULT_MEMORY: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAX_OUTPUT: u64 = 1024 * 1024;
/// wasm32 cannot address more; the instance pool reserves this much per slot.
pub const MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;

const KNOWN: &[&str] = &[
    "source",
    "refresh",
    "mode",
    "timeout",
    "sync_budget",
    "memory",
    "max_output",
    "max_in_flight",
    "requests_per_instance",
    "stores",
    "config",
];

/// The longest bucket name `stores` may grant.
pub const MAX_BUCKET_NAME: usize = 64;

/// How a plugin's answer reaches the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Answer `200` with the data.
    Sync,
    /// Answer `202` at once and POST the answer to `link`.
    Async,
    /// Answer `200` if the handler finishes within `sync_budget`, else `202` and deliver.
    Auto,
}

impl Mode {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "sync" => Some(Self::Sync),
            "async" => Some(Self::Async),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
            Self::Auto => "auto",
        }
    }
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file, resolved against `plugins_dir`; reloaded when it changes.
    File(PathBuf),
    /// An OCI artifact in a registry (`source = { oci = "..." }`).
    Oci(OciSource),
}

impl Source {
    /// The file, for a plugin that has one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::File(path) => Some(path),
            Self::Oci(_) => None,
        }
    }

    pub fn oci(&self) -> Option<&OciSource> {
        match self {
            Self::File(_) => None,
            Self::Oci(oci) => Some(oci),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Oci(oci) => write!(f, "oci:{}", oci.reference),
        }
    }
}

/// A registry reference, as written (`registry/repository:tag` or
/// `registry/repository@sha256:...`), checked to parse at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciSource {
    pub reference: String,
    /// How often a tag is asked for its digest; `None` resolves it at load only.
    pub refresh: Option<Duration>,
}

impl OciSource {
    /// Whether the reference names a digest, which never moves.
    pub fn is_digest(&self) -> bool {
        self.reference.contains('@')
    }

    /// The registry the reference names (`host[:port]`; `docker.io` when it names none).
    pub fn registry(&self) -> Option<String> {
        let parsed = self.reference.parse::<oci_client::Reference>().ok()?;
        Some(parsed.registry().to_string())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub name: String,
    /// The component file or registry reference.
    pub source: Source,
    pub mode: Mode,
    pub timeout: Duration,
    pub sync_budget: Duration,
    pub memory: u64,
    pub max_output: u64,
    pub max_in_flight: Option<usize>,
    /// Calls one instance may serve before it is replaced; 1 (the default) gives
    /// every call a fresh instance, so no state crosses requests.
    pub requests_per_instance: u32,
    /// Where the plugin may send HTTP requests, and within which limits.
    pub egress: EgressSettings,
    /// The key-value buckets the plugin may open (`stores = [...]`); two
    /// plugins share a bucket only if both are granted its name.
    pub stores: BTreeSet<String>,
    /// What the plugin reads with `config(name)`.
    pub config: BTreeMap<String, ConfigValue>,
}

/// A value of a plugin's `[plugins.<name>.config]`: as written, or a secret
/// read from the environment (`{ env = "NAME" }`). A secret's value is never
/// formatted: `Debug` shows where it came from, not what it is.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigValue {
    value: String,
    /// The environment variable a secret came from.
    env: Option<String>,
}

impl ConfigValue {
    pub fn plain(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            env: None,
        }
    }

    pub fn secret(env: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            env: Some(env.into()),
        }
    }

    /// The value itself, for the plugin that owns it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn is_secret(&self) -> bool {
        self.env.is_some()
    }
}

impl fmt::Debug for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.env {
            Some(env) => write!(f, "<secret from ${env}>"),
            None => write!(f, "{:?}", self.value),
        }
    }
}

/// Whether `name` can name a plugin: letters, digits, `-` and `_`.
pub fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reads `[keys]`: request key -> plugin name.
pub(super) fn read_keys(reader: &mut Reader<'_>, keys: &Section<'_>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (key, item, span) in keys.entries() {
        if key.is_empty() {
            reader.problem("keys", span.clone(), "a key cannot be the empty string");
        }
        let Some(plugin) = item.as_str() else {
            reader.problem(
                keys.key(key),
                span,
                format!("must be a plugin name, not {}", item.type_name()),
            );
            continue;
        };
        if !is_plugin_name(plugin) {
            reader.problem(
                keys.key(key),
                span,
                format!("{plugin:?} is not a plugin name (letters, digits, `-` and `_`)"),
            );
            continue;
        }
        map.insert(key.to_string(), plugin.to_string());
    }
    map
}

/// Reads every `[plugins.NAME]` a key maps to. A section no key maps to is
/// reported as such and still read, so its own problems are reported too (a
/// key mapped to it later must not bring a second round of them).
pub(super) fn read_plugins(
    reader: &mut Reader<'_>,
    plugins: &Section<'_>,
    keys: &BTreeMap<String, String>,
    plugins_dir: &Path,
    env: &Environment,
) -> BTreeMap<String, PluginConfig> {
    for (name, _, span) in plugins.entries() {
        if !keys.values().any(|p| p == name) {
            reader.problem(
                plugins.key(name),
                span,
                "no key in [keys] maps to this plugin",
            );
            let section = plugins.section(reader, name);
            read_plugin(reader, &section, name, plugins_dir, env);
        }
    }
    let mut read = BTreeMap::new();
    for name in keys.values() {
        if read.contains_key(name) {
            continue;
        }
        let section = plugins.section(reader, name);
        let plugin = read_plugin(reader, &section, name, plugins_dir, env);
        read.insert(name.clone(), plugin);
    }
    read
}

fn read_plugin(
    reader: &mut Reader<'_>,
    section: &Section<'_>,
    name: &str,
    plugins_dir: &Path,
    env: &Environment,
) -> PluginConfig {
    let known: Vec<&str> = KNOWN.iter().chain(egress::KNOWN).copied().collect();
    section.unknown_keys(reader, &known);
    let source = read_source(reader, section, name, plugins_dir);
    let mode = match section.string(reader, "mode") {
        None => Mode::Sync,
        Some((text, span)) => Mode::parse(&text).unwrap_or_else(|| {
            reader.problem(
                section.key("mode"),
                span,
                format!("{text:?} is not a mode: \"sync\", \"async\" or \"auto\""),
            );
            Mode::Sync
        }),
    };
    let memory = section.size(reader, "memory").unwrap_or(DEFAULT_MEMORY);
    if !(64 * 1024..=MAX_MEMORY).contains(&memory) {
        let span = section.string(reader, "memory").and_then(|(_, span)| span);
        reader.problem(
            section.key("memory"),
            span,
            "must be between 64KiB and 4GiB",
        );
    }
    let config = section.section(reader, "config");
    PluginConfig {
        name: name.to_string(),
        source,
        mode,
        timeout: section.duration(reader, "timeout", DEFAULT_TIMEOUT),
        sync_budget: section.duration(reader, "sync_budget", DEFAULT_SYNC_BUDGET),
        memory,
        max_output: section
            .size(reader, "max_output")
            .unwrap_or(DEFAULT_MAX_OUTPUT),
        max_in_flight: section
            .count(reader, "max_in_flight", 1, "")
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        requests_per_instance: section
            .count(
                reader,
                "requests_per_instance",
                1,
                " (1 means a fresh instance per request)",
            )
            .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        egress: egress::read(reader, section),
        stores: read_stores(reader, section),
        config: read_values(reader, &config, env),
    }
}

/// `source`: a file name (`orders.wasm` by default) or `{ oci = "REFERENCE" }`;
/// `refresh` only with a tag reference.
fn read_source(
    reader: &mut Reader<'_>,
    section: &Section<'_>,
    name: &str,
    plugins_dir: &Path,
) -> Source {
    let default = || Source::File(plugins_dir.join(format!("{name}.wasm")));
    let refresh_span = section.get("refresh").and_then(|(_, span)| span);
    let refresh = section
        .get("refresh")
        .is_some()
        .then(|| section.duration(reader, "refresh", Duration::from_secs(60)));
    let source = match section.get("source") {
        None => default(),
        Some((item, span)) => match (item.as_str(), item.as_table_like()) {
            (Some(file), _) => Source::File(plugins_dir.join(file)),
            (None, Some(table)) => match (table.get("oci").and_then(|v| v.as_str()), table.len()) {
                (Some(reference), 1) => {
                    if let Err(e) = reference.parse::<oci_client::Reference>() {
                        reader.problem(
                            section.key("source"),
                            span.clone(),
                            format!("{reference:?} is not a registry reference like \"registry.example.com/team/orders:1.4\" ({e})"),
                        );
                    }
                    Source::Oci(OciSource {
                        reference: reference.to_string(),
                        refresh,
                    })
                }
                _ => {
                    reader.problem(
                        section.key("source"),
                        span,
                        "a table here must be `{ oci = \"registry/repository:tag\" }`",
                    );
                    default()
                }
            },
            (None, None) => {
                reader.problem(
                    section.key("source"),
                    span,
                    format!(
                        "must be a file name or {{ oci = \"...\" }}, not {}",
                        item.type_name()
                    ),
                );
                default()
            }
        },
    };
    match &source {
        Source::File(_) if refresh.is_some() => reader.problem(
            section.key("refresh"),
            refresh_span,
            "only a registry source (`source = { oci = \"...\" }`) is refreshed; a file is watched",
        ),
        Source::Oci(oci) if refresh.is_some() && oci.is_digest() => reader.problem(
            section.key("refresh"),
            refresh_span,
            "a digest reference never moves: refresh a tag, or leave refresh out",
        ),
        _ => {}
    }
    source
}

/// `stores = ["tokens", ...]`: bucket names of 1 to 64 lowercase letters,
/// digits, `-` and `_`, so a name reads the same in every SDK, log and URL.
fn read_stores(reader: &mut Reader<'_>, section: &Section<'_>) -> BTreeSet<String> {
    let mut stores = BTreeSet::new();
    for (name, span) in section.strings(reader, "stores") {
        let valid = (1..=MAX_BUCKET_NAME).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid {
            stores.insert(name);
        } else {
            reader.problem(
                section.key("stores"),
                span,
                format!(
                    "{name:?} is not a bucket name: 1 to {MAX_BUCKET_NAME} of a-z, 0-9, - and _"
                ),
            );
        }
    }
    stores
}

/// `[plugins.NAME.config]`: scalars as text, `{ env = "NAME" }` from `env`.
/// A problem names the variable, never a value.
fn read_values(
    reader: &mut Reader<'_>,
    section: &Section<'_>,
    env: &Environment,
) -> BTreeMap<String, ConfigValue> {
    let mut values = BTreeMap::new();
    for (name, item, span) in section.entries() {
        let key = format!("{}.{}", section.path, quote_key(name));
        let value = match item.as_table_like() {
            Some(table) => match (table.get("env").and_then(|v| v.as_str()), table.len()) {
                (Some(var), 1) => match env.get(var) {
                    Some(secret) => Ok(ConfigValue::secret(var, secret)),
                    None => Err(format!(
                        "environment variable {var} is not set (nor in .env)"
                    )),
                },
                _ => Err("a table here must be `{ env = \"NAME\" }`".to_string()),
            },
            None => item
                .as_value()
                .and_then(scalar_text)
                .map(ConfigValue::plain)
                .ok_or_else(|| {
                    format!(
                        "must be a string, number, boolean or {{ env = \"NAME\" }}, not {}",
                        item.type_name()
                    )
                }),
        };
        match value {
            Ok(value) => {
                values.insert(name.to_string(), value);
            }
            Err(message) => reader.problem(key, span, message),
        }
    }
    values
}
