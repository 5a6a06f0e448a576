//! A plugin's stdout and stderr: into the host log line by line, tagged with
//! the plugin (the request's span adds the request), and capped per request so
//! a chatty or hostile plugin cannot flood the log or the host's memory.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::recent::{Recent, Ticket};
use crate::redact::Redactor;

/// Bytes of output kept per stream and request; the rest is counted and dropped.
pub const MAX_OUTPUT_PER_REQUEST: usize = 16 * 1024;
/// A line longer than this is logged in pieces.
const MAX_LINE: usize = 4096;

/// One of a plugin instance's output streams.
#[derive(Clone)]
pub struct PluginOutput(Arc<Mutex<LineLog>>);

/// Where the console keeps a plugin's output lines, and the plugin's secrets,
/// redacted from them and from the host log.
#[derive(Clone, Default)]
pub struct ConsoleSink {
    pub recent: Arc<Recent>,
    pub redactor: Redactor,
}

struct LineLog {
    plugin: Arc<str>,
    console: ConsoleSink,
    stream: &'static str,
    /// The console's entry of the current call.
    trace: Option<Ticket>,
    pending: Vec<u8>,
    kept: usize,
    dropped: usize,
}

impl PluginOutput {
    pub fn new(
        plugin: Arc<str>,
        stream: &'static str,
        console: ConsoleSink,
        trace: Option<Ticket>,
    ) -> Self {
        Self(Arc::new(Mutex::new(LineLog {
            plugin,
            console,
            stream,
            trace,
            pending: Vec::new(),
            kept: 0,
            dropped: 0,
        })))
    }

    fn push(&self, bytes: &[u8]) {
        self.lock().push(bytes);
    }

    /// The console entry that the next call's lines go to.
    pub fn set_trace(&self, trace: Option<Ticket>) {
        self.lock().trace = trace;
    }

    /// Ends the current call's output (logs a partial last line and what was
    /// dropped): a reused instance keeps its streams, but each call has its own cap.
    pub fn finish_call(&self) {
        self.lock().finish();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LineLog> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LineLog {
    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_OUTPUT_PER_REQUEST.saturating_sub(self.kept);
        let (keep, drop) = bytes.split_at(bytes.len().min(room));
        self.kept += keep.len();
        self.dropped += drop.len();
        for &byte in keep {
            if byte == b'\n' {
                self.emit();
            } else {
                self.pending.push(byte);
                if self.pending.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        let console = &self.console;
        let line = console.redactor.redact(line.trim_end_matches('\r'));
        tracing::info!(target: "plugin", plugin = %self.plugin, stream = self.stream, "{line}");
        console.recent.log(self.trace, self.stream, &line);
        self.pending.clear();
    }
}

impl LineLog {
    fn finish(&mut self) {
        if !self.pending.is_empty() {
            self.emit();
        }
        if self.dropped > 0 {
            tracing::warn!(target: "plugin", plugin = %self.plugin, stream = self.stream,
                "dropped {} bytes of output past the {MAX_OUTPUT_PER_REQUEST}-byte limit", self.dropped);
        }
        self.kept = 0;
        self.dropped = 0;
    }
}

impl Drop for LineLog {
    fn drop(&mut self) {
        self.finish();
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for PluginOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: output past the cap is accepted and dropped, so a plugin's
        // `println!` never fails (which would turn chatter into a panic).
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PluginOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for PluginOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_and_split_into_lines() {
        let out = PluginOutput::new("p".into(), "stdout", ConsoleSink::default(), None);
        out.push(b"one\ntwo\r\nthr");
        out.push(b"ee\n");
        {
            let log = out.0.lock().unwrap();
            assert!(log.pending.is_empty());
            assert_eq!(log.kept, 15);
        }
        out.push(&vec![b'x'; MAX_OUTPUT_PER_REQUEST * 2]);
        let log = out.0.lock().unwrap();
        assert_eq!(log.kept, MAX_OUTPUT_PER_REQUEST);
        assert_eq!(
            log.dropped,
            MAX_OUTPUT_PER_REQUEST * 2 - (MAX_OUTPUT_PER_REQUEST - 15)
        );
        assert!(log.pending.len() < MAX_LINE);
    }

    #[test]
    fn each_call_of_a_reused_stream_has_its_own_cap() {
        let out = PluginOutput::new("p".into(), "stdout", ConsoleSink::default(), None);
        out.push(&vec![b'x'; MAX_OUTPUT_PER_REQUEST + 10]);
        out.finish_call();
        let log = out.0.lock().unwrap();
        assert_eq!((log.kept, log.dropped), (0, 0));
        assert!(log.pending.is_empty());
    }
}
