//! `[store]`: what plugins may keep in their key-value buckets.

use super::read::{Reader, Section};

/// The keys of `[store]`.
const KNOWN: &[&str] = &[
    "max_key_size",
    "max_value_size",
    "max_keys_per_bucket",
    "max_bytes_per_plugin",
];

pub const DEFAULT_MAX_KEY_SIZE: u64 = 1024;
pub const DEFAULT_MAX_VALUE_SIZE: u64 = 1024 * 1024;
pub const DEFAULT_MAX_KEYS_PER_BUCKET: u64 = 100_000;
pub const DEFAULT_MAX_BYTES_PER_PLUGIN: u64 = 64 * 1024 * 1024;

/// A key is a string a plugin names things by, not data: past this it is a
/// value in the wrong place.
const KEY_SIZE_CAP: u64 = 64 * 1024;

/// The store's limits, each a refusal the plugin is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// Bytes of one key.
    pub max_key_size: u64,
    /// Bytes of one value.
    pub max_value_size: u64,
    /// Keys one bucket holds, over all the plugins that write to it.
    pub max_keys_per_bucket: u64,
    /// Bytes of keys and values one plugin's writes hold, over all its buckets.
    pub max_bytes_per_plugin: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            max_key_size: DEFAULT_MAX_KEY_SIZE,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            max_keys_per_bucket: DEFAULT_MAX_KEYS_PER_BUCKET,
            max_bytes_per_plugin: DEFAULT_MAX_BYTES_PER_PLUGIN,
        }
    }
}

pub(super) fn read(reader: &mut Reader<'_>, section: &Section<'_>) -> StoreSettings {
    section.unknown_keys(reader, KNOWN);
    let mut sized = |name: &str, default: u64, max: u64| -> u64 {
        match section.size(reader, name) {
            None => default,
            Some(size) if (1..=max).contains(&size) => size,
            Some(_) => {
                let span = section.string(reader, name).and_then(|(_, span)| span);
                reader.problem(
                    section.key(name),
                    span,
                    format!("must be between 1 byte and {max} bytes"),
                );
                default
            }
        }
    };
    let max_key_size = sized("max_key_size", DEFAULT_MAX_KEY_SIZE, KEY_SIZE_CAP);
    let max_value_size = sized(
        "max_value_size",
        DEFAULT_MAX_VALUE_SIZE,
        u64::from(u32::MAX),
    );
    let max_bytes_per_plugin = sized(
        "max_bytes_per_plugin",
        DEFAULT_MAX_BYTES_PER_PLUGIN,
        u64::MAX,
    );
    StoreSettings {
        max_key_size,
        max_value_size,
        max_keys_per_bucket: section
            .count(reader, "max_keys_per_bucket", 1, "")
            .unwrap_or(DEFAULT_MAX_KEYS_PER_BUCKET),
        max_bytes_per_plugin,
    }
}
