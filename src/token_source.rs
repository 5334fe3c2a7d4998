//! Where the current request's token comes from: `outseta_auth.token`, then (for
//! PostgREST/Supabase) the Outseta cookie in `request.cookies`, then a configured header in
//! `request.headers`. The order and the set are `outseta_auth.token_sources`.
//!
//! Only the *token* is taken from these places; it is then verified like any other.
//! Unverified claims (`request.jwt.claims`) are never read.

use std::cell::RefCell;
use std::ffi::CStr;
use std::rc::Rc;

use outseta_auth_core::request::{
    cookie_allowed, json_member, json_members_unless_conflict, CookieRequest, TokenSource,
};
use outseta_auth_core::AuthError;
use pgrx::pg_sys;

use crate::settings::{self, borrow_bytes, RequestRules};

/// A token picked out of a JSON text setting (`request.cookies` / `request.headers`),
/// cached by that text and the key, so a per-row accessor compares bytes instead of parsing
/// JSON, and gets the token without copying it. The text is at most
/// `MAX_REQUEST_JSON_BYTES` (larger is refused before it is copied).
#[derive(Default)]
struct JsonPick {
    raw: Vec<u8>,
    key: String,
    picked: Option<Rc<str>>,
}

impl JsonPick {
    /// For a header (`is_header`; `key` in lower case, as PostgREST lower-cases header
    /// names) a `Bearer ` prefix is stripped; cookie names are matched exactly.
    fn pick(
        &mut self,
        raw: &[u8],
        key: &str,
        is_header: bool,
        setting: &'static str,
    ) -> Result<Option<Rc<str>>, AuthError> {
        if self.raw != raw || self.key != key {
            // Refuses oversize text before anything is copied.
            let found = json_member(raw, key, setting)?;
            self.raw = raw.to_vec();
            self.key = key.to_string();
            self.picked = found
                .map(|t| {
                    let t = t.trim();
                    Rc::from(if is_header { strip_bearer_prefix(t) } else { t })
                })
                .filter(|t: &Rc<str>| !t.is_empty());
        }
        Ok(self.picked.clone())
    }
}

/// The CSRF verdict for the cookie, cached by the `request.headers` text, the method and the
/// rules it was judged under (so a per-row accessor compares bytes instead of parsing JSON).
#[derive(Default)]
struct CookieGate {
    headers: Vec<u8>,
    method: Vec<u8>,
    generation: u64,
    allowed: bool,
}

impl CookieGate {
    fn allowed(
        &mut self,
        headers: &[u8],
        method: &[u8],
        rules: &RequestRules,
        generation: u64,
    ) -> Result<bool, AuthError> {
        if self.generation != generation || self.headers != headers || self.method != method {
            // A header given twice with different values, or a method that is not text:
            // refused rather than guessed.
            self.allowed = match (
                json_members_unless_conflict(
                    headers,
                    ["sec-fetch-site", "origin", "host", "x-forwarded-proto"],
                    "request.headers",
                )?,
                std::str::from_utf8(method),
            ) {
                (Some([site, origin, host, proto]), Ok(method)) => cookie_allowed(
                    &CookieRequest {
                        method: Some(method),
                        sec_fetch_site: site.as_deref(),
                        origin: origin.as_deref(),
                        host: host.as_deref(),
                        forwarded_proto: proto.as_deref(),
                    },
                    &rules.origins,
                ),
                _ => false,
            };
            self.headers = headers.to_vec();
            self.method = method.to_vec();
            self.generation = generation;
        }
        Ok(self.allowed)
    }
}

thread_local! {
    static COOKIES: RefCell<JsonPick> = RefCell::new(JsonPick::default());
    static HEADERS: RefCell<JsonPick> = RefCell::new(JsonPick::default());
    static GATE: RefCell<CookieGate> = RefCell::new(CookieGate::default());
}

/// False when `request.headers` show a browser request from another origin that
/// `outseta_auth.cookie_origins` does not list (see [`cookie_allowed`]): the cookie then
/// carries no identity and the request is anonymous.
fn cookie_may_be_used(rules: &RequestRules, generation: u64) -> Result<bool, AuthError> {
    let headers = other_setting(c"request.headers");
    if headers.is_empty() {
        return Ok(true);
    }
    let method = other_setting(c"request.method");
    GATE.with_borrow_mut(|g| g.allowed(headers, method, rules, generation))
}

pub fn strip_bearer_prefix(t: &str) -> &str {
    match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => t[7..].trim(),
        _ => t,
    }
}

/// A placeholder (custom) setting such as `request.cookies`, borrowed (no copy), or empty
/// when unset.
pub fn other_setting(name: &CStr) -> &'static [u8] {
    // SAFETY: GetConfigOption with missing_ok=true returns NULL or a pointer to the
    // setting's current NUL-terminated value, valid until the setting is next assigned,
    // which does not happen during this function call.
    let p = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    if p.is_null() {
        return b"";
    }
    // SAFETY: non-null and NUL-terminated, as above.
    unsafe { CStr::from_ptr(p) }.to_bytes()
}

fn from_json_setting(
    cell: &'static std::thread::LocalKey<RefCell<JsonPick>>,
    setting: &'static CStr,
    key: &str,
    is_header: bool,
) -> Result<Option<Rc<str>>, AuthError> {
    let raw = other_setting(setting);
    if raw.is_empty() {
        return Ok(None);
    }
    let name = setting.to_str().unwrap_or("request setting");
    cell.with_borrow_mut(|c| c.pick(raw, key, is_header, name))
}

/// Call `f` with the current token's bytes (None when no source has one). Bytes, because
/// the per-row path compares them with the last verified token without validating UTF-8.
pub fn with_current_token<R>(f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, AuthError> {
    let resolved = settings::resolved();
    let rules = resolved.request.as_ref().map_err(Clone::clone)?;
    for source in rules.sources.into_iter().flatten() {
        match source {
            TokenSource::Setting => {
                let t = borrow_bytes(&settings::TOKEN).trim_ascii();
                if !t.is_empty() {
                    return Ok(f(Some(t)));
                }
            }
            TokenSource::Cookie => {
                let found = from_json_setting(&COOKIES, c"request.cookies", &rules.cookie, false)?;
                if let Some(t) = found {
                    if cookie_may_be_used(rules, resolved.generation)? {
                        return Ok(f(Some(t.as_bytes())));
                    }
                }
            }
            TokenSource::Header => {
                if rules.header.is_empty() {
                    continue;
                }
                let found = from_json_setting(&HEADERS, c"request.headers", &rules.header, true)?;
                if let Some(t) = found {
                    return Ok(f(Some(t.as_bytes())));
                }
            }
        }
    }
    Ok(f(None))
}
