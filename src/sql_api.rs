//! The SQL surface: thin wrappers over the core engine.

use std::cell::RefCell;
use std::sync::Arc;

use outseta_auth_core::claims::now;
use outseta_auth_core::fetch::HttpFetcher;
use outseta_auth_core::{AuthError, Engine, VerifiedToken};
use pgrx::callconv::{BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::{IntoDatum, JsonB, PgLogLevel, PgSqlErrorCode};
use serde_json::Value;

use crate::errors::{raise, OrRaise};
use crate::settings;
use crate::token_source::with_current_token;

thread_local! {
    /// Per-backend state. Parallel workers have their own; it only ever caches what the
    /// settings (which workers inherit) determine, so every process gives the same answer.
    static ENGINE: RefCell<Engine> = RefCell::new(Engine::new());
}

/// Verify `token` with the per-backend engine. Errors are returned, not raised, so that
/// no RefCell borrow is held while Postgres unwinds.
pub(crate) fn verify(token: &str) -> Result<Arc<VerifiedToken>, AuthError> {
    verify_bytes(token.as_bytes())
}

fn verify_bytes(token: &[u8]) -> Result<Arc<VerifiedToken>, AuthError> {
    let (result, missed) = ENGINE.with_borrow_mut(|engine| {
        if let Err(e) = engine.configure(settings::generation(), settings::build_config) {
            return (Err(e), false);
        }
        let now = now();
        if let Some(cached) = engine.cached(token, now) {
            return (cached, false);
        }
        let result = match std::str::from_utf8(token) {
            Ok(token) => engine.verify_uncached(token, &HttpFetcher, now),
            Err(_) => Err(AuthError::malformed("the token is not valid UTF-8")),
        };
        (result, true)
    });
    if missed {
        // A miss may have waited on the network (up to outseta_auth.http_timeout): honour a
        // query cancel or statement_timeout that arrived meanwhile before going on.
        pgrx::check_for_interrupts!();
    }
    result
}

/// The verified token of the current request: `None` when there is none, an ERROR when
/// there is one and it fails verification.
fn current() -> Option<Arc<VerifiedToken>> {
    with_current_token(|t| t.map(verify_bytes).transpose())
        .and_then(|r| r)
        .or_raise()
}

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

// SAFETY: RawJsonb is returned as the SQL type jsonb, which into_datum produces.
unsafe impl SqlTranslatable for RawJsonb {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RawJsonb);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

// SAFETY: the same packaging pgrx uses for its own IntoDatum types (e.g. JsonB).
unsafe impl BoxRet for RawJsonb {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a jsonb datum allocated in the current memory context.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

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
fn outseta_verify(token: &str) -> RawJsonb {
    claims_jsonb(&verify(token).or_raise())
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

/// Verify a token without raising: `(valid, claims, error_code, error)`.
#[pg_extern(stable, parallel_safe, requires = ["outseta_verify_result_type"])]
fn outseta_try_verify(
    token: Option<&str>,
) -> pgrx::composite_type!('static, "outseta_verify_result") {
    let mut row = PgHeapTuple::new_composite_type("outseta_verify_result")
        .unwrap_or_else(|e| error!("outseta_verify_result type is missing: {e}"));
    let result = match token {
        None | Some("") => Err(AuthError::malformed("no token was given")),
        Some(t) => verify(t),
    };
    let filled = match result {
        Ok(v) => row
            .set_by_name("valid", true)
            .and_then(|_| row.set_by_name("claims", claims_jsonb(&v))),
        Err(e) => row
            .set_by_name("valid", false)
            .and_then(|_| row.set_by_name("error_code", e.code()))
            .and_then(|_| row.set_by_name("error", e.to_string())),
    };
    filled.unwrap_or_else(|e| error!("building outseta_verify_result: {e}"));
    row
}

/// Verify `token` and make it the current token for the rest of the transaction.
/// An empty string clears the token and returns NULL.
#[pg_extern(volatile, parallel_unsafe)]
fn outseta_authenticate(token: &str) -> Option<RawJsonb> {
    let token = token.trim();
    let claims = if token.is_empty() {
        None
    } else {
        Some(claims_jsonb(&verify(token).or_raise()))
    };
    let value = std::ffi::CString::new(token)
        .unwrap_or_else(|_| raise(&AuthError::malformed("the token contains a NUL byte")));
    // SAFETY: both strings are NUL-terminated and outlive the call; this is what
    // set_config(name, value, is_local => true) does.
    unsafe {
        pg_sys::set_config_option(
            c"outseta_auth.token".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
    claims
}

/// All claims of the current token, or NULL without one.
#[pg_extern(stable, parallel_safe)]
fn outseta_claims() -> Option<RawJsonb> {
    current().map(|v| claims_jsonb(&v))
}

/// One claim of the current token, as jsonb.
#[pg_extern(stable, parallel_safe)]
fn outseta_claim(name: &str) -> Option<JsonB> {
    current()
        .and_then(|v| v.claims.get(name).cloned())
        .map(JsonB)
}

/// The Outseta Person uid (`sub`) of the current token.
#[pg_extern(stable, parallel_safe)]
fn outseta_sub() -> Option<String> {
    current().and_then(|v| v.sub.clone())
}

/// `outseta:accountUid` of the current token.
#[pg_extern(stable, parallel_safe)]
fn outseta_account_uid() -> Option<String> {
    current().and_then(|v| v.account_uid.clone())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_email() -> Option<String> {
    current().and_then(|v| v.email.clone())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_name() -> Option<String> {
    current().and_then(|v| v.name.clone())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_plan_uid() -> Option<String> {
    current().and_then(|v| v.plan_uid.clone())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_subscription_uid() -> Option<String> {
    current().and_then(|v| v.subscription_uid.clone())
}

#[pg_extern(stable, parallel_safe)]
fn outseta_add_on_uids() -> Option<Vec<String>> {
    current().and_then(|v| v.add_on_uids.clone())
}

/// `outseta:isPrimary` ("1"/"0" in Outseta's tokens) as a boolean.
#[pg_extern(stable, parallel_safe)]
fn outseta_is_primary() -> Option<bool> {
    current().and_then(|v| v.is_primary)
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
        name!(token_cache_hits, i64),
        name!(token_cache_misses, i64),
    ),
> {
    let (rows, hits, misses) = ENGINE.with_borrow_mut(|engine| {
        // Show the configured source even before first use; a config error shows as no row.
        let _ = engine.configure(settings::generation(), settings::build_config);
        (engine.status(), engine.hits as i64, engine.misses as i64)
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
                hits,
                misses,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Fetch the JWKS now (superuser only). Returns the number of usable keys.
#[pg_extern(volatile, parallel_unsafe)]
fn outseta_refresh_jwks() -> i32 {
    // SAFETY: superuser() only reads the current user's catalog entry.
    if !unsafe { pg_sys::superuser() } {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "permission denied for function outseta_refresh_jwks",
            "outseta_auth",
        )
        .set_hint("Only superusers may force a JWKS refetch.")
        .report(PgLogLevel::ERROR);
    }
    let n = ENGINE
        .with_borrow_mut(|engine| {
            engine.configure(settings::generation(), settings::build_config)?;
            engine.refresh(&HttpFetcher, now())
        })
        .or_raise();
    n as i32
}

extension_sql!(
    r#"
REVOKE EXECUTE ON FUNCTION outseta_refresh_jwks() FROM PUBLIC;
"#,
    name = "revoke_refresh",
    requires = [outseta_refresh_jwks],
    finalize,
);
