//! The one resolution of `[telemetry]` and the standard `OTEL_*` variables
//! into what the exporter is built with. The environment wins over the file,
//! the file over the defaults; a value that does not parse is an error naming
//! its variable, never silently ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::config::{
    Incoming, Protocol, SamplerKind, TelemetryConfig, check_endpoint, parse_ratio,
};

/// Every problem with the `OTEL_*` variables, one per line.
#[derive(Debug, Error)]
#[error("{}", .0.join("\n"))]
pub struct SettingsError(pub Vec<String>);

/// Where a resolved value came from, for `optech check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Env(&'static str),
    File,
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(name) => write!(f, "from {name}"),
            Self::File => f.write_str("from [telemetry]"),
            Self::Default => f.write_str("default"),
        }
    }
}

/// What tracing runs with, once on.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The URL spans are sent to: for `http/protobuf` it ends in `/v1/traces`.
    pub endpoint: (String, Source),
    pub protocol: (Protocol, Source),
    /// Sent with every export (API keys): values are never logged or listed.
    pub headers: BTreeMap<String, String>,
    pub service_name: (String, Source),
    /// `service.name` is not among them: it is `service_name`.
    pub resource_attributes: BTreeMap<String, String>,
    pub sampler: (SamplerKind, Source),
    pub ratio: f64,
    pub incoming: Incoming,
    /// Whether plugins' outbound requests carry `traceparent`.
    pub propagate: bool,
    pub trace_url: Option<String>,
    pub max_queue_size: usize,
    pub export_timeout: Duration,
}

/// Why tracing is off, for `optech check` and the start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Off {
    /// No endpoint anywhere, and `enabled` not set.
    NoEndpoint,
    /// `enabled = false` in `[telemetry]`.
    Disabled,
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    Env(&'static str),
}

impl std::fmt::Display for Off {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoEndpoint => f.write_str(
                "off (no endpoint: set [telemetry] endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)",
            ),
            Self::Disabled => f.write_str("off ([telemetry] enabled = false)"),
            Self::Env(name) => write!(f, "off ({name})"),
        }
    }
}

