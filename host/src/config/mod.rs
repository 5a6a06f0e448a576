//! `optech.toml`: parsed into typed structs, validated once, at load.
//!
//! Invariants: unknown keys are errors; every problem in the file is found in
//! one pass and reported at once, each with its key and line (a wrong value
//! never hides the next one, as a typed deserializer would); paths in a
//! [`Config`] are resolved against the config file's directory, so the host
//! never depends on the working directory; a `{ env = "NAME" }` value is read
//! at load and never formatted. A leaf: it imports no runtime module.
//!
//! `read.rs` reads a table key by key; `server.rs` is `[server]` (its admin
//! and console keys in `admin.rs`, what a client may hold in `clients.rs`), `plugins.rs` is `[keys]` and
//! `[plugins.NAME]`, `egress.rs` a plugin's outbound HTTP settings, `store.rs` is `[store]`.

mod admin;
mod clients;
mod egress;
mod plugins;
mod read;
mod registry;
mod server;
mod store;
mod telemetry;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::credentials::Environment;
use read::{Reader, Section};

pub use admin::{
    AdminSettings, AdminToken, DEFAULT_CONSOLE_REQUESTS, MAX_CONSOLE_REQUESTS, MIN_ADMIN_TOKEN,
};
pub use clients::{
    ClientLimits, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_UNVERIFIED, DEFAULT_SEND_TIMEOUT,
};
pub use egress::{
    DEFAULT_HTTP_TIMEOUT, DEFAULT_MAX_HTTP_IN_FLIGHT, DEFAULT_MAX_HTTP_RESPONSE, EgressSettings,
};
pub use plugins::{
    ConfigValue, DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY, DEFAULT_SYNC_BUDGET, DEFAULT_TIMEOUT,
    MAX_MEMORY, Mode, OciSource, PluginConfig, Source, is_plugin_name,
};
pub use registry::{
    DEFAULT_MAX_ARTIFACT_SIZE, DEFAULT_MAX_CONCURRENT_PULLS, DEFAULT_PULL_TIMEOUT, Login,
    PASSWORD_ENV as REGISTRY_PASSWORD_ENV, RegistrySettings, SERVER_ENV as REGISTRY_SERVER_ENV,
    USERNAME_ENV as REGISTRY_USERNAME_ENV, login as registry_login,
};
pub use server::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_COMPILE_CACHE_MAX, DEFAULT_KEEP_RESIDENT, DEFAULT_LINK_TTL,
    DEFAULT_LISTEN, DEFAULT_MAX_BODY, DEFAULT_MAX_IN_FLIGHT, DEFAULT_OUTBOX_LEASE,
    DEFAULT_OUTBOX_RETENTION, DEFAULT_SHUTDOWN_GRACE, MIN_OUTBOX_LEASE, MIN_OUTBOX_MAX_SIZE,
    OUTBOX_URL_ENV, OutboxUrl, ServerConfig, TlsFiles, parse_optional_addr, redact_url,
};
pub use store::{
    DEFAULT_MAX_BYTES_PER_PLUGIN, DEFAULT_MAX_KEY_SIZE, DEFAULT_MAX_KEYS_PER_BUCKET,
    DEFAULT_MAX_VALUE_SIZE, StoreSettings,
};
pub use telemetry::{
    DEFAULT_EXPORT_TIMEOUT, DEFAULT_MAX_QUEUE_SIZE, Incoming, Protocol, SamplerKind,
    TelemetryConfig, check_endpoint, parse_ratio,
};

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
    /// Where in the file (1-based), when the key is in it.
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: {}", self.key, self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
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
    /// `[store]`: the limits of plugins' key-value buckets.
    pub store: StoreSettings,
    /// `[telemetry]`: OpenTelemetry traces, as the file sets them (the
    /// environment may override each; `telemetry::settings` resolves them).
    pub telemetry: TelemetryConfig,
}

