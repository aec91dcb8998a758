//! A write's way through the proxy before and after the region: its body
//! read ahead (up to what pingora replays to the region), its idempotency
//! key admitted, its intent logged before it is forwarded and its outcome
//! after, and the read-your-writes token it earns.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::v1::common::is_expect_continue_req;
use pingora::proxy::Session;
use switchyard_config::Idempotency;
use switchyard_oplog::{
    unix_ms, Body, BodyRef, EncodedRecord, IntentRef, OpId, Outcome, OutcomeKind, Record,
};

use crate::control::idempotency::{self, Admit};
use crate::control::repair::Repair;
use crate::control::RouterState;
use crate::proxy::ctx::Ctx;
use crate::route::fields::{self, Field, Fields, Present};
use crate::route::headers::{COMMIT_POSITION, REPLAYED_ON_READ, RYW, WRITE_PENDING};
use crate::route::reject::Reject;
use crate::route::ryw::Mark;
use crate::store::oplog::{self, OpLog};

/// What the op log needs to write a write's outcome.
pub(super) struct OpInFlight {
    pub(super) id: OpId,
    /// A body too large to read ahead, collected (and hashed) as it streams.
    pub(super) streamed: Option<StreamedBody>,
    /// The region's status; 0 until it answers.
    pub(super) status: u16,
    pub(super) commit_position: Option<u64>,
}

pub(super) struct StreamedBody {
    kept: Vec<u8>,
    sha256: ring::digest::Context,
    len: u64,
    max: usize,
}

impl StreamedBody {
    pub(super) fn add(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.sha256.update(chunk);
        if self.len <= self.max as u64 {
            self.kept.extend_from_slice(chunk);
        } else {
            self.kept = Vec::new();
        }
    }

    fn finish(self) -> Body {
        if self.len <= self.max as u64 {
            Body::Inline(self.kept)
        } else {
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(self.sha256.finish().as_ref());
            Body::Hashed {
                len: self.len,
                sha256,
            }
        }
    }
}

const KEPT_FOR_REPLAY_COUNT: usize = 4;
/// Request headers an op log record keeps, so a replay means the same thing.
/// Credentials are never kept.
const KEPT_FOR_REPLAY: [Field; KEPT_FOR_REPLAY_COUNT] = [
    fields::CONTENT_TYPE,
    fields::CONTENT_ENCODING,
    fields::CONTENT_LANGUAGE,
    fields::ACCEPT,
];

/// A write's body as the router has it before forwarding.
pub(super) enum WriteBody {
    /// Read whole (pingora replays it to the region from its retry buffer).
    Whole(Bytes),
    /// Larger than the read-ahead: it streams (what was read ahead first,
    /// `prefix`, then the rest as it comes).
    Streams {
        length: Option<usize>,
        prefix: Bytes,
    },
}

/// The most body the router reads ahead of forwarding: a write is judged
/// (idempotency fingerprint, op log) whole when it fits, and its framing is
/// checked before any of it leaves the edge.
const BUFFERED_BODY_LIMIT: usize = 64 * 1024;
/// Room in the retry buffer for one read past the limit (a body read returns
/// up to 64 KiB and cannot be asked to stop short).
const READ_HEADROOM: usize = 64 * 1024;

