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
        })
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

    /// The table and each owner key's `mod_revision`.
    pub async fn load(&self) -> anyhow::Result<(OwnershipTable, HashMap<String, i64>)> {
        let mut client = self.client.clone();
        let owners = client
            .get(self.owners_prefix(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut table = OwnershipTable::default();
        let mut revisions = HashMap::new();
        for kv in owners.kvs() {
            let Some(partition) = kv.key_str()?.strip_prefix(&self.owners_prefix()) else {
                continue;
            };
            let owner: Owner = serde_json::from_slice(kv.value()).with_context(|| {
                format!("etcd key {}: not an owner", kv.key_str().unwrap_or("?"))
            })?;
            revisions.insert(partition.to_string(), kv.mod_revision());
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
        Ok((table, revisions))
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
    let (table, _) = fleet.load().await?;
    state.ownership.replace(table)?;
    state
        .topology
        .load()
        .set_owners(&state.ownership.snapshot());
    Ok(())
}

/// Watches the owner keys; on every change (and after every reconnect)
/// re-reads the table.
pub async fn watch(state: Arc<RouterState>, fleet: Fleet) {
    loop {
        let mut client = fleet.client.clone();
        match client
            .watch(
                fleet.owners_prefix(),
                Some(WatchOptions::new().with_prefix()),
            )
            .await
        {
            Ok(mut stream) => {
                if let Err(e) = sync(&state, &fleet).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read owners from etcd");
                }
                while let Ok(Some(msg)) = stream.message().await {
                    if msg.events().is_empty() {
                        continue;
                    }
                    match sync(&state, &fleet).await {
                        Ok(()) => tracing::info!("ownership changed in etcd; view updated"),
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "cannot read owners from etcd")
                        }
                    }
                }
                tracing::warn!("etcd watch ended; reconnecting");
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch owners in etcd; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
