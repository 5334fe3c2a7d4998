//! The one place where core errors become Postgres errors.

use outseta_auth_core::{AuthError, ErrorClass};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// SQLSTATE for each class of error; documented in README's error table.
pub fn sqlstate(e: &AuthError) -> PgSqlErrorCode {
    match e.class() {
        // 28000 invalid_authorization_specification
        ErrorClass::Token => PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        // 58000 system_error: the failure is outside the database (network, JWKS server)
        ErrorClass::Jwks => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        // 22023 invalid_parameter_value
        ErrorClass::Config => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
    }
}

/// Raise `e` as an SQL ERROR with its SQLSTATE, message, DETAIL and HINT.
pub fn raise(e: &AuthError) -> ! {
    let mut report = ErrorReport::new(sqlstate(e), e.message(), "outseta_auth");
    if let Some(d) = e.detail() {
        report = report.set_detail(d);
    }
    if let Some(h) = e.hint() {
        report = report.set_hint(h);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) does not return")
}

pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, AuthError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(&e))
    }
}
