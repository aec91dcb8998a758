//! Why the control plane did not make a change an operator (or one of its
//! own loops) asked for. The admin API maps each kind to its status in one
//! place (`admin::error`).

/// A change not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// An interlock or a state rule refused it; `rule` names which.
    #[error("{message}")]
    Refused { rule: &'static str, message: String },
    /// It names a region, ramp or partition that is not configured.
    #[error("{0}")]
    NotFound(String),
    /// etcd did not take it, so the fleet does not have it.
    #[error("{0}")]
    Unavailable(String),
    /// It could not be kept (persisted, logged).
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    pub(crate) fn refused(rule: &'static str, message: impl Into<String>) -> Self {
        ControlError::Refused {
            rule,
            message: message.into(),
        }
    }

    /// The rule that refused the change, when one did.
    pub(crate) fn rule(&self) -> Option<&'static str> {
        match self {
            ControlError::Refused { rule, .. } => Some(rule),
            _ => None,
        }
    }
}
