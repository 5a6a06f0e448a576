//! Reading a parsed `optech.toml` key by key, so that every problem in the
//! file is found in one pass: a wrong value, a misspelt key and a missing
//! plugin are all reported together, each with its key and line, where a
//! typed deserializer would stop at the first.

use std::ops::Range;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::Problem;

/// The text being read and the problems found so far.
pub struct Reader<'t> {
    text: &'t str,
    pub problems: Vec<Problem>,
}

impl<'t> Reader<'t> {
    pub fn new(text: &'t str) -> Self {
        Self {
            text,
            problems: Vec::new(),
        }
    }

    /// The 1-based line a span starts on.
    pub fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        let start = span?.start.min(self.text.len());
        Some(self.text[..start].bytes().filter(|b| *b == b'\n').count() + 1)
    }

    pub fn problem(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) {
        let line = self.line(span);
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
            line,
        });
    }
}

/// One table of the file (`[server]`, `[plugins.NAME]`, ...), read key by key.
pub struct Section<'d> {
    /// Dotted path, as a user would write it (`plugins.orders`).
    pub path: String,
    table: Option<&'d dyn TableLike>,
}

impl<'d> Section<'d> {
    /// The table at `item` (absent is an empty table; anything else is a problem).
    pub fn new(reader: &mut Reader<'_>, path: String, item: Option<&'d Item>) -> Self {
        let table = match item {
            None => None,
            Some(item) => match item.as_table_like() {
                Some(table) => Some(table),
                None => {
                    reader.problem(
                        &path,
                        item.span(),
                        format!("must be a table, not {}", item.type_name()),
                    );
                    None
                }
            },
        };
        Self { path, table }
    }

