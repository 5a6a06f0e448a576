//! Answers "order status" from a REST back end: `GET {base_url}/orders/{id}`
//! with a bearer token, and the order's fields as data.
//!
//! Shows a handler calling its own back end: the host lets it reach only the
//! hosts in its `allowed_hosts`, and the secrets come from the environment,
//! not the config file. The token is either fixed (`token`) or, with
//! `token_url`, an OAuth 2 access token from the client-credentials grant,
//! kept in the `tokens` bucket of the host's store until shortly before it
//! expires: one token request serves every request until then, across
//! instances and replicas, instead of one token request per data request.
//!
//! ```toml
//! [plugins.orders]
//! allowed_hosts = ["https://api.example.com", "https://auth.example.com"]
//! stores = ["tokens"]
//!
//! [plugins.orders.config]
//! base_url = "https://api.example.com"
//! token_url = "https://auth.example.com/oauth/token"
//! client_id = "optech"
//! client_secret = { env = "ORDERS_CLIENT_SECRET" }
//! ```

use std::time::Duration;

use optech_sdk::{Data, Error, Request, config, http, log, store};

/// Where the access token is kept, and under which key.
const TOKEN_BUCKET: &str = "tokens";
const TOKEN_KEY: &str = "orders-api";

fn handle(req: Request) -> Result<Data, Error> {
    let id = req.inputs().require("order_id")?;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::invalid_input(format!(
            "`order_id` {id:?} is not an order id"
        )));
    }
    let base = config("base_url").ok_or_else(|| Error::failed("base_url is not set"))?;
    let url = format!("{}/orders/{id}", base.trim_end_matches('/'));
    let credentials = Credentials::from_config()?;
    let mut resp = get_order(&url, &credentials.token()?)?;
    if resp.status() == 401 && credentials.can_renew() {
        // Revoked or expired early: one new token, one more try.
        credentials.forget()?;
        resp = get_order(&url, &credentials.token()?)?;
    }
    match resp.status() {
        200 => order_data(id, &resp.text()?),
        404 => Err(Error::invalid_input(format!("no order {id}"))),
        s => Err(Error::failed(format!("the orders back end answered {s}"))),
    }
}

fn get_order(url: &str, token: &str) -> Result<http::Response, Error> {
    Ok(http::get(url)
        .header("authorization", &format!("Bearer {token}"))
        .header("accept", "application/json")
        .send()?)
}

/// How the plugin gets its bearer token.
enum Credentials {
    /// `token` in the config, used as it is.
    Fixed(String),
    /// The client-credentials grant at `token_url`; `cached` unless the
    /// config says `token_cache = "off"` (the benchmark's comparison).
    Client {
        token_url: String,
        client_id: String,
        client_secret: String,
        cached: bool,
    },
}

impl Credentials {
    fn from_config() -> Result<Self, Error> {
        let Some(token_url) = config("token_url") else {
            return Ok(Self::Fixed(config("token").unwrap_or_default()));
        };
        let need = |name: &str| {
            config(name).ok_or_else(|| Error::failed(format!("token_url is set but {name} is not")))
        };
        Ok(Self::Client {
            token_url,
            client_id: need("client_id")?,
            client_secret: need("client_secret")?,
            cached: config("token_cache").as_deref() != Some("off"),
        })
    }

    fn can_renew(&self) -> bool {
        matches!(self, Self::Client { .. })
    }

    /// The token to send: the cached one while it lasts, else a new one.
    fn token(&self) -> Result<String, Error> {
        let (token_url, client_id, client_secret, cached) = match self {
            Self::Fixed(token) => return Ok(token.clone()),
            Self::Client {
                token_url,
                client_id,
                client_secret,
                cached,
            } => (token_url, client_id, client_secret, *cached),
        };
        if cached && let Some(token) = store::open(TOKEN_BUCKET)?.get(TOKEN_KEY)? {
            return Ok(token);
        }
        let (token, lifetime) = fetch_token(token_url, client_id, client_secret)?;
        if cached && let Some(ttl) = keep_for(lifetime) {
            store::open(TOKEN_BUCKET)?.set_with_ttl(TOKEN_KEY, &token, ttl)?;
        }
        Ok(token)
    }

    fn forget(&self) -> Result<(), Error> {
        if let Self::Client { cached: true, .. } = self {
            store::open(TOKEN_BUCKET)?.delete(TOKEN_KEY)?;
        }
        Ok(())
    }
}

