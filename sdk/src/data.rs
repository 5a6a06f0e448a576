use std::collections::HashMap;

use crate::Inputs;

/// Up to this many fields, a name is found by a scan; past it, by an index.
const SCAN_MAX: usize = 16;

/// The `data` of an answer: names to string values, in insertion order.
///
/// Setting a name again replaces its value in place. Every operation is
/// constant time per field, so an answer with many fields costs linear time.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pairs: Vec<(String, String)>,
    /// Where each name sits in `pairs`, once there are more than [`SCAN_MAX`]:
    /// a short answer (most of them) pays for no hash map, no copied names and
    /// no random seed per call; a long one still costs linear time.
    index: Option<HashMap<String, usize>>,
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for Data {}

impl Data {
    /// An empty answer.
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
        self.set(name.into(), value.to_string());
    }

    fn set(&mut self, name: String, value: String) {
        if let Some(at) = self.position(&name) {
            self.pairs[at].1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(name.clone(), self.pairs.len());
        }
        self.pairs.push((name, value));
        if self.index.is_none() && self.pairs.len() > SCAN_MAX {
            let index = self.pairs.iter().enumerate();
            self.index = Some(index.map(|(at, (name, _))| (name.clone(), at)).collect());
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(name).copied(),
            None => self.pairs.iter().position(|(n, _)| n == name),
        }
    }

    /// The value set for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).map(|at| self.pairs[at].1.as_str())
    }

    /// How many fields are set.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The fields as name/value pairs, in the order they were first set.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }
}

impl From<Inputs> for Data {
    /// Echoes inputs back as data, unchanged.
    fn from(inputs: Inputs) -> Self {
        let mut data = Data::new();
        for (name, value) in inputs.into_pairs() {
            data.set(name, value);
        }
        data
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

    fn time_inserts(n: usize) -> std::time::Duration {
        (0..3)
            .map(|_| {
                let started = std::time::Instant::now();
                let mut data = Data::new();
                for i in 0..n {
                    data.insert(format!("field{i}"), "v");
                }
                std::hint::black_box(data);
                started.elapsed()
            })
            .min()
            .unwrap_or_default()
    }

    #[test]
    fn inserting_many_fields_is_linear() {
        // Linear work gives a ratio near 10; a scan per insert gave about 100.
        let ratio =
            time_inserts(100_000).as_secs_f64() / time_inserts(10_000).as_secs_f64().max(1e-9);
        assert!(ratio < 35.0, "100k/10k inserts = {ratio:.1}: not linear");
    }

    #[test]
    fn from_inputs_keeps_the_last_value_of_a_repeated_name() {
        let data = Data::from(Inputs::from_pairs([("a", "1"), ("b", "2"), ("a", "3")]));
        assert_eq!(data.get("a"), Some("3"));
        assert_eq!(data.len(), 2);
    }

    #[test]
    fn names_are_found_before_and_after_the_index_is_built() {
        let mut data = Data::new();
        for i in 0..40 {
            data.insert(format!("f{i}"), i);
        }
        data.insert("f3", "again");
        data.insert("f30", "again");
        assert_eq!(data.len(), 40);
        assert_eq!(
            (data.get("f3"), data.get("f30")),
            (Some("again"), Some("again"))
        );
        assert_eq!(data.get("f39"), Some("39"));
        assert_eq!(data.get("f40"), None);
        let pairs = data.into_pairs();
        assert_eq!(pairs[3], ("f3".into(), "again".into()));
        assert_eq!(pairs[39], ("f39".into(), "39".into()));
    }

    #[test]
    fn insert_replaces_and_keeps_order() {
        let data = Data::new().with("a", 1).with("b", "x").with("a", 2);
        assert_eq!(
            data.into_pairs(),
            vec![("a".into(), "2".into()), ("b".into(), "x".into())]
        );
    }
}
