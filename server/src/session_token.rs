//! Human session tokens, and the cookie that carries them.
//!
//! A token is `abs_<org_id>.<secret>`: 32 random bytes (base64url) of secret, and the
//! organisation in clear, because every query runs under row-level security scoped to an
//! organisation, so the server must know which one before it can even look the session up.
//! Only SHA-256 of the whole token is stored (a 256-bit random secret needs no slow hash, as
//! with API keys). The same token works as `Authorization: Bearer` (tools) and as the
//! `atlasbridge_session` cookie (browsers: HttpOnly, SameSite=Strict, Secure unless configured
//! off for plain-HTTP loopback use).

use atlasbridge_protocol::hash::sha256_hex;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The prefix that makes a session token recognisable (to secret scanners, and to tell it from
/// a runtime's JWT).
pub const SESSION_PREFIX: &str = "abs_";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "atlasbridge_session";

/// The header a cookie-authenticated state-changing request must carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("no randomness for a session: {0}")]
pub struct RandomnessError(String);

/// 32 random bytes, base64url.
pub fn random_secret() -> Result<String, RandomnessError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| RandomnessError(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(secret))
}

/// A session token of `org_id`, fresh.
pub fn new_token(org_id: &str) -> Result<String, RandomnessError> {
    Ok(format!("{SESSION_PREFIX}{org_id}.{}", random_secret()?))
}

/// The organisation a presented token names, when it is shaped like ours.
pub fn org_of(token: &str) -> Option<&str> {
    let (org, secret) = token.strip_prefix(SESSION_PREFIX)?.split_once('.')?;
    let org_ok = !org.is_empty()
        && org.len() <= 63
        && org
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (org_ok && secret_ok).then_some(org)
}

/// What is stored of a token.
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// Where a request's session token came from: the CSRF defence applies to cookies only, since
/// a browser never adds an `Authorization` header on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// `Authorization: Bearer`.
    Bearer,
    /// The session cookie.
    Cookie,
}

/// The session token a request presents, bearer first.
pub fn presented(headers: &HeaderMap) -> Option<(String, Carrier)> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| token.starts_with(SESSION_PREFIX));
    if let Some(token) = bearer {
        return Some((token.to_owned(), Carrier::Bearer));
    }
    cookie(headers, SESSION_COOKIE).map(|token| (token, Carrier::Cookie))
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// A `Set-Cookie` value. `same_site` is `Strict` for the session; the short-lived OIDC login
/// binding needs `Lax`, because it must come back on the identity provider's redirect, a
/// cross-site navigation.
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age_s: u64,
    secure: bool,
    same_site: &str,
) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age_s}{secure}")
}

/// Compares two secrets in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_token_names_its_org_and_malformed_ones_name_none() {
        let token = new_token("org-a").unwrap();
        assert_eq!(org_of(&token), Some("org-a"));
        for bad in [
            "",
            "abs_",
            "abs_org-a",
            "abs_org-a.short",
            "abk_org-a.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "abs_Org.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "abs_org-a.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert_eq!(org_of(bad), None, "{bad}");
        }
        assert_ne!(token_hash(&token), token_hash(&new_token("org-a").unwrap()));
    }

    #[test]
    fn bearer_wins_over_the_cookie_and_cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; atlasbridge_session=abs_a.x; other=1"),
        );
        assert_eq!(
            presented(&headers),
            Some(("abs_a.x".to_owned(), Carrier::Cookie))
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abs_b.y"),
        );
        assert_eq!(
            presented(&headers),
            Some(("abs_b.y".to_owned(), Carrier::Bearer))
        );
        // A runtime's JWT is not a session token.
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer eyJhbGciOi"),
        );
        assert_eq!(presented(&headers).map(|(_, c)| c), Some(Carrier::Cookie));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_when_asked() {
        let cookie = set_cookie(SESSION_COOKIE, "v", 60, true, "Strict");
        assert_eq!(
            cookie,
            "atlasbridge_session=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert!(!set_cookie(SESSION_COOKIE, "v", 60, false, "Strict").contains("Secure"));
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
