//! `optech send KEY [name=value ...]`: plays the platform against a running
//! host. Signs the request with the configured secret and sends it with a
//! `link` it serves itself on a local port; an answer given now is checked
//! against its signature, an answer given later is awaited at the link and
//! checked against its signature and `authorization`.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::request_id::REQUEST_ID_HEADER;
use crate::signature::{SIGNATURE_HEADER, Signer};

/// What `optech send` is told.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The request's key.
    pub key: String,
    /// Inputs, as name=value.
    pub inputs: Vec<String>,
    /// More inputs from a JSON object in a file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub inputs_json: Option<PathBuf>,
    /// Where to send it; default: the config's `listen` address.
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, default_value = "optech.toml")]
    pub config: PathBuf,
    /// How long to wait for an answer given later.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// `optech send`: signs with the configured secret (or the dev secret), sends
/// to `--url` or the config's `listen` address, and says how it ended.
pub async fn run(args: SendArgs) -> anyhow::Result<Verdict> {
    let inputs = inputs(&args.inputs, args.inputs_json.as_deref())?;
    let url = match args.url {
        Some(url) => url,
        None => {
            let listen = super::lenient_config(&args.config)
                .map(|c| c.server.listen)
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let ip = if listen.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                listen.ip()
            };
            format!("http://{}/", SocketAddr::new(ip, listen.port()))
        }
    };
    let credentials = super::serve::send_credentials(&args.config)?;
    send(SendOptions {
        url,
        key: args.key,
        inputs,
        signer: credentials.signer(),
        client_id: credentials.client_id,
        wait: args.wait,
    })
    .await
}

/// What to send, and where.
pub struct SendOptions {
    pub url: String,
    pub key: String,
    pub inputs: Map<String, Value>,
    pub signer: Signer,
    /// Expected in a delivery's `authorization: Basic <id>`.
    pub client_id: String,
    /// How long to wait for an answer given later.
    pub wait: Duration,
}

/// How it ended: the exit code `optech send` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Verified data.
    Data = 0,
    /// A verified answer that is an error (the handler's, or the host's refusal).
    Error = 1,
    /// No answer, or one that failed verification.
    Unverified = 2,
}

/// `name=value` pairs and an optional JSON file (`-` for stdin) into inputs;
/// the pairs win over the file.
pub fn inputs(
    pairs: &[String],
    json_file: Option<&std::path::Path>,
) -> anyhow::Result<Map<String, Value>> {
    let mut inputs = match json_file {
        Some(path) => {
            let text = if path == std::path::Path::new("-") {
                std::io::read_to_string(std::io::stdin()).context("reading inputs from stdin")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
            };
            match serde_json::from_str::<Value>(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?
            {
                Value::Object(map) => map,
                _ => bail!("{} must hold a JSON object of inputs", path.display()),
            }
        }
        None => Map::new(),
    };
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("{pair:?} is not name=value"))?;
        inputs.insert(name.to_string(), Value::String(value.to_string()));
    }
    Ok(inputs)
}

/// The request as sent and the answer given now; a `202`'s answer comes
/// later, at the link [`Exchange::delivery`] serves.
pub struct Exchange {
    pub status: reqwest::StatusCode,
    /// The `x-request-id` the host answered with.
    pub request_id: String,
    /// The answer's body (empty for a `202`).
    pub answer: bytes::Bytes,
    /// Whether a `200`'s signature checks out with the signer.
    pub signed: bool,
    /// From sending to the whole answer read.
    pub took: Duration,
    started: Instant,
    /// Where a later answer arrives (served until this is dropped).
    pub link: String,
    pub delivery: LinkServer,
}

