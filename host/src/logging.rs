//! How the host's log is written: readable text (one event per line) or JSON
//! (one object per line), filtered by `OPTECH_LOG`.
//!
//! Invariant: one event is one line. Text that a plugin or a peer chose (a
//! plugin's log line, its stdout, an error message) cannot start a line of
//! its own: in the text format every control character in a field or a
//! span's fields, `\n` and `\r` included, is written as an escape
//! (`\n`, `\r`, `\t`, `\u{1b}`), so a plugin cannot forge a host log line
//! or colour the terminal. JSON escapes them by itself.

use std::fmt;
use std::io::IsTerminal as _;

use opentelemetry::trace::TraceContextExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::telemetry::{self, Tracing};

/// The log's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Installs the global subscriber. `OPTECH_LOG` filters (default `info`).
/// With `tracing` (OpenTelemetry on), its layer is added beside the log, and
/// JSON lines carry the `trace_id` and `span_id` they were written in.
pub fn init(format: Format, tracing: Option<&Tracing>) {
    let filter =
        || EnvFilter::try_from_env("OPTECH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let Some(tracing) = tracing else {
        // Off: exactly the subscriber the host always had, nothing between.
        match format {
            Format::Text => tracing_subscriber::fmt()
                .fmt_fields(EscapedFields::default())
                .with_ansi(ansi)
                .with_env_filter(filter())
                .init(),
            // One object per line; the request's span (id, key, plugin) is a field of each.
            Format::Json => tracing_subscriber::fmt()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_env_filter(filter())
                .init(),
        }
        return;
    };
    // The spans made for OpenTelemetry stay out of the log.
    let log_filter = filter().and(filter_fn(|meta| meta.target() != telemetry::TARGET));
    let registry = tracing_subscriber::registry().with(tracing.layer());
    match format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(EscapedFields::default())
                    .with_ansi(ansi)
                    .with_filter(log_filter),
            )
            .init(),
        Format::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(WithTraceIds(
                        tracing_subscriber::fmt::format()
                            .json()
                            .with_current_span(true)
                            .with_span_list(false),
                    ))
                    .with_filter(log_filter),
            )
            .init(),
    }
}

/// JSON lines with the ids of the OpenTelemetry span they were written in,
/// as top-level `trace_id` and `span_id`, so a log search finds the trace.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = opentelemetry::Context::map_current(|cx| {
            let context = cx.span().span_context().clone();
            context
                .is_valid()
                .then(|| (context.trace_id(), context.span_id()))
        });
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some((trace, span)), Some(head)) => {
                writeln!(
                    writer,
                    "{head},\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"}}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}

/// Whether the text log is coloured: only on a terminal (a file or a pipe
/// gets plain text), and not when `NO_COLOR` is set to anything
/// (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The default field formatting, with control characters escaped.
#[derive(Debug, Default)]
pub struct EscapedFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut plain = String::new();
        self.inner.format_fields(Writer::new(&mut plain), fields)?;
        write_escaped(&mut writer, &plain)
    }
}

/// Writes `text` with every control character as an escape.
pub fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let mut rest = text;
    while let Some(at) = rest.find(char::is_control) {
        out.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().unwrap_or('\0');
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            other => write!(out, "\\u{{{:x}}}", other as u32)?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "a file or a pipe");
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())), "NO_COLOR set but empty");
    }

    #[test]
    fn control_characters_become_escapes() {
        let mut out = String::new();
        write_escaped(
            &mut out,
            "ok\n2026-01-01T00:00:00Z ERROR forged\r\t\u{1b}[31mred é",
        )
        .unwrap();
        assert_eq!(
            out,
            "ok\\n2026-01-01T00:00:00Z ERROR forged\\r\\t\\u{1b}[31mred é"
        );
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_forged_line_stays_inside_its_event() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields::default())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", key = "a\nb");
            let _in = span.enter();
            tracing::info!(plugin = "p", "ok\n2026-01-01T00:00:00Z ERROR forged");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("ok\\n2026-01-01T00:00:00Z ERROR forged"),
            "{text}"
        );
        assert!(text.contains("a\\nb"), "{text}");
    }
}
