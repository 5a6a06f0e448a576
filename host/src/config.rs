//! `optech.toml`: parsed into typed structs, validated once, at load.
//!
//! Invariants: unknown fields are errors; every problem found is reported at
//! once, each with the file and the key it is about; paths in a [`Config`] are
//! resolved against the config file's directory, so the host never depends on
//! the working directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::credentials::Environment;
use crate::outbound::{AllowedHost, Allowlist, EgressSettings};
use crate::tls::TlsFiles;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The admin listener: loopback only unless an operator says otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
/// How long closed outbox records are kept for inspection (and duplicate detection).
pub const DEFAULT_OUTBOX_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_COMPILE_CACHE_MAX: u64 = 1 << 30;
/// How long a replica's claim on shared outbox work lasts unless renewed.
pub const DEFAULT_OUTBOX_LEASE: Duration = Duration::from_secs(30);
/// Overrides `[server] outbox`, so a password can stay out of the file.
pub const OUTBOX_URL_ENV: &str = "OPTECH_OUTBOX_URL";
/// Requests the console remembers by default.
pub const DEFAULT_CONSOLE_REQUESTS: usize = 1_000;
/// The most the console may be asked to remember (each entry is a few hundred
/// bytes, up to about 10 KiB with log lines).
pub const MAX_CONSOLE_REQUESTS: usize = 100_000;
/// A token shorter than this is too easy to guess.
pub const MIN_ADMIN_TOKEN: usize = 16;
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// The seed: a link is valid for 10 minutes after the request. Only tests shorten it.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SYNC_BUDGET: Duration = Duration::from_secs(2);
pub const DEFAULT_MEMORY: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAX_OUTPUT: u64 = 1024 * 1024;
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_HTTP_RESPONSE: u64 = 4 * 1024 * 1024;
pub const DEFAULT_MAX_HTTP_IN_FLIGHT: usize = 16;
/// wasm32 cannot address more; the instance pool reserves this much per slot.
pub const MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: {} problem(s):\n{}", problems.len(), Problems(problems))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

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

/// A validated `optech.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    /// Request key -> plugin name.
    pub keys: BTreeMap<String, String>,
    /// Every plugin that a key maps to, by name.
    pub plugins: BTreeMap<String, PluginConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where health details (and metrics) are served; `None` turns it off.
    pub admin_listen: Option<SocketAddr>,
    pub plugins_dir: PathBuf,
    pub data_dir: PathBuf,
    pub max_body: usize,
    /// Requests running at once, over all plugins; past it the host answers 503.
    pub max_in_flight: usize,
    /// How long a request's `link` stays valid after the host receives it.
    pub link_ttl: Duration,
    /// How long shutdown waits for running handlers.
    pub shutdown_grace: Duration,
    /// Reload plugins and this file when they change on disk.
    pub watch: bool,
    /// Keep compiled plugins in `<data_dir>/compiled` so restarts skip compiling.
    pub compile_cache: bool,
    /// Bytes the compile cache may hold; the least recently used files go first.
    pub compile_cache_max: u64,
    /// How long a closed outbox record is kept before it is pruned.
    pub outbox_retention: Duration,
    /// A PostgreSQL outbox shared by replicas; `None` for SQLite in `data_dir`.
    pub outbox: Option<OutboxUrl>,
    /// How long a replica's claim lasts unless renewed (shared outbox only).
    pub outbox_lease: Duration,
    /// TLS on the public listener; `None` for plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The admin listener's access and the console's memory.
    pub admin: AdminSettings,
}

/// `[server] admin_token`, `console_requests` and `console_payloads`: who may
/// use the admin listener, and what its console keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// When set, every admin route needs `authorization: Bearer <token>` (or
    /// the console's cookie made from it).
    pub token: Option<AdminToken>,
    /// Requests the console remembers (a ring: the oldest goes first); 0 keeps none.
    pub console_requests: usize,
    /// Keep each request's inputs and data (known secret values redacted).
    pub console_payloads: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            token: None,
            console_requests: DEFAULT_CONSOLE_REQUESTS,
            console_payloads: false,
        }
    }
}

