//! The portable edition's benchmarks (`bash bench/portable`, which starts the cluster):
//!
//!   1 cold RS256 verification per call, 2048/3072/4096-bit keys: portable, native, and
//!     pgsqljwt's documented call on the same tokens (when `--pgsqljwt FILE` names its
//!     decode_jwt.sql; it is not part of this repository)
//!   2 warm, per statement: pgbench on an RLS table, `user_id = (select outseta_sub())`
//!     against the same policy over `current_setting('request.jwt.claims')` (auth.jwt())
//!   3 through PostgREST 12: a token already verified, with outseta_pre_request, against the
//!     same request authenticated by PostgREST's own JWT check
//!
//! Prints BENCHMARKS.md's tables; exit status 1 when a target is missed.
//!   bench_portable --port P [--pgsqljwt FILE] [--seconds 10] [--calls 60] [--sections 1,2,3]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outseta_dev::{b64url, hmac_sha256, now, SigningKey};
use outseta_e2e::portable::{new_database, psql_file_with, script};
use outseta_e2e::{connect_as, pgbench, start_postgrest};
use postgres::Client;
use serde_json::json;

const DB: &str = "bench_portable";
const OWNER: &str = "bench_owner";
const APP: &str = "bench_app";
const ISS: &str = "https://bench.outseta.com";
const JWT_SECRET: &str = "bench-postgrest-jwt-secret-of-at-least-32-chars";

struct Args {
    port: u16,
    pgsqljwt: Option<String>,
    seconds: u64,
    calls: usize,
    /// Sections to run (1, 2, 3); all by default.
    only: Vec<u32>,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    Args {
        port: get("--port")
            .and_then(|p| p.parse().ok())
            .expect("--port P (run through bash bench/portable)"),
        pgsqljwt: get("--pgsqljwt"),
        seconds: get("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10),
        calls: get("--calls").and_then(|s| s.parse().ok()).unwrap_or(60),
        only: get("--sections")
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1, 2, 3]),
    }
}

struct Target {
    name: String,
    figure: f64,
    ok: bool,
}

fn setup(port: u16, keys: &[&SigningKey], pgsqljwt: Option<&str>) -> Client {
    let mut db = new_database(port, DB, &[OWNER, APP]);
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string();
    db.batch_execute(&format!(
        "CREATE SCHEMA native; CREATE EXTENSION outseta_auth SCHEMA native;
         CREATE SCHEMA portable AUTHORIZATION {OWNER};
         GRANT USAGE ON SCHEMA native, portable TO {APP};
         ALTER DATABASE {DB} SET outseta_auth.jwks = '{jwks}';
         ALTER DATABASE {DB} SET outseta_auth.issuer = '{ISS}';"
    ))
    .unwrap();
    if let Some(file) = pgsqljwt {
        db.batch_execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
            .unwrap();
        psql_file_with(port, "postgres", DB, file, "public");
        db.batch_execute(&format!("GRANT USAGE ON SCHEMA jwt TO {APP}"))
            .unwrap();
    }
    psql_file_with(port, OWNER, DB, &script(), "portable");
    let mut owner = connect_as(port, OWNER, DB);
    owner
        .execute(
            "SELECT portable.outseta_config_set('outseta_auth.jwks', $1)",
            &[&jwks],
        )
        .unwrap();
    owner
        .execute(
            "SELECT portable.outseta_config_set('outseta_auth.issuer', $1)",
            &[&ISS],
        )
        .unwrap();
    owner
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "iss": ISS, "exp": now() + 3600, "iat": now() - 5,
           "email": format!("{sub}@example.com"), "outseta:accountUid": "wZmNw7Q2"})
}

/// Microseconds per call of `sql` over `tokens` (one statement, server-side time).
fn per_call(c: &mut Client, sql: &str, tokens: &[String]) -> f64 {
    let t0 = Instant::now();
    let n: i64 = c.query_one(sql, &[&tokens]).unwrap().get(0);
    let us = t0.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64;
    assert_eq!(n as usize, tokens.len(), "{sql}: every token verified");
    us
}

