//! `GET /console`: the operator's page, served from the binary. The page
//! itself holds no data and needs no token; everything it shows comes from
//! the admin API with the bearer token the operator types in (kept in the
//! tab's session storage, never in a URL or a cookie).
//!
//! Script and style are separate files from the same binary so that the
//! page can be served under a CSP that allows no inline code: a token in
//! session storage is only as safe as the page is from injected script.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::admin::AdminState;

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

/// Same-origin only: script, style and the admin API's fetches; no frames,
/// no forms posted elsewhere, no referrer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'none'; \
    frame-ancestors 'none'; base-uri 'none'";

pub(super) fn routes() -> Router<AdminState> {
    Router::new()
        .route(
            "/console",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The binary's own version of the page: nothing stale after an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_runs_no_inline_code() {
        for (name, text) in [("index.html", PAGE), ("app.js", SCRIPT), ("app.css", STYLE)] {
            for foreign in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace is a name, not a fetch.
                let hits = text
                    .match_indices(foreign)
                    .filter(|(i, _)| !text[*i..].starts_with("http://www.w3.org/2000/svg"))
                    .count();
                assert_eq!(hits, 0, "{name} refers to {foreign}");
            }
        }
        assert!(
            !PAGE.contains("<script>"),
            "inline script would need 'unsafe-inline'"
        );
        assert!(
            !PAGE.contains("style=\""),
            "inline style would need 'unsafe-inline'"
        );
        assert!(!SCRIPT.contains("innerHTML"), "values are written as text");
    }

    #[test]
    fn the_token_never_goes_into_a_url_or_a_cookie() {
        assert!(!SCRIPT.contains("document.cookie"));
        assert!(!SCRIPT.contains("localStorage"), "session storage only");
        assert!(!SCRIPT.contains("?token"));
        assert!(SCRIPT.contains("credentials: \"omit\""));
    }
}