/// `POST token_url` with `grant_type=client_credentials`, the client
/// authenticated with HTTP Basic (RFC 6749, 2.3.1 and 4.4): the token and how
/// long it lives, if the server says.
fn fetch_token(
    token_url: &str,
    client_id: &str,
    client_secret: &str,
) -> Result<(String, Option<u64>), Error> {
    let basic =
        base64(format!("{}:{}", form_encode(client_id), form_encode(client_secret)).as_bytes());
    let resp = http::post(token_url)
        .header("authorization", &format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body("grant_type=client_credentials")
        .send()?;
    if resp.status() != 200 {
        return Err(Error::failed(format!(
            "the token endpoint answered {}",
            resp.status()
        )));
    }
    log::debug("fetched a new access token");
    token_from(&resp.text()?)
}

/// The access token and its lifetime in seconds from a token response.
fn token_from(body: &str) -> Result<(String, Option<u64>), Error> {
    let answer: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Error::failed(format!("the token endpoint's answer is not JSON: {e}")))?;
    let token = answer["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::failed("the token endpoint's answer has no access_token"))?;
    Ok((token.to_string(), answer["expires_in"].as_u64()))
}

/// How long to keep a token that lives `lifetime` seconds: a tenth less, so
/// it is renewed before the back end refuses it; not at all if it lives under
/// two seconds or does not say.
fn keep_for(lifetime: Option<u64>) -> Option<Duration> {
    let secs = lifetime?;
    (secs >= 2).then(|| Duration::from_secs(secs - secs / 10))
}

/// `application/x-www-form-urlencoded`, which Basic credentials are encoded
/// with before base64 (RFC 6749, 2.3.1).
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The order's top-level strings, numbers and booleans, as data.
fn order_data(id: &str, body: &str) -> Result<Data, Error> {
    let order: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Error::failed(format!("the back end's answer is not JSON: {e}")))?;
    let fields = order
        .as_object()
        .ok_or_else(|| Error::failed("the back end's answer is not a JSON object"))?;
    let mut data = Data::new().with("order_id", id);
    for (name, value) in fields {
        match value {
            serde_json::Value::String(text) => data.insert(name.as_str(), text),
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                data.insert(name.as_str(), value)
            }
            _ => {}
        }
    }
    Ok(data)
}

optech_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_becomes_flat_data() {
        let data = order_data(
            "A-17",
            r#"{"status":"shipped","items":3,"paid":true,"lines":[1]}"#,
        )
        .unwrap();
        assert_eq!(data.get("order_id"), Some("A-17"));
        assert_eq!(data.get("status"), Some("shipped"));
        assert_eq!(data.get("items"), Some("3"));
        assert_eq!(data.get("paid"), Some("true"));
        assert_eq!(data.get("lines"), None);
        assert!(order_data("A-17", "not json").is_err());
    }

    #[test]
    fn an_id_that_could_leave_the_orders_path_is_refused() {
        let inputs = optech_sdk::Inputs::from_pairs([("order_id", "../admin")]);
        let err = handle(Request::new("order status", inputs)).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    }

    #[test]
    fn a_token_is_kept_a_tenth_less_than_it_lives() {
        assert_eq!(keep_for(Some(3600)), Some(Duration::from_secs(3240)));
        assert_eq!(keep_for(Some(2)), Some(Duration::from_secs(2)));
        assert_eq!(keep_for(Some(1)), None);
        assert_eq!(keep_for(None), None);
        let (token, lifetime) =
            token_from(r#"{"access_token":"abc","token_type":"Bearer","expires_in":60}"#).unwrap();
        assert_eq!((token.as_str(), lifetime), ("abc", Some(60)));
        assert!(token_from(r#"{"error":"invalid_client"}"#).is_err());
    }

    #[test]
    fn client_credentials_are_encoded_as_rfc_6749_says() {
        assert_eq!(base64(b"optech:s3cret"), "b3B0ZWNoOnMzY3JldA==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(form_encode("a b:c/é"), "a+b%3Ac%2F%C3%A9");
    }

    #[test]
    fn the_cached_token_is_used_until_it_expires() {
        optech_sdk::testing::clear_store();
        let tokens = store::open(TOKEN_BUCKET).unwrap();
        tokens
            .set_with_ttl(TOKEN_KEY, "cached", Duration::from_secs(60))
            .unwrap();
        let credentials = Credentials::Client {
            token_url: "http://127.0.0.1:1/oauth/token".into(),
            client_id: "id".into(),
            client_secret: "secret".into(),
            cached: true,
        };
        assert_eq!(credentials.token().unwrap(), "cached");
        optech_sdk::testing::advance_store_clock(Duration::from_secs(60));
        assert!(
            credentials.token().is_err(),
            "an expired token is fetched again (here from nowhere)"
        );
    }
}
