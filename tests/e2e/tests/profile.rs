//! Outseta's profile endpoint and the webhook secret through real client connections, as
//! the application role: `outseta_profile()` fetched once per token (by the cluster's
//! background worker when preloaded, by the backend otherwise), cancellable while the
//! endpoint is slow; `outseta_auth.profile_check` refusing a deleted person's token and
//! failing closed when the endpoint is down; `outseta_auth.webhook_secret` invisible to an
//! ordinary role that can still verify signatures.
//!
//! The tests share the fixture's outseta-dev server (its profile fault and hit counts), so
//! they run one at a time.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use outseta_dev::{Fault, TokenRequest};
use outseta_e2e::*;
use postgres::error::SqlState;
use postgres::Client;
use serde_json::{json, Value};

const PROFILE: &str = "/api/v1/profile";

/// One test at a time; the profile URL configured (database default, by a superuser) on
/// the preloaded cluster and the one without preload.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static READY: OnceLock<()> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    READY.get_or_init(|| {
        let f = fixture();
        for port in [f.port, f.nopreload_port] {
            connect_as(port, "postgres", DB)
                .batch_execute(&format!(
                    "ALTER DATABASE {DB} SET outseta_auth.profile_url = '{}'",
                    f.server.profile_url()
                ))
                .unwrap();
        }
    });
    f().set_profile_fault(Fault::None);
    guard
}

fn f() -> &'static outseta_dev::Server {
    &fixture().server
}

/// A token no other test uses (tokens minted in the same second with the same claims are
/// identical, and the worker keeps answers per token).
fn fresh(sub: &str, account: &str) -> String {
    static N: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let mut req = TokenRequest::new(sub, account);
    req.expires_in = 3600 + N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    token_with(req)
}

fn hits() -> u64 {
    f().hits(PROFILE)
}

fn with_token(c: &mut Client, token: &str) {
    c.execute(
        "SELECT set_config('outseta_auth.token', $1, false)",
        &[&token],
    )
    .unwrap();
}

fn profile(c: &mut Client) -> Result<Option<Value>, postgres::Error> {
    c.query_one("SELECT outseta_profile()::text", &[]).map(|r| {
        r.get::<_, Option<String>>(0)
            .map(|t| serde_json::from_str(&t).expect("outseta_profile() is JSON"))
    })
}

/// The established TCP connections to 127.0.0.1:`port`, by socket inode, with the pid of
/// the process holding each (from /proc/net/tcp and each process's file descriptors).
fn connections_to(port: u16) -> HashMap<String, u32> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inodes: HashSet<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let remote_port = u16::from_str_radix(f.get(2)?.split(':').nth(1)?, 16).ok()?;
            // 01: ESTABLISHED
            (remote_port == port && *f.get(3)? == "01").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let mut held = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if inodes.contains(&target) {
                    held.insert(target, pid);
                }
            }
        }
    }
    held
}

