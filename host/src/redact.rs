//! Known secret values out of text that a plugin wrote: its log lines, its
//! stdout and stderr, and the error messages the host logs or answers with.
//!
//! Invariant: a secret a plugin was given (`{ env = "..." }` in its config)
//! never leaves the host through that plugin's text: every occurrence is
//! replaced by `[redacted]`, longest secret first so one that contains
//! another is hidden whole. In JSON (the console's inputs and data), a secret
//! is also searched for as JSON spells it: one with `"`, `\` or a control
//! character is written escaped, and its plain spelling never matches.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::ConfigValue;

/// What a secret is replaced by.
pub const REDACTED: &str = "[redacted]";
/// Shorter values are not searched for: a one-letter "secret" would blank
/// out every word that holds it, and hides nothing worth hiding.
pub const MIN_SECRET_LEN: usize = 4;

/// One plugin's secret values; cheap to clone, empty for most plugins.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first.
    secrets: Arc<[String]>,
    /// The secrets as a JSON string spells them (between the quotes), where
    /// that differs from the plain spelling; longest first.
    escaped: Arc<[String]>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_SECRET_LEN)
            .collect();
        let longest_first = |a: &String, b: &String| b.len().cmp(&a.len()).then_with(|| a.cmp(b));
        secrets.sort_by(longest_first);
        secrets.dedup();
        let mut escaped: Vec<String> = secrets
            .iter()
            .filter_map(|secret| {
                let quoted = serde_json::to_string(secret).ok()?;
                let inner = quoted.get(1..quoted.len().saturating_sub(1))?;
                (inner != secret).then(|| inner.to_string())
            })
            .collect();
        escaped.sort_by(longest_first);
        Self {
            secrets: secrets.into(),
            escaped: escaped.into(),
        }
    }

    /// The secrets of a plugin's `[plugins.<name>.config]`.
    pub fn for_config(config: &BTreeMap<String, ConfigValue>) -> Self {
        Self::new(
            config
                .values()
                .filter(|v| v.is_secret())
                .map(|v| v.expose().to_string()),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every known secret replaced; borrowed when there is none.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }

    /// JSON text (as `serde_json` writes it) with every known secret replaced,
    /// in its escaped spelling as well as its plain one.
    pub fn redact_json<'a>(&self, json: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(json);
        for secret in self.escaped.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        match out {
            Cow::Borrowed(text) => self.redact(text),
            Cow::Owned(text) => Cow::Owned(self.redact_owned(text)),
        }
    }

    /// [`Redactor::redact`] in place, for a message the caller owns.
    pub fn redact_owned(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(redacted) => redacted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_of_every_secret_is_hidden() {
        let r = Redactor::new([
            "s3cret-token".to_string(),
            "s3cret".to_string(),
            "ab".into(),
        ]);
        assert_eq!(
            r.redact("token=s3cret-token, again s3cret-token; short s3cret; ab stays"),
            "token=[redacted], again [redacted]; short [redacted]; ab stays"
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        assert!(Redactor::default().is_empty());
    }

    #[test]
    fn secrets_that_json_escapes_are_hidden_in_json() {
        let awkward = "pa\"ss\\wo\u{1}rd\nend";
        let r = Redactor::new([awkward.to_string(), "plain-secret".to_string()]);
        let inputs =
            serde_json::to_string(&[("token", awkward), ("other", "plain-secret")]).unwrap();
        let data =
            serde_json::to_string(&serde_json::json!({"data": {"echo": format!("x{awkward}y")}}))
                .unwrap();
        for json in [&inputs, &data] {
            let shown = r.redact_json(json);
            assert!(!shown.contains("wo\\u0001rd"), "{shown}");
            assert!(!shown.contains("pa\\\"ss"), "{shown}");
            assert!(!shown.contains("plain-secret"), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
            let parsed: serde_json::Value = serde_json::from_str(&shown).unwrap();
            assert!(
                !parsed.to_string().contains("pa\\\"ss"),
                "still JSON: {parsed}"
            );
        }
        assert!(matches!(r.redact_json("{\"a\":\"b\"}"), Cow::Borrowed(_)));
    }

    #[test]
    fn only_secrets_from_the_environment_are_searched() {
        let config = BTreeMap::from([
            (
                "token".to_string(),
                ConfigValue::secret("TOKEN", "tok-123456"),
            ),
            ("base".to_string(), ConfigValue::plain("http://example.com")),
        ]);
        let r = Redactor::for_config(&config);
        assert_eq!(
            r.redact("GET http://example.com with tok-123456"),
            "GET http://example.com with [redacted]"
        );
    }
}
