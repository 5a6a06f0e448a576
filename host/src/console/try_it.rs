//! "Try it": the host plays the platform against itself, through the same
//! code as `optech send` (`cli::send::Exchange`): it signs the request with
//! its own secret, sends it to its public listener, and for a `202` serves
//! the link and waits for the delivery in the background, where the page
//! polls for it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::cli::send::{Delivered, Exchange, SendOptions};
use crate::signature::Signer;

/// How long a 202's answer is waited for.
pub const WAIT: Duration = Duration::from_secs(60);
/// Deliveries waited for at once; the oldest is given up past it.
const MAX_PENDING: usize = 16;

/// Sends requests to this host as the platform would.
pub struct TryIt {
    url: String,
    signer: Signer,
    client_id: String,
    client: reqwest::Client,
    pending: Mutex<VecDeque<(u64, Arc<Mutex<Waiting>>)>>,
}

/// A 202's delivery, as far as it has come.
#[derive(Debug, Clone)]
pub enum Waiting {
    Pending,
    Delivered(Delivered),
    TimedOut,
}

/// What [`TryIt::send`] came to: the answer given now.
pub struct Sent {
    pub status: reqwest::StatusCode,
    pub request_id: String,
    pub answer: bytes::Bytes,
    pub signed: bool,
    pub took: Duration,
    /// For a 202: where the page polls for the delivery.
    pub poll: Option<u64>,
}

impl TryIt {
    /// `public` is the public listener's address; an unspecified address
    /// (`0.0.0.0`, `::`) is reached on loopback. With TLS the host's own
    /// certificate is accepted whatever name it carries: this client only
    /// ever talks to this process over loopback.
    pub fn new(
        public: SocketAddr,
        tls: bool,
        signer: Signer,
        client_id: &str,
    ) -> anyhow::Result<Self> {
        let ip = match public.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let scheme = if tls { "https" } else { "http" };
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            url: format!("{scheme}://{}/", SocketAddr::new(ip, public.port())),
            signer,
            client_id: client_id.to_string(),
            client,
            pending: Mutex::new(VecDeque::new()),
        })
    }

    fn options(&self, key: &str, inputs: Map<String, Value>) -> SendOptions {
        SendOptions {
            url: self.url.clone(),
            key: key.to_string(),
            inputs,
            signer: self.signer.clone(),
            client_id: self.client_id.clone(),
            wait: WAIT,
        }
    }

    /// Sends `key` with `inputs` (a JSON object as text).
    pub async fn send(&self, key: &str, inputs: &str) -> Result<Sent, String> {
        let inputs = match serde_json::from_str::<Value>(if inputs.trim().is_empty() {
            "{}"
        } else {
            inputs
        }) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("Inputs must be a JSON object, like {\"name\": \"Ada\"}.".into()),
            Err(e) => return Err(format!("Inputs are not JSON: {e}.")),
        };
        let options = self.options(key, inputs);
        let mut exchange = Exchange::send(&options, &self.client)
            .await
            .map_err(|e| format!("Sending to {} failed: {e:#}", self.url))?;
        let mut sent = Sent {
            status: exchange.status,
            request_id: exchange.request_id.clone(),
            answer: exchange.answer.clone(),
            signed: exchange.signed,
            took: exchange.took,
            poll: None,
        };
        if exchange.status != reqwest::StatusCode::ACCEPTED {
            return Ok(sent);
        }
        let waiting = Arc::new(Mutex::new(Waiting::Pending));
        let token = rand::random::<u64>();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= MAX_PENDING {
                pending.pop_front();
            }
            pending.push_back((token, waiting.clone()));
        }
        // The exchange keeps the link served until the answer arrives or the wait ends.
        tokio::spawn(async move {
            let outcome = match exchange.delivered(&options, WAIT).await {
                Some(delivered) => Waiting::Delivered(delivered),
                None => Waiting::TimedOut,
            };
            *waiting.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
        });
        sent.poll = Some(token);
        Ok(sent)
    }

    /// Where a 202's delivery stands.
    pub fn waiting(&self, token: u64) -> Option<Waiting> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .iter()
            .find(|(t, _)| *t == token)
            .map(|(_, w)| w.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}
