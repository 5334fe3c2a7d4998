//! outseta_auth: verify Outseta-issued (JWKS-signed) JWT access tokens inside PostgreSQL,
//! so that Row Level Security policies can use the verified claims directly.
//!
//! The verification core lives in the `outseta_auth_core` crate (no Postgres types);
//! this crate is the SQL surface: settings, functions, and the error mapping.

use pgrx::prelude::*;

mod citus;
mod errors;
mod keys;
mod log_redaction;
mod profile;
mod settings;
mod shared;
mod sql_api;
mod token_source;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    // No token value in any message or log line, whoever's statement carries it.
    log_redaction::init();
    // jsonwebtoken panics on first use when no crypto provider is installed.
    outseta_auth_core::verify::install_crypto_provider();
    // On a Citus node: hand the request's token on to the workers (nothing otherwise).
    citus::init();
    // SAFETY: a plain read of a flag Postgres sets while loading shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        // Cluster-wide keys: shared memory and the background worker.
        shared::init();
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
