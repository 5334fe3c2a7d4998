//! Every `outseta_auth.*` setting, declared in one place.
//!
//! Only `outseta_auth.token` is settable by anyone. Everything that decides which keys are
//! trusted, and how the backend reaches them, is `PGC_SUSET`: an ordinary role can neither
//! `SET` it, nor `set_config` it, nor `ALTER ROLE ... SET` it.
//!
//! Each superuser setting has an assign hook that bumps [`generation`]; the verification
//! engine rebuilds its configuration, and drops cached tokens when trust changed, whenever
//! the generation moves. Postgres calls assign hooks on every change of value, including
//! `SET LOCAL`, `RESET`, and the rollback of a transaction or savepoint.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};

use outseta_auth_core::fetch::{domain_url, FetchLimits};
use outseta_auth_core::{AuthError, Config, KeySource, Policy};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

pub static TOKEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static DOMAIN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static JWKS_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static JWKS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static ALGORITHMS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"RS256"));
static ISSUER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static AUDIENCE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
static LEEWAY: GucSetting<i32> = GucSetting::<i32>::new(30);
static CACHE_TTL: GucSetting<i32> = GucSetting::<i32>::new(300);
static REFRESH_MIN_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(30);
static HTTP_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(5000);
static HTTP_CONNECT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(2000);
pub static TOKEN_SOURCES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"setting,cookie,header"));
pub static TOKEN_COOKIE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"Outseta.nocode.accessToken"));
pub static TOKEN_HEADER: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c""));

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Moves whenever a superuser setting changes value.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

