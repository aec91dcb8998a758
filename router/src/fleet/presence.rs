//! This router's place in the fleet: a lease-backed membership key, the
//! leader key (held by whoever created it, until its lease lapses), and when
//! etcd last answered, which is how long this router may still trust its
//! view of ownership.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::fleet::Fleet;

/// This router's place in the fleet: its membership, whether it leads, and
/// when etcd last answered it.
pub(crate) struct Presence {
    pub(crate) edge_id: String,
    leader: AtomicBool,
    /// Nanos since `started` of the last keep-alive etcd acknowledged (0: never).
    last_contact: AtomicU64,
    started: Instant,
    members: Mutex<Vec<String>>,
}

impl Presence {
    pub(crate) fn new(edge_id: String) -> Self {
        Presence {
            edge_id,
            leader: AtomicBool::new(false),
            last_contact: AtomicU64::new(0),
            started: Instant::now(),
            members: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_nanos() as u64;
        self.last_contact.store(now.max(1), Ordering::Relaxed);
    }

    /// How long since etcd last answered; `None` before it ever did.
    pub(crate) fn silence(&self) -> Option<Duration> {
        match self.last_contact.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_nanos(
                (self.started.elapsed().as_nanos() as u64).saturating_sub(at),
            )),
        }
    }

    /// The live members' edge ids (empty until the first listing).
    pub(crate) fn members(&self) -> Vec<String> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Live members, this router included (1 until the first listing).
    pub(crate) fn member_count(&self) -> u32 {
        self.members.lock().map_or(1, |m| (m.len() as u32).max(1))
    }

    pub(crate) fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "edge_id": self.edge_id,
            "leader": self.is_leader(),
            "members": self.members.lock().map(|m| m.clone()).unwrap_or_default(),
            "etcd_silence_ms": self.silence().map(|d| d.as_millis() as u64),
        })
    }
}

/// Keeps this router's lease-backed membership key alive and contends for the
/// leader key (held by whoever created it, until its lease lapses).
/// `on_members` runs after every listing of the members (each `ttl / 3`).
/// Never returns: a lost lease is taken again.
pub(crate) async fn keep_presence(
    fleet: Fleet,
    presence: Arc<Presence>,
    ttl: Duration,
    on_members: impl Fn(),
) {
    let members = format!("{}/members/", fleet.prefix());
    let leader_key = format!("{}/leader", fleet.prefix());
    loop {
        let result: anyhow::Result<()> = async {
            let mut client = fleet.client();
            let lease = client.lease_grant(ttl.as_secs() as i64, None).await?.id();
            client
                .put(
                    format!("{members}{}", presence.edge_id),
                    presence.edge_id.clone(),
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
                .await?;
            let (mut keeper, mut acks) = client.lease_keep_alive(lease).await?;
            loop {
                keeper.keep_alive().await?;
                match acks.message().await? {
                    Some(ack) if ack.ttl() > 0 => presence.touch(),
                    _ => anyhow::bail!("membership lease expired"),
                }
                let won = client
                    .txn(
                        Txn::new()
                            .when([Compare::version(leader_key.clone(), CompareOp::Equal, 0)])
                            .and_then([TxnOp::put(
                                leader_key.clone(),
                                presence.edge_id.clone(),
                                Some(etcd_client::PutOptions::new().with_lease(lease)),
                            )]),
                    )
                    .await?
                    .succeeded();
                let holder = client.get(leader_key.clone(), None).await?;
                let leads = won
                    || holder
                        .kvs()
                        .first()
                        .is_some_and(|kv| kv.value() == presence.edge_id.as_bytes());
                if leads != presence.is_leader() {
                    tracing::info!(edge = %presence.edge_id, leader = leads, "fleet leadership changed");
                }
                presence
                    .leader
                    .store(leads, Ordering::Relaxed);
                let list = client
                    .get(members.clone(), Some(GetOptions::new().with_prefix()))
                    .await?;
                if let Ok(mut m) = presence.members.lock() {
                    *m = list
                        .kvs()
                        .iter()
                        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                        .collect();
                }
                on_members();
                tokio::time::sleep(ttl / 3).await;
            }
        }
        .await;
        presence.leader.store(false, Ordering::Relaxed);
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "fleet membership lost; retrying");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
