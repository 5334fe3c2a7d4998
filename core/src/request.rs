//! Where a request's token may come from, and picking it out of PostgREST's per-request JSON
//! settings (`request.cookies`, `request.headers`).
//!
//! Those settings are ordinary placeholders: any role can set them to anything, of any size.
//! So the text is measured before it is read, refused over [`MAX_REQUEST_JSON_BYTES`], and
//! searched for one member without building a JSON tree: every allocation here is bounded
//! by the cap.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer;

use crate::error::AuthError;
use crate::policy::comma_list;

/// Largest `request.cookies` / `request.headers` text searched for a token. Real HTTP
/// servers (PostgREST included) refuse requests whose headers are a fraction of this.
pub const MAX_REQUEST_JSON_BYTES: usize = 64 * 1024;

/// One place the accessors look for the token (`outseta_auth.token_sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `outseta_auth.token`.
    Setting,
    /// The cookie `outseta_auth.token_cookie` in `request.cookies`.
    Cookie,
    /// The header `outseta_auth.token_header` in `request.headers`.
    Header,
}

/// Parse `outseta_auth.token_sources`: a non-empty comma list of `setting`, `cookie`,
/// `header`, each at most once.
pub fn parse_token_sources(text: &str) -> Result<Vec<TokenSource>, AuthError> {
    const SETTING: &str = "outseta_auth.token_sources";
    let mut out = Vec::new();
    for name in comma_list(text) {
        let s = match name.as_str() {
            "setting" => TokenSource::Setting,
            "cookie" => TokenSource::Cookie,
            "header" => TokenSource::Header,
            other => {
                return Err(AuthError::config(
                    SETTING,
                    format!(
                        "unknown source \"{}\"; use a comma list of setting, cookie, header",
                        crate::error::printable(other)
                    ),
                ))
            }
        };
        if out.contains(&s) {
            return Err(AuthError::config(
                SETTING,
                format!("\"{name}\" is listed twice"),
            ));
        }
        out.push(s);
    }
    if out.is_empty() {
        return Err(AuthError::config(
            SETTING,
            "the list is empty; the default is setting,cookie,header",
        ));
    }
    Ok(out)
}

/// The string value of the top-level member `key` of the JSON object `text`.
///
/// `Ok(None)` when `text` is not a JSON object, has no such member, or the member is not a
/// string (the request is then anonymous, as with no cookie at all). `Err` (`too_large`)
/// when `text` is over the cap; nothing is read then. A member given twice with different
/// values is `None` too: which one is genuine cannot be told (a cookie "tossed" by a sibling
/// subdomain arrives beside the real one), so neither carries identity.
pub fn json_member(
    text: &[u8],
    key: &str,
    setting: &'static str,
) -> Result<Option<String>, AuthError> {
    let [found] = json_members(text, [key], setting)?;
    Ok(found)
}

/// As [`json_member`], for several members in one pass.
pub fn json_members<const N: usize>(
    text: &[u8],
    keys: [&str; N],
    setting: &'static str,
) -> Result<[Option<String>; N], AuthError> {
    Ok(match members(text, keys, setting)? {
        Some((found, _)) => found,
        None => std::array::from_fn(|_| None),
    })
}

/// As [`json_members`], but `None` when any of the members is given twice with different
/// values (the CSRF rule refuses such a request rather than guess).
pub fn json_members_unless_conflict<const N: usize>(
    text: &[u8],
    keys: [&str; N],
    setting: &'static str,
) -> Result<Option<[Option<String>; N]>, AuthError> {
    Ok(match members(text, keys, setting)? {
        Some((found, conflict)) if !conflict.contains(&true) => Some(found),
        Some(_) => None,
        None => Some(std::array::from_fn(|_| None)),
    })
}

