//! `[server]`: where the host listens, its limits, where it keeps its outbox,
//! and TLS.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::admin::{self, AdminSettings};
use super::clients::{self, ClientLimits};
use super::read::{Reader, Section};
use super::registry::{self, RegistrySettings};
use crate::credentials::Environment;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The admin listener: loopback only unless an operator says otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
/// How long closed outbox records are kept for inspection (and duplicate detection).
pub const DEFAULT_OUTBOX_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_COMPILE_CACHE_MAX: u64 = 1 << 30;
/// How long a replica's claim on shared outbox work lasts unless renewed.
pub const DEFAULT_OUTBOX_LEASE: Duration = Duration::from_secs(30);
/// A lease is renewed every quarter of itself; below this, a slow query or a
/// busy host would let it lapse.
pub const MIN_OUTBOX_LEASE: Duration = Duration::from_secs(1);
/// The smallest `outbox_max_size`: room for the schema and some records.
pub const MIN_OUTBOX_MAX_SIZE: u64 = 1 << 20;
/// Overrides `[server] outbox`, so a password can stay out of the file.
pub const OUTBOX_URL_ENV: &str = "OPTECH_OUTBOX_URL";
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// The seed: a link is valid for 10 minutes after the request. Only tests shorten it.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Bytes of a freed instance's memory its pool slot keeps, reset in place,
/// for the next instance. One echo request dirties 0.63 MiB of a TypeScript
/// plugin's memory and 0.53 MiB of a Python one's (BENCHMARKS.md); 16 MiB
/// holds all of a 12-18 MB snapshot's initial memory (9 and 13.6 MiB), so no
/// page of it is faulted in twice, and caps what a warm slot keeps after a
/// request that grew its memory.
pub const DEFAULT_KEEP_RESIDENT: u64 = 16 << 20;

const KNOWN: &[&str] = &[
    "listen",
    "admin_listen",
    "plugins_dir",
    "data_dir",
    "max_body",
    "max_in_flight",
    "link_ttl",
    "shutdown_grace",
    "watch",
    "compile_cache",
    "compile_cache_max",
    "keep_resident",
    "outbox_retention",
    "outbox",
    "outbox_lease",
    "outbox_max_size",
    "tls_cert",
    "tls_key",
];

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
    /// Bytes of its memory a freed instance's pool slot keeps for the next
    /// one; what lies past it is returned to the kernel and faulted in again.
    pub keep_resident: u64,
    /// How long a closed outbox record is kept before it is pruned.
    pub outbox_retention: Duration,
    /// A PostgreSQL outbox shared by replicas; `None` for SQLite in `data_dir`.
    pub outbox: Option<OutboxUrl>,
    /// How long a replica's claim lasts unless renewed (shared outbox only).
    pub outbox_lease: Duration,
    /// Most bytes the SQLite outbox file may take; past it async requests get 503.
    pub outbox_max_size: Option<u64>,
    /// TLS on the public listener; `None` for plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The admin listener's access and the console's memory.
    pub admin: AdminSettings,
    /// What a client may hold of the public listener before it is verified.
    pub clients: ClientLimits,
    /// How plugins are pulled from OCI registries.
    pub registry: RegistrySettings,
}

impl ServerConfig {
    /// Whether the admin listener is reachable from beyond this machine.
    pub fn admin_beyond_loopback(&self) -> bool {
        self.admin_listen.is_some_and(|a| !a.ip().is_loopback())
    }
}

/// The certificate chain and private key files of the public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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
        f.write_str(&redact_url(&self.0))
    }
}

/// A connection URL without its password, for messages: whether it is in
/// the user info (`user:pass@`) or a query parameter (`?password=`).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<the outbox URL>".into();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        let kept: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    parsed.to_string()
}

/// An address, or none for the empty string (a listener turned off).
pub fn parse_optional_addr(text: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
    match text.trim() {
        "" => Ok(None),
        text => text.parse().map(Some),
    }
}

