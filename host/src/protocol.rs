//! The wire format of OpTech data requests and answers (docs/protocol.md).
//!
//! Invariants: nothing here checks signatures (callers verify the raw bytes
//! before handing them to [`parse_request`]); every pass over a request's
//! inputs or an answer's data is linear in its size, so a hostile body or
//! plugin cannot make the host do quadratic work.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// A request's inputs or an answer's data: name/value pairs, in order.
pub type Fields = Vec<(String, String)>;

/// A data request after its envelope has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRequest {
    /// Where an async answer goes; absent means the request can only be answered synchronously.
    pub link: Option<String>,
    pub key: String,
    /// Every input as a string (JSON strings as they are, anything else as its
    /// JSON text), in the order the request gave them.
    pub inputs: Fields,
}

/// Why a body is not a data request (all answered with 400).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the body must be a JSON object")]
    NotObject,
    #[error("`key` is missing")]
    MissingKey,
    #[error("`key` must be a string")]
    KeyNotString,
    #[error("`inputs` must be an object")]
    InputsNotObject,
    #[error("`link` must be a string")]
    LinkNotString,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    link: Option<Value>,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    inputs: RawInputs,
    // Other fields are ignored: the platform may add some.
}

/// `inputs` as found: read straight into request-ordered pairs when it is an
/// object (serde_json's `Map` would sort them), or noted as the wrong type.
#[derive(Default)]
enum RawInputs {
    #[default]
    Absent,
    Object(Fields),
    NotObject,
}

impl<'de> Deserialize<'de> for RawInputs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawInputsVisitor)
    }
}

struct RawInputsVisitor;

