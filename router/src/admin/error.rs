//! The admin API's error answers: the one place that maps a refusal to its
//! status. The body is `{"error": reason}`, plus `"rule"` when an interlock
//! or a state rule refused.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::control::error::ControlError;
use crate::route::explain::ExplainError;

/// An error answer.
#[derive(Debug)]
pub(super) struct AdminError {
    status: StatusCode,
    rule: Option<&'static str>,
    message: String,
}

impl AdminError {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        AdminError {
            status: StatusCode::BAD_REQUEST,
            rule: None,
            message: message.into(),
        }
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        AdminError {
            status: StatusCode::NOT_FOUND,
            ..Self::bad_request(message)
        }
    }
}

impl From<ControlError> for AdminError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::Refused { .. } => StatusCode::CONFLICT,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError {
            status,
            rule: e.rule(),
            message: e.to_string(),
        }
    }
}

impl From<ExplainError> for AdminError {
    fn from(e: ExplainError) -> Self {
        AdminError::bad_request(e.to_string())
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(rule) = self.rule {
            body["rule"] = json!(rule);
        }
        (self.status, Json(body)).into_response()
    }
}
