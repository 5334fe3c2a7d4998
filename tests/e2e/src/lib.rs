//! Fixture for the end-to-end tests: a database on the throwaway clusters that
//! `scripts/e2e` started (the main one preloads the library; another does not), with the
//! example schema loaded and the JWKS served by an in-process outseta-dev server on
//! 127.0.0.1.

pub mod portable;
pub mod supabase_js;
pub mod webdriver;

use std::sync::OnceLock;

use outseta_dev::{Issuer, Server, TokenRequest};
use postgres::{Client, NoTls};

pub const DB: &str = "outseta_e2e";
pub const ISSUER: &str = "https://e2e.outseta.com";
pub const JANE: &str = "L9nqAzQZ";
pub const BOB: &str = "DQ2b7wmV";
pub const ACME: &str = "wZmNw7Q2";
pub const GLOBEX: &str = "y9gE3kWj";

pub struct Fixture {
    pub server: Server,
    /// The main cluster: `shared_preload_libraries = 'outseta_auth'`.
    pub port: u16,
    /// A cluster without preload: the library loads on first use.
    pub nopreload_port: u16,
}

fn env_port(name: &str) -> u16 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run these tests through scripts/e2e"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a port number"))
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let port = env_port("OUTSETA_E2E_PGPORT");
        let nopreload_port = env_port("OUTSETA_E2E_NOPRELOAD_PORT");
        let server = Server::start("127.0.0.1:0", Issuer::new(ISSUER)).expect("outseta-dev");
        setup_database(port, &server);
        setup_database(nopreload_port, &server);
        Fixture {
            server,
            port,
            nopreload_port,
        }
    })
}

/// The test database on the cluster at `port`: extension, application role, settings,
/// example schema and seed.
fn setup_database(port: u16, server: &Server) {
    {
        let mut su = connect_as(port, "postgres", "postgres");
        su.batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
            .unwrap();
        su.batch_execute(&format!("CREATE DATABASE {DB}")).unwrap();
        let mut db = connect_as(port, "postgres", DB);
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql/examples/");
        let schema = std::fs::read_to_string(format!("{examples}outseta_app.sql")).unwrap();
        let seed = std::fs::read_to_string(format!("{examples}seed.sql")).unwrap();
        db.batch_execute(&format!(
            "CREATE EXTENSION outseta_auth;
             DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'outseta_app') THEN
                     CREATE ROLE outseta_app LOGIN;
                 END IF;
             END $$;
             ALTER DATABASE {DB} SET outseta_auth.jwks_url = '{url}';
             ALTER DATABASE {DB} SET outseta_auth.issuer = '{ISSUER}';
             ALTER ROLE outseta_app IN DATABASE {DB} SET outseta_auth.token_header = 'authorization';",
            url = server.jwks_url()
        ))
        .unwrap();
        db.batch_execute(&schema).unwrap();
        db.batch_execute(&seed).unwrap();
    }
}

/// A port from the environment scripts/e2e sets.
pub fn port_of(name: &str) -> u16 {
    env_port(name)
}

/// `pgbench -n` (no vacuum) against the server on 127.0.0.1:`port` as `user`; the caller
/// adds clients, duration, the script and the database.
pub fn pgbench(port: u16, user: &str) -> std::process::Command {
    let mut c = std::process::Command::new("pgbench");
    c.args(["-n", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user]);
    c
}

pub fn connect_as(port: u16, user: &str, db: &str) -> Client {
    Client::connect(
        &format!("host=127.0.0.1 port={port} user={user} dbname={db}"),
        NoTls,
    )
    .unwrap_or_else(|e| panic!("connecting as {user} to {db} on {port}: {e}"))
}

/// A new connection as the application role (not a superuser, not the table owner).
pub fn app() -> Client {
    connect_as(fixture().port, "outseta_app", DB)
}

/// A new superuser connection to the test database.
pub fn superuser() -> Client {
    connect_as(fixture().port, "postgres", DB)
}

/// As [`app`], on the cluster without preload.
pub fn app_nopreload() -> Client {
    connect_as(fixture().nopreload_port, "outseta_app", DB)
}

/// As [`superuser`], on the cluster without preload.
pub fn superuser_nopreload() -> Client {
    connect_as(fixture().nopreload_port, "postgres", DB)
}

/// A token from outseta-dev's `POST /tokens`, over HTTP, as an app's own tests would get one.
pub fn token(sub: &str, account: &str) -> String {
    mint_over_http(serde_json::json!({"sub": sub, "account": account}))
}

/// A token with extra options (add-ons, expiry), also through `POST /tokens`.
pub fn token_with(req: TokenRequest) -> String {
    mint_over_http(serde_json::json!({
        "sub": req.sub,
        "account": req.account,
        "add_on_uids": req.add_on_uids,
        "is_primary": req.is_primary,
        "expires_in": req.expires_in,
    }))
}

fn mint_over_http(body: serde_json::Value) -> String {
    let addr = fixture().server.addr.to_string();
    let resp = outseta_dev::post_json(&addr, "/tokens", &body).expect("POST /tokens");
    resp["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {resp}"))
        .to_string()
}

/// Make the planner use parallel workers for `query` in this transaction, and check with
/// EXPLAIN ANALYZE that at least one was launched.
pub fn force_parallel(tx: &mut postgres::Transaction, query: &str) {
    tx.batch_execute(
        "SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0;
         SET LOCAL min_parallel_table_scan_size = 0; SET LOCAL max_parallel_workers_per_gather = 2;",
    )
    .unwrap();
    let plan: Vec<String> = tx
        .query(&format!("EXPLAIN (ANALYZE, COSTS OFF) {query}"), &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Workers Launched: 1") || plan.contains("Workers Launched: 2"),
        "{plan}"
    );
}

