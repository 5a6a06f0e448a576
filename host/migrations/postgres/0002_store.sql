-- Plugins' key-value store, shared by the replicas that share the outbox.
-- Keys are bytes (UTF-8 text; read with convert_from(key, 'UTF8')): bytea
-- compares byte by byte, so listings are in byte order and a prefix is a
-- range, and a key may hold any character (text refuses NUL). Expiry times
-- are unix milliseconds by the writing replica's clock: the store judges
-- expiry by its caller's time, not the database's.
CREATE TABLE IF NOT EXISTS optech_kv (
    bucket  TEXT NOT NULL,
    key     BYTEA NOT NULL,
    value   BYTEA NOT NULL,
    owner   TEXT NOT NULL,       -- the plugin whose bytes these are
    expires BIGINT,              -- NULL: kept until deleted
    PRIMARY KEY (bucket, key)
);
CREATE INDEX IF NOT EXISTS optech_kv_expiring
    ON optech_kv (bucket, expires) WHERE expires IS NOT NULL;

-- Counts changed in the same transaction as the rows they count, so a limit
-- is checked without a scan. A bucket's row is also the lock every write to
-- the bucket takes first.
CREATE TABLE IF NOT EXISTS optech_kv_buckets (
    bucket TEXT PRIMARY KEY,
    keys   BIGINT NOT NULL,      -- expired keys not yet pruned included
    bytes  BIGINT NOT NULL       -- keys' and values' bytes
);
CREATE TABLE IF NOT EXISTS optech_kv_owners (
    owner TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL        -- keys' and values' bytes the plugin wrote
);
