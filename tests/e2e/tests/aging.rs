//! Days, not minutes (issue 17): the shared-memory layer under aging and faults, through
//! real connections to a preloaded cluster of its own. Short settings stand in for days
//! (`jwks_cache_ttl` of seconds, `jwks_max_stale` = 60 s, the least allowed); backends are
//! terminated while they wait on the worker; the worker is killed during a hung fetch; the
//! issuer withdraws a kid, rotates during a fetch, and answers slowly.
//!
//! One test per row of the issue's table where a client can show it (`rowN_` in the name).
//! Rows a client cannot show are unit tests of the core (row 10, a wall clock stepped back:
//! `decision::tests::a_clock_stepped_back_blocks_nothing`) or live where their cluster is:
//! row 12 (without preload) and row 13 (what a monitoring role sees) in `profile.rs`.
//!
//! Each test uses issuers of its own (its own URLs), so counts are exact. Tests that stop
//! the worker run alone.

use std::sync::{OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use outseta_dev::{Fault, Issuer, Server, TokenRequest};
use outseta_e2e::*;
use postgres::error::SqlState;
use postgres::Client;

const JWKS: &str = "/.well-known/jwks";
const PROFILE: &str = "/api/v1/profile";

static WORKER: RwLock<()> = RwLock::new(());

/// Tests that stop the worker take it for writing; the others share it.
fn worker_running() -> RwLockReadGuard<'static, ()> {
    WORKER.read().unwrap_or_else(|e| e.into_inner())
}

fn port() -> u16 {
    static READY: OnceLock<u16> = OnceLock::new();
    *READY.get_or_init(|| {
        let port = port_of("OUTSETA_E2E_AGING_PORT");
        connect_as(port, "postgres", "postgres")
            .batch_execute(
                "CREATE EXTENSION IF NOT EXISTS outseta_auth;
                 CREATE TABLE IF NOT EXISTS par_aging AS
                     SELECT g AS id, (ARRAY['L9nqAzQZ','DQ2b7wmV','other'])[1 + g % 3] AS owner
                     FROM generate_series(1, 300000) g;
                 ANALYZE par_aging;",
            )
            .unwrap();
        port
    })
}

fn connect() -> Client {
    connect_as(port(), "postgres", "postgres")
}

fn issuer() -> Server {
    Server::start("127.0.0.1:0", Issuer::new(ISSUER)).unwrap()
}

/// One issuer for the tests that need no URL of their own (the profile tests, which set
/// its profile faults one at a time, the counters, the worker restarts): the store has 8
/// URL slots, and the other tests need 7 (a test finding the store full would be served
/// per backend, and `row9_a_urls_timing_...` says so).
fn common() -> (&'static Server, std::sync::MutexGuard<'static, ()>) {
    static SERVER: OnceLock<Server> = OnceLock::new();
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let server = SERVER.get_or_init(issuer);
    server.set_profile_fault(Fault::None);
    // No slow request of an earlier test runs on (the worker lets a bounded number of
    // abandoned ones run out: a test must not inherit them).
    wait_for("the issuer idle", Duration::from_secs(30), || {
        server.busy() == 0
    });
    (server, guard)
}

/// A superuser session trusting `server`, with `extra` settings (what an app's database
/// defaults would be).
fn session(server: &Server, extra: &str) -> Client {
    let mut c = connect();
    c.batch_execute(&format!(
        "SET outseta_auth.jwks_url = '{}'; SET outseta_auth.profile_url = '{}';
         SET outseta_auth.jwks_refresh_min_interval = 0; {extra}",
        server.jwks_url(),
        server.profile_url()
    ))
    .unwrap();
    c
}

fn verify_sub(c: &mut Client, token: &str) -> Result<String, postgres::Error> {
    c.query_one("SELECT outseta_verify($1) ->> 'sub'", &[&token])
        .map(|r| r.get(0))
}

fn with_token(c: &mut Client, token: &str) {
    c.execute(
        "SELECT set_config('outseta_auth.token', $1, false)",
        &[&token],
    )
    .unwrap();
}

/// A token no other test uses (the worker keeps profile answers per token).
fn fresh(server: &Server, sub: &str) -> String {
    static N: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let mut req = TokenRequest::new(sub, ACME);
    req.expires_in = 3600 + N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    server.mint(&req)
}

