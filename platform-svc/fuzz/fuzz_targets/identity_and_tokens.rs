//! Identity and token parsing on arbitrary input: never a panic, and what is accepted
//! round-trips (a parsed SPIFFE id is exactly the one we would issue; a well-formed token
//! keeps its shape).
#![no_main]

use libfuzzer_sys::fuzz_target;
use consent_tls::principal::{
    Principal, operator_spiffe_id, partner_spiffe_id, principal_from_certificate,
    principal_from_uri,
};
use consent_core::secret::{GRANT_TOKEN_PREFIX, SESSION_TOKEN_PREFIX, hash_token, is_well_formed};
use platform_svc::validate;

const TRUST_DOMAIN: &str = "consent.local";

fuzz_target!(|data: &[u8]| {
    let _ = principal_from_certificate(data, TRUST_DOMAIN);
    let text = String::from_utf8_lossy(data);
    match principal_from_uri(&text, TRUST_DOMAIN) {
        Some(Principal::Partner(id)) => assert_eq!(partner_spiffe_id(TRUST_DOMAIN, &id.0), text),
        Some(Principal::Operator(name)) => {
            assert_eq!(operator_spiffe_id(TRUST_DOMAIN, &name.0), text)
        }
        None => {}
    }
    for prefix in [GRANT_TOKEN_PREFIX, SESSION_TOKEN_PREFIX] {
        if is_well_formed(&text, prefix) {
            assert!(text.starts_with(prefix) && text.is_ascii() && text.len() == prefix.len() + 43);
            assert_eq!(hash_token(&text).len(), 64);
        }
    }
    if let Ok(cursor) = validate::page_cursor(&text) {
        assert!(cursor >= 0);
    }
    let size = data.first().map_or(0, |b| i32::from(*b) - 100);
    if let Ok(page) = validate::page(size, &text) {
        assert!((1..=100).contains(&page.limit));
    }
    let _ = validate::id("id", &text);
    let _ = validate::user_name("user_name", &text);
    let _ = validate::body("body", &text);
    let _ = validate::idempotency_key("key", &text);
});
