//! The wire format of OpTech data requests and answers (see PROTOCOL.md).
//!
//! Invariant: nothing here checks signatures; callers verify the raw bytes
//! before handing them to [`parse_request`].

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;
use thiserror::Error;

/// A request's inputs or an answer's data: ordered name/value pairs.
pub type Fields = Vec<(String, String)>;

/// A data request after its envelope has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRequest {
    /// Where an async answer goes; absent means the request can only be answered synchronously.
    pub link: Option<String>,
    pub key: String,
    /// Every input as a string: JSON strings as they are, anything else as its JSON text.
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

#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(default)]
    link: Option<Value>,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    inputs: Option<Value>,
    // Other fields are ignored: the platform may add some.
}

/// Parses and checks a request body. Inputs that are absent or `null` are empty.
/// One pass over the bytes: the envelope's fields are read straight into place.
pub fn parse_request(body: &[u8]) -> Result<DataRequest, EnvelopeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Not an object (serde would read an array as the envelope's fields in
        // order): tell valid JSON of another type from broken JSON.
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => EnvelopeError::NotObject,
                Err(e) => EnvelopeError::NotJson(e.to_string()),
            },
        );
    }
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let key = match envelope.key {
        None | Some(Value::Null) => return Err(EnvelopeError::MissingKey),
        Some(Value::String(key)) => key,
        Some(_) => return Err(EnvelopeError::KeyNotString),
    };
    let inputs = match envelope.inputs {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(name, value)| match value {
                Value::String(s) => (name, s),
                other => (name, other.to_string()),
            })
            .collect(),
        Some(_) => return Err(EnvelopeError::InputsNotObject),
    };
    let link = match envelope.link {
        None | Some(Value::Null) => None,
        Some(Value::String(link)) => Some(link),
        Some(_) => return Err(EnvelopeError::LinkNotString),
    };
    Ok(DataRequest { link, key, inputs })
}

/// `{"data": {...}}`, keeping the handler's order; a repeated name keeps its last value.
pub fn data_body(data: &[(String, String)]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        data: Map<'a>,
    }
    to_vec(&Body { data: Map(data) })
}

/// `{"error": {"code": ..., "message": ...}}`, the body of every error.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: Inner<'a>,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        code: &'a str,
        message: &'a str,
    }
    to_vec(&Body {
        error: Inner { code, message },
    })
}

fn to_vec(value: &impl Serialize) -> Vec<u8> {
    // Serializing borrowed strings into a Vec cannot fail.
    serde_json::to_vec(value).unwrap_or_else(|_| unreachable!())
}

struct Map<'a>(&'a [(String, String)]);

impl Serialize for Map<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (i, (name, value)) in self.0.iter().enumerate() {
            // Skip a name that appears again later; the last value wins, as in JSON objects.
            if self.0[i + 1..].iter().any(|(later, _)| later == name) {
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
    fn non_string_inputs_arrive_as_json_text() {
        let body = br#"{"key":"k","inputs":{"n":3,"o":{"a":1},"b":true,"z":null,"l":[1,"x"]}}"#;
        let req = parse_request(body).unwrap();
        let got: std::collections::HashMap<_, _> = req.inputs.into_iter().collect();
        assert_eq!(got["n"], "3");
        assert_eq!(got["o"], r#"{"a":1}"#);
        assert_eq!(got["b"], "true");
        assert_eq!(got["z"], "null");
        assert_eq!(got["l"], r#"[1,"x"]"#);
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
        assert_eq!(
            parse_request(br#"{"key":"k","inputs":[]}"#),
            Err(InputsNotObject)
        );
        assert_eq!(
            parse_request(br#"{"key":"k","inputs":"x"}"#),
            Err(InputsNotObject)
        );
        assert_eq!(
            parse_request(br#"{"key":"k","link":5}"#),
            Err(LinkNotString)
        );
        assert_eq!(parse_request(br#"{"key":"k"}"#).unwrap().inputs, vec![]);
    }

    #[test]
    fn bodies() {
        let body = data_body(&pairs(&[("b", "1"), ("a", "2"), ("b", "3")]));
        assert_eq!(body, br#"{"data":{"a":"2","b":"3"}}"#);
        let body = error_body("bad", "say \"why\"");
        assert_eq!(body, br#"{"error":{"code":"bad","message":"say \"why\""}}"#);
    }
}
