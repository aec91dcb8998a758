//! The process's open-files limit. Every client connection holds a socket,
//! and usually one to a region; the soft limit many systems start a process
//! with (1024) runs out long before `limits.max_connections`, and then every
//! listener stalls on `EMFILE`. At start the soft limit is raised to the
//! hard one, and a limit still too low for the configured connections is
//! said out loud (at start and by `switchyard check`). Without a configured
//! `limits.max_connections`, the default is what the limit can hold, at most
//! [`DEFAULT_MAX_CONNECTIONS`].

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Kept for listeners, the op log, etcd, NATS, DNS and health checks.
const RESERVED_FDS: u64 = 256;

/// `limits.max_connections` when the config does not say and the limit
/// holds more.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Descriptors `max_connections` client connections may need: one each,
/// and a quarter as many again for connections to regions (only requests
/// in flight hold one; idle clients hold none), plus the reserve.
fn needed(max_connections: u64) -> u64 {
    max_connections
        .saturating_add(max_connections / 4)
        .saturating_add(RESERVED_FDS)
}

/// Client connections `soft` open files can hold (the inverse of [`needed`]).
fn fits(soft: u64) -> u64 {
    soft.saturating_sub(RESERVED_FDS) * 4 / 5
}

/// What the limit was and is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
    /// The client connections to allow: the configured
    /// `limits.max_connections`, or what the limit holds (at most
    /// [`DEFAULT_MAX_CONNECTIONS`], at least 1).
    pub max_connections: usize,
    /// Why the limit is too low, when it is: for a configured
    /// `max_connections`, or below the default when none is configured.
    pub warning: Option<String>,
}

/// Raises the soft open-files limit to the hard one and checks it against
/// the configured `max_connections`, or derives the default from it.
pub fn raise_open_files(configured: Option<usize>) -> OpenFiles {
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let soft = if before < hard
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .is_ok()
    {
        hard
    } else {
        before
    };
    let max_connections = configured.unwrap_or_else(|| default_max_connections(soft));
    let warning = match configured {
        Some(n) => too_low(n, soft),
        None => (max_connections < DEFAULT_MAX_CONNECTIONS).then(|| {
            format!(
                "limits.max_connections is not set, and the open-files limit {soft} holds {max_connections} connections, not {DEFAULT_MAX_CONNECTIONS}; raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn) or set limits.max_connections"
            )
        }),
    };
    OpenFiles {
        soft_before: before,
        soft,
        hard,
        max_connections,
        warning,
    }
}

fn default_max_connections(soft: u64) -> usize {
    usize::try_from(fits(soft))
        .unwrap_or(usize::MAX)
        .clamp(1, DEFAULT_MAX_CONNECTIONS)
}

fn too_low(max_connections: usize, soft: u64) -> Option<String> {
    let needed = needed(max_connections as u64);
    (soft < needed).then(|| {
        format!(
            "the open-files limit is {soft}, but limits.max_connections {max_connections} needs about {needed} (one per connection, a quarter more for connections to regions, {RESERVED_FDS} kept); raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn) or lower limits.max_connections to {}",
            fits(soft)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_below_two_per_connection_is_named_with_what_would_fit() {
        assert_eq!(too_low(10_000, 1 << 20), None);
        assert_eq!(too_low(10_000, 20_000), None);
        let w = too_low(10_000, 1024).expect("too low");
        assert!(
            w.contains("is 1024") && w.contains("needs about 12756"),
            "{w}"
        );
        assert!(w.contains("lower limits.max_connections to 614"), "{w}");
        assert_eq!(too_low(614, 1024), None);
    }

    #[test]
    fn the_default_is_what_the_limit_holds_up_to_ten_thousand() {
        assert_eq!(default_max_connections(1024), 614);
        assert_eq!(default_max_connections(1 << 20), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(default_max_connections(100), 1);
        assert_eq!(too_low(default_max_connections(1024), 1024), None);
    }
}
