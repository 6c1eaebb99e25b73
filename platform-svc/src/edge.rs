//! The edge of each surface: interceptors that admit only the principal kind the surface
//! serves (read from the certificate once per connection, see
//! [`consent_tls::principal`]) and put it in the request's extensions as a typed value,
//! so handlers never parse certificates.

use crate::error::ApiError;
use crate::rate_limit::PartnerRateLimiter;
use consent_core::denial::Reason;
use consent_tls::principal::{ConnectionInfo, Principal};
use std::sync::Arc;
use tonic::service::Interceptor;
use tonic::{Request, Status};

fn principal_of<T>(request: &Request<T>) -> Option<&Principal> {
    request
        .extensions()
        .get::<ConnectionInfo>()?
        .principal
        .as_ref()
}

fn wrong_identity(surface: &str) -> Status {
    ApiError::Unauthenticated(
        Reason::WrongIdentity,
        format!("this surface serves {surface}s: present a {surface} certificate"),
    )
    .into()
}

/// Edge interceptor of the partner surface: admits partner certificates only, each partner
/// within its request rate.
#[derive(Debug, Clone)]
pub struct PartnerEdge {
    limiter: Arc<PartnerRateLimiter>,
}

impl PartnerEdge {
    /// Admits partners within the limits of `limiter`.
    pub fn new(limiter: Arc<PartnerRateLimiter>) -> Self {
        PartnerEdge { limiter }
    }
}

impl Interceptor for PartnerEdge {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(Principal::Partner(id)) = principal_of(&request).cloned() else {
            return Err(wrong_identity("partner"));
        };
        if !self.limiter.try_acquire(&id.0) {
            return Err(ApiError::ResourceExhausted(
                Reason::RateLimited,
                format!("partner {} is over its request rate", id.0),
            )
            .into());
        }
        request.extensions_mut().insert(id);
        Ok(request)
    }
}

/// Edge interceptor of the operator surface: admits operator certificates only.
pub fn require_operator(mut request: Request<()>) -> Result<Request<()>, Status> {
    match principal_of(&request).cloned() {
        Some(Principal::Operator(name)) => {
            request.extensions_mut().insert(name);
            Ok(request)
        }
        _ => Err(wrong_identity("operator")),
    }
}
