//! The SQL surface: thin wrappers over the core engine.
//!
//! Functions return `Result<_, ErrorReport>` (pgrx's idiom: an `Err` is raised with its own
//! SQLSTATE). ErrorReport is large, but the error path is cold and ends the statement.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;
use std::sync::Arc;

use outseta_auth_core::{AuthError, Engine, Now, VerifiedToken};
use pgrx::callconv::{BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::{IntoDatum, JsonB};
use serde_json::Value;

use crate::errors::report;
use crate::settings;
use crate::token_source::with_current_token;

thread_local! {
    /// Per-backend state. Parallel workers have their own; it only ever caches what the
    /// settings (which workers inherit) determine, so every process gives the same answer.
    static ENGINE: RefCell<Engine> = RefCell::new(Engine::new());
}

use crate::keys::with_keys;

/// Verify `token` with the per-backend engine. Verification errors are returned, not
/// raised, so that the engine's borrow has ended before Postgres reports them.
pub(crate) fn verify(token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
    verify_bytes(token.as_bytes())
}

/// As [`verify`], for the token's bytes as a token source gives them.
fn verify_bytes(token: &[u8]) -> Result<Arc<VerifiedToken>, AuthError> {
    with_verified(token, Arc::clone)
}

/// Verify `token` and hand its verdict to `f`: on a cache hit (the per-row path) inside
/// the engine's borrow, with no copy of the verdict. `f` must not re-enter the engine; a
/// Postgres ERROR in it (out of memory in palloc) unwinds as a Rust panic, which releases
/// the borrow.
fn with_verified<R>(
    token: &[u8],
    f: impl FnOnce(&Arc<VerifiedToken>) -> R,
) -> Result<R, AuthError> {
    // Both clocks as of the coarse clock's last tick: no timer read on most rows.
    let now = Now::recent();
    let (result, missed) = ENGINE.with_borrow_mut(|engine| {
        if let Err(e) = engine.configure(settings::generation(), settings::config) {
            return (Err(e), false);
        }
        if let Some(cached) = engine.cached(token, now, crate::keys::epoch()) {
            return (cached.map(f), false);
        }
        let result = match std::str::from_utf8(token) {
            Ok(token) => with_keys(|keys| {
                // With outseta_auth.profile_check on, the engine also asks Outseta's profile
                // endpoint (a step of its verification, kept on the cached token for
                // profile_ttl); with preload it looks for the token among the cluster's
                // verified ones before a signature check.
                engine.verify_uncached(
                    token,
                    keys,
                    &mut crate::profile::ProfileRevocation,
                    &mut crate::shared::VerifiedTokenTable,
                    now,
                )
            }),
            Err(_) => Err(AuthError::malformed("the token is not valid UTF-8")),
        };
        (result.map(|v| f(&v)), true)
    });
    if missed {
        // A miss may have waited on the network (up to outseta_auth.http_timeout): honour a
        // query cancel or statement_timeout that arrived meanwhile before going on.
        pgrx::check_for_interrupts!();
    }
    result
}

/// `f` of the verified token of the current request: `None` when there is none, an error
/// when there is one and it fails verification.
fn with_current<R>(f: impl FnOnce(&VerifiedToken) -> R) -> Result<Option<R>, ErrorReport> {
    with_current_token(|t| t.map(|t| with_verified(t, |v| f(v))).transpose())
        .and_then(|r| r)
        .map_err(report)
}

/// A text claim of the current token, read by `field`, as a `text` datum made straight
/// from the cached claim (no intermediate String).
fn current_text(
    field: impl FnOnce(&VerifiedToken) -> Option<&String>,
) -> Result<Option<Text>, ErrorReport> {
    Ok(with_current(|v| field(v).map(|s| Text::from(s.as_str())))?.flatten())
}

/// `SqlTranslatable` and `BoxRet` for a type returned as SQL type `$sql` through its
/// `IntoDatum` (the packaging pgrx uses for its own types, e.g. `JsonB`).
macro_rules! returned_as {
    ($t:ty, $sql:literal) => {
        // SAFETY: the type is returned as SQL type $sql, which its into_datum produces.
        unsafe impl SqlTranslatable for $t {
            const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!($t);
            const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
            const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
                Ok(SqlMappingRef::literal($sql));
            const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
                Ok(ReturnsRef::One(SqlMappingRef::literal($sql)));
        }

        // SAFETY: as pgrx packages its own IntoDatum types.
        unsafe impl BoxRet for $t {
            unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
                match self.into_datum() {
                    // SAFETY: a datum of that type, allocated in the current memory context.
                    Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
                    None => fcinfo.return_null(),
                }
            }
        }
    };
}

