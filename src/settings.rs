//! Every `outseta_auth.*` setting, declared in one place.
//!
//! Only `outseta_auth.token` is settable by anyone. Everything that decides which keys are
//! trusted, and how the backend reaches them, is `PGC_SUSET`: an ordinary role can neither
//! `SET` it, nor `set_config` it, nor `ALTER ROLE ... SET` it.
//!
//! Settings whose text has a syntax are validated when set, by check hooks that reuse the
//! core's own parsers: `SET outseta_auth.algorithms = 'HS256'` fails at once with 22023 and a
//! message naming the problem, instead of failing in a later query.
//!
//! `outseta_auth.token` may only come from the session or transaction (`SET`, `SET LOCAL`,
//! `set_config`): its check hook refuses role, database, server-file and connection-string
//! values, so that no token can be planted in a default for later sessions.
//!
//! Each setting the request path reads has an assign hook that bumps [`generation`]; the verification
//! engine rebuilds its configuration, and drops cached tokens when trust changed, whenever
//! the generation moves. Postgres calls assign hooks on every change of value, including
//! `SET LOCAL`, `RESET`, and the rollback of a transaction or savepoint.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use outseta_auth_core::config::{defaults, ProfileCheck};
use outseta_auth_core::fetch::{domain_url, validate_url, FetchLimits};
use outseta_auth_core::jwks::KeySet;
use outseta_auth_core::policy::parse_algorithms;
use outseta_auth_core::request::{parse_origins, parse_token_sources, TokenSource};
use outseta_auth_core::webhook::WebhookKey;
use outseta_auth_core::{AuthError, Config, KeySource, Policy, Timing};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_guard;
use pgrx::pg_sys::{self, GucSource};

