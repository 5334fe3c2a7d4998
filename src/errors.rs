//! The one place where core errors become Postgres errors.
//!
//! SQL functions return `Result<_, ErrorReport>`; pgrx raises an `Err(ErrorReport)` with its
//! own SQLSTATE, message, DETAIL and HINT. `AuthError` (core crate) and `ErrorReport` (pgrx)
//! are both foreign to this crate, so the orphan rule forbids `impl From<AuthError> for
//! ErrorReport` here; [`report`] is that conversion, used as `.map_err(report)?`.

use outseta_auth_core::{AuthError, ErrorClass};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// SQLSTATE for each class of error; documented in README's error table.
pub fn sqlstate(e: &AuthError) -> PgSqlErrorCode {
    match e.class() {
        // 28000 invalid_authorization_specification
        ErrorClass::Token => PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        // 58000 system_error: the failure is outside the database (network, JWKS server)
        ErrorClass::Jwks => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        // 22023 invalid_parameter_value
        ErrorClass::Config => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        // 42501 insufficient_privilege
        ErrorClass::Privilege => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
    }
}

/// `e` as the current role may see it: a role without `pg_monitor` (PostgREST's anonymous
/// role, an application role) is not told internal URLs or network causes, which go to the
/// server log instead; the error code, SQLSTATE and hint stay.
pub fn for_caller(e: AuthError) -> AuthError {
    if !e.names_internals() || may_see_internals() {
        return e;
    }
    // LOG_SERVER_ONLY: never to the client, whatever its client_min_messages.
    pgrx::ereport!(
        pgrx::PgLogLevel::LOG_SERVER_ONLY,
        pgrx::PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        format!("outseta_auth: {e}")
    );
    e.without_internals()
}

fn may_see_internals() -> bool {
    // The role outside any SECURITY DEFINER function (inside one, the current user is its
    // owner, who may be a superuser calling on an anonymous caller's behalf).
    // SAFETY: reads role memberships (catalog caches), as any privilege check does;
    // superusers have the privileges of every role.
    unsafe {
        pg_sys::has_privs_of_role(
            pg_sys::GetOuterUserId(),
            pg_sys::Oid::from(pg_sys::ROLE_PG_MONITOR),
        )
    }
}

/// `e` as an SQL error report (SQLSTATE, message, DETAIL and HINT), as the current role may
/// see it ([`for_caller`]).
pub fn report(e: AuthError) -> ErrorReport {
    let e = for_caller(e);
    let mut report = ErrorReport::new(sqlstate(&e), e.message(), "outseta_auth");
    if let Some(d) = e.detail() {
        report = report.set_detail(d);
    }
    if let Some(h) = e.hint() {
        report = report.set_hint(h);
    }
    report
}