/// A `text` datum, made in the current memory context.
pub struct Text(pg_sys::Datum);

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        // SAFETY: cstring_to_text_with_len copies `len` bytes from a valid pointer into a
        // new varlena in CurrentMemoryContext; the bytes are UTF-8 without NUL (claims are
        // refused with NUL at verification).
        let t = unsafe { pg_sys::cstring_to_text_with_len(s.as_ptr().cast(), s.len() as i32) };
        Text(pg_sys::Datum::from(t))
    }
}

impl IntoDatum for Text {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::TEXTOID
    }
}

returned_as!(Text, "text");

/// `jsonb` built by Postgres' own `jsonb_in` straight from JSON text, without the serde
/// round trip `pgrx::JsonB` makes (Value -> String -> jsonb).
pub struct RawJsonb(String);

impl IntoDatum for RawJsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // JSON text accepted by serde_json contains no NUL byte (control characters must be
        // escaped in JSON), so this cannot fail.
        let text = std::ffi::CString::new(self.0).expect("JSON text has no NUL byte");
        // SAFETY: jsonb_in takes one cstring argument; `text` outlives the call.
        unsafe {
            pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())])
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

returned_as!(RawJsonb, "jsonb");

fn claims_jsonb(v: &VerifiedToken) -> RawJsonb {
    RawJsonb(v.payload_json.clone())
}

/// The extension's version.
#[pg_extern(immutable, parallel_safe)]
fn outseta_auth_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Verify a token and return its claims; raises on any failure.
#[pg_extern(stable, parallel_safe)]
fn outseta_verify(token: &str) -> Result<RawJsonb, ErrorReport> {
    let v = verify(token).map_err(report)?;
    Ok(claims_jsonb(&v))
}

extension_sql!(
    r#"
CREATE TYPE outseta_verify_result AS (
    valid boolean,
    claims jsonb,
    error_code text,
    error text
);
"#,
    name = "outseta_verify_result_type",
);

/// An `outseta_verify_result` row for `result`.
///
/// The row type is taken from the calling function's own declared return type (by OID),
/// never looked up by name through `search_path`, which a session could shadow with a
/// temporary type of the same name.
fn verify_result_row(
    fcinfo: pg_sys::FunctionCallInfo,
    result: Result<Arc<VerifiedToken>, AuthError>,
) -> Result<pgrx::composite_type!('static, "outseta_verify_result"), ErrorReport> {
    fn internal(e: impl std::fmt::Display) -> ErrorReport {
        ErrorReport::new(
            pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("building outseta_verify_result: {e}"),
            "outseta_auth",
        )
    }
    // SAFETY: Postgres passes a valid fcinfo whose flinfo describes the called function.
    let typoid = unsafe { pg_sys::get_func_rettype((*(*fcinfo).flinfo).fn_oid) };
    let mut row = PgHeapTuple::new_composite_type_by_oid(typoid).map_err(internal)?;
    let filled = match result {
        Ok(v) => row
            .set_by_name("valid", true)
            .and_then(|_| row.set_by_name("claims", claims_jsonb(&v))),
        Err(e) => {
            // As the caller may see it: no internal URLs or causes for ordinary roles.
            let e = crate::errors::for_caller(e);
            row.set_by_name("valid", false)
                .and_then(|_| row.set_by_name("error_code", e.code()))
                .and_then(|_| row.set_by_name("error", e.to_string()))
        }
    };
    filled.map_err(internal)?;
    Ok(row)
}

