//! Cluster-wide keys through real connections to the preloaded cluster: one fetch for many
//! connections, none by parallel workers, rotation picked up everywhere after one fetch,
//! interruptible waits, and a full store falling back to per-backend fetching.
//!
//! Each test uses an issuer of its own (its own URL), so fetch counts are exact. They run on
//! a preloaded cluster of their own (8 URL slots, freed only after a day unused with the
//! default jwks_max_stale); the full-store test on another. The tests that stop the worker
//! or withdraw a kid are in `aging.rs`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use outseta_dev::{Fault, Issuer, Server, TokenRequest};
use outseta_e2e::*;
use postgres::error::SqlState;
use postgres::Client;

const JWKS: &str = "/.well-known/jwks";

fn issuer() -> Server {
    Server::start("127.0.0.1:0", Issuer::new(ISSUER)).unwrap()
}

/// A new superuser connection to the shared-store cluster.
fn connect() -> Client {
    static READY: OnceLock<u16> = OnceLock::new();
    let port = *READY.get_or_init(|| {
        let port = port_of("OUTSETA_E2E_SHARED_PORT");
        connect_as(port, "postgres", "postgres")
            .batch_execute("CREATE EXTENSION IF NOT EXISTS outseta_auth")
            .unwrap();
        port
    });
    connect_as(port, "postgres", "postgres")
}

/// A new superuser connection whose session trusts `server` (what an app's database
/// default would do).
fn session_for(server: &Server) -> Client {
    let mut c = connect();
    c.batch_execute(&format!(
        "SET outseta_auth.jwks_url = '{}'; SET outseta_auth.jwks_refresh_min_interval = 0",
        server.jwks_url()
    ))
    .unwrap();
    c
}

fn verify_sub(c: &mut Client, token: &str) -> Result<String, postgres::Error> {
    c.query_one("SELECT outseta_verify($1) ->> 'sub'", &[&token])
        .map(|r| r.get(0))
}

#[test]
fn new_connections_share_one_fetch() {
    // A remote-like issuer: every JWKS answer takes 150 ms.
    let server = issuer();
    server.set_fault(Fault::Slow(Duration::from_millis(150)));
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    let mut first = None;
    let started = Instant::now();
    for i in 0..20 {
        let mut c = session_for(&server);
        let t0 = Instant::now();
        assert_eq!(verify_sub(&mut c, &t).unwrap(), JANE, "connection {i}");
        if i == 0 {
            first = Some(t0.elapsed());
        }
    }
    assert_eq!(
        server.hits(JWKS),
        1,
        "20 connections, one fetch for the cluster"
    );
    assert!(
        first.unwrap() >= Duration::from_millis(150),
        "the first backend waited for the worker's fetch"
    );
    println!(
        "shared: 20 new connections verified in {:?}, first waited {:?}",
        started.elapsed(),
        first.unwrap()
    );
    let mut c = session_for(&server);
    let row = c
        .query_one(
            "SELECT shared, fetch_count, jsonb_array_length(keys), refresh_pending
             FROM outseta_jwks_status() WHERE source = $1",
            &[&server.jwks_url()],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0), "the source is shared");
    assert_eq!(row.get::<_, i64>(1), 1, "cluster-wide fetch count");
    assert_eq!(row.get::<_, i32>(2), 1);
    assert!(!row.get::<_, bool>(3));
}

#[test]
fn a_parallel_plan_causes_no_fetch() {
    let server = issuer();
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    let mut c = session_for(&server);
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS par_shared AS
             SELECT g AS id, (ARRAY['L9nqAzQZ','DQ2b7wmV','other'])[1 + g % 3] AS owner
             FROM generate_series(1, 300000) g;
         ANALYZE par_shared;",
    )
    .unwrap();
    let mut tx = c.transaction().unwrap();
    tx.execute("SELECT set_config('outseta_auth.token', $1, true)", &[&t])
        .unwrap();
    // The leader's first verification: the cluster's one fetch.
    let sub: String = tx.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
    assert_eq!(sub, JANE);
    assert_eq!(server.hits(JWKS), 1);
    let q = "SELECT count(*) FROM par_shared WHERE owner = outseta_sub()";
    force_parallel(&mut tx, q);
    let n: i64 = tx.query_one(q, &[]).unwrap().get(0);
    assert_eq!(n, 100_000);
    assert_eq!(server.hits(JWKS), 1, "parallel workers fetched nothing");
}

