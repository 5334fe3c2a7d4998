//! End to end, as an application meets the product: a real client connection as an
//! ordinary role, the example RLS schema, tokens minted by outseta-dev and a JWKS the
//! extension fetches from it over HTTP on 127.0.0.1.

use std::collections::HashSet;
use std::time::Duration;

use outseta_dev::{with_payload, TokenRequest};
use outseta_e2e::*;
use postgres::error::SqlState;
use postgres::{Client, Transaction};

/// A transaction whose first statement sets the token, as an app (or PostgREST) does.
fn begin_with<'a>(c: &'a mut Client, token: &str) -> Transaction<'a> {
    let mut tx = c.transaction().unwrap();
    tx.execute(
        "SELECT set_config('outseta_auth.token', $1, true)",
        &[&token],
    )
    .unwrap();
    tx
}

/// Run `sql` in a transaction that first sets the token, return the first column as text.
fn texts_with(c: &mut Client, token: &str, sql: &str) -> Result<Vec<String>, postgres::Error> {
    let mut tx = begin_with(c, token);
    let rows = tx.query(sql, &[])?;
    tx.commit()?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

fn sqlstate(e: &postgres::Error) -> SqlState {
    e.code()
        .cloned()
        .unwrap_or_else(|| panic!("not a database error: {e}"))
}

#[test]
fn people_see_only_their_own_rows() {
    let mut c = app();
    let cases: [(&str, &str, &str, &[&str]); 4] = [
        (
            JANE,
            ACME,
            "todos",
            &["Jane: renew passport", "Jane: book dentist"],
        ),
        (BOB, GLOBEX, "todos", &["Bob: file expenses"]),
        (JANE, ACME, "documents", &["Acme roadmap"]),
        (
            JANE,
            GLOBEX,
            "documents",
            &["Globex budget", "Globex hiring plan"],
        ),
    ];
    for (person, account, table, expected) in cases {
        let sql = format!("SELECT title FROM {table} ORDER BY id");
        let seen = texts_with(&mut c, &token(person, account), &sql).unwrap();
        assert_eq!(seen, expected, "{person} in {account} reading {table}");
    }
}

#[test]
fn one_person_has_different_rights_in_two_accounts() {
    let mut c = app();
    let role = |c: &mut Client, t: &str| texts_with(c, t, "SELECT current_account_role()").unwrap();
    assert_eq!(role(&mut c, &token(JANE, ACME)), ["admin"]);
    assert_eq!(role(&mut c, &token(JANE, GLOBEX)), ["viewer"]);

    // A viewer's delete matches no row; an admin's delete works (rolled back).
    let mut tx = begin_with(&mut c, &token(JANE, GLOBEX));
    assert_eq!(
        tx.execute("DELETE FROM documents WHERE title = 'Globex budget'", &[])
            .unwrap(),
        0
    );
    tx.rollback().unwrap();
    let mut tx = begin_with(&mut c, &token(BOB, GLOBEX));
    assert_eq!(
        tx.execute("DELETE FROM documents WHERE title = 'Globex budget'", &[])
            .unwrap(),
        1
    );
    tx.rollback().unwrap();
}

#[test]
fn rows_for_someone_else_fail_the_with_check() {
    let mut c = app();
    let mut tx = begin_with(&mut c, &token(JANE, ACME));
    let e = tx
        .execute(
            "INSERT INTO todos (user_id, title) VALUES ($1, 'x')",
            &[&BOB],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INSUFFICIENT_PRIVILEGE, "{e}");
    drop(tx);

    // Defaults and the trigger stamp the verified identity.
    let mut tx = begin_with(&mut c, &token(JANE, ACME));
    let row = tx
        .query_one(
            "INSERT INTO documents (title) VALUES ('new') RETURNING account_uid, created_by_person_uid",
            &[],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (ACME.to_string(), JANE.to_string())
    );
    tx.rollback().unwrap();
}

#[test]
fn subscription_gated_rows() {
    let mut c = app();
    let mut with_addon = TokenRequest::new(JANE, ACME);
    with_addon.add_on_uids = vec!["addon_reporting".into()];
    let seen = texts_with(&mut c, &token_with(with_addon), "SELECT title FROM reports").unwrap();
    assert_eq!(seen, ["Acme quarterly report"]);
    let none = texts_with(&mut c, &token(JANE, ACME), "SELECT title FROM reports").unwrap();
    assert!(none.is_empty());
}

#[test]
fn no_token_sees_nothing_without_error() {
    let mut c = app();
    let n: i64 = c
        .query_one("SELECT count(*) FROM todos", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let sub: Option<String> = c.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
    assert_eq!(sub, None);
}

#[test]
fn invalid_tokens_are_refused_with_28000_and_no_secret_in_the_message() {
    let mut c = app();
    let mut expired = TokenRequest::new(JANE, ACME);
    expired.expires_in = -3600;
    let good = token(BOB, GLOBEX);
    let tampered = with_payload(&good, br#"{"sub":"L9nqAzQZ","exp":9999999999}"#);
    for (t, msg) in [
        (token_with(expired), "Outseta token has expired"),
        (tampered, "Outseta token has a bad signature"),
        ("not-a-token".to_string(), "Outseta token is malformed"),
    ] {
        let e = texts_with(&mut c, &t, "SELECT title FROM todos").unwrap_err();
        assert_eq!(
            sqlstate(&e),
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "{e}"
        );
        let db = e.as_db_error().unwrap();
        assert_eq!(db.message(), msg);
        let all = format!("{} {:?} {:?}", db.message(), db.detail(), db.hint());
        for part in t.split('.').filter(|p| p.len() > 8) {
            assert!(!all.contains(part), "token material in the error: {all}");
        }
    }
}

#[test]
fn jwks_unreachable_is_58000_and_bad_settings_are_22023() {
    let mut su = superuser();
    su.batch_execute("SET outseta_auth.jwks_url = 'http://127.0.0.1:1/.well-known/jwks'")
        .unwrap();
    let e = su
        .query_one("SELECT outseta_verify($1)", &[&token(JANE, ACME)])
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::SYSTEM_ERROR, "{e}");
    assert!(e
        .as_db_error()
        .unwrap()
        .message()
        .contains("http://127.0.0.1:1/.well-known/jwks"));
    // A bad value fails when set (more cases in hardening.rs), not in a later query.
    let e = su
        .batch_execute("SET outseta_auth.jwks_url = 'http://example.com/jwks'")
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INVALID_PARAMETER_VALUE, "{e}");
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "invalid value for outseta_auth.jwks_url"
    );
}

