//! The rules of the authorization code flow (RFC 6749 section 4.1, with PKCE, RFC 7636, and
//! pushed authorization requests, RFC 9126), as FAPI 2.0 hardens it: a partner pushes its
//! request over mutual TLS, the user's browser carries only a single-use `request_uri` to
//! the consent page, and the code the page returns is single-use, short-lived, bound to
//! the partner, its redirect URI and its PKCE challenge. A second exchange of a code
//! revokes the grant the first one returned (RFC 6749 section 4.1.2).

use crate::denial::{Denied, Reason, Refusal};
use crate::model::GrantState;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// How long a pushed request's `request_uri` may be taken to the consent page.
pub const REQUEST_URI_TTL_MS: i64 = 90 * 1000;
/// How long a code may be exchanged after the consent page issued it.
pub const CODE_TTL_MS: i64 = 60 * 1000;
/// The prefix of every `request_uri` (RFC 9126 section 2.2).
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// Redirect URIs a partner may register.
pub const MAX_REDIRECT_URIS: usize = 10;
/// The longest redirect URI.
pub const MAX_REDIRECT_URI_LEN: usize = 512;

/// A request a partner pushed, waiting for a user's browser to bring it to the consent
/// page.
#[derive(Debug, Clone)]
pub struct PushedRequest {
    /// The partner that pushed it.
    pub partner_id: String,
    /// The feature asked for.
    pub feature: String,
    /// Coverage asked for.
    pub coverage: crate::model::Coverage,
    /// Threads offered (listed coverage); empty lets the user pick.
    pub thread_ids: Vec<String>,
    /// History asked for.
    pub include_history: bool,
    /// Why, in the partner's words.
    pub purpose: String,
    /// Where the answer goes.
    pub redirect_uri: String,
    /// Returned unchanged with the answer.
    pub state: String,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// When the `request_uri` stops working.
    pub expires_ms: i64,
    /// The access request it became once a signed-in user opened it.
    pub access_request_id: Option<String>,
}

/// A code the consent page issued for an approved request.
#[derive(Debug, Clone)]
pub struct AuthorizationCode {
    /// The partner it was issued to.
    pub partner_id: String,
    /// The grant it exchanges for.
    pub grant_id: String,
    /// The redirect URI it was sent to.
    pub redirect_uri: String,
    /// The PKCE S256 challenge of its request.
    pub code_challenge: String,
    /// When it stops working.
    pub expires_ms: i64,
    /// When it was exchanged, if it was.
    pub redeemed_ms: Option<i64>,
}

/// Why a redirect URI cannot be registered, or `None` when it can: an absolute `https`
/// URI of printable ASCII, whose authority is a DNS name or bracketed IPv6 address with an
/// optional port (no user information), with no fragment, no backslash or quote, at most
/// [`MAX_REDIRECT_URI_LEN`] characters.
pub fn redirect_uri_problem(uri: &str) -> Option<&'static str> {
    let Some(rest) = uri.strip_prefix("https://") else {
        return Some("must be an https URI");
    };
    if !uri.bytes().all(|b| b.is_ascii_graphic()) || uri.contains(['\\', '"', '\'', '<', '>']) {
        return Some(
            "must be printable ASCII without spaces, backslashes, quotes or angle brackets",
        );
    }
    if uri.len() > MAX_REDIRECT_URI_LEN {
        return Some("must be at most 512 characters");
    }
    if uri.contains('#') {
        return Some("must not have a fragment");
    }
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if !is_host_and_port(authority) {
        return Some("must name a host (and port), without user information");
    }
    None
}

/// Whether `authority` is `host[:port]`: host a DNS name (labels of letters, digits and
/// '-') or a bracketed IPv6 address; port 1 to 5 digits.
fn is_host_and_port(authority: &str) -> bool {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.starts_with('[') || host.ends_with(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => !ipv6.is_empty() && ipv6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => {
            !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
    };
    port_ok && host_ok
}

/// Why a PKCE challenge is malformed, or `None`: S256 only, 43 base64url characters.
pub fn challenge_problem(method: &str, challenge: &str) -> Option<&'static str> {
    if method != "S256" {
        return Some("must be S256");
    }
    let well_formed = challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (!well_formed).then_some("must be BASE64URL(SHA-256(verifier)) without padding")
}