/// The members (a conflicting one as `None`) and which conflicted; `None` when `text` is not
/// a JSON object.
#[allow(clippy::type_complexity)]
fn members<const N: usize>(
    text: &[u8],
    keys: [&str; N],
    setting: &'static str,
) -> Result<Option<([Option<String>; N], [bool; N])>, AuthError> {
    if text.len() > MAX_REQUEST_JSON_BYTES {
        return Err(AuthError::RequestTooLarge {
            setting,
            size: text.len(),
            max: MAX_REQUEST_JSON_BYTES,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let found = match (MemberSeed { keys }).deserialize(&mut de) {
        Ok(found) => found,
        Err(_) => return Ok(None),
    };
    if de.end().is_err() {
        return Ok(None);
    }
    Ok(Some(found))
}

/// What the CSRF rule reads of a request: PostgREST's `request.method` and four headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct CookieRequest<'a> {
    pub method: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub host: Option<&'a str>,
    /// `X-Forwarded-Proto`, as the reverse proxy in front of PostgREST sets it.
    pub forwarded_proto: Option<&'a str>,
}

/// Whether the cookie may carry identity for this request (a CSRF defence).
///
/// A page on another origin can make a browser send its cookies (a form POST, an image,
/// a credentialed `fetch`), but it cannot set or change `Origin`, `Host` or `Sec-Fetch-Site`
/// (forbidden request headers, which no CORS preflight can allow); nothing a page script
/// can set (`X-Forwarded-Host`, ...) ever widens the rule:
///
/// - `Sec-Fetch-Site: cross-site`: never.
/// - An `Origin` listed in `allowed_origins` (`outseta_auth.cookie_origins`): yes.
/// - `Sec-Fetch-Site: same-site` (a sibling subdomain, another port): only as listed above.
/// - Otherwise the request must be same-origin: an `Origin` whose host and port equal the
///   request's own `Host` (a reverse proxy that rewrites `Host` must pass it through, or
///   list the public origin), and whose scheme is the one `X-Forwarded-Proto` names when the
///   proxy sets it; or no `Origin` (a browser sends none on a same-origin `GET`), but for a
///   method that changes data (anything but `GET`, `HEAD`, `OPTIONS`) only with
///   `Sec-Fetch-Site: same-origin`. `Origin: null` never matches. Clients that are not
///   browsers send the token in the header source instead.
pub fn cookie_allowed(r: &CookieRequest, allowed_origins: &[String]) -> bool {
    let site = r.sec_fetch_site.map(str::trim).unwrap_or("");
    if site.eq_ignore_ascii_case("cross-site") {
        return false;
    }
    let origin = r.origin.map(|o| o.trim().trim_end_matches('/'));
    if let Some(o) = origin {
        if allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(o)) {
            return true;
        }
    }
    if site.eq_ignore_ascii_case("same-site") {
        return false;
    }
    let changes_data = r.method.map(str::trim).is_some_and(|m| {
        !m.is_empty()
            && !["GET", "HEAD", "OPTIONS"]
                .iter()
                .any(|s| m.eq_ignore_ascii_case(s))
    });
    match origin {
        None => !changes_data || site.eq_ignore_ascii_case("same-origin"),
        Some(o) => {
            r.host.is_some_and(|h| same_authority(o, h)) && scheme_agrees(o, r.forwarded_proto)
        }
    }
}

/// Whether the origin's scheme is the one the proxy says the request came with (any, when it
/// says nothing). Every entry of a list must agree: a proxy appends its own to what the
/// client sent.
fn scheme_agrees(origin: &str, forwarded_proto: Option<&str>) -> bool {
    let Some(list) = forwarded_proto.filter(|p| !p.trim().is_empty()) else {
        return true;
    };
    list.split(',').map(str::trim).all(|proto| {
        origin
            .get(..proto.len() + 3)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(&format!("{proto}://")))
    })
}

/// Whether the origin `scheme://host[:port]` names the authority `host[:port]` of a `Host`
/// header (case-insensitive; a default port written or omitted on either side).
fn same_authority(origin: &str, host: &str) -> bool {
    let (rest, default_port) = if let Some(r) = origin.strip_prefix("https://") {
        (r, "443")
    } else if let Some(r) = origin.strip_prefix("http://") {
        (r, "80")
    } else {
        return false; // "null", or not an origin
    };
    let norm = |a: &str| -> String {
        let a = a.trim().to_ascii_lowercase();
        // Split off a port (an IPv6 literal keeps its colons inside brackets).
        let (h, port) = match a.rfind(':') {
            Some(i) if !a[i..].contains(']') => (a[..i].to_string(), a[i + 1..].to_string()),
            _ => (a.clone(), String::new()),
        };
        if port.is_empty() || port == default_port {
            h
        } else {
            format!("{h}:{port}")
        }
    };
    !rest.is_empty() && !rest.contains('/') && !host.trim().is_empty() && norm(rest) == norm(host)
}