/// While the endpoint answers slowly, which processes open connections to it during a
/// backend's first `outseta_profile()`: (the backend's pid, the pids that did). Connections
/// that were open before (e.g. abandoned requests of an earlier test) do not count.
fn who_fetches(mut c: Client, token: &str) -> (u32, HashSet<u32>) {
    let backend: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    with_token(&mut c, token);
    // The keys first (from the same server: fetched by this backend itself when the
    // cluster's store has no slot free for the URL), so that only profile requests remain.
    c.query_one("SELECT outseta_sub()", &[]).unwrap();
    let port = f().addr.port();
    let before = connections_to(port);
    f().set_profile_fault(Fault::Slow(Duration::from_millis(1000)));
    let query = std::thread::spawn(move || profile(&mut c).map(|p| p.is_some()));
    let mut opened = HashSet::new();
    while !query.is_finished() {
        for (inode, pid) in connections_to(port) {
            if !before.contains_key(&inode) {
                opened.insert(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(query.join().unwrap().unwrap());
    f().set_profile_fault(Fault::None);
    assert!(!opened.is_empty(), "no connection to the profile endpoint");
    (backend as u32, opened)
}

#[test]
fn the_profile_is_fetched_once_per_token_by_the_worker_and_cached() {
    let _one = serial();
    let mut props = serde_json::Map::new();
    props.insert("FavoriteColor".into(), json!("teal"));
    props.insert("Seats".into(), json!(12));
    f().set_properties(JANE, props);
    let jane = fresh(JANE, ACME);
    let mut c = app();
    assert_eq!(profile(&mut c).unwrap(), None, "NULL without a token");
    let before = hits();
    with_token(&mut c, &jane);
    let p = profile(&mut c).unwrap().expect("a profile");
    assert_eq!(p["Uid"], JANE);
    assert_eq!(p["FavoriteColor"], "teal", "custom properties by name");
    assert_eq!(p["Seats"], 12);
    assert_eq!(p["Account"]["Uid"], ACME);
    // Per row and repeated: answered from the cache.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM generate_series(1, 500)
             WHERE outseta_profile() ->> 'FavoriteColor' = 'teal'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 500);
    profile(&mut c).unwrap();
    assert_eq!(hits() - before, 1, "one request for 502 calls");
    // Another token: its own request.
    with_token(&mut c, &fresh(BOB, GLOBEX));
    assert_eq!(profile(&mut c).unwrap().unwrap()["Uid"], BOB);
    assert_eq!(hits() - before, 2);

    // Preloaded: the request is made by the background worker, not by the backend.
    let (backend, seen) = who_fetches(app(), &fresh(JANE, GLOBEX));
    assert!(
        !seen.contains(&backend),
        "the backend {backend} itself talked to the endpoint: {seen:?}"
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
    let worker = seen.iter().next().unwrap();
    let title = std::fs::read(format!("/proc/{worker}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&title).contains("outseta_auth JWKS worker"),
        "{}",
        String::from_utf8_lossy(&title)
    );
    // Without preload: by the backend (on a helper thread).
    let (backend, seen) = who_fetches(app_nopreload(), &fresh(BOB, ACME));
    assert_eq!(seen, HashSet::from([backend]));
}

#[test]
fn with_preload_new_connections_share_one_request_per_token_and_ttl() {
    let _one = serial();
    let profile_of = |mut c: Client, t: &str| {
        with_token(&mut c, t);
        profile(&mut c).unwrap().unwrap()["Uid"].clone()
    };
    // Preloaded: the worker keeps the answer for the cluster.
    let t = fresh(JANE, ACME);
    let before = hits();
    for _ in 0..10 {
        assert_eq!(profile_of(app(), &t), JANE);
    }
    assert_eq!(hits() - before, 1, "10 connections, one request");
    // Without preload each connection asks.
    let t = fresh(BOB, GLOBEX);
    let before = hits();
    for _ in 0..5 {
        assert_eq!(profile_of(app_nopreload(), &t), BOB);
    }
    assert_eq!(hits() - before, 5);

    // The kept answer lives one TTL for everyone: a deletion reaches a new connection,
    // and a connection that cached the answer itself, within profile_ttl of the request.
    // The TTL is long next to a connection's start on a loaded machine (the second
    // connection must come within it); every other wait is a lower bound.
    const TTL: Duration = Duration::from_secs(6);
    let session = || {
        let mut c = superuser();
        c.batch_execute(&format!(
            "SET outseta_auth.profile_check = on; SET outseta_auth.profile_ttl = '{}s';
             SET ROLE outseta_app",
            TTL.as_secs()
        ))
        .unwrap();
        c
    };
    let todos = |c: &mut Client| {
        c.query_one("SELECT count(*) FROM todos", &[])
            .map(|r| r.get::<_, i64>(0))
    };
    let bob = fresh(BOB, GLOBEX);
    let mut first = session();
    with_token(&mut first, &bob);
    assert_eq!(todos(&mut first).unwrap(), 1);
    // The answer arrived before this instant: TTL after it, it has run out.
    let answered = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let mut second = session();
    with_token(&mut second, &bob);
    let before = hits();
    assert_eq!(todos(&mut second).unwrap(), 1, "the kept answer, 2 s old");
    assert!(
        answered.elapsed() < TTL,
        "the second connection came after the TTL: {:?}",
        answered.elapsed()
    );
    assert_eq!(hits(), before, "no request for the second connection");
    f().set_deleted(BOB, true);
    // TTL after the request (not TTL after the second connection took it): refused.
    std::thread::sleep((TTL + Duration::from_millis(300)).saturating_sub(answered.elapsed()));
    for c in [&mut first, &mut second, &mut session()] {
        with_token(c, &bob);
        let e = todos(c).unwrap_err();
        assert_eq!(
            e.code(),
            Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
            "{e}"
        );
    }
    f().set_deleted(BOB, false);
}

#[test]
fn a_slow_profile_endpoint_can_be_cancelled_and_the_connection_still_works() {
    let _one = serial();
    f().set_profile_fault(Fault::Slow(Duration::from_secs(30)));
    for (what, mut c) in [("preloaded", app()), ("not preloaded", app_nopreload())] {
        with_token(&mut c, &fresh(JANE, ACME));
        c.batch_execute("SET statement_timeout = '300ms'").unwrap();
        let started = Instant::now();
        let e = profile(&mut c).unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{what}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: {:?}",
            started.elapsed()
        );
        c.batch_execute("RESET statement_timeout").unwrap();
        let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
        assert_eq!(one, 1, "{what}: the connection works afterwards");
    }
    // Without preload a cancelled request's thread runs on until its timeout; repeated
    // cancels do not pile them up (0.2.0: one more thread and socket per cancel).
    let mut c = app_nopreload();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    c.batch_execute("SET statement_timeout = '100ms'").unwrap();
    for _ in 0..8 {
        with_token(&mut c, &fresh(JANE, ACME));
        let e = profile(&mut c).unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    }
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(
        threads <= 3,
        "{threads} threads in the backend after 8 cancels"
    );
    c.batch_execute("RESET statement_timeout").unwrap();
    // outseta_auth.http_timeout bounds a request nobody cancels: 58000, not a hang.
    let mut c = superuser();
    c.batch_execute("SET outseta_auth.http_timeout = '500ms'")
        .unwrap();
    with_token(&mut c, &fresh(BOB, GLOBEX));
    let started = Instant::now();
    let e = profile(&mut c).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYSTEM_ERROR), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn profile_check_refuses_a_deleted_persons_token_and_fails_closed() {
    let _one = serial();
    // What the app's database default would be; set here per session by a superuser,
    // then the session acts as the application role.
    let session = |ttl: &str| {
        let mut c = superuser();
        c.batch_execute(&format!(
            "SET outseta_auth.profile_check = on; SET outseta_auth.profile_ttl = '{ttl}';
             SET ROLE outseta_app"
        ))
        .unwrap();
        c
    };
    let todos = |c: &mut Client| -> Result<i64, postgres::Error> {
        c.query_one("SELECT count(*) FROM todos", &[])
            .map(|r| r.get(0))
    };
    let mut c = session("1s");
    let bob = fresh(BOB, GLOBEX);
    with_token(&mut c, &bob);
    assert_eq!(todos(&mut c).unwrap(), 1, "Bob's todo");

    // Outseta deletes Bob: his token (still valid for days) stops working within the TTL.
    f().set_deleted(BOB, true);
    std::thread::sleep(Duration::from_millis(1100));
    let e = todos(&mut c).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    assert!(!format!("{db:?}").contains(&bob), "no token in the error");
    let code: String = c
        .query_one("SELECT (outseta_try_current()).error_code", &[])
        .unwrap()
        .get(0);
    assert_eq!(code, "revoked");
    // A new connection too; with profile_check off the token verifies again.
    let mut c2 = session("60s");
    with_token(&mut c2, &bob);
    assert!(todos(&mut c2).is_err());
    c2.batch_execute("RESET ROLE; SET outseta_auth.profile_check = off; SET ROLE outseta_app")
        .unwrap();
    assert_eq!(todos(&mut c2).unwrap(), 1);
    f().set_deleted(BOB, false);

    // The endpoint down: fails closed (58000), for every kind of failure.
    for fault in [
        Fault::Status(503),
        Fault::Hangup,
        Fault::Body("<html>".into()),
    ] {
        f().set_profile_fault(fault.clone());
        let mut c = session("60s");
        with_token(&mut c, &fresh(JANE, ACME));
        let e = todos(&mut c).unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::SYSTEM_ERROR), "{fault:?}: {e}");
        let code: String = c
            .query_one("SELECT (outseta_try_current()).error_code", &[])
            .unwrap()
            .get(0);
        assert_eq!(code, "profile_unavailable", "{fault:?}");
    }
    f().set_profile_fault(Fault::None);
    let mut c = session("60s");
    with_token(&mut c, &fresh(JANE, ACME));
    assert_eq!(todos(&mut c).unwrap(), 2, "Jane's todos once it answers");
}

#[test]
fn the_webhook_secret_is_invisible_to_the_application_role() {
    let _one = serial();
    configure_webhook_secret(fixture().port);
    let mut c = app();
    for q in [
        "SHOW outseta_auth.webhook_secret",
        "SELECT current_setting('outseta_auth.webhook_secret')",
        "SELECT current_setting('outseta_auth.webhook_secret', true)",
    ] {
        let e = c.simple_query(q).unwrap_err();
        assert_eq!(
            e.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{q}: {e}"
        );
        assert!(!e.to_string().contains(WEBHOOK_KEY));
    }
    let leaked: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_settings
             WHERE name = 'outseta_auth.webhook_secret' OR setting = $1",
            &[&WEBHOOK_KEY],
        )
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "not in pg_settings");
    let all: Vec<String> = c
        .simple_query("SHOW ALL")
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => {
                Some(format!("{}={}", r.get(0).unwrap(), r.get(1).unwrap_or("")))
            }
            _ => None,
        })
        .collect();
    assert!(all.len() > 100, "SHOW ALL works");
    assert!(!all.iter().any(|l| l.contains(WEBHOOK_KEY)));
    let e = c
        .batch_execute("SET outseta_auth.webhook_secret = '0000000000000000000000000000000000000000000000000000000000000000'")
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    // ...yet it can verify signatures made with it.
    let body = outseta_dev::account_webhook_body(ACME, "plan_team", &[]).to_string();
    let sig = outseta_dev::webhook_signature(WEBHOOK_KEY, body.as_bytes()).unwrap();
    let ok: bool = c
        .query_one("SELECT outseta_verify_webhook($1, $2)", &[&body, &sig])
        .unwrap()
        .get(0);
    assert!(ok);
    let other = outseta_dev::webhook_signature(&"ab".repeat(32), body.as_bytes()).unwrap();
    let ok: bool = c
        .query_one("SELECT outseta_verify_webhook($1, $2)", &[&body, &other])
        .unwrap()
        .get(0);
    assert!(!ok);
    // Nobody sees it: the superuser and a monitoring role (pg_monitor, a member of
    // pg_read_all_settings) only learn that it is set.
    monitoring_role(fixture().port, "outseta_monitor");
    let monitor = || connect_as(fixture().port, "outseta_monitor", DB);
    for (who, mut client) in [("superuser", superuser()), ("pg_monitor", monitor())] {
        for q in [
            "SHOW outseta_auth.webhook_secret",
            "SELECT current_setting('outseta_auth.webhook_secret')",
        ] {
            let seen: String = client.query_one(q, &[]).unwrap().get(0);
            assert_eq!(seen, "(hidden)", "{who}: {q}");
        }
    }
    // outseta_jwks_status() (every database's URLs and errors) is for monitoring roles.
    let e = c
        .query_one("SELECT count(*) FROM outseta_jwks_status()", &[])
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    let shared: i64 = monitor()
        .query_one(
            "SELECT count(*) FROM outseta_jwks_status() WHERE shared",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        shared >= 1,
        "the monitoring role sees the cluster's key sources"
    );
}

