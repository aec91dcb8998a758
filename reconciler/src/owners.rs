//! Each partition's owner and epoch now, from where the routers keep them:
//! etcd in fleet mode, else the ownership file in the router's state
//! directory (or a file named on the command line).

use std::path::Path;

use etcd_client::{Client, GetOptions};
use serde::Deserialize;
use switchyard_config::Config;

use crate::plan::CurrentOwners;

#[derive(Deserialize)]
struct Owner {
    region: String,
    epoch: u64,
}

#[derive(Deserialize)]
struct OwnershipFile {
    partitions: std::collections::BTreeMap<String, Owner>,
}

/// Reads the owners: `file` if given, etcd if the config names it, else
/// `state_dir/ownership.json`.
pub async fn current(config: &Config, file: Option<&Path>) -> Result<CurrentOwners, String> {
    match (file, &config.etcd) {
        (Some(path), _) => from_file(path),
        (None, Some(etcd)) => from_etcd(&etcd.endpoints, &etcd.prefix).await,
        (None, None) => from_file(&config.state_dir.join("ownership.json")),
    }
}

fn from_file(path: &Path) -> Result<CurrentOwners, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: OwnershipFile = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not an ownership file: {e}", path.display()))?;
    Ok(CurrentOwners {
        source: path.display().to_string(),
        partitions: table
            .partitions
            .into_iter()
            .map(|(p, o)| (p, (o.region, o.epoch)))
            .collect(),
    })
}

async fn from_etcd(endpoints: &[String], prefix: &str) -> Result<CurrentOwners, String> {
    let source = format!("etcd ({})", endpoints.join(", "));
    let connect = Client::connect(endpoints, None);
    let mut client = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
        .await
        .map_err(|_| format!("{source}: no answer in 5 s"))?
        .map_err(|e| format!("{source}: {e}"))?;
    let owners_prefix = format!("{prefix}/owners/");
    let got = client
        .get(
            owners_prefix.as_str(),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| format!("{source}: {e}"))?;
    let mut out = CurrentOwners {
        source,
        ..CurrentOwners::default()
    };
    for kv in got.kvs() {
        let key = kv.key_str().map_err(|e| e.to_string())?;
        let Some(partition) = key.strip_prefix(&owners_prefix) else {
            continue;
        };
        let owner: Owner = serde_json::from_slice(kv.value())
            .map_err(|e| format!("etcd key {key}: not an owner: {e}"))?;
        out.partitions
            .insert(partition.to_string(), (owner.region, owner.epoch));
    }
    Ok(out)
}