#[test]
fn postgrest_contract_cookie_and_header() {
    let mut c = app();
    // Exactly what PostgREST does per request: JSON text settings, transaction-local.
    let cookies =
        serde_json::json!({"Outseta.nocode.accessToken": token(JANE, ACME), "other": "x"});
    let mut tx = c.transaction().unwrap();
    tx.execute(
        "SELECT set_config('request.cookies', $1, true)",
        &[&cookies.to_string()],
    )
    .unwrap();
    tx.execute(
        "SELECT set_config('request.headers', $1, true)",
        &[&r#"{"accept":"*/*"}"#],
    )
    .unwrap();
    let rows = tx
        .query("SELECT title FROM todos ORDER BY id", &[])
        .unwrap();
    assert_eq!(rows.len(), 2);
    tx.commit().unwrap();

    // The header source (outseta_auth.token_header = 'authorization' for this role).
    let headers = serde_json::json!({"authorization": format!("Bearer {}", token(BOB, GLOBEX))});
    let mut tx = c.transaction().unwrap();
    tx.execute(
        "SELECT set_config('request.headers', $1, true)",
        &[&headers.to_string()],
    )
    .unwrap();
    let sub: Option<String> = tx.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
    assert_eq!(sub.as_deref(), Some(BOB));
    tx.commit().unwrap();

    // Unverified claims are never identity.
    let mut tx = c.transaction().unwrap();
    tx.execute(
        "SELECT set_config('request.jwt.claims', $1, true)",
        &[&format!(r#"{{"sub":"{JANE}"}}"#)],
    )
    .unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM todos", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    tx.commit().unwrap();

    // A forged cookie is refused like any token.
    let mut tx = c.transaction().unwrap();
    let bad = serde_json::json!({"Outseta.nocode.accessToken": "x.y.z"});
    tx.execute(
        "SELECT set_config('request.cookies', $1, true)",
        &[&bad.to_string()],
    )
    .unwrap();
    let e = tx.query("SELECT title FROM todos", &[]).unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
}

#[test]
fn the_application_role_cannot_touch_trust_settings() {
    let mut c = app();
    // Load the library in this session (the cluster does not preload it; before loading,
    // names are placeholders: see trust_settings_set_before_the_library_loads_are_discarded).
    c.batch_execute("SELECT outseta_auth_version()").unwrap();
    for setting in [
        "outseta_auth.domain",
        "outseta_auth.jwks_url",
        "outseta_auth.jwks",
        "outseta_auth.algorithms",
        "outseta_auth.issuer",
        "outseta_auth.audience",
        "outseta_auth.leeway",
        "outseta_auth.jwks_cache_ttl",
        "outseta_auth.jwks_refresh_min_interval",
        "outseta_auth.http_timeout",
        "outseta_auth.token_sources",
        "outseta_auth.token_header",
        "outseta_auth.token_cookie",
    ] {
        let value = if setting.ends_with("leeway")
            || setting.contains("ttl")
            || setting.contains("interval")
            || setting.contains("timeout")
        {
            "1000"
        } else {
            "x"
        };
        for sql in [
            format!("SET {setting} = '{value}'"),
            format!("SELECT set_config('{setting}', '{value}', false)"),
            format!("ALTER ROLE outseta_app SET {setting} = '{value}'"),
        ] {
            let e = c.batch_execute(&sql).unwrap_err();
            assert_eq!(sqlstate(&e), SqlState::INSUFFICIENT_PRIVILEGE, "{sql}: {e}");
        }
    }
    let e = c
        .query_one("SELECT outseta_refresh_jwks()", &[])
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INSUFFICIENT_PRIVILEGE);
    // The token itself is the app's to set.
    c.batch_execute("SET outseta_auth.token = ''").unwrap();
}

#[test]
fn accessors_agree_in_a_forced_parallel_plan() {
    let mut su = superuser();
    su.batch_execute(
        "CREATE TABLE IF NOT EXISTS par_big AS
             SELECT g AS id, (ARRAY['L9nqAzQZ','DQ2b7wmV','other'])[1 + g % 3] AS owner
             FROM generate_series(1, 300000) g;
         GRANT SELECT ON par_big TO outseta_app;
         ANALYZE par_big;",
    )
    .unwrap();
    let mut c = app();
    let mut tx = begin_with(&mut c, &token(JANE, ACME));
    let q = "SELECT count(*) FROM par_big WHERE owner = outseta_sub()";
    force_parallel(&mut tx, q);
    let parallel: i64 = tx.query_one(q, &[]).unwrap().get(0);
    tx.batch_execute("SET LOCAL max_parallel_workers_per_gather = 0")
        .unwrap();
    let serial: i64 = tx.query_one(q, &[]).unwrap().get(0);
    assert_eq!(parallel, 100_000);
    assert_eq!(parallel, serial);
}

#[test]
fn pgbouncer_transaction_pooling_never_mixes_people() {
    let Ok(port) = std::env::var("OUTSETA_E2E_BOUNCER_PORT") else {
        panic!("OUTSETA_E2E_BOUNCER_PORT is not set: run through scripts/e2e");
    };
    let port: u16 = port.parse().unwrap();
    fixture();
    let people = [
        (JANE, ACME, 2usize),
        (BOB, GLOBEX, 1usize),
        ("nobody00", ACME, 0usize),
    ];
    let tokens: Vec<(String, &str, usize)> = people
        .iter()
        .map(|(p, a, n)| (token(p, a), *p, *n))
        .collect();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let tokens = tokens.clone();
            std::thread::spawn(move || {
                let mut c = connect_as(port, "outseta_app", DB);
                let mut seen = HashSet::new();
                for j in 0..40 {
                    let (t, person, expected) = &tokens[(i + j) % tokens.len()];
                    let mut tx = c.transaction().unwrap();
                    if j % 2 == 0 {
                        tx.execute("SELECT set_config('outseta_auth.token', $1, true)", &[t])
                            .unwrap();
                    } else {
                        tx.batch_execute(&format!("SET LOCAL outseta_auth.token = '{t}'"))
                            .unwrap();
                    }
                    let rows = tx.query("SELECT user_id FROM todos", &[]).unwrap();
                    assert_eq!(rows.len(), *expected, "{person} in transaction {j}");
                    for r in rows {
                        assert_eq!(r.get::<_, String>(0), *person, "someone else's row");
                    }
                    let backend: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
                    seen.insert(backend);
                    tx.commit().unwrap();
                    // Between transactions the pooled server connection carries no token.
                    // (Simple protocol: an unnamed prepare/execute pair may land on two
                    // server connections in transaction pooling.)
                    let msgs = c.simple_query("SELECT count(*) FROM todos").unwrap();
                    let n = msgs.iter().find_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
                        _ => None,
                    });
                    assert_eq!(
                        n.as_deref(),
                        Some("0"),
                        "a token leaked past its transaction"
                    );
                }
                seen
            })
        })
        .collect();
    let mut backends = HashSet::new();
    for t in threads {
        backends.extend(t.join().expect("client thread"));
    }
    assert!(
        backends.len() <= 2,
        "pool_size is 2, saw {} server connections",
        backends.len()
    );
}