/// The admin token, from the environment: never formatted.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, to compare a caller's with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<admin token>")
    }
}

/// A `postgres://` URL, which may hold a password: never formatted whole.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxUrl(String);

impl OutboxUrl {
    /// The URL itself, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OutboxUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::outbox::redact(&self.0))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub name: String,
    /// The component file, resolved against `plugins_dir`.
    pub source: PathBuf,
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
    /// What the plugin reads with `config(name)`.
    pub config: BTreeMap<String, ConfigValue>,
}

impl PluginConfig {
    /// The values of this plugin's secrets, for redacting text it produces.
    pub fn secret_values(&self) -> std::sync::Arc<[Box<str>]> {
        self.config
            .values()
            .filter(|v| v.is_secret())
            .map(|v| v.expose().into())
            .collect()
    }
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    keys: BTreeMap<String, String>,
    #[serde(default)]
    plugins: BTreeMap<String, RawPlugin>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    plugins_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    max_body: Option<String>,
    max_in_flight: Option<usize>,
    link_ttl: Option<String>,
    shutdown_grace: Option<String>,
    watch: Option<bool>,
    compile_cache: Option<bool>,
    compile_cache_max: Option<String>,
    outbox_retention: Option<String>,
    outbox: Option<String>,
    outbox_lease: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    admin_token: Option<toml::Value>,
    console_requests: Option<usize>,
    console_payloads: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    source: Option<PathBuf>,
    mode: Option<Mode>,
    timeout: Option<String>,
    sync_budget: Option<String>,
    memory: Option<String>,
    max_output: Option<String>,
    max_in_flight: Option<usize>,
    requests_per_instance: Option<u32>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    http_timeout: Option<String>,
    max_http_response: Option<String>,
    max_http_in_flight: Option<usize>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
}

impl Config {
    /// Reads and validates a config file; secrets (`{ env = "NAME" }`) come from
    /// the environment or a `.env` file in the working directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let env = Environment::load(Path::new(".env")).map_err(|e| ConfigError::Read {
            path: ".env".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Self::load_with(path, &env)
    }

    /// [`Config::load`] with secrets from `env`.
    pub fn load_with(path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_with(&text, path, env)
    }

    /// Parses config text as if it were read from `path` (used for messages and
    /// relative paths), with secrets from the process environment.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse_with(text, path, &Environment::process())
    }

    /// [`Config::parse`] with secrets from `env`.
    pub fn parse_with(text: &str, path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: shown.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (config, problems) = validate(raw, path, base, env);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: shown,
                problems,
            })
        }
    }

    /// Everything wrong with a config file, and as much of the config as could
    /// be read (defaults where a value was wrong), so that a checker can go on to
    /// the plugins. `Err` only when the file cannot be read or is not TOML.
    pub fn check(path: &Path, env: &Environment) -> Result<(Config, Vec<Problem>), ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: shown,
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok(validate(raw, path, base, env))
    }
}