/// The webhook signing key the suites configure (64 hex characters, as Outseta shows it).
pub const WEBHOOK_KEY: &str = "4f7574736574615f6175746820746573742077656268f06f6b206b6579203132";

/// Configure [`WEBHOOK_KEY`] as `outseta_auth.webhook_secret` of the cluster at `port`,
/// as the README says to (ALTER SYSTEM and a reload), and wait until new sessions use it
/// (the value itself is shown to nobody: a signature made with it must verify).
pub fn configure_webhook_secret(port: u16) {
    let mut su = connect_as(port, "postgres", "postgres");
    // Two statements: ALTER SYSTEM cannot run in the implicit transaction of a batch.
    su.batch_execute(&format!(
        "ALTER SYSTEM SET outseta_auth.webhook_secret = '{WEBHOOK_KEY}'"
    ))
    .unwrap();
    su.batch_execute("SELECT pg_reload_conf()").unwrap();
    let started = std::time::Instant::now();
    let sig = outseta_dev::webhook_signature(WEBHOOK_KEY, b"{}").unwrap();
    loop {
        let used: bool = connect_as(port, "postgres", DB)
            .query_one("SELECT outseta_verify_webhook('{}', $1)", &[&sig])
            .unwrap()
            .get(0);
        if used {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the reload did not take effect"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A PostgREST 12 process (the binary scripts/setup installs), started with
/// `sql/examples/postgrest/postgrest.conf` against database `db` of the cluster at `pg_port`:
/// `db-uri` and `server-port` replaced, `overrides` replacing or adding other lines. Its log
/// and pid file are `<name>.log` / `<name>.pid` in the e2e work folder (scripts/e2e stops
/// every process with a pid file there).
pub struct PostgRest {
    pub addr: std::net::SocketAddr,
    _child: std::sync::Mutex<std::process::Child>,
}

impl PostgRest {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub fn work_dir() -> String {
    std::env::var("OUTSETA_E2E_WORK")
        .expect("OUTSETA_E2E_WORK is not set: run these tests through scripts/e2e")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start_postgrest(
    name: &str,
    pg_port: u16,
    db: &str,
    overrides: &[(&str, String)],
) -> PostgRest {
    use std::io::{Read, Write};
    let port = free_port();
    let conf_file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sql/examples/postgrest/postgrest.conf"
    );
    let mut lines: Vec<(String, String)> = std::fs::read_to_string(conf_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .filter(|(k, _)| !k.starts_with('#'))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect();
    let mut set = |k: &str, v: String| match lines.iter_mut().find(|(key, _)| key == k) {
        Some(l) => l.1 = v,
        None => lines.push((k.to_string(), v)),
    };
    set(
        "db-uri",
        format!("\"postgres://authenticator@127.0.0.1:{pg_port}/{db}\""),
    );
    set("server-port", port.to_string());
    for (k, v) in overrides {
        set(k, v.clone());
    }
    let conf: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let work = work_dir();
    let conf_path = format!("{work}/{name}.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let bin = std::env::var("OUTSETA_E2E_POSTGREST").expect("OUTSETA_E2E_POSTGREST");
    let child = std::process::Command::new(bin)
        .arg(&conf_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(format!("{work}/{name}.log")).unwrap())
        .spawn()
        .expect("starting postgrest");
    std::fs::write(format!("{work}/{name}.pid"), child.id().to_string()).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = std::time::Instant::now();
    // Ready when the root (the OpenAPI document) answers 200.
    loop {
        let answer = std::net::TcpStream::connect(addr).ok().and_then(|mut s| {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut r = String::new();
            s.read_to_string(&mut r).ok()?;
            Some(r)
        });
        if answer.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "PostgREST did not become ready; see {work}/{name}.log"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    PostgRest {
        addr,
        _child: std::sync::Mutex::new(child),
    }
}

/// Create database `db` on the main cluster (dropped first if it exists) with the
/// extension and its key source set to the fixture's issuer; returns a superuser client.
pub fn fresh_database(db: &str) -> Client {
    let f = fixture();
    let mut su = connect_as(f.port, "postgres", "postgres");
    su.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .unwrap();
    su.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    let mut c = connect_as(f.port, "postgres", db);
    c.batch_execute(&format!(
        "CREATE EXTENSION outseta_auth;
         ALTER DATABASE {db} SET outseta_auth.jwks_url = '{}';
         ALTER DATABASE {db} SET outseta_auth.issuer = '{ISSUER}';",
        f.server.jwks_url()
    ))
    .unwrap();
    c
}

/// A LOGIN role in `pg_monitor` on the cluster at `port` (created once): what a monitoring
/// system connects as.
pub fn monitoring_role(port: u16, name: &str) {
    connect_as(port, "postgres", "postgres")
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN
                     CREATE ROLE {name} LOGIN IN ROLE pg_monitor;
                 END IF;
             END $$"
        ))
        .unwrap();
}

/// The pid of the background worker of the cluster whose data directory is `data`: a
/// child of its postmaster whose process title names it (read from /proc). None while
/// there is none (stopped, restarting).
pub fn jwks_worker_pid(data: &str) -> Option<String> {
    let postmaster = std::fs::read_to_string(format!("{data}/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.to_string();
        pid.parse::<u32>().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid = stat.rsplit(") ").next()?.split(' ').nth(1)?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (ppid == postmaster && String::from_utf8_lossy(&cmd).contains("JWKS worker")).then_some(pid)
    })
}
