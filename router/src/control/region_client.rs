//! Requests the router makes to regions on its own (health probes, shadow
//! reads): through pingora's connector and the region's transport, so they
//! connect, negotiate TLS and ALPN and verify certificates exactly as
//! proxied requests do, and keep their connections pooled between uses.

use std::sync::OnceLock;
use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use switchyard_config::Endpoint;

/// The one connector these requests share.
pub(crate) fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// Sends `req` (no body) to `peer`, an address of `endpoint`, with the
/// endpoint as its `Host` (and, over HTTP/2, its authority), and reads the
/// answer's header. The caller reads the body, then [`release`]s the session.
pub(crate) async fn send(
    peer: &HttpPeer,
    endpoint: &Endpoint,
    req: RequestHeader,
) -> Result<HttpSession> {
    send_with_body(peer, endpoint, req, bytes::Bytes::new()).await
}

/// Sends a client's request as the proxy would (its `Host` kept) and reads
/// the answer's header.
pub(crate) async fn send_proxied(
    peer: &HttpPeer,
    endpoint: &Endpoint,
    req: RequestHeader,
) -> Result<HttpSession> {
    exchange(peer, endpoint, req, bytes::Bytes::new(), true).await
}

/// [`send`] with a body (its `Content-Length` set by the caller).
pub(crate) async fn send_with_body(
    peer: &HttpPeer,
    endpoint: &Endpoint,
    req: RequestHeader,
    body: bytes::Bytes,
) -> Result<HttpSession> {
    exchange(peer, endpoint, req, body, false).await
}

async fn exchange(
    peer: &HttpPeer,
    endpoint: &Endpoint,
    mut req: RequestHeader,
    body: bytes::Bytes,
    keep_host: bool,
) -> Result<HttpSession> {
    let (mut session, _reused) = connector().get_http_session(peer).await?;
    // A proxied request (a hedge) keeps the client's `Host`; the router's
    // own requests name the endpoint.
    let authority = match req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        Some(host) if keep_host => host.to_string(),
        _ => {
            let authority = endpoint.to_string();
            req.insert_header(http::header::HOST, &authority)?;
            authority
        }
    };
    if session.as_http2().is_some() {
        let scheme = if endpoint.tls { "https" } else { "http" };
        let path = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority(authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "request URI", e))?;
        req.set_uri(uri);
    }
    session.write_request_header(Box::new(req)).await?;
    if !body.is_empty() {
        session.write_request_body(body, false).await?;
    }
    session.finish_request_body().await?;
    session.read_response_header().await?;
    Ok(session)
}

/// Returns a session whose answer was read whole to the pool, for `idle`.
pub(crate) async fn release(session: HttpSession, peer: &HttpPeer, idle: Duration) {
    connector()
        .release_http_session(session, peer, Some(idle))
        .await;
}