/// Checks a parsed file: the config with defaults where a value was wrong, and
/// every problem found.
fn validate(raw: RawConfig, path: &Path, base: &Path, env: &Environment) -> (Config, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });

    let listen = raw
        .server
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_LISTEN)
        .parse()
        .unwrap_or_else(|e| {
            problem(
                "server.listen".into(),
                format!("not an address like 127.0.0.1:8080 ({e})"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
    let admin_listen = parse_optional_addr(
        raw.server
            .admin_listen
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_LISTEN),
    )
    .unwrap_or_else(|e| {
        problem(
            "server.admin_listen".into(),
            format!("not an address like 127.0.0.1:9091, or \"\" for none ({e})"),
        );
        None
    });
    let plugins_dir = base.join(
        raw.server
            .plugins_dir
            .as_deref()
            .unwrap_or(Path::new("plugins")),
    );
    let data_dir = base.join(raw.server.data_dir.as_deref().unwrap_or(Path::new("data")));
    let max_body = size_or(
        &raw.server.max_body,
        DEFAULT_MAX_BODY,
        "server.max_body",
        &mut problem,
    );
    let max_in_flight = raw.server.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if max_in_flight == 0 {
        problem("server.max_in_flight".into(), "must be at least 1".into());
    }
    let link_ttl = duration_or(
        &raw.server.link_ttl,
        DEFAULT_LINK_TTL,
        "server.link_ttl",
        &mut problem,
    );
    let shutdown_grace = duration_or(
        &raw.server.shutdown_grace,
        DEFAULT_SHUTDOWN_GRACE,
        "server.shutdown_grace",
        &mut problem,
    );

    let compile_cache_max = size_or(
        &raw.server.compile_cache_max,
        DEFAULT_COMPILE_CACHE_MAX,
        "server.compile_cache_max",
        &mut problem,
    );
    let outbox_retention = duration_or(
        &raw.server.outbox_retention,
        DEFAULT_OUTBOX_RETENTION,
        "server.outbox_retention",
        &mut problem,
    );
    let outbox_lease = duration_or(
        &raw.server.outbox_lease,
        DEFAULT_OUTBOX_LEASE,
        "server.outbox_lease",
        &mut problem,
    );
    let tls = match (&raw.server.tls_cert, &raw.server.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: base.join(cert),
            key: base.join(key),
        }),
        (None, None) => None,
        (Some(_), None) => {
            problem("server.tls_key".into(), "must be set with tls_cert".into());
            None
        }
        (None, Some(_)) => {
            problem("server.tls_cert".into(), "must be set with tls_key".into());
            None
        }
    };
    let admin = admin_settings(&raw.server, env, &mut problem);
    let outbox = match env
        .get(OUTBOX_URL_ENV)
        .or_else(|| raw.server.outbox.clone())
    {
        None => None,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Some(OutboxUrl(url))
        }
        Some(url) => {
            problem(
                "server.outbox".into(),
                format!(
                    "{} is not a postgres:// URL (leave it out for SQLite in data_dir)",
                    crate::outbox::redact(&url)
                ),
            );
            None
        }
    };

    for (key, plugin) in &raw.keys {
        if key.is_empty() {
            problem("keys".into(), "a key cannot be the empty string".into());
        }
        if !is_plugin_name(plugin) {
            problem(
                format!("keys.{}", quote_key(key)),
                format!("{plugin:?} is not a plugin name (letters, digits, `-` and `_`)"),
            );
        }
    }

    let mut plugins = BTreeMap::new();
    for name in raw.plugins.keys() {
        if !raw.keys.values().any(|p| p == name) {
            problem(
                format!("plugins.{}", quote_key(name)),
                "no key in [keys] maps to this plugin".into(),
            );
        }
    }
    let default_section = RawPlugin::default();
    for name in raw.keys.values() {
        if plugins.contains_key(name) || !is_plugin_name(name) {
            continue;
        }
        let section = raw.plugins.get(name).unwrap_or(&default_section);
        let at = |field: &str| format!("plugins.{}.{field}", quote_key(name));
        let timeout = duration_or(
            &section.timeout,
            DEFAULT_TIMEOUT,
            &at("timeout"),
            &mut problem,
        );
        let sync_budget = duration_or(
            &section.sync_budget,
            DEFAULT_SYNC_BUDGET,
            &at("sync_budget"),
            &mut problem,
        );
        let memory = size_or(&section.memory, DEFAULT_MEMORY, &at("memory"), &mut problem);
        if !(64 * 1024..=MAX_MEMORY).contains(&memory) {
            problem(at("memory"), "must be between 64KiB and 4GiB".into());
        }
        let max_output = size_or(
            &section.max_output,
            DEFAULT_MAX_OUTPUT,
            &at("max_output"),
            &mut problem,
        );
        if section.max_in_flight == Some(0) {
            problem(at("max_in_flight"), "must be at least 1".into());
        }
        if section.requests_per_instance == Some(0) {
            problem(
                at("requests_per_instance"),
                "must be at least 1 (1 means a fresh instance per request)".into(),
            );
        }
        let mut allowed_hosts = Vec::new();
        for entry in &section.allowed_hosts {
            match AllowedHost::parse(entry) {
                Ok(host) => allowed_hosts.push(host),
                Err(why) => problem(at("allowed_hosts"), format!("{entry:?}: {why}")),
            }
        }
        let http_timeout = duration_or(
            &section.http_timeout,
            DEFAULT_HTTP_TIMEOUT,
            &at("http_timeout"),
            &mut problem,
        );
        let max_http_response = size_or(
            &section.max_http_response,
            DEFAULT_MAX_HTTP_RESPONSE,
            &at("max_http_response"),
            &mut problem,
        );
        if section.max_http_in_flight == Some(0) {
            problem(at("max_http_in_flight"), "must be at least 1".into());
        }
        let mut config = BTreeMap::new();
        for (k, v) in &section.config {
            let key = format!("{}.{}", at("config"), quote_key(k));
            match config_value(v, env) {
                Ok(value) => {
                    config.insert(k.clone(), value);
                }
                Err(message) => problem(key, message),
            }
        }
        let source = section
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{name}.wasm")));
        plugins.insert(
            name.clone(),
            PluginConfig {
                name: name.clone(),
                source: plugins_dir.join(source),
                mode: section.mode.unwrap_or(Mode::Sync),
                timeout,
                sync_budget,
                memory,
                max_output,
                max_in_flight: section.max_in_flight,
                requests_per_instance: section.requests_per_instance.unwrap_or(1),
                egress: EgressSettings {
                    allowed_hosts: Allowlist::new(allowed_hosts),
                    timeout: http_timeout,
                    max_response: max_http_response,
                    max_in_flight: section
                        .max_http_in_flight
                        .unwrap_or(DEFAULT_MAX_HTTP_IN_FLIGHT),
                },
                config,
            },
        );
    }

    let config = Config {
        path: path.to_path_buf(),
        server: ServerConfig {
            listen,
            admin_listen,
            plugins_dir,
            data_dir,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            max_in_flight,
            link_ttl,
            shutdown_grace,
            watch: raw.server.watch.unwrap_or(true),
            compile_cache: raw.server.compile_cache.unwrap_or(true),
            compile_cache_max,
            outbox_retention,
            outbox,
            outbox_lease,
            tls,
            admin,
        },
        keys: raw.keys,
        plugins,
    };
    (config, problems)
}

