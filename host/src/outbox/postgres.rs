//! The outbox in PostgreSQL, shared by several replicas: the queue pattern of
//! River, graphile-worker and pgmq.
//!
//! - A request is recorded once: `link` is the primary key, so a duplicate on
//!   any replica is seen as one.
//! - The replica that records a request holds it, with a lease
//!   (`lease_until`) that it renews while it works ([`Outbox::renew`]). A
//!   replica that stops renewing (dead, partitioned, paused) loses its claims:
//!   another claims them with `FOR UPDATE SKIP LOCKED` once the lease has run
//!   out, bumping the claim counter.
//! - A result or a close is accepted only from the current holder: `owner`
//!   and `claim` must both match, so a paused replica waking up cannot
//!   overwrite newer work.
//! - Released claims (a replica shutting down) are announced with `NOTIFY`,
//!   so another replica takes them at once; otherwise replicas poll.
//! - Lease times come from the database's clock, never a replica's.
//! - Pruning takes an advisory lock: one replica at a time.

use std::time::{Duration, SystemTime};

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use tokio::sync::{Mutex, OnceCell};

use super::{
    Accepted, Claim, Listing, NewRecord, OpenStats, Outbox, OutboxError, RecordSummary, Stale,
    State, from_millis, millis,
};
use crate::config::redact_url;
use crate::link::LinkTag;
use crate::migrations::migrator;
use crate::protocol::Fields;

/// The channel released claims are announced on.
const CHANNEL: &str = "optech_outbox";
/// Serialises pruning across replicas (`pg_try_advisory_xact_lock`).
const PRUNE_LOCK: i64 = 0x006f_7074_6563_6801;
/// Rows deleted per statement when pruning.
const PRUNE_BATCH: i64 = 5_000;

/// The PostgreSQL outbox; one per replica, with its own owner id.
pub struct PostgresOutbox {
    /// Connects on first use: a replica whose plugins all answer synchronously
    /// starts without the database.
    pool: Result<PgPool, String>,
    /// Migrations run once, on the first use that reaches the database.
    migrated: OnceCell<()>,
    owner: String,
    lease: Duration,
    /// Hears `NOTIFY`s of released claims; opened on first wait.
    listener: Mutex<Option<PgListener>>,
}

impl PostgresOutbox {
    /// The outbox at `url`, with a fresh owner id; nothing is connected yet.
    pub fn new(url: &str, lease: Duration) -> Self {
        let pool = url
            .parse::<PgConnectOptions>()
            .map(|options| {
                PgPoolOptions::new()
                    .max_connections(16)
                    // A database that is down must fail a request fast (503),
                    // not hold it for the default 30 s.
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_lazy_with(options)
            })
            .map_err(|e| format!("{} is not a usable URL: {e}", redact_url(url)));
        Self {
            pool,
            migrated: OnceCell::new(),
            owner: format!(
                "{}-{:08x}",
                hostname().unwrap_or_else(|| "replica".into()),
                rand::random::<u32>()
            ),
            lease,
            listener: Mutex::new(None),
        }
    }

    /// Connects, runs the migrations (versioned, idempotent, one replica at a
    /// time) and returns the pool.
    pub async fn open(url: &str, lease: Duration) -> Result<Self, OutboxError> {
        let outbox = Self::new(url, lease);
        outbox.pool().await?;
        Ok(outbox)
    }

    /// The pool, migrated.
    async fn pool(&self) -> Result<&PgPool, OutboxError> {
        let pool = self
            .pool
            .as_ref()
            .map_err(|e| OutboxError::Postgres(e.clone()))?;
        self.migrated
            .get_or_try_init(|| async {
                migrator()
                    .run(pool)
                    .await
                    .map_err(|e| OutboxError::Postgres(format!("migrating the outbox: {e}")))
            })
            .await?;
        Ok(pool)
    }

    /// This replica's owner id, as recorded on the rows it holds.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

fn db(e: sqlx::Error) -> OutboxError {
    OutboxError::Postgres(e.to_string())
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= 64)
}