    /// The dotted key of a field of this table.
    pub fn key(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// Every entry, in file order, with its span.
    pub fn entries(&self) -> Vec<(&'d str, &'d Item, Option<Range<usize>>)> {
        let Some(table) = self.table else {
            return Vec::new();
        };
        table
            .iter()
            .map(|(name, item)| {
                let span = table
                    .get_key_value(name)
                    .and_then(|(key, _)| key.span())
                    .or_else(|| item.span());
                (name, item, span)
            })
            .collect()
    }

    /// The item at `name` and its span.
    pub fn get(&self, name: &str) -> Option<(&'d Item, Option<Range<usize>>)> {
        let table = self.table?;
        let (key, item) = table.get_key_value(name)?;
        Some((item, item.span().or_else(|| key.span())))
    }

    /// Reports every key not in `known`, with the closest known one.
    pub fn unknown_keys(&self, reader: &mut Reader<'_>, known: &[&str]) {
        for (name, _, span) in self.entries() {
            if known.contains(&name) {
                continue;
            }
            let hint = closest(name, known)
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            reader.problem(
                self.key(name),
                span,
                format!(
                    "unknown setting `{name}`{hint} (known: {})",
                    known.join(", ")
                ),
            );
        }
    }

    /// A string value, if present; a value of another type is a problem.
    pub fn string(
        &self,
        reader: &mut Reader<'_>,
        name: &str,
    ) -> Option<(String, Option<Range<usize>>)> {
        let (item, span) = self.get(name)?;
        match item.as_str() {
            Some(text) => Some((text.to_string(), span)),
            None => {
                reader.problem(
                    self.key(name),
                    span,
                    format!("must be a string, not {}", item.type_name()),
                );
                None
            }
        }
    }

    pub fn bool(&self, reader: &mut Reader<'_>, name: &str, default: bool) -> bool {
        let Some((item, span)) = self.get(name) else {
            return default;
        };
        item.as_bool().unwrap_or_else(|| {
            reader.problem(
                self.key(name),
                span,
                format!("must be true or false, not {}", item.type_name()),
            );
            default
        })
    }

    /// A whole number of at least `min`, if present.
    pub fn count(&self, reader: &mut Reader<'_>, name: &str, min: u64, why: &str) -> Option<u64> {
        let (item, span) = self.get(name)?;
        match item.as_integer().map(u64::try_from) {
            Some(Ok(n)) if n >= min => Some(n),
            Some(_) => {
                reader.problem(self.key(name), span, format!("must be at least {min}{why}"));
                None
            }
            None => {
                reader.problem(
                    self.key(name),
                    span,
                    format!("must be a whole number, not {}", item.type_name()),
                );
                None
            }
        }
    }

    /// A duration like "10s" or "1m 30s", longer than zero; `default` if absent or wrong.
    pub fn duration(&self, reader: &mut Reader<'_>, name: &str, default: Duration) -> Duration {
        let Some((text, span)) = self.string(reader, name) else {
            return default;
        };
        match humantime::parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                reader.problem(self.key(name), span, "must be longer than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                reader.problem(
                    self.key(name),
                    span,
                    format!("{text:?} is not a duration like \"10s\" or \"1m 30s\" ({e})"),
                );
                default
            }
        }
    }

    /// A size like "64MiB" (see [`super::parse_size`]), if present and valid.
    pub fn size(&self, reader: &mut Reader<'_>, name: &str) -> Option<u64> {
        let (text, span) = self.string(reader, name)?;
        let size = super::parse_size(&text);
        if size.is_none() {
            reader.problem(
                self.key(name),
                span,
                format!("{text:?} is not a size like \"64MiB\", \"512KiB\" or \"1MB\""),
            );
        }
        size
    }

    /// An array of strings (absent is empty); each string with its span.
    pub fn strings(
        &self,
        reader: &mut Reader<'_>,
        name: &str,
    ) -> Vec<(String, Option<Range<usize>>)> {
        let Some((item, span)) = self.get(name) else {
            return Vec::new();
        };
        let Some(array) = item.as_array() else {
            reader.problem(
                self.key(name),
                span,
                format!("must be a list of strings, not {}", item.type_name()),
            );
            return Vec::new();
        };
        let mut found = Vec::new();
        for value in array.iter() {
            match value.as_str() {
                Some(text) => found.push((text.to_string(), value.span())),
                None => reader.problem(
                    self.key(name),
                    value.span(),
                    format!(
                        "must be a list of strings; {} is a {}",
                        value.to_string().trim(),
                        value.type_name()
                    ),
                ),
            }
        }
        found
    }

    /// A sub-table (`[plugins.NAME.config]`), as a section of its own.
    pub fn section(&self, reader: &mut Reader<'_>, name: &str) -> Section<'d> {
        let item = self.table.and_then(|t| t.get(name));
        Section::new(reader, self.key(name), item)
    }
}

/// `a.b`, quoting the part that needs it as TOML would.
pub fn join(path: &str, name: &str) -> String {
    let name = quote_key(name);
    if path.is_empty() {
        name
    } else {
        format!("{path}.{name}")
    }
}

/// A TOML key the way a user would have to type it.
pub fn quote_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// A scalar as the text a plugin reads; `None` for arrays, tables, dates.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.value().clone()),
        Value::Integer(i) => Some(i.value().to_string()),
        Value::Float(f) => Some(f.value().to_string()),
        Value::Boolean(b) => Some(b.value().to_string()),
        _ => None,
    }
}

/// The known name nearest to a misspelt one, if it is near enough to be a typo.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars: small inputs only (setting names).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(row[j + 1])
            };
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        let known = ["timeout", "memory", "mode"];
        assert_eq!(closest("tiemout", &known), Some("timeout"));
        assert_eq!(closest("memroy", &known), Some("memory"));
        assert_eq!(closest("colour", &known), None);
    }

    #[test]
    fn lines_are_counted_from_one() {
        let reader = Reader::new("a = 1\nb = 2\n");
        assert_eq!(reader.line(Some(0..1)), Some(1));
        assert_eq!(reader.line(Some(6..7)), Some(2));
        assert_eq!(reader.line(None), None);
    }
}