/// `admin_token` (only `{ env = "NAME" }`, so the token stays out of the
/// file), `console_requests` and `console_payloads`.
fn admin_settings(
    raw: &RawServer,
    env: &Environment,
    problem: &mut impl FnMut(String, String),
) -> AdminSettings {
    let token = match &raw.admin_token {
        None => None,
        Some(value) => match config_value(value, env) {
            Ok(value) if !value.is_secret() => {
                problem(
                    "server.admin_token".into(),
                    "must be { env = \"NAME\" }: keep the token out of the file".into(),
                );
                None
            }
            Ok(value) if value.expose().len() < MIN_ADMIN_TOKEN => {
                problem(
                    "server.admin_token".into(),
                    format!("is shorter than {MIN_ADMIN_TOKEN} characters: too easy to guess"),
                );
                None
            }
            Ok(value) => Some(AdminToken::new(value.expose())),
            Err(message) => {
                problem("server.admin_token".into(), message);
                None
            }
        },
    };
    let console_requests = raw.console_requests.unwrap_or(DEFAULT_CONSOLE_REQUESTS);
    if console_requests > MAX_CONSOLE_REQUESTS {
        problem(
            "server.console_requests".into(),
            format!("must be at most {MAX_CONSOLE_REQUESTS} (0 keeps none)"),
        );
    }
    AdminSettings {
        token,
        console_requests: console_requests.min(MAX_CONSOLE_REQUESTS),
        console_payloads: raw.console_payloads.unwrap_or(false),
    }
}