#[test]
fn verification_writes_nothing_read_only_and_hot_standby() {
    // Read-only transaction on the primary.
    let mut c = app();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("SET TRANSACTION READ ONLY").unwrap();
    tx.execute(
        "SELECT set_config('outseta_auth.token', $1, true)",
        &[&token(JANE, ACME)],
    )
    .unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM todos", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    tx.commit().unwrap();

    // A streaming replica (scripts/e2e starts it): wait until the test database arrived.
    let port: u16 = std::env::var("OUTSETA_E2E_REPLICA_PORT")
        .expect("OUTSETA_E2E_REPLICA_PORT is not set: run through scripts/e2e")
        .parse()
        .unwrap();
    let mut replica = None;
    for _ in 0..100 {
        if let Ok(c) = postgres::Client::connect(
            &format!("host=127.0.0.1 port={port} user=outseta_app dbname={DB}"),
            postgres::NoTls,
        ) {
            replica = Some(c);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut r = replica.expect("the standby never had the test database");
    let standby: bool = r
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(standby, "connected to a hot standby");
    // The schema may still be replaying; retry briefly.
    let mut rows = None;
    for _ in 0..100 {
        match texts_with(
            &mut r,
            &token(BOB, GLOBEX),
            "SELECT title FROM todos ORDER BY id",
        ) {
            Ok(v) if !v.is_empty() => {
                rows = Some(v);
                break;
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    assert_eq!(
        rows.expect("RLS read on the standby"),
        ["Bob: file expenses"]
    );
    let e = texts_with(&mut r, "x.y.z", "SELECT title FROM todos").unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    // The standby preloads the library too: its own worker fetched the keys (the status is
    // for monitoring roles: asked as a superuser).
    let shared: bool = postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname={DB}"),
        postgres::NoTls,
    )
    .unwrap()
    .query_one("SELECT bool_and(shared) FROM outseta_jwks_status()", &[])
    .unwrap()
    .get(0);
    assert!(shared, "the standby's keys come from its background worker");
}

#[test]
fn trust_settings_set_before_the_library_loads_are_discarded() {
    // On the cluster that does not preload the library, it loads on first use in a new
    // session. Before that, `outseta_auth.*` names are mere placeholders that anyone may
    // set; when the library defines them, Postgres re-applies such values with the
    // privileges of the role that set them, so an ordinary role's attempt is discarded
    // (with a WARNING).
    let mut c = app_nopreload();
    let loaded: bool = c
        .query_one(
            "SELECT count(*) > 0 FROM pg_settings WHERE name = 'outseta_auth.jwks'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        !loaded,
        "the library was already loaded; this test needs a fresh session"
    );
    let evil = outseta_dev::SigningKey::generate("evil");
    let jwks = serde_json::json!({"keys": [evil.jwk()]}).to_string();
    c.batch_execute(&format!(
        "SET outseta_auth.jwks = '{jwks}'; SET outseta_auth.algorithms = 'RS256,PS256'"
    ))
    .unwrap();
    let _: String = c
        .query_one("SELECT outseta_auth_version()", &[])
        .unwrap()
        .get(0);
    let row = c
        .query_one("SELECT current_setting('outseta_auth.jwks'), current_setting('outseta_auth.algorithms')", &[])
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "",
        "the ordinary role's JWKS was discarded"
    );
    assert_eq!(row.get::<_, String>(1), "RS256");
    let forged = evil.mint(&serde_json::json!({"sub": JANE, "exp": 9_999_999_999u64}));
    let e = texts_with(&mut c, &forged, "SELECT title FROM todos").unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    // Superuser-set database defaults still apply.
    let ok = texts_with(
        &mut c,
        &token(JANE, ACME),
        "SELECT title FROM todos ORDER BY id",
    )
    .unwrap();
    assert_eq!(ok.len(), 2);
}

#[test]
fn a_slow_jwks_server_is_bounded_and_cancel_still_works() {
    use std::time::{Duration, Instant};
    let slow = outseta_dev::Server::start("127.0.0.1:0", outseta_dev::Issuer::new(ISSUER)).unwrap();
    // Far slower than every bound below: a bound met is the timeout's doing, whatever the
    // machine's load adds.
    slow.set_fault(outseta_dev::Fault::Slow(Duration::from_secs(10)));
    let t = slow.mint(&TokenRequest::new(JANE, ACME));
    // The per-backend path (no preload), where the query itself fetches; the shared path's
    // waits are tested in shared.rs.
    let mut su = superuser_nopreload();
    su.batch_execute(&format!(
        "SET outseta_auth.jwks_url = '{}'; SET outseta_auth.http_timeout = '500ms';
         SET outseta_auth.jwks_refresh_min_interval = 0",
        slow.jwks_url()
    ))
    .unwrap();

    // Bounded by the timeout, with a clear error; the backend stays usable.
    let started = Instant::now();
    let e = su
        .query_one("SELECT outseta_verify($1)", &[&t])
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::SYSTEM_ERROR, "{e}");
    assert!(
        e.as_db_error()
            .unwrap()
            .detail()
            .unwrap_or("")
            .contains("timed out"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    let one: i32 = su.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);

    // statement_timeout fires while the fetch waits: the query is canceled right after it.
    su.batch_execute("SET outseta_auth.http_timeout = '2s'; SET statement_timeout = '300ms'")
        .unwrap();
    let started = Instant::now();
    let e = su
        .query_one("SELECT outseta_verify($1)", &[&t])
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::QUERY_CANCELED, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    su.batch_execute("RESET statement_timeout").unwrap();
    let one: i32 = su.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
}

#[test]
fn a_warm_backend_keeps_its_cache_hits_past_jwks_max_stale() {
    // Short settings standing in for a day: the worker refetches the (unchanged) keys every
    // second; each fetch extends their trust by jwks_max_stale (60 s, the least allowed).
    let server =
        outseta_dev::Server::start("127.0.0.1:0", outseta_dev::Issuer::new(ISSUER)).unwrap();
    let mut c = superuser();
    c.batch_execute(&format!(
        "SET outseta_auth.jwks_url = '{}'; SET outseta_auth.jwks_cache_ttl = 1;
         SET outseta_auth.jwks_max_stale = 60; SET outseta_auth.jwks_refresh_min_interval = 0",
        server.jwks_url()
    ))
    .unwrap();
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    c.execute("SELECT set_config('outseta_auth.token', $1, false)", &[&t])
        .unwrap();
    // The accessor per row (a predicate on the row, not a one-time filter).
    let count =
        "SELECT count(*) FROM generate_series(1, 1000) g WHERE outseta_sub() || g IS NOT NULL";
    let n: i64 = c.query_one(count, &[]).unwrap().get(0);
    assert_eq!(n, 1000);
    let misses = |c: &mut Client| -> (i64, bool) {
        let r = c
            .query_one(
                "SELECT token_cache_misses, shared FROM outseta_jwks_status() WHERE source = $1",
                &[&server.jwks_url()],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(misses(&mut c).1, "the cluster's store serves this URL");
    // Past max_stale since this backend first parsed the keys (but not since their last
    // fetch): the 1,000 per-row calls are still cache hits, not signature checks (with a
    // stale fetch time they were 1,000 misses). The backend stays in use meanwhile (a
    // URL nobody asks for during max_stale is freed).
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(62) {
        std::thread::sleep(Duration::from_secs(5));
        c.query_one("SELECT outseta_sub()", &[]).unwrap();
    }
    let (before, _) = misses(&mut c);
    let n: i64 = c.query_one(count, &[]).unwrap().get(0);
    assert_eq!(n, 1000);
    let (after, _) = misses(&mut c);
    assert_eq!(after - before, 0, "misses for 1,000 calls past max_stale");
}
