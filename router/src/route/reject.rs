//! Answers the router gives itself instead of forwarding: the one place that
//! maps a refusal to its HTTP status, reason and `Retry-After`.

use std::borrow::Cow;

/// A request the router answers on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: Cow<'static, str>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u32>,
}

impl Reject {
    fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Reject {
            status,
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub(crate) fn bad_request(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, reason)
    }
    pub(crate) fn not_found(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(404, reason)
    }
    pub(crate) fn conflict(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(409, reason)
    }
    pub(crate) fn unprocessable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(422, reason)
    }
    /// A transfer coding the router does not implement (RFC 9112 §6.1).
    pub(crate) fn not_implemented(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(501, reason)
    }
    pub(crate) fn headers_too_large(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(431, reason)
    }
    /// Every region that could take it is over its rate limit.
    pub(crate) fn too_many(reason: impl Into<Cow<'static, str>>) -> Self {
        Reject {
            retry_after: Some(1),
            ..Self::new(429, reason)
        }
    }
    /// A status for an error met while proxying (`fail_to_proxy`): 503 and
    /// 429 say when to come back, like every other refusal of theirs.
    pub(crate) fn with_status(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Reject {
            retry_after: matches!(status, 429 | 503).then_some(1),
            ..Self::new(status, reason)
        }
    }

    /// The same refusal, with `Retry-After` in `secs`.
    pub(crate) fn retry_in(self, secs: u32) -> Self {
        Reject {
            retry_after: Some(secs),
            ..self
        }
    }

    /// No region may serve the request now; the client may come back.
    pub(crate) fn unavailable(reason: impl Into<Cow<'static, str>>) -> Self {
        Reject {
            retry_after: Some(1),
            ..Self::new(503, reason)
        }
    }
}