/// The local link: it takes the POSTs the host delivers to it.
pub struct LinkServer {
    deliveries: mpsc::UnboundedReceiver<(HeaderMap, bytes::Bytes, Instant)>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for LinkServer {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// An answer delivered to the link, checked.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub body: bytes::Bytes,
    /// From the 202 to the delivery.
    pub after: Duration,
    /// Its `x-optech-signature` checks out with the signer.
    pub signed: bool,
    /// Its `authorization` is `Basic <client id>` (or no client id is expected).
    pub authorized: bool,
}

impl Exchange {
    /// Signs `{link, key, inputs}` with a link served on a local port, sends
    /// it to `options.url` through `client`, and reads the answer given now.
    pub async fn send(options: &SendOptions, client: &reqwest::Client) -> anyhow::Result<Self> {
        let (deliveries, delivered) =
            mpsc::unbounded_channel::<(HeaderMap, bytes::Bytes, Instant)>();
        let link_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("opening a local port for the link")?;
        let link_addr: SocketAddr = link_listener.local_addr()?;
        let link = format!(
            "http://{link_addr}/optech-send/{:016x}",
            rand::random::<u64>()
        );
        let receiver =
            axum::Router::new().fallback(move |headers: HeaderMap, body: bytes::Bytes| {
                let deliveries = deliveries.clone();
                async move {
                    let _ = deliveries.send((headers, body, Instant::now()));
                    axum::http::StatusCode::OK
                }
            });
        let serving = tokio::spawn(async move { axum::serve(link_listener, receiver).await });
        let delivery = LinkServer {
            deliveries: delivered,
            serving,
        };

        let body = serde_json::json!({"link": link, "key": options.key, "inputs": options.inputs})
            .to_string();
        let started = Instant::now();
        let response = client
            .post(&options.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, options.signer.sign(body.as_bytes()))
            .body(body)
            .send()
            .await
            .with_context(|| format!("sending to {}", options.url))?;
        let status = response.status();
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let signature = response.headers().get(SIGNATURE_HEADER).cloned();
        let answer = response.bytes().await.context("reading the answer")?;
        let signed = options
            .signer
            .verify(signature.as_ref().map(|v| v.as_bytes()), &answer)
            .is_ok();
        Ok(Self {
            status,
            request_id,
            answer,
            signed,
            took: started.elapsed(),
            started,
            link,
            delivery,
        })
    }

    /// Waits up to `wait` for the answer at the link, and checks it.
    pub async fn delivered(&mut self, options: &SendOptions, wait: Duration) -> Option<Delivered> {
        let (headers, body, at) = tokio::time::timeout(wait, self.delivery.deliveries.recv())
            .await
            .ok()
            .flatten()?;
        let expected_auth = format!("Basic {}", options.client_id);
        let authorized = options.client_id.is_empty()
            || headers.get("authorization").and_then(|v| v.to_str().ok())
                == Some(expected_auth.as_str());
        let signed = options
            .signer
            .verify(headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()), &body)
            .is_ok();
        Some(Delivered {
            body,
            after: at.duration_since(self.started).saturating_sub(self.took),
            signed,
            authorized,
        })
    }
}

/// Sends the request and reports on stdout (the answer) and stderr (how it went).
pub async fn send(options: SendOptions) -> anyhow::Result<Verdict> {
    let mut exchange = Exchange::send(&options, &reqwest::Client::new()).await?;
    let status = exchange.status;
    eprintln!(
        "{status} in {} (request id {})",
        millis(exchange.took),
        exchange.request_id
    );
    let verdict = if status == reqwest::StatusCode::ACCEPTED {
        eprintln!(
            "waiting up to {:?} for the answer at {}",
            options.wait, exchange.link
        );
        match exchange.delivered(&options, options.wait).await {
            Some(delivered) => {
                eprintln!("delivered {} after the 202", millis(delivered.after));
                report(
                    &delivered.body,
                    delivered.signed && delivered.authorized,
                    if delivered.authorized {
                        "signature"
                    } else {
                        "authorization"
                    },
                )
            }
            None => {
                eprintln!("no answer reached the link within {:?}", options.wait);
                Verdict::Unverified
            }
        }
    } else if status.is_success() {
        report(&exchange.answer, exchange.signed, "signature")
    } else {
        print_json(&exchange.answer);
        Verdict::Error
    };
    Ok(verdict)
}

/// Prints an answer body and judges it.
fn report(body: &[u8], verified: bool, what: &str) -> Verdict {
    print_json(body);
    if !verified {
        eprintln!("the answer's {what} does not check out: do the secrets match?");
        return Verdict::Unverified;
    }
    eprintln!("{what} verified");
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) if map.contains_key("data") => Verdict::Data,
        _ => Verdict::Error,
    }
}

/// JSON to stdout: pretty for a person at a terminal, as is for a pipe.
fn print_json(body: &[u8]) {
    let pretty = std::io::stdout()
        .is_terminal()
        .then(|| serde_json::from_slice::<Value>(body).ok())
        .flatten()
        .and_then(|v| serde_json::to_string_pretty(&v).ok());
    match pretty {
        Some(text) => println!("{text}"),
        None => println!("{}", String::from_utf8_lossy(body)),
    }
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_a_file_make_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.json");
        std::fs::write(&file, r#"{"a": "1", "n": 2}"#).unwrap();
        let got = inputs(&["a=x".into(), "b=y=z".into()], Some(&file)).unwrap();
        assert_eq!(
            Value::Object(got),
            serde_json::json!({"a": "x", "n": 2, "b": "y=z"})
        );
        assert!(inputs(&["nope".into()], None).is_err());
        std::fs::write(&file, "[1]").unwrap();
        assert!(inputs(&[], Some(&file)).is_err());
    }
}