/// One token cannot take every profile slot of the worker (issue 28): 30 connections asking
/// about one token while the endpoint is slow share one request, and a second token asked
/// meanwhile still gets a slot.
#[test]
fn many_callers_with_one_token_share_one_slot_and_leave_the_others_free() {
    let _one = serial();
    let crowd = fresh(JANE, ACME);
    let other = fresh(BOB, GLOBEX);
    // Each connection's first profile call, ahead of the crowd, so that connecting is not
    // what is measured.
    let mut conns: Vec<Client> = (0..30).map(|_| app()).collect();
    for c in conns.iter_mut() {
        with_token(c, &crowd);
    }
    let mut lone = app();
    with_token(&mut lone, &other);
    f().set_profile_fault(Fault::Slow(Duration::from_millis(1500)));
    let before = hits();
    let crowd_threads: Vec<_> = conns
        .into_iter()
        .map(|mut c| std::thread::spawn(move || profile(&mut c).map(|p| p.unwrap()["Uid"].clone())))
        .collect();
    // Let the crowd take its places before the other token asks.
    std::thread::sleep(Duration::from_millis(300));
    let lone_answer = profile(&mut lone);
    let answers: Vec<_> = crowd_threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    f().set_profile_fault(Fault::None);
    for a in &answers {
        assert_eq!(a.as_ref().map_err(|e| e.to_string()).unwrap(), &json!(JANE));
    }
    let lone_answer = lone_answer.unwrap_or_else(|e| panic!("the other token found no slot: {e}"));
    assert_eq!(lone_answer.unwrap()["Uid"], BOB);
    assert_eq!(hits() - before, 2, "one request per token");
}
