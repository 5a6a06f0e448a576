//! Open connections are file descriptors: the connection cap is only a cap if
//! the process may open that many files and still have room for the rest
//! (the outbox, plugin files, outbound connections, the admin listener).
//!
//! At start the soft `RLIMIT_NOFILE` is raised to what the cap needs, up to
//! the hard limit (as Go's runtime and nginx's `worker_rlimit_nofile` do); a
//! cap the limit cannot hold is lowered, and said so, rather than letting
//! `accept` fail with `EMFILE` under load.

/// Descriptors kept for everything but the public listener's connections:
/// at least this many, or a quarter of the limit.
const RESERVE: u64 = 256;
/// The lowest cap it will lower to.
const FLOOR: usize = 64;

/// `wanted`, or less if the process cannot hold that many connections.
pub fn connections_within(wanted: usize) -> usize {
    let Some(limit) = raise_to(needed(wanted)) else {
        return wanted;
    };
    let room = limit.saturating_sub(RESERVE.max(limit / 4));
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(FLOOR);
    if room < wanted {
        tracing::warn!(
            "[server] max_connections = {wanted}, but this process may open only {limit} \
             files (ulimit -n): the public listener keeps at most {room} connections open"
        );
        room
    } else {
        wanted
    }
}

/// Descriptors for `connections` and the rest.
fn needed(connections: usize) -> u64 {
    let connections = u64::try_from(connections).unwrap_or(u64::MAX);
    connections.saturating_add(RESERVE.max(connections / 3))
}

/// Raises the soft limit toward `wanted` (never above the hard limit, never
/// lowering it); the soft limit after, or `None` where there is no such limit.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every unix
fn raise_to(wanted: u64) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a plain struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let wanted = wanted as libc::rlim_t;
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads a plain struct; failure leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_to(_wanted: u64) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_in_the_file_limit() {
        let cap = connections_within(4096);
        let limit = raise_to(0);
        if let Some(limit) = limit {
            assert!(cap as u64 <= limit, "{cap} connections in {limit} files");
        }
        assert!(cap >= FLOOR);
        assert!(needed(4096) > 4096);
        assert_eq!(connections_within(10), 10);
    }
}
