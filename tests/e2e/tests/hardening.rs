//! What an ordinary role, a hostile payload and a broken issuer can still do: each test
//! goes through a real client connection, as the role that would try it.

use std::time::{Duration, Instant};

use outseta_dev::{Fault, Issuer, Server, TokenRequest};
use outseta_e2e::*;
use postgres::error::SqlState;
use postgres::{Client, NoTls};

fn sqlstate(e: &postgres::Error) -> SqlState {
    e.code()
        .cloned()
        .unwrap_or_else(|| panic!("not a database error: {e}"))
}

fn message(e: &postgres::Error) -> String {
    let db = e.as_db_error().expect("a database error");
    format!(
        "{} | {} | {}",
        db.message(),
        db.detail().unwrap_or(""),
        db.hint().unwrap_or("")
    )
}

/// The backend's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Reset the backend's peak to its current resident size.
fn reset_peak(pid: i32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .expect("resetting VmHWM (needs the same user as the server, or root)");
}

#[test]
fn huge_request_settings_are_refused_without_allocating() {
    let mut c = app();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    c.batch_execute("SELECT outseta_auth_version()").unwrap();
    for setting in ["request.cookies", "request.headers"] {
        let mut tx = c.transaction().unwrap();
        // A 40 MB JSON array, set by the ordinary role.
        tx.batch_execute(&format!(
            "SELECT set_config('{setting}', '[' || repeat('0,', 20000000) || '0]', true)"
        ))
        .unwrap();
        reset_peak(pid);
        let before = peak_rss(pid);
        let e = tx.query_one("SELECT outseta_sub()", &[]).unwrap_err();
        let grew = peak_rss(pid).saturating_sub(before);
        assert_eq!(
            sqlstate(&e),
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "{e}"
        );
        assert!(message(&e).contains(setting), "{}", message(&e));
        assert!(
            grew < 8 * 1024 * 1024,
            "{setting}: the backend's peak memory grew by {grew} bytes"
        );
        drop(tx);
    }
    // A large but plausible cookie header (60 KB of other cookies) still works.
    let mut cookies = serde_json::Map::new();
    for i in 0..60 {
        cookies.insert(format!("other{i}"), "x".repeat(1000).into());
    }
    cookies.insert(
        "Outseta.nocode.accessToken".into(),
        token(JANE, ACME).into(),
    );
    let mut tx = c.transaction().unwrap();
    tx.execute(
        "SELECT set_config('request.cookies', $1, true)",
        &[&serde_json::Value::Object(cookies).to_string()],
    )
    .unwrap();
    let sub: Option<String> = tx.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
    assert_eq!(sub.as_deref(), Some(JANE));
}

#[test]
fn a_token_cannot_be_planted_in_role_or_database_defaults() {
    let t = token(JANE, ACME);
    // The application role (library preloaded): refused when it tries.
    let mut c = app();
    let e = c
        .batch_execute(&format!(
            "ALTER ROLE outseta_app SET outseta_auth.token = '{t}'"
        ))
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INVALID_PARAMETER_VALUE, "{e}");
    assert!(
        message(&e).contains("can only be set in a session or transaction"),
        "{}",
        message(&e)
    );
    assert!(!message(&e).contains(&t[..20]), "token material echoed");

    // Not even a superuser can make it a default.
    let mut su = superuser();
    for sql in [
        format!("ALTER DATABASE {DB} SET outseta_auth.token = '{t}'"),
        format!("ALTER ROLE outseta_app IN DATABASE {DB} SET outseta_auth.token = '{t}'"),
        format!("ALTER SYSTEM SET outseta_auth.token = '{t}'"),
    ] {
        let e = su.batch_execute(&sql).unwrap_err();
        assert_eq!(
            sqlstate(&e),
            SqlState::INVALID_PARAMETER_VALUE,
            "{sql}: {e}"
        );
    }
    // Nor a connection string: the connection is refused.
    let refused = Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=outseta_app dbname={DB} options='-c outseta_auth.token={t}'",
            fixture().port
        ),
        NoTls,
    );
    assert!(refused.is_err(), "a connection-string token was accepted");
}