impl<'de> Visitor<'de> for RawInputsVisitor {
    type Value = RawInputs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of inputs")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawInputs, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((name, value)) = map.next_entry::<String, Value>()? {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            pairs.push((name, value));
        }
        Ok(RawInputs::Object(pairs))
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawInputs, E> {
        Ok(RawInputs::Absent)
    }

    fn visit_none<E: de::Error>(self) -> Result<RawInputs, E> {
        Ok(RawInputs::Absent)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawInputs, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawInputs::NotObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawInputs, E> {
        Ok(RawInputs::NotObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawInputs, E> {
        Ok(RawInputs::NotObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawInputs, E> {
        Ok(RawInputs::NotObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawInputs, E> {
        Ok(RawInputs::NotObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawInputs, E> {
        Ok(RawInputs::NotObject)
    }
}

/// Parses and checks a request body. Inputs that are absent or `null` are empty.
/// One pass over the bytes: the envelope's fields are read straight into place.
pub fn parse_request(body: &[u8]) -> Result<DataRequest, EnvelopeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Not an object (serde would read an array as the envelope's fields in
        // order): tell valid JSON of another type from broken JSON.
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => EnvelopeError::NotObject,
            Err(e) => EnvelopeError::NotJson(e.to_string()),
        });
    }
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let key = match envelope.key {
        None | Some(Value::Null) => return Err(EnvelopeError::MissingKey),
        Some(Value::String(key)) => key,
        Some(_) => return Err(EnvelopeError::KeyNotString),
    };
    let inputs = match envelope.inputs {
        RawInputs::Absent => Vec::new(),
        RawInputs::Object(pairs) => pairs,
        RawInputs::NotObject => return Err(EnvelopeError::InputsNotObject),
    };
    let link = match envelope.link {
        None | Some(Value::Null) => None,
        Some(Value::String(link)) => Some(link),
        Some(_) => return Err(EnvelopeError::LinkNotString),
    };
    Ok(DataRequest { link, key, inputs })
}

/// The bytes `{"data":` and `}` around the data object.
pub const DATA_ENVELOPE: usize = r#"{"data":}"#.len();

/// The data object of an answer is over its cap once written as JSON.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("the answer's data is over {limit} bytes as JSON")]
pub struct TooLarge {
    pub limit: u64,
}

/// `{"data": {...}}` with the `data` object at most `limit` bytes of JSON (what
/// is sent, escapes included). A repeated name is written once, where it last
/// appears, with its last value, as a JSON object reader would see it.
/// Stops writing as soon as the cap is passed.
pub fn data_body(data: &[(String, String)], limit: u64) -> Result<Vec<u8>, TooLarge> {
    #[derive(Serialize)]
    struct Body<'a> {
        data: Map<'a>,
    }
    let cap = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_add(DATA_ENVELOPE);
    let raw: usize = data.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    let mut out = Capped {
        bytes: Vec::with_capacity(raw.saturating_add(DATA_ENVELOPE).min(cap)),
        cap,
    };
    let body = Body {
        data: Map::new(data),
    };
    match serde_json::to_writer(&mut out, &body) {
        Ok(()) => Ok(out.bytes),
        Err(_) => Err(TooLarge { limit }),
    }
}

/// `{"error": {"code": ..., "message": ..., "request_id": ...}}`, the body of every error.
pub fn error_body(code: &str, message: &str, request_id: Option<&str>) -> Vec<u8> {
    traced_error_body(code, message, request_id, None)
}

/// The same, with the id of the request's trace beside its request id
/// (tracing on), so a caller quoting the body names the trace too.
pub fn traced_error_body(
    code: &str,
    message: &str,
    request_id: Option<&str>,
    trace_id: Option<&str>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: Inner<'a>,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        trace_id: Option<&'a str>,
    }
    let body = Body {
        error: Inner {
            code,
            message,
            request_id,
            trace_id,
        },
    };
    // Serializing borrowed strings into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_else(|_| unreachable!())
}

/// A `Vec` that refuses to grow past `cap` bytes.
struct Capped {
    bytes: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.cap {
            return Err(std::io::Error::other("over the cap"));
        }
        self.bytes.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Pairs serialized as an object, each name once, in one linear pass.
struct Map<'a> {
    pairs: &'a [(String, String)],
    /// For each pair, whether a later pair has the same name (then it is skipped).
    shadowed: Option<Vec<bool>>,
}

impl<'a> Map<'a> {
    fn new(pairs: &'a [(String, String)]) -> Self {
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(pairs.len());
        let mut shadowed: Option<Vec<bool>> = None;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if let Some(earlier) = last.insert(name.as_str(), i) {
                shadowed.get_or_insert_with(|| vec![false; pairs.len()])[earlier] = true;
            }
        }
        Self { pairs, shadowed }
    }
}

impl Serialize for Map<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (i, (name, value)) in self.pairs.iter().enumerate() {
            if self.shadowed.as_ref().is_some_and(|s| s[i]) {
                continue;
            }
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Fields {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_seed_example() {
        let body = br#"{"link":"https://api.optech.ai/ingest/1","key":"value","inputs":{"key1":"value1","key2":"value2"},"extra":1}"#;
        let req = parse_request(body).unwrap();
        assert_eq!(req.link.as_deref(), Some("https://api.optech.ai/ingest/1"));
        assert_eq!(req.key, "value");
        assert_eq!(req.inputs, pairs(&[("key1", "value1"), ("key2", "value2")]));
    }

    #[test]
    fn inputs_keep_request_order() {
        let body = br#"{"key":"k","inputs":{"zeta":"1","alpha":"2","mid":"3"}}"#;
        let req = parse_request(body).unwrap();
        assert_eq!(
            req.inputs,
            pairs(&[("zeta", "1"), ("alpha", "2"), ("mid", "3")])
        );
    }

    #[test]
    fn non_string_inputs_arrive_as_json_text() {
        let body = br#"{"key":"k","inputs":{"n":3,"o":{"a":1},"b":true,"z":null,"l":[1,"x"]}}"#;
        let req = parse_request(body).unwrap();
        assert_eq!(
            req.inputs,
            pairs(&[
                ("n", "3"),
                ("o", r#"{"a":1}"#),
                ("b", "true"),
                ("z", "null"),
                ("l", r#"[1,"x"]"#)
            ])
        );
    }

    #[test]
    fn envelope_errors() {
        use EnvelopeError::*;
        assert!(matches!(parse_request(b"{nope"), Err(NotJson(_))));
        assert!(matches!(parse_request(b""), Err(NotJson(_))));
        assert_eq!(parse_request(b"[1]"), Err(NotObject));
        assert_eq!(parse_request(b" \"k\""), Err(NotObject));
        assert_eq!(parse_request(b"null"), Err(NotObject));
        assert!(matches!(parse_request(b"[1"), Err(NotJson(_))));
        assert!(matches!(
            parse_request(br#"{"key":"a","key":"b"}"#),
            Err(NotJson(m)) if m.contains("duplicate field")
        ));
        assert_eq!(parse_request(br#"{"inputs":{}}"#), Err(MissingKey));
        assert_eq!(
            parse_request(br#"{"key":1,"inputs":{}}"#),
            Err(KeyNotString)
        );
        for inputs in [
            r#"[]"#,
            r#"[1,{"a":2}]"#,
            r#""x""#,
            "3",
            "-1",
            "1.5",
            "true",
        ] {
            let body = format!(r#"{{"key":"k","inputs":{inputs}}}"#);
            assert_eq!(
                parse_request(body.as_bytes()),
                Err(InputsNotObject),
                "{inputs}"
            );
        }
        assert_eq!(
            parse_request(br#"{"key":"k","link":5}"#),
            Err(LinkNotString)
        );
        assert_eq!(parse_request(br#"{"key":"k"}"#).unwrap().inputs, vec![]);
        assert_eq!(
            parse_request(br#"{"key":"k","inputs":null}"#)
                .unwrap()
                .inputs,
            vec![]
        );
        assert!(matches!(
            parse_request(br#"{"key":"k","inputs":{"a":}}"#),
            Err(NotJson(_))
        ));
    }

    #[test]
    fn bodies() {
        let body = data_body(&pairs(&[("b", "1"), ("a", "2"), ("b", "3")]), 1024).unwrap();
        assert_eq!(body, br#"{"data":{"a":"2","b":"3"}}"#);
        let body = error_body("bad", "say \"why\"", None);
        assert_eq!(body, br#"{"error":{"code":"bad","message":"say \"why\""}}"#);
        let body = error_body("bad", "no", Some("r-1"));
        assert_eq!(
            body,
            br#"{"error":{"code":"bad","message":"no","request_id":"r-1"}}"#
        );
    }

    #[test]
    fn the_cap_is_on_the_json_sent_escapes_included() {
        // 100 control characters are 100 raw bytes but 600 bytes as JSON escapes.
        let data = pairs(&[("k", &"\u{1}".repeat(100))]);
        let object = 2 + 3 + 1 + 2 + 600; // {} "k" : "..."
        assert!(data_body(&data, object as u64).is_ok());
        assert_eq!(
            data_body(&data, object as u64 - 1),
            Err(TooLarge {
                limit: object as u64 - 1
            })
        );
        let body = data_body(&data, object as u64).unwrap();
        assert_eq!(body.len(), object + DATA_ENVELOPE);
    }

    /// CPU time this thread has used: unlike wall time, it does not grow
    /// when other processes compete for the cores.
    fn thread_cpu_time() -> std::time::Duration {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec for the call to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }

    /// Builds the answer for `n` distinct fields and returns the least CPU
    /// time of a few runs.
    fn time_data_body(n: usize) -> std::time::Duration {
        let data: Fields = (0..n).map(|i| (format!("field{i}"), "v".into())).collect();
        (0..5)
            .map(|_| {
                let started = thread_cpu_time();
                let body = data_body(&data, u64::MAX).unwrap();
                std::hint::black_box(body);
                thread_cpu_time().saturating_sub(started)
            })
            .min()
            .unwrap_or_default()
    }

    #[test]
    fn answer_work_is_linear_in_the_number_of_fields() {
        // Linear work gives a ratio near 10; the old quadratic pass gave about 100.
        let small = time_data_body(10_000);
        let large = time_data_body(100_000);
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-9);
        eprintln!("10k fields: {small:?}, 100k fields: {large:?}, ratio {ratio:.1}");
        assert!(ratio < 35.0, "100k/10k = {ratio:.1}: not linear");
    }
}
