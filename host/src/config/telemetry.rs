//! `[telemetry]`: where the host's OpenTelemetry traces go and which it keeps.
//!
//! Every setting has a standard `OTEL_*` environment variable too; where both
//! are set the environment wins (`telemetry::settings` resolves them), so a
//! deployment can point a shared config at its own collector.

use std::collections::BTreeMap;
use std::time::Duration;

use super::read::{Reader, Section};

/// The keys of `[telemetry]`.
const KNOWN: &[&str] = &[
    "enabled",
    "endpoint",
    "protocol",
    "headers",
    "service_name",
    "resource_attributes",
    "sampler",
    "sampler_arg",
    "incoming_traceparent",
    "propagate",
    "trace_url",
    "max_queue_size",
    "export_timeout",
];

pub const DEFAULT_MAX_QUEUE_SIZE: u64 = 2048;
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How spans reach the collector: OTLP's two binary transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf`, port 4318, `POST /v1/traces`.
    HttpProtobuf,
    /// `grpc`, port 4317.
    Grpc,
}

impl Protocol {
    /// OTel's names, as `OTEL_EXPORTER_OTLP_PROTOCOL` spells them.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "grpc" => Ok(Self::Grpc),
            "http/json" => {
                Err("\"http/json\" is not supported: use \"http/protobuf\" or \"grpc\"".into())
            }
            _ => Err(format!("{text:?} is not \"http/protobuf\" or \"grpc\"")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpProtobuf => "http/protobuf",
            Self::Grpc => "grpc",
        }
    }

    /// Where a collector on this machine listens.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Self::HttpProtobuf => "http://localhost:4318",
            Self::Grpc => "http://localhost:4317",
        }
    }
}

/// Which new traces are kept: OTel's sampler names (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio,
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio,
}

impl SamplerKind {
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio,
            "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedTraceIdRatio,
            _ => {
                return Err(format!(
                    "{text:?} is not one of always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlwaysOn => "always_on",
            Self::AlwaysOff => "always_off",
            Self::TraceIdRatio => "traceidratio",
            Self::ParentBasedAlwaysOn => "parentbased_always_on",
            Self::ParentBasedAlwaysOff => "parentbased_always_off",
            Self::ParentBasedTraceIdRatio => "parentbased_traceidratio",
        }
    }

    /// Whether `sampler_arg` means anything to it.
    pub fn takes_ratio(self) -> bool {
        matches!(self, Self::TraceIdRatio | Self::ParentBasedTraceIdRatio)
    }
}

/// A sampling ratio: 0 keeps no new trace, 1 keeps every one.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?} is not a ratio between 0 and 1")),
    }
}

/// What the host makes of a `traceparent` on an incoming data request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Incoming {
    /// Start a new trace and record the caller's as a link (the default: a
    /// caller cannot choose our trace ids or our sampling).
    #[default]
    Link,
    /// Continue the caller's trace: for a caller whose traces you collect too.
    Parent,
    /// Neither.
    Ignore,
}

impl Incoming {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "link" => Ok(Self::Link),
            "parent" => Ok(Self::Parent),
            "ignore" => Ok(Self::Ignore),
            _ => Err(format!(
                "{text:?} is not \"link\", \"parent\" or \"ignore\""
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Link => "link",
            Self::Parent => "parent",
            Self::Ignore => "ignore",
        }
    }
}

/// `[telemetry]` as written: `None` where the file says nothing, so the
/// environment or the default decides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    pub enabled: Option<bool>,
    pub endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    pub headers: BTreeMap<String, String>,
    pub service_name: Option<String>,
    pub resource_attributes: BTreeMap<String, String>,
    pub sampler: Option<SamplerKind>,
    pub sampler_arg: Option<f64>,
    pub incoming_traceparent: Incoming,
    /// Send `traceparent` on plugins' outbound requests.
    pub propagate: bool,
    /// The console's link to a trace in Jaeger, Tempo...: `{trace_id}` is replaced.
    pub trace_url: Option<String>,
    pub max_queue_size: u64,
    pub export_timeout: Duration,
}