#[async_trait::async_trait]
impl Outbox for PostgresOutbox {
    async fn accept(&self, record: &NewRecord<'_>) -> Result<Accepted, OutboxError> {
        let inputs =
            serde_json::to_string(record.inputs).map_err(|e| OutboxError::Task(e.to_string()))?;
        let inserted = sqlx::query(
            "INSERT INTO optech_requests
               (link, key, inputs, request_id, accepted_at, expires_at, state, owner, claim, lease_until,
                traceparent, tracestate)
             VALUES ($1, $2, $3, $4, optech_now_ms(), $5, 'accepted', $6, 1, optech_now_ms() + $7, $8, $9)
             ON CONFLICT (link) DO NOTHING"
        )
        .bind(record.link)
        .bind(record.key)
        .bind(inputs)
        .bind(record.request_id)
        .bind(millis(record.expires_at))
        .bind(&self.owner)
        .bind(self.lease_ms())
        .bind(record.traceparent)
        .bind(record.tracestate)
        .execute(self.pool().await?)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(if inserted == 1 {
            Accepted::New(Claim {
                link: record.link.to_string(),
                token: 1,
            })
        } else {
            Accepted::Duplicate
        })
    }

    async fn contains(&self, link: &str) -> Result<bool, OutboxError> {
        let found = sqlx::query("SELECT 1 FROM optech_requests WHERE link = $1")
            .bind(link)
            .fetch_optional(self.pool().await?)
            .await
            .map_err(db)?;
        Ok(found.is_some())
    }

