//! The benchmarks (`bash bench/run`, which builds and installs the extension and starts the
//! clusters): one database schema, one function per section, and BENCHMARKS.md's tables on
//! stdout, each preceded by the command that produced it. A figure that has a target shows
//! it beside the figure with `met` = `yes` or `**MISSED**`; a summary of the targets comes
//! last, and the exit status is 1 when one was missed (after everything is printed).
//!
//!   1 cold `outseta_verify()` per call vs `jsonwebtoken::decode` alone (in this process)
//!   2 warm accessor per row vs `current_setting()`, a short and an Outseta-sized token;
//!     and with `outseta_auth.profile_check` on vs off
//!   3 per-request throughput (pgbench) vs a no-verification baseline; the shared memory
//!   4 policy forms, on a seq scan and an index scan
//!   5 a remote-like (150 ms) issuer: new connections (pgbench -C) and parallel queries,
//!     preloaded vs not preloaded vs no verification
//!   6 a remote-like (150 ms) profile endpoint: profile_check off vs on, outseta_profile()
//!
//! The issuer is outseta-dev, in this process; `pgbench` runs as a subprocess.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use outseta_dev::{Fault, Issuer, Server, TokenRequest};
use outseta_e2e::connect_as;
use postgres::Client;
use serde_json::{json, Value};

const HELP: &str = "\
bench: outseta_auth's benchmarks; run through `bash bench/run`, which starts the clusters.
  bench --port P [--nopreload-port P2] [--log FILE] [--sections 1,2,3,4,5,6] [--runs 5]
        [--seconds 15] [--quick]
  --port            the cluster that preloads outseta_auth (all sections)
  --nopreload-port  a cluster that does not (section 5)
  --log             the preloaded cluster's server log (section 5 quotes the worker's line)
  --runs            runs per figure (medians, min-max); sections 5 and 6 run once;
                    section 1 verifies 2,000 new tokens a run (9 runs' worth of tokens,
                    1 with --quick: more runs reuse them)
  --seconds         pgbench seconds of section 3
  --quick           a smoke test: 20k rows instead of 1M, 4,000 tokens instead of 20,000,
                    runs 1, seconds 2 (unless given), pgbench of sections 5 and 6 for
                    --seconds instead of 10 s
Exit status 1 when a target is missed.";

const ISSUER: &str = "https://bench.outseta.com";
const DB: &str = "bench";
const APP: &str = "bench_app";
/// Distinct tokens a cold-verification run verifies (as the core's `cargo bench`).
const COLD_BATCH: usize = 2000;
/// What DNS + TCP + TLS + HTTP to Outseta costs from a database server (sections 5, 6).
const SLOW_MS: u64 = 150;
const PEOPLE: usize = 1000;

struct Args {
    port: u16,
    nopreload_port: Option<u16>,
    log: Option<String>,
    sections: Vec<u32>,
    runs: usize,
    seconds: u64,
    quick: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut port, mut nopreload_port, mut log) = (None, None, None);
    let (mut sections, mut runs, mut seconds, mut quick) = (None, None, None, false);
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
                .clone()
        };
        match a.as_str() {
            "--port" => port = Some(value().parse().unwrap_or_else(|_| die("--port"))),
            "--nopreload-port" => {
                nopreload_port = Some(value().parse().unwrap_or_else(|_| die("--nopreload-port")))
            }
            "--log" => log = Some(value()),
            "--sections" => {
                let v = value();
                let s: Result<Vec<u32>, _> = v
                    .split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect();
                match s {
                    Ok(s) if s.iter().all(|n| (1..=6).contains(n)) => sections = Some(s),
                    _ => die("--sections: numbers 1 to 6, comma-separated"),
                }
            }
            "--runs" => runs = Some(value().parse().unwrap_or_else(|_| die("--runs"))),
            "--seconds" => seconds = Some(value().parse().unwrap_or_else(|_| die("--seconds"))),
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    let mut sections = sections.unwrap_or_else(|| (1..=6).collect());
    sections.sort_unstable();
    sections.dedup();
    Args {
        port: port.unwrap_or_else(|| die("--port is required")),
        nopreload_port,
        log,
        sections,
        runs: runs.unwrap_or(if quick { 1 } else { 5 }).max(1),
        seconds: seconds.unwrap_or(if quick { 2 } else { 15 }).max(1),
        quick,
    }
}

fn die(msg: &str) -> ! {
    eprintln!("bench: {msg}\n{HELP}");
    std::process::exit(2);
}

/// Median, min and max (the median of an even count is the mean of the middle two).
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[0], v[n - 1])
}

/// A ratio as printed, and as compared with its target (so that the two always agree).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

struct Target {
    what: String,
    result: String,
    target: String,
    met: bool,
}

struct Token {
    id: i32,
    person: String,
    account: String,
    token: String,
}

struct Bench {
    a: Args,
    server: Server,
    tokens: Vec<Token>,
    /// Sub, account, iss and exp only: the shortest RS256 token that still says who and
    /// which account (section 2).
    short_token: String,
    rows: usize,
    work: PathBuf,
    targets: Vec<Target>,
}