impl TelemetryConfig {
    /// The settings of a file without `[telemetry]`.
    pub fn unset() -> Self {
        Self {
            propagate: true,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            export_timeout: DEFAULT_EXPORT_TIMEOUT,
            ..Self::default()
        }
    }
}

pub(super) fn read(reader: &mut Reader<'_>, section: &Section<'_>) -> TelemetryConfig {
    section.unknown_keys(reader, KNOWN);
    let mut config = TelemetryConfig::unset();
    if section.get("enabled").is_some() {
        config.enabled = Some(section.bool(reader, "enabled", false));
    }
    config.endpoint =
        section
            .string(reader, "endpoint")
            .and_then(|(text, span)| match check_endpoint(&text) {
                Ok(()) => Some(text),
                Err(why) => {
                    reader.problem(section.key("endpoint"), span, why);
                    None
                }
            });
    if let Some((text, span)) = section.string(reader, "protocol") {
        match Protocol::parse(&text) {
            Ok(p) => config.protocol = Some(p),
            Err(why) => reader.problem(section.key("protocol"), span, why),
        }
    }
    if let Some((text, span)) = section.string(reader, "sampler") {
        match SamplerKind::parse(&text) {
            Ok(s) => config.sampler = Some(s),
            Err(why) => reader.problem(section.key("sampler"), span, why),
        }
    }
    if let Some((item, span)) = section.get("sampler_arg") {
        let number = item
            .as_float()
            .or_else(|| item.as_integer().map(|i| i as f64));
        match number.map(|n| parse_ratio(&n.to_string())) {
            Some(Ok(r)) => config.sampler_arg = Some(r),
            _ => reader.problem(
                section.key("sampler_arg"),
                span,
                "must be a number between 0 and 1",
            ),
        }
    }
    if let Some((text, span)) = section.string(reader, "incoming_traceparent") {
        match Incoming::parse(&text) {
            Ok(i) => config.incoming_traceparent = i,
            Err(why) => reader.problem(section.key("incoming_traceparent"), span, why),
        }
    }
    config.propagate = section.bool(reader, "propagate", true);
    config.service_name = section
        .string(reader, "service_name")
        .and_then(|(text, span)| {
            if text.trim().is_empty() {
                reader.problem(section.key("service_name"), span, "must not be empty");
                None
            } else {
                Some(text)
            }
        });
    config.trace_url = section
        .string(reader, "trace_url")
        .and_then(|(text, span)| {
            let usable = (text.starts_with("http://") || text.starts_with("https://"))
                && text.contains("{trace_id}");
            if usable {
                Some(text)
            } else {
                reader.problem(
                    section.key("trace_url"),
                    span,
                    "must be an http(s) URL with {trace_id} in it, \
                 like \"http://localhost:16686/trace/{trace_id}\"",
                );
                None
            }
        });
    config.headers = string_table(reader, section, "headers");
    config.resource_attributes = string_table(reader, section, "resource_attributes");
    if let Some(n) = section.count(reader, "max_queue_size", 1, "") {
        config.max_queue_size = n;
    }
    config.export_timeout = section.duration(reader, "export_timeout", DEFAULT_EXPORT_TIMEOUT);
    config
}

/// An OTLP endpoint: an `http(s)://` URL with a host.
pub fn check_endpoint(text: &str) -> Result<(), String> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        _ => Err(format!(
            "{text:?} is not an http:// or https:// URL like \"http://localhost:4318\""
        )),
    }
}

/// A table whose values are all strings, like `headers = { "x-key" = "..." }`.
fn string_table(
    reader: &mut Reader<'_>,
    section: &Section<'_>,
    name: &str,
) -> BTreeMap<String, String> {
    let item = section.get(name).map(|(item, _)| item);
    let table = Section::new(reader, section.key(name), item);
    let mut found = BTreeMap::new();
    for (key, item, span) in table.entries() {
        match item.as_str() {
            Some(value) => {
                found.insert(key.to_string(), value.to_string());
            }
            None => reader.problem(
                table.key(key),
                span,
                format!("must be a string, not {}", item.type_name()),
            ),
        }
    }
    found
}