#[test]
fn without_preload_a_planted_token_is_ignored() {
    let t = token(JANE, ACME);
    // The application role, library not yet loaded: the name is a placeholder, and
    // Postgres refuses placeholders in role settings to ordinary roles.
    let mut fresh = app_nopreload();
    let e = fresh
        .batch_execute(&format!(
            "ALTER ROLE outseta_app SET outseta_auth.token = '{t}'"
        ))
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INSUFFICIENT_PRIVILEGE, "{e}");
    // Library loaded in the session: the check hook refuses it.
    fresh
        .batch_execute("SELECT outseta_auth_version()")
        .unwrap();
    let e = fresh
        .batch_execute(&format!(
            "ALTER ROLE outseta_app SET outseta_auth.token = '{t}'"
        ))
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INVALID_PARAMETER_VALUE, "{e}");

    // A default stored while the library was not loaded (or before this rule existed)
    // is ignored when a session of that role starts; so is one in the connection string.
    let mut unloaded = superuser_nopreload();
    unloaded
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'outseta_planted') THEN
                     CREATE ROLE outseta_planted LOGIN;
                 END IF;
             END $$;
             ALTER ROLE outseta_planted SET outseta_auth.token = '{t}'"
        ))
        .unwrap();
    let mut planted = connect_as(fixture().nopreload_port, "outseta_planted", DB);
    let row = planted
        .query_one(
            "SELECT outseta_sub(), current_setting('outseta_auth.token')",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None, "planted token used");
    assert_eq!(row.get::<_, String>(1), "");
    unloaded
        .batch_execute("ALTER ROLE outseta_planted RESET ALL")
        .unwrap();

    // A monitoring role (pg_monitor may call outseta_jwks_status(), below).
    monitoring_role(fixture().nopreload_port, "outseta_ops");
    let mut with_option = Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=outseta_ops dbname={DB} options='-c outseta_auth.token={t}'",
            fixture().nopreload_port
        ),
        NoTls,
    )
    .unwrap();
    let sub: Option<String> = with_option
        .query_one("SELECT outseta_sub()", &[])
        .unwrap()
        .get(0);
    assert_eq!(sub, None, "a connection-string token was used");
    // Set in the transaction, the same token works (per-backend keys: shared is false).
    let mut tx = with_option.transaction().unwrap();
    tx.execute("SELECT set_config('outseta_auth.token', $1, true)", &[&t])
        .unwrap();
    let sub: Option<String> = tx.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
    assert_eq!(sub.as_deref(), Some(JANE));
    let shared: bool = tx
        .query_one("SELECT bool_or(shared) FROM outseta_jwks_status()", &[])
        .unwrap()
        .get(0);
    assert!(!shared, "without preload the keys are per backend");
}

