//! Outseta's second verification method: its profile endpoint,
//! `GET https://<domain>/api/v1/profile?fields=*` with `Authorization: Bearer <token>`,
//! which answers only for a token Outseta still accepts, with the person's current profile
//! (custom properties included).
//!
//! Here: the URL rules, one bounded request, the reading of its answer, and a per-token
//! cache with an explicit clock. Who performs the request (the backend, or the cluster's
//! background worker) is the caller's business.

use std::io::Read;
use std::rc::Rc;
use std::sync::Arc;

use serde_json::Value;

use crate::bounded::Bounded;
use crate::error::AuthError;
use crate::fetch::{validate_url, FetchLimits};

pub const SETTING: &str = "outseta_auth.profile_url";
/// Largest profile answer accepted.
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;
pub const PROFILE_CACHE_ENTRIES: usize = 256;
pub const PROFILE_CACHE_BYTES: usize = 4 * 1024 * 1024;
/// How long a failure to reach the endpoint is remembered (at most the TTL), so that a
/// per-row call during an outage fails at once instead of waiting for a timeout per row.
pub const FAILURE_MEMORY_SECS: f64 = 5.0;

/// The profile URL: `outseta_auth.profile_url`, else derived from `outseta_auth.domain`.
pub fn resolve_url(profile_url: &str, domain: &str) -> Result<String, AuthError> {
    let url = profile_url.trim();
    if !url.is_empty() {
        validate_url(url, SETTING)?;
        return Ok(url.to_string());
    }
    let domain = domain.trim().trim_end_matches('/');
    if domain.is_empty() {
        return Err(AuthError::config(
            SETTING,
            "no profile endpoint is configured: set outseta_auth.domain (the endpoint is then https://<domain>/api/v1/profile?fields=*) or outseta_auth.profile_url",
        ));
    }
    // Same host rules as the JWKS URL derived from the domain.
    crate::fetch::domain_url(domain)?;
    Ok(format!("https://{domain}/api/v1/profile?fields=*"))
}