/// Resolves the file's settings against the environment (`env` looks a
/// variable up; empty counts as unset, as OTel's specification says).
pub fn resolve(
    file: &TelemetryConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Result<Settings, Off>, SettingsError> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut problems = Vec::new();

    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(Err(Off::Env("OTEL_SDK_DISABLED=true")));
    }
    if let Some(exporter) = var("OTEL_TRACES_EXPORTER") {
        match exporter.trim().to_ascii_lowercase().as_str() {
            "none" => return Ok(Err(Off::Env("OTEL_TRACES_EXPORTER=none"))),
            "otlp" => {}
            other => problems.push(format!(
                "OTEL_TRACES_EXPORTER: {other:?} is not supported: \"otlp\" or \"none\""
            )),
        }
    }

    let protocol = match (
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v)),
        var("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v)),
    ) {
        (Some((name, v)), _) | (None, Some((name, v))) => match Protocol::parse(&v) {
            Ok(p) => (p, Source::Env(name)),
            Err(why) => {
                problems.push(format!("{name}: {why}"));
                (Protocol::HttpProtobuf, Source::Default)
            }
        },
        (None, None) => match file.protocol {
            Some(p) => (p, Source::File),
            None => (Protocol::HttpProtobuf, Source::Default),
        },
    };

    // The signal's own endpoint is used as is; the generic one (and the
    // file's) is a base that http/protobuf adds `/v1/traces` to.
    let endpoint = if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some((
            url,
            Source::Env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            false,
        ))
    } else if let Some(url) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some((url, Source::Env("OTEL_EXPORTER_OTLP_ENDPOINT"), true))
    } else {
        file.endpoint.clone().map(|url| (url, Source::File, true))
    };
    let configured = endpoint.is_some();
    let endpoint = match endpoint {
        Some((url, source, base)) => {
            // The file's endpoint was checked when the config loaded.
            if let (Err(why), Source::Env(name)) = (check_endpoint(url.trim()), source) {
                problems.push(format!("{name}: {why}"));
            }
            let url = url.trim().to_string();
            let url = if base && protocol.0 == Protocol::HttpProtobuf {
                traces_url(&url)
            } else {
                url
            };
            (url, source)
        }
        None => {
            let base = protocol.0.default_endpoint();
            let url = match protocol.0 {
                Protocol::HttpProtobuf => traces_url(base),
                Protocol::Grpc => base.to_string(),
            };
            (url, Source::Default)
        }
    };

    let mut headers = file.headers.clone();
    for name in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some(text) = var(name) {
            match parse_pairs(&text) {
                Ok(pairs) => headers.extend(pairs),
                Err(why) => problems.push(format!("{name}: {why}")),
            }
        }
    }

    let mut resource_attributes = file.resource_attributes.clone();
    if let Some(text) = var("OTEL_RESOURCE_ATTRIBUTES") {
        match parse_pairs(&text) {
            Ok(pairs) => resource_attributes.extend(pairs),
            Err(why) => problems.push(format!("OTEL_RESOURCE_ATTRIBUTES: {why}")),
        }
    }
    let from_attributes = resource_attributes.remove("service.name");
    let service_name = if let Some(name) = var("OTEL_SERVICE_NAME") {
        (name.trim().to_string(), Source::Env("OTEL_SERVICE_NAME"))
    } else if let Some(name) = from_attributes
        .filter(|_| var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|t| t.contains("service.name")))
    {
        (name, Source::Env("OTEL_RESOURCE_ATTRIBUTES"))
    } else if let Some(name) = &file.service_name {
        (name.clone(), Source::File)
    } else if let Some(name) = file.resource_attributes.get("service.name") {
        (name.clone(), Source::File)
    } else {
        ("optech".to_string(), Source::Default)
    };

    let sampler = match var("OTEL_TRACES_SAMPLER") {
        Some(text) => match SamplerKind::parse(&text) {
            Ok(s) => (s, Source::Env("OTEL_TRACES_SAMPLER")),
            Err(why) => {
                problems.push(format!("OTEL_TRACES_SAMPLER: {why}"));
                (SamplerKind::ParentBasedAlwaysOn, Source::Default)
            }
        },
        None => match file.sampler {
            Some(s) => (s, Source::File),
            None => (SamplerKind::ParentBasedAlwaysOn, Source::Default),
        },
    };
    let ratio = match var("OTEL_TRACES_SAMPLER_ARG") {
        Some(text) => parse_ratio(&text).unwrap_or_else(|why| {
            problems.push(format!("OTEL_TRACES_SAMPLER_ARG: {why}"));
            1.0
        }),
        None => file.sampler_arg.unwrap_or(1.0),
    };

    let mut propagate = file.propagate;
    let mut incoming = file.incoming_traceparent;
    if let Some(text) = var("OTEL_PROPAGATORS") {
        let names: Vec<String> = text
            .split(',')
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        if names.iter().any(|n| n == "none") {
            propagate = false;
            incoming = Incoming::Ignore;
        } else if !names.iter().any(|n| n == "tracecontext") {
            problems.push(format!(
                "OTEL_PROPAGATORS: {text:?}: the host propagates W3C \"tracecontext\" \
                 (or \"none\"); name it"
            ));
        }
    }

    let max_queue_size = match var("OTEL_BSP_MAX_QUEUE_SIZE") {
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                problems.push(format!(
                    "OTEL_BSP_MAX_QUEUE_SIZE: {text:?} is not a whole number above 0"
                ));
                crate::config::DEFAULT_MAX_QUEUE_SIZE as usize
            }
        },
        None => usize::try_from(file.max_queue_size).unwrap_or(usize::MAX),
    };
    let mut export_timeout = file.export_timeout;
    for name in [
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    ] {
        if let Some(text) = var(name) {
            match text.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => export_timeout = Duration::from_millis(ms),
                _ => problems.push(format!(
                    "{name}: {text:?} is not a number of milliseconds above 0"
                )),
            }
        }
    }

    if !problems.is_empty() {
        return Err(SettingsError(problems));
    }
    match file.enabled {
        Some(false) => return Ok(Err(Off::Disabled)),
        None if !configured => return Ok(Err(Off::NoEndpoint)),
        _ => {}
    }
    Ok(Ok(Settings {
        endpoint,
        protocol,
        headers,
        service_name,
        resource_attributes,
        sampler,
        ratio,
        incoming,
        propagate,
        trace_url: file.trace_url.clone(),
        max_queue_size,
        export_timeout,
    }))
}

