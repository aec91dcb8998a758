//! Fleet mode's etcd I/O: partition owners and epochs, dials, ramp runs and
//! membership, read and written as data (`control::fleet_sync` applies them
//! to the router). An epoch changes only through a transaction that compares
//! the owner keys with the ones the promotion read (or that a key is absent),
//! so concurrent promotions through two routers make exactly one new epoch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions,
};
use switchyard_config::Etcd;

use crate::route::owners::{Owner, OwnershipTable, PromotionRecord, Terms};

pub(crate) mod presence;
pub(crate) mod ramps;

/// A connection to the fleet's etcd.
#[derive(Clone)]
pub(crate) struct Fleet {
    client: Client,
    prefix: String,
    ramp_revisions: Arc<ramps::RampRevisions>,
}

/// Why a fleet promotion did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FleetError {
    /// Another router changed an owner between our read and our write.
    #[error("another router changed an owner between this router's read and its write")]
    Conflict,
    #[error("etcd: {0:#}")]
    Etcd(#[from] anyhow::Error),
}

impl Fleet {
    pub(crate) async fn connect(cfg: &Etcd) -> anyhow::Result<Self> {
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

    pub(crate) fn ramp_revisions(&self) -> &ramps::RampRevisions {
        &self.ramp_revisions
    }

    pub(crate) fn owners_prefix(&self) -> String {
        format!("{}/owners/", self.prefix)
    }

    fn owner_key(&self, partition: &str) -> String {
        format!("{}{partition}", self.owners_prefix())
    }

    fn promotion_key(&self, partition: &str, epoch: u64) -> String {
        format!("{}/promotions/{partition}/{epoch:020}", self.prefix)
    }

    /// The owners and the promotion records.
    pub(crate) async fn load(&self) -> anyhow::Result<OwnershipTable> {
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
    pub(crate) async fn seed(&self, seed: &OwnershipTable) -> anyhow::Result<()> {
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
    /// The new owners take writes `hold` after the commit (see
    /// [`Owner::writes_from_ms`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn promote(
        &self,
        seen: &OwnershipTable,
        partitions: &[String],
        to: &str,
        terms: &Terms<'_>,
        hold: std::time::Duration,
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
                at_ms: switchyard_oplog::unix_ms(),
                partition: p.clone(),
                from: owner.region.clone(),
                to: to.to_string(),
                from_epoch: owner.epoch,
                to_epoch: owner.epoch + 1,
                applied_position: terms.applied_position,
                forced: terms.forced,
                reason: terms.reason.to_string(),
                writes_at_risk: terms.writes_at_risk,
            };
            let next = Owner {
                region: to.to_string(),
                epoch: rec.to_epoch,
                writes_from_ms: rec.at_ms + hold.as_millis() as u64,
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

impl Fleet {
    pub(crate) fn dials_prefix(&self) -> String {
        format!("{}/dials/", self.prefix)
    }

    /// Shares a region's dial with the fleet.
    pub(crate) async fn put_dial(
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
    pub(crate) async fn dials(&self) -> anyhow::Result<HashMap<String, u16>> {
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

impl Fleet {
    /// Calls `on_change` once the watch on `prefix` is set up and again after
    /// every change under it; sets the watch up again whenever it breaks.
    /// Never returns.
    pub(crate) async fn watch_prefix<F, Fut>(&self, prefix: String, mut on_change: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let mut client = self.client.clone();
            match client
                .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
                .await
            {
                Ok(mut stream) => {
                    on_change().await;
                    while let Ok(Some(msg)) = stream.message().await {
                        if !msg.events().is_empty() {
                            on_change().await;
                        }
                    }
                    tracing::warn!(%prefix, "etcd watch ended; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, %prefix, "cannot watch etcd; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