/// Reads a write's body ahead of forwarding, whatever its framing
/// (`Content-Length`, chunked, HTTP/2 frames), up to [`BUFFERED_BODY_LIMIT`];
/// a larger one streams after what was read.
pub(super) async fn read_write_body(session: &mut Session, present: Present) -> Result<WriteBody> {
    let length = Fields::with(&session.req_header().headers, present)
        .get(fields::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if session.as_downstream_mut().is_body_empty() {
        return Ok(WriteBody::Whole(Bytes::new()));
    }
    // A client waiting for `100 Continue` before it sends its body hears it
    // from the router, which reads the body itself; the region is then sent
    // the body with the header and not asked to continue again. (Unanswered,
    // such a client waits: curl for a second, others until they time out.)
    if is_expect_continue_req(session.req_header()) {
        session
            .as_downstream_mut()
            .write_continue_response()
            .await
            .map_err(|mut e| {
                e.as_down();
                e
            })?;
        session
            .req_header_mut()
            .remove_header(&http::header::EXPECT);
    }
    // What is read here is kept in the retry buffer, which pingora sends
    // upstream first, then the rest of the body as it comes.
    session
        .as_downstream_mut()
        .enable_retry_buffering_with_capacity(BUFFERED_BODY_LIMIT + READ_HEADROOM);
    let mut body =
        bytes::BytesMut::with_capacity(length.unwrap_or(4096).min(BUFFERED_BODY_LIMIT + 1));
    // Whatever goes wrong here is the client's doing (a stalled body, broken
    // framing): marked so, it is answered as such (408, 400).
    while let Some(chunk) = session.read_request_body().await.map_err(|mut e| {
        e.as_down();
        e
    })? {
        body.extend_from_slice(&chunk);
        if body.len() > BUFFERED_BODY_LIMIT {
            return Ok(WriteBody::Streams {
                length,
                prefix: body.freeze(),
            });
        }
    }
    Ok(WriteBody::Whole(body.freeze()))
}

/// A write's idempotency key: taken from the client, generated, or
/// required; then checked against the keys in flight and seen.
pub(super) fn admit_write(
    state: &RouterState,
    session: &mut Session,
    ctx: &mut Ctx,
    body: &WriteBody,
) -> Result<Option<Reject>> {
    let cfg = &ctx.topo.config.consistency;
    if cfg.idempotency == Idempotency::Off {
        return Ok(None);
    }
    let given = Fields::with(&session.req_header().headers, ctx.present)
        .get(fields::IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let key = match given {
        Some(k) if k.len() > idempotency::MAX_KEY_LEN => {
            return Ok(Some(Reject::bad_request(format!(
                "Idempotency-Key is longer than {} characters",
                idempotency::MAX_KEY_LEN
            ))))
        }
        Some(k) => {
            ctx.seen.idempotency = Some("client_key");
            k
        }
        None if cfg.idempotency == Idempotency::Require => {
            return Ok(Some(Reject::bad_request(
                "writes need an Idempotency-Key header here (consistency.idempotency: require)",
            )))
        }
        None => {
            // A fresh random key: no other request can hold it, in flight or
            // done, so it is not remembered. Remembering it would only crowd
            // clients' own keys out of the bounded table (keyless writes
            // evicting them long before their window) and grow the table
            // with every write.
            ctx.seen.idempotency = Some("generated");
            session
                .req_header_mut()
                .insert_header(idempotency::HEADER, uuid::Uuid::new_v4().to_string())?;
            ctx.present.added(fields::IDEMPOTENCY_KEY);
            return Ok(None);
        }
    };
    let req = session.req_header();
    let method = req.method.as_str().to_string();
    let path = req
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    // Bodies read ahead are fingerprinted whole; streamed ones by their
    // length and what was read ahead, all that is in hand before forwarding.
    let fp = match body {
        WriteBody::Whole(b) => idempotency::fingerprint(&method, &path, b),
        WriteBody::Streams { length, prefix } => {
            let mut seen = format!("streamed, length {length:?}, starting ").into_bytes();
            seen.extend_from_slice(prefix);
            idempotency::fingerprint(&method, &path, &seen)
        }
    };
    // Scoped by the client's credentials: one client can neither block nor
    // probe another's keys.
    let credentials = Fields::with(&req.headers, ctx.present)
        .get(fields::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let scoped = idempotency::ScopedKey::new(credentials, &key);
    let (window, max_keys) = (cfg.idempotency_window, cfg.idempotency_max_keys);
    Ok(match state.idempotency.begin(scoped, fp, window, max_keys) {
        Admit::Proceed(guard) => {
            ctx.idempotency = Some(guard);
            None
        }
        Admit::InFlight => Some(Reject::conflict(
            "a request with this Idempotency-Key is still in flight",
        )),
        Admit::Mismatch => Some(Reject::unprocessable(
            "this Idempotency-Key was used for a different request (method, path or body)",
        )),
        Admit::Full => Some(Reject::unavailable(
            "too many writes in flight to remember another Idempotency-Key (consistency.idempotency_max_keys); retry",
        )),
    })
}

/// Logs a write's intent; the write goes on only once the log has it.
pub(super) async fn log_intent(
    state: &RouterState,
    session: &Session,
    ctx: &mut Ctx,
    body: WriteBody,
) -> Option<Reject> {
    let log = state.oplog.as_ref()?;
    let req = session.req_header();
    let max = ctx.topo.config.oplog.max_body_bytes;
    let (logged_body, streamed) = match &body {
        WriteBody::Whole(b) => (BodyRef::of(b, max), None),
        WriteBody::Streams { .. } => (
            BodyRef::InOutcome,
            Some(StreamedBody {
                kept: Vec::new(),
                sha256: ring::digest::Context::new(&ring::digest::SHA256),
                len: 0,
                max,
            }),
        ),
    };
    let carried = Fields::with(&req.headers, ctx.present);
    let mut kept = [("", ""); KEPT_FOR_REPLAY_COUNT];
    let mut n_kept = 0;
    for field in KEPT_FOR_REPLAY {
        if let Some(v) = carried.get(field).and_then(|v| v.to_str().ok()) {
            kept[n_kept] = (field.name().as_str(), v);
            n_kept += 1;
        }
    }
    let partition = ctx
        .partition
        .as_deref()
        .unwrap_or(crate::route::owners::DEFAULT);
    let id = OpId::new();
    // Encoded here, from the request's own fields (see `EncodedRecord`).
    let intent = IntentRef {
        op_id: id,
        edge_id: &log.edge_id,
        at_ms: unix_ms(),
        partition,
        owner_entry: ctx.topo.owner_entry(partition),
        method: req.method.as_str(),
        path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        idempotency_key: carried
            .get(fields::IDEMPOTENCY_KEY)
            .and_then(|v| v.to_str().ok()),
        headers: &kept[..n_kept],
        body: logged_body,
        owner: ctx.order.first().map_or("", |i| ctx.topo.name(*i)),
        epoch: ctx.epoch,
    };
    let record = match EncodedRecord::intent(&intent) {
        Ok(record) => record,
        Err(e) => {
            return Some(Reject::unavailable(format!(
                "this write was not forwarded: its intent could not be encoded for the op log: {e}"
            )))
        }
    };
    state
        .repairs
        .note_write(intent.owner_entry, intent.epoch, intent.resource());
    if let Some(record) = log.intent_now(record) {
        // Boxed: only a write that must wait for the log (`fsync: always`,
        // a full queue, a failing disk) carries this future.
        if let Err(why) = Box::pin(log.intent(record)).await {
            return Some(Reject::unavailable(format!(
                "this write was not forwarded: {why}"
            )));
        }
    }
    ctx.op = Some(Box::new(OpInFlight {
        id,
        streamed,
        status: 0,
        commit_position: None,
    }));
    None
}

/// Logs how a write ended, at once when the op log's queue has room. When
/// it has none, the record comes back with the log and its op id, for
/// [`log_outcome_waiting`].
pub(super) fn log_outcome<'a>(
    state: &'a RouterState,
    ctx: &mut Ctx,
) -> Option<(&'a OpLog, OpId, EncodedRecord)> {
    let (Some(log), Some(op)) = (state.oplog.as_ref(), ctx.op.take()) else {
        return None;
    };
    let op = *op;
    let outcome = match op.status {
        0 if ctx.upstream_started.is_some() => OutcomeKind::Unknown,
        0 => OutcomeKind::Failed,
        100..=399 => OutcomeKind::Acked,
        400..=499 => OutcomeKind::Rejected,
        _ => OutcomeKind::Failed,
    };
    let record = Record::Outcome(Outcome {
        op_id: op.id,
        at_ms: unix_ms(),
        status: op.status,
        outcome,
        commit_position: op.commit_position,
        body: op.streamed.map(StreamedBody::finish),
    });
    let record = match oplog::encode(&record) {
        Ok(record) => record,
        Err(e) => {
            tracing::error!(op = %op.id, error = %e, "write outcome not logged");
            return None;
        }
    };
    log.outcome_now(record)
        .map(|record| (&**log, op.id, record))
}

/// Logs an outcome the queue had no room for, waiting for room.
pub(super) async fn log_outcome_waiting(log: &OpLog, op: OpId, record: EncodedRecord) {
    if let Err(e) = log.outcome(record).await {
        tracing::error!(op = %op, error = %e, "write outcome not logged");
    }
}

/// After a write: the read-your-writes token, as cookie and header. A
/// logged write's commit position was read from this answer already.
pub(super) fn issue_ryw(resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    let position = match &ctx.op {
        Some(op) => op.commit_position,
        None => commit_position(resp),
    };
    set_ryw(
        resp,
        ctx,
        ctx.epoch,
        position,
        ctx.op.as_ref().map(|o| o.id),
    )
}

/// The commit position a region's answer to a write names, if any.
pub(super) fn commit_position(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get(COMMIT_POSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// On a read repair on read judged: the op it replayed, with a token for
/// the replay (so the next read is not judged again), or the op still
/// pending.
pub(super) fn mark_repair(resp: &mut ResponseHeader, ctx: &Ctx, done: &Repair) -> Result<()> {
    match done {
        Repair::NotNeeded => Ok(()),
        Repair::Replayed {
            op,
            replay,
            position,
            epoch,
        } => {
            resp.insert_header(REPLAYED_ON_READ, op.to_string())?;
            set_ryw(resp, ctx, *epoch, *position, Some(*replay))
        }
        Repair::Pending { op, .. } => {
            let named = op.map_or_else(|| "unknown".to_string(), |o| o.to_string());
            resp.insert_header(WRITE_PENDING, named)
        }
    }
}

fn set_ryw(
    resp: &mut ResponseHeader,
    ctx: &Ctx,
    epoch: u64,
    position: Option<u64>,
    op: Option<OpId>,
) -> Result<()> {
    let mark = position.map_or_else(|| Mark::Time(unix_ms()), Mark::Position);
    let token = ctx.topo.ryw.issue(&crate::route::ryw::Token {
        partition: ctx
            .partition
            .clone()
            .unwrap_or_else(|| crate::route::owners::DEFAULT.to_string()),
        epoch,
        mark,
        op,
    });
    const COOKIE_ATTRIBUTES: &str = "; Path=/; HttpOnly; SameSite=Lax";
    let cookie_name = crate::route::ryw::COOKIE;
    let mut cookie =
        String::with_capacity(cookie_name.len() + 1 + token.len() + COOKIE_ATTRIBUTES.len());
    cookie.push_str(cookie_name);
    cookie.push('=');
    cookie.push_str(&token);
    cookie.push_str(COOKIE_ATTRIBUTES);
    resp.append_header(http::header::SET_COOKIE, cookie)?;
    resp.insert_header(RYW, token)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idempotency_key_field_is_the_header_keys_are_taken_from() {
        // `route` may not name `control`, so the field spells the name out.
        assert_eq!(fields::IDEMPOTENCY_KEY.name(), &idempotency::HEADER);
    }
}