fn status_kids(c: &mut Client, url: &str) -> Vec<String> {
    c.query_one(
        "SELECT coalesce(array_agg(k ->> 'kid'), '{}') FROM outseta_jwks_status() s,
                jsonb_array_elements(s.keys) k WHERE s.source = $1",
        &[&url],
    )
    .unwrap()
    .get(0)
}

/// (slots in use, slots) of a shared area.
fn slots(c: &mut Client, area: &str) -> (i32, i32) {
    let r = c
        .query_one(
            "SELECT in_use, slots FROM outseta_shared_slots() WHERE area = $1",
            &[&area],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// The aging cluster's background worker.
fn worker() -> Option<String> {
    let work = std::env::var("OUTSETA_E2E_WORK").unwrap();
    jwks_worker_pid(&format!("{work}/aging/data"))
}

fn signal(pid: &str, sig: &str) {
    let sent = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// The pid of the worker the postmaster started after `before` stopped.
fn restarted(before: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(pid) = worker().filter(|p| p != before) {
            return pid;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no new worker");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn row1_terminated_waiters_leave_no_profile_slot_behind() {
    let _running = worker_running();
    let (server, _one) = common();
    // The endpoint answers after 5 s (long next to starting 6 connections on a loaded
    // machine): the worker's 4 slots are busy when the waiters die.
    server.set_profile_fault(Fault::Slow(Duration::from_secs(5)));
    let mut pids = Vec::new();
    let mut waiters = Vec::new();
    for _ in 0..6 {
        let mut c = session(server, "");
        pids.push(
            c.query_one("SELECT pg_backend_pid()", &[])
                .unwrap()
                .get::<_, i32>(0),
        );
        let t = fresh(server, JANE);
        waiters.push(std::thread::spawn(move || {
            with_token(&mut c, &t);
            c.query_one("SELECT outseta_profile()", &[])
                .expect_err("terminated while waiting")
        }));
    }
    let mut su = connect();
    wait_for("6 waiting backends", Duration::from_secs(10), || {
        let waiting: i64 = su
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE pid = ANY($1) AND state = 'active' AND query LIKE '%outseta_profile%'",
                &[&pids],
            )
            .unwrap()
            .get(0);
        waiting == 6
    });
    std::thread::sleep(Duration::from_millis(300));
    // FATAL exits: no Rust destructor runs in them.
    su.execute(
        "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid",
        &[&pids],
    )
    .unwrap();
    for w in waiters {
        w.join().unwrap();
    }
    server.set_profile_fault(Fault::None);
    // The slots are free at once (the requests run on, detached, within their timeout)...
    wait_for("profile slots freed", Duration::from_secs(4), || {
        slots(&mut su, "profile").0 == 0
    });
    // ...and a new person's profile comes at once (0.2.0: the slots stayed taken until a
    // restart, 58000 for everyone after 4 such exits).
    let mut c = session(server, "");
    with_token(&mut c, &fresh(server, BOB));
    let asked = Instant::now();
    let uid: String = c
        .query_one("SELECT outseta_profile() ->> 'Uid'", &[])
        .expect("a profile after 6 terminated waiters")
        .get(0);
    assert_eq!(uid, BOB);
    // Not after waiting for a slot (the detached requests run 5 s).
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn row2_a_worker_killed_during_a_hung_fetch_leaves_no_wait_behind() {
    let _alone = WORKER.write().unwrap_or_else(|e| e.into_inner());
    let (server, _one) = common();
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    let mut c = session(server, "");
    assert_eq!(verify_sub(&mut c, &t).unwrap(), JANE);
    let server_hits = server.hits(JWKS);
    // A second issuer hangs: the worker's fetch of it is under way when the worker stops.
    let other = issuer();
    other.set_fault(Fault::Slow(Duration::from_secs(60)));
    let t2 = other.mint(&TokenRequest::new(BOB, GLOBEX));
    let asker = {
        let (t2, mut c) = (
            t2.clone(),
            session(&other, "SET outseta_auth.http_timeout = '30s'"),
        );
        std::thread::spawn(move || {
            let _ = verify_sub(&mut c, &t2);
        })
    };
    wait_for("the hung fetch", Duration::from_secs(10), || {
        other.hits(JWKS) > 0
    });
    // That request hangs on; the issuer answers new ones at once.
    other.set_fault(Fault::None);
    let before = worker().expect("the worker runs");
    signal(&before, "-TERM");
    // Meanwhile a backend keeps using the shared keys.
    let mut c2 = session(server, "");
    assert_eq!(verify_sub(&mut c2, &t).unwrap(), JANE);
    let after = restarted(&before);
    assert_ne!(before, after);
    // The attempt lost with the old worker is made again by the new one: a new connection
    // has the keys at once, not after http_timeout per unknown kid until the next
    // scheduled refresh.
    std::thread::sleep(Duration::from_millis(500));
    let mut c3 = session(&other, "");
    let t0 = Instant::now();
    assert_eq!(verify_sub(&mut c3, &t2).unwrap(), BOB);
    // Not after http_timeout (5 s).
    assert!(
        t0.elapsed() < Duration::from_millis(4500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(other.hits(JWKS), 2, "the lost fetch, made again");
    assert!(
        server.hits(JWKS) - server_hits <= 1,
        "the first URL: no more than its own schedule"
    );
    asker.join().unwrap();
}

#[test]
fn row3_a_forced_refresh_during_a_fetch_is_not_satisfied_by_it() {
    let _running = worker_running();
    let server = &issuer();
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    let mut a = session(server, "");
    assert_eq!(verify_sub(&mut a, &t).unwrap(), JANE);
    let old_kid = server.issuer.lock().unwrap().signing_key().kid.clone();
    // A refresh whose fetch takes 2 s: the issuer's answer is the key set as it was when
    // the request arrived.
    server.set_fault(Fault::Slow(Duration::from_secs(2)));
    let first = std::thread::spawn(move || {
        a.query_one("SELECT outseta_refresh_jwks()", &[])
            .map(|r| r.get::<_, i32>(0))
    });
    wait_for("the slow fetch", Duration::from_secs(5), || {
        server.hits(JWKS) == 2
    });
    // Outseta rotates during that fetch, and the superuser asks for a refresh now.
    let new_kid = server.issuer.lock().unwrap().rotate(false);
    server.set_fault(Fault::None);
    let mut b = session(server, "");
    let n: i32 = b
        .query_one("SELECT outseta_refresh_jwks()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert_eq!(first.join().unwrap().unwrap(), 1);
    // The second refresh waited for a fetch started after it was asked for (0.2.0: it was
    // satisfied by the one under way and the store kept the old key).
    assert_eq!(
        status_kids(&mut b, &server.jwks_url()),
        vec![new_kid.clone()],
        "old kid {old_kid}"
    );
    assert_eq!(server.hits(JWKS), 3);
}

#[test]
fn row4_a_withdrawn_kid_stops_verifying_in_a_warm_backend() {
    let _running = worker_running();
    let server = &issuer();
    // Short settings standing in for days: the worker refreshes the keys every second.
    let mut c = session(server, "SET outseta_auth.jwks_cache_ttl = 1");
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    with_token(&mut c, &t);
    let sub = |c: &mut Client| -> Result<Option<String>, postgres::Error> {
        c.query_one("SELECT outseta_sub()", &[]).map(|r| r.get(0))
    };
    for _ in 0..20 {
        assert_eq!(sub(&mut c).unwrap().as_deref(), Some(JANE));
    }
    // Outseta withdraws the key (compromised): its JWKS lists only a new one.
    server.issuer.lock().unwrap().rotate(false);
    let withdrawn = Instant::now();
    let e = loop {
        match sub(&mut c) {
            Ok(_) => {
                assert!(
                    withdrawn.elapsed() < Duration::from_secs(10),
                    "the warm backend still verifies the withdrawn kid (0.2.0: until jwks_max_stale)"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        e.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{e}"
    );
    let message = e.as_db_error().unwrap().message();
    assert!(message.contains("unknown key id"), "{message}");
}

#[test]
fn row5_a_lower_max_stale_applies_to_verdicts_already_cached() {
    let _running = worker_running();
    let server = &issuer();
    let mut c = session(server, "SET outseta_auth.jwks_cache_ttl = 3");
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    with_token(&mut c, &t);
    let sub = |c: &mut Client| c.query_one("SELECT outseta_sub()", &[]).map(|_| ());
    sub(&mut c).unwrap();
    // The issuer goes down: no refresh succeeds from now on.
    server.set_fault(Fault::Status(503));
    let down = Instant::now();
    // A warm backend, used all along (within the default max_stale of a day).
    while down.elapsed() < Duration::from_secs(62) {
        sub(&mut c).expect("within the default max_stale");
        std::thread::sleep(Duration::from_secs(3));
    }
    // The operator tightens the bound to 60 s: the next call, a cache hit until now, fails
    // closed (0.2.0: cached verdicts kept their old bound; only misses saw the new one).
    c.batch_execute("SET outseta_auth.jwks_max_stale = 60")
        .unwrap();
    let e = sub(&mut c).unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYSTEM_ERROR), "{e}");
    let db = e.as_db_error().unwrap();
    let detail = db.detail().unwrap_or_default();
    assert!(detail.contains("jwks_max_stale"), "{detail}");
}

#[test]
fn row6_an_over_long_url_is_refused_when_set() {
    let _running = worker_running();
    let mut c = connect();
    let long = format!("https://{}.example.com/.well-known/jwks", "a".repeat(1100));
    let e = c
        .batch_execute(&format!("SET outseta_auth.jwks_url = '{long}'"))
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{e}");
    assert!(
        !e.to_string().contains(&long),
        "the URL is not echoed whole"
    );
}

#[test]
fn row7_abandoned_profile_requests_free_their_slots_at_once() {
    let _running = worker_running();
    let (server, _one) = common();
    // A slow endpoint; four askers give up (statement_timeout) while their requests run.
    server.set_profile_fault(Fault::Slow(Duration::from_secs(4)));
    for _ in 0..4 {
        let mut c = session(server, "SET statement_timeout = '200ms'");
        with_token(&mut c, &fresh(server, JANE));
        let e = c.query_one("SELECT outseta_profile()", &[]).unwrap_err();
        assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    }
    server.set_profile_fault(Fault::None);
    // The four requests are still under way, nobody waits for them: their slots are free
    // (0.2.0: held for http_timeout, and the next asker waited for one, then got 58000).
    let mut c = session(server, "SET outseta_auth.http_timeout = '1s'");
    with_token(&mut c, &fresh(server, BOB));
    let asked = Instant::now();
    let uid: String = c
        .query_one("SELECT outseta_profile() ->> 'Uid'", &[])
        .expect("a profile while abandoned requests run")
        .get(0);
    assert_eq!(uid, BOB);
    // Waiting for a place would end in 58000 after http_timeout (1 s), the expect above.
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn row8_parallel_workers_share_one_profile_request() {
    let _running = worker_running();
    let (server, _one) = common();
    // Slow enough that the leader and both workers ask at the same time.
    server.set_profile_fault(Fault::Slow(Duration::from_millis(300)));
    let mut c = session(server, "SET outseta_auth.profile_check = on");
    let q = "SELECT count(*) FROM par_aging WHERE owner = outseta_sub()";
    for i in 0..5 {
        let t = fresh(server, JANE);
        let before = server.hits(PROFILE);
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT set_config('outseta_auth.token', $1, true)", &[&t])
            .unwrap();
        force_parallel(&mut tx, q);
        let after_explain = server.hits(PROFILE);
        assert_eq!(
            after_explain - before,
            1,
            "token {i}: one request for 3 processes"
        );
        tx.rollback().unwrap();
    }
}

#[test]
fn row9_a_urls_timing_is_the_strictest_and_cannot_flip() {
    let _running = worker_running();
    let server = &issuer();
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    // Two databases' settings for one URL: a 2 s TTL, and the default 300 s.
    let mut short = session(server, "SET outseta_auth.jwks_cache_ttl = 2");
    let mut long = session(server, "");
    verify_sub(&mut short, &t).unwrap();
    verify_sub(&mut long, &t).unwrap();
    let before = server.hits(JWKS);
    std::thread::sleep(Duration::from_secs(7));
    // The slot keeps refreshing every 2 s (0.2.0: the last asker's 300 s took over).
    let refreshes = server.hits(JWKS) - before;
    let st: String = short
        .query_one(
            "SELECT row(s.*)::text FROM outseta_jwks_status() s WHERE source = $1",
            &[&server.jwks_url()],
        )
        .unwrap()
        .get(0);
    assert!(
        (2..=5).contains(&refreshes),
        "{refreshes} refreshes in 7 s: {st}"
    );
}

#[test]
fn row9_an_unused_url_slot_is_freed() {
    let _running = worker_running();
    let server = &issuer();
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    let url = server.jwks_url();
    let mut c = session(
        server,
        "SET outseta_auth.jwks_cache_ttl = 3; SET outseta_auth.jwks_max_stale = 60",
    );
    verify_sub(&mut c, &t).unwrap();
    let listed = |c: &mut Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM outseta_jwks_status() WHERE source = $1",
            &[&url],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(listed(&mut c), 1);
    // Nobody asks for the URL for its max_stale (a database renamed or re-pointed): the
    // worker frees the slot (0.2.0: never; 8 such URLs and the store was full for good).
    let mut other = connect();
    wait_for("the slot freed", Duration::from_secs(75), || {
        listed(&mut other) == 0
    });
    // Asked for again, it comes back.
    assert_eq!(verify_sub(&mut c, &t).unwrap(), JANE);
    assert_eq!(listed(&mut c), 1);
}

#[test]
fn row11_status_reads_the_store_in_place_and_the_worker_ignores_sighup() {
    let _running = worker_running();
    let (server, _one) = common();
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    verify_sub(&mut session(server, ""), &t).unwrap();
    let mut c = connect();
    let (in_use, total) = slots(&mut c, "jwks");
    assert!(in_use >= 1 && total == 8, "{in_use} of {total}");
    // The status reads the 0.5 MB store in place (0.2.0 copied it onto the stack).
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM outseta_jwks_status() WHERE shared",
            &[],
        )
        .unwrap()
        .get(0);
    // (Other tests of this binary may register or free URLs between the two readings.)
    assert!(
        n >= 1 && n <= total as i64,
        "{n} shared sources, {total} slots"
    );
    // The worker reads no settings: a reload's SIGHUP changes nothing for it.
    let pid = worker().expect("the worker runs");
    signal(&pid, "-HUP");
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(worker().as_deref(), Some(pid.as_str()), "same worker");
    let t = server.mint(&TokenRequest::new(BOB, ACME));
    assert_eq!(verify_sub(&mut session(server, ""), &t).unwrap(), BOB);
}

#[test]
fn counters_count_what_their_names_say() {
    let _running = worker_running();
    let (server, _one) = common();
    let mut c = session(server, "");
    with_token(&mut c, &server.mint(&TokenRequest::new(JANE, ACME)));
    let counters = |c: &mut Client| -> (i64, i64) {
        let r = c
            .query_one(
                "SELECT token_cache_hits, token_cache_misses FROM outseta_jwks_status()
                 WHERE source = $1",
                &[&server.jwks_url()],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    c.query_one("SELECT outseta_sub()", &[]).unwrap();
    let (hits, misses) = counters(&mut c);
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM generate_series(1, 60000) g WHERE outseta_sub() || g IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 60_000);
    let (hits2, misses2) = counters(&mut c);
    assert_eq!(hits2 - hits, 60_000, "60,000 per-row calls, 60,000 hits");
    assert_eq!(misses2, misses, "and no miss");
}

#[test]
fn a_new_kid_right_after_a_refresh_waits_for_the_next_allowed_fetch() {
    // Found by the soak benchmark: a person signing in just after Outseta rotated, within
    // the worker's rate limit of its last fetch, got 28000 "unknown key id".
    let _running = worker_running();
    let server = &issuer();
    let mut c = session(server, "SET outseta_auth.jwks_refresh_min_interval = 2");
    let t1 = server.mint(&TokenRequest::new(JANE, ACME));
    assert_eq!(verify_sub(&mut c, &t1).unwrap(), JANE);
    server.issuer.lock().unwrap().rotate(true);
    let t2 = server.mint(&TokenRequest::new(BOB, ACME));
    let asked = Instant::now();
    assert_eq!(verify_sub(&mut c, &t2).unwrap(), BOB);
    // The next allowed fetch is 2 s away (the next scheduled one, 300 s).
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        server.hits(JWKS),
        2,
        "one fetch when the rate limit allowed it"
    );
}

#[test]
fn a_new_kid_while_the_worker_restarts_waits_for_it() {
    // Found by the soak benchmark: a rotation while the worker was stopped failed new
    // sign-ins with 28000 until the next scheduled refresh.
    let _alone = WORKER.write().unwrap_or_else(|e| e.into_inner());
    let (server, _one) = common();
    let mut c = session(server, "");
    let t1 = server.mint(&TokenRequest::new(JANE, ACME));
    assert_eq!(verify_sub(&mut c, &t1).unwrap(), JANE);
    server.issuer.lock().unwrap().rotate(true);
    let t2 = server.mint(&TokenRequest::new(BOB, ACME));
    let before = worker().expect("the worker runs");
    signal(&before, "-TERM");
    // Gone, or already restarted (its restart delay is a second: a slow poll can miss it).
    wait_for("the worker stopped", Duration::from_secs(5), || {
        worker().as_deref() != Some(before.as_str())
    });
    assert_eq!(verify_sub(&mut c, &t2).unwrap(), BOB);
    assert_ne!(worker().as_deref(), Some(before.as_str()));
}
