//! The servers under test, each started as its own process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::collector::Collector;
use crate::load::{self, LoadOptions};

pub struct Contender {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub workload: Workload,
    /// A traced contender: where its spans go, and what each round counted.
    pub traced: Option<Traced>,
}

/// The collector of a traced contender and its counts per round.
pub struct Traced {
    collector: Arc<Collector>,
    /// Spans each request makes when sampled: the server span, the handler,
    /// its instantiation and call, and the one outbound GET.
    pub spans_per_request: u64,
    pub sampled: bool,
    pub rounds: Mutex<Vec<TraceCounts>>,
}

/// One traced round, counted by the host (`/metrics`) and by the collector.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceCounts {
    /// Requests answered 2xx over the warm-up and the measured window.
    pub requests: u64,
    /// Spans the collector decoded, the shutdown's flush included.
    pub received: u64,
    /// Spans the host dropped: its queue was full, or an export failed.
    pub dropped: u64,
}

/// What a contender is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `echo` with two inputs.
    Echo,
    /// `order status`: one GET to the bench back end per request.
    Orders,
}

/// The wrk scripts of the workloads.
pub struct Scripts {
    pub echo: PathBuf,
    pub orders: PathBuf,
}

impl Scripts {
    pub fn write(dir: &Path) -> anyhow::Result<Self> {
        let scripts = Self {
            echo: dir.join("echo.lua"),
            orders: dir.join("orders.lua"),
        };
        load::write_script(&scripts.echo, &load::echo_bodies(1000))?;
        load::write_script(&scripts.orders, &load::order_bodies(1000))?;
        Ok(scripts)
    }

    pub fn of(&self, workload: Workload) -> &Path {
        match workload {
            Workload::Echo => &self.echo,
            Workload::Orders => &self.orders,
        }
    }
}

/// A running contender; killed on drop.
pub struct Running {
    pub child: Child,
    pub url: String,
    pub started_in: Duration,
    /// The admin listener, for a contender whose config turns it on.
    pub admin: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log filter of every contender built on the host's pipeline: the
/// request span is on, as it is by default.
fn log_as_optech() -> Vec<(String, String)> {
    vec![("OPTECH_LOG".into(), "warn,optech=info".into())]
}

fn release_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = crate::root().join("target/release").join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build --release --workspace` first",
            path.display()
        );
    }
    Ok(path)
}

/// A config serving `echo` with `plugins_dir/plugin.wasm` (a JavaScript or
/// Python component). Its compiled component is kept in one folder shared by
/// every such contender, so each start after the first skips Cranelift (about
/// 20 s for a 12 or 18 MB component).
pub fn big_plugin_config(
    dir: &Path,
    plugins_dir: &Path,
    plugin: &str,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let shared = crate::root().join("target/bench-compiled");
    std::fs::create_dir_all(&shared)?;
    let compiled = data.join("compiled");
    if !compiled.exists() {
        #[cfg(unix)]
        std::os::unix::fs::symlink(&shared, &compiled)?;
    }
    let path = dir.join("optech.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugins_dir = {:?}\ndata_dir = {:?}\nmax_in_flight = 1024\nwatch = false\nadmin_listen = \"\"\n\
         [keys]\necho = \"{plugin}\"\n[plugins.{plugin}]\n{extra}\n",
        plugins_dir.display().to_string(),
        data.display().to_string(),
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A config serving `echo` from the example plugin, synchronously, on a free port.
pub fn echo_config(dir: &Path, extra: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("optech.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugins_dir = {:?}\ndata_dir = {:?}\nmax_in_flight = 1024\nwatch = false\nadmin_listen = \"\"\n{extra}\n[keys]\necho = \"echo\"\n",
        crate::root().join("plugins").display().to_string(),
        dir.join("data").display().to_string(),
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A config serving "order status" with `plugins/orders.wasm`, calling
/// `base_url` and allowed to reach `back_end`; `extra` goes in its plugin section.
pub fn orders_config(
    dir: &Path,
    back_end: &str,
    base_url: &str,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    orders_config_with(dir, back_end, base_url, extra, "")
}

/// [`orders_config`] with more lines in `[plugins.orders.config]`.
pub fn orders_config_with(
    dir: &Path,
    back_end: &str,
    base_url: &str,
    extra: &str,
    plugin_config: &str,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("optech.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugins_dir = {:?}\ndata_dir = {:?}\nmax_in_flight = 1024\nwatch = false\nadmin_listen = \"\"\n\
         [keys]\n\"order status\" = \"orders\"\n\
         [plugins.orders]\nallowed_hosts = [{back_end:?}]\nmax_http_in_flight = 1024\n{extra}\
         [plugins.orders.config]\nbase_url = {base_url:?}\ntoken = {:?}\n{plugin_config}",
        crate::root().join("plugins").display().to_string(),
        dir.join("data").display().to_string(),
        crate::backend::TOKEN,
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

impl Contender {
    /// (a) the host with `plugins/echo.wasm`, sync mode.
    pub fn optech(dir: &Path) -> anyhow::Result<Self> {
        Self::custom("a. optech + echo.wasm", &echo_config(dir, "")?)
    }

    /// (a2) as (a), with `requests_per_instance = 1000`: the opt-in that lets an
    /// instance serve many calls instead of one.
    pub fn optech_reusing(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("reusing");
        std::fs::create_dir_all(&dir)?;
        let config = echo_config(&dir, "[plugins.echo]\nrequests_per_instance = 1000")?;
        Self::custom("a2. optech + echo.wasm, reused instances", &config)
    }

    /// Any program that prints its `http://` address once it listens.
    pub fn program(name: &str, program: PathBuf, args: Vec<String>, workload: Workload) -> Self {
        Self {
            name: name.into(),
            program,
            args,
            env: vec![],
            workload,
            traced: None,
        }
    }