/// Why a `state` is malformed, or `None`: 1 to 256 printable ASCII characters.
pub fn state_problem(state: &str) -> Option<&'static str> {
    let well_formed =
        (1..=256).contains(&state.len()) && state.bytes().all(|b| b.is_ascii_graphic());
    (!well_formed).then_some("must be 1 to 256 printable ASCII characters")
}

/// Why a PKCE verifier is malformed, or `None`: 43 to 128 unreserved characters (RFC
/// 7636). Checked only once the code is found, so that a code replayed with any verifier
/// still revokes its grant.
fn verifier_problem(verifier: &str) -> Option<&'static str> {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    (!well_formed).then_some("must be 43 to 128 of A-Z, a-z, 0-9, '-', '.', '_', '~'")
}

/// Whether `verifier` is well formed and hashes to `challenge` (S256).
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    verifier_problem(verifier).is_none() && s256(verifier) == challenge
}

/// A partner pushes requests only for a redirect URI it registered, exactly as registered.
pub fn redirect_registered(registered: &[String], redirect_uri: &str) -> Result<(), Denied> {
    if registered.iter().any(|u| u == redirect_uri) {
        Ok(())
    } else {
        Err(Denied::new(
            Reason::RedirectUriMismatch,
            "redirect_uri is not one of the partner's registered redirect URIs",
        ))
    }
}

/// The S256 challenge of a verifier: BASE64URL(SHA-256(verifier)), unpadded.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `partner_id` may take the pushed request to the consent page at `now_ms`, as
/// `client_id`: it must be the partner's own, unexpired and not yet opened by a user.
pub fn may_open(
    pushed: Option<&PushedRequest>,
    client_id: &str,
    now_ms: i64,
) -> Result<(), Denied> {
    let invalid = |message: &str| Denied::new(Reason::RequestUriInvalid, message);
    let Some(pushed) = pushed.filter(|p| p.partner_id == client_id) else {
        return Err(invalid("the request_uri is unknown for this client_id"));
    };
    if pushed.access_request_id.is_some() {
        return Err(invalid("the request_uri was already used"));
    }
    if now_ms >= pushed.expires_ms {
        return Err(invalid("the request_uri expired"));
    }
    Ok(())
}

/// A refused code exchange, and the grant it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRefusal {
    /// Why.
    pub denied: Denied,
    /// The grant that ends with this refusal (a replayed code's), and how.
    pub ends_grant: Option<(String, GrantState)>,
}

impl From<Denied> for CodeRefusal {
    fn from(denied: Denied) -> Self {
        CodeRefusal {
            denied,
            ends_grant: None,
        }
    }
}

/// Whether `partner_id` may exchange `code` with `verifier` for `redirect_uri` at
/// `now_ms`. Another partner's code is answered as an unknown one; a code exchanged before
/// is refused and its grant revoked, since someone else may hold its token.
pub fn may_redeem(
    code: Option<&AuthorizationCode>,
    partner_id: &str,
    verifier: &str,
    redirect_uri: &str,
    now_ms: i64,
) -> Result<(), CodeRefusal> {
    let Some(code) = code.filter(|c| c.partner_id == partner_id) else {
        return Err(Denied::new(Reason::CodeInvalid, "the code is unknown").into());
    };
    if code.redeemed_ms.is_some() {
        return Err(CodeRefusal {
            denied: Denied::new(
                Reason::CodeReused,
                "the code was already exchanged: its grant is revoked",
            ),
            ends_grant: Some((code.grant_id.clone(), GrantState::Revoked)),
        });
    }
    if now_ms >= code.expires_ms {
        return Err(Denied::new(Reason::CodeInvalid, "the code expired").into());
    }
    if code.redirect_uri != redirect_uri {
        return Err(Denied::new(
            Reason::RedirectUriMismatch,
            "redirect_uri differs from the one the code was issued for",
        )
        .into());
    }
    if !verifier_matches(verifier, &code.code_challenge) {
        return Err(Denied::new(
            Reason::PkceMismatch,
            "code_verifier does not match the pushed code_challenge",
        )
        .into());
    }
    Ok(())
}

