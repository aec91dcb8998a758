//! The write the op log benches log: a typical one, a 200-byte JSON body
//! and two kept headers.

use switchyard_oplog::{Body, Intent, OpId, Record};

pub fn intent(op_id: OpId, n: u64) -> Record {
    Record::Intent(Intent {
        op_id,
        edge_id: "edge-eu-1".into(),
        at_ms: 1_700_000_000_000 + n,
        partition: format!("tenant-{}", n % 1000),
        owner_entry: "default".into(),
        method: "PUT".into(),
        path: format!("/v1/orders/{n}"),
        idempotency_key: Some(format!("0190e2c4-7d1a-7c3e-9a55-{n:012}")),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json".into()),
        ],
        body: Body::Inline(vec![b'x'; 200]),
        owner: "us-east-1".into(),
        epoch: 7,
    })
}