fn cold(c: &mut Client, keys: &[&SigningKey], calls: usize, pgsqljwt: bool) -> Vec<Target> {
    println!("## 1. Cold RS256 verification, per call (distinct tokens, each verified once)\n");
    println!("| key | portable | native | pgsqljwt | portable / native | portable / pgsqljwt |");
    println!("|---|---|---|---|---|---|");
    let mut targets = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let fresh = |tag: &str| -> Vec<String> {
            (0..calls)
                .map(|n| key.mint(&claims(&format!("{tag}{i}-{n}"))))
                .collect()
        };
        let portable = per_call(
            c,
            "SELECT count(*) FILTER (WHERE (portable.outseta_try_verify(t)).valid) FROM unnest($1::text[]) t",
            &fresh("p"),
        );
        let native = per_call(
            c,
            "SELECT count(*) FILTER (WHERE (native.outseta_try_verify(t)).valid) FROM unnest($1::text[]) t",
            &fresh("n"),
        );
        let jwk = key.jwk().to_string();
        let theirs = pgsqljwt.then(|| {
            let sql = format!(
                "SELECT count(*) FILTER (WHERE jwt.decode_jwt(token := t,
                     keys := jsonb_build_array(jwt.jwk_to_key('{jwk}'::jsonb))) IS NOT NULL)
                 FROM unnest($1::text[]) t"
            );
            per_call(c, &sql, &fresh("j"))
        });
        let bits = [2048, 3072, 4096][i];
        println!(
            "| RSA-{bits} | {portable:.0} us | {native:.1} us | {} | {:.0}x | {} |",
            theirs.map_or("-".into(), |t| format!("{t:.0} us")),
            portable / native,
            theirs.map_or("-".into(), |t| format!("{:.2}x", portable / t)),
        );
        if bits == 2048 {
            if let Some(t) = theirs {
                targets.push(Target {
                    name: "cold RSA-2048, portable / pgsqljwt <= 0.5x".into(),
                    figure: portable / t,
                    ok: portable / t <= 0.5,
                });
            }
        }
    }
    println!();
    targets
}

