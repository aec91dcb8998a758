//! Fleet mode: partition owners and epochs in etcd, shared by every router.
//! An epoch changes only through a transaction that compares the owner key's
//! `mod_revision` with the one the promotion read (or that the key is absent),
//! so concurrent promotions through two routers make exactly one new epoch.
//! Every router watches the owner keys and swaps its view within moments.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions,
};
use switchyard_config::Etcd;

use crate::ownership::{Owner, OwnershipTable, PromotionRecord};
use crate::state::RouterState;

/// A connection to the fleet's etcd.
#[derive(Clone)]
pub struct Fleet {
    client: Client,
    prefix: String,
    ramp_revisions: Arc<crate::fleet_ramps::RampRevisions>,
}

/// Why a fleet promotion did not happen.
#[derive(Debug)]
pub enum FleetError {
    /// Another router changed an owner between our read and our write.
    Conflict,
    Etcd(anyhow::Error),
}

impl Fleet {
    pub async fn connect(cfg: &Etcd) -> anyhow::Result<Self> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .with_context(|| format!("cannot reach etcd at {}", cfg.endpoints.join(", ")))?;
        Ok(Fleet {
            client,
            prefix: cfg.prefix.clone(),
            ramp_revisions: Arc::default(),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    pub(crate) fn ramp_revisions(&self) -> &crate::fleet_ramps::RampRevisions {
        &self.ramp_revisions
    }

    fn owners_prefix(&self) -> String {
        format!("{}/owners/", self.prefix)
    }

    fn owner_key(&self, partition: &str) -> String {
        format!("{}{partition}", self.owners_prefix())
    }

    fn promotion_key(&self, partition: &str, epoch: u64) -> String {
        format!("{}/promotions/{partition}/{epoch:020}", self.prefix)
    }

    /// The owners and the promotion records.
    pub async fn load(&self) -> anyhow::Result<OwnershipTable> {
        let mut client = self.client.clone();
        let owners = client
            .get(self.owners_prefix(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut table = OwnershipTable::default();
        for kv in owners.kvs() {
            let Some(partition) = kv.key_str()?.strip_prefix(&self.owners_prefix()) else {
                continue;
            };
            let owner: Owner = serde_json::from_slice(kv.value()).with_context(|| {
                format!("etcd key {}: not an owner", kv.key_str().unwrap_or("?"))
            })?;
            table.partitions.insert(partition.to_string(), owner);
        }
        let records = client
            .get(
                format!("{}/promotions/", self.prefix),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        for kv in records.kvs() {
            if let Ok(r) = serde_json::from_slice::<PromotionRecord>(kv.value()) {
                table.promotions.push(r);
            }
        }
        table.promotions.sort_by_key(|r| (r.at_ms, r.to_epoch));
        Ok(table)
    }

    /// Creates the owner keys `seed` has and etcd does not (epoch 1).
    pub async fn seed(&self, seed: &OwnershipTable) -> anyhow::Result<()> {
        let mut client = self.client.clone();
        for (p, o) in &seed.partitions {
            let key = self.owner_key(p);
            client
                .txn(
                    Txn::new()
                        .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, o.to_json(), None)]),
                )
                .await?;
        }
        Ok(())
    }

    /// Moves `partitions` to `to` with their epochs raised by one, in one
    /// transaction that holds only if every owner in etcd is still the one
    /// this router saw (`seen`) when it decided: two routers promoting from
    /// the same view make one new epoch, and the other is refused.
    pub async fn promote(
        &self,
        seen: &OwnershipTable,
        partitions: &[String],
        to: &str,
        applied_position: u64,
        forced: bool,
        reason: &str,
    ) -> Result<Vec<PromotionRecord>, FleetError> {
        let mut compares = Vec::new();
        let mut puts = Vec::new();
        let mut records = Vec::new();
        for p in partitions {
            let Some((entry, owner)) = seen.owner(Some(p)) else {
                return Err(FleetError::Etcd(anyhow::anyhow!("no owner known for {p}")));
            };
            let key = self.owner_key(p);
            if entry != p {
                // On the default entry until now: the key must not exist yet,
                // and the default must be as seen.
                compares.push(Compare::version(key.clone(), CompareOp::Equal, 0));
            }
            compares.push(Compare::value(
                self.owner_key(entry),
                CompareOp::Equal,
                owner.to_json(),
            ));
            let rec = PromotionRecord {
                at_ms: crate::ryw::unix_ms(),
                partition: p.clone(),
                from: owner.region.clone(),
                to: to.to_string(),
                from_epoch: owner.epoch,
                to_epoch: owner.epoch + 1,
                applied_position,
                forced,
                reason: reason.to_string(),
            };
            let next = Owner {
                region: to.to_string(),
                epoch: rec.to_epoch,
            };
            puts.push(TxnOp::put(key, next.to_json(), None));
            puts.push(TxnOp::put(
                self.promotion_key(p, rec.to_epoch),
                rec.to_json(),
                None,
            ));
            records.push(rec);
        }
        let mut client = self.client.clone();
        let resp = client
            .txn(Txn::new().when(compares).and_then(puts))
            .await
            .map_err(|e| FleetError::Etcd(e.into()))?;
        if resp.succeeded() {
            Ok(records)
        } else {
            Err(FleetError::Conflict)
        }
    }
}

/// The values a promotion writes and compares, as JSON. Plain structs, so
/// encoding cannot fail, and field order is fixed, so equal values compare equal.
trait ToJson {
    fn to_json(&self) -> Vec<u8>;
}

impl<T: serde::Serialize> ToJson for T {
    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Reads the fleet's table into this router: the local store and the hot path's index.
pub async fn sync(state: &RouterState, fleet: &Fleet) -> anyhow::Result<()> {
    let table = fleet.load().await?;
    state.ownership.replace(table)?;
    state
        .topology
        .load()
        .set_owners(&state.ownership.snapshot());
    Ok(())
}

/// What a watch keeps in step with etcd.
#[derive(Debug, Clone, Copy)]
enum Watched {
    Owners,
    Dials,
    Ramps,
}

impl Watched {
    fn prefix(self, fleet: &Fleet) -> String {
        match self {
            Watched::Owners => fleet.owners_prefix(),
            Watched::Dials => fleet.dials_prefix(),
            Watched::Ramps => format!("{}/ramps/", fleet.prefix),
        }
    }

    async fn sync(self, state: &RouterState, fleet: &Fleet) {
        let (result, what) = match self {
            Watched::Owners => (sync(state, fleet).await, "owners"),
            Watched::Dials => (sync_dials(state, fleet).await, "dials"),
            Watched::Ramps => (crate::fleet_ramps::sync(state, fleet).await, "ramps"),
        };
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "cannot read {what} from etcd");
        }
    }
}

/// Watches one prefix; re-reads it on every change and after every reconnect.
async fn watch_prefix(state: Arc<RouterState>, fleet: Fleet, watched: Watched) {
    loop {
        let mut client = fleet.client.clone();
        match client
            .watch(
                watched.prefix(&fleet),
                Some(WatchOptions::new().with_prefix()),
            )
            .await
        {
            Ok(mut stream) => {
                watched.sync(&state, &fleet).await;
                while let Ok(Some(msg)) = stream.message().await {
                    if !msg.events().is_empty() {
                        watched.sync(&state, &fleet).await;
                    }
                }
                tracing::warn!(?watched, "etcd watch ended; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, ?watched, "cannot watch etcd; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Keeps this router's owners in step with the fleet's.
pub async fn watch(state: Arc<RouterState>, fleet: Fleet) {
    watch_prefix(state, fleet, Watched::Owners).await
}

/// Keeps this router's dials in step with the fleet's.
pub async fn watch_dials(state: Arc<RouterState>, fleet: Fleet) {
    watch_prefix(state, fleet, Watched::Dials).await
}

/// Keeps this router's ramp runs in step with the fleet's.
pub async fn watch_ramps(state: Arc<RouterState>, fleet: Fleet) {
    watch_prefix(state, fleet, Watched::Ramps).await
}

/// This router's place in the fleet: its membership, whether it leads, and
/// when etcd last answered it.
pub struct Presence {
    pub edge_id: String,
    leader: std::sync::atomic::AtomicBool,
    /// Nanos since `started` of the last keep-alive etcd acknowledged (0: never).
    last_contact: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
    members: std::sync::Mutex<Vec<String>>,
}

impl Presence {
    pub fn new(edge_id: String) -> Self {
        Presence {
            edge_id,
            leader: std::sync::atomic::AtomicBool::new(false),
            last_contact: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
            members: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_nanos() as u64;
        self.last_contact
            .store(now.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since etcd last answered; `None` before it ever did.
    pub fn silence(&self) -> Option<Duration> {
        match self.last_contact.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_nanos(
                (self.started.elapsed().as_nanos() as u64).saturating_sub(at),
            )),
        }
    }

    /// Live members, this router included (1 until the first listing).
    pub fn member_count(&self) -> u32 {
        self.members.lock().map_or(1, |m| (m.len() as u32).max(1))
    }

    pub fn status_json(&self) -> serde_json::Value {
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
pub async fn run_presence(
    state: Arc<RouterState>,
    fleet: Fleet,
    presence: Arc<Presence>,
    ttl: Duration,
) {
    let members = format!("{}/members/", fleet.prefix);
    let leader_key = format!("{}/leader", fleet.prefix);
    loop {
        let result: anyhow::Result<()> = async {
            let mut client = fleet.client.clone();
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
                    .store(leads, std::sync::atomic::Ordering::Relaxed);
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
                state.apply_rate_shares();
                tokio::time::sleep(ttl / 3).await;
            }
        }
        .await;
        presence
            .leader
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "fleet membership lost; retrying");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl Fleet {
    fn dials_prefix(&self) -> String {
        format!("{}/dials/", self.prefix)
    }

    /// Shares a region's dial with the fleet.
    pub async fn put_dial(
        &self,
        region: &str,
        dial: switchyard_config::Percent,
    ) -> anyhow::Result<()> {
        let mut client = self.client.clone();
        client
            .put(
                format!("{}{region}", self.dials_prefix()),
                dial.tenths().to_string(),
                None,
            )
            .await?;
        Ok(())
    }

    /// Every dial set through the fleet, by region, in tenths of a percent.
    pub async fn dials(&self) -> anyhow::Result<HashMap<String, u16>> {
        let mut client = self.client.clone();
        let resp = client
            .get(self.dials_prefix(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut out = HashMap::new();
        for kv in resp.kvs() {
            if let (Some(region), Ok(Ok(tenths))) = (
                kv.key_str()?.strip_prefix(&self.dials_prefix()),
                std::str::from_utf8(kv.value()).map(str::parse::<u16>),
            ) {
                out.insert(region.to_string(), tenths);
            }
        }
        Ok(out)
    }
}

/// Applies the fleet's dials to this router's regions.
pub async fn sync_dials(state: &RouterState, fleet: &Fleet) -> anyhow::Result<()> {
    let dials = fleet.dials().await?;
    let topo = state.topology.load();
    for r in &topo.regions {
        let Some(p) = dials
            .get(r.spec.name.as_str())
            .and_then(|t| switchyard_config::Percent::from_tenths(*t))
        else {
            continue;
        };
        if r.live.dial() != p {
            r.live.set_dial(p);
            crate::metrics::region_gauges(&r.spec.name, &r.live);
            tracing::info!(region = %r.spec.name, dial = %p, "dial set through the fleet");
        }
    }
    Ok(())
}
