//! Who is on the other end of a connection. The client certificate's URI SAN
//! (`spiffe://<trust-domain>/partner/<id>` or `…/operator/<name>`) is read once, when the
//! TLS handshake completes, into a typed [`Principal`]; interceptors at the edge of each
//! surface admit only the principal kind that surface serves, and handlers receive it as a
//! typed request extension. Nothing a client sends in metadata can claim an identity.

use crate::error::{ApiError, Reason};
use crate::rate_limit::PartnerRateLimiter;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::service::Interceptor;
use tonic::{Request, Status};
use x509_parser::extensions::GeneralName;

/// An authenticated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A partner's backend.
    Partner(PartnerId),
    /// A platform operator.
    Operator(OperatorName),
}

/// A partner id taken from a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerId(pub String);

/// An operator name taken from a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorName(pub String);

/// What the edge learned about a connection; tonic puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The identity of a verified client certificate, if any was presented and recognised.
    pub principal: Option<Principal>,
}

/// The SPIFFE id of a partner.
pub fn partner_spiffe_id(trust_domain: &str, partner_id: &str) -> String {
    format!("spiffe://{trust_domain}/partner/{partner_id}")
}

/// The SPIFFE id of an operator.
pub fn operator_spiffe_id(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/operator/{name}")
}

/// Parses a SPIFFE URI of `trust_domain` into a principal.
pub fn principal_from_uri(uri: &str, trust_domain: &str) -> Option<Principal> {
    let path = uri.strip_prefix("spiffe://")?.strip_prefix(trust_domain)?;
    let (kind, name) = path.strip_prefix('/')?.split_once('/')?;
    if !crate::validate::is_name(name) {
        return None;
    }
    match kind {
        "partner" => Some(Principal::Partner(PartnerId(name.to_string()))),
        "operator" => Some(Principal::Operator(OperatorName(name.to_string()))),
        _ => None,
    }
}

/// The principal named by the first URI SAN of `trust_domain` in a DER certificate.
pub fn principal_from_certificate(der: &[u8], trust_domain: &str) -> Option<Principal> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => principal_from_uri(uri, trust_domain),
        _ => None,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partner_and_operator_uris_of_the_trust_domain_only() {
        assert_eq!(
            principal_from_uri("spiffe://example.org/partner/music", "example.org"),
            Some(Principal::Partner(PartnerId("music".into())))
        );
        assert_eq!(
            principal_from_uri("spiffe://example.org/operator/alice", "example.org"),
            Some(Principal::Operator(OperatorName("alice".into())))
        );
        assert_eq!(
            principal_from_uri("spiffe://evil.org/partner/music", "example.org"),
            None
        );
        assert_eq!(
            principal_from_uri("spiffe://example.org.evil/partner/x", "example.org"),
            None
        );
        assert_eq!(
            principal_from_uri("spiffe://example.org/user/bob", "example.org"),
            None
        );
        assert_eq!(
            principal_from_uri("spiffe://example.org/partner/a/b", "example.org"),
            None
        );
    }
}