/// Parse `outseta_auth.cookie_origins`: a comma list of origins such as
/// `https://app.example.com` (scheme, host and optional port; no path).
pub fn parse_origins(text: &str) -> Result<Vec<String>, AuthError> {
    const SETTING: &str = "outseta_auth.cookie_origins";
    let mut out = Vec::new();
    for o in comma_list(text) {
        let o = o.trim_end_matches('/').to_string();
        let rest = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        let ok = rest.is_some_and(|host| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        });
        if !ok {
            return Err(AuthError::config(
                SETTING,
                format!(
                    "\"{}\" is not an origin; write it as a browser sends it, e.g. https://app.example.com",
                    crate::error::printable(&o)
                ),
            ));
        }
        out.push(o);
    }
    Ok(out)
}

/// Visits one JSON object, keeping only the values of `keys` (if strings) and skipping the
/// rest without building anything.
struct MemberSeed<'k, const N: usize> {
    keys: [&'k str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for MemberSeed<'_, N> {
    type Value = ([Option<String>; N], [bool; N]);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for MemberSeed<'_, N> {
    type Value = ([Option<String>; N], [bool; N]);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: [Option<Option<String>>; N] = std::array::from_fn(|_| None);
        let mut conflict = [false; N];
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            match self.keys.iter().position(|k| *k == name) {
                Some(i) => {
                    let value = map.next_value::<MaybeString>()?.0;
                    match &found[i] {
                        Some(earlier) if *earlier != value => conflict[i] = true,
                        _ => found[i] = Some(value),
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let values = std::array::from_fn(|i| {
            if conflict[i] {
                None
            } else {
                found[i].take().flatten()
            }
        });
        Ok((values, conflict))
    }

    // Anything but an object has no members: the caller gets all None (via the error).
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::custom("not an object"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom("not an object"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom("not an object"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom("not an object"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom("not an object"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom("not an object"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom("not an object"))
    }
}

/// A member value: `Some` for a string, `None` for anything else (skipped unbuilt).
struct MaybeString(Option<String>);

impl<'de> de::Deserialize<'de> for MaybeString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MaybeString, E> {
                Ok(MaybeString(Some(s.to_string())))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeString, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeString, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "request.cookies";

    fn get(text: &str, key: &str) -> Option<String> {
        json_member(text.as_bytes(), key, S).unwrap()
    }

    #[test]
    fn finds_one_member() {
        let text = r#"{"a": [1, {"x": "y"}], "Outseta.nocode.accessToken": "t.o.k", "z": null}"#;
        assert_eq!(
            get(text, "Outseta.nocode.accessToken").as_deref(),
            Some("t.o.k")
        );
        assert_eq!(
            get(text, "outseta.nocode.accesstoken"),
            None,
            "names are exact"
        );
        assert_eq!(get(text, "a"), None, "not a string");
        assert_eq!(get(text, "missing"), None);
        assert_eq!(get(r#"{"k": "a\"b\u0041"}"#, "k").as_deref(), Some("a\"bA"));
        assert_eq!(get(r#"{"k\u0041": "v"}"#, "kA").as_deref(), Some("v"));
        // Given twice with different values: neither (was: the last, before issue 28).
        assert_eq!(get(r#"{"k": "1", "k": "2"}"#, "k"), None);
    }

    #[test]
    fn anything_but_a_json_object_has_no_token() {
        for text in [
            "",
            "[",
            "[1,2]",
            "\"k\"",
            "5",
            "null",
            "{\"k\": \"v\"} x",
            "{\"k\":",
        ] {
            assert_eq!(get(text, "k"), None, "{text}");
        }
    }

    #[test]
    fn over_the_cap_is_refused_before_reading() {
        let big = format!("[{}0]", "0,".repeat(MAX_REQUEST_JSON_BYTES));
        let e = json_member(big.as_bytes(), "k", S).unwrap_err();
        assert_eq!(e.code(), "too_large");
        assert!(e.message().contains("request.cookies"), "{}", e.message());
        let at_cap = format!("{{\"k\":\"{}\"}}", "a".repeat(MAX_REQUEST_JSON_BYTES - 8));
        assert_eq!(at_cap.len(), MAX_REQUEST_JSON_BYTES);
        assert_eq!(
            get(&at_cap, "k").map(|s| s.len()),
            Some(MAX_REQUEST_JSON_BYTES - 8)
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(get(&deep, "k"), None);
    }

    #[test]
    fn a_conflicting_header_is_told_apart_from_a_missing_one() {
        let keys = ["origin", "host"];
        let two = br#"{"origin": "https://app.example.com", "origin": "https://evil.example", "host": "h"}"#;
        assert_eq!(
            json_members_unless_conflict(two, keys, "request.headers").unwrap(),
            None
        );
        let one = br#"{"origin": "https://app.example.com", "host": "h"}"#;
        let [o, h] = json_members_unless_conflict(one, keys, "request.headers")
            .unwrap()
            .unwrap();
        assert_eq!(
            (o.as_deref(), h.as_deref()),
            (Some("https://app.example.com"), Some("h"))
        );
        let none = json_members_unless_conflict(b"[1]", keys, "request.headers").unwrap();
        assert_eq!(none, Some([None, None]));
    }

    #[test]
    fn a_member_given_twice_with_different_values_is_none() {
        let tossed = br#"{"Outseta.nocode.accessToken": "a.b.c", "x": "1", "Outseta.nocode.accessToken": "d.e.f"}"#;
        let got = json_member(tossed, "Outseta.nocode.accessToken", "request.cookies").unwrap();
        assert_eq!(got, None);
        // The same value twice is one value; other members are unaffected.
        let twice = br#"{"t": "a.b.c", "t": "a.b.c", "x": "1", "x": "2", "y": "3"}"#;
        let [t, x, y] = json_members(twice, ["t", "x", "y"], "request.cookies").unwrap();
        assert_eq!(t.as_deref(), Some("a.b.c"));
        assert_eq!(x, None);
        assert_eq!(y.as_deref(), Some("3"));
    }

    #[test]
    fn several_members_in_one_pass() {
        let h = br#"{"origin": "https://a.example", "x": [1], "sec-fetch-site": "same-origin"}"#;
        let [site, origin, none] =
            json_members(h, ["sec-fetch-site", "origin", "cookie"], "request.headers").unwrap();
        assert_eq!(site.as_deref(), Some("same-origin"));
        assert_eq!(origin.as_deref(), Some("https://a.example"));
        assert_eq!(none, None);
    }

    #[test]
    fn methods_that_change_data_need_a_same_origin_sign() {
        let host = Some("app.example.com");
        let req = |method, site, origin| CookieRequest {
            method: Some(method),
            sec_fetch_site: site,
            origin,
            host,
            forwarded_proto: None,
        };
        for method in ["POST", "PATCH", "PUT", "DELETE", "post"] {
            // No Origin and no Fetch Metadata: not the cookie.
            assert!(!cookie_allowed(&req(method, None, None), &[]), "{method}");
            assert!(
                !cookie_allowed(&req(method, Some("none"), None), &[]),
                "{method}"
            );
            // Same-origin, said by the browser either way: yes.
            assert!(cookie_allowed(&req(method, Some("same-origin"), None), &[]));
            assert!(cookie_allowed(
                &req(method, None, Some("https://app.example.com")),
                &[]
            ));
            assert!(!cookie_allowed(
                &req(method, None, Some("https://evil.example")),
                &[]
            ));
        }
        for method in ["GET", "HEAD", "OPTIONS", ""] {
            assert!(cookie_allowed(&req(method, None, None), &[]), "{method}");
        }
    }

    #[test]
    fn the_scheme_counts_when_the_proxy_names_it() {
        let req = |origin, proto| CookieRequest {
            method: Some("POST"),
            origin: Some(origin),
            host: Some("app.example.com"),
            forwarded_proto: proto,
            ..CookieRequest::default()
        };
        assert!(cookie_allowed(
            &req("https://app.example.com", Some("https")),
            &[]
        ));
        assert!(!cookie_allowed(
            &req("http://app.example.com", Some("https")),
            &[]
        ));
        assert!(!cookie_allowed(
            &req("https://app.example.com", Some("http")),
            &[]
        ));
        assert!(cookie_allowed(
            &req("http://app.example.com", Some("http")),
            &[]
        ));
        // A proxy appends its own entry to what the client sent: all must agree.
        assert!(!cookie_allowed(
            &req("https://app.example.com", Some("https, http")),
            &[]
        ));
        assert!(!cookie_allowed(
            &req("http://app.example.com", Some("http, https")),
            &[]
        ));
        assert!(cookie_allowed(
            &req("https://app.example.com", Some("https, https")),
            &[]
        ));
        // No X-Forwarded-Proto: the database cannot see the scheme, host and port decide.
        assert!(cookie_allowed(&req("http://app.example.com", None), &[]));
    }

    #[test]
    fn csrf_rule() {
        let allowed = parse_origins("https://app.example.com, http://localhost:5173/").unwrap();
        let ok = |site, origin, host, list: &[String]| {
            let r = CookieRequest {
                sec_fetch_site: site,
                origin,
                host,
                ..CookieRequest::default()
            };
            cookie_allowed(&r, list)
        };
        let api = Some("api.example.com");
        // Not from a browser (no Origin, no Fetch Metadata): the cookie counts.
        assert!(ok(None, None, None, &[]));
        assert!(ok(None, None, api, &allowed));
        // Same-origin: no Origin (a same-origin GET), or the request's own origin.
        assert!(ok(Some("same-origin"), None, api, &[]));
        assert!(ok(Some("none"), None, api, &[]));
        assert!(ok(
            Some("same-origin"),
            Some("https://api.example.com"),
            api,
            &[]
        ));
        assert!(ok(None, Some("https://API.example.com/"), api, &[]));
        assert!(ok(
            None,
            Some("https://api.example.com"),
            Some("api.example.com:443"),
            &[]
        ));
        assert!(ok(
            None,
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(ok(None, Some("http://[::1]:8080"), Some("[::1]:8080"), &[]));
        assert!(ok(None, Some("http://[::1]"), Some("[::1]:80"), &[]));
        // The two rows of issue 18, default settings: not used.
        assert!(!ok(
            Some("same-site"),
            Some("https://evil.example.com"),
            api,
            &[]
        ));
        assert!(!ok(None, Some("https://evil.example"), api, &[]));
        // Another port of the same host is another origin; so is another scheme's port.
        assert!(!ok(
            None,
            Some("http://127.0.0.1:8081"),
            Some("127.0.0.1:8080"),
            &[]
        ));
        assert!(!ok(None, Some("http://api.example.com:8443"), api, &[]));
        assert!(!ok(
            None,
            Some("https://api.example.com.evil.example"),
            api,
            &[]
        ));
        // An Origin but no Host to compare with, or an opaque origin: not used.
        assert!(!ok(None, Some("https://api.example.com"), None, &[]));
        assert!(!ok(None, Some("null"), Some("null"), &[]));
        assert!(!ok(None, Some("api.example.com"), api, &[]));
        // Same-site without Origin (an image, a navigation from a sibling): not used.
        assert!(!ok(Some("same-site"), None, api, &[]));
        assert!(!ok(
            Some("Same-Site"),
            Some("https://api.example.com"),
            api,
            &[]
        ));
        // The browser says cross-site: never, listed or not.
        assert!(!ok(Some("cross-site"), None, api, &[]));
        assert!(!ok(
            Some("Cross-Site"),
            Some("https://app.example.com"),
            api,
            &allowed
        ));
        // A listed origin counts, same-site included.
        assert!(ok(
            Some("same-site"),
            Some("https://app.example.com"),
            api,
            &allowed
        ));
        assert!(ok(None, Some("http://localhost:5173"), api, &allowed));
        assert!(!ok(None, Some("https://evil.example"), api, &allowed));
        assert!(!ok(None, Some("null"), api, &allowed));
        assert!(!ok(
            None,
            Some("https://app.example.com.evil.example"),
            api,
            &allowed
        ));
        // With a list, a same-origin request still counts.
        assert!(ok(None, Some("https://api.example.com"), api, &allowed));
    }

    #[test]
    fn origins_parse() {
        assert!(parse_origins("").unwrap().is_empty());
        for bad in [
            "app.example.com",
            "https://a.example/path",
            "ftp://a",
            "https://",
            "*",
        ] {
            assert_eq!(
                parse_origins(bad).unwrap_err().code(),
                "config_error",
                "{bad}"
            );
        }
    }

    #[test]
    fn token_sources() {
        use TokenSource::*;
        assert_eq!(
            parse_token_sources(" setting, cookie ,header").unwrap(),
            vec![Setting, Cookie, Header]
        );
        assert_eq!(parse_token_sources("header").unwrap(), vec![Header]);
        for bad in ["", " , ", "bogus", "setting,setting", "Cookie"] {
            assert_eq!(
                parse_token_sources(bad).unwrap_err().code(),
                "config_error",
                "{bad}"
            );
        }
    }
}