    /// (a0) as (a), with the console keeping nothing (`console_requests = 0`):
    /// beside (a), the cost of recording each request for the console.
    pub fn optech_console_off(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("console-off");
        std::fs::create_dir_all(&dir)?;
        let config = echo_config(&dir, "console_requests = 0")?;
        Self::custom("a0. optech + echo.wasm, console off", &config)
    }

    /// Sets an environment variable of the contender's process.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.push((name.into(), value.into()));
    }

    /// `optech serve` with a given config.
    pub fn custom(name: &str, config: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.into(),
            program: release_binary("optech")?,
            args: vec![
                "serve".into(),
                "--config".into(),
                config.display().to_string(),
            ],
            env: log_as_optech(),
            workload: Workload::Echo,
            traced: None,
        })
    }

    /// (d) the host with `plugins/orders.wasm`, one GET to the back end per
    /// request over the host's pooled client; with `close`, (d2) the back end
    /// closes every connection, so each request opens a new one.
    pub fn orders(dir: &Path, back_end: &str, close: bool) -> anyhow::Result<Self> {
        let dir = dir.join(if close { "orders-close" } else { "orders" });
        std::fs::create_dir_all(&dir)?;
        let base = if close {
            format!("{back_end}/close")
        } else {
            back_end.to_string()
        };
        let config = orders_config(&dir, back_end, &base, "")?;
        let name = if close {
            "d2. optech + orders.wasm, a new connection per request"
        } else {
            "d. optech + orders.wasm, one GET per request"
        };
        let mut contender = Self::custom(name, &config)?;
        contender.workload = Workload::Orders;
        Ok(contender)
    }

    /// (d4, d5) as (d), the token from the client-credentials grant: kept in
    /// the store until it expires (d4), or fetched for every request (d5).
    pub fn orders_token(dir: &Path, back_end: &str, cached: bool) -> anyhow::Result<Self> {
        let dir = dir.join(if cached {
            "orders-token-cached"
        } else {
            "orders-token-fetched"
        });
        std::fs::create_dir_all(&dir)?;
        let grant = format!(
            "token_url = \"{back_end}/oauth/token\"\nclient_id = {:?}\nclient_secret = {:?}\n{}",
            crate::backend::CLIENT_ID,
            crate::backend::CLIENT_SECRET,
            if cached {
                ""
            } else {
                "token_cache = \"off\"\n"
            },
        );
        let config =
            orders_config_with(&dir, back_end, back_end, "stores = [\"tokens\"]\n", &grant)?;
        let name = if cached {
            "d4. optech + orders.wasm, OAuth token kept in the store"
        } else {
            "d5. optech + orders.wasm, OAuth token fetched per request"
        };
        let mut contender = Self::custom(name, &config)?;
        contender.workload = Workload::Orders;
        Ok(contender)
    }

    /// (t1, t0) as (d), with traces exported to `collector`: every request
    /// sampled (t1), or none (t0). The admin listener is on, to count spans.
    pub fn orders_traced(
        dir: &Path,
        back_end: &str,
        collector: Arc<Collector>,
        sampled: bool,
    ) -> anyhow::Result<Self> {
        let dir = dir.join(if sampled {
            "orders-traced"
        } else {
            "orders-traced-0"
        });
        std::fs::create_dir_all(&dir)?;
        let config = orders_config(&dir, back_end, back_end, "")?;
        let text = std::fs::read_to_string(&config)?
            .replace("admin_listen = \"\"", "admin_listen = \"127.0.0.1:0\"");
        let telemetry = format!(
            "[telemetry]\nendpoint = {:?}\nsampler = \"parentbased_traceidratio\"\nsampler_arg = {}\n",
            collector.endpoint,
            if sampled { "1.0" } else { "0.0" }
        );
        std::fs::write(&config, text + "\n" + &telemetry)?;
        let name = if sampled {
            "t1. optech + orders.wasm, traced, sampling 1.0"
        } else {
            "t0. optech + orders.wasm, traced, sampling 0"
        };
        let mut contender = Self::custom(name, &config)?;
        contender.workload = Workload::Orders;
        contender.traced = Some(Traced {
            collector,
            spans_per_request: 5,
            sampled,
            rounds: Mutex::default(),
        });
        Ok(contender)
    }

    /// (d3) as (d), with `requests_per_instance = 1000`.
    pub fn orders_reusing(dir: &Path, back_end: &str) -> anyhow::Result<Self> {
        let dir = dir.join("orders-reusing");
        std::fs::create_dir_all(&dir)?;
        let config = orders_config(&dir, back_end, back_end, "requests_per_instance = 1000\n")?;
        let mut contender = Self::custom("d3. optech + orders.wasm, reused instances", &config)?;
        contender.workload = Workload::Orders;
        Ok(contender)
    }

    /// (e) the same pipeline, with a native handler doing the same GET through
    /// the same pooled client (`outbound`).
    pub fn native_orders(dir: &Path, back_end: &str) -> anyhow::Result<Self> {
        let dir = dir.join("native-orders");
        std::fs::create_dir_all(&dir)?;
        let config = orders_config(&dir, back_end, back_end, "")?;
        Ok(Self {
            name: "e. same pipeline, native GET".into(),
            program: release_binary("native-host")?,
            args: vec![
                "--config".into(),
                config.display().to_string(),
                "--handler".into(),
                "orders".into(),
            ],
            env: log_as_optech(),
            workload: Workload::Orders,
            traced: None,
        })
    }

    /// (b) the same pipeline with a native echo handler.
    pub fn native(dir: &Path) -> anyhow::Result<Self> {
        let config = echo_config(dir, "")?;
        Ok(Self {
            name: "b. same pipeline, native echo".into(),
            program: release_binary("native-host")?,
            args: vec!["--config".into(), config.display().to_string()],
            env: log_as_optech(),
            workload: Workload::Echo,
            traced: None,
        })
    }

    /// (b0) as (b), with the console keeping nothing.
    pub fn native_console_off(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.join("native-console-off");
        std::fs::create_dir_all(&dir)?;
        let config = echo_config(&dir, "console_requests = 0")?;
        Ok(Self {
            name: "b0. same pipeline, native echo, console off".into(),
            program: release_binary("native-host")?,
            args: vec!["--config".into(), config.display().to_string()],
            env: vec![],
            workload: Workload::Echo,
            traced: None,
        })
    }

    /// (c) `wasmtime serve` with the wasi:http peer in `bench/peer`, if installed.
    pub fn wasmtime_serve(root: &Path) -> anyhow::Result<Option<Self>> {
        let wasmtime = which("wasmtime");
        let Some(wasmtime) = wasmtime else {
            return Ok(None);
        };
        let peer = build_peer(root)?;
        let port = free_port()?;
        Ok(Some(Self {
            name: "c. wasmtime serve + wasi:http peer".into(),
            program: wasmtime,
            args: vec![
                "serve".into(),
                "-S".into(),
                "cli".into(),
                // The same pool tuning optech's engine uses, so the peer gets its
                // best settings on this kernel.
                "-O".into(),
                "pooling-allocator=y".into(),
                "-O".into(),
                "pooling-decommit-batch-size=1".into(),
                "-O".into(),
                "pooling-pagemap-scan=auto".into(),
                "-O".into(),
                "pooling-memory-keep-resident=16777216".into(),
                "-O".into(),
                "pooling-table-keep-resident=1048576".into(),
                "--env".into(),
                format!("OPTECH_CLIENT_SECRET={}", crate::SECRET),
                "--addr".into(),
                format!("127.0.0.1:{port}"),
                peer.display().to_string(),
            ],
            env: vec![],
            workload: Workload::Echo,
            traced: None,
        }))
    }

    pub fn start(&self) -> anyhow::Result<Running> {
        self.start_with(&[])
    }

    /// Starts the process and waits until it accepts connections.
    pub fn start_with(&self, extra_env: &[(&str, &str)]) -> anyhow::Result<Running> {
        let started = Instant::now();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env("OPTECH_CLIENT_SECRET", crate::SECRET)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        // optech and native-host print their address; wasmtime serve prints "Serving HTTP on ...".
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let url = loop {
            let line = rx
                // A Python component compiles for about 20 s, more on a busy machine.
                .recv_timeout(Duration::from_secs(300))
                .with_context(|| format!("{} did not report its address", self.name))?;
            // A traced host names its collector first.
            if line.contains("tracing on:") {
                continue;
            }
            if let Some(addr) = find_address(&line) {
                break addr;
            }
        };
        // The admin listener's line follows the public one's.
        let admin = match &self.traced {
            None => None,
            Some(_) => loop {
                let line = rx
                    .recv_timeout(Duration::from_secs(30))
                    .with_context(|| format!("{} did not report its admin listener", self.name))?;
                if line.contains("admin listener on")
                    && let Some(addr) = find_address(&line)
                {
                    break Some(addr);
                }
            },
        };
        Ok(Running {
            child,
            url,
            started_in: started.elapsed(),
            admin,
        })
    }

    /// Warm-up, then a measured window; returns the measurement with peak RSS.
    pub fn measure(
        &self,
        options: &LoadOptions,
        scripts: &Scripts,
    ) -> anyhow::Result<load::Result> {
        // The collector's count before this contender, so the round's spans
        // are told from the others' (its flush at exit included).
        let before = self.traced.as_ref().map(|t| t.collector.spans());
        let mut running = self.start()?;
        let script = scripts.of(self.workload);
        let mut result =
            load::warm_then_measure(&running.url, script, options, options.connections)?;
        result.peak_rss_kib = peak_rss_kib(running.child.id());
        if let (Some(traced), Some(before)) = (&self.traced, before) {
            let counts = traced.count(&mut running, before)?;
            traced
                .rounds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(counts);
        }
        Ok(result)
    }
}

