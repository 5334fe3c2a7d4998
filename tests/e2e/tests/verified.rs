//! One RSA verification per token per cluster (issue 20): the preloaded cluster keeps the
//! digests of verified tokens in shared memory, and a backend that meets a token another
//! one verified skips the signature check. Through real connections: the count of checks
//! skipped (`outseta_shared_slots()`, area `tokens`, column `hits`), a forged token, a
//! withdrawn key, and databases with different trust settings.
//!
//! On a preloaded cluster of its own (its counters, its key-set changes and its URL slots
//! are this file's); the tests run one at a time.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use outseta_dev::{Issuer, Server, TokenRequest};
use outseta_e2e::{connect_as, port_of, ACME, BOB, GLOBEX, ISSUER, JANE};
use postgres::error::SqlState;
use postgres::Client;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let port = port_of("OUTSETA_E2E_VERIFIED_PORT");
        connect_as(port, "postgres", "postgres")
            .batch_execute("CREATE EXTENSION IF NOT EXISTS outseta_auth")
            .unwrap();
        port
    })
}

/// The issuer of the tests that do not change its keys.
fn common() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| Server::start("127.0.0.1:0", Issuer::new(ISSUER)).unwrap())
}

/// Database `db`, made afresh, trusting `server`, with `settings` (ALTER DATABASE ... SET).
fn database(db: &str, server: &Server, settings: &[&str]) {
    let mut su = connect_as(port(), "postgres", "postgres");
    su.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .unwrap();
    su.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    let mut c = connect_as(port(), "postgres", db);
    c.batch_execute(&format!(
        "CREATE EXTENSION outseta_auth;
         ALTER DATABASE {db} SET outseta_auth.jwks_url = '{}';",
        server.jwks_url()
    ))
    .unwrap();
    for s in settings {
        c.batch_execute(&format!("ALTER DATABASE {db} SET {s}"))
            .unwrap();
    }
}

/// A new backend of `db`.
fn backend(db: &str) -> Client {
    connect_as(port(), "postgres", db)
}

/// (entries in use, signature checks skipped) of the cluster.
fn tokens_area() -> (i32, i64) {
    let row = connect_as(port(), "postgres", "postgres")
        .query_one(
            "SELECT in_use, hits FROM outseta_shared_slots() WHERE area = 'tokens'",
            &[],
        )
        .expect("outseta_shared_slots() has a 'tokens' row with preload");
    (row.get(0), row.get(1))
}

fn verify(c: &mut Client, token: &str) -> Result<(), postgres::Error> {
    c.query_one("SELECT outseta_verify($1)", &[&token])
        .map(|_| ())
}

/// A token of the common issuer nobody has verified yet (tokens minted in one second
/// differ by `exp`).
fn new_token(sub: &str) -> String {
    static N: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let mut req = TokenRequest::new(sub, ACME);
    req.expires_in = 3600 + N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    common().mint(&req)
}

/// The database of the tests on the common issuer.
fn plain() -> &'static str {
    static DB: OnceLock<()> = OnceLock::new();
    DB.get_or_init(|| database("outseta_plain", common(), &[]));
    "outseta_plain"
}

#[test]
fn a_token_is_verified_once_per_cluster() {
    let _alone = alone();
    let t = new_token(JANE);
    let (used0, hits0) = tokens_area();
    verify(&mut backend(plain()), &t).unwrap();
    let (used1, hits1) = tokens_area();
    assert_eq!((used1 - used0, hits1 - hits0), (1, 0), "one entry, no hit");
    // Two more backends (new connections: empty token caches of their own).
    verify(&mut backend(plain()), &t).unwrap();
    verify(&mut backend(plain()), &t).unwrap();
    let (used2, hits2) = tokens_area();
    assert_eq!(
        (used2 - used1, hits2 - hits1),
        (0, 2),
        "the other backends skipped the signature check"
    );
    // Its claims come from the token, as after a signature check.
    let sub: Option<String> = backend(plain())
        .query_one("SELECT outseta_verify($1) ->> 'sub'", &[&t])
        .unwrap()
        .get(0);
    assert_eq!(sub.as_deref(), Some(JANE));
}