/// Reads `[server]`; paths are resolved against `base`.
pub(super) fn read(
    reader: &mut Reader<'_>,
    section: &Section<'_>,
    base: &Path,
    env: &Environment,
) -> ServerConfig {
    let known: Vec<&str> = KNOWN
        .iter()
        .chain(admin::KNOWN)
        .chain(clients::KNOWN)
        .chain(registry::KNOWN)
        .copied()
        .collect();
    section.unknown_keys(reader, &known);
    let listen = match section.string(reader, "listen") {
        None => DEFAULT_LISTEN.parse().ok(),
        Some((text, span)) => text
            .parse()
            .map_err(|e| {
                reader.problem(
                    section.key("listen"),
                    span,
                    format!("not an address like 127.0.0.1:8080 ({e})"),
                );
            })
            .ok(),
    }
    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let admin_listen = match section.string(reader, "admin_listen") {
        None => parse_optional_addr(DEFAULT_ADMIN_LISTEN).ok().flatten(),
        Some((text, span)) => parse_optional_addr(&text).unwrap_or_else(|e| {
            reader.problem(
                section.key("admin_listen"),
                span,
                format!("not an address like 127.0.0.1:9091, or \"\" for none ({e})"),
            );
            None
        }),
    };
    let dir = |reader: &mut Reader<'_>, name: &str, default: &str| {
        base.join(
            section
                .string(reader, name)
                .map(|(text, _)| text)
                .unwrap_or_else(|| default.into()),
        )
    };
    let plugins_dir = dir(reader, "plugins_dir", "plugins");
    let data_dir = dir(reader, "data_dir", "data");
    let max_body = section.size(reader, "max_body").unwrap_or(DEFAULT_MAX_BODY);
    let max_in_flight = section
        .count(reader, "max_in_flight", 1, "")
        .map_or(DEFAULT_MAX_IN_FLIGHT, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    let link_ttl = section.duration(reader, "link_ttl", DEFAULT_LINK_TTL);
    let shutdown_grace = section.duration(reader, "shutdown_grace", DEFAULT_SHUTDOWN_GRACE);
    let watch = section.bool(reader, "watch", true);
    let compile_cache = section.bool(reader, "compile_cache", true);
    let compile_cache_max = section
        .size(reader, "compile_cache_max")
        .unwrap_or(DEFAULT_COMPILE_CACHE_MAX);
    let keep_resident = section
        .size(reader, "keep_resident")
        .unwrap_or(DEFAULT_KEEP_RESIDENT);
    if keep_resident > super::MAX_MEMORY {
        let span = section
            .string(reader, "keep_resident")
            .and_then(|(_, span)| span);
        reader.problem(
            section.key("keep_resident"),
            span,
            "must be at most 4GiB, the largest memory a plugin may have",
        );
    }
    let outbox_retention = section.duration(reader, "outbox_retention", DEFAULT_OUTBOX_RETENTION);
    let outbox_lease = section.duration(reader, "outbox_lease", DEFAULT_OUTBOX_LEASE);
    if outbox_lease < MIN_OUTBOX_LEASE {
        let span = section
            .string(reader, "outbox_lease")
            .and_then(|(_, span)| span);
        reader.problem(
            section.key("outbox_lease"),
            span,
            format!(
                "must be at least {MIN_OUTBOX_LEASE:?}: a shorter lease lapses between heartbeats"
            ),
        );
    }
    let outbox_max_size = section.size(reader, "outbox_max_size");
    if outbox_max_size.is_some_and(|n| n < MIN_OUTBOX_MAX_SIZE) {
        let span = section
            .string(reader, "outbox_max_size")
            .and_then(|(_, span)| span);
        reader.problem(
            section.key("outbox_max_size"),
            span,
            "must be at least 1MiB",
        );
    }
    let tls = match (
        section.string(reader, "tls_cert"),
        section.string(reader, "tls_key"),
    ) {
        (Some((cert, _)), Some((key, _))) => Some(TlsFiles {
            cert: base.join(cert),
            key: base.join(key),
        }),
        (None, None) => None,
        (Some((_, span)), None) => {
            reader.problem(section.key("tls_key"), span, "must be set with tls_cert");
            None
        }
        (None, Some((_, span))) => {
            reader.problem(section.key("tls_cert"), span, "must be set with tls_key");
            None
        }
    };
    let written = section.string(reader, "outbox");
    let outbox = match env.get(OUTBOX_URL_ENV).map(|url| (url, None)).or(written) {
        None => None,
        Some((url, _)) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Some(OutboxUrl(url))
        }
        Some((url, span)) => {
            reader.problem(
                section.key("outbox"),
                span,
                format!(
                    "{} is not a postgres:// URL (leave it out for SQLite in data_dir)",
                    redact_url(&url)
                ),
            );
            None
        }
    };
    let admin = admin::read(reader, section, env);
    if let Some(addr) = admin_listen.filter(|a| !a.ip().is_loopback())
        && admin.token.is_none()
    {
        let span = section.get("admin_listen").and_then(|(_, span)| span);
        reader.problem(
            section.key("admin_listen"),
            span,
            format!(
                "{addr} is reachable beyond this machine, so the admin listener needs \
                 admin_token = {{ env = \"NAME\" }} (or listen on 127.0.0.1)"
            ),
        );
    }
    ServerConfig {
        listen,
        admin_listen,
        plugins_dir,
        data_dir,
        max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
        max_in_flight,
        link_ttl,
        shutdown_grace,
        watch,
        compile_cache,
        compile_cache_max,
        keep_resident,
        outbox_retention,
        outbox,
        outbox_lease,
        outbox_max_size,
        tls,
        admin,
        clients: clients::read(reader, section, max_body),
        registry: registry::read(reader, section, base, env),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_password() {
        let shown = redact_url("postgres://optech:s3cr3t@db.internal:5432/optech?sslmode=require");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("db.internal") && shown.contains("optech"),
            "{shown}"
        );
        assert_eq!(redact_url("not a url"), "<the outbox URL>");
        let query =
            redact_url("postgres://db.internal/optech?user=o&password=s3cr3t&sslmode=require");
        assert!(!query.contains("s3cr3t"), "{query}");
        assert!(
            query.contains("sslmode=require") && query.contains("user=o"),
            "{query}"
        );
        let upper = redact_url("postgresql://db/x?PASSWORD=s3cr3t");
        assert!(!upper.contains("s3cr3t"), "{upper}");
    }
}
