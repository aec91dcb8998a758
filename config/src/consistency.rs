//! The consistency keys beyond classes, partition and owners: freshness
//! class fallbacks, promotion rules, automatic promotion, partition
//! residency, idempotency window, the read-your-writes key.

use crate::diag::{self, Diags, Fields};
use crate::model::*;
use crate::traffic::positive;
use crate::yaml::{Node, Value};

/// A class: a bound (`2s`) or `{ bound, fallback, wait }`.
pub fn freshness_class(n: &Node, path: &str, d: &mut Diags) -> Option<FreshnessClass> {
    if !matches!(n.value, Value::Map(_)) {
        return diag::duration(n, path, d).map(FreshnessClass::bounded);
    }
    let f = Fields::new(n, path, &["bound", "fallback", "wait"], d)?;
    let bound = f
        .require("bound", d)
        .and_then(|n| diag::duration(n, &f.child("bound"), d))?;
    let mut class = FreshnessClass::bounded(bound);
    if let Some(v) = f.get("fallback").and_then(|n| {
        diag::one_of(
            n,
            &f.child("fallback"),
            &[
                ("owner", Fallback::Owner),
                ("wait", Fallback::Wait),
                ("stale", Fallback::Stale),
                ("reject", Fallback::Reject),
            ],
            d,
        )
    }) {
        class.fallback = v;
    }
    if let Some(v) = f.get("wait").and_then(|n| positive(n, &f.child("wait"), d)) {
        class.wait = v;
    }
    Some(class)
}

/// `idempotency_window`, `partition_residency`, `promotion`, `auto_promote`,
/// `ryw`, `repair_on_read`.
pub fn extra(f: &Fields<'_>, c: &mut Consistency, d: &mut Diags) {
    if let Some(v) = f.get("repair_on_read").and_then(|n| {
        diag::one_of(
            n,
            "consistency.repair_on_read",
            &[
                ("off", RepairOnRead::Off),
                ("flag", RepairOnRead::Flag),
                ("replay", RepairOnRead::Replay),
            ],
            d,
        )
    }) {
        c.repair_on_read = v;
    }
    if let Some(v) = f
        .get("idempotency_window")
        .and_then(|n| positive(n, "consistency.idempotency_window", d))
    {
        c.idempotency_window = v;
    }
    if let Some(v) = f
        .get("idempotency_max_keys")
        .and_then(|n| diag::integer(n, "consistency.idempotency_max_keys", 1, 100_000_000, d))
    {
        c.idempotency_max_keys = v as usize;
    }
    if let Some(n) = f.get("partition_residency") {
        for (part, _, v) in
            diag::map_entries(n, "consistency.partition_residency", d).unwrap_or_default()
        {
            if let Some(zone) =
                diag::string(v, &format!("consistency.partition_residency.{part}"), d)
            {
                c.partition_residency.insert(part.to_string(), zone);
            }
        }
    }
    if let Some(p) = f.get("promotion").and_then(|n| {
        Fields::new(
            n,
            "consistency.promotion",
            &["max_lag", "max_writes_at_risk"],
            d,
        )
    }) {
        if let Some(v) = p
            .get("max_lag")
            .and_then(|n| diag::duration(n, "consistency.promotion.max_lag", d))
        {
            c.promotion.max_lag = v;
        }
        c.promotion.max_writes_at_risk = p.get("max_writes_at_risk").and_then(|n| {
            diag::integer(
                n,
                "consistency.promotion.max_writes_at_risk",
                0,
                u64::MAX,
                d,
            )
        });
    }
    if let Some(a) = f
        .get("auto_promote")
        .and_then(|n| Fields::new(n, "consistency.auto_promote", &["after", "max_lag"], d))
    {
        let after = a
            .require("after", d)
            .and_then(|n| positive(n, "consistency.auto_promote.after", d));
        let max_lag = a
            .get("max_lag")
            .and_then(|n| diag::duration(n, "consistency.auto_promote.max_lag", d))
            .unwrap_or(c.promotion.max_lag);
        c.auto_promote = after.map(|after| AutoPromote { after, max_lag });
    }
    if let Some(r) = f
        .get("ryw")
        .and_then(|n| Fields::new(n, "consistency.ryw", &["key_env"], d))
    {
        if let Some(v) = r
            .get("key_env")
            .and_then(|n| diag::string(n, "consistency.ryw.key_env", d))
        {
            c.ryw_key_env = v;
        }
    }
}

/// `coordination: { etcd: { endpoints: [...], prefix } }`.
pub fn coordination(n: &Node, d: &mut Diags) -> Option<Etcd> {
    let f = Fields::new(n, "coordination", &["etcd"], d)?;
    let e = Fields::new(
        f.get("etcd")?,
        "coordination.etcd",
        &["endpoints", "prefix", "lease_ttl", "write_grace", "edge_id"],
        d,
    )?;
    let endpoints: Vec<String> = e
        .require("endpoints", d)
        .map(|n| {
            diag::strings(n, "coordination.etcd.endpoints", d)
                .into_iter()
                .map(|(s, pos)| {
                    if !(s.starts_with("http://") || s.starts_with("https://")) {
                        d.error(
                            pos,
                            format!("`coordination.etcd.endpoints` are URLs such as http://127.0.0.1:2379, found {s:?}"),
                        );
                    }
                    s
                })
                .collect()
        })
        .unwrap_or_default();
    if endpoints.is_empty() {
        d.error(
            e.pos,
            "`coordination.etcd.endpoints` must list at least one etcd URL",
        );
        return None;
    }
    let prefix = e
        .get("prefix")
        .and_then(|n| diag::string(n, "coordination.etcd.prefix", d))
        .unwrap_or_else(|| "/switchyard".into());
    let lease_ttl = e
        .get("lease_ttl")
        .and_then(|n| positive(n, "coordination.etcd.lease_ttl", d))
        .unwrap_or(std::time::Duration::from_secs(5));
    if lease_ttl < std::time::Duration::from_secs(2) {
        d.error(e.pos, "`coordination.etcd.lease_ttl` must be at least 2s");
    }
    let write_grace = e
        .get("write_grace")
        .and_then(|n| positive(n, "coordination.etcd.write_grace", d))
        .unwrap_or(std::time::Duration::from_secs(3));
    let edge_id = e
        .get("edge_id")
        .and_then(|n| diag::string(n, "coordination.etcd.edge_id", d));
    Some(Etcd {
        endpoints,
        prefix: prefix.trim_end_matches('/').to_string(),
        lease_ttl,
        write_grace,
        edge_id,
    })
}
