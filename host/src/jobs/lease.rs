//! The claims this host holds, and the lease that keeps each one.
//!
//! Invariants:
//! - a record is POSTed only while its claim's lease was confirmed by the
//!   database recently enough that more than half of it is left
//!   ([`Holdings::may_send`]); time is measured from just before the query
//!   that granted or renewed it, so the database's clock can only have
//!   started the lease later, never earlier;
//! - a claim whose renewal the database refused (closed or taken over), or
//!   whose lease ran out unconfirmed, is cancelled: its handler, its
//!   recording and its delivery stop, and whoever holds the record now
//!   finishes it;
//! - with an outbox of its own (no lease) a claim lasts until let go.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Claim, Outbox};

/// One held claim: how to stop its work, and until when its lease is known good.
struct Held {
    token: i64,
    lost: CancellationToken,
    /// `None` without a lease.
    confirmed_until: Option<Instant>,
}

/// A claim as the task working on it sees it.
#[derive(Debug, Clone)]
pub struct Hold {
    pub claim: Claim,
    /// Cancelled when the claim is lost: stop, send nothing.
    pub lost: CancellationToken,
}

/// Every claim this host holds, with its lease.
pub struct Holdings {
    lease: Option<Duration>,
    held: Mutex<HashMap<String, Held>>,
}

