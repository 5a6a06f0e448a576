-- The outbox shared by several optech replicas. Times are unix milliseconds
-- taken from the database's clock, so replicas' clocks never disagree about a lease.
CREATE TABLE IF NOT EXISTS optech_requests (
    link         TEXT PRIMARY KEY,
    key          TEXT NOT NULL,
    inputs       TEXT NOT NULL,      -- JSON array of [name, value] pairs
    request_id   TEXT,
    accepted_at  BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    state        TEXT NOT NULL,      -- accepted | answered | delivered | failed | expired | quarantined
    result       BYTEA,              -- the exact JSON body to POST to link
    answered_at  BIGINT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_outcome TEXT,
    closed_at    BIGINT,
    owner        TEXT NOT NULL,      -- the replica holding the record
    claim        BIGINT NOT NULL,    -- fencing token: bumped by every new claim
    lease_until  BIGINT NOT NULL     -- the holder must renew before this
);
CREATE INDEX IF NOT EXISTS optech_requests_open
    ON optech_requests (lease_until, accepted_at) WHERE state IN ('accepted', 'answered');
CREATE INDEX IF NOT EXISTS optech_requests_closed
    ON optech_requests (closed_at) WHERE closed_at IS NOT NULL;

-- The database's clock in unix milliseconds: the one clock every replica's lease uses.
CREATE OR REPLACE FUNCTION optech_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE AS
    $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;
