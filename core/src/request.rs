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
/// when `text` is over the cap; nothing is read then. With duplicate members the last wins,
/// as in `jsonb`.
pub fn json_member(
    text: &[u8],
    key: &str,
    setting: &'static str,
) -> Result<Option<String>, AuthError> {
    if text.len() > MAX_REQUEST_JSON_BYTES {
        return Err(AuthError::RequestTooLarge {
            setting,
            size: text.len(),
            max: MAX_REQUEST_JSON_BYTES,
        });
    }
    let mut de = serde_json::Deserializer::from_slice(text);
    let found = match (MemberSeed { key }).deserialize(&mut de) {
        Ok(found) => found,
        Err(_) => return Ok(None),
    };
    if de.end().is_err() {
        return Ok(None);
    }
    Ok(found)
}

/// Visits one JSON object, keeping only the value of `key` (if a string) and skipping the
/// rest without building anything.
struct MemberSeed<'k> {
    key: &'k str,
}

impl<'de> DeserializeSeed<'de> for MemberSeed<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MemberSeed<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            if name == self.key {
                found = map.next_value::<MaybeString>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    // Anything but an object: no token here.
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
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
        assert_eq!(get(r#"{"k": "1", "k": "2"}"#, "k").as_deref(), Some("2"));
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
