//! Typed refusals: why a call was refused, as the `ErrorInfo.reason` a client branches on.
//! The rules return a [`Denied`] (the caller may not) or a [`Refusal`] (any other no); the
//! services turn either into a gRPC status in one place.

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
    /// The grant's feature does not declare the kind of card sent.
    CardKindNotDeclared,
    /// The partner is over its request rate.
    RateLimited,
    /// Too many sign-ins or sign-ups are waiting for password hashing.
    PasswordQueueFull,
    /// Too many failed sign-ins for this account name or client address: wait and retry.
    SignInThrottled,
    /// The partner already has as many requests pending before this user as it may.
    TooManyPendingRequests,
    /// The access request expired before the user decided it.
    RequestExpired,
    /// An operator blocked the partner (reversibly; its grants stay).
    PartnerBlocked,
    /// The partner holds as many event streams open as it may.
    TooManyStreams,
    /// The platform cannot reach its database now, or this replica is shutting down;
    /// nothing of the call was done, unless the connection was lost during its commit.
    /// Retrying, on another replica or (unless it is shutting down) this one, may work.
    StoreUnavailable,
    /// The request's headers are over the limit.
    HeadersTooLarge,
    /// The user sent as many friend requests in the last day as they may.
    TooManyFriendRequests,
    /// The `request_uri` is unknown for the client, expired, or already used.
    RequestUriInvalid,
    /// The authorization code is unknown, another partner's, or expired.
    CodeInvalid,
    /// The authorization code was exchanged before; its grant is revoked.
    CodeReused,
    /// The redirect URI is not registered, or differs from the one of the request.
    RedirectUriMismatch,
    /// The PKCE verifier does not match the pushed challenge.
    PkceMismatch,
    /// A form came without the CSRF token of the browser's session.
    CsrfInvalid,
    /// The request was pushed for the code flow: only the platform's consent page decides
    /// it.
    DecidedOnConsentPage,
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
            Reason::CardKindNotDeclared => "CARD_KIND_NOT_DECLARED",
            Reason::RateLimited => "RATE_LIMITED",
            Reason::PasswordQueueFull => "PASSWORD_QUEUE_FULL",
            Reason::SignInThrottled => "SIGN_IN_THROTTLED",
            Reason::TooManyPendingRequests => "TOO_MANY_PENDING_REQUESTS",
            Reason::RequestExpired => "REQUEST_EXPIRED",
            Reason::PartnerBlocked => "PARTNER_BLOCKED",
            Reason::TooManyStreams => "TOO_MANY_STREAMS",
            Reason::StoreUnavailable => "STORE_UNAVAILABLE",
            Reason::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Reason::TooManyFriendRequests => "TOO_MANY_FRIEND_REQUESTS",
            Reason::RequestUriInvalid => "REQUEST_URI_INVALID",
            Reason::CodeInvalid => "CODE_INVALID",
            Reason::CodeReused => "CODE_REUSED",
            Reason::RedirectUriMismatch => "REDIRECT_URI_MISMATCH",
            Reason::PkceMismatch => "PKCE_MISMATCH",
            Reason::CsrfInvalid => "CSRF_INVALID",
            Reason::DecidedOnConsentPage => "DECIDED_ON_CONSENT_PAGE",
        }
    }
}

/// A refusal by a consent rule: the caller is known but may not do this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Why, for `ErrorInfo.reason` and the audit record.
    pub reason: Reason,
    /// What a person reading the status should know.
    pub message: String,
}

impl Denied {
    /// A refusal for `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Denied {
            reason,
            message: message.into(),
        }
    }
}

/// One bad field of a request, for `INVALID_ARGUMENT` with a `BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's name, as in the request message.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl FieldViolation {
    /// A bad `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A rule's answer other than yes or a [`Denied`] (which is `PERMISSION_DENIED`): each
/// kind its own gRPC code in the services' one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The caller is not, or no longer, someone this surface serves (`UNAUTHENTICATED`).
    Unauthenticated(Denied),
    /// The thing asked about is not in a state that allows it (`FAILED_PRECONDITION`).
    Precondition(Denied),
    /// The caller is over a limit (`RESOURCE_EXHAUSTED`).
    Exhausted(Denied),
    /// The request names something the caller cannot see (`NOT_FOUND`); the same answer
    /// as for something that does not exist.
    NotFound {
        /// The kind of thing, e.g. "thread".
        kind: &'static str,
        /// What the request named.
        id: String,
    },
    /// These fields of the request are invalid (`INVALID_ARGUMENT`), every one of them.
    Invalid(Vec<FieldViolation>),
}