/// A base URL with OTLP/HTTP's path for traces.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// `k=v,k2=v2` with percent-encoded values, as the OTel variables are written.
fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            // The value may be a secret: only its position is named.
            return Err(format!("entry {} is not key=value", pairs.len() + 1));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("entry {} has an empty key", pairs.len() + 1));
        }
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| format!("the value of {key} is not UTF-8 once decoded"))?;
        pairs.push((key.to_string(), value.into_owned()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with(
        vars: &[(&str, &str)],
        file: &TelemetryConfig,
    ) -> Result<Result<Settings, Off>, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(file, &move |name| map.get(name).cloned())
    }

    #[test]
    fn off_without_an_endpoint_and_when_disabled() {
        let unset = TelemetryConfig::unset();
        assert_eq!(with(&[], &unset).unwrap(), Err(Off::NoEndpoint));
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")];
        assert!(with(&on, &unset).unwrap().is_ok());
        let disabled = [on[0], ("OTEL_SDK_DISABLED", "true")];
        assert!(matches!(with(&disabled, &unset).unwrap(), Err(Off::Env(_))));
        let none = [on[0], ("OTEL_TRACES_EXPORTER", "none")];
        assert!(matches!(with(&none, &unset).unwrap(), Err(Off::Env(_))));
        let file = TelemetryConfig {
            enabled: Some(false),
            ..TelemetryConfig::unset()
        };
        assert_eq!(with(&on, &file).unwrap(), Err(Off::Disabled));
        let file = TelemetryConfig {
            enabled: Some(true),
            ..TelemetryConfig::unset()
        };
        let settings = with(&[], &file).unwrap().unwrap();
        assert_eq!(settings.endpoint.0, "http://localhost:4318/v1/traces");
        assert_eq!(settings.endpoint.1, Source::Default);
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let file = TelemetryConfig {
            endpoint: Some("http://file:4318/".into()),
            protocol: Some(Protocol::Grpc),
            service_name: Some("from-file".into()),
            sampler: Some(SamplerKind::TraceIdRatio),
            sampler_arg: Some(0.5),
            headers: [("x-a".to_string(), "file".to_string())].into(),
            ..TelemetryConfig::unset()
        };
        let settings = with(&[], &file).unwrap().unwrap();
        assert_eq!(
            settings.endpoint.0, "http://file:4318/",
            "gRPC takes the base as is"
        );
        assert_eq!(settings.service_name.0, "from-file");
        assert_eq!(settings.ratio, 0.5);
        let env = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-a=env%20value,x-b=2"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
        ];
        let settings = with(&env, &file).unwrap().unwrap();
        assert_eq!(settings.protocol.0, Protocol::HttpProtobuf);
        assert_eq!(settings.endpoint.0, "http://file:4318/v1/traces");
        assert_eq!(
            settings.service_name,
            ("from-env".into(), Source::Env("OTEL_SERVICE_NAME"))
        );
        assert_eq!(settings.sampler.0, SamplerKind::AlwaysOff);
        assert_eq!(settings.headers["x-a"], "env value");
        assert_eq!(settings.headers["x-b"], "2");
        assert_eq!(
            settings.resource_attributes["deployment.environment"],
            "prod"
        );
        let signal = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9999/custom")];
        let settings = with(&signal, &file).unwrap().unwrap();
        assert_eq!(settings.endpoint.0, "http://c:9999/custom", "used as is");
    }

    #[test]
    fn every_bad_variable_is_named() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "secret-without-equals"),
            ("OTEL_PROPAGATORS", "b3"),
        ];
        let err = with(&env, &TelemetryConfig::unset())
            .unwrap_err()
            .to_string();
        for name in [
            "OTEL_EXPORTER_OTLP_ENDPOINT:",
            "OTEL_EXPORTER_OTLP_PROTOCOL:",
            "OTEL_TRACES_SAMPLER:",
            "OTEL_TRACES_SAMPLER_ARG:",
            "OTEL_EXPORTER_OTLP_HEADERS:",
            "OTEL_PROPAGATORS:",
        ] {
            assert!(err.contains(name), "{name} missing from {err}");
        }
        assert!(
            !err.contains("secret-without-equals"),
            "a header value is never echoed: {err}"
        );
    }

    #[test]
    fn propagators_none_turns_propagation_off() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_PROPAGATORS", "none"),
        ];
        let settings = with(&env, &TelemetryConfig::unset()).unwrap().unwrap();
        assert!(!settings.propagate);
        assert_eq!(settings.incoming, Incoming::Ignore);
    }
}
