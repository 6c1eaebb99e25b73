//! Who is on the other end of a connection. The client certificate's URI SAN
//! (`spiffe://<trust-domain>/partner/<id>` or `…/operator/<name>`) is read once, when the
//! TLS handshake completes, into a typed [`Principal`] that tonic hands every request of
//! the connection in its extensions ([`ConnectionInfo`]). Nothing a client sends in
//! metadata can claim an identity.

use std::net::SocketAddr;
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
    if !is_identity_segment(name) {
        return None;
    }
    match kind {
        "partner" => Some(Principal::Partner(PartnerId(name.to_string()))),
        "operator" => Some(Principal::Operator(OperatorName(name.to_string()))),
        _ => None,
    }
}

/// The principal named by a DER certificate's URI SAN in `trust_domain`. A certificate
/// must carry exactly one URI SAN, as SPIFFE requires: one that carries several names is
/// taken as no one, since whichever name a verifier picked, the holder could claim to be
/// another.
pub fn principal_from_certificate(der: &[u8], trust_domain: &str) -> Option<Principal> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => principal_from_uri(uri, trust_domain),
        _ => None,
    }
}

/// Whether a SPIFFE path segment is a name this system issues: 1 to 64 bytes of
/// lowercase letters, digits, `_`, `-` and `.`.
fn is_identity_segment(segment: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b);
    !segment.is_empty() && segment.len() <= 64 && segment.bytes().all(allowed)
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

    #[test]
    fn a_certificate_with_two_uri_names_is_no_one() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![
            rcgen::SanType::URI("spiffe://example.org/partner/music".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://example.org/partner/bank".try_into().unwrap()),
        ];
        let two = params.self_signed(&key).unwrap();
        assert_eq!(principal_from_certificate(two.der(), "example.org"), None);
        params.subject_alt_names.pop();
        let one = params.self_signed(&key).unwrap();
        assert_eq!(
            principal_from_certificate(one.der(), "example.org"),
            Some(Principal::Partner(PartnerId("music".into())))
        );
    }
}
