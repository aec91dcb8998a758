//! The process's open-files limit. Every client connection holds a socket,
//! and usually one to a region; the soft limit many systems start a process
//! with (1024) runs out long before `limits.max_connections`, and then every
//! listener stalls on `EMFILE`. At start the soft limit is raised to the
//! hard one, and a limit still too low for the configured connections is
//! said out loud (at start and by `switchyard check`).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Kept for listeners, the op log, etcd, NATS, DNS and health checks.
const RESERVED_FDS: u64 = 256;

/// Descriptors `max_connections` client connections may need: one each,
/// and a quarter as many again for connections to regions (only requests
/// in flight hold one; idle clients hold none), plus the reserve.
fn needed(max_connections: u64) -> u64 {
    max_connections
        .saturating_add(max_connections / 4)
        .saturating_add(RESERVED_FDS)
}

/// What the limit was and is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFiles {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
    /// Why the limit is too low for `max_connections`, when it is.
    pub warning: Option<String>,
}

/// Raises the soft open-files limit to the hard one and checks it against
/// `max_connections`.
pub fn raise_open_files(max_connections: usize) -> OpenFiles {
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
    OpenFiles {
        soft_before: before,
        soft,
        hard,
        warning: too_low(max_connections, soft),
    }
}

fn too_low(max_connections: usize, soft: u64) -> Option<String> {
    let needed = needed(max_connections as u64);
    (soft < needed).then(|| {
        format!(
            "the open-files limit is {soft}, but limits.max_connections {max_connections} needs about {needed} (one per connection, a quarter more for connections to regions, {RESERVED_FDS} kept); raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn) or lower limits.max_connections to {}",
            soft.saturating_sub(RESERVED_FDS) * 4 / 5
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
}