impl Traced {
    /// Counts a finished round: the host's requests and dropped spans from
    /// its `/metrics`, then, once a SIGTERM has made it flush and exit, what
    /// the collector received.
    fn count(&self, running: &mut Running, before: u64) -> anyhow::Result<TraceCounts> {
        let admin = running.admin.clone().context("no admin listener")?;
        let metrics = http_get(&admin, "/metrics")?;
        let sum = |prefix: &str, filter: &str| -> u64 {
            metrics
                .lines()
                .filter(|l| l.starts_with(prefix) && l.contains(filter))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        let requests = sum("optech_requests_total{", "status_class=\"2xx\"");
        let dropped = sum("optech_trace_spans_dropped_total{", "reason=");
        Command::new("kill")
            .args(["-TERM", &running.child.id().to_string()])
            .status()?;
        running.child.wait()?;
        Ok(TraceCounts {
            requests,
            received: self.collector.spans() - before,
            dropped,
        })
    }
}

/// A GET on loopback, read whole (HTTP/1.0: the server closes when done).
fn http_get(base: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// `http://127.0.0.1:PORT` from a log line that mentions one.
fn find_address(line: &str) -> Option<String> {
    let rest = &line[line.find("http://")?..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let candidate = rest[..end].trim_end_matches(['/', '.', ',']);
    candidate["http://".len()..]
        .contains(':')
        .then(|| candidate.to_string())
}

/// Peak resident set size (VmHWM) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// Current resident set size (VmRSS) of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn which(name: &str) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    from_path.flatten().or_else(|| {
        let cargo_bin = PathBuf::from(std::env::var_os("HOME")?)
            .join(".cargo/bin")
            .join(name);
        cargo_bin.is_file().then_some(cargo_bin)
    })
}

/// Builds `bench/peer` (a wasi:http component) and returns its path.
fn build_peer(root: &Path) -> anyhow::Result<PathBuf> {
    optech_host::build::rust::ensure_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = root.join("target/peer");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            optech_host::build::rust::TARGET,
            "--manifest-path",
        ])
        .arg(root.join("bench/peer/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .context("building bench/peer")?;
    if !status.success() {
        bail!("building bench/peer failed");
    }
    let dir = target
        .join(optech_host::build::rust::TARGET)
        .join("release");
    std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "wasm"))
        .with_context(|| format!("no .wasm in {}", dir.display()))
}
