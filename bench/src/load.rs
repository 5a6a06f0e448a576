//! Drives a server with `wrk` and a generated Lua script of pre-signed requests.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use optech_host::signature::Signer;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: u32,
    pub threads: u32,
}

/// What one measured window produced.
#[derive(Debug, Clone, Default)]
pub struct Result {
    pub requests: u64,
    pub duration_us: u64,
    pub errors: u64,
    pub non_2xx: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub peak_rss_kib: u64,
}

impl Result {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }

    pub fn row(&self, name: &str) -> String {
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        format!(
            "| {name} | {:.0} | {} | {} | {} | {} | {:.1} MiB |",
            self.rps(),
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            self.errors + self.non_2xx,
            self.peak_rss_kib as f64 / 1024.0
        )
    }
}

pub fn check_wrk() -> anyhow::Result<()> {
    match Command::new("wrk").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => bail!(
            "wrk is not installed: `apt-get install wrk` (Debian/Ubuntu) or see https://github.com/wg/wrk"
        ),
    }
}

/// Signed echo requests with `n` distinct links.
pub fn echo_bodies(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "link": format!("https://api.optech.ai/ingest/{i:08x}"),
                "key": "echo",
                "inputs": {"key1": "value1", "key2": format!("value-{i}")}
            })
            .to_string()
        })
        .collect()
}

/// "order status" requests for the orders the bench back end knows.
pub fn order_bodies(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "link": format!("https://api.optech.ai/ingest/{i:08x}"),
                "key": "order status",
                "inputs": {"order_id": format!("A-{}", i % 100)}
            })
            .to_string()
        })
        .collect()
}

/// Writes a wrk script cycling through `bodies`, each signed with the bench secret.
pub fn write_script(path: &Path, bodies: &[String]) -> anyhow::Result<()> {
    let signer = Signer::new(crate::SECRET.as_bytes(), None);
    let mut quoted = String::new();
    let mut signatures = String::new();
    for body in bodies {
        signatures.push_str(&format!("\"{}\",\n", signer.sign(body.as_bytes())));
        quoted.push_str(&format!("[==[{body}]==],\n"));
    }
    let bodies = quoted;
    let script = format!(
        r#"local bodies = {{
{bodies}}}
local signatures = {{
{signatures}}}
local i = 0
request = function()
  i = i + 1
  local k = (i % #bodies) + 1
  return wrk.format("POST", "/", {{["content-type"] = "application/json", ["x-optech-signature"] = signatures[k]}}, bodies[k])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#
    );
    std::fs::write(path, script).context("writing the wrk script")
}

/// The warm-up window (discarded), then the measured one, at `connections`.
pub fn warm_then_measure(
    url: &str,
    script: &Path,
    options: &LoadOptions,
    connections: u32,
) -> anyhow::Result<Result> {
    run_wrk(url, script, options.warmup, connections, options.threads)?;
    run_wrk(url, script, options.duration, connections, options.threads)
}

/// Runs wrk once against `url` for `duration`.
fn run_wrk(
    url: &str,
    script: &Path,
    duration: Duration,
    connections: u32,
    threads: u32,
) -> anyhow::Result<Result> {
    let out = Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{}s", duration.as_secs().max(1))])
        .args(["--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .with_context(|| {
            format!(
                "wrk printed no result: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let [
        requests,
        duration_us,
        errors,
        non_2xx,
        p50_us,
        p99_us,
        p999_us,
    ] = n[..]
    else {
        bail!("unexpected wrk result line: {line}");
    };
    Ok(Result {
        requests,
        duration_us,
        errors,
        non_2xx,
        p50_us,
        p99_us,
        p999_us,
        peak_rss_kib: 0,
    })
}
