//! The region's data: a key-value store with a commit log, the fencing high
//! water marks per partition, and the idempotency store.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One committed change, as shipped to replicas.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Commit {
    pub position: u64,
    /// Milliseconds since the Unix epoch when the owner committed it.
    pub at_ms: u64,
    pub key: String,
    /// `None` deletes the key.
    pub value: Option<String>,
}

/// A stored response for an idempotency key.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
    pub commit_position: Option<u64>,
    /// Hash of the request that produced it, to tell a reuse with another payload.
    pub request_hash: u64,
}

#[derive(Debug, Default)]
pub struct Store {
    pub data: HashMap<String, String>,
    /// Every commit applied here, in order (the owner's log, or a replica's copy).
    pub log: Vec<Commit>,
    /// Highest fencing token seen per partition.
    pub fence: HashMap<String, u64>,
    pub idempotency: HashMap<String, StoredResponse>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the fencing check decided for a write.
#[derive(Debug, PartialEq, Eq)]
pub enum Fence {
    Accept,
    /// The token is below the highest seen for the partition.
    Stale {
        highest: u64,
    },
}

impl Store {
    pub fn applied_position(&self) -> u64 {
        self.log.last().map_or(0, |c| c.position)
    }

    /// Checks and records `token` for `partition`; a write without a token passes.
    pub fn fence(&mut self, partition: &str, token: Option<u64>) -> Fence {
        let Some(token) = token else {
            return Fence::Accept;
        };
        let highest = self.fence.entry(partition.to_string()).or_insert(0);
        if token < *highest {
            return Fence::Stale { highest: *highest };
        }
        *highest = token;
        Fence::Accept
    }

    /// Commits a change on the owner and returns its position.
    pub fn commit(&mut self, key: &str, value: Option<String>) -> u64 {
        let position = self.applied_position() + 1;
        let c = Commit {
            position,
            at_ms: now_ms(),
            key: key.to_string(),
            value,
        };
        self.apply(c);
        position
    }

    /// Applies a commit shipped from the owner; out-of-order or repeated ones are ignored.
    pub fn apply(&mut self, c: Commit) {
        if c.position <= self.applied_position() {
            return;
        }
        match &c.value {
            Some(v) => {
                self.data.insert(c.key.clone(), v.clone());
            }
            None => {
                self.data.remove(&c.key);
            }
        }
        self.log.push(c);
    }

    pub fn commits_after(&self, position: u64, limit: usize) -> Vec<Commit> {
        let start = self.log.partition_point(|c| c.position <= position);
        self.log[start..].iter().take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_refuses_lower_tokens() {
        let mut s = Store::default();
        assert_eq!(s.fence("p", Some(2)), Fence::Accept);
        assert_eq!(s.fence("p", Some(1)), Fence::Stale { highest: 2 });
        assert_eq!(s.fence("q", Some(1)), Fence::Accept);
        assert_eq!(s.fence("p", None), Fence::Accept);
        assert_eq!(s.fence("p", Some(3)), Fence::Accept);
    }

    #[test]
    fn replicas_apply_in_order_once() {
        let mut owner = Store::default();
        owner.commit("a", Some("1".into()));
        owner.commit("a", None);
        owner.commit("b", Some("2".into()));
        let mut replica = Store::default();
        for c in owner.commits_after(0, 10) {
            replica.apply(c.clone());
            replica.apply(c);
        }
        assert_eq!(replica.applied_position(), 3);
        assert_eq!(replica.data.get("b").map(String::as_str), Some("2"));
        assert!(!replica.data.contains_key("a"));
        assert_eq!(owner.commits_after(2, 10).len(), 1);
    }
}