impl ServerConfig {
    /// Whether the admin listener is reachable from beyond this machine.
    pub fn admin_beyond_loopback(&self) -> bool {
        self.admin_listen.is_some_and(|a| !a.ip().is_loopback())
    }
}

/// An address, or none for the empty string (a listener turned off).
pub fn parse_optional_addr(text: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
    match text.trim() {
        "" => Ok(None),
        text => text.parse().map(Some),
    }
}

fn duration_or(
    raw: &Option<String>,
    default: Duration,
    key: &str,
    problem: &mut impl FnMut(String, String),
) -> Duration {
    let Some(text) = raw else { return default };
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            problem(key.into(), "must be longer than zero".into());
            default
        }
        Ok(d) => d,
        Err(e) => {
            problem(
                key.into(),
                format!("{text:?} is not a duration like \"10s\" or \"1m 30s\" ({e})"),
            );
            default
        }
    }
}

fn size_or(
    raw: &Option<String>,
    default: u64,
    key: &str,
    problem: &mut impl FnMut(String, String),
) -> u64 {
    let Some(text) = raw else { return default };
    match parse_size(text) {
        Some(n) => n,
        None => {
            problem(
                key.into(),
                format!("{text:?} is not a size like \"64MiB\", \"512KiB\" or \"1MB\""),
            );
            default
        }
    }
}

/// "64MiB", "1 MB", "512KiB", "1048576" (bytes). Binary and decimal units, case-insensitive.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// A config value: a scalar as text, or `{ env = "NAME" }` read from `env`.
/// A problem names the variable, never a value.
fn config_value(value: &toml::Value, env: &Environment) -> Result<ConfigValue, String> {
    if let toml::Value::Table(table) = value {
        return match (table.get("env"), table.len()) {
            (Some(toml::Value::String(name)), 1) => match env.get(name) {
                Some(secret) => Ok(ConfigValue::secret(name, secret)),
                None => Err(format!(
                    "environment variable {name} is not set (nor in .env)"
                )),
            },
            _ => Err("a table here must be `{ env = \"NAME\" }`".into()),
        };
    }
    scalar_to_string(value)
        .map(ConfigValue::plain)
        .ok_or_else(|| {
            format!(
                "must be a string, number, boolean or {{ env = \"NAME\" }}, not {}",
                value.type_str()
            )
        })
}

