use std::str::FromStr;

use crate::Error;

/// A request's inputs: names to string values, in the order the request gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    pairs: Vec<(String, String)>,
}

impl Inputs {
    /// Builds inputs from name/value pairs, e.g. in a handler's unit tests.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `name`, if the request has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        // The last occurrence wins, as in a JSON object with a repeated name.
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or an [`Error::InvalidInput`] that names it.
    pub fn require(&self, name: &str) -> Result<&str, Error> {
        self.get(name)
            .ok_or_else(|| Error::invalid_input(format!("missing input `{name}`")))
    }

    /// The value of `name` parsed as `T` (a number, a bool...), or an
    /// [`Error::InvalidInput`] that says which input is missing or malformed.
    pub fn parse<T>(&self, name: &str) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let raw = self.require(name)?;
        raw.trim()
            .parse()
            .map_err(|e| Error::invalid_input(format!("input `{name}` = {raw:?}: {e}")))
    }

    /// Like [`Inputs::parse`] for an optional input: `Ok(None)` when it is absent.
    pub fn parse_opt<T>(&self, name: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.parse(name).map(Some),
        }
    }

    /// Every name/value pair, in request order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many inputs the request has.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the request has no inputs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The inputs as name/value pairs, in request order.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_names_the_missing_input() {
        let inputs = Inputs::from_pairs([("a", "1")]);
        assert_eq!(inputs.require("a"), Ok("1"));
        assert_eq!(
            inputs.require("b"),
            Err(Error::invalid_input("missing input `b`"))
        );
    }

    #[test]
    fn parse_reports_malformed_values() {
        let inputs = Inputs::from_pairs([("n", " 42 "), ("x", "forty")]);
        assert_eq!(inputs.parse::<u32>("n"), Ok(42));
        let err = inputs.parse::<u32>("x").unwrap_err();
        assert!(matches!(err, Error::InvalidInput(m) if m.contains("`x`")));
        assert_eq!(inputs.parse_opt::<u32>("absent"), Ok(None));
    }

    #[test]
    fn last_value_wins() {
        let inputs = Inputs::from_pairs([("a", "1"), ("a", "2")]);
        assert_eq!(inputs.get("a"), Some("2"));
    }
}