fn main() {
    let a = args();
    let rows = if a.quick { 20_000 } else { 1_000_000 };
    let n_tokens = if a.quick { 4_000 } else { 20_000 };
    eprintln!("bench: minting {n_tokens} tokens...");
    let issuer = Issuer::new(ISSUER);
    let tokens = mint_tokens(&issuer, n_tokens);
    let short_token = issuer.signing_key().mint(&json!({
        "sub": "person00001",
        "outseta:accountUid": "acct0001",
        "iss": ISSUER,
        "exp": outseta_dev::now() + 6 * 3600,
    }));
    let server = Server::start("127.0.0.1:0", issuer).expect("outseta-dev");
    let work = std::env::temp_dir().join(format!("outseta-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let mut b = Bench {
        a,
        server,
        tokens,
        short_token,
        rows,
        work,
        targets: Vec::new(),
    };
    eprintln!("bench: loading {rows}-row tables...");
    b.create_schema(b.a.port, true);
    b.machine();
    for s in b.a.sections.clone() {
        eprintln!("bench: section {s}...");
        match s {
            1 => b.cold_verification(),
            2 => b.per_row(),
            3 => b.throughput(),
            4 => b.policy_forms(),
            5 => b.remote_issuer(),
            6 => b.profile_endpoint(),
            _ => unreachable!("checked by args()"),
        }
    }
    let _ = std::fs::remove_dir_all(&b.work);
    std::process::exit(b.summary());
}

/// `n` tokens as `outseta-dev tokens` mints them: token i for person i % 1000 and account
/// i % 10, with a `jti` so that tokens minted in the same second are distinct. Two threads.
fn mint_tokens(issuer: &Issuer, n: usize) -> Vec<Token> {
    let mint = |range: std::ops::Range<usize>| -> Vec<Token> {
        range
            .map(|i| {
                let (person, account) = (
                    format!("person{:05}", i % PEOPLE),
                    format!("acct{:04}", i % 10),
                );
                let mut req = TokenRequest::new(&person, &account);
                req.expires_in = 6 * 3600;
                req.extra.insert("jti".into(), json!(format!("t{i}")));
                Token {
                    id: i as i32,
                    token: issuer.mint(&req),
                    person,
                    account,
                }
            })
            .collect()
    };
    std::thread::scope(|s| {
        let half = s.spawn(|| mint(n / 2..n));
        let mut v = mint(0..n / 2);
        v.extend(half.join().unwrap());
        v
    })
}

impl Bench {
    fn app(&self, port: u16) -> Client {
        connect_as(port, APP, DB)
    }

    fn su(&self, port: u16) -> Client {
        connect_as(port, "postgres", DB)
    }

    /// The command that reproduces a table: `bash bench/run` with this run's flags.
    fn command(&self, section: u32, runs: bool, seconds: bool) -> String {
        let mut c = String::new();
        if let Ok(p) = std::env::var("BENCH_PROFILE") {
            if p != "release" {
                c += &format!("BENCH_PROFILE={p} ");
            }
        }
        c += &format!("bash bench/run --sections {section}");
        if runs {
            c += &format!(" --runs {}", self.a.runs);
        }
        if seconds {
            c += &format!(" --seconds {}", self.a.seconds);
        }
        if self.a.quick {
            c += " --quick";
        }
        format!("`{c}`")
    }

    /// `target` / `met` cells for a ratio that must be at most (or at least) `limit`; the
    /// target is also kept for the summary.
    fn target(
        &mut self,
        what: &str,
        detail: String,
        ratio: f64,
        at_most: bool,
        limit: f64,
    ) -> String {
        let r = round2(ratio);
        let met = if at_most { r <= limit } else { r >= limit };
        let target = format!("{} {limit:.2}x", if at_most { "<=" } else { ">=" });
        self.targets.push(Target {
            what: what.to_string(),
            result: format!("{detail} = **{r:.2}x**"),
            target: target.clone(),
            met,
        });
        format!("{target} | {}", if met { "yes" } else { "**MISSED**" })
    }

    /// The database on the cluster at `port` (dropped first if there): the extension, the
    /// application role, the tokens and the `big` table; with `full`, also `big_idx`, the
    /// pgbench tables with their policies and `bench_ms()`. The cluster without preload
    /// (section 5) needs only the first part.
    fn create_schema(&self, port: u16, full: bool) {
        let mut su = connect_as(port, "postgres", "postgres");
        su.batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
            .unwrap();
        su.batch_execute(&format!("CREATE DATABASE {DB}")).unwrap();
        let mut db = self.su(port);
        let rows = self.rows;
        let mut sql = format!(
            "CREATE EXTENSION outseta_auth;
             DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP}') THEN
                     CREATE ROLE {APP} LOGIN;
                 END IF;
             END $$;
             ALTER DATABASE {DB} SET outseta_auth.jwks_url = '{jwks}';
             CREATE TABLE tokens (id int PRIMARY KEY, person text, account text, token text);
             -- {rows} rows, {PEOPLE} people: per-row costs (no index), policy forms.
             CREATE TABLE big AS SELECT 'person' || lpad((g % {PEOPLE})::text, 5, '0') AS user_id,
                 g AS n FROM generate_series(1, {rows}) g;
             GRANT SELECT ON tokens, big TO {APP};",
            jwks = self.server.jwks_url()
        );
        if full {
            sql += &format!(
                "CREATE TABLE big_idx AS SELECT * FROM big;
                 CREATE INDEX ON big_idx (user_id);
                 -- pgbench: the same rows, one policy on the verified token, one on a setting.
                 CREATE TABLE items AS SELECT g AS id,
                     'person' || lpad((g % {PEOPLE})::text, 5, '0') AS user_id,
                     md5(g::text) AS payload FROM generate_series(1, {rows}) g;
                 CREATE INDEX ON items (user_id, id);
                 CREATE TABLE items_base AS SELECT * FROM items;
                 CREATE INDEX ON items_base (user_id, id);
                 ALTER TABLE items ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY p ON items USING (user_id = (select outseta_sub()));
                 ALTER TABLE items_base ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY p ON items_base USING (user_id = current_setting('app.user_id', true));
                 GRANT SELECT ON big_idx, items, items_base TO {APP};
                 -- Wall time of one statement, in ms, measured inside the backend.
                 CREATE FUNCTION bench_ms(q text) RETURNS float8 LANGUAGE plpgsql AS $f$
                 DECLARE t0 timestamptz; r bigint;
                 BEGIN t0 := clock_timestamp(); EXECUTE q INTO r;
                       RETURN extract(epoch FROM clock_timestamp() - t0) * 1000; END $f$;"
            );
        }
        db.batch_execute(&sql).unwrap();
        let mut copy = db
            .copy_in("COPY tokens (id, person, account, token) FROM STDIN")
            .unwrap();
        let mut buf = String::new();
        for t in &self.tokens {
            writeln!(buf, "{}\t{}\t{}\t{}", t.id, t.person, t.account, t.token).unwrap();
        }
        std::io::Write::write_all(&mut copy, buf.as_bytes()).unwrap();
        copy.finish().unwrap();
        db.batch_execute("VACUUM ANALYZE").unwrap();
    }

    fn machine(&self) {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("?", |(_, m)| m.trim());
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<f64>()
                    .ok()
            })
            .map_or("?".into(), |kb| format!("{:.0}", kb / 1024.0 / 1024.0));
        let version: String = self
            .su(self.a.port)
            .query_one("SELECT version()", &[])
            .unwrap()
            .get(0);
        let rustc = Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .nth(1)
                    .map(String::from)
            })
            .unwrap_or_else(|| "?".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!("### Machine\n");
        println!(
            "{cores} cores, {model}, {mem_gib} GiB; {}; rustc {rustc}; pgrx 0.18.1; build profile {}; runs per figure: {}; {} rows, {} tokens",
            version.split(',').next().unwrap_or(&version),
            std::env::var("BENCH_PROFILE").unwrap_or_else(|_| "release".into()),
            self.a.runs,
            self.rows,
            self.tokens.len()
        );
    }

    /// Wall time of `q` in ms, measured inside the backend.
    fn ms(c: &mut Client, q: &str) -> f64 {
        c.query_one("SELECT bench_ms($1)", &[&q]).unwrap().get(0)
    }

    fn set_token(c: &mut Client, token: &str) {
        c.execute(
            "SELECT set_config('outseta_auth.token', $1, false)",
            &[&token],
        )
        .unwrap();
    }

    /// Runs `pgbench -n <flags> -f <name> bench` as the application role against the cluster
    /// at `port`, with `script` written to `<name>`; its stdout.
    fn pgbench(&self, port: u16, flags: &[String], name: &str, script: &str) -> String {
        let path = self.work.join(name);
        std::fs::write(&path, script).unwrap();
        let out = outseta_e2e::pgbench(port, APP)
            .args(flags)
            .arg("-f")
            .arg(&path)
            .arg(DB)
            .output()
            .expect("pgbench runs (scripts/setup installs it)");
        if !out.status.success() {
            panic!(
                "pgbench {flags:?} -f {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value after `prefix` in pgbench's output (`tps = 123.4 (...)`: "123.4").
    fn field(out: &str, prefix: &str) -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.split(['/', ' ']).find(|s| !s.is_empty()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in pgbench's output:\n{out}"))
    }

    fn cold_verification(&mut self) {
        println!("\n### 1. Cold verification (new token, keys cached)\n");
        println!(
            "{}: each run, `jsonwebtoken::decode` over {COLD_BATCH} distinct RS256 tokens \
             (RSA-2048) in this program, then `outseta_verify()` over the same tokens in a \
             fresh backend (each run its own tokens; one warm-up call first fetches the \
             keys). The core's own breakdown: `cargo bench -p outseta_auth_core --bench verify`.\n",
            self.command(1, true, false)
        );
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let jwk = self.server.issuer.lock().unwrap().signing_key().jwk();
        let dk = DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let warm = self.tokens.len() as i32 - 1;
        let batches = ((self.tokens.len() - 1) / COLD_BATCH).max(1);
        let (mut bare, mut cold) = (Vec::new(), Vec::new());
        for r in 0..self.a.runs {
            let lo = (r % batches) * COLD_BATCH;
            let hi = lo + COLD_BATCH;
            let t0 = Instant::now();
            for t in &self.tokens[lo..hi] {
                black_box(decode::<Value>(&t.token, &dk, &validation).unwrap());
            }
            bare.push(t0.elapsed().as_secs_f64() * 1e6 / COLD_BATCH as f64);
            let mut c = self.app(self.a.port);
            c.execute(
                "SELECT outseta_verify(token) IS NOT NULL FROM tokens WHERE id = $1",
                &[&warm],
            )
            .unwrap();
            let range = format!("FROM tokens WHERE id >= {lo} AND id < {hi}");
            let verify = Self::ms(
                &mut c,
                &format!("SELECT count(outseta_verify(token)) {range}"),
            );
            let plain = Self::ms(&mut c, &format!("SELECT count(length(token)) {range}"));
            cold.push((verify - plain) * 1000.0 / COLD_BATCH as f64);
        }
        let (b, bmin, bmax) = stats(&bare);
        let (c, cmin, cmax) = stats(&cold);
        let cells = self.target(
            "cold `outseta_verify()` per call vs `jsonwebtoken::decode` alone",
            format!("{c:.3} us vs {b:.3} us"),
            c / b,
            true,
            1.25,
        );
        println!("| what | median | min-max | vs jsonwebtoken alone | target | met |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| `jsonwebtoken::decode` alone, in this program (baseline) | {b:.3} us | {bmin:.3}-{bmax:.3} us | 1.00x | - | - |"
        );
        println!(
            "| `outseta_verify()` per call in PostgreSQL ({COLD_BATCH} distinct tokens, fresh backend) | {c:.3} us | {cmin:.3}-{cmax:.3} us | {:.2}x | {cells} |",
            c / b
        );
    }

    fn per_row(&mut self) {
        let rows = self.rows;
        println!(
            "\n### 2. Warm accessor per row ({rows}-row seq scan, no index, no parallel workers)\n"
        );
        let port = self.a.port;
        let profile_url = self.server.profile_url();
        let tokens = [
            ("short", self.short_token.clone()),
            ("Outseta's", self.tokens[1].token.clone()),
        ];
        let literal = "SELECT count(*) FROM big WHERE user_id = 'person00001'";
        let setting =
            "SELECT count(*) FROM big WHERE user_id = current_setting('outseta_auth.token')";
        let accessor = "SELECT count(*) FROM big WHERE user_id = outseta_sub()";
        // [token][check]: the scans of outseta_sub(); current_setting() with the check off.
        let mut lit = Vec::new();
        let mut sub = [[vec![], vec![]], [vec![], vec![]]];
        let mut cs = [vec![], vec![]];
        let mut su = self.su(port);
        let mut profile_requests = 0;
        for _ in 0..self.a.runs {
            for check in [false, true] {
                // New sessions of the role take these (both settings are superuser-only).
                su.batch_execute(&if check {
                    format!(
                        "ALTER ROLE {APP} SET outseta_auth.profile_url = '{profile_url}';
                         ALTER ROLE {APP} SET outseta_auth.profile_check = on;"
                    )
                } else {
                    format!(
                        "ALTER ROLE {APP} RESET outseta_auth.profile_url;
                         ALTER ROLE {APP} RESET outseta_auth.profile_check;"
                    )
                })
                .unwrap();
                for (k, (_, token)) in tokens.iter().enumerate() {
                    let mut c = self.app(port);
                    let on: String = c
                        .query_one("SHOW outseta_auth.profile_check", &[])
                        .unwrap()
                        .get(0);
                    assert_eq!(on == "on", check, "profile_check is {on}");
                    Self::set_token(&mut c, token);
                    // Warm: verifies the token (with the check on: asks the profile endpoint,
                    // unless the cluster has its answer already).
                    let h0 = self.server.hits("/api/v1/profile");
                    let who: Option<String> =
                        c.query_one("SELECT outseta_sub()", &[]).unwrap().get(0);
                    assert_eq!(who.as_deref(), Some("person00001"));
                    profile_requests += self.server.hits("/api/v1/profile") - h0;
                    lit.push(Self::ms(&mut c, literal));
                    if !check {
                        cs[k].push(Self::ms(&mut c, setting));
                    }
                    sub[k][check as usize].push(Self::ms(&mut c, accessor));
                }
            }
        }
        su.batch_execute(&format!(
            "ALTER ROLE {APP} RESET outseta_auth.profile_url;
             ALTER ROLE {APP} RESET outseta_auth.profile_check;"
        ))
        .unwrap();
        let (lmed, lmin, lmax) = stats(&lit);
        let per_row = |ms: f64| (ms - lmed) * 1e6 / rows as f64;
        let label = |k: usize| format!("{} ({} bytes)", tokens[k].0, tokens[k].1.len());

        println!(
            "{}: each run, a new backend per token and setting; the token set with \
             `set_config('outseta_auth.token', ...)` and verified once, then each scan timed \
             inside the backend. The short token has only `sub`, `outseta:accountUid`, `iss` \
             and `exp` (RS256: the signature alone is 342 bytes); Outseta's has every claim \
             Outseta puts in an access token.\n",
            self.command(2, true, false)
        );
        println!(
            "| token | predicate | scan median (min-max) | per row over a literal | vs `current_setting()` | target | met |"
        );
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| - | `user_id = 'person00001'` (literal) | {lmed:.3} ms ({lmin:.3}-{lmax:.3}) | - | - | - | - |"
        );
        for k in 0..2 {
            let (smed, smin, smax) = stats(&cs[k]);
            let (omed, omin, omax) = stats(&sub[k][0]);
            let (s, o) = (per_row(smed), per_row(omed));
            let cells = self.target(
                &format!(
                    "`outseta_sub()` per row vs `current_setting()`, {} token",
                    label(k)
                ),
                format!("{o:.1} ns vs {s:.1} ns"),
                o / s,
                true,
                1.0,
            );
            println!(
                "| {} | `user_id = current_setting('outseta_auth.token')` | {smed:.3} ms ({smin:.3}-{smax:.3}) | {s:.1} ns | 1.00x | - | - |",
                label(k)
            );
            println!(
                "| {} | `user_id = outseta_sub()` | {omed:.3} ms ({omin:.3}-{omax:.3}) | {o:.1} ns | {:.2}x | {cells} |",
                label(k),
                o / s
            );
        }

        println!(
            "\n{}: the same backends and scans; with the check on, `outseta_auth.profile_check = on` \
             and `outseta_auth.profile_url` = outseta-dev's profile endpoint (no delay) for the \
             role, and the verification that warms the backend asks it ({profile_requests} \
             profile requests in all, for {} backends with the check on).\n",
            self.command(2, true, false),
            2 * self.a.runs
        );
        println!(
            "| token | `outseta_sub()` per row, profile_check off: scan median (min-max), per row | profile_check on | on vs off | target | met |"
        );
        println!("|---|---|---|---|---|---|");
        for (k, [off, on]) in sub.iter().enumerate() {
            let (fmed, fmin, fmax) = stats(off);
            let (nmed, nmin, nmax) = stats(on);
            let (off, on) = (per_row(fmed), per_row(nmed));
            let cells = self.target(
                &format!(
                    "`outseta_sub()` per row with `profile_check` on vs off, {} token",
                    label(k)
                ),
                format!("{on:.1} ns vs {off:.1} ns"),
                on / off,
                true,
                1.05,
            );
            println!(
                "| {} | {fmed:.3} ms ({fmin:.3}-{fmax:.3}), {off:.1} ns | {nmed:.3} ms ({nmin:.3}-{nmax:.3}), {on:.1} ns | {:.2}x | {cells} |",
                label(k),
                on / off
            );
        }
    }

    fn throughput(&mut self) {
        let (secs, n) = (self.a.seconds, self.tokens.len());
        println!(
            "\n### 3. Per-request throughput (pgbench, 4 clients, {secs} s, prepared; RLS over {} rows / {PEOPLE} people)\n",
            self.rows
        );
        // A transaction: a setting from a row of `tokens` (the client's own, or a random one
        // of the n), then five rows of `table` under its policy.
        let script = |setting: &str, column: &str, table: &str, random: bool| {
            let (pick, id) = if random {
                (format!("\\set id random(0, {})\n", n - 1), ":id")
            } else {
                (String::new(), ":client_id")
            };
            format!(
                "{pick}BEGIN;\n\
                 SELECT set_config('{setting}', {column}, true) FROM tokens WHERE id = {id};\n\
                 SELECT payload FROM {table} LIMIT 5;\nEND;\n"
            )
        };
        let same = script("outseta_auth.token", "token", "items", false);
        let fresh = script("outseta_auth.token", "token", "items", true);
        let base = script("app.user_id", "person", "items_base", false);
        // (b)'s like-for-like baseline: the same random rows of `tokens` (reading a random row
        // of a 20 MB table is itself slower than the same row).
        let base_fresh = script("app.user_id", "person", "items_base", true);
        let flags: Vec<String> = [
            "-M",
            "prepared",
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            &secs.to_string(),
        ]
        .map(String::from)
        .to_vec();
        // Steady state: every token verified once in the cluster before the runs (the cold
        // cost is section 1's), so that (b)'s first run is not also the table's warm-up.
        let warmed: i64 = self
            .app(self.a.port)
            .query_one("SELECT count(outseta_verify(token)) FROM tokens", &[])
            .unwrap()
            .get(0);
        assert_eq!(warmed as usize, n);
        let (mut tb, mut ta, mut td, mut tf) = (vec![], vec![], vec![], vec![]);
        for _ in 0..self.a.runs {
            let tps = |name: &str, script: &str| {
                Self::field(&self.pgbench(self.a.port, &flags, name, script), "tps = ")
            };
            tb.push(tps("base.sql", &base));
            ta.push(tps("same.sql", &same));
            td.push(tps("base_fresh.sql", &base_fresh));
            tf.push(tps("fresh.sql", &fresh));
        }
        let (bmed, bmin, bmax) = stats(&tb);
        let (amed, amin, amax) = stats(&ta);
        let (dmed, dmin, dmax) = stats(&td);
        let (fmed, fmin, fmax) = stats(&tf);
        // (b) over (d) run by run (each run's scripts ran back to back).
        let per_run: Vec<f64> = tf.iter().zip(&td).map(|(f, d)| f / d).collect();
        let (_, rmin, rmax) = stats(&per_run);
        println!(
            "{}: each run, in turn, `pgbench -n -M prepared -c 4 -j 2 -T {secs} -U {APP} -f <script> {DB}` \
             with the scripts base.sql, same.sql, base_fresh.sql, fresh.sql (a transaction: the \
             token or setting from `tokens`, the client's own row or a random one, then \
             `SELECT payload FROM items LIMIT 5` under the policy). (b) is held to its \
             like-for-like baseline (d), which reads the same random rows without verifying; \
             its ratio to (c) is shown too. Before the runs every token is verified once \
             (steady state: the cold cost is section 1's).\n",
            self.command(3, true, true)
        );
        let a_cells = self.target(
            "pgbench (a) same token each transaction vs the no-verification baseline",
            format!("{amed:.0} vs {bmed:.0} TPS"),
            amed / bmed,
            false,
            0.95,
        );
        let f_cells = self.target(
            &format!(
                "pgbench (b) a fresh token every transaction ({n} tokens, 4 clients) vs (d) a \
                 fresh person without verification"
            ),
            format!("{fmed:.0} vs {dmed:.0} TPS"),
            fmed / dmed,
            false,
            0.9,
        );
        println!("| transaction | TPS median | min-max | vs baseline | target | met |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| (c) baseline: `set_config('app.user_id', ...)` + policy on it (base.sql) | {bmed:.3} | {bmin:.3}-{bmax:.3} | 1.00x | - | - |"
        );
        println!(
            "| (a) same token each transaction (per client; same.sql) | {amed:.3} | {amin:.3}-{amax:.3} | {:.2}x | {a_cells} |",
            amed / bmed
        );
        println!(
            "| (d) baseline, a fresh person every transaction: a random row of `tokens` ({n}; base_fresh.sql) | {dmed:.3} | {dmin:.3}-{dmax:.3} | {:.2}x | - | - |",
            dmed / bmed
        );
        println!(
            "| (b) a fresh token every transaction ({n} tokens; fresh.sql) | {fmed:.3} | {fmin:.3}-{fmax:.3} | {:.2}x; **{:.2}x of (d)** (run by run {rmin:.2}-{rmax:.2}x) | {f_cells} |",
            fmed / bmed,
            fmed / dmed
        );

        println!(
            "\n{}: after the runs above, `SELECT * FROM outseta_shared_slots()` (the shared memory \
             of the preloaded cluster, by area).\n",
            self.command(3, true, true)
        );
        // Every column as the server prints it (the function gains columns over time).
        let rows: Vec<postgres::SimpleQueryRow> = self
            .su(self.a.port)
            .simple_query("SELECT * FROM outseta_shared_slots()")
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect();
        let Some(first) = rows.first() else {
            println!("(no rows)");
            return;
        };
        let names: Vec<&str> = first.columns().iter().map(|c| c.name()).collect();
        println!("| {} |", names.join(" | "));
        println!("|{}", "---|".repeat(names.len()));
        let mut total = 0i64;
        for r in &rows {
            let cells: Vec<&str> = (0..names.len()).map(|i| r.get(i).unwrap_or("")).collect();
            if let Some(b) = names.iter().position(|n| *n == "bytes") {
                total += cells[b].parse::<i64>().unwrap_or(0);
            }
            println!("| {} |", cells.join(" | "));
        }
        let total_row: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| match (i, *n) {
                (0, _) => "**total**".to_string(),
                (_, "bytes") => format!("**{total}**"),
                _ => String::new(),
            })
            .collect();
        println!("| {} |", total_row.join(" | "));
    }

    fn policy_forms(&mut self) {
        let per_person = self.rows / PEOPLE;
        println!(
            "\n### 4. Policy forms ({} rows; person00001 has {per_person})\n",
            self.rows
        );
        println!(
            "{}: each figure a new backend per run, the token set and verified once, the \
             scan timed inside the backend; the index scan with `enable_seqscan` and \
             `enable_bitmapscan` off.\n",
            self.command(4, true, false)
        );
        let token = self.tokens[1].token.clone();
        let form = |table: &str, pred: &str, extra: &str| {
            let v: Vec<f64> = (0..self.a.runs)
                .map(|_| {
                    let mut c = self.app(self.a.port);
                    Self::set_token(&mut c, &token);
                    c.query_one("SELECT outseta_sub()", &[]).unwrap();
                    c.batch_execute(extra).unwrap();
                    Self::ms(
                        &mut c,
                        &format!("SELECT count(*) FROM {table} WHERE {pred}"),
                    )
                })
                .collect();
            stats(&v)
        };
        println!(
            "| predicate | seq scan (big) median (min-max) | index scan (big_idx) median (min-max) |"
        );
        println!("|---|---|---|");
        for pred in [
            "user_id = outseta_sub()",
            "user_id = (select outseta_sub())",
            "user_id = 'person00001'",
        ] {
            let (s1, s2, s3) = form("big", pred, "");
            let (i1, i2, i3) = form(
                "big_idx",
                pred,
                "SET enable_seqscan = off; SET enable_bitmapscan = off;",
            );
            println!("| `{pred}` | {s1:.3} ms ({s2:.3}-{s3:.3}) | {i1:.3} ms ({i2:.3}-{i3:.3}) |");
        }
    }

    /// pgbench's seconds in sections 5 and 6: 10, or --seconds with --quick.
    fn short_seconds(&self) -> u64 {
        if self.a.quick {
            self.a.seconds
        } else {
            10
        }
    }

    fn remote_issuer(&mut self) {
        let Some(np) = self.a.nopreload_port else {
            println!("\n### 5. skipped: no --nopreload-port (bash bench/run gives one)");
            return;
        };
        let (secs, n) = (self.short_seconds(), self.tokens.len());
        println!(
            "\n### 5. A remote-like issuer (every JWKS answer takes {SLOW_MS} ms): new connections and parallel queries\n"
        );
        // The same tokens and `big` on the second cluster, which does not preload the
        // library (per-backend keys).
        self.create_schema(np, false);
        self.server
            .set_fault(Fault::Slow(Duration::from_millis(SLOW_MS)));
        let jwks = || self.server.hits("/.well-known/jwks");
        let pick = format!("\\set id random(0, {})\n", n - 1);
        let verify =
            format!("{pick}SELECT outseta_verify(token) IS NOT NULL FROM tokens WHERE id = :id;\n");
        let plain = format!("{pick}SELECT length(token) FROM tokens WHERE id = :id;\n");
        let flags: Vec<String> = ["-C", "-c", "2", "-j", "2", "-T", &secs.to_string()]
            .map(String::from)
            .to_vec();
        // pgbench -C: a new connection for every transaction, as a serverless app without a pooler.
        let lat = |port: u16, name: &str, script: &str| {
            let out = self.pgbench(port, &flags, name, script);
            (
                Self::field(&out, "number of transactions actually processed: "),
                Self::field(&out, "latency average = "),
            )
        };
        let (ptx, plat) = lat(self.a.port, "first_plain.sql", &plain);
        let h0 = jwks();
        let (stx, slat) = lat(self.a.port, "first_verify.sql", &verify);
        let h1 = jwks();
        let (ntx, nlat) = lat(np, "first_verify.sql", &verify);
        let h2 = jwks();
        println!(
            "{}: outseta-dev's slow fault delays every JWKS answer by {SLOW_MS} ms; the main \
             cluster preloads the library, a second cluster with the same tokens does not. \
             Each row: `pgbench -n -C -c 2 -j 2 -T {secs} -U {APP} -f <script> {DB}` (first_plain.sql, \
             then first_verify.sql on each cluster: one of the {n} tokens at random).\n",
            self.command(5, false, self.a.quick)
        );
        println!(
            "| `pgbench -C` (2 clients, {secs} s, a new connection per transaction) | transactions | latency average | vs no verification | JWKS fetches |"
        );
        println!("|---|---|---|---|---|");
        println!("| `SELECT length(token)`: no verification | {ptx} | {plat:.3} ms | 1.00x | - |");
        println!(
            "| `SELECT outseta_verify(token)`, **preloaded** (cluster-wide keys) | {stx} | {slat:.3} ms | {:.2}x | {} |",
            slat / plat,
            h1 - h0
        );
        println!(
            "| `SELECT outseta_verify(token)`, not preloaded (per-backend keys) | {ntx} | {nlat:.3} ms | {:.2}x | {} |",
            nlat / plat,
            h2 - h1
        );

        // A parallel seq scan with the per-row accessor, in a backend that has verified
        // already: JWKS fetches counted from after its own first verification.
        let token = self.tokens[1].token.clone();
        let par = |port: u16| {
            let mut c = self.app(port);
            Self::set_token(&mut c, &token);
            c.query_one("SELECT outseta_sub()", &[]).unwrap();
            let before = jwks();
            c.batch_execute(
                "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
                 SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;",
            )
            .unwrap();
            let t0 = Instant::now();
            c.query_one(
                "SELECT count(*) FROM big WHERE user_id = outseta_sub()",
                &[],
            )
            .unwrap();
            (t0.elapsed().as_secs_f64() * 1000.0, jwks() - before)
        };
        let (sms, sfetch) = par(self.a.port);
        let (nms, nfetch) = par(np);
        println!(
            "\n{}: a new backend on each cluster, the token set and verified, then \
             `SELECT count(*) FROM big WHERE user_id = outseta_sub()` with parallel costs zeroed, \
             timed by the client.\n",
            self.command(5, false, self.a.quick)
        );
        println!(
            "| parallel seq scan, 2 workers, `user_id = outseta_sub()` over {} rows, warm backend | time | JWKS fetches by the workers |",
            self.rows
        );
        println!("|---|---|---|");
        println!("| preloaded | {sms:.3} ms | {sfetch} |");
        println!("| not preloaded | {nms:.3} ms | {nfetch} |");
        let shared = self
            .a
            .log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .and_then(|log| {
                log.lines().find_map(|l| {
                    let (before, _) = l.split_once(" bytes of shared memory")?;
                    before.rsplit([' ', ',']).next().map(String::from)
                })
            })
            .unwrap_or_else(|| "?".into());
        println!("\nShared memory of the store: {shared} bytes (logged by the worker at start).");
        self.server.set_fault(Fault::None);
    }

    fn profile_endpoint(&mut self) {
        let secs = self.short_seconds();
        println!(
            "\n### 6. Outseta's profile endpoint (every profile answer takes {SLOW_MS} ms): profile_check and outseta_profile()\n"
        );
        self.server
            .set_profile_fault(Fault::Slow(Duration::from_millis(SLOW_MS)));
        let port = self.a.port;
        let mut su = self.su(port);
        su.batch_execute(&format!(
            "ALTER DATABASE {DB} SET outseta_auth.profile_url = '{}'",
            self.server.profile_url()
        ))
        .unwrap();
        let profile_hits = || self.server.hits("/api/v1/profile");
        // Each transaction verifies one of 20 tokens (a client's recurring users); each run
        // has 20 tokens of its own, so that no run finds another's answers kept.
        let script = "\\set id :base + random(0, 19)\n\
                      SELECT outseta_verify(token) IS NOT NULL FROM tokens WHERE id = :id;\n";
        println!(
            "{}: outseta-dev's slow fault (`\"target\": \"profile\"`) delays every profile answer \
             by {SLOW_MS} ms; `outseta_auth.profile_check` set for the role. Each row: \
             `pgbench -n [-C] -D base=<first id> -c 2 -j 2 -T {secs} -U {APP} -f verify20.sql {DB}`, \
             tokens base to base + 19, a new base each row.\n",
            self.command(6, false, self.a.quick)
        );
        println!(
            "| pgbench, 2 clients, {secs} s, `outseta_verify(token)` over 20 tokens | transactions | latency average | profile requests |"
        );
        println!("|---|---|---|---|");
        let mut base = 100;
        for conn in ["", "-C"] {
            for check in ["off", "on"] {
                su.batch_execute(&format!(
                    "ALTER ROLE {APP} SET outseta_auth.profile_check = {check}"
                ))
                .unwrap();
                let h0 = profile_hits();
                let mut flags: Vec<String> = vec!["-D".into(), format!("base={base}")];
                if !conn.is_empty() {
                    flags.push(conn.into());
                }
                flags.extend(["-c", "2", "-j", "2", "-T", &secs.to_string()].map(String::from));
                let out = self.pgbench(port, &flags, "verify20.sql", script);
                base += 20;
                println!(
                    "| {}, profile_check {check} | {} | {:.3} ms | {} |",
                    if conn.is_empty() {
                        "persistent connections"
                    } else {
                        "-C (a new connection per transaction)"
                    },
                    Self::field(&out, "number of transactions actually processed: "),
                    Self::field(&out, "latency average = "),
                    profile_hits() - h0
                );
            }
        }
        su.batch_execute(&format!(
            "ALTER ROLE {APP} RESET outseta_auth.profile_check"
        ))
        .unwrap();

        let upto = self.rows.min(100_000);
        let h0 = profile_hits();
        let mut c = self.app(port);
        Self::set_token(&mut c, &self.tokens[self.tokens.len() - 1].token);
        c.query_one("SELECT outseta_sub()", &[]).unwrap();
        let q =
            format!("SELECT count(*) FROM big WHERE n <= {upto} AND outseta_profile() IS NOT NULL");
        let first = Self::ms(&mut c, &q);
        let second = Self::ms(&mut c, &q);
        println!(
            "\n{}: one backend, one token (verified first, its profile not asked before), the \
             statement twice, timed inside the backend.\n",
            self.command(6, false, self.a.quick)
        );
        println!(
            "| `outseta_profile()` per row, {upto} rows, one token, one backend | first statement (includes the request) | second statement (cached) | profile requests for both |"
        );
        println!("|---|---|---|---|");
        println!(
            "| `WHERE n <= {upto} AND outseta_profile() IS NOT NULL` | {first:.1} ms | {second:.1} ms | {} |",
            profile_hits() - h0
        );
        self.server.set_profile_fault(Fault::None);
    }

    /// The targets measured in this run, and the exit status: 1 when one was missed.
    fn summary(&self) -> i32 {
        println!("\n### Targets\n");
        if self.targets.is_empty() {
            println!("No target in the sections run (targets are in sections 1, 2 and 3).");
            return 0;
        }
        println!("| target | result | met |");
        println!("|---|---|---|");
        for t in &self.targets {
            println!(
                "| {}: {} | {} | {} |",
                t.what,
                t.target,
                t.result,
                if t.met { "yes" } else { "**MISSED**" }
            );
        }
        let missed: Vec<&Target> = self.targets.iter().filter(|t| !t.met).collect();
        if missed.is_empty() {
            println!("\ntargets missed: none ({} met)", self.targets.len());
            0
        } else {
            println!(
                "\n**targets missed: {} of {}**: {}",
                missed.len(),
                self.targets.len(),
                missed
                    .iter()
                    .map(|t| format!("{} ({}, target {})", t.what, t.result, t.target))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            1
        }
    }
}