impl Holdings {
    pub fn new(lease: Option<Duration>) -> Self {
        Self {
            lease,
            held: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a claim granted by a query sent at `asked_at`; `lost` is
    /// cancelled when the claim is.
    pub fn hold(&self, claim: Claim, asked_at: Instant, lost: CancellationToken) -> Hold {
        let held = Held {
            token: claim.token,
            lost: lost.clone(),
            confirmed_until: self.lease.map(|lease| asked_at + lease),
        };
        if let Some(previous) = self.lock().insert(claim.link.clone(), held) {
            // An older claim of ours on the same record: it is superseded.
            previous.lost.cancel();
        }
        Hold { claim, lost }
    }

    /// Gives a claim up (its work is done, or it is lost).
    pub fn let_go(&self, claim: &Claim) {
        let mut held = self.lock();
        if held
            .get(&claim.link)
            .is_some_and(|h| h.token == claim.token)
        {
            held.remove(&claim.link);
        }
    }

    /// Every claim held now.
    pub fn claims(&self) -> Vec<Claim> {
        self.lock()
            .iter()
            .map(|(link, held)| Claim {
                link: link.clone(),
                token: held.token,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The database answered a renewal of `asked` (sent at `asked_at`) with
    /// the links in `kept`: those are confirmed, the rest are lost. Returns
    /// how many were lost.
    pub fn renewed(&self, asked: &[Claim], kept: &[String], asked_at: Instant) -> usize {
        let kept: HashSet<&str> = kept.iter().map(String::as_str).collect();
        let mut held = self.lock();
        let mut lost = 0;
        for claim in asked {
            let Some(entry) = held.get_mut(&claim.link) else {
                continue;
            };
            if entry.token != claim.token {
                continue;
            }
            if kept.contains(claim.link.as_str()) {
                entry.confirmed_until = self.lease.map(|lease| asked_at + lease);
            } else {
                entry.lost.cancel();
                held.remove(&claim.link);
                lost += 1;
            }
        }
        lost
    }

    /// Cancels and drops every claim whose lease ran out unconfirmed; returns
    /// how many.
    pub fn lapse(&self, now: Instant) -> usize {
        let mut held = self.lock();
        let before = held.len();
        held.retain(|_, h| match h.confirmed_until {
            Some(until) if until <= now => {
                h.lost.cancel();
                false
            }
            _ => true,
        });
        before - held.len()
    }

    /// Whether `claim` may be POSTed now: still held, and (with a lease)
    /// confirmed with more than half the lease left.
    pub fn may_send(&self, claim: &Claim, now: Instant) -> bool {
        let held = self.lock();
        let Some(entry) = held.get(&claim.link).filter(|h| h.token == claim.token) else {
            return false;
        };
        match (entry.confirmed_until, self.lease) {
            (Some(until), Some(lease)) => until > now + lease / 2,
            _ => true,
        }
    }

    /// Waits until `hold` may be POSTed; `false` if it is lost first.
    pub async fn ready_to_send(&self, hold: &Hold) -> bool {
        loop {
            if hold.lost.is_cancelled() {
                return false;
            }
            if self.may_send(&hold.claim, Instant::now()) {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = hold.lost.cancelled() => return false,
            }
        }
    }
}

/// Renews the held claims every quarter of a lease and drops those that lapse,
/// until `stop`.
pub async fn heartbeat(
    outbox: Arc<dyn Outbox>,
    holdings: Arc<Holdings>,
    lease: Duration,
    stop: CancellationToken,
) {
    let every = (lease / 4).max(Duration::from_millis(50));
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let claims = holdings.claims();
        if !claims.is_empty() {
            let asked_at = Instant::now();
            match outbox.renew(&claims).await {
                Ok(kept) => {
                    if failing {
                        tracing::info!("renewing leases works again");
                        failing = false;
                    }
                    let lost = holdings.renewed(&claims, &kept, asked_at);
                    if lost > 0 {
                        tracing::info!(
                            "{lost} of {} claims are held by another replica now (or closed); their work here stops",
                            claims.len()
                        );
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!("renewing leases failed (retrying every {every:?}): {e}");
                        failing = true;
                    }
                }
            }
        }
        let lapsed = holdings.lapse(Instant::now());
        if lapsed > 0 {
            tracing::warn!(
                "{lapsed} claims lapsed without a confirmed lease; their work here stops and another replica finishes it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(link: &str, token: i64) -> Claim {
        Claim {
            link: link.into(),
            token,
        }
    }

    #[test]
    fn a_claim_may_be_sent_only_with_more_than_half_its_lease_left() {
        let lease = Duration::from_secs(4);
        let holdings = Holdings::new(Some(lease));
        let start = Instant::now();
        let hold = holdings.hold(claim("a", 1), start, CancellationToken::new());
        assert!(holdings.may_send(&hold.claim, start));
        assert!(holdings.may_send(&hold.claim, start + Duration::from_millis(1999)));
        assert!(!holdings.may_send(&hold.claim, start + Duration::from_secs(2)));
        // A renewal asked later confirms it again.
        let later = start + Duration::from_secs(3);
        assert_eq!(
            holdings.renewed(std::slice::from_ref(&hold.claim), &["a".into()], later),
            0
        );
        assert!(holdings.may_send(&hold.claim, start + Duration::from_secs(4)));
        // Unconfirmed past its end, it lapses: cancelled and gone.
        assert_eq!(holdings.lapse(later + lease - Duration::from_millis(1)), 0);
        assert_eq!(holdings.lapse(later + lease), 1);
        assert!(hold.lost.is_cancelled());
        assert!(!holdings.may_send(&hold.claim, later));
    }

    #[test]
    fn a_claim_the_database_did_not_renew_is_lost() {
        let holdings = Holdings::new(Some(Duration::from_secs(4)));
        let now = Instant::now();
        let a = holdings.hold(claim("a", 1), now, CancellationToken::new());
        let b = holdings.hold(claim("b", 1), now, CancellationToken::new());
        let lost = holdings.renewed(&[a.claim.clone(), b.claim.clone()], &["b".into()], now);
        assert_eq!(lost, 1);
        assert!(a.lost.is_cancelled() && !b.lost.is_cancelled());
        assert_eq!(holdings.claims(), vec![b.claim.clone()]);
        // A newer claim of ours supersedes the older one.
        let newer = holdings.hold(claim("b", 2), now, CancellationToken::new());
        assert!(b.lost.is_cancelled());
        assert!(holdings.may_send(&newer.claim, now));
        assert!(!holdings.may_send(&b.claim, now));
    }

    #[test]
    fn without_a_lease_a_claim_lasts_until_let_go() {
        let holdings = Holdings::new(None);
        let now = Instant::now();
        let a = holdings.hold(claim("a", 1), now, CancellationToken::new());
        assert_eq!(holdings.lapse(now + Duration::from_secs(3600)), 0);
        assert!(holdings.may_send(&a.claim, now + Duration::from_secs(3600)));
        holdings.let_go(&a.claim);
        assert!(holdings.is_empty());
    }
}