#[test]
fn a_forged_token_never_hits() {
    let _alone = alone();
    let t = new_token(BOB);
    verify(&mut backend(plain()), &t).unwrap();
    let (signed, sig) = t.rsplit_once('.').unwrap();
    // One character in the middle (the last one carries padding bits).
    let mid = sig.len() / 2;
    let flip = if &sig[mid..mid + 1] == "A" { "B" } else { "A" };
    let other = format!("{}{flip}{}", &sig[..mid], &sig[mid + 1..]);
    // The genuine header and payload with another signature, and another person's payload
    // with the genuine signature.
    let someone = new_token(GLOBEX);
    let (someone_signed, _) = someone.rsplit_once('.').unwrap();
    let (_, hits0) = tokens_area();
    for forged in [
        format!("{signed}.{other}"),
        format!("{someone_signed}.{sig}"),
    ] {
        let e = verify(&mut backend(plain()), &forged).unwrap_err();
        assert_eq!(
            e.code(),
            Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
            "{e}"
        );
        let message = e.as_db_error().unwrap().message();
        assert!(message.contains("signature"), "{message}");
    }
    assert_eq!(tokens_area().1, hits0, "no forged token hit");
}

#[test]
fn databases_with_other_trust_settings_never_share_an_entry() {
    let _alone = alone();
    // Three databases that all accept the token, each under other trust settings.
    let dbs = ["outseta_trust_a", "outseta_trust_b", "outseta_trust_c"];
    database(
        dbs[0],
        common(),
        &["outseta_auth.issuer = 'https://e2e.outseta.com'"],
    );
    database(dbs[1], common(), &["outseta_auth.issuer = ''"]);
    database(dbs[2], common(), &["outseta_auth.leeway = 5"]);
    let t = new_token(JANE);
    let (used0, hits0) = tokens_area();
    for db in &dbs {
        verify(&mut backend(db), &t).unwrap();
    }
    let (used1, hits1) = tokens_area();
    assert_eq!(
        (used1 - used0, hits1 - hits0),
        (3, 0),
        "an entry per trust setting, none shared"
    );
    // A second backend of each database finds its own database's entry.
    for db in &dbs {
        verify(&mut backend(db), &t).unwrap();
    }
    assert_eq!(tokens_area().1 - hits1, 3);
}

#[test]
fn a_withdrawn_key_clears_the_entries() {
    let _alone = alone();
    // An issuer of its own: its key is withdrawn below. Kept for the process (its URL is
    // fetched every second from now on: no later server may take its port).
    static SERVER: OnceLock<Server> = OnceLock::new();
    let server = SERVER.get_or_init(|| Server::start("127.0.0.1:0", Issuer::new(ISSUER)).unwrap());
    let db = "outseta_withdrawn";
    // Short settings standing in for days: the worker refreshes the keys every second.
    database(
        db,
        server,
        &[
            "outseta_auth.jwks_cache_ttl = 1",
            "outseta_auth.jwks_refresh_min_interval = 0",
        ],
    );
    let connect = || backend(db);
    let t = server.mint(&TokenRequest::new(JANE, ACME));
    verify(&mut connect(), &t).unwrap();
    let (used_first, hits_first) = tokens_area();
    verify(&mut connect(), &t).unwrap();
    let (used, hits) = tokens_area();
    // This token's entry, and the second backend's hit on it.
    assert!(used >= 1 && used == used_first, "{used_first} then {used}");
    assert_eq!(
        hits - hits_first,
        1,
        "the second backend hit the first one's entry"
    );
    // Outseta withdraws the key: its JWKS lists only a new one. The worker refreshes the
    // keys every second; the store's new key set clears every entry.
    server.issuer.lock().unwrap().rotate(false);
    let withdrawn = Instant::now();
    while tokens_area().0 != 0 {
        assert!(
            withdrawn.elapsed() < Duration::from_secs(10),
            "the entries outlived the key set that verified them"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = verify(&mut connect(), &t).unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("unknown key id"),
        "{e}"
    );
    assert_eq!(
        tokens_area().1,
        hits,
        "no hit for the withdrawn key's token"
    );
}
