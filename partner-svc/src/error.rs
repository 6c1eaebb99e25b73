//! Failures of the partner API and the one place they become gRPC statuses. A refusal
//! from the platform is passed to the front end unchanged, with its `ErrorInfo`.

use tonic::Status;

/// A failed partner API call.
#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    /// A request field is invalid.
    #[error("{field}: {description}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        description: &'static str,
    },
    /// The user has no active connection to this partner.
    #[error("{0} is not connected to this app")]
    NotConnected(String),
    /// The platform refused or failed.
    #[error("platform: {0}")]
    Platform(#[from] Status),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<rusqlite::Error> for PartnerError {
    fn from(e: rusqlite::Error) -> Self {
        PartnerError::Store(e.into())
    }
}

impl From<PartnerError> for Status {
    fn from(err: PartnerError) -> Status {
        match err {
            PartnerError::Invalid { .. } => Status::invalid_argument(err.to_string()),
            PartnerError::NotConnected(_) => Status::failed_precondition(err.to_string()),
            PartnerError::Platform(status) => status,
            PartnerError::Store(e) => {
                tracing::error!(error = %e, "partner store failure");
                Status::internal("internal storage failure")
            }
        }
    }
}

/// Whether a platform failure is transient (the platform is unreachable or restarting),
/// so a write should stay queued rather than fail.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    )
}
