//! Fixture of the portable edition's suites: a database of its own on a cluster where the
//! native library is not loaded, the plain script installed by a role that is not a
//! superuser (as on hosted platforms), and helpers to configure it as its owner.

use postgres::Client;

use crate::connect_as;

/// The role that installs and owns the portable edition (not a superuser).
pub const OWNER: &str = "portable_owner";
/// An ordinary role of the application (neither superuser nor owner).
pub const APP: &str = "portable_app";

/// The cluster the portable suites use: `OUTSETA_PORTABLE_PGPORT` (scripts/portable, any
/// PostgreSQL version), else the client suites' cluster without preload (scripts/e2e).
pub fn port() -> u16 {
    std::env::var("OUTSETA_PORTABLE_PGPORT")
        .or_else(|_| std::env::var("OUTSETA_E2E_NOPRELOAD_PORT"))
        .expect("run these tests through scripts/portable or scripts/e2e")
        .parse()
        .expect("a port number")
}

pub fn script() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../portable/outseta_auth_sql.sql"
    )
    .to_string()
}

/// Run a psql script file as `user` on database `db`; panics with psql's output on failure.
pub fn psql_file(port: u16, user: &str, db: &str, file: &str) {
    psql_file_with(port, user, db, file, "\"$user\", public");
}

/// As [`psql_file`], with the session's `search_path` (the script installs into its first
/// schema).
pub fn psql_file_with(port: u16, user: &str, db: &str, file: &str, search_path: &str) {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", user, "-d", db, "-f", file])
        .env(
            "PGOPTIONS",
            format!("-c search_path={}", search_path.replace(' ', "\\ ")),
        )
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql -f {file} as {user}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new database `name` on the cluster at `port`, owned by `roles[0]`, with every role of
/// `roles` a LOGIN role (made if missing, safely when tests do it at once); a superuser's
/// connection to it.
pub fn new_database(port: u16, name: &str, roles: &[&str]) -> Client {
    let mut su = connect_as(port, "postgres", "postgres");
    for role in roles {
        su.batch_execute(&format!(
            "DO $$ BEGIN
                 CREATE ROLE {role} LOGIN NOSUPERUSER;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        ))
        .unwrap();
    }
    su.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    su.batch_execute(&format!("CREATE DATABASE {name} OWNER {}", roles[0]))
        .unwrap();
    connect_as(port, "postgres", name)
}

/// A new database `name` owned by [`OWNER`], with the portable edition installed into its
/// schema `public` by that role. Returns the owner's connection.
pub fn fresh_db(name: &str) -> Client {
    let port = port();
    new_database(port, name, &[OWNER, APP]);
    let mut db = connect_as(port, "postgres", name);
    // As on PostgreSQL 15 on: only the database owner may create in public.
    db.batch_execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO pg_database_owner;")
        .unwrap();
    psql_file(port, OWNER, name, &script());
    connect_as(port, OWNER, name)
}

/// Set a setting as the owner.
pub fn set(owner: &mut Client, setting: &str, value: &str) {
    owner
        .execute("SELECT outseta_config_set($1, $2)", &[&setting, &value])
        .unwrap_or_else(|e| panic!("outseta_config_set({setting}): {e}"));
}

/// `outseta_try_verify(token)` as `(valid, error_code)`.
pub fn try_verify(c: &mut Client, token: &str) -> (bool, Option<String>) {
    let row = c
        .query_one(
            "SELECT (r).valid, (r).error_code FROM (SELECT outseta_try_verify($1) AS r) x",
            &[&token],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}