// Assign hooks must not fail or allocate: they only bump a counter.
extern "C-unwind" fn bump_str(_new: *const c_char, _extra: *mut c_void) {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

extern "C-unwind" fn bump_int(_new: i32, _extra: *mut c_void) {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn su_string(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    s: &'static GucSetting<Option<CString>>,
) {
    // SAFETY: the hook cannot panic (one atomic add) and has the signature Postgres expects.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            name,
            short,
            long,
            s,
            GucContext::Suset,
            GucFlags::default(),
            None,
            Some(bump_str),
            None,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn su_int(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    s: &'static GucSetting<i32>,
    min: i32,
    max: i32,
    unit: GucFlags,
) {
    // SAFETY: as for `su_string`.
    unsafe {
        GucRegistry::define_int_guc_with_hooks(
            name,
            short,
            long,
            s,
            min,
            max,
            GucContext::Suset,
            unit,
            None,
            Some(bump_int),
            None,
        )
    }
}

pub fn register() {
    GucRegistry::define_string_guc(
        c"outseta_auth.token",
        c"The Outseta access token of the current request (set per transaction).",
        c"Use SET LOCAL or set_config('outseta_auth.token', token, true). Empty means no token.",
        &TOKEN,
        GucContext::Userset,
        GucFlags::default(),
    );
    su_string(
        c"outseta_auth.domain",
        c"Outseta domain, e.g. myapp.outseta.com; keys come from https://<domain>/.well-known/jwks.",
        c"Overridden by outseta_auth.jwks_url and outseta_auth.jwks.",
        &DOMAIN,
    );
    su_string(
        c"outseta_auth.jwks_url",
        c"Explicit JWKS URL (https, or http to loopback only). Overrides outseta_auth.domain.",
        c"",
        &JWKS_URL,
    );
    su_string(
        c"outseta_auth.jwks",
        c"A literal JWKS document; when set, it is used instead of fetching.",
        c"For air-gapped servers and tests.",
        &JWKS,
    );
    su_string(
        c"outseta_auth.algorithms",
        c"Comma list of accepted signature algorithms (default RS256). none and HS* are never accepted.",
        c"",
        &ALGORITHMS,
    );
    su_string(
        c"outseta_auth.issuer",
        c"Comma list of accepted iss values; empty means iss is not checked.",
        c"",
        &ISSUER,
    );
    su_string(
        c"outseta_auth.audience",
        c"Comma list of accepted aud values; empty means aud is not checked.",
        c"",
        &AUDIENCE,
    );
    su_int(
        c"outseta_auth.leeway",
        c"Clock skew tolerated for exp, nbf and iat.",
        c"",
        &LEEWAY,
        0,
        3600,
        GucFlags::UNIT_S,
    );
    su_int(
        c"outseta_auth.jwks_cache_ttl",
        c"How long fetched keys are fresh when the server sends no Cache-Control max-age.",
        c"",
        &CACHE_TTL,
        1,
        86400,
        GucFlags::UNIT_S,
    );
    su_int(
        c"outseta_auth.jwks_refresh_min_interval",
        c"Minimum time between two fetches of the JWKS (unknown kids and failures included).",
        c"",
        &REFRESH_MIN_INTERVAL,
        0,
        3600,
        GucFlags::UNIT_S,
    );
    su_int(
        c"outseta_auth.http_timeout",
        c"Total time allowed for one JWKS fetch.",
        c"",
        &HTTP_TIMEOUT,
        100,
        60_000,
        GucFlags::UNIT_MS,
    );
    su_int(
        c"outseta_auth.http_connect_timeout",
        c"Time allowed to connect to the JWKS server.",
        c"",
        &HTTP_CONNECT_TIMEOUT,
        100,
        60_000,
        GucFlags::UNIT_MS,
    );
    su_string(
        c"outseta_auth.token_sources",
        c"Where the accessors look for the token, in order: setting, cookie, header.",
        c"",
        &TOKEN_SOURCES,
    );
    su_string(
        c"outseta_auth.token_cookie",
        c"Cookie (in request.cookies) that carries the token; Outseta's script uses Outseta.nocode.accessToken.",
        c"",
        &TOKEN_COOKIE,
    );
    su_string(
        c"outseta_auth.token_header",
        c"Request header (in request.headers, lower case) that carries the token; empty disables it.",
        c"A \"Bearer \" prefix is stripped.",
        &TOKEN_HEADER,
    );
    // Reserving the prefix turns a typo such as `SET outseta_auth.jwks_ur = ...` into an
    // error instead of a silently ignored placeholder.
    // SAFETY: called once from _PG_init with a static NUL-terminated name, as pgrx's own
    // GUC registration calls DefineCustom*Variable.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"outseta_auth".as_ptr()) }
}

/// A string setting's current bytes, borrowed from the GUC machinery (no copy).
///
/// The returned slice is valid until that setting is next assigned; callers use it within
/// one SQL function call, during which nothing assigns settings.
pub fn borrow_bytes(s: &'static GucSetting<Option<CString>>) -> &'static [u8] {
    // SAFETY: `as_ptr` points at the C variable Postgres maintains for this GUC; it holds
    // NULL or a NUL-terminated string that stays allocated until the next assignment.
    let p = unsafe { *s.as_ptr() };
    if p.is_null() {
        return b"";
    }
    // SAFETY: non-null and NUL-terminated, as above.
    unsafe { CStr::from_ptr(p) }.to_bytes()
}

/// As [`borrow_bytes`], as text ("" if the value is not UTF-8, which Postgres prevents in
/// UTF-8 databases).
pub fn borrow_str(s: &'static GucSetting<Option<CString>>) -> &'static str {
    std::str::from_utf8(borrow_bytes(s)).unwrap_or("")
}

/// Build the verification configuration from the current settings.
pub fn build_config() -> Result<Config, AuthError> {
    let literal = borrow_str(&JWKS).trim();
    let url = borrow_str(&JWKS_URL).trim();
    let domain = borrow_str(&DOMAIN).trim();
    let source = if !literal.is_empty() {
        KeySource::Literal(literal.to_string())
    } else if !url.is_empty() {
        KeySource::Url(url.to_string())
    } else if !domain.is_empty() {
        KeySource::Url(domain_url(domain)?)
    } else {
        return Err(AuthError::config(
            "outseta_auth.domain",
            "no key source is configured: set outseta_auth.domain (or outseta_auth.jwks_url, or outseta_auth.jwks)",
        ));
    };
    Ok(Config {
        source,
        policy: Policy::new(
            borrow_str(&ALGORITHMS),
            borrow_str(&ISSUER),
            borrow_str(&AUDIENCE),
            LEEWAY.get() as i64,
        )?,
        ttl: CACHE_TTL.get().max(1) as u64,
        min_interval: REFRESH_MIN_INTERVAL.get().max(0) as u64,
        limits: FetchLimits::from_ms(HTTP_TIMEOUT.get() as u64, HTTP_CONNECT_TIMEOUT.get() as u64),
    })
}