fn tps(out: &str) -> f64 {
    out.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l[6..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output:\n{out}"))
}

fn run_pgbench(port: u16, seconds: u64, script: &str) -> f64 {
    let path = std::env::temp_dir().join(format!("bench_portable_{}.sql", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let out = pgbench(port, APP)
        .args(["-c", "4", "-j", "2", "-T", &seconds.to_string(), "-f"])
        .arg(&path)
        .arg(DB)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tps(&String::from_utf8_lossy(&out.stdout))
}

fn warm(port: u16, owner: &mut Client, key: &SigningKey, seconds: u64) -> Vec<Target> {
    owner
        .batch_execute(&format!(
            "CREATE TABLE notes_p (user_id text, body text);
             CREATE TABLE notes_c (user_id text, body text);
             INSERT INTO notes_p SELECT 'u' || (i % 1000), 'note ' || i FROM generate_series(1, 10000) i;
             INSERT INTO notes_c SELECT * FROM notes_p;
             CREATE INDEX ON notes_p (user_id); CREATE INDEX ON notes_c (user_id);
             ALTER TABLE notes_p ENABLE ROW LEVEL SECURITY;
             ALTER TABLE notes_c ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON notes_p USING (user_id = (SELECT portable.outseta_sub()));
             CREATE POLICY own ON notes_c USING (user_id = (SELECT
                 current_setting('request.jwt.claims', true)::jsonb ->> 'sub'));
             GRANT SELECT ON notes_p, notes_c TO {APP};
             ANALYZE notes_p; ANALYZE notes_c;"
        ))
        .unwrap();
    let c = claims("u7");
    let token = key.mint(&c);
    let p = format!(
        "BEGIN;\nSET LOCAL outseta_auth.token = '{token}';\nSELECT count(*) FROM notes_p;\nCOMMIT;\n"
    );
    let b = format!(
        "BEGIN;\nSET LOCAL request.jwt.claims = '{}';\nSELECT count(*) FROM notes_c;\nCOMMIT;\n",
        c
    );
    // Both once first (the portable verdict then comes from the session memo).
    run_pgbench(port, 1, &p);
    let (mut tp, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        tp.push(run_pgbench(port, seconds, &p));
        tb.push(run_pgbench(port, seconds, &b));
    }
    tp.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    let ratio = tp[1] / tb[1];
    println!("## 2. Warm, per statement (pgbench -c 4 -j 2 -T {seconds}, 3 runs each, medians)\n");
    println!("| policy | tps (median) | runs |");
    println!("|---|---|---|");
    println!(
        "| `user_id = (select portable.outseta_sub())`, SET LOCAL outseta_auth.token | {:.0} | {:?} |",
        tp[1], tp.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
    println!(
        "| `user_id = (select current_setting('request.jwt.claims', true)::jsonb ->> 'sub')` | {:.0} | {:?} |",
        tb[1], tb.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
    println!("\nratio {ratio:.2}x (target >= 0.9x)\n");
    vec![Target {
        name: "warm pgbench, portable / request.jwt.claims >= 0.9x".into(),
        figure: ratio,
        ok: ratio >= 0.9,
    }]
}

/// Requests per second of GET `path` with `headers`, 4 threads for `seconds`.
fn rps(base: &str, path: &str, headers: &[(String, String)], seconds: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done) = (stop.clone(), done.clone());
            let url = format!("{base}{path}");
            let headers = headers.to_vec();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                while !stop.load(Ordering::Relaxed) {
                    let mut req = agent.get(&url);
                    for (k, v) in &headers {
                        req = req.header(k, v);
                    }
                    let mut resp = req.call().unwrap();
                    assert_eq!(
                        resp.status(),
                        200,
                        "{}",
                        resp.body_mut().read_to_string().unwrap_or_default()
                    );
                    let _ = resp.body_mut().read_to_string();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

fn postgrest(port: u16, owner: &mut Client, key: &SigningKey, seconds: u64) -> Vec<Target> {
    let mut su = connect_as(port, "postgres", DB);
    su.batch_execute(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
                 CREATE ROLE authenticator LOGIN NOINHERIT; END IF;
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
                 CREATE ROLE anon; END IF;
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
                 CREATE ROLE authenticated; END IF;
         END $$;
         GRANT anon, authenticated TO authenticator;
         GRANT USAGE ON SCHEMA portable TO anon, authenticated;
         GRANT SELECT ON notes_p, notes_c TO anon, authenticated;",
    )
    .unwrap();
    owner
        .batch_execute(
            "SELECT portable.outseta_config_set('outseta_auth.authenticated_role', 'authenticated');
             SELECT portable.outseta_config_set('outseta_auth.token_header', 'x-outseta-token');",
        )
        .unwrap();
    let c = claims("u7");
    let token = key.mint(&c);
    // PostgREST's own: an HS256 JWT with the role and the same sub.
    let mut own = c.clone();
    own["role"] = json!("authenticated");
    let signed = format!(
        "{}.{}",
        b64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(own.to_string().as_bytes())
    );
    let jwt = format!(
        "{signed}.{}",
        b64url(&hmac_sha256(JWT_SECRET.as_bytes(), signed.as_bytes()))
    );
    let ours = start_postgrest(
        "bench-portable-pre-request",
        port,
        DB,
        &[("db-pre-request", "\"portable.outseta_pre_request\"".into())],
    );
    let theirs = start_postgrest(
        "bench-portable-jwt",
        port,
        DB,
        &[
            ("jwt-secret", format!("\"{JWT_SECRET}\"")),
            ("db-pre-request", "\"\"".into()),
        ],
    );
    // (c) PostgREST's own check plus a db-pre-request that does nothing: what any
    // pre-request costs (a statement more per request), the floor of (a).
    su.batch_execute(
        "CREATE OR REPLACE FUNCTION public.noop_pre_request() RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$",
    )
    .unwrap();
    let noop = start_postgrest(
        "bench-portable-noop",
        port,
        DB,
        &[
            ("jwt-secret", format!("\"{JWT_SECRET}\"")),
            ("db-pre-request", "\"public.noop_pre_request\"".into()),
        ],
    );
    let h_ours = vec![("x-outseta-token".to_string(), token)];
    let h_theirs = vec![("Authorization".to_string(), format!("Bearer {jwt}"))];
    // Warm both (the token verified once per pooled connection).
    rps(&ours.base(), "/notes_p?select=body&limit=5", &h_ours, 1);
    rps(&theirs.base(), "/notes_c?select=body&limit=5", &h_theirs, 1);
    let path = "/notes_p?select=body&limit=5";
    let path_c = "/notes_c?select=body&limit=5";
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        a.push(rps(&ours.base(), path, &h_ours, seconds));
        b.push(rps(&theirs.base(), path_c, &h_theirs, seconds));
        c.push(rps(&noop.base(), path_c, &h_theirs, seconds));
    }
    for v in [&mut a, &mut b, &mut c] {
        v.sort_by(f64::total_cmp);
    }
    let ratio = a[1] / b[1];
    println!("## 3. Through PostgREST 12 (4 client threads, {seconds} s, 3 runs each, medians)\n");
    println!("| authentication | requests/s (median) | runs |");
    println!("|---|---|---|");
    println!(
        "| (a) x-outseta-token, outseta_pre_request (portable), token already verified | {:.0} | {:?} |",
        a[1], a.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
    println!(
        "| (b) Authorization: Bearer, PostgREST's own HS256 check | {:.0} | {:?} |",
        b[1],
        b.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
    println!(
        "| (c) Authorization: Bearer, PostgREST's own check, plus an empty db-pre-request | {:.0} | {:?} |",
        c[1],
        c.iter().map(|t| t.round()).collect::<Vec<_>>()
    );
    println!(
        "\nratio (a)/(b) {ratio:.2}x (target >= 0.9x); (c)/(b) {:.2}x, (a)/(c) {:.2}x\n",
        c[1] / b[1],
        a[1] / c[1]
    );
    vec![Target {
        name: "PostgREST rps, portable pre-request / PostgREST's JWT >= 0.9x".into(),
        figure: ratio,
        ok: ratio >= 0.9,
    }]
}

fn main() {
    let a = args();
    let keys = [
        SigningKey::generate_bits("k2048", 2048),
        SigningKey::generate_bits("k3072", 3072),
        SigningKey::generate_bits("k4096", 4096),
    ];
    let refs: Vec<&SigningKey> = keys.iter().collect();
    let mut owner = setup(a.port, &refs, a.pgsqljwt.as_deref());
    let mut c = connect_as(a.port, APP, DB);
    let mut targets = Vec::new();
    if a.only.contains(&1) {
        targets.extend(cold(&mut c, &refs, a.calls, a.pgsqljwt.is_some()));
    }
    if a.only.contains(&2) || a.only.contains(&3) {
        targets.extend(warm(a.port, &mut owner, &keys[0], a.seconds));
    }
    if a.only.contains(&3) {
        targets.extend(postgrest(a.port, &mut owner, &keys[0], a.seconds));
    }
    println!("## Targets\n");
    println!("| target | figure | met |");
    println!("|---|---|---|");
    for t in &targets {
        println!(
            "| {} | {:.2}x | {} |",
            t.name,
            t.figure,
            if t.ok { "yes" } else { "**MISSED**" }
        );
    }
    if targets.iter().any(|t| !t.ok) {
        std::process::exit(1);
    }
}