/// What the endpoint answered: the status, and the body when the status is 200.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One bounded request: total and connect timeouts, no redirects, no proxies, body cap.
/// The error is a reason for humans; it never contains the token.
pub fn fetch(url: &str, token: &str, limits: FetchLimits) -> Result<Response, String> {
    let mut response = crate::fetch::agent(limits)
        .get(url)
        .header("Accept", "application/json")
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .map_err(|e| match e {
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            ureq::Error::Io(io) => format!("connection failed: {}", io.kind()),
            ureq::Error::HostNotFound => "host not found".into(),
            _ => "the request failed".into(),
        })?;
    let status = response.status().as_u16();
    if (300..400).contains(&status) {
        return Err(format!("HTTP {status} (redirects are not followed)"));
    }
    let mut body = Vec::new();
    if status == 200 {
        response
            .body_mut()
            .as_reader()
            .take(MAX_PROFILE_BYTES as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading the body failed: {}", e.kind()))?;
        if body.len() > MAX_PROFILE_BYTES {
            return Err(format!("the body is larger than {MAX_PROFILE_BYTES} bytes"));
        }
    }
    Ok(Response { status, body })
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Read the endpoint's answer for the token of person `sub`: the profile as compact JSON
/// text, a refusal (401/403), or why it is unusable.
pub fn interpret(
    url: &str,
    sub: Option<&str>,
    answer: Result<Response, String>,
) -> Result<Arc<str>, AuthError> {
    let unavailable = |cause: String| AuthError::ProfileUnavailable {
        url: url.to_string(),
        cause,
    };
    let r = answer.map_err(unavailable)?;
    match r.status {
        200 => {}
        401 | 403 => return Err(AuthError::Revoked { status: r.status }),
        s => return Err(unavailable(format!("HTTP {s}"))),
    }
    let v: Value = serde_json::from_slice(&r.body)
        .map_err(|_| unavailable("the answer is not JSON".into()))?;
    let Value::Object(o) = &v else {
        return Err(unavailable("the answer is not a JSON object".into()));
    };
    if has_nul(&v) {
        return Err(unavailable("the answer contains a NUL character".into()));
    }
    if let (Some(sub), Some(uid)) = (sub, o.get("Uid").and_then(Value::as_str)) {
        if sub != uid {
            return Err(unavailable(
                "the profile's Uid is not the token's sub (another person's profile)".into(),
            ));
        }
    }
    Ok(Arc::from(v.to_string()))
}

struct Entry {
    result: Result<Arc<str>, AuthError>,
    at: f64,
}

/// Profiles (and refusals) of one backend, per token, for `ttl` seconds; failures to reach
/// the endpoint for at most [`FAILURE_MEMORY_SECS`]. Bounded by count and bytes.
pub struct ProfileCache {
    url: String,
    cache: Bounded<Rc<str>, Entry>,
    /// Requests made (what a test or a status view counts).
    pub fetches: u64,
}

impl Default for ProfileCache {
    fn default() -> Self {
        ProfileCache {
            url: String::new(),
            cache: Bounded::new(PROFILE_CACHE_ENTRIES, PROFILE_CACHE_BYTES),
            fetches: 0,
        }
    }
}

impl ProfileCache {
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    fn fresh(e: &Entry, now: f64, ttl: f64) -> bool {
        let keep = match &e.result {
            Err(AuthError::ProfileUnavailable { .. }) => ttl.min(FAILURE_MEMORY_SECS),
            _ => ttl,
        };
        // A clock that went back makes an entry stale, never fresher.
        now >= e.at && now - e.at < keep
    }

    /// The cached answer for `token` at `url`, if still fresh.
    pub fn lookup(
        &mut self,
        url: &str,
        token: &str,
        now: f64,
        ttl: f64,
    ) -> Option<Result<Arc<str>, AuthError>> {
        self.lookup_at(url, token, now, ttl).map(|(r, _)| r)
    }

    /// As [`ProfileCache::lookup`], with the time the answer was given.
    pub fn lookup_at(
        &mut self,
        url: &str,
        token: &str,
        now: f64,
        ttl: f64,
    ) -> Option<(Result<Arc<str>, AuthError>, f64)> {
        if self.url != url {
            self.clear();
            self.url = url.to_string();
            return None;
        }
        let e = self.cache.get(token)?;
        Self::fresh(e, now, ttl).then(|| (e.result.clone(), e.at))
    }

    pub fn store(&mut self, token: &str, now: f64, result: Result<Arc<str>, AuthError>) {
        let cost = token.len() + result.as_ref().map_or(64, |p| p.len());
        self.cache
            .insert(Rc::from(token), Entry { result, at: now }, cost);
    }

    /// The profile for `token` (of person `sub`): from the cache while fresh, else by one
    /// call of `ask`, whose answer is cached.
    pub fn get(
        &mut self,
        url: &str,
        token: &str,
        sub: Option<&str>,
        now: f64,
        ttl: f64,
        ask: impl FnOnce() -> Result<Response, String>,
    ) -> Result<Arc<str>, AuthError> {
        if let Some(hit) = self.lookup(url, token, now, ttl) {
            return hit;
        }
        self.record(url, token, sub, now, ask())
    }

    /// Read and cache the endpoint's `answer` for `token` (after a [`ProfileCache::lookup`]
    /// missed, for callers that make the request themselves).
    pub fn record(
        &mut self,
        url: &str,
        token: &str,
        sub: Option<&str>,
        now: f64,
        answer: Result<Response, String>,
    ) -> Result<Arc<str>, AuthError> {
        if self.url != url {
            self.clear();
            self.url = url.to_string();
        }
        self.fetches += 1;
        let result = interpret(url, sub, answer);
        self.store(token, now, result.clone());
        result
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// The endpoint's definitive answers (200, 401, 403) per URL and token, kept by the one
/// process that asks for the whole cluster (the background worker), so that a token is
/// asked about once per TTL however many connections use it. An answer is reused while it
/// is younger than the asker's TTL; its age goes back with it, so that the asker's own
/// cache keeps it only for the rest of that TTL. Other statuses and failures are not kept.
/// Bounded like [`ProfileCache`].
pub struct AnswerCache {
    /// Keyed by URL and token, one after the other (a URL has no newline).
    cache: Bounded<Rc<str>, (f64, Response)>,
}

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache {
            cache: Bounded::new(PROFILE_CACHE_ENTRIES, PROFILE_CACHE_BYTES),
        }
    }
}

fn answer_key(url: &str, token: &str) -> String {
    format!("{url}\n{token}")
}

impl AnswerCache {
    /// A fresh answer for `token` at `url` and its age in seconds.
    pub fn lookup(&self, url: &str, token: &str, now: f64, ttl: f64) -> Option<(Response, f64)> {
        let (at, r) = self.cache.get(answer_key(url, token).as_str())?;
        // A clock that went back makes an entry stale, never fresher.
        (now >= *at && now - at < ttl).then(|| (r.clone(), now - at))
    }

    pub fn store(&mut self, url: &str, token: &str, now: f64, r: &Response) {
        if !matches!(r.status, 200 | 401 | 403) {
            return;
        }
        let key = answer_key(url, token);
        let cost = key.len() + r.body.len();
        self.cache.insert(Rc::from(key), (now, r.clone()), cost);
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const URL: &str = "https://a.outseta.com/api/v1/profile?fields=*";

    fn ok(body: &str) -> Result<Response, String> {
        Ok(Response {
            status: 200,
            body: body.as_bytes().to_vec(),
        })
    }

    fn answer(status: u16, body: &str) -> Response {
        Response {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_workers_answers_are_kept_for_the_askers_ttl_with_their_age() {
        let mut c = AnswerCache::default();
        let r = answer(200, r#"{"Uid":"u1"}"#);
        c.store(URL, "t1", 100.0, &r);
        assert_eq!(c.lookup(URL, "t1", 100.0, 60.0), Some((r.clone(), 0.0)));
        assert_eq!(c.lookup(URL, "t1", 159.5, 60.0), Some((r.clone(), 59.5)));
        assert_eq!(c.lookup(URL, "t1", 160.0, 60.0), None, "TTL over");
        assert_eq!(
            c.lookup(URL, "t1", 110.0, 5.0),
            None,
            "the asker's TTL counts"
        );
        assert_eq!(c.lookup(URL, "t1", 99.0, 60.0), None, "clock went back");
        assert_eq!(c.lookup(URL, "t2", 100.0, 60.0), None, "per token");
        assert_eq!(c.lookup("https://b/p", "t1", 100.0, 60.0), None, "per URL");
        // A refusal is kept (revocation is an answer); a newer answer replaces the old.
        c.store(URL, "t1", 120.0, &answer(401, ""));
        assert_eq!(c.lookup(URL, "t1", 121.0, 60.0).unwrap().0.status, 401);
        assert_eq!(c.len(), 1);
        // Other statuses are not kept: the next asker asks again.
        for status in [500, 503, 302, 404] {
            c.store(URL, "t3", 100.0, &answer(status, "x"));
            assert_eq!(c.lookup(URL, "t3", 100.0, 60.0), None, "{status}");
        }
    }

    #[test]
    fn the_workers_answers_are_bounded() {
        let mut c = AnswerCache::default();
        for i in 0..(PROFILE_CACHE_ENTRIES + 10) {
            c.store(URL, &format!("t{i}"), 1.0, &answer(200, "{}"));
        }
        assert_eq!(c.len(), PROFILE_CACHE_ENTRIES);
        assert!(
            c.lookup(URL, "t0", 1.0, 60.0).is_none(),
            "the oldest went first"
        );
        let last = format!("t{}", PROFILE_CACHE_ENTRIES + 9);
        assert!(c.lookup(URL, &last, 1.0, 60.0).is_some());
        let big = "x".repeat(MAX_PROFILE_BYTES);
        for i in 0..100 {
            c.store(URL, &format!("b{i}"), 1.0, &answer(200, &big));
        }
        assert!(c.cache.cost() <= PROFILE_CACHE_BYTES);
        assert!(c.len() < 100);
    }

    #[test]
    fn urls() {
        assert_eq!(
            resolve_url("", "a.outseta.com").unwrap(),
            "https://a.outseta.com/api/v1/profile?fields=*"
        );
        assert_eq!(
            resolve_url("http://127.0.0.1:9/api/v1/profile", "a.outseta.com").unwrap(),
            "http://127.0.0.1:9/api/v1/profile"
        );
        for (url, domain) in [
            ("", ""),
            ("http://example.com/api/v1/profile", ""),
            ("", "https://a.outseta.com"),
        ] {
            assert_eq!(resolve_url(url, domain).unwrap_err().code(), "config_error");
        }
    }

    #[test]
    fn answers() {
        let p = interpret(
            URL,
            Some("p1"),
            ok(r#"{"Uid": "p1", "FavoriteColor": "teal"}"#),
        )
        .unwrap();
        assert_eq!(&*p, r#"{"FavoriteColor":"teal","Uid":"p1"}"#);
        for status in [401, 403] {
            let e = interpret(
                URL,
                Some("p1"),
                Ok(Response {
                    status,
                    body: vec![],
                }),
            )
            .unwrap_err();
            assert_eq!(e.code(), "revoked");
            assert_eq!(e.class(), crate::ErrorClass::Token);
        }
        for bad in [
            Ok(Response {
                status: 500,
                body: vec![],
            }),
            Ok(Response {
                status: 404,
                body: vec![],
            }),
            Err("timed out".to_string()),
            ok("[1]"),
            ok("not json"),
            ok(r#"{"Uid": "p2"}"#),
            ok(r#"{"Uid": "p1", "x": "a\u0000b"}"#),
        ] {
            let e = interpret(URL, Some("p1"), bad.clone()).unwrap_err();
            assert_eq!(e.code(), "profile_unavailable", "{bad:?}");
            assert_eq!(e.class(), crate::ErrorClass::Jwks);
        }
    }

    #[test]
    fn cached_per_token_for_the_ttl() {
        let mut c = ProfileCache::default();
        let calls = Cell::new(0);
        let ask = || {
            calls.set(calls.get() + 1);
            ok(r#"{"Uid": "p1"}"#)
        };
        let t0 = 1_000_000.0;
        for dt in [0.0, 1.0, 59.9] {
            c.get(URL, "tok1", Some("p1"), t0 + dt, 60.0, ask).unwrap();
        }
        assert_eq!(calls.get(), 1);
        // Another token is another entry.
        c.get(URL, "tok2", Some("p1"), t0, 60.0, ask).unwrap();
        assert_eq!(calls.get(), 2);
        // Past the TTL: asked again. A clock that went back: asked again.
        c.get(URL, "tok1", Some("p1"), t0 + 60.0, 60.0, ask)
            .unwrap();
        c.get(URL, "tok1", Some("p1"), t0 - 10.0, 60.0, ask)
            .unwrap();
        assert_eq!(calls.get(), 4);
        // Another URL: nothing cached is served.
        c.get(
            "http://127.0.0.1/p",
            "tok1",
            Some("p1"),
            t0 - 10.0,
            60.0,
            ask,
        )
        .unwrap();
        assert_eq!(calls.get(), 5);
        assert_eq!(c.fetches, 5);
    }

    #[test]
    fn refusals_last_the_ttl_failures_a_few_seconds() {
        let mut c = ProfileCache::default();
        let t0 = 1_000_000.0;
        let revoked = || {
            Ok(Response {
                status: 401,
                body: vec![],
            })
        };
        assert_eq!(
            c.get(URL, "t", None, t0, 60.0, revoked).unwrap_err().code(),
            "revoked"
        );
        let never = || -> Result<Response, String> { panic!("must come from the cache") };
        assert_eq!(
            c.get(URL, "t", None, t0 + 30.0, 60.0, never)
                .unwrap_err()
                .code(),
            "revoked"
        );

        let down = || Err("connection failed: ConnectionRefused".to_string());
        let e = c.get(URL, "u", None, t0, 60.0, down).unwrap_err();
        assert_eq!(e.code(), "profile_unavailable");
        assert!(c.get(URL, "u", None, t0 + 4.0, 60.0, never).is_err());
        // After FAILURE_MEMORY_SECS the endpoint is asked again.
        c.get(URL, "u", None, t0 + FAILURE_MEMORY_SECS, 60.0, || ok("{}"))
            .unwrap();
    }

    #[test]
    fn bounded() {
        let mut c = ProfileCache::default();
        let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(60_000));
        for i in 0..1000 {
            let _ = c.get(URL, &format!("t{i}"), None, 0.0, 60.0, || ok(&big));
        }
        assert!(c.cache.cost() <= PROFILE_CACHE_BYTES);
        assert!(c.len() <= PROFILE_CACHE_ENTRIES);
        assert!(!c.is_empty());
        for i in 0..1000 {
            let _ = c.get(URL, &format!("s{i}"), None, 0.0, 60.0, || ok("{}"));
        }
        assert_eq!(c.len(), PROFILE_CACHE_ENTRIES);
    }
}