const KNOWN_SECTIONS: &[&str] = &["server", "keys", "plugins", "store", "telemetry"];

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
        let text = read_file(path)?;
        Self::parse_with(&text, path, env)
    }

    /// Parses config text as if it were read from `path` (used for messages and
    /// relative paths), with secrets from the process environment.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse_with(text, path, &Environment::process())
    }

    /// [`Config::parse`] with secrets from `env`.
    pub fn parse_with(text: &str, path: &Path, env: &Environment) -> Result<Self, ConfigError> {
        let (config, problems) = Self::read(text, path, env)?;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.display().to_string(),
                problems,
            })
        }
    }

    /// Everything wrong with a config file, and as much of the config as could
    /// be read (defaults where a value was wrong), so that a checker can go on to
    /// the plugins. `Err` only when the file cannot be read or is not TOML.
    pub fn check(path: &Path, env: &Environment) -> Result<(Config, Vec<Problem>), ConfigError> {
        let text = read_file(path)?;
        Self::read(&text, path, env)
    }

    /// Reads every section, collecting every problem.
    fn read(
        text: &str,
        path: &Path,
        env: &Environment,
    ) -> Result<(Config, Vec<Problem>), ConfigError> {
        let document = toml_edit::Document::parse(text).map_err(|e| ConfigError::Syntax {
            path: path.display().to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut reader = Reader::new(text);
        let root = Section::new(&mut reader, String::new(), Some(document.as_item()));
        root.unknown_keys(&mut reader, KNOWN_SECTIONS);
        let server_section = root.section(&mut reader, "server");
        let server = server::read(&mut reader, &server_section, base, env);
        let keys_section = root.section(&mut reader, "keys");
        let keys = plugins::read_keys(&mut reader, &keys_section);
        let plugins_section = root.section(&mut reader, "plugins");
        let plugins = plugins::read_plugins(
            &mut reader,
            &plugins_section,
            &keys,
            &server.plugins_dir,
            env,
        );
        let store_section = root.section(&mut reader, "store");
        let store = store::read(&mut reader, &store_section);
        let telemetry_section = root.section(&mut reader, "telemetry");
        let telemetry = telemetry::read(&mut reader, &telemetry_section);
        let config = Config {
            path: path.to_path_buf(),
            server,
            keys,
            plugins,
            store,
            telemetry,
        };
        Ok((config, reader.problems))
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/srv/optech/optech.toml"))
    }

    /// `err` lists a problem at each of `expected` (a key's dotted path).
    fn assert_problems_at(err: &ConfigError, expected: &[&str]) {
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in expected {
            assert!(keys.contains(key), "{key} missing in {keys:?}");
        }
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
        assert_eq!(config.server.keep_resident, DEFAULT_KEEP_RESIDENT);
        assert_eq!(config.server.plugins_dir, Path::new("/srv/optech/plugins"));
        assert_eq!(config.server.max_body, 1024 * 1024);
        let echo = &config.plugins["echo"];
        assert_eq!(
            echo.source.file(),
            Some(Path::new("/srv/optech/plugins/echo.wasm"))
        );
        assert_eq!(echo.mode, Mode::Sync);
        assert_eq!(echo.timeout, DEFAULT_TIMEOUT);
        assert_eq!(echo.memory, DEFAULT_MEMORY);
        assert_eq!(echo.requests_per_instance, 1);
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
            assert!(!err.contains("abc\n"), "{err}");
        }
        // Beyond loopback, a token is required.
        let open = Config::parse_with("[server]\nadmin_listen = \"0.0.0.0:9091\"\n", path, &env)
            .unwrap_err()
            .to_string();
        assert!(
            open.contains("server.admin_listen") && open.contains("admin_token"),
            "{open}"
        );
        let guarded = Config::parse_with(
            "[server]\nadmin_listen = \"0.0.0.0:9091\"\nadmin_token = { env = \"ADMIN_TOKEN\" }\n",
            path,
            &env,
        )
        .unwrap();
        assert!(guarded.server.admin_beyond_loopback());
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
            keep_resident = "4MiB"
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
        assert_eq!(config.server.keep_resident, 4 << 20);
        assert_eq!(config.keys.len(), 2);
        let orders = &config.plugins["orders"];
        assert_eq!(
            orders.source.file(),
            Some(Path::new("/srv/optech/wasm/orders-v2.wasm"))
        );
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
    fn a_registry_source_is_read_with_its_refresh_and_limits() {
        let config = parse(
            r#"
            [server]
            insecure_registries = ["127.0.0.1:5000"]
            max_artifact_size = "32MiB"
            pull_timeout = "30s"
            max_concurrent_pulls = 4
            [keys]
            orders = "orders"
            pinned = "pinned"
            [plugins.orders]
            source = { oci = "registry.example.com/team/orders:1.4" }
            refresh = "60s"
            [plugins.pinned]
            source = { oci = "registry.example.com/team/orders@sha256:9575310caa5c43bd207d9ef30f04c6d24fbb34cff3b8967c3163f868febb2005" }
            "#,
        )
        .unwrap();
        let registry = &config.server.registry;
        assert_eq!(registry.insecure, vec!["127.0.0.1:5000".to_string()]);
        assert_eq!(registry.max_artifact_size, 32 << 20);
        assert_eq!(registry.pull_timeout, Duration::from_secs(30));
        assert_eq!(registry.max_concurrent_pulls, 4);
        let orders = config.plugins["orders"].source.oci().unwrap();
        assert_eq!(orders.reference, "registry.example.com/team/orders:1.4");
        assert_eq!(orders.refresh, Some(Duration::from_secs(60)));
        assert!(!orders.is_digest());
        let pinned = config.plugins["pinned"].source.oci().unwrap();
        assert!(pinned.is_digest() && pinned.refresh.is_none());
    }

    #[test]
    fn registry_mistakes_are_problems_with_their_keys() {
        let err = parse(
            r#"
            [server]
            insecure_registries = ["http://127.0.0.1:5000"]
            [keys]
            a = "a"
            b = "b"
            c = "c"
            d = "d"
            [plugins.a]
            source = { oci = "Not A Reference!" }
            [plugins.b]
            source = "b.wasm"
            refresh = "60s"
            [plugins.c]
            source = { oci = "r.example/c@sha256:9575310caa5c43bd207d9ef30f04c6d24fbb34cff3b8967c3163f868febb2005" }
            refresh = "60s"
            [plugins.d]
            source = { registry = "r.example/d:1" }
            "#,
        )
        .unwrap_err();
        assert_problems_at(
            &err,
            &[
                "server.insecure_registries",
                "plugins.a.source",
                "plugins.b.refresh",
                "plugins.c.refresh",
                "plugins.d.source",
            ],
        );
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
        assert_problems_at(
            &err,
            &[
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
            ],
        );
    }

    #[test]
    fn keep_resident_is_a_size_of_at_most_4gib() {
        let off = parse("[server]\nkeep_resident = \"0\"\n").unwrap();
        assert_eq!(off.server.keep_resident, 0);
        for (value, expected) in [
            ("\"8GiB\"", "at most 4GiB"),
            ("\"lots\"", "not a size"),
            ("64", "string"),
        ] {
            let err = parse(&format!("[server]\nkeep_resident = {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/srv/optech/optech.toml")
                    && err.contains("server.keep_resident")
                    && err.contains(expected),
                "{err}"
            );
        }
        let err = parse("[server]\nkeep_resdent = \"1MiB\"\n").unwrap_err();
        assert!(err.to_string().contains("keep_resident"), "{err}");
    }

    #[test]
    fn a_bad_mode_is_a_problem_naming_the_value() {
        let err = parse("[keys]\nk = \"p\"\n[plugins.p]\nmode = \"later\"\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("line 4: plugins.p.mode: \"later\""),
            "{err}"
        );
    }

    #[test]
    fn no_problem_hides_another_and_each_has_its_line() {
        let err = parse(
            "[server]\nmax_body = \"lots\"\n[keys]\nk = \"p\"\n[plugins.p]\n\
             mode = \"sometimes\"\ntimeout = \"-1s\"\ntiemout = \"2s\"\nmax_in_flight = \"four\"\n",
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let found: Vec<(Option<usize>, &str)> =
            problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        for expected in [
            (Some(2), "server.max_body"),
            (Some(6), "plugins.p.mode"),
            (Some(7), "plugins.p.timeout"),
            (Some(8), "plugins.p.tiemout"),
            (Some(9), "plugins.p.max_in_flight"),
        ] {
            assert!(
                found.contains(&expected),
                "{expected:?} missing in {found:?}"
            );
        }
        let text = err.to_string();
        assert!(text.contains("did you mean `timeout`"), "{text}");
        assert!(text.contains("5 problem(s)"), "{text}");
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
    fn store_grants_are_bucket_names() {
        let config = parse(
            "[keys]\nk = \"orders\"\n[plugins.orders]\nstores = [\"tokens\", \"counters\", \"tokens\"]\n",
        )
        .unwrap();
        let stores: Vec<&str> = config.plugins["orders"]
            .stores
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(stores, ["counters", "tokens"]);
        assert!(
            parse("[keys]\nk = \"p\"\n").unwrap().plugins["p"]
                .stores
                .is_empty()
        );
        let err = parse(
            "[keys]\nk = \"orders\"\n[plugins.orders]\nstores = [\"ok\", \"Tokens\", \"\", \"a b\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 4: plugins.orders.stores: \"Tokens\" is not a bucket name"),
            "{err}"
        );
        assert!(
            err.contains("\"\" is not") && err.contains("\"a b\" is not"),
            "{err}"
        );
        assert!(err.contains("3 problem(s)"), "{err}");
        assert!(parse("[keys]\nk = \"p\"\n[plugins.p]\nstores = \"tokens\"\n").is_err());
    }

    #[test]
    fn telemetry_is_read_and_every_problem_named_with_its_line() {
        let config = parse(
            "[telemetry]\nendpoint = \"http://collector:4318\"\nprotocol = \"grpc\"\n\
             sampler = \"parentbased_traceidratio\"\nsampler_arg = 0.25\n\
             headers = { \"x-api-key\" = \"k\" }\nincoming_traceparent = \"parent\"\n\
             trace_url = \"http://localhost:16686/trace/{trace_id}\"\nexport_timeout = \"2s\"\n",
        )
        .unwrap();
        let t = &config.telemetry;
        assert_eq!(t.endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(t.protocol, Some(Protocol::Grpc));
        assert_eq!(t.sampler, Some(SamplerKind::ParentBasedTraceIdRatio));
        assert_eq!(t.sampler_arg, Some(0.25));
        assert_eq!(t.headers["x-api-key"], "k");
        assert_eq!(t.incoming_traceparent, Incoming::Parent);
        assert_eq!(t.export_timeout, std::time::Duration::from_secs(2));
        assert!(t.propagate);
        assert_eq!(parse("").unwrap().telemetry, TelemetryConfig::unset());
        let err = parse(
            "[telemetry]\nendpoint = \"collector:4318\"\nprotocol = \"http/json\"\n\
             sampler_arg = 2\nincoming_traceparent = \"trust\"\ntrace_url = \"http://j/\"\n\
             headers = { a = 1 }\nsampling = 1\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "line 2: telemetry.endpoint",
            "line 3: telemetry.protocol",
            "line 4: telemetry.sampler_arg",
            "line 5: telemetry.incoming_traceparent",
            "line 6: telemetry.trace_url",
            "line 7: telemetry.headers.a",
            "telemetry.sampling: unknown setting",
        ] {
            assert!(err.contains(expected), "{expected} missing from {err}");
        }
    }

    #[test]
    fn store_limits_are_read_and_checked() {
        let config = parse(
            "[store]\nmax_key_size = \"256B\"\nmax_value_size = \"64KiB\"\nmax_keys_per_bucket = 10\nmax_bytes_per_plugin = \"1MiB\"\n",
        )
        .unwrap();
        assert_eq!(
            config.store,
            StoreSettings {
                max_key_size: 256,
                max_value_size: 64 * 1024,
                max_keys_per_bucket: 10,
                max_bytes_per_plugin: 1 << 20,
            }
        );
        assert_eq!(parse("").unwrap().store, StoreSettings::default());
        let err = parse(
            "[store]\nmax_key_size = \"1MiB\"\nmax_keys_per_bucket = 0\nmax_value = \"1KiB\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 2: store.max_key_size: must be between"),
            "{err}"
        );
        assert!(err.contains("line 3: store.max_keys_per_bucket"), "{err}");
        assert!(err.contains("store.max_value"), "{err}");
        assert!(err.contains("3 problem(s)"), "{err}");
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
    fn a_plugin_no_key_maps_to_still_has_its_own_problems_reported() {
        let err = parse(
            "[keys]\nk = \"p\"\n[plugins.echo]\nmode = \"sometimes\"\ntimeout = \"-1s\"\ntimout = \"1s\"\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "plugins.echo: no key in [keys] maps to this plugin",
            "plugins.echo.mode",
            "plugins.echo.timeout",
            "plugins.echo.timout",
        ] {
            assert!(err.contains(expected), "{expected} in:\n{err}");
        }
    }

    #[test]
    fn client_limits_have_defaults_and_are_checked() {
        let defaults = parse("").unwrap();
        assert_eq!(defaults.server.clients, ClientLimits::default());
        let set = parse(
            "[server]\nmax_connections = 100\nheader_timeout = \"2s\"\nbody_timeout = \"3s\"\nsend_timeout = \"4s\"\nmax_unverified = \"8MiB\"\n",
        )
        .unwrap();
        let clients = &set.server.clients;
        assert_eq!(clients.max_connections, 100);
        assert_eq!(
            (
                clients.header_timeout,
                clients.body_timeout,
                clients.send_timeout
            ),
            (
                Duration::from_secs(2),
                Duration::from_secs(3),
                Duration::from_secs(4)
            )
        );
        assert_eq!(clients.max_unverified, 8 << 20);
        let err = parse(
            "[server]\nmax_connections = 0\nheader_timeout = \"0s\"\nmax_body = \"2MiB\"\nmax_unverified = \"1MiB\"\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "server.max_connections",
            "server.header_timeout",
            "server.max_unverified",
        ] {
            assert!(err.contains(key), "{key} in:\n{err}");
        }
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
