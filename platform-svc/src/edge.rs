//! The edge of each surface: interceptors that admit only the principal kind the surface
//! serves (read from the certificate once per connection, see
//! [`consent_tls::principal`]) and put it in the request's extensions as a typed value,
//! so handlers never parse certificates. Every surface's edge also refuses a request whose
//! headers are larger than `limits.max_header_list_bytes` with a status that says so
//! (HTTP/2 itself accepts up to [`consent_tls::transport::HTTP2_HEADER_ALLOWANCE`] times
//! that, and answers beyond with HTTP 431, which gRPC clients report as `UNKNOWN`).

use crate::error::ApiError;
use crate::rate_limit::PartnerRateLimiter;
use consent_core::denial::Reason;
use consent_tls::principal::{ConnectionInfo, Principal};
use std::sync::Arc;
use tonic::metadata::KeyAndValueRef;
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

/// Refuses `request` if its metadata, counted as HTTP/2 counts a header list (name, value
/// and 32 bytes per entry), is over `limit` bytes.
fn within_header_limit<T>(request: &Request<T>, limit: usize) -> Result<(), Status> {
    let size: usize = request
        .metadata()
        .iter()
        .map(|entry| match entry {
            KeyAndValueRef::Ascii(key, value) => key.as_str().len() + value.as_encoded_bytes().len(),
            KeyAndValueRef::Binary(key, value) => key.as_str().len() + value.as_encoded_bytes().len(),
        } + 32)
        .sum();
    if size > limit {
        return Err(ApiError::ResourceExhausted(
            Reason::HeadersTooLarge,
            format!("the request's headers are {size} bytes, over the limit of {limit}"),
        )
        .into());
    }
    Ok(())
}

/// Edge interceptor of the partner surface: admits partner certificates only, each partner
/// within its request rate.
#[derive(Debug, Clone)]
pub struct PartnerEdge {
    limiter: Arc<PartnerRateLimiter>,
    header_limit: usize,
}

impl PartnerEdge {
    /// Admits partners within the limits of `limiter`, with headers up to `header_limit`
    /// bytes.
    pub fn new(limiter: Arc<PartnerRateLimiter>, header_limit: usize) -> Self {
        PartnerEdge {
            limiter,
            header_limit,
        }
    }
}

impl Interceptor for PartnerEdge {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(Principal::Partner(id)) = principal_of(&request).cloned() else {
            return Err(wrong_identity("partner"));
        };
        within_header_limit(&request, self.header_limit)?;
        if !self.limiter.try_acquire(&id.0) {
            // Not audited (a flood would flood the chain): this count is its only trace.
            metrics::counter!("consent_partner_calls_rate_limited_total", "partner" => id.0.clone())
                .increment(1);
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
#[derive(Debug, Clone)]
pub struct OperatorEdge {
    header_limit: usize,
}

impl OperatorEdge {
    /// Admits operators, with headers up to `header_limit` bytes.
    pub fn new(header_limit: usize) -> Self {
        OperatorEdge { header_limit }
    }
}

impl Interceptor for OperatorEdge {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(Principal::Operator(name)) = principal_of(&request).cloned() else {
            return Err(wrong_identity("operator"));
        };
        within_header_limit(&request, self.header_limit)?;
        request.extensions_mut().insert(name);
        Ok(request)
    }
}

/// Edge interceptor of the user surface: anyone may call (sessions are checked by the
/// handlers), with headers up to `header_limit` bytes.
#[derive(Debug, Clone)]
pub struct UserEdge {
    header_limit: usize,
}

impl UserEdge {
    /// Admits callers with headers up to `header_limit` bytes.
    pub fn new(header_limit: usize) -> Self {
        UserEdge { header_limit }
    }
}

impl Interceptor for UserEdge {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        within_header_limit(&request, self.header_limit)?;
        Ok(request)
    }
}
