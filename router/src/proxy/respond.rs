//! The router's own answers: a refusal written to the client (status,
//! reason, `Retry-After`), and the mapping from an error met while proxying
//! to the status the client gets.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::Session;
use pingora::ErrorType;

use crate::metrics;
use crate::route::fields::Fields;
use crate::route::reject::Reject;

pub(super) fn client_ip(session: &Session) -> IpAddr {
    session
        .client_addr()
        .and_then(PingoraAddr::as_inet)
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip())
}

/// Length of the request line as on the wire (method, target, version, CRLF).
pub(super) fn request_line_len(req: &RequestHeader) -> usize {
    req.method.as_str().len() + req.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12
}

/// Writes the router's own answer: status, reason text, `Retry-After`.
pub(super) async fn respond(session: &mut Session, reject: &Reject) -> Result<()> {
    if super::grpc::is_grpc(&Fields::new(&session.req_header().headers)) {
        metrics::rejected(reject.status);
        let status = super::grpc::status_for_http(reject.status);
        return super::grpc::answer(session, status, &reject.reason).await;
    }
    let body = Bytes::from(format!("{}\n", reject.reason));
    let mut resp = ResponseHeader::build(reject.status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if let Some(secs) = reject.retry_after {
        resp.insert_header(http::header::RETRY_AFTER, secs.to_string())?;
    }
    if reject.status == 400 || reject.status == 431 {
        // The framing cannot be trusted: never read another request from it.
        session.set_keepalive(None);
    }
    metrics::rejected(reject.status);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// The answer for an error met while proxying; `None` when the client is
/// gone (nothing to answer).
pub(super) fn reject_for(e: &Error) -> Option<Reject> {
    let (status, reason) = match e.etype() {
        ErrorType::HTTPStatus(code) => (
            *code,
            e.context
                .as_ref()
                .map_or_else(|| "error".to_string(), |c| c.as_str().to_string()),
        ),
        ErrorType::Custom("InvalidChunk") => {
            metrics::client_cutoff("bad_framing");
            (
                400,
                "the request body's chunked framing is broken".to_string(),
            )
        }
        ErrorType::ReadTimedout if e.esource() == &pingora::ErrorSource::Downstream => {
            metrics::client_cutoff("body_timeout");
            (
                408,
                "the request body stopped arriving (limits.body_timeout)".to_string(),
            )
        }
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            (504, "the region did not answer in time".to_string())
        }
        _ => match e.esource() {
            pingora::ErrorSource::Upstream => (502, "the region could not be reached".to_string()),
            pingora::ErrorSource::Downstream => return None,
            _ => (500, "internal error".to_string()),
        },
    };
    Some(Reject::with_status(status, reason))
}
