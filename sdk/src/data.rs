use crate::Inputs;

/// The `data` of an answer: names to string values, in insertion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Data {
    pairs: Vec<(String, String)>,
}

impl Data {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field, builder style: `Data::new().with("a", "1").with("b", 2)`.
    pub fn with(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets a field; a name set twice keeps its last value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl ToString) {
        let name = name.into();
        let value = value.to_string();
        match self.pairs.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.pairs.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }
}

impl From<Inputs> for Data {
    /// Echoes inputs back as data, unchanged.
    fn from(inputs: Inputs) -> Self {
        Self {
            pairs: inputs.into_pairs(),
        }
    }
}

impl<K: Into<String>, V: ToString> FromIterator<(K, V)> for Data {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut data = Data::new();
        for (k, v) in iter {
            data.insert(k, v);
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_keeps_order() {
        let data = Data::new().with("a", 1).with("b", "x").with("a", 2);
        assert_eq!(
            data.into_pairs(),
            vec![("a".into(), "2".into()), ("b".into(), "x".into())]
        );
    }
}
