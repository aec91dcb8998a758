//! Ramp runs in etcd: one key per ramp holding its saved record. A run's key
//! changes only through a transaction comparing its `mod_revision` with the
//! one this router last read, so an operator's pause and the leader's next
//! step cannot overwrite each other.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::fleet::Fleet;
use crate::store::traffic::RampRecord;

/// The revision of each run key this router last read or wrote. Its lock
/// also serialises this router's reads and writes of runs, so a watch
/// re-read cannot slip between a change and its publication.
#[derive(Default)]
pub(crate) struct RampRevisions(tokio::sync::Mutex<HashMap<String, i64>>);

pub(crate) type Revisions<'a> = tokio::sync::MutexGuard<'a, HashMap<String, i64>>;

impl RampRevisions {
    pub(crate) async fn lock(&self) -> Revisions<'_> {
        self.0.lock().await
    }
}

impl Fleet {
    pub(crate) fn ramps_prefix(&self) -> String {
        format!("{}/ramps/", self.prefix())
    }

    /// Every published run, with its key's revision.
    pub(crate) async fn ramps(&self) -> anyhow::Result<Vec<(String, RampRecord, i64)>> {
        let mut client = self.client();
        let resp = client
            .get(self.ramps_prefix(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let Some(name) = kv.key_str()?.strip_prefix(&self.ramps_prefix()) else {
                continue;
            };
            match serde_json::from_slice::<RampRecord>(kv.value()) {
                Ok(run) => out.push((name.to_string(), run, kv.mod_revision())),
                Err(e) => {
                    tracing::warn!(ramp = name, error = %e, "etcd holds a ramp run this router cannot read; ignored")
                }
            }
        }
        Ok(out)
    }

    /// Publishes `run` if its key is still at the revision this router read;
    /// false when another router changed it meanwhile.
    pub(crate) async fn put_ramp(
        &self,
        revisions: &mut Revisions<'_>,
        name: &str,
        run: &RampRecord,
    ) -> anyhow::Result<bool> {
        let key = format!("{}{name}", self.ramps_prefix());
        let seen = revisions.get(name).copied().unwrap_or(0);
        let mut client = self.client();
        let resp = client
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, seen)])
                    .and_then([TxnOp::put(key, serde_json::to_vec(run)?, None)]),
            )
            .await?;
        if !resp.succeeded() {
            return Ok(false);
        }
        if let Some(h) = resp.header() {
            revisions.insert(name.to_string(), h.revision());
        }
        Ok(true)
    }
}