#[test]
fn rotation_is_picked_up_by_every_backend_after_one_fetch() {
    let server = issuer();
    let old = server.mint(&TokenRequest::new(JANE, ACME));
    let mut conns: Vec<Client> = (0..3).map(|_| session_for(&server)).collect();
    for c in &mut conns {
        assert_eq!(verify_sub(c, &old).unwrap(), JANE);
    }
    assert_eq!(server.hits(JWKS), 1);
    // The issuer rotates (old key gone). The worker refetches at most once a second.
    server.issuer.lock().unwrap().rotate(false);
    let new = server.mint(&TokenRequest::new(BOB, GLOBEX));
    std::thread::sleep(Duration::from_millis(1100));
    for c in &mut conns {
        assert_eq!(verify_sub(c, &new).unwrap(), BOB);
    }
    assert_eq!(
        server.hits(JWKS),
        2,
        "one cluster-wide fetch for the new kid"
    );
    // The old key is gone for everyone, and the cached verdicts with it.
    for c in &mut conns {
        let e = verify_sub(c, &old).unwrap_err();
        assert_eq!(
            e.code(),
            Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
        );
    }
}

#[test]
fn a_cancel_during_a_wait_on_a_hung_issuer_is_57014_at_once() {
    let server = issuer();
    server.set_fault(Fault::Slow(Duration::from_secs(30)));
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    let mut c = session_for(&server);
    c.batch_execute("SET outseta_auth.http_timeout = '20s'")
        .unwrap();

    // statement_timeout
    c.batch_execute("SET statement_timeout = '300ms'").unwrap();
    let started = Instant::now();
    let e = verify_sub(&mut c, &t).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    // Bounds here are seconds (a loaded machine) against the 20 s the fetch may take.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    c.batch_execute("RESET statement_timeout").unwrap();
    let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1, "the connection works afterwards");

    // pg_cancel_backend from another session
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let canceller = std::thread::spawn(move || {
        // Once the query waits (a cancel of an idle backend would be lost).
        let mut other = connect();
        let started = Instant::now();
        while !other
            .query_one(
                "SELECT count(*) = 1 FROM pg_stat_activity
                 WHERE pid = $1 AND state = 'active' AND query LIKE '%outseta_verify%'",
                &[&pid],
            )
            .unwrap()
            .get::<_, bool>(0)
        {
            assert!(started.elapsed() < Duration::from_secs(10), "never waited");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let cancelled: bool = other
            .query_one("SELECT pg_cancel_backend($1)", &[&pid])
            .unwrap()
            .get(0);
        (cancelled, Instant::now())
    });
    let e = verify_sub(&mut c, &t).unwrap_err();
    let returned = Instant::now();
    let (cancelled, at) = canceller.join().unwrap();
    assert!(cancelled);
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    assert!(
        returned.duration_since(at) < Duration::from_secs(3),
        "returned {:?} after the cancel",
        returned.duration_since(at)
    );
    let one: i32 = c.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    // The worker's fetch is still under way (on its own thread); other URLs are not held
    // up by it: a new issuer is served meanwhile.
    let other = issuer();
    let t2 = other.mint(&TokenRequest::new(BOB, GLOBEX));
    let mut c2 = session_for(&other);
    let started = Instant::now();
    assert_eq!(verify_sub(&mut c2, &t2).unwrap(), BOB);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_full_store_falls_back_to_per_backend_fetching_with_a_warning() {
    // A cluster of its own (scripts/e2e), so that filling it disturbs no other test.
    let port = port_of("OUTSETA_E2E_FULL_PORT");
    let mut su = connect_as(port, "postgres", "postgres");
    su.batch_execute("CREATE EXTENSION IF NOT EXISTS outseta_auth")
        .unwrap();
    let servers: Vec<Server> = (0..9).map(|_| issuer()).collect();
    let mut shared_flags = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let mut c = connect_as(port, "postgres", "postgres");
        c.batch_execute(&format!("SET outseta_auth.jwks_url = '{}'", s.jwks_url()))
            .unwrap();
        let t = s.mint(&TokenRequest::new(JANE, ACME));
        let sub = c
            .simple_query(&format!("SELECT outseta_verify('{t}') ->> 'sub'"))
            .unwrap();
        let got = sub.iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
            _ => None,
        });
        assert_eq!(got.as_deref(), Some(JANE), "issuer {i}");
        let status: Vec<(String, bool)> = c
            .query("SELECT source, shared FROM outseta_jwks_status()", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mine = status
            .iter()
            .find(|(src, _)| *src == s.jwks_url())
            .unwrap_or_else(|| panic!("{status:?}"));
        shared_flags.push(mine.1);
    }
    assert_eq!(
        shared_flags,
        [true, true, true, true, true, true, true, true, false],
        "8 URLs shared, the ninth per backend"
    );
    // The ninth was fetched by its backend, once.
    assert_eq!(servers[8].hits(JWKS), 1);
    let log = std::fs::read_to_string(format!(
        "{}/full/server.log",
        std::env::var("OUTSETA_E2E_WORK").unwrap()
    ))
    .unwrap();
    assert!(
        log.contains("the shared JWKS store is full (8 URLs)"),
        "a WARNING says so"
    );
}