/// Whether an approval sent again on the consent page (see
/// [`decides_again`](crate::approval::decides_again)) may be answered with a new code in
/// place of `code`, the one its first sending issued: only while that code is neither
/// exchanged nor expired, so that the new code replaces one nobody used. Otherwise the
/// request stays decided.
pub fn may_issue_again(code: Option<&AuthorizationCode>, now_ms: i64) -> Result<(), Refusal> {
    match code {
        Some(code) if code.redeemed_ms.is_none() && now_ms < code.expires_ms => Ok(()),
        _ => Err(Refusal::Precondition(Denied::new(
            Reason::RequestNotPending,
            "the request was already decided, and its code exchanged or expired",
        ))),
    }
}

/// Whether `next`, a place to return to after signing in, stays on the platform's own
/// pages: a path from the root, not `//host` or `/\host` (which browsers take for another
/// site) and nothing with a scheme.
pub fn is_local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control() || c == '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn code() -> AuthorizationCode {
        AuthorizationCode {
            partner_id: "music".into(),
            grant_id: "grt_1".into(),
            redirect_uri: "https://music.example/callback".into(),
            code_challenge: s256(VERIFIER),
            expires_ms: 1_000,
            redeemed_ms: None,
        }
    }

    fn reason(result: Result<(), CodeRefusal>) -> Reason {
        result.unwrap_err().denied.reason
    }

    #[test]
    fn the_rfc_7636_example_verifier_hashes_to_its_challenge() {
        assert_eq!(
            s256(VERIFIER),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(verifier_matches(
            VERIFIER,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!verifier_matches("short", &s256("short")));
    }

    #[test]
    fn a_code_is_redeemed_once_by_its_partner_with_its_verifier_and_redirect() {
        let uri = "https://music.example/callback";
        assert!(may_redeem(Some(&code()), "music", VERIFIER, uri, 999).is_ok());
        assert_eq!(
            reason(may_redeem(None, "music", VERIFIER, uri, 0)),
            Reason::CodeInvalid
        );
        assert_eq!(
            reason(may_redeem(Some(&code()), "video", VERIFIER, uri, 0)),
            Reason::CodeInvalid
        );
        assert_eq!(
            reason(may_redeem(Some(&code()), "music", VERIFIER, uri, 1_000)),
            Reason::CodeInvalid
        );
        let other_verifier = "x".repeat(43);
        assert_eq!(
            reason(may_redeem(Some(&code()), "music", &other_verifier, uri, 0)),
            Reason::PkceMismatch
        );
        let altered = "https://music.example/callback?x=1";
        assert_eq!(
            reason(may_redeem(Some(&code()), "music", VERIFIER, altered, 0)),
            Reason::RedirectUriMismatch
        );
    }

    #[test]
    fn an_approval_sent_again_gets_a_new_code_only_while_the_first_is_unused() {
        assert!(may_issue_again(Some(&code()), 999).is_ok());
        let redeemed = AuthorizationCode {
            redeemed_ms: Some(5),
            ..code()
        };
        let unused = code();
        for (refused, now_ms) in [(Some(&redeemed), 10), (Some(&unused), 1_000), (None, 0)] {
            let Err(Refusal::Precondition(denied)) = may_issue_again(refused, now_ms) else {
                panic!("{refused:?} at {now_ms} is refused as decided");
            };
            assert_eq!(denied.reason, Reason::RequestNotPending);
        }
    }

    #[test]
    fn a_replayed_code_revokes_its_grant() {
        let redeemed = AuthorizationCode {
            redeemed_ms: Some(5),
            ..code()
        };
        let refusal = may_redeem(
            Some(&redeemed),
            "music",
            VERIFIER,
            "https://music.example/callback",
            6,
        )
        .unwrap_err();
        assert_eq!(refusal.denied.reason, Reason::CodeReused);
        assert_eq!(
            refusal.ends_grant,
            Some(("grt_1".into(), GrantState::Revoked))
        );
    }

    #[test]
    fn only_exact_https_redirect_uris_register() {
        assert_eq!(redirect_uri_problem("https://music.example/cb?app=1"), None);
        assert_eq!(redirect_uri_problem("https://localhost:8443/cb"), None);
        assert_eq!(redirect_uri_problem("https://[::1]:8443/cb"), None);
        for bad in [
            "http://music.example/cb",
            "https://music.example/cb#top",
            "https:///cb",
            "https://user@evil.example/cb",
            "https://music.example/c b",
            "javascript:alert(1)",
            "https://*/cb",
            "https://a.example\\evil.example/cb",
            "https://a.example;script-src/cb",
            "https://bücher.example/cb",
            "https://music.example:99999x/cb",
        ] {
            assert!(redirect_uri_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn requests_name_a_registered_redirect_and_verifiers_are_unreserved_characters() {
        let registered = ["https://music.example/cb".to_string()];
        assert!(redirect_registered(&registered, "https://music.example/cb").is_ok());
        let moved = redirect_registered(&registered, "https://music.example/cb?x=1");
        assert_eq!(moved.unwrap_err().reason, Reason::RedirectUriMismatch);
        assert_eq!(verifier_problem(VERIFIER), None);
        for bad in [
            "x".repeat(42),
            "x".repeat(129),
            format!("{}+", "x".repeat(43)),
        ] {
            assert!(verifier_problem(&bad).is_some(), "{bad}");
            assert!(!verifier_matches(&bad, &s256(&bad)), "{bad}");
        }
    }

    #[test]
    fn challenges_are_s256_and_states_printable() {
        assert_eq!(challenge_problem("S256", &s256(VERIFIER)), None);
        assert!(challenge_problem("plain", &s256(VERIFIER)).is_some());
        assert!(challenge_problem("S256", "too-short").is_some());
        assert_eq!(state_problem("abc-123"), None);
        assert!(state_problem("").is_some());
        assert!(state_problem("has space").is_some());
    }

    #[test]
    fn a_pushed_request_opens_once_for_its_client_before_it_expires() {
        let pushed = PushedRequest {
            partner_id: "music".into(),
            feature: "share".into(),
            coverage: crate::model::Coverage::PartnerStarted,
            thread_ids: Vec::new(),
            include_history: false,
            purpose: "share tracks".into(),
            redirect_uri: "https://music.example/callback".into(),
            state: "s".into(),
            code_challenge: s256(VERIFIER),
            expires_ms: 100,
            access_request_id: None,
        };
        assert!(may_open(Some(&pushed), "music", 99).is_ok());
        let refused = |p: Option<&PushedRequest>, client: &str, at: i64| {
            may_open(p, client, at).unwrap_err().reason
        };
        assert_eq!(
            refused(Some(&pushed), "video", 0),
            Reason::RequestUriInvalid
        );
        assert_eq!(
            refused(Some(&pushed), "music", 100),
            Reason::RequestUriInvalid
        );
        let opened = PushedRequest {
            access_request_id: Some("req_1".into()),
            ..pushed
        };
        assert_eq!(
            refused(Some(&opened), "music", 0),
            Reason::RequestUriInvalid
        );
        assert_eq!(refused(None, "music", 0), Reason::RequestUriInvalid);
    }

    #[test]
    fn only_local_paths_are_returned_to_after_sign_in() {
        assert!(is_local_path("/authorize?client_id=music"));
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "",
        ] {
            assert!(!is_local_path(bad), "{bad}");
        }
    }
}