fn scalar_to_string(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Writes a TOML key the way a user would have to type it.
fn quote_key(key: &str) -> String {
    if is_plugin_name(key) {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/srv/optech/optech.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse("[keys]\necho = \"echo\"\n").unwrap();
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            config.server.admin_listen.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_ADMIN_LISTEN)
        );
        assert_eq!(config.server.outbox_retention, DEFAULT_OUTBOX_RETENTION);
        assert_eq!(config.server.compile_cache_max, DEFAULT_COMPILE_CACHE_MAX);
        assert_eq!(config.server.plugins_dir, Path::new("/srv/optech/plugins"));
        assert_eq!(config.server.max_body, 1024 * 1024);
        let echo = &config.plugins["echo"];
        assert_eq!(echo.source, Path::new("/srv/optech/plugins/echo.wasm"));
        assert_eq!(echo.mode, Mode::Sync);
        assert_eq!(echo.timeout, DEFAULT_TIMEOUT);
        assert_eq!(echo.memory, DEFAULT_MEMORY);
        assert_eq!(echo.requests_per_instance, 1);
    }

    #[test]
    fn full_config_is_read() {
        let config = parse(
            r#"
            [server]
            listen = "0.0.0.0:9000"
            plugins_dir = "wasm"
            max_body = "2MiB"
            max_in_flight = 10
            admin_listen = ""
            outbox_retention = "1h"
            compile_cache_max = "64MiB"
            [keys]
            "order status" = "orders"
            "order eta" = "orders"
            [plugins.orders]
            source = "orders-v2.wasm"
            mode = "auto"
            timeout = "1m 30s"
            sync_budget = "500ms"
            memory = "16MiB"
            max_in_flight = 4
            [plugins.orders.config]
            region = "eu"
            retries = 3
            verbose = true
            "#,
        )
        .unwrap();
        assert_eq!(config.server.max_body, 2 << 20);
        assert_eq!(config.server.admin_listen, None);
        assert_eq!(config.server.outbox_retention, Duration::from_secs(3600));
        assert_eq!(config.server.compile_cache_max, 64 << 20);
        assert_eq!(config.keys.len(), 2);
        let orders = &config.plugins["orders"];
        assert_eq!(orders.source, Path::new("/srv/optech/wasm/orders-v2.wasm"));
        assert_eq!(orders.mode, Mode::Auto);
        assert_eq!(orders.timeout, Duration::from_secs(90));
        assert_eq!(orders.sync_budget, Duration::from_millis(500));
        assert_eq!(orders.memory, 16 << 20);
        assert_eq!(orders.max_in_flight, Some(4));
        assert_eq!(orders.config["retries"].expose(), "3");
        assert_eq!(orders.config["verbose"].expose(), "true");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = parse("[keys]\necho = \"echo\"\n[plugins.echo]\ntimout = \"1s\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/srv/optech/optech.toml"), "{text}");
        assert!(text.contains("timout"), "{text}");
        let err = parse("[sever]\nlisten = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("sever"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = parse(
            r#"
            [server]
            listen = "nowhere"
            admin_listen = "private"
            outbox_retention = "a while"
            max_body = "lots"
            [keys]
            a = "bad name!"
            b = "p"
            [plugins.p]
            timeout = "soon"
            memory = "1KiB"
            requests_per_instance = 0
            [plugins.p.config]
            list = [1, 2]
            [plugins.orphan]
            "#,
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "server.listen",
            "server.admin_listen",
            "server.outbox_retention",
            "server.max_body",
            "keys.a",
            "plugins.p.timeout",
            "plugins.p.memory",
            "plugins.p.requests_per_instance",
            "plugins.p.config.list",
            "plugins.orphan",
        ] {
            assert!(keys.contains(&expected), "{expected} missing in {keys:?}");
        }
    }

    #[test]
    fn admin_token_comes_from_the_environment_and_console_settings_are_checked() {
        let env =
            Environment::from_pairs([("ADMIN_TOKEN", "0123456789abcdef-token"), ("SHORT", "abc")]);
        let path = Path::new("/srv/optech.toml");
        let config = Config::parse_with(
            "[server]\nadmin_token = { env = \"ADMIN_TOKEN\" }\nconsole_requests = 50\nconsole_payloads = true\n",
            path,
            &env,
        )
        .unwrap();
        let admin = &config.server.admin;
        assert_eq!(
            admin.token.as_ref().map(AdminToken::expose),
            Some("0123456789abcdef-token")
        );
        assert_eq!((admin.console_requests, admin.console_payloads), (50, true));
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        let defaults = Config::parse_with("", path, &env).unwrap();
        assert_eq!(defaults.server.admin, AdminSettings::default());
        assert!(!defaults.server.admin_beyond_loopback());

        let err = Config::parse_with(
            "[server]\nadmin_token = \"in-the-file-0123456789\"\nconsole_requests = 1000000\n",
            path,
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("server.admin_token") && err.contains("env"),
            "{err}"
        );
        assert!(!err.contains("in-the-file"), "{err}");
        assert!(err.contains("server.console_requests"), "{err}");
        for (token, expected) in [("SHORT", "shorter"), ("UNSET", "UNSET")] {
            let text = format!("[server]\nadmin_token = {{ env = \"{token}\" }}\n");
            let err = Config::parse_with(&text, path, &env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
        let open =
            Config::parse_with("[server]\nadmin_listen = \"0.0.0.0:9091\"\n", path, &env).unwrap();
        assert!(open.server.admin_beyond_loopback());
    }

    #[test]
    fn bad_mode_is_a_syntax_error_naming_the_value() {
        let err = parse("[keys]\nk = \"p\"\n[plugins.p]\nmode = \"later\"\n").unwrap_err();
        assert!(err.to_string().contains("later"), "{err}");
    }

    #[test]
    fn outbound_settings_are_read_and_checked() {
        let config = parse(
            r#"
            [keys]
            k = "orders"
            [plugins.orders]
            allowed_hosts = ["https://api.example.com", "https://*.example.com:8443", "http://127.0.0.1:*"]
            http_timeout = "2s"
            max_http_response = "1MiB"
            max_http_in_flight = 4
            "#,
        )
        .unwrap();
        let egress = &config.plugins["orders"].egress;
        assert!(!egress.allowed_hosts.is_empty());
        assert_eq!(egress.timeout, Duration::from_secs(2));
        assert_eq!(egress.max_response, 1 << 20);
        assert_eq!(egress.max_in_flight, 4);
        let defaults = parse("[keys]\nk = \"p\"\n").unwrap();
        let egress = &defaults.plugins["p"].egress;
        assert!(egress.allowed_hosts.is_empty(), "deny by default");
        assert_eq!(egress.timeout, DEFAULT_HTTP_TIMEOUT);
        assert_eq!(egress.max_response, DEFAULT_MAX_HTTP_RESPONSE);
        assert_eq!(egress.max_in_flight, DEFAULT_MAX_HTTP_IN_FLIGHT);

        let err = parse(
            "[keys]\nk = \"orders\"\n[plugins.orders]\nallowed_hosts = [\"api.example.com\", \"https://ok.example\", \"https://x.example/path\"]\nmax_http_in_flight = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("plugins.orders.allowed_hosts: \"api.example.com\""),
            "{err}"
        );
        assert!(err.contains("\"https://x.example/path\""), "{err}");
        assert!(!err.contains("ok.example"), "{err}");
        assert!(err.contains("plugins.orders.max_http_in_flight"), "{err}");
    }

    #[test]
    fn secrets_come_from_the_environment_and_never_show() {
        let env = Environment::from_pairs([("ORDERS_TOKEN", "s3cr3t-t0k3n")]);
        let text = "[keys]\nk = \"orders\"\n[plugins.orders.config]\nbase_url = \"https://api.example.com\"\ntoken = { env = \"ORDERS_TOKEN\" }\n";
        let config = Config::parse_with(text, Path::new("/srv/optech.toml"), &env).unwrap();
        let values = &config.plugins["orders"].config;
        assert_eq!(values["token"].expose(), "s3cr3t-t0k3n");
        assert!(values["token"].is_secret());
        assert_eq!(values["base_url"].expose(), "https://api.example.com");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("ORDERS_TOKEN"), "{shown}");

        let missing = Config::parse_with(
            text,
            Path::new("/srv/optech.toml"),
            &Environment::from_pairs([]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            missing.contains("plugins.orders.config.token") && missing.contains("ORDERS_TOKEN"),
            "{missing}"
        );
        let bad = Config::parse_with(
            "[keys]\nk = \"p\"\n[plugins.p.config]\nx = { file = \"/etc/passwd\" }\n",
            Path::new("optech.toml"),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("plugins.p.config.x"), "{bad}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("64 mib"), Some(64 << 20));
        assert_eq!(parse_size("1MB"), Some(1_000_000));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("-1MiB"), None);
        assert_eq!(parse_size("1.5MiB"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }
}
