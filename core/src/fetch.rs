//! Bounded JWKS fetching: HTTPS (or plain http to loopback only), connect and total
//! timeouts, no redirects, no proxies, a body cap.

use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

use crate::error::AuthError;

/// Largest JWKS body accepted.
pub const MAX_JWKS_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FetchLimits {
    pub total: Duration,
    pub connect: Duration,
}

impl FetchLimits {
    pub fn from_ms(total_ms: u64, connect_ms: u64) -> Self {
        FetchLimits {
            total: Duration::from_millis(total_ms),
            connect: Duration::from_millis(connect_ms),
        }
    }
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits::from_ms(
            crate::config::defaults::HTTP_TIMEOUT as u64,
            crate::config::defaults::HTTP_CONNECT_TIMEOUT as u64,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub body: Vec<u8>,
    /// `Cache-Control: max-age`, in seconds, when the server sent one.
    pub max_age: Option<u64>,
}

/// Anything that can get a JWKS document; the real one is [`HttpFetcher`], tests may
/// substitute their own. Errors are reasons for humans (no body content).
pub trait Fetcher {
    fn fetch(&self, url: &str, limits: FetchLimits) -> Result<Fetched, String>;
}

pub struct HttpFetcher;

impl Fetcher for HttpFetcher {
    fn fetch(&self, url: &str, limits: FetchLimits) -> Result<Fetched, String> {
        let mut response = agent(limits)
            .get(url)
            .header("Accept", "application/json")
            .call()
            .map_err(describe)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(format!(
                "HTTP {} (redirects are not followed)",
                status.as_u16()
            ));
        }
        if status != 200 {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let max_age = response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        let mut body = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_JWKS_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading the body failed: {e}"))?;
        if body.len() as u64 > MAX_JWKS_BYTES {
            return Err(format!("the body is larger than {MAX_JWKS_BYTES} bytes"));
        }
        Ok(Fetched { body, max_age })
    }
}

/// The HTTP client of every request the extension makes: total and connect timeouts, no
/// redirects, no proxies (environment variables ignored), statuses returned as answers.
pub fn agent(limits: FetchLimits) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(limits.total))
        .timeout_connect(Some(limits.connect))
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .max_response_header_size(16 * 1024)
        .user_agent(concat!("outseta_auth/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn describe(e: ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Io(io) => format!("connection failed: {}", io.kind()),
        ureq::Error::HostNotFound => "host not found".into(),
        other => other.to_string(),
    }
}

/// `max-age=N` from a Cache-Control value; `no-store`/`no-cache` count as 0.
pub fn parse_max_age(value: &str) -> Option<u64> {
    let mut out = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            out = v.trim_matches('"').parse().ok();
        }
    }
    out
}

/// Longest JWKS or profile URL accepted (the shared store keeps URLs whole in slots of
/// this size; a longer one is refused when set, never truncated).
pub const MAX_URL_BYTES: usize = 1024;

/// Check a JWKS URL before any request: at most [`MAX_URL_BYTES`], `https://` anywhere,
/// `http://` only to loopback.
pub fn validate_url(url: &str, setting: &'static str) -> Result<(), AuthError> {
    if url.len() > MAX_URL_BYTES {
        return Err(AuthError::config(
            setting,
            format!(
                "the URL is {} bytes long; at most {MAX_URL_BYTES} are accepted",
                url.len()
            ),
        ));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| AuthError::config(setting, format!("\"{url}\" is not an absolute URL")))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(AuthError::config(
            setting,
            "URLs with user info are not accepted",
        ));
    }
    let host = host_of(authority);
    if host.is_empty() {
        return Err(AuthError::config(setting, format!("\"{url}\" has no host")));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err(AuthError::config(
            setting,
            format!("plain http is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost), not \"{host}\"; use https"),
        )),
        other => Err(AuthError::config(setting, format!("unsupported URL scheme \"{other}\""))),
    }
}

fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The JWKS URL for an Outseta domain such as `myapp.outseta.com`.
pub fn domain_url(domain: &str) -> Result<String, AuthError> {
    const SETTING: &str = "outseta_auth.domain";
    let d = domain.trim().trim_end_matches('/');
    let ok = !d.is_empty()
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':');
    if !ok {
        return Err(AuthError::config(
            SETTING,
            format!("\"{domain}\" is not a host name; write it like myapp.outseta.com, without https:// or a path"),
        ));
    }
    let url = format!("https://{d}/.well-known/jwks");
    validate_url(&url, SETTING)?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rules() {
        let s = "outseta_auth.jwks_url";
        for ok in [
            "https://a.outseta.com/.well-known/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://127.9.9.9/jwks",
            "http://localhost/jwks",
            "http://[::1]:99/jwks",
        ] {
            assert!(validate_url(ok, s).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/jwks",
            "http://10.0.0.1/jwks",
            "http://127.0.0.1.evil.com/jwks",
            "http://localhost.evil.com/x",
            "http://evil@127.0.0.1/",
            "ftp://127.0.0.1/",
            "file:///etc/passwd",
            "127.0.0.1/jwks",
            "https:///x",
        ] {
            let e = validate_url(bad, s).unwrap_err();
            assert_eq!(e.code(), "config_error", "{bad}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(
            domain_url("myapp.outseta.com").unwrap(),
            "https://myapp.outseta.com/.well-known/jwks"
        );
        assert!(domain_url("https://myapp.outseta.com").is_err());
        assert!(domain_url("a.com/x").is_err());
        assert!(domain_url("").is_err());
        assert!(domain_url(&"a".repeat(1100)).is_err());
    }

    #[test]
    fn over_long_urls_are_refused_not_truncated() {
        let s = "outseta_auth.jwks_url";
        let base = "https://a.outseta.com/";
        let fits = format!("{base}{}", "x".repeat(MAX_URL_BYTES - base.len()));
        assert!(validate_url(&fits, s).is_ok());
        let e = validate_url(&format!("{fits}y"), s).unwrap_err();
        assert_eq!(e.code(), "config_error");
        assert!(e.to_string().contains("1025 bytes"), "{e}");
    }

    #[test]
    fn max_age() {
        assert_eq!(parse_max_age("public, max-age=600"), Some(600));
        assert_eq!(parse_max_age("no-store"), Some(0));
        assert_eq!(parse_max_age("public"), None);
    }
}
