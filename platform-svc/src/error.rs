//! Every failure a platform RPC can end in, and the one place where failures become
//! gRPC statuses with `google.rpc` rich details (`ErrorInfo`, `BadRequest`, `ResourceInfo`).

use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "consent.platform";

/// Why a call was refused: the `ErrorInfo.reason` a client can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The grant does not include the scope the RPC needs.
    ScopeMissing,
    /// The user revoked the grant.
    GrantRevoked,
    /// The grant passed its `not_after`.
    GrantExpired,
    /// The grant was unused for longer than the inactivity limit.
    GrantLapsed,
    /// The partner released the grant.
    GrantReleased,
    /// The grant's feature was retired.
    FeatureRetired,
    /// The partner is suspended.
    PartnerSuspended,
    /// The certificate's partner is not registered.
    PartnerUnknown,
    /// The thread is outside the grant's coverage.
    ThreadNotCovered,
    /// The message predates the grant and history was not approved.
    HistoryNotGranted,
    /// Only messages the granting user wrote may be deleted.
    NotOwnMessage,
    /// The grant token was issued to another partner.
    TokenPartnerMismatch,
    /// No grant token was sent.
    TokenMissing,
    /// The grant token is malformed or unknown.
    TokenInvalid,
    /// No session token was sent, or it is unknown or expired.
    SessionInvalid,
    /// Wrong user name or password.
    BadCredentials,
    /// The client certificate does not carry an identity for this surface.
    WrongIdentity,
    /// A scope the partner's registration does not allow.
    ScopeNotAllowed,
    /// The idempotency key was used before with a different request.
    IdempotencyKeyReused,
    /// The thing already exists.
    AlreadyExists,
    /// The access request is no longer pending.
    RequestNotPending,
    /// The grant is still active, so there is no deletion to attest.
    GrantStillActive,
    /// The feature is retired.
    FeatureNotActive,
    /// The other users are not all friends of the user.
    NotAFriend,
    /// The partner is over its request rate.
    RateLimited,
}

impl Reason {
    /// The `ErrorInfo.reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ScopeMissing => "SCOPE_MISSING",
            Reason::GrantRevoked => "GRANT_REVOKED",
            Reason::GrantExpired => "GRANT_EXPIRED",
            Reason::GrantLapsed => "GRANT_LAPSED",
            Reason::GrantReleased => "GRANT_RELEASED",
            Reason::FeatureRetired => "FEATURE_RETIRED",
            Reason::PartnerSuspended => "PARTNER_SUSPENDED",
            Reason::PartnerUnknown => "PARTNER_UNKNOWN",
            Reason::ThreadNotCovered => "THREAD_NOT_COVERED",
            Reason::HistoryNotGranted => "HISTORY_NOT_GRANTED",
            Reason::NotOwnMessage => "NOT_OWN_MESSAGE",
            Reason::TokenPartnerMismatch => "TOKEN_PARTNER_MISMATCH",
            Reason::TokenMissing => "TOKEN_MISSING",
            Reason::TokenInvalid => "TOKEN_INVALID",
            Reason::SessionInvalid => "SESSION_INVALID",
            Reason::BadCredentials => "BAD_CREDENTIALS",
            Reason::WrongIdentity => "WRONG_IDENTITY",
            Reason::ScopeNotAllowed => "SCOPE_NOT_ALLOWED",
            Reason::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Reason::AlreadyExists => "ALREADY_EXISTS",
            Reason::RequestNotPending => "REQUEST_NOT_PENDING",
            Reason::GrantStillActive => "GRANT_STILL_ACTIVE",
            Reason::FeatureNotActive => "FEATURE_NOT_ACTIVE",
            Reason::NotAFriend => "NOT_A_FRIEND",
            Reason::RateLimited => "RATE_LIMITED",
        }
    }
}

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

    /// A refusal with its reason.
    pub fn denied(reason: Reason, message: impl Into<String>) -> Self {
        ApiError::PermissionDenied(reason, message.into())
    }

    /// A resource that does not exist.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            kind,
            id: id.into(),
        }
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
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::Storage(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        let message = err.to_string();
        let info = |code: Code, reason: Reason| {
            Status::with_error_details(
                code,
                message.clone(),
                ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, HashMap::new()),
            )
        };
        match err {
            ApiError::InvalidArgument(violations) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(violations),
            ),
            ApiError::Unauthenticated(reason, _) => info(Code::Unauthenticated, reason),
            ApiError::PermissionDenied(reason, _) => info(Code::PermissionDenied, reason),
            ApiError::AlreadyExists(reason, _) => info(Code::AlreadyExists, reason),
            ApiError::FailedPrecondition(reason, _) => info(Code::FailedPrecondition, reason),
            ApiError::ResourceExhausted(reason, _) => info(Code::ResourceExhausted, reason),
            ApiError::NotFound { kind, ref id } => Status::with_error_details(
                Code::NotFound,
                message.clone(),
                ErrorDetails::with_resource_info(kind, id.clone(), "", "not found"),
            ),
            ApiError::Storage(detail) => {
                tracing::error!(%detail, "storage failure");
                Status::internal("internal storage failure")
            }
        }
    }
}
