//! The cloud's addresses: the WebSocket endpoint and the REST base. TLS is required except for a
//! loopback host (the tests' peer), and the REST base follows the endpoint unless given.

use std::net::IpAddr;

pub use url::Url;

/// Whether `url`'s host is this machine.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// `wss://…`, or `ws://…` on a loopback host.
pub fn parse_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("[cloud] endpoint '{text}': {e}"))?;
    match url.scheme() {
        "wss" => Ok(url),
        "ws" if is_loopback(&url) => Ok(url),
        "ws" => Err(format!(
            "[cloud] endpoint '{text}': ws:// is only allowed for a loopback host; use wss://"
        )),
        other => Err(format!(
            "[cloud] endpoint '{text}': the scheme must be wss (not {other})"
        )),
    }
}

/// `https://…`, or `http://…` on a loopback host.
pub fn parse_api_base(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("[cloud] api_base '{text}': {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "[cloud] api_base '{text}': http:// is only allowed for a loopback host; use https://"
        )),
        other => Err(format!(
            "[cloud] api_base '{text}': the scheme must be https (not {other})"
        )),
    }
}

/// The REST base of an endpoint: same host and port, `https` for `wss` (`http` for `ws`), no
/// path, query or credentials.
pub fn derive_api_base(endpoint: &Url) -> Option<Url> {
    let mut base = endpoint.clone();
    let scheme = if endpoint.scheme() == "ws" {
        "http"
    } else {
        "https"
    };
    base.set_scheme(scheme).ok()?;
    base.set_path("/");
    base.set_query(None);
    base.set_fragment(None);
    base.set_username("").ok()?;
    base.set_password(None).ok()?;
    Some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_schemes_are_for_loopback_only() {
        assert!(parse_endpoint("ws://127.0.0.1:9/x").is_ok());
        assert!(parse_endpoint("ws://[::1]:9/x").is_ok());
        assert!(parse_endpoint("ws://localhost/x").is_ok());
        assert!(parse_endpoint("ws://cloud.example/x").is_err());
        assert!(parse_endpoint("https://cloud.example/x").is_err());
        assert!(parse_api_base("http://cloud.example/").is_err());
        let base = derive_api_base(&parse_endpoint("ws://[::1]:9/v1/connect").unwrap()).unwrap();
        assert_eq!(base.as_str(), "http://[::1]:9/");
    }
}
