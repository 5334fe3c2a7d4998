//! Where the current request's token comes from: `outseta_auth.token`, then (for
//! PostgREST/Supabase) the Outseta cookie in `request.cookies`, then a configured header in
//! `request.headers`. The order and the set are `outseta_auth.token_sources`.
//!
//! Only the *token* is taken from these places; it is then verified like any other.
//! Unverified claims (`request.jwt.claims`) are never read.

use std::cell::RefCell;
use std::ffi::CStr;

use outseta_auth_core::AuthError;
use pgrx::pg_sys;
use serde_json::Value;

use crate::settings::{self, borrow_bytes, borrow_str};

/// Parsed JSON text settings are cached by their raw text, so a per-row accessor compares
/// bytes instead of parsing JSON.
#[derive(Default)]
struct JsonPick {
    raw: String,
    key: String,
    picked: Option<String>,
}

impl JsonPick {
    fn pick(&mut self, raw: &str, key: &str, strip_bearer: bool) -> Option<&str> {
        if self.raw != raw || self.key != key {
            self.raw = raw.to_string();
            self.key = key.to_string();
            self.picked = serde_json::from_str::<Value>(raw)
                .ok()
                .and_then(|v| {
                    v.get(key)
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .map(String::from)
                })
                .map(|t| {
                    if strip_bearer {
                        strip_bearer_prefix(&t).to_string()
                    } else {
                        t
                    }
                });
        }
        self.picked.as_deref().filter(|t| !t.is_empty())
    }
}

thread_local! {
    static COOKIES: RefCell<JsonPick> = RefCell::new(JsonPick::default());
    static HEADERS: RefCell<JsonPick> = RefCell::new(JsonPick::default());
}

pub fn strip_bearer_prefix(t: &str) -> &str {
    match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => t[7..].trim(),
        _ => t,
    }
}

/// A placeholder (custom) setting such as `request.cookies`, or "" when unset.
fn other_setting(name: &CStr) -> &'static str {
    // SAFETY: GetConfigOption with missing_ok=true returns NULL or a pointer to the
    // setting's current NUL-terminated value, valid until the setting is next assigned,
    // which does not happen during this function call.
    let p = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if p.is_null() {
        return "";
    }
    // SAFETY: non-null and NUL-terminated, as above.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

/// Call `f` with the current token's bytes (None when no source has one). Bytes, because
/// the per-row path compares them with the last verified token without validating UTF-8.
pub fn with_current_token<R>(f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, AuthError> {
    let sources = borrow_str(&settings::TOKEN_SOURCES);
    for name in sources.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "setting" => {
                let t = borrow_bytes(&settings::TOKEN).trim_ascii();
                if !t.is_empty() {
                    return Ok(f(Some(t)));
                }
            }
            "cookie" => {
                let raw = other_setting(c"request.cookies");
                if raw.is_empty() {
                    continue;
                }
                let cookie = borrow_str(&settings::TOKEN_COOKIE);
                let found =
                    COOKIES.with_borrow_mut(|c| c.pick(raw, cookie, false).map(String::from));
                if let Some(t) = found {
                    return Ok(f(Some(t.as_bytes())));
                }
            }
            "header" => {
                let header = borrow_str(&settings::TOKEN_HEADER).trim();
                if header.is_empty() {
                    continue;
                }
                let raw = other_setting(c"request.headers");
                if raw.is_empty() {
                    continue;
                }
                let lower = header.to_ascii_lowercase();
                let found =
                    HEADERS.with_borrow_mut(|c| c.pick(raw, &lower, true).map(String::from));
                if let Some(t) = found {
                    return Ok(f(Some(t.as_bytes())));
                }
            }
            other => {
                return Err(AuthError::config(
                    "outseta_auth.token_sources",
                    format!("unknown source \"{other}\"; use setting, cookie, header"),
                ))
            }
        }
    }
    Ok(f(None))
}