    async fn answer(&self, claim: &Claim, body: &[u8]) -> Result<bool, OutboxError> {
        let changed = sqlx::query(
            "UPDATE optech_requests SET result = $3, state = 'answered', answered_at = optech_now_ms()
             WHERE link = $1 AND claim = $2 AND owner = $4 AND state IN ('accepted', 'answered')"
        )
        .bind(&claim.link)
        .bind(claim.token)
        .bind(body)
        .bind(&self.owner)
        .execute(self.pool().await?)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn attempted(&self, claim: &Claim, outcome: &str) -> Result<(), OutboxError> {
        sqlx::query(
            "UPDATE optech_requests SET attempts = attempts + 1, last_outcome = $3
             WHERE link = $1 AND claim = $2 AND owner = $4",
        )
        .bind(&claim.link)
        .bind(claim.token)
        .bind(outcome)
        .bind(&self.owner)
        .execute(self.pool().await?)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn close(&self, claim: &Claim, state: State) -> Result<bool, OutboxError> {
        let changed = sqlx::query(
            "UPDATE optech_requests SET state = $3, closed_at = optech_now_ms()
             WHERE link = $1 AND claim = $2 AND owner = $4 AND state IN ('accepted', 'answered')",
        )
        .bind(&claim.link)
        .bind(claim.token)
        .bind(state.as_str())
        .bind(&self.owner)
        .execute(self.pool().await?)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn claim_stale(&self, limit: usize) -> Result<Vec<Stale>, OutboxError> {
        let rows = sqlx::query(
            "UPDATE optech_requests SET owner = $1, claim = claim + 1, lease_until = optech_now_ms() + $3
             WHERE link IN (
               SELECT link FROM optech_requests
               WHERE state IN ('accepted', 'answered') AND lease_until < optech_now_ms()
               ORDER BY accepted_at LIMIT $2
               FOR UPDATE SKIP LOCKED)
             RETURNING link, key, inputs, expires_at, result IS NOT NULL AS answered, claim,
                       accepted_at, request_id, traceparent, tracestate"
        )
        .bind(&self.owner)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(self.lease_ms())
        .fetch_all(self.pool().await?)
        .await
        .map_err(db)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            match read_stale(&row) {
                Ok(stale) => claimed.push(stale),
                Err((link, reason)) => {
                    tracing::error!(
                        link = %crate::link::LinkTag::new(&link),
                        "outbox row cannot be read, quarantined (kept, not resumed): {reason}"
                    );
                    sqlx::query(
                        "UPDATE optech_requests SET state = 'quarantined', last_outcome = $2 WHERE link = $1",
                    )
                    .bind(&link)
                    .bind(format!("quarantined: {reason}"))
                    .execute(self.pool().await?)
                    .await
                    .map_err(db)?;
                }
            }
        }
        claimed.sort_by_key(|(accepted_at, _)| *accepted_at);
        Ok(claimed.into_iter().map(|(_, stale)| stale).collect())
    }

    async fn result(&self, claim: &Claim) -> Result<Option<Vec<u8>>, OutboxError> {
        let row = sqlx::query("SELECT result FROM optech_requests WHERE link = $1 AND claim = $2")
            .bind(&claim.link)
            .bind(claim.token)
            .fetch_optional(self.pool().await?)
            .await
            .map_err(db)?;
        Ok(row.and_then(|r| r.try_get::<Option<Vec<u8>>, _>(0).ok().flatten()))
    }

    async fn state(&self, link: &str) -> Result<Option<State>, OutboxError> {
        let row = sqlx::query("SELECT state FROM optech_requests WHERE link = $1")
            .bind(link)
            .fetch_optional(self.pool().await?)
            .await
            .map_err(db)?;
        Ok(row
            .and_then(|r| r.try_get::<String, _>(0).ok())
            .and_then(|s| State::parse(&s)))
    }

    async fn open_stats(&self) -> Result<OpenStats, OutboxError> {
        let row = sqlx::query(
            "SELECT count(*), min(accepted_at) FROM optech_requests
             WHERE state IN ('accepted', 'answered')",
        )
        .fetch_one(self.pool().await?)
        .await
        .map_err(db)?;
        let open: i64 = row.try_get(0).map_err(db)?;
        let oldest: Option<i64> = row.try_get(1).map_err(db)?;
        Ok(OpenStats {
            open: u64::try_from(open).unwrap_or(0),
            oldest: oldest.map(from_millis),
        })
    }

    async fn console_listing(&self, limit: usize) -> Result<Listing, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let open = sqlx::query(
            "SELECT link, request_id, key, state, attempts, last_outcome, accepted_at, closed_at, owner
             FROM optech_requests WHERE state IN ('accepted', 'answered')
             ORDER BY accepted_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool().await?)
        .await
        .map_err(db)?;
        let failed = sqlx::query(
            "SELECT link, request_id, key, state, attempts, last_outcome, accepted_at, closed_at, owner
             FROM optech_requests
             WHERE closed_at IS NOT NULL AND state IN ('failed', 'expired', 'quarantined')
             ORDER BY closed_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool().await?)
        .await
        .map_err(db)?;
        let summary = |row: &PgRow| -> Result<RecordSummary, OutboxError> {
            Ok(RecordSummary {
                link: LinkTag::new(&row.try_get::<String, _>("link").map_err(db)?),
                request_id: row.try_get("request_id").map_err(db)?,
                key: row.try_get("key").map_err(db)?,
                state: row
                    .try_get::<String, _>("state")
                    .ok()
                    .and_then(|s| State::parse(&s)),
                attempts: u32::try_from(row.try_get::<i32, _>("attempts").map_err(db)?)
                    .unwrap_or(0),
                last_outcome: row.try_get("last_outcome").map_err(db)?,
                accepted_at: from_millis(row.try_get("accepted_at").map_err(db)?),
                closed_at: row
                    .try_get::<Option<i64>, _>("closed_at")
                    .map_err(db)?
                    .map(from_millis),
                owner: row.try_get("owner").map_err(db)?,
            })
        };
        Ok(Listing {
            open: open.iter().map(summary).collect::<Result<_, _>>()?,
            failed: failed.iter().map(summary).collect::<Result<_, _>>()?,
        })
    }

    async fn prune(&self, closed_before: SystemTime) -> Result<usize, OutboxError> {
        let mut tx = self.pool().await?.begin().await.map_err(db)?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(PRUNE_LOCK)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        if !locked {
            // Another replica is pruning right now.
            return Ok(0);
        }
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM optech_requests WHERE link IN (
                   SELECT link FROM optech_requests
                   WHERE closed_at IS NOT NULL AND closed_at < $1 LIMIT $2)",
            )
            .bind(millis(closed_before))
            .bind(PRUNE_BATCH)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            total += usize::try_from(deleted).unwrap_or(usize::MAX);
            if deleted < PRUNE_BATCH as u64 {
                break;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(total)
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    async fn renew(&self, claims: &[Claim]) -> Result<Vec<String>, OutboxError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let (links, tokens) = split(claims);
        // The claim token fences: a lease that lapsed is extended again only
        // if nobody has claimed the record since.
        let renewed: Vec<String> = sqlx::query_scalar(
            "UPDATE optech_requests SET lease_until = optech_now_ms() + $4
             FROM unnest($1::text[], $2::bigint[]) AS held(link, claim)
             WHERE optech_requests.link = held.link AND optech_requests.claim = held.claim
               AND optech_requests.owner = $3 AND state IN ('accepted', 'answered')
             RETURNING optech_requests.link",
        )
        .bind(links)
        .bind(tokens)
        .bind(&self.owner)
        .bind(self.lease_ms())
        .fetch_all(self.pool().await?)
        .await
        .map_err(db)?;
        Ok(renewed)
    }

    async fn probe(&self) -> Result<(), OutboxError> {
        sqlx::query("SELECT 1")
            .execute(self.pool().await?)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn prepare(&self) -> Result<(), OutboxError> {
        self.probe().await
    }

    async fn release(&self, claims: &[Claim]) -> Result<(), OutboxError> {
        if claims.is_empty() {
            return Ok(());
        }
        let (links, tokens) = split(claims);
        sqlx::query(
            "UPDATE optech_requests SET lease_until = optech_now_ms() - 1
             FROM unnest($1::text[], $2::bigint[]) AS held(link, claim)
             WHERE optech_requests.link = held.link AND optech_requests.claim = held.claim
               AND optech_requests.owner = $3",
        )
        .bind(links)
        .bind(tokens)
        .bind(&self.owner)
        .execute(self.pool().await?)
        .await
        .map_err(db)?;
        sqlx::query("SELECT pg_notify($1, 'released')")
            .bind(CHANNEL)
            .execute(self.pool().await?)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn wait_for_work(&self, max: Duration) {
        let Ok(pool) = self.pool().await else {
            tokio::time::sleep(max).await;
            return;
        };
        let mut listener = self.listener.lock().await;
        if listener.is_none() {
            match PgListener::connect_with(pool).await {
                Ok(mut new) => match new.listen(CHANNEL).await {
                    Ok(()) => *listener = Some(new),
                    Err(e) => tracing::debug!("LISTEN failed, polling instead: {e}"),
                },
                Err(e) => tracing::debug!("LISTEN failed, polling instead: {e}"),
            }
        }
        match listener.as_mut() {
            Some(heard) => {
                if let Ok(Err(e)) = tokio::time::timeout(max, heard.recv()).await {
                    tracing::debug!("the outbox's LISTEN connection broke, reopening: {e}");
                    *listener = None;
                }
            }
            None => tokio::time::sleep(max).await,
        }
    }
}

fn split(claims: &[Claim]) -> (Vec<String>, Vec<i64>) {
    claims.iter().map(|c| (c.link.clone(), c.token)).unzip()
}

/// Decodes a claimed row, or names its link and why not.
fn read_stale(row: &PgRow) -> Result<(i64, Stale), (String, String)> {
    let link: String = row
        .try_get("link")
        .map_err(|e| (String::new(), format!("`link` is unreadable: {e}")))?;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        (link.clone(), format!("`{what}` is unreadable: {e}"))
    };
    let key: String = row.try_get("key").map_err(|e| fail("key", &e))?;
    let inputs: String = row.try_get("inputs").map_err(|e| fail("inputs", &e))?;
    let inputs: Fields = serde_json::from_str(&inputs).map_err(|e| fail("inputs", &e))?;
    let expires_at: i64 = row
        .try_get("expires_at")
        .map_err(|e| fail("expires_at", &e))?;
    let answered: bool = row.try_get("answered").map_err(|e| fail("result", &e))?;
    let token: i64 = row.try_get("claim").map_err(|e| fail("claim", &e))?;
    let accepted_at: i64 = row
        .try_get("accepted_at")
        .map_err(|e| fail("accepted_at", &e))?;
    // Optional context: a value that cannot be read is dropped, never a
    // reason to quarantine the row.
    let request_id: Option<String> = row.try_get("request_id").ok().flatten();
    let traceparent: Option<String> = row.try_get("traceparent").ok().flatten();
    let tracestate: Option<String> = row.try_get("tracestate").ok().flatten();
    Ok((
        accepted_at,
        Stale {
            claim: Claim {
                link: link.clone(),
                token,
            },
            request_id,
            traceparent,
            tracestate,
            key,
            inputs,
            expires_at: from_millis(expires_at),
            answered,
        },
    ))
}

impl std::fmt::Debug for PostgresOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOutbox")
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}
