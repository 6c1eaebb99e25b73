//! Failures of the partner API and the one place they become gRPC statuses. A refusal
//! from the platform is passed to the front end unchanged, with its `ErrorInfo`.

use consent_core::denial::FieldViolation;
use std::collections::HashMap;
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

/// A failed partner API call.
#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    /// These fields of the request are invalid, every one of them.
    #[error("invalid request: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldViolation>),
    /// This app's feature does not send this kind of card.
    #[error("{0}")]
    CardNotDeclared(String),
    /// A front-end key already names another share.
    #[error("client_key was used for another share")]
    ClientKeyReused,
    /// The user has no active connection to this partner.
    #[error("{0} is not connected to this app")]
    NotConnected(String),
    /// The share a front-end key names failed for good earlier, for the reason given: a
    /// retry of it is told so, not that it was delivered.
    #[error("this share failed and will not be sent: {0}")]
    ShareFailed(String),
    /// A queued share no longer reads back from the local store.
    #[error("share {0} cannot be sent: {1}")]
    UnreadableShare(String, String),
    /// The platform refused or failed.
    #[error("platform: {0}")]
    Platform(#[from] Status),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The caller is neither one of this partner's front ends (by client certificate) nor
    /// signed in (by session).
    #[error("present this partner's client certificate, or 'authorization: Bearer <session>'")]
    Unauthenticated,
    /// A signed-in user named another account.
    #[error("a session acts for its own account only")]
    NotYourAccount,
    /// A signed-in user asked for the decoupled flow.
    #[error("connect through the platform's consent page ('Connect with the platform')")]
    ConnectInBrowser,
}

/// The `ErrorInfo.domain` of the partner's own refusals.
pub const ERROR_DOMAIN: &str = "consent.partner";

fn refusal(code: tonic::Code, reason: &str, message: String) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

impl PartnerError {
    /// One invalid `field`.
    pub fn invalid(field: &str, description: &str) -> Self {
        PartnerError::Invalid(vec![FieldViolation::new(field, description)])
    }
}

impl From<rusqlite::Error> for PartnerError {
    fn from(e: rusqlite::Error) -> Self {
        PartnerError::Store(e.into())
    }
}

impl From<PartnerError> for Status {
    fn from(err: PartnerError) -> Status {
        let message = err.to_string();
        match err {
            PartnerError::Invalid(violations) => Status::with_error_details(
                tonic::Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                ),
            ),
            PartnerError::NotConnected(_) => {
                refusal(tonic::Code::FailedPrecondition, "NOT_CONNECTED", message)
            }
            PartnerError::ShareFailed(_) => {
                refusal(tonic::Code::FailedPrecondition, "SHARE_FAILED", message)
            }
            PartnerError::UnreadableShare(..) => {
                refusal(tonic::Code::DataLoss, "SHARE_UNREADABLE", message)
            }
            PartnerError::CardNotDeclared(_) => refusal(
                tonic::Code::PermissionDenied,
                "CARD_KIND_NOT_DECLARED",
                message,
            ),
            PartnerError::ClientKeyReused => {
                refusal(tonic::Code::AlreadyExists, "CLIENT_KEY_REUSED", message)
            }
            PartnerError::Platform(status) => status,
            PartnerError::Store(e) => {
                tracing::error!(error = %e, "partner store failure");
                Status::internal("internal storage failure")
            }
            PartnerError::Unauthenticated => refusal(
                tonic::Code::Unauthenticated,
                "CALLER_UNAUTHENTICATED",
                message,
            ),
            PartnerError::NotYourAccount => {
                refusal(tonic::Code::PermissionDenied, "NOT_YOUR_ACCOUNT", message)
            }
            PartnerError::ConnectInBrowser => refusal(
                tonic::Code::FailedPrecondition,
                "CONNECT_IN_BROWSER",
                message,
            ),
        }
    }
}

/// Whether a platform failure is transient (the platform is unreachable or restarting, or
/// asks the partner to slow down), so a write should stay queued rather than fail.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    ) || rate_limited(status)
}

/// Whether the platform refused a call only for the partner's rate, which later calls are
/// within.
fn rate_limited(status: &Status) -> bool {
    use tonic_types::StatusExt;
    status.code() == tonic::Code::ResourceExhausted
        && status
            .get_details_error_info()
            .is_some_and(|info| info.reason == "RATE_LIMITED")
}
