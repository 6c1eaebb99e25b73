//! Every failure a platform RPC can end in, and the one place where failures become
//! gRPC statuses with `google.rpc` rich details (`ErrorInfo`, `BadRequest`, `ResourceInfo`).
//! A web page that fails answers the HTTP status of the failure's gRPC code
//! ([`consent_tls::https::http_status`]).

use consent_core::denial::{Denied, Reason, Refusal};
use consent_store::StoreError;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "consent.platform";

/// A failed RPC, before it becomes a [`Status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Fields of the request are invalid.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The caller could not be authenticated.
    #[error("{1}")]
    Unauthenticated(Reason, String),
    /// The caller is known but not allowed to do this.
    #[error("{1}")]
    PermissionDenied(Reason, String),
    /// A referenced resource does not exist (or is not visible to the caller).
    #[error("{kind} not found: {id}")]
    NotFound {
        /// Resource type, e.g. "thread".
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The resource, or the idempotency key, exists already.
    #[error("{1}")]
    AlreadyExists(Reason, String),
    /// The system is not in a state where the call can proceed.
    #[error("{1}")]
    FailedPrecondition(Reason, String),
    /// The caller is over a limit.
    #[error("{1}")]
    ResourceExhausted(Reason, String),
    /// The store failed; nothing of the call was committed.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store could not be reached, or is closed for a shutdown; nothing of the call was
    /// committed.
    #[error("the platform cannot reach its database, or is shutting down; try again")]
    Unavailable(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// A resource that does not exist.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// The gRPC code this failure is answered with.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::Unauthenticated(..) => Code::Unauthenticated,
            ApiError::PermissionDenied(..) => Code::PermissionDenied,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists(..) => Code::AlreadyExists,
            ApiError::FailedPrecondition(..) => Code::FailedPrecondition,
            ApiError::ResourceExhausted(..) => Code::ResourceExhausted,
            ApiError::Storage(_) => Code::Internal,
            ApiError::Unavailable(_) => Code::Unavailable,
        }
    }

    /// What the caller is told: everything but a storage failure's detail, which stays in
    /// the log ([`ApiError::log_detail`]).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Storage(_) => "internal storage failure".into(),
            other => other.to_string(),
        }
    }

    /// Logs the detail the caller is not told: why the store failed or could not be reached.
    pub fn log_detail(&self) {
        match self {
            ApiError::Storage(detail) => tracing::error!(%detail, "storage failure"),
            ApiError::Unavailable(detail) => tracing::error!(%detail, "the store is unavailable"),
            _ => {}
        }
    }

    /// The HTTP status of a web page that fails this way.
    pub fn http_status(&self) -> axum::http::StatusCode {
        consent_tls::https::http_status(self.code())
    }

    /// The reason recorded in the audit log, `""` for none.
    pub fn audit_reason(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "INVALID_ARGUMENT",
            ApiError::Unauthenticated(r, _)
            | ApiError::PermissionDenied(r, _)
            | ApiError::AlreadyExists(r, _)
            | ApiError::FailedPrecondition(r, _)
            | ApiError::ResourceExhausted(r, _) => r.as_str(),
            ApiError::NotFound { .. } => "NOT_FOUND",
            ApiError::Storage(_) => "INTERNAL",
            ApiError::Unavailable(_) => Reason::StoreUnavailable.as_str(),
        }
    }
}

/// Result of a platform operation.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(what) => ApiError::AlreadyExists(Reason::AlreadyExists, what),
            StoreError::Failed(detail) => ApiError::Storage(detail),
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        ApiError::PermissionDenied(denied.reason, denied.message)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthenticated(d) => ApiError::Unauthenticated(d.reason, d.message),
            Refusal::Precondition(d) => ApiError::FailedPrecondition(d.reason, d.message),
            Refusal::Exhausted(d) => ApiError::ResourceExhausted(d.reason, d.message),
            Refusal::NotFound { kind, id } => ApiError::NotFound { kind, id },
            Refusal::Invalid(violations) => ApiError::InvalidArgument(
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.description))
                    .collect(),
            ),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        err.log_detail();
        let (code, message) = (err.code(), err.public_message());
        let info = |reason: Reason| {
            Status::with_error_details(
                code,
                message.clone(),
                ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, HashMap::new()),
            )
        };
        match err {
            ApiError::InvalidArgument(violations) => Status::with_error_details(
                code,
                message,
                ErrorDetails::with_bad_request(violations),
            ),
            ApiError::Unauthenticated(reason, _)
            | ApiError::PermissionDenied(reason, _)
            | ApiError::AlreadyExists(reason, _)
            | ApiError::FailedPrecondition(reason, _)
            | ApiError::ResourceExhausted(reason, _) => info(reason),
            ApiError::NotFound { kind, ref id } => Status::with_error_details(
                code,
                message.clone(),
                ErrorDetails::with_resource_info(kind, id.clone(), "", "not found"),
            ),
            ApiError::Storage(_) => Status::new(code, message),
            ApiError::Unavailable(_) => info(Reason::StoreUnavailable),
        }
    }
}