/// Verify a token without raising: `(valid, claims, error_code, error)`.
#[pg_extern(stable, parallel_safe, requires = ["outseta_verify_result_type"])]
fn outseta_try_verify(
    token: Option<&str>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Result<pgrx::composite_type!('static, "outseta_verify_result"), ErrorReport> {
    let result = match token {
        None | Some("") => Err(AuthError::malformed("no token was given")),
        Some(t) => verify(t),
    };
    verify_result_row(fcinfo, result)
}

/// The current request's token (per `outseta_auth.token_sources`) checked without raising:
/// NULL when there is no token, else `(valid, claims, error_code, error)`.
// pgrx cannot return `Result<Option<composite>>`; the only error left is internal (the row
// type missing), raised through the same ErrorReport.
#[pg_extern(stable, parallel_safe, requires = ["outseta_verify_result_type"])]
fn outseta_try_current(
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<pgrx::composite_type!('static, "outseta_verify_result")> {
    let result = match with_current_token(|t| t.map(verify_bytes)) {
        Ok(None) => return None,
        Ok(Some(r)) => r,
        Err(e) => Err(e),
    };
    match verify_result_row(fcinfo, result) {
        Ok(row) => Some(row),
        Err(report) => {
            report.report(pgrx::PgLogLevel::ERROR);
            unreachable!("ereport(ERROR) does not return")
        }
    }
}

// PostgREST's db-pre-request hook. In PL/pgSQL because the documented way for a function to
// set PostgREST's HTTP status and headers is `RAISE SQLSTATE 'PGRST'` with JSON in MESSAGE
// and DETAIL. Everything is schema-qualified: it runs under PostgREST's search_path.
// The same text is in sql/outseta_auth--0.2.0--0.3.0.sql (the upgrade test compares them).
extension_sql!(
    r#"
CREATE FUNCTION outseta_pre_request() RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r @extschema@.outseta_verify_result := @extschema@.outseta_try_current();
    role_name text;
    status int;
    message text;
    www text;
BEGIN
    IF r.valid IS NULL THEN
        RETURN;  -- no token: the request stays on PostgREST's anonymous role and claims
    END IF;
    IF r.valid THEN
        role_name := pg_catalog.current_setting('outseta_auth.authenticated_role');
        IF role_name <> '' THEN
            -- as SET LOCAL ROLE: PostgREST's authenticator must be a member of the role
            PERFORM pg_catalog.set_config('role', role_name, true);
        END IF;
        IF pg_catalog.current_setting('outseta_auth.pre_request_claims')::boolean THEN
            -- For Supabase's auth.jwt()/auth.role(): the verified claims and the role now
            -- in effect, for this transaction only.
            PERFORM pg_catalog.set_config('request.jwt.claims',
                (r.claims OPERATOR(pg_catalog.||)
                 pg_catalog.jsonb_build_object('role', current_user::text))::text, true);
        END IF;
        RETURN;
    END IF;
    IF r.error_code IN ('jwks_unavailable', 'profile_unavailable', 'config_error') THEN
        -- The cause (URLs, network errors) is for the server log and outseta_jwks_status(),
        -- not for anonymous clients.
        RAISE LOG 'outseta_pre_request: % (%)', r.error_code, r.error;
        IF r.error_code = 'config_error' THEN
            status := 500;
            message := 'the server''s token verification is misconfigured';
        ELSE
            status := 503;
            message := 'token verification is unavailable; try again shortly';
        END IF;
        www := NULL;
    ELSE
        status := 401;
        message := r.error;
        -- RFC 6750: error_description is printable ASCII without double quote and
        -- backslash: keep 0x20-0x21, 0x23-0x5B and 0x5D-0x7E, drop everything else.
        www := pg_catalog.format('Bearer error="invalid_token", error_description="%s"',
            pg_catalog.left(pg_catalog.regexp_replace(r.error, '[^]-~ -!#-[]', '', 'g'), 200));
    END IF;
    RAISE SQLSTATE 'PGRST' USING
        MESSAGE = pg_catalog.json_build_object(
            'code', r.error_code,
            'message', message,
            'details', NULL,
            'hint', CASE WHEN status = 401
                         THEN 'Sign in again to get a fresh Outseta access token.' END)::text,
        DETAIL = pg_catalog.json_build_object(
            'status', status,
            'headers', CASE WHEN www IS NULL THEN pg_catalog.json_build_object()
                            ELSE pg_catalog.json_build_object('WWW-Authenticate', www) END)::text;
END
$fn$;
COMMENT ON FUNCTION outseta_pre_request() IS
    'PostgREST db-pre-request: no token stays anonymous; a valid token switches to outseta_auth.authenticated_role (and, with outseta_auth.pre_request_claims, sets request.jwt.claims); a bad token ends the request with HTTP 401 and WWW-Authenticate';
"#,
    name = "outseta_pre_request",
    requires = [outseta_try_current],
);

/// Verify `token` and make it the `outseta_auth.token` setting for the rest of the
/// transaction; returns its claims.
///
/// An empty string clears the setting for the rest of the transaction. The accessors then
/// look at the next sources in `outseta_auth.token_sources` (the cookie, a header), exactly
/// as if the setting had never been set, and the function returns the claims now in effect:
/// those of a token found there, or NULL when there is none.
#[pg_extern(volatile, parallel_unsafe)]
fn outseta_authenticate(token: &str) -> Result<Option<RawJsonb>, ErrorReport> {
    let token = token.trim();
    if !token.is_empty() {
        verify(token).map_err(report)?;
    }
    // Text from SQL holds no NUL byte; a string that did could not be a setting value.
    let value = std::ffi::CString::new(token)
        .map_err(|_| report(AuthError::malformed("the token contains a NUL byte")))?;
    settings::set_local(c"outseta_auth.token", &value);
    outseta_claims()
}

/// The current person's profile from Outseta's profile endpoint (`GET /api/v1/profile
/// ?fields=*` with the current token), after the token passed verification; NULL without
/// a token. Cached per token for `outseta_auth.profile_ttl`.
#[pg_extern(stable, parallel_restricted)]
fn outseta_profile() -> Result<Option<RawJsonb>, ErrorReport> {
    let profile = with_current_token(|t| {
        t.map(|token| {
            let v = verify_bytes(token)?;
            let token = std::str::from_utf8(token)
                .map_err(|_| AuthError::malformed("the token is not valid UTF-8"))?;
            crate::profile::profile_of(token, &v)
        })
        .transpose()
    })
    .and_then(|r| r)
    .map_err(report)?;
    Ok(profile.map(|p| RawJsonb(p.to_string())))
}

fn verify_webhook(body: Option<&[u8]>, signature: Option<&str>) -> Result<bool, ErrorReport> {
    let key = settings::webhook_key().map_err(report)?;
    Ok(match (body, signature) {
        (Some(body), Some(sig)) => key.verify(body, sig),
        _ => false,
    })
}

/// Whether `signature` (the `x-hub-signature-256` header, with or without `sha256=`) is
/// Outseta's HMAC-SHA256 of `body` under `outseta_auth.webhook_secret`. False for any
/// mismatch, a malformed or NULL signature; 22023 when no key is configured.
#[pg_extern(stable, parallel_safe, name = "outseta_verify_webhook")]
fn outseta_verify_webhook_text(
    body: Option<&str>,
    signature: Option<&str>,
) -> Result<bool, ErrorReport> {
    verify_webhook(body.map(str::as_bytes), signature)
}

/// As `outseta_verify_webhook(text, text)`, for a raw body in bytea.
#[pg_extern(stable, parallel_safe, name = "outseta_verify_webhook")]
fn outseta_verify_webhook_bytea(
    body: Option<&[u8]>,
    signature: Option<&str>,
) -> Result<bool, ErrorReport> {
    verify_webhook(body, signature)
}

/// All claims of the current token, or NULL without one.
#[pg_extern(stable, parallel_safe)]
fn outseta_claims() -> Result<Option<RawJsonb>, ErrorReport> {
    with_current(claims_jsonb)
}

/// One claim of the current token, as jsonb.
#[pg_extern(stable, parallel_safe)]
fn outseta_claim(name: &str) -> Result<Option<JsonB>, ErrorReport> {
    Ok(with_current(|v| v.claims.get(name).cloned())?
        .flatten()
        .map(JsonB))
}

/// The Outseta Person uid (`sub`) of the current token.
#[pg_extern(stable, parallel_safe)]
fn outseta_sub() -> Result<Option<Text>, ErrorReport> {
    current_text(|v| v.sub.as_ref())
}

/// `outseta:accountUid` of the current token.
#[pg_extern(stable, parallel_safe)]
fn outseta_account_uid() -> Result<Option<Text>, ErrorReport> {
    current_text(|v| v.account_uid.as_ref())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_email() -> Result<Option<Text>, ErrorReport> {
    current_text(|v| v.email.as_ref())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_name() -> Result<Option<Text>, ErrorReport> {
    current_text(|v| v.name.as_ref())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_plan_uid() -> Result<Option<Text>, ErrorReport> {
    current_text(|v| v.plan_uid.as_ref())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_subscription_uid() -> Result<Option<Text>, ErrorReport> {
    current_text(|v| v.subscription_uid.as_ref())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_add_on_uids() -> Result<Option<Vec<String>>, ErrorReport> {
    Ok(with_current(|v| v.add_on_uids.clone())?.flatten())
}

/// `outseta:isPrimary` ("1"/"0" in Outseta's tokens) as a boolean.
#[pg_extern(stable, parallel_safe)]
fn outseta_is_primary() -> Result<Option<bool>, ErrorReport> {
    Ok(with_current(|v| v.is_primary)?.flatten())
}

fn timestamptz(unix: Option<f64>) -> Option<TimestampWithTimeZone> {
    // Postgres timestamps count microseconds from 2000-01-01.
    const PG_EPOCH: f64 = 946_684_800.0;
    unix.and_then(|s| TimestampWithTimeZone::try_from(((s - PG_EPOCH) * 1e6) as i64).ok())
}

/// One row per JWKS source this backend knows, with its cache state.
#[pg_extern(volatile, parallel_restricted)]
#[allow(clippy::type_complexity)]
fn outseta_jwks_status() -> TableIterator<
    'static,
    (
        name!(source, String),
        name!(keys, JsonB),
        name!(ignored_keys, JsonB),
        name!(fetched_at, Option<TimestampWithTimeZone>),
        name!(expires_at, Option<TimestampWithTimeZone>),
        name!(last_error, Option<String>),
        name!(fetch_count, i64),
        name!(shared, bool),
        name!(refresh_pending, bool),
        name!(token_cache_hits, i64),
        name!(token_cache_misses, i64),
    ),
> {
    let (rows, hits, misses) = ENGINE.with_borrow_mut(|engine| {
        // Show the configured source even before first use; a config error shows as no row.
        let _ = engine.configure(settings::generation(), settings::config);
        let rows = with_keys(|keys| engine.status(keys, Now::read()));
        (rows, engine.hits as i64, engine.misses as i64)
    });
    let rows: Vec<_> = rows
        .into_iter()
        .map(|s| {
            let keys = s
                .keys
                .iter()
                .map(|(kid, alg)| serde_json::json!({"kid": kid, "alg": alg}));
            let ignored = s
                .ignored
                .iter()
                .map(|(kid, why)| serde_json::json!({"kid": kid, "reason": why}));
            (
                s.source,
                JsonB(Value::Array(keys.collect())),
                JsonB(Value::Array(ignored.collect())),
                timestamptz(s.fetched_at),
                timestamptz(s.expires_at),
                s.last_error,
                s.fetch_count as i64,
                s.shared,
                s.refresh_pending,
                hits,
                misses,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The cluster's shared slots (with preload; no rows without): how many are in use, of
/// how many, the shared memory of each area, and for the verified tokens how many
/// signature checks they saved. For monitoring long-running clusters.
#[pg_extern(volatile, parallel_restricted)]
fn outseta_shared_slots() -> TableIterator<
    'static,
    (
        name!(area, String),
        name!(in_use, i32),
        name!(slots, i32),
        name!(bytes, i64),
        name!(hits, Option<i64>),
    ),
> {
    TableIterator::new(crate::shared::slots().into_iter().map(|a| {
        (
            a.name.to_string(),
            a.in_use as i32,
            a.slots as i32,
            a.bytes as i64,
            a.hits.map(|h| h as i64),
        )
    }))
}

/// Fetch the JWKS now (superuser only). Returns the number of usable keys.
#[pg_extern(volatile, parallel_unsafe)]
fn outseta_refresh_jwks() -> Result<i32, ErrorReport> {
    // SAFETY: superuser() only reads the current user's catalog entry.
    if !unsafe { pg_sys::superuser() } {
        return Err(report(AuthError::PermissionDenied {
            what: "function outseta_refresh_jwks",
            hint: "Only superusers may force a JWKS refetch.",
        }));
    }
    let n = ENGINE
        .with_borrow_mut(|engine| {
            engine.configure(settings::generation(), settings::config)?;
            with_keys(|keys| engine.refresh(keys, Now::read()))
        })
        .map_err(report)?;
    Ok(n as i32)
}

// Privileges. outseta_refresh_jwks() is for superusers. The JWKS status lists every source
// this backend (or, with preload, the cluster) knows, with its URL and last error: for
// monitoring, not for every role (the same two statements are in
// sql/outseta_auth--0.2.0--0.3.0.sql). So is outseta_shared_slots().
extension_sql!(
    r#"
REVOKE EXECUTE ON FUNCTION outseta_refresh_jwks() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION outseta_jwks_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outseta_jwks_status() TO pg_monitor;
REVOKE EXECUTE ON FUNCTION outseta_shared_slots() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outseta_shared_slots() TO pg_monitor;
"#,
    name = "revoke_refresh",
    requires = [
        outseta_refresh_jwks,
        outseta_jwks_status,
        outseta_shared_slots
    ],
    finalize,
);