#[test]
fn bad_settings_fail_when_set_with_22023() {
    let mut su = superuser();
    su.batch_execute("SELECT outseta_auth_version()").unwrap();
    let cases = [
        ("outseta_auth.algorithms", "HS256", "never allowed"),
        (
            "outseta_auth.algorithms",
            "RS256, XS999",
            "unknown algorithm",
        ),
        ("outseta_auth.token_sources", "bogus", "unknown source"),
        ("outseta_auth.token_sources", "cookie,cookie", "twice"),
        (
            "outseta_auth.jwks_url",
            "http://example.com/jwks",
            "loopback",
        ),
        ("outseta_auth.jwks_url", "ftp://127.0.0.1/jwks", "scheme"),
        ("outseta_auth.jwks", r#"{"keys": 5}"#, ""),
        (
            "outseta_auth.domain",
            "https://myapp.outseta.com/",
            "host name",
        ),
    ];
    for (setting, value, needle) in cases {
        for sql in [
            format!("SET {setting} = '{value}'"),
            format!("SELECT set_config('{setting}', '{value}', true)"),
            format!("ALTER ROLE outseta_app SET {setting} = '{value}'"),
        ] {
            let e = su.batch_execute(&sql).unwrap_err();
            assert_eq!(
                sqlstate(&e),
                SqlState::INVALID_PARAMETER_VALUE,
                "{sql}: {e}"
            );
            let m = message(&e);
            assert!(
                m.starts_with(&format!("invalid value for {setting}")),
                "{sql}: {m}"
            );
            assert!(m.contains(needle), "{sql}: {m}");
        }
    }
    // The failed SETs left the settings as they were: verification still works.
    let sub: String = su
        .query_one("SELECT outseta_verify($1) ->> 'sub'", &[&token(JANE, ACME)])
        .unwrap()
        .get(0);
    assert_eq!(sub, JANE);
}

#[test]
fn signals_during_a_jwks_fetch_do_not_fail_it() {
    // Postgres sends backends SIGUSR1 for cache invalidation, notifications, barriers and
    // memory-context dumps; each interrupts a blocking socket read (EINTR). The fetch must
    // carry on until its deadline instead of failing.
    let slow = Server::start("127.0.0.1:0", Issuer::new(ISSUER)).unwrap();
    // The answer comes after 5 s: time for 10 signals however slow the machine is.
    slow.set_fault(Fault::Slow(Duration::from_secs(5)));
    let t = slow.mint(&TokenRequest::new(JANE, ACME));
    let mut su = superuser();
    su.batch_execute(&format!(
        "SET outseta_auth.jwks_url = '{}'; SET outseta_auth.http_timeout = '10s';
         SET outseta_auth.jwks_refresh_min_interval = '1min'",
        slow.jwks_url()
    ))
    .unwrap();
    let pid: i32 = su.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let signaller = std::thread::spawn(move || {
        let mut other = superuser();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..10 {
            let ok: bool = other
                .query_one("SELECT pg_log_backend_memory_contexts($1)", &[&pid])
                .unwrap()
                .get(0);
            assert!(ok, "the backend was not signalled");
            std::thread::sleep(Duration::from_millis(50));
        }
        Instant::now()
    });
    let started = Instant::now();
    let sub: String = su
        .query_one("SELECT outseta_verify($1) ->> 'sub'", &[&t])
        .unwrap_or_else(|e| panic!("the fetch failed under signals: {}", message(&e)))
        .get(0);
    let answered = Instant::now();
    let signalled = signaller.join().unwrap();
    assert_eq!(sub, JANE);
    assert!(
        signalled < answered,
        "the 10 signals came after the answer: not during the fetch"
    );
    assert!(started.elapsed() >= Duration::from_millis(4900));
    assert_eq!(
        slow.hits("/.well-known/jwks"),
        1,
        "one fetch, not retried by a new request"
    );
}

/// No token value in the server log or a client's error, whatever carries the statement that
/// sets it (log_statement, an error's STATEMENT line, Citus's CONTEXT of a failed hand-on).
#[test]
fn the_token_never_reaches_the_server_log_or_an_error() {
    let token = token(JANE, ACME);
    let signature = token.rsplit('.').next().unwrap().to_string();
    let mut su = superuser();
    su.batch_execute("SET log_statement = 'all'").unwrap();
    // A simple-query string that sets the token, then fails: its STATEMENT line and the
    // statement log would both quote it.
    let e = su
        .batch_execute(&format!(
            "BEGIN; SET LOCAL outseta_auth.token = '{token}'; SELECT 1/0; COMMIT;"
        ))
        .unwrap_err();
    assert!(!format!("{e:?}").contains(&signature), "{e:?}");
    su.batch_execute("ROLLBACK").ok();
    // An error whose DETAIL quotes the setting statement, as Citus's CONTEXT does.
    let quoted = format!("SQL statement \"SET LOCAL outseta_auth.token = '{token}'\"");
    let mut tx = su.transaction().unwrap();
    tx.execute(
        "SELECT set_config('outseta_e2e.quoted', $1, true)",
        &[&quoted],
    )
    .unwrap();
    let e = tx
        .batch_execute(
            "DO $$ BEGIN RAISE EXCEPTION 'hand-on failed' USING DETAIL = current_setting('outseta_e2e.quoted'); END $$",
        )
        .unwrap_err();
    drop(tx);
    let db = e.as_db_error().unwrap();
    let client_text = format!("{} {:?} {:?}", db.message(), db.detail(), db.where_());
    assert!(!client_text.contains(&signature), "{client_text}");
    assert!(client_text.contains("(hidden)"), "{client_text}");
    su.batch_execute("RESET log_statement").unwrap();
    // The log is written by another process: wait for the marker that follows.
    let marker = format!("outseta-redaction-marker-{}", std::process::id());
    su.batch_execute(&format!("DO $$ BEGIN RAISE LOG '{marker}'; END $$"))
        .unwrap();
    let path = std::env::var("OUTSETA_E2E_SERVER_LOG").expect("run through scripts/e2e");
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&path).unwrap();
        if log.contains(&marker) || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log.contains(&marker));
    assert!(
        !log.contains(&signature),
        "the token's signature is in the server log"
    );
    assert!(log.contains("outseta_auth.token = '(hidden)'"));
}

/// outseta_auth.webhook_secret on the server's command line (which ps shows) is refused:
/// scripts/e2e starts the cluster without preload with `-c outseta_auth.webhook_secret=...`.
#[test]
fn a_webhook_secret_from_the_command_line_is_not_used() {
    let mut c = superuser_nopreload();
    let e = c
        .query_one(
            "SELECT outseta_verify_webhook('{}'::text, 'sha256=00')",
            &[],
        )
        .unwrap_err();
    assert_eq!(sqlstate(&e), SqlState::INVALID_PARAMETER_VALUE, "{e}");
    assert!(
        message(&e).contains("no webhook key is configured"),
        "{}",
        message(&e)
    );
}
