//! A real Citus cluster (scripts/citus: coordinator + two workers, Citus 13.2.2 on
//! PostgreSQL 17, `shared_preload_libraries = 'citus,outseta_auth'`), with the data-model
//! guide's account data distributed by `account_uid` (32 shards) and a reference table, RLS
//! on all of them for a LOGIN application role. Every way of giving the token (SET LOCAL,
//! set_config, outseta_authenticate, the cookie, a header, PostgREST's pre-request) must
//! give the workers the same verified identity, for the transaction only.
//!
//! Ignored unless run by scripts/citus (it needs the cluster): `cargo test ... -- --ignored`.

use std::sync::OnceLock;
use std::time::Instant;

use outseta_dev::{Issuer, Server, TokenRequest};
use outseta_e2e::{connect_as, start_postgrest, PostgRest};
use postgres::Client;
use serde_json::json;

const DB: &str = "citus_e2e";
const ISSUER: &str = "https://citus.outseta.com";
const JANE: &str = "L9nqAzQZ"; // in Acme and in Globex
const BOB: &str = "DQ2b7wmV"; // in Globex
const CAROL: &str = "Xk3pQ8vN"; // in Acme
const ACME: &str = "wZmNw7Q2";
const GLOBEX: &str = "y9gE3kWj";
/// Documents per account in the seed (the other accounts make the 32 shards non-empty).
const DOCS_PER_ACCOUNT: i64 = 10;

struct Cluster {
    server: Server,
    coordinator: u16,
    workers: Vec<u16>,
    rest: OnceLock<PostgRest>,
}

fn port(name: &str) -> Vec<u16> {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run this suite through scripts/citus"))
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Roles, extensions and settings on every node (each node verifies tokens itself), then
/// the workers join and the coordinator creates and distributes the tables.
const NODE_SETUP: &str = "
    CREATE EXTENSION citus;
    CREATE EXTENSION outseta_auth;
    DO $$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'outseta_app') THEN
            CREATE ROLE outseta_app LOGIN;
            CREATE ROLE authenticator LOGIN NOINHERIT;
            CREATE ROLE anon LOGIN;
            CREATE ROLE authenticated LOGIN;
            GRANT anon, authenticated TO authenticator;
        END IF;
    END $$;";

const SCHEMA: &str = "
    CREATE TABLE accounts (account_uid text PRIMARY KEY, name text NOT NULL);
    SELECT create_reference_table('accounts');
    CREATE TABLE documents (
        id bigserial, account_uid text NOT NULL DEFAULT outseta_account_uid(),
        title text NOT NULL, created_by_person_uid text DEFAULT outseta_sub(),
        PRIMARY KEY (account_uid, id));
    SELECT create_distributed_table('documents', 'account_uid', shard_count => 32);
    CREATE TABLE person_account_settings (
        account_uid text NOT NULL, person_uid text NOT NULL, theme text NOT NULL,
        PRIMARY KEY (account_uid, person_uid));
    SELECT create_distributed_table('person_account_settings', 'account_uid',
                                    colocate_with => 'documents');
    CREATE TABLE activity_log (
        id bigserial, account_uid text NOT NULL, person_uid text NOT NULL,
        action text NOT NULL, PRIMARY KEY (account_uid, id));
    SELECT create_distributed_table('activity_log', 'account_uid', colocate_with => 'documents');

    -- The policy form for Citus: the bare accessor (Citus refuses a sub-select in a policy).
    ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
    CREATE POLICY accounts_own ON accounts USING (account_uid = outseta_account_uid());
    ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
    CREATE POLICY documents_account ON documents
        USING (account_uid = outseta_account_uid())
        WITH CHECK (account_uid = outseta_account_uid() AND created_by_person_uid = outseta_sub());
    ALTER TABLE person_account_settings ENABLE ROW LEVEL SECURITY;
    CREATE POLICY settings_own ON person_account_settings
        USING (account_uid = outseta_account_uid() AND person_uid = outseta_sub());
    ALTER TABLE activity_log ENABLE ROW LEVEL SECURITY;
    CREATE POLICY activity_read ON activity_log FOR SELECT
        USING (account_uid = outseta_account_uid());
    CREATE POLICY activity_write ON activity_log FOR INSERT
        WITH CHECK (account_uid = outseta_account_uid() AND person_uid = outseta_sub());

    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public
        TO outseta_app, authenticated;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO anon;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO outseta_app, authenticated;

    INSERT INTO accounts SELECT 'acct' || i, 'Account ' || i FROM generate_series(1, 40) i;
    INSERT INTO accounts VALUES ('wZmNw7Q2', 'Acme'), ('y9gE3kWj', 'Globex');
    INSERT INTO documents (account_uid, title, created_by_person_uid)
        SELECT a.account_uid, a.name || ' doc ' || i, 'seed'
        FROM accounts a, generate_series(1, 10) i;
    INSERT INTO person_account_settings VALUES
        ('wZmNw7Q2', 'L9nqAzQZ', 'dark'), ('y9gE3kWj', 'L9nqAzQZ', 'light'),
        ('y9gE3kWj', 'DQ2b7wmV', 'blue'), ('wZmNw7Q2', 'Xk3pQ8vN', 'green');";

fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(|| {
        let coordinator = port("OUTSETA_CITUS_COORDINATOR")[0];
        let workers = port("OUTSETA_CITUS_WORKERS");
        let server = Server::start("127.0.0.1:0", Issuer::new(ISSUER)).expect("outseta-dev");
        for p in std::iter::once(coordinator).chain(workers.iter().copied()) {
            connect_as(p, "postgres", "postgres")
                .batch_execute(&format!("CREATE DATABASE {DB}"))
                .unwrap();
            let mut db = connect_as(p, "postgres", DB);
            db.batch_execute(NODE_SETUP).unwrap();
            db.batch_execute(&format!(
                "ALTER DATABASE {DB} SET outseta_auth.jwks_url = '{}';
                 ALTER DATABASE {DB} SET outseta_auth.issuer = '{ISSUER}';
                 ALTER DATABASE {DB} SET outseta_auth.authenticated_role = 'authenticated';
                 ALTER ROLE outseta_app IN DATABASE {DB} SET outseta_auth.token_header = 'x-outseta-token';",
                server.jwks_url()
            ))
            .unwrap();
        }
        let mut c = connect_as(coordinator, "postgres", DB);
        c.batch_execute(&format!(
            "SELECT citus_set_coordinator_host('127.0.0.1', {coordinator})"
        ))
        .unwrap();
        for w in &workers {
            c.batch_execute(&format!("SELECT citus_add_node('127.0.0.1', {w})"))
                .unwrap();
        }
        // One statement at a time: Citus sends a DDL statement's text on to the workers,
        // and refuses a text holding several.
        for stmt in SCHEMA.split(";\n").filter(|s| !s.trim().is_empty()) {
            c.batch_execute(stmt)
                .unwrap_or_else(|e| panic!("{stmt}: {e:?}"));
        }
        Cluster {
            server,
            coordinator,
            workers,
            rest: OnceLock::new(),
        }
    })
}

fn mint(sub: &str, account: &str) -> String {
    cluster().server.mint(&TokenRequest::new(sub, account))
}

fn app() -> Client {
    connect_as(cluster().coordinator, "outseta_app", DB)
}

/// Accounts of the documents this transaction sees, with their count.
fn visible_accounts(tx: &mut postgres::Transaction) -> Vec<(String, i64)> {
    tx.query(
        "SELECT account_uid, count(*) FROM documents GROUP BY 1 ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// A transaction of `c` in which `sql` (with `$TOKEN`) gave `token`.
fn begin_with<'a>(c: &'a mut Client, sql: &str, token: &str) -> postgres::Transaction<'a> {
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&sql.replace("$TOKEN", token)).unwrap();
    tx
}