/// Every setting, each in one entry: the static Postgres keeps its value in, its name, its
/// default (from the core's [`defaults`] where the core has one too), its bounds and unit,
/// who may set it, its check hook, and its help text. The kinds:
/// - `user_string`: settable by anyone (only the token); a check hook, no assign hook;
/// - `su_string`, `su_int`, `su_bool`: superuser-only (`PGC_SUSET`), with an assign hook
///   that moves [`generation`] (the engine rebuilds its configuration);
/// - `su_bool_sql`: superuser-only, read by SQL only (no generation);
/// - `secret`: superuser-only, never shown (a show hook), hidden from `SHOW ALL`.
///
/// [`resolved`] is where the values feed the core's [`Config`] and the request rules.
macro_rules! settings {
    (@declared [$($s:ident)*]) => {
        /// Register every setting declared above (from `_PG_init`), in order.
        fn register_declared() {
            $( $s::register(); )*
        }
    };
    // One setting: its static and a module of the same name (another namespace) whose
    // `register` hands the static to `$define`.
    (@one [$($done:ident)*] $(#[doc = $doc:literal])* $vis:vis $s:ident: $ty:ty = $default:expr,
        $define:expr; $($rest:tt)*
    ) => {
        $(#[doc = $doc])*
        $vis static $s: GucSetting<$ty> = GucSetting::<$ty>::new($default);
        #[allow(non_snake_case)]
        mod $s {
            use super::*;
            pub fn register() {
                #[allow(clippy::redundant_closure_call)]
                ($define)(&super::$s)
            }
        }
        settings!(@declared [$($done)* $s] $($rest)*);
    };
    (@declared [$($done:ident)*] $(#[doc = $doc:literal])*
        $vis:vis user_string $s:ident $name:literal = $default:expr,
            check $check:expr, $short:literal, $long:literal; $($rest:tt)*
    ) => {
        settings!(@one [$($done)*] $(#[doc = $doc])* $vis $s: Option<CString> = Some($default),
            |s| unsafe {
                // SAFETY: the check hook is guarded and has the signature Postgres expects.
                GucRegistry::define_string_guc_with_hooks($name, $short, $long, s,
                    GucContext::Userset, GucFlags::default(), $check, None, None)
            }; $($rest)*);
    };
    (@declared [$($done:ident)*] $(#[doc = $doc:literal])*
        $vis:vis su_string $s:ident $name:literal = $default:expr,
            check $check:expr, $short:literal, $long:literal; $($rest:tt)*
    ) => {
        settings!(@one [$($done)*] $(#[doc = $doc])* $vis $s: Option<CString> = Some($default),
            |s| unsafe {
                // SAFETY: the assign hook cannot panic (one atomic add); check hooks are
                // guarded; both have the signatures Postgres expects.
                GucRegistry::define_string_guc_with_hooks($name, $short, $long, s,
                    GucContext::Suset, GucFlags::default(), $check, Some(bump_str), None)
            }; $($rest)*);
    };
    (@declared [$($done:ident)*] $(#[doc = $doc:literal])*
        $vis:vis su_int $s:ident $name:literal = $default:expr,
            range ($min:expr, $max:expr), unit $unit:ident, $short:literal, $long:literal;
            $($rest:tt)*
    ) => {
        settings!(@one [$($done)*] $(#[doc = $doc])* $vis $s: i32 = $default,
            |s| unsafe {
                // SAFETY: the assign hook cannot panic (one atomic add).
                GucRegistry::define_int_guc_with_hooks($name, $short, $long, s, $min, $max,
                    GucContext::Suset, GucFlags::$unit, None, Some(bump_int), None)
            }; $($rest)*);
    };
    (@declared [$($done:ident)*] $(#[doc = $doc:literal])*
        $vis:vis su_bool $s:ident $name:literal = $default:expr, $short:literal, $long:literal;
            $($rest:tt)*
    ) => {
        settings!(@one [$($done)*] $(#[doc = $doc])* $vis $s: bool = $default,
            |s| unsafe {
                // SAFETY: the assign hook cannot panic (one atomic add).
                GucRegistry::define_bool_guc_with_hooks($name, $short, $long, s,
                    GucContext::Suset, GucFlags::default(), None, Some(bump_bool), None)
            }; $($rest)*);
    };
    (@declared [$($done:ident)*] $(#[doc = $doc:literal])*
        $vis:vis su_bool_sql $s:ident $name:literal = $default:expr, $short:literal, $long:literal;
            $($rest:tt)*
    ) => {
        settings!(@one [$($done)*] $(#[doc = $doc])* $vis $s: bool = $default,
            |s| GucRegistry::define_bool_guc($name, $short, $long, s, GucContext::Suset,
                GucFlags::default()); $($rest)*);
    };
    (@declared [$($done:ident)*] $(#[doc = $doc:literal])*
        $vis:vis secret $s:ident $name:literal = $default:expr,
            check $check:expr, show $show:expr, $short:literal, $long:literal; $($rest:tt)*
    ) => {
        settings!(@one [$($done)*] $(#[doc = $doc])* $vis $s: Option<CString> = Some($default),
            |s| unsafe {
                // SAFETY: the check hook is guarded; the show hook only returns static
                // strings; both have the signatures Postgres expects.
                GucRegistry::define_string_guc_with_hooks($name, $short, $long, s,
                    GucContext::Suset, GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
                    $check, None, Some($show))
            }; $($rest)*);
    };
    ($($entries:tt)*) => {
        settings!(@declared [] $($entries)*);
    };
}

settings! {
    /// The token of the current request: the only setting anyone may set.
    pub user_string TOKEN c"outseta_auth.token" = c"",
        check Some(check_token),
        c"The Outseta access token of the current request (set per transaction).",
        c"Use SET LOCAL or set_config('outseta_auth.token', token, true). Empty means no token. Role, database and server defaults are refused.";
    su_string DOMAIN c"outseta_auth.domain" = c"",
        check Some(check_domain),
        c"Outseta domain, e.g. myapp.outseta.com; keys come from https://<domain>/.well-known/jwks.",
        c"Overridden by outseta_auth.jwks_url and outseta_auth.jwks.";
    su_string JWKS_URL c"outseta_auth.jwks_url" = c"",
        check Some(check_jwks_url),
        c"Explicit JWKS URL (https, or http to loopback only). Overrides outseta_auth.domain.",
        c"";
    su_string JWKS c"outseta_auth.jwks" = c"",
        check Some(check_jwks),
        c"A literal JWKS document; when set, it is used instead of fetching.",
        c"For air-gapped servers and tests.";
    su_string ALGORITHMS c"outseta_auth.algorithms" = defaults::ALGORITHMS,
        check Some(check_algorithms),
        c"Comma list of accepted signature algorithms (default RS256). none and HS* are never accepted.",
        c"";
    su_string ISSUER c"outseta_auth.issuer" = c"",
        check None,
        c"Comma list of accepted iss values; empty means iss is not checked.",
        c"";
    su_string AUDIENCE c"outseta_auth.audience" = c"",
        check None,
        c"Comma list of accepted aud values; empty means aud must equal outseta_auth.domain when that is set, and is not checked otherwise.",
        c"";
    su_int LEEWAY c"outseta_auth.leeway" = defaults::LEEWAY,
        range (0, 3600), unit UNIT_S,
        c"Clock skew tolerated for exp, nbf and iat.",
        c"";
    su_int CACHE_TTL c"outseta_auth.jwks_cache_ttl" = defaults::JWKS_CACHE_TTL,
        range (1, 86_400), unit UNIT_S,
        c"How long fetched keys are fresh when the server sends no Cache-Control max-age.",
        c"";
    su_int REFRESH_MIN_INTERVAL c"outseta_auth.jwks_refresh_min_interval" =
        defaults::JWKS_REFRESH_MIN_INTERVAL,
        range (0, 3600), unit UNIT_S,
        c"Minimum time between two fetches of the JWKS (unknown kids and failures included).",
        c"";
    su_int MAX_STALE c"outseta_auth.jwks_max_stale" = defaults::JWKS_MAX_STALE,
        range (60, 30 * 86_400), unit UNIT_S,
        c"How long fetched keys may be used after the last successful fetch while refreshes fail; then verification fails closed.",
        c"";
    su_int HTTP_TIMEOUT c"outseta_auth.http_timeout" = defaults::HTTP_TIMEOUT,
        range (100, 60_000), unit UNIT_MS,
        c"Total time allowed for one JWKS fetch or profile request.",
        c"";
    su_int HTTP_CONNECT_TIMEOUT c"outseta_auth.http_connect_timeout" =
        defaults::HTTP_CONNECT_TIMEOUT,
        range (100, 60_000), unit UNIT_MS,
        c"Time allowed to connect to the JWKS server or the profile endpoint.",
        c"";
    su_string TOKEN_SOURCES c"outseta_auth.token_sources" = defaults::TOKEN_SOURCES,
        check Some(check_token_sources),
        c"Where the accessors look for the token, in order: setting, cookie, header.",
        c"";
    su_string TOKEN_COOKIE c"outseta_auth.token_cookie" = defaults::TOKEN_COOKIE,
        check None,
        c"Cookie (in request.cookies) that carries the token; Outseta's script uses Outseta.nocode.accessToken.",
        c"";
    su_string TOKEN_HEADER c"outseta_auth.token_header" = c"",
        check None,
        c"Request header (in request.headers, lower case) that carries the token; empty disables it.",
        c"A \"Bearer \" prefix is stripped.";
    su_string AUTHENTICATED_ROLE c"outseta_auth.authenticated_role" = c"",
        check None,
        c"Role that outseta_pre_request() switches a request with a valid token to (SET LOCAL ROLE); empty: no switch.",
        c"PostgREST's authenticator role must be a member of it.";
    /// Read only by outseta_pre_request() (PL/pgSQL, current_setting); superuser-only
    /// because it decides what Supabase's policies see as the request's claims.
    su_bool_sql PRE_REQUEST_CLAIMS c"outseta_auth.pre_request_claims" = false,
        c"When on, outseta_pre_request() sets request.jwt.claims (transaction-local) to a valid token's verified claims plus role, for Supabase's auth.jwt()/auth.role().",
        c"No token: PostgREST's own claims stay. A bad token: 401, claims untouched.";
    su_string COOKIE_ORIGINS c"outseta_auth.cookie_origins" = c"",
        check Some(check_cookie_origins),
        c"Comma list of origins (e.g. https://app.example.com) whose requests may use the token cookie besides same-origin ones; empty: same-origin requests only.",
        c"Same-origin: no Origin, or an Origin matching the request's Host, and Sec-Fetch-Site not same-site. A cookie token is never used for a request whose Sec-Fetch-Site is cross-site.";
    su_string PROFILE_URL c"outseta_auth.profile_url" = c"",
        check Some(check_profile_url),
        c"Outseta's profile endpoint (https, or http to loopback only); empty: https://<domain>/api/v1/profile?fields=*.",
        c"Used by outseta_profile() and outseta_auth.profile_check.";
    su_int PROFILE_TTL c"outseta_auth.profile_ttl" = defaults::PROFILE_TTL,
        range (1, 86_400), unit UNIT_S,
        c"How long a profile (or a refusal) from the profile endpoint is reused for the same token.",
        c"";
    su_bool PROFILE_CHECK c"outseta_auth.profile_check" = false,
        c"When on, a token is valid only if Outseta's profile endpoint also accepts it (revocation within outseta_auth.profile_ttl).",
        c"An unreachable endpoint then fails closed (58000).";
    secret WEBHOOK_SECRET c"outseta_auth.webhook_secret" = c"",
        check Some(check_webhook_secret), show show_webhook_secret,
        c"Outseta's webhook key (64 hex characters) for outseta_verify_webhook(); hidden from ordinary roles.",
        c"Set it in postgresql.conf or with ALTER SYSTEM.";
}
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

extern "C-unwind" fn bump_bool(_new: bool, _extra: *mut c_void) {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Hand a check hook's verdict to Postgres: the message (and detail) go into the
/// `GUC_check_*` strings, which Postgres reports with SQLSTATE 22023 (or as a WARNING/LOG
/// line where the value came from a file or a default, and is then ignored).
fn reject(message: &str, detail: Option<&str>, hint: Option<&str>) -> bool {
    fn in_error_context(s: &str) -> *mut c_char {
        let c = CString::new(s.replace('\0', "")).unwrap_or_default();
        // SAFETY: ErrorContext always exists in a backend; Postgres' own GUC_check_errmsg
        // allocates these strings there too. `c` is NUL-terminated and outlives the call.
        unsafe { pg_sys::MemoryContextStrdup(pg_sys::ErrorContext, c.as_ptr()) }
    }
    // SAFETY: backends are single-threaded; Postgres reads these right after the hook returns.
    unsafe {
        pg_sys::GUC_check_errmsg_string = in_error_context(message);
        if let Some(d) = detail {
            pg_sys::GUC_check_errdetail_string = in_error_context(d);
        }
        if let Some(h) = hint {
            pg_sys::GUC_check_errhint_string = in_error_context(h);
        }
    }
    false
}

/// The proposed value of a string setting (`None` is treated as empty).
///
/// # Safety
/// `newval` must be the pointer Postgres passes to a string check hook.
unsafe fn proposed<'a>(newval: *mut *mut c_char) -> Option<&'a str> {
    // SAFETY: per the contract, `newval` points at NULL or a NUL-terminated string.
    let p = unsafe { *newval };
    if p.is_null() {
        return Some("");
    }
    // SAFETY: non-null and NUL-terminated.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// Check hook body shared by the validated string settings: empty is always fine (unset),
/// anything else must pass `validate`.
///
/// # Safety
/// As for [`proposed`].
unsafe fn check_with(
    newval: *mut *mut c_char,
    validate: fn(&str) -> Result<(), AuthError>,
) -> bool {
    // SAFETY: forwarded contract.
    let Some(value) = (unsafe { proposed(newval) }) else {
        return reject("the value is not valid UTF-8", None, None);
    };
    if value.trim().is_empty() {
        return true;
    }
    match validate(value) {
        Ok(()) => true,
        Err(e) => reject(&e.message(), e.detail().as_deref(), e.hint()),
    }
}

macro_rules! string_check_hook {
    ($name:ident, $validate:expr) => {
        #[pg_guard]
        unsafe extern "C-unwind" fn $name(
            newval: *mut *mut c_char,
            _extra: *mut *mut c_void,
            _source: GucSource::Type,
        ) -> bool {
            // SAFETY: Postgres calls this as a string check hook.
            unsafe { check_with(newval, $validate) }
        }
    };
}

string_check_hook!(check_domain, |v| domain_url(v).map(drop));
string_check_hook!(check_jwks_url, |v| validate_url(
    v.trim(),
    "outseta_auth.jwks_url"
));
string_check_hook!(check_jwks, |v| KeySet::parse(v.trim().as_bytes())
    .map(drop)
    .map_err(|reason| AuthError::config("outseta_auth.jwks", reason)));
string_check_hook!(check_algorithms, |v| parse_algorithms(v).map(drop));
string_check_hook!(check_token_sources, |v| parse_token_sources(v).map(drop));
string_check_hook!(check_cookie_origins, |v| parse_origins(v).map(drop));
string_check_hook!(check_profile_url, |v| validate_url(
    v.trim(),
    "outseta_auth.profile_url"
));

/// What `SHOW`, `current_setting()` and `pg_settings` print for `outseta_auth.webhook_secret`,
/// to everyone (superusers and `pg_read_all_settings` members included): whether it is set,
/// never the value. The extension reads the value itself ([`webhook_key`]).
extern "C-unwind" fn show_webhook_secret() -> *const c_char {
    if borrow_bytes(&WEBHOOK_SECRET).is_empty() {
        c"".as_ptr()
    } else {
        c"(hidden)".as_ptr()
    }
}

/// `outseta_auth.webhook_secret` must be 64 hex characters, and may come only from the
/// server's configuration files (postgresql.conf, `ALTER SYSTEM`) or a superuser's `SET`:
/// role, database and function defaults are stored in catalogs that every role can read
/// (`pg_db_role_setting`, `pg_roles.rolconfig`, `pg_proc.proconfig`), and the server's
/// command line shows in `ps`, so they are refused. Without preload a superuser can still
/// store such a default (no check runs where the library is not loaded): when the library
/// loads in a session, the stored value comes through here and is refused with a WARNING.
/// No message ever contains the value.
#[pg_guard]
unsafe extern "C-unwind" fn check_webhook_secret(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: GucSource::Type,
) -> bool {
    use GucSource::*;
    // SAFETY: Postgres calls this as a string check hook.
    let Some(value) = (unsafe { proposed(newval) }) else {
        return reject("the value is not valid UTF-8", None, None);
    };
    if value.trim().is_empty() {
        return true;
    }
    if !matches!(
        source,
        PGC_S_DEFAULT | PGC_S_DYNAMIC_DEFAULT | PGC_S_FILE | PGC_S_SESSION
    ) {
        return reject(
            "outseta_auth.webhook_secret can only be set in postgresql.conf, with ALTER SYSTEM, or with SET by a superuser; this value is not used",
            Some("Role, database and function settings are stored where every role can read them (pg_db_role_setting), and a server command line shows in ps: a key stored there should be replaced in Outseta."),
            Some("Use ALTER SYSTEM SET outseta_auth.webhook_secret = '...' and SELECT pg_reload_conf(); remove the stored value with ALTER ROLE/DATABASE ... RESET outseta_auth.webhook_secret."),
        );
    }
    match WebhookKey::parse(value) {
        Ok(_) => true,
        Err(e) => reject(&e.message(), e.detail().as_deref(), None),
    }
}

/// `outseta_auth.token` counts only when set in the session or transaction. A value from
/// `ALTER ROLE/DATABASE ... SET`, `ALTER SYSTEM`, postgresql.conf or the connection string
/// would act for every later session of that role, e.g. other clients behind a pooler.
/// (`ALTER ROLE ... SET` is validated with source PGC_S_TEST, so it fails at once; a value
/// stored before this rule existed is ignored with a WARNING when a session starts.)
#[pg_guard]
unsafe extern "C-unwind" fn check_token(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: GucSource::Type,
) -> bool {
    use GucSource::*;
    // SAFETY: Postgres calls this as a string check hook.
    let empty = unsafe { *newval }.is_null() || unsafe { **newval } == 0;
    if empty
        || matches!(
            source,
            PGC_S_DEFAULT | PGC_S_DYNAMIC_DEFAULT | PGC_S_SESSION
        )
    {
        return true;
    }
    reject(
        "outseta_auth.token can only be set in a session or transaction",
        Some("Role, database, server and connection defaults of the token are refused, so that no token can act for later sessions."),
        Some("Use SET LOCAL outseta_auth.token or set_config('outseta_auth.token', token, true) in each transaction."),
    )
}

pub fn register() {
    register_declared();
    // Reserving the prefix turns a typo such as `SET outseta_auth.jwks_ur = ...` into an
    // error instead of a silently ignored placeholder (PostgreSQL 15 on; 14 can only warn
    // about placeholders that exist now).
    // SAFETY: called once from _PG_init with a static NUL-terminated name, as pgrx's own
    // GUC registration calls DefineCustom*Variable.
    #[cfg(not(feature = "pg14"))]
    unsafe {
        pgrx::pg_sys::MarkGUCPrefixReserved(c"outseta_auth".as_ptr())
    }
    // SAFETY: as above.
    #[cfg(feature = "pg14")]
    unsafe {
        pgrx::pg_sys::EmitWarningsOnPlaceholders(c"outseta_auth".as_ptr())
    }
}

/// Set `name` to `value` for the rest of the transaction, as
/// `set_config(name, value, is_local => true)` does (with the session's privileges and
/// check hooks; not through the utility hook, so Citus does not see it).
pub fn set_local(name: &CStr, value: &CStr) {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
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
fn borrow_str(s: &'static GucSetting<Option<CString>>) -> &'static str {
    std::str::from_utf8(borrow_bytes(s)).unwrap_or("")
}

/// Everything the request path derives from the settings, resolved once per change of them
/// ([`generation`]) into one immutable value: the engine's [`Config`] (trust, timing,
/// profile check), the token lookup's [`RequestRules`] and the profile endpoint that
/// `outseta_profile()` uses. Each part keeps its own error (a broken key source must not
/// break `outseta_profile()`'s endpoint, nor the other way round); errors are returned on
/// every use.
pub struct Resolved {
    pub generation: u64,
    pub config: Result<Config, AuthError>,
    pub request: Result<RequestRules, AuthError>,
    pub profile: Result<ProfileCheck, AuthError>,
}

/// The current [`Resolved`]: one thread-local lookup and a comparison of the generation,
/// unless the settings changed.
pub fn resolved() -> Rc<Resolved> {
    thread_local! {
        static RESOLVED: RefCell<Option<Rc<Resolved>>> = const { RefCell::new(None) };
    }
    let g = generation();
    if let Some(r) = RESOLVED.with_borrow(|r| r.as_ref().filter(|r| r.generation == g).cloned()) {
        return r;
    }
    let profile = resolve_profile();
    let r = Rc::new(Resolved {
        generation: g,
        config: resolve_config(&profile),
        request: RequestRules::resolve(),
        profile,
    });
    RESOLVED.set(Some(r.clone()));
    r
}

/// What the token lookup derives from `token_sources`, `token_cookie`, `token_header` and
/// `cookie_origins`: the per-row path parses nothing and reads no setting but the token's.
pub struct RequestRules {
    pub sources: [Option<TokenSource>; 3],
    pub cookie: String,
    /// Lower case (PostgREST lower-cases header names); empty: no header source.
    pub header: String,
    pub origins: Vec<String>,
}

impl RequestRules {
    fn resolve() -> Result<RequestRules, AuthError> {
        let mut sources = [None; 3];
        for (slot, s) in sources
            .iter_mut()
            .zip(parse_token_sources(borrow_str(&TOKEN_SOURCES))?)
        {
            *slot = Some(s);
        }
        Ok(RequestRules {
            sources,
            cookie: borrow_str(&TOKEN_COOKIE).to_string(),
            header: borrow_str(&TOKEN_HEADER).trim().to_ascii_lowercase(),
            origins: parse_origins(borrow_str(&COOKIE_ORIGINS))?,
        })
    }
}

/// The verification configuration, from the current settings.
fn resolve_config(profile: &Result<ProfileCheck, AuthError>) -> Result<Config, AuthError> {
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
        )?
        .with_domain_audience(domain),
        timing: Timing {
            ttl: CACHE_TTL.get().max(1) as u64,
            min_interval: REFRESH_MIN_INTERVAL.get().max(0) as u64,
            max_stale: MAX_STALE.get().max(60) as u64,
            limits: FetchLimits::from_ms(
                HTTP_TIMEOUT.get() as u64,
                HTTP_CONNECT_TIMEOUT.get() as u64,
            ),
        },
        profile: if PROFILE_CHECK.get() {
            Some(profile.clone()?)
        } else {
            None
        },
    })
}

/// The webhook key, or why there is none (22023).
pub fn webhook_key() -> Result<WebhookKey, AuthError> {
    WebhookKey::parse(borrow_str(&WEBHOOK_SECRET))
}

/// The profile endpoint, its TTL in seconds, and the request limits.
fn resolve_profile() -> Result<ProfileCheck, AuthError> {
    let url =
        outseta_auth_core::profile::resolve_url(borrow_str(&PROFILE_URL), borrow_str(&DOMAIN))?;
    Ok(ProfileCheck {
        url,
        ttl: PROFILE_TTL.get().max(1) as f64,
        limits: FetchLimits::from_ms(HTTP_TIMEOUT.get() as u64, HTTP_CONNECT_TIMEOUT.get() as u64),
    })
}

/// The engine's configuration as resolved for the current settings (for
/// [`Engine::configure`](outseta_auth_core::Engine::configure), which asks only when the
/// generation moved).
pub fn config() -> Result<Config, AuthError> {
    resolved().config.clone()
}