fn only(account: &str) -> Vec<(String, i64)> {
    vec![(account.to_string(), DOCS_PER_ACCOUNT)]
}

/// Each way of giving the token, as SQL run inside the transaction ($1 = the token).
const PATHS: &[(&str, &str)] = &[
    ("SET LOCAL", "SET LOCAL outseta_auth.token = '$TOKEN'"),
    (
        "set_config",
        "SELECT set_config('outseta_auth.token', '$TOKEN', true)",
    ),
    ("outseta_authenticate", "SELECT outseta_authenticate('$TOKEN')"),
    (
        "cookie",
        "SELECT set_config('request.cookies', '{\"Outseta.nocode.accessToken\": \"$TOKEN\"}', true)",
    ),
    (
        "header",
        "SELECT set_config('request.headers', '{\"x-outseta-token\": \"$TOKEN\"}', true)",
    ),
];

#[test]
#[ignore = "needs the Citus cluster of scripts/citus"]
fn every_token_path_reaches_the_workers() {
    let jane_acme = mint(JANE, ACME);
    let jane_globex = mint(JANE, GLOBEX);
    let mut c = app();
    for (name, sql) in PATHS {
        let mut tx = c.transaction().unwrap();
        tx.batch_execute(&sql.replace("$TOKEN", &jane_acme))
            .unwrap();
        assert_eq!(visible_accounts(&mut tx), only(ACME), "{name}");
        // The reference table and a person-in-account table, through the same token.
        let names: Vec<String> = tx
            .query("SELECT name FROM accounts", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(names, vec!["Acme"], "{name}: reference table");
        let theme: Vec<String> = tx
            .query("SELECT theme FROM person_account_settings", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(theme, vec!["dark"], "{name}");
        // Another token later in the same transaction: the workers' connections (already
        // open) follow.
        tx.batch_execute(&sql.replace("$TOKEN", &jane_globex))
            .unwrap();
        assert_eq!(visible_accounts(&mut tx), only(GLOBEX), "{name}, switched");
        tx.commit().unwrap();
    }
}

#[test]
#[ignore = "needs the Citus cluster of scripts/citus"]
fn no_token_outlives_its_transaction_on_cached_worker_connections() {
    let mut c = app();
    let mut tx = begin_with(
        &mut c,
        "SELECT set_config('outseta_auth.token', '$TOKEN', true)",
        &mint(CAROL, ACME),
    );
    assert_eq!(visible_accounts(&mut tx), only(ACME));
    tx.commit().unwrap();
    // Citus keeps the connections to the workers; the next transactions on them see nothing.
    for _ in 0..3 {
        let mut tx = c.transaction().unwrap();
        assert!(visible_accounts(&mut tx).is_empty());
        // (The row count above is the check; the workers' own view of the setting, through
        // whichever connections run_command_on_workers uses, is a second look.)
        let planted: Vec<String> = tx
            .query(
                "SELECT result FROM run_command_on_workers(
                     $$SELECT coalesce(current_setting('outseta_auth.token', true), '')$$)",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(planted.iter().all(String::is_empty), "{planted:?}");
        tx.commit().unwrap();
    }
    // Nor outside a transaction block.
    let n: i64 = c
        .query_one("SELECT count(*) FROM documents", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
#[ignore = "needs the Citus cluster of scripts/citus"]
fn writes_are_checked_on_the_workers() {
    let mut c = app();
    let title = "citus: jane's note";
    let mut tx = begin_with(
        &mut c,
        "SELECT outseta_authenticate('$TOKEN')",
        &mint(JANE, ACME),
    );
    tx.execute("INSERT INTO documents (title) VALUES ($1)", &[&title])
        .unwrap();
    tx.execute(
        "INSERT INTO activity_log (account_uid, person_uid, action) VALUES ($1, $2, 'wrote')",
        &[&ACME, &JANE],
    )
    .unwrap();
    // Jane's token in Acme cannot write into Globex, nor as Bob.
    let e = tx
        .execute(
            "INSERT INTO documents (account_uid, title) VALUES ($1, 'planted')",
            &[&GLOBEX],
        )
        .unwrap_err();
    assert_eq!(
        e.code().unwrap().code(),
        "42501",
        "{}",
        e.as_db_error().unwrap()
    );
    tx.rollback().unwrap();

    let mut tx = begin_with(
        &mut c,
        "SELECT outseta_authenticate('$TOKEN')",
        &mint(JANE, ACME),
    );
    tx.execute("INSERT INTO documents (title) VALUES ($1)", &[&title])
        .unwrap();
    let updated = tx
        .execute(
            "UPDATE documents SET title = title || ' (edited)' WHERE account_uid = $1",
            &[&GLOBEX],
        )
        .unwrap();
    assert_eq!(updated, 0, "another account's rows are invisible to UPDATE");
    tx.commit().unwrap();

    // Stored on exactly one shard (on a worker), with the account and the author the
    // defaults took from the token.
    let mut su = connect_as(cluster().coordinator, "postgres", DB);
    let per_shard: Vec<i64> = su
        .query(
            "SELECT result::bigint FROM run_command_on_shards('documents',
                 $$SELECT count(*) FROM %s WHERE title = 'citus: jane''s note'$$)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(per_shard.len(), 32);
    assert_eq!(per_shard.iter().sum::<i64>(), 1);
    let (account, by): (String, String) = {
        let r = su
            .query_one(
                "SELECT account_uid, created_by_person_uid FROM documents WHERE title = $1",
                &[&title],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((account.as_str(), by.as_str()), (ACME, JANE));
    su.execute("DELETE FROM documents WHERE title = $1", &[&title])
        .unwrap();
}

#[test]
#[ignore = "needs the Citus cluster of scripts/citus"]
fn bad_tokens_are_refused_and_one_fetch_per_node() {
    let good = mint(BOB, GLOBEX);
    let forged = outseta_dev::with_payload(
        &good,
        json!({"sub": JANE, "outseta:accountUid": ACME, "iss": ISSUER,
               "exp": outseta_dev::now() + 600})
        .to_string()
        .as_bytes(),
    );
    let mut c = app();
    for (name, sql) in PATHS {
        let mut tx = c.transaction().unwrap();
        // outseta_authenticate refuses at once; the other paths when a node verifies.
        let e = match tx.batch_execute(&sql.replace("$TOKEN", &forged)) {
            Err(e) => e,
            Ok(()) => tx
                .query("SELECT count(*) FROM documents", &[])
                .expect_err(name),
        };
        assert_eq!(e.code().unwrap().code(), "28000", "{name}: {e:?}");
        tx.rollback().ok();
    }
    // Every node verifies with its own keys, fetched once by its own worker process.
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL outseta_auth.token = '{good}'"))
        .unwrap();
    assert_eq!(visible_accounts(&mut tx), only(GLOBEX));
    let me: String = tx.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
    assert_eq!(me, BOB);
    tx.commit().unwrap();
    assert_eq!(
        cluster().server.hits("/.well-known/jwks"),
        1 + cluster().workers.len() as u64,
        "one JWKS fetch per node"
    );
}

#[test]
#[ignore = "needs the Citus cluster of scripts/citus"]
fn policy_forms_task_count_and_latency() {
    let mut c = app();
    let mut tx = begin_with(
        &mut c,
        "SET LOCAL outseta_auth.token = '$TOKEN'",
        &mint(CAROL, ACME),
    );
    let task_count = |tx: &mut postgres::Transaction, q: &str| -> i64 {
        let plan: Vec<String> = tx
            .query(&format!("EXPLAIN {q}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let line = plan
            .iter()
            .find(|l| l.contains("Task Count:"))
            .unwrap_or_else(|| panic!("{plan:?}"));
        line.rsplit(':').next().unwrap().trim().parse().unwrap()
    };
    let policy_only = "SELECT title FROM documents";
    let stable_filter = "SELECT title FROM documents WHERE account_uid = outseta_account_uid()";
    let constant = format!("SELECT title FROM documents WHERE account_uid = '{ACME}'");
    assert_eq!(task_count(&mut tx, policy_only), 32);
    assert_eq!(task_count(&mut tx, stable_filter), 32);
    assert_eq!(task_count(&mut tx, &constant), 1);
    // Latency of each (printed; figures in README's Citus guide: scripts/citus -- --nocapture).
    for (name, q) in [
        ("policy only", policy_only),
        ("account_uid = outseta_account_uid()", stable_filter),
        ("account_uid = '<uid>' (constant)", constant.as_str()),
    ] {
        let n = tx.query(q, &[]).unwrap().len() as i64;
        assert_eq!(n, DOCS_PER_ACCOUNT, "{name}");
        for _ in 0..20 {
            tx.query(q, &[]).unwrap(); // warm: plans, connections, caches
        }
        let runs = 200;
        let t0 = Instant::now();
        for _ in 0..runs {
            tx.query(q, &[]).unwrap();
        }
        eprintln!(
            "citus figure: {name}: {:.2} ms per query ({runs} runs)",
            t0.elapsed().as_secs_f64() * 1000.0 / runs as f64
        );
    }
    // A parameter routes too (what a driver sends for WHERE account_uid = $1).
    let routed = tx
        .query(
            "SELECT count(*) FROM documents WHERE account_uid = $1",
            &[&ACME],
        )
        .unwrap();
    assert_eq!(routed[0].get::<_, i64>(0), DOCS_PER_ACCOUNT);
    tx.commit().unwrap();

    // README's single-node advice, (select outseta_account_uid()) in the policy, is not a
    // form Citus accepts: creating the policy fails (Citus sends it on to the shards).
    let mut su = connect_as(cluster().coordinator, "postgres", DB);
    for stmt in [
        "CREATE TABLE subselect_form (account_uid text NOT NULL, x int)",
        "SELECT create_distributed_table('subselect_form', 'account_uid')",
        "ALTER TABLE subselect_form ENABLE ROW LEVEL SECURITY",
    ] {
        su.batch_execute(stmt).unwrap();
    }
    let e = su
        .batch_execute(
            "CREATE POLICY p ON subselect_form USING (account_uid = (select outseta_account_uid()))",
        )
        .expect_err("Citus accepted a sub-select in a policy");
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "XX000", "{db:?}");
    assert!(db.message().contains("SubLink"), "{db:?}");
    su.batch_execute("DROP TABLE subselect_form").unwrap();
}

fn rest() -> &'static PostgRest {
    let c = cluster();
    c.rest.get_or_init(|| {
        // sql/examples/postgrest/postgrest.conf: db-pre-request = public.outseta_pre_request.
        start_postgrest("postgrest-citus", c.coordinator, DB, &[])
    })
}

fn get(path: &str, cookie: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("{}{path}", rest().base()));
    if let Some(t) = cookie {
        req = req.header("Cookie", format!("Outseta.nocode.accessToken={t}"));
    }
    let mut r = req.call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

#[test]
#[ignore = "needs the Citus cluster of scripts/citus"]
fn postgrest_on_the_coordinator_with_the_cookie() {
    let bob = mint(BOB, GLOBEX);
    // With the documented tenant filter (one shard): Bob's account's rows.
    let (status, body) = get(
        &format!("/documents?select=account_uid,title&account_uid=eq.{GLOBEX}"),
        Some(&bob),
    );
    assert_eq!(status, 200, "{body}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(rows.len() as i64, DOCS_PER_ACCOUNT, "{body}");
    assert!(rows.iter().all(|r| r["account_uid"] == GLOBEX), "{body}");
    // Another account's filter: nothing (the policy still holds on the shard).
    let (_, other) = get(
        &format!("/documents?select=account_uid&account_uid=eq.{ACME}"),
        Some(&bob),
    );
    assert_eq!(other, "[]");
    // Without the filter (all 32 shards): the same rows, but Citus 13.2.2 returns
    // PostgREST's multi-shard JSON with the keys f1, f2, ... (README: Citus guide).
    let (status, all) = get("/documents?select=account_uid", Some(&bob));
    assert_eq!(status, 200, "{all}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    assert_eq!(all.len() as i64, DOCS_PER_ACCOUNT);
    for r in &all {
        let values: Vec<&serde_json::Value> = r.as_object().unwrap().values().collect();
        assert_eq!(values, vec![&json!(GLOBEX)], "{r}");
    }
    // No cookie: anonymous, nothing. A bad cookie: 401.
    let (status, none) = get("/documents?select=account_uid", None);
    assert_eq!((status, none.as_str()), (200, "[]"));
    let (status, _) = get("/documents", Some("not.a.token"));
    assert_eq!(status, 401);
}

/// A hand-on that fails (the worker's connection gone mid-transaction) names no token: not
/// in the client's error or notices, not in the coordinator's log (issue 28: Citus quotes the
/// `SET LOCAL` it was sending in the CONTEXT of the failed connection).
#[test]
#[ignore = "needs the Citus cluster of scripts/citus"]
fn a_failed_hand_on_shows_no_token() {
    let c = cluster();
    let x = mint(JANE, ACME);
    let y = mint(BOB, GLOBEX);
    let secret_parts = [
        x.rsplit('.').next().unwrap().to_string(),
        y.rsplit('.').next().unwrap().to_string(),
    ];
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = notices.clone();
    let mut config: postgres::Config = format!(
        "host=127.0.0.1 port={} user=outseta_app dbname={DB}",
        c.coordinator
    )
    .parse()
    .unwrap();
    config.notice_callback(move |n| {
        seen.lock().unwrap().push(format!(
            "{} {:?} {:?} {:?}",
            n.message(),
            n.detail(),
            n.hint(),
            n.where_()
        ))
    });
    let mut app = config.connect(postgres::NoTls).unwrap();
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL outseta_auth.token = '{x}'"))
        .unwrap();
    assert_eq!(visible_accounts(&mut tx), only(ACME)); // connections to both workers
                                                       // The second worker's end of this transaction's connections goes away.
    connect_as(c.workers[1], "postgres", DB)
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND usename = 'outseta_app'",
        )
        .unwrap();
    let failed = tx
        .batch_execute(&format!(
            "SELECT outseta_authenticate('{y}'); SELECT count(*) FROM documents"
        ))
        .err();
    drop(tx);
    let error = failed.map(|e| match e.as_db_error() {
        Some(db) => format!(
            "{} {:?} {:?} {:?}",
            db.message(),
            db.detail(),
            db.hint(),
            db.where_()
        ),
        None => e.to_string(),
    });
    let error = error.expect("a worker connection gone mid-transaction fails the statement");
    let notices = notices.lock().unwrap().join("\n");
    let log_path = std::env::var("OUTSETA_CITUS_COORDINATOR_LOG").unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    for part in &secret_parts {
        assert!(
            !error.contains(part.as_str()),
            "token in the error: {error}"
        );
        assert!(
            !notices.contains(part.as_str()),
            "token in a notice: {notices}"
        );
        assert!(
            !log.contains(part.as_str()),
            "token in the coordinator's log"
        );
    }
    // The connection works again afterwards.
    let mut tx = app.transaction().unwrap();
    tx.batch_execute(&format!("SET LOCAL outseta_auth.token = '{y}'"))
        .unwrap();
    assert_eq!(visible_accounts(&mut tx), only(GLOBEX));
}
