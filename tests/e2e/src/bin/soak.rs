//! The soak benchmark (issue 17; `bash bench/soak`, which starts the cluster): pgbench
//! against a preloaded cluster for `--minutes` while this driver, every second, opens a
//! backend that asks about a new token and terminates the one it opened the second before;
//! every 30 s stops the background worker (SIGTERM: the postmaster restarts it); every 60 s
//! rotates the issuer's keys (the new key published beside the old one). The timing
//! settings are shortened (TTL 5 s, max_stale 60 s, profile TTL 5 s), and the issuer is
//! 150 ms away. It prints BENCHMARKS.md's tables: errors by SQLSTATE (from the server log),
//! and per minute the token-cache hit ratio of a long-lived backend, the shared slots in use
//! and the resident memory of the worker and of that backend. A benchmark: it asserts
//! nothing, and exits 1 only when an unexpected error shows.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outseta_dev::{Fault, Issuer, Server, TokenRequest};
use outseta_e2e::{connect_as, jwks_worker_pid, ACME, ISSUER, JANE};
use postgres::Client;

struct Args {
    port: u16,
    data: String,
    log: String,
    minutes: u64,
}

fn args() -> Args {
    let mut a = Args {
        port: 0,
        data: String::new(),
        log: String::new(),
        minutes: 10,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--port" => a.port = v.parse().expect("--port"),
            "--data" => a.data = v,
            "--log" => a.log = v,
            "--minutes" => a.minutes = v.parse().expect("--minutes"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.port != 0 && !a.data.is_empty() && !a.log.is_empty());
    a
}

/// (VmRSS, RssAnon) of a process in KiB: all it has resident (shared buffers it touched
/// included), and its private memory, where a leak would show.
fn rss_kib(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

/// Nanoseconds per row of `expr` over 1M rows, best of 3, less the empty scan's.
fn per_row_ns(c: &mut Client, expr: &str) -> f64 {
    let time = |c: &mut Client, q: &str| {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                c.query_one(q, &[]).unwrap();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let empty = time(
        c,
        "SELECT count(*) FROM generate_series(1, 1000000) g WHERE g IS NOT NULL",
    );
    let with = time(
        c,
        &format!(
            "SELECT count(*) FROM generate_series(1, 1000000) g WHERE {expr} || g IS NOT NULL"
        ),
    );
    (with - empty).max(0.0) * 1e9 / 1e6
}

#[derive(Default, Clone)]
struct Minute {
    hits: i64,
    misses: i64,
    max_jwks_slots: i32,
    max_profile_slots: i32,
    /// Live entries of the cluster's verified-token table (issue 20).
    max_token_entries: i32,
    worker_rss: Option<(u64, u64)>,
    backend_rss: Option<(u64, u64)>,
    opened: u64,
    terminated: u64,
    worker_stops: u64,
    rotations: u64,
}

fn main() {
    let a = args();
    let server = Arc::new(Server::start("127.0.0.1:0", Issuer::new(ISSUER)).unwrap());
    // A remote issuer: 150 ms for keys and profiles.
    server.set_fault(Fault::Slow(Duration::from_millis(150)));
    server.set_profile_fault(Fault::Slow(Duration::from_millis(150)));
    let mut su = connect_as(a.port, "postgres", "postgres");
    su.batch_execute("DROP DATABASE IF EXISTS soak").unwrap();
    su.batch_execute("CREATE DATABASE soak").unwrap();
    let mut db = connect_as(a.port, "postgres", "soak");
    db.batch_execute(&format!(
        "CREATE EXTENSION outseta_auth;
         ALTER DATABASE soak SET outseta_auth.jwks_url = '{jwks}';
         ALTER DATABASE soak SET outseta_auth.profile_url = '{profile}';
         ALTER DATABASE soak SET outseta_auth.issuer = '{ISSUER}';
         ALTER DATABASE soak SET outseta_auth.jwks_cache_ttl = 5;
         ALTER DATABASE soak SET outseta_auth.jwks_max_stale = 60;
         ALTER DATABASE soak SET outseta_auth.jwks_refresh_min_interval = 1;
         ALTER DATABASE soak SET outseta_auth.http_timeout = '2s';
         ALTER DATABASE soak SET outseta_auth.profile_check = on;
         ALTER DATABASE soak SET outseta_auth.profile_ttl = '5s';
         CREATE TABLE items AS SELECT g AS id,
             (ARRAY['{JANE}','someone','else'])[1 + g % 3] AS user_id
             FROM generate_series(1, 3000) g;
         ANALYZE items;",
        jwks = server.jwks_url(),
        profile = server.profile_url(),
    ))
    .unwrap();
    drop(db);
    let port = a.port;
    let connect = move || connect_as(port, "postgres", "soak");

    // The long-lived backend: verified once now, used all along; its per-row cost now and
    // at the end, when its keys were first parsed more than jwks_max_stale (60 s) ago.
    let mut long = connect();
    let long_pid: i32 = long
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let long_token = server.mint(&TokenRequest::new(JANE, ACME));
    long.execute(
        "SELECT set_config('outseta_auth.token', $1, false)",
        &[&long_token],
    )
    .unwrap();
    let per_row_before = (
        per_row_ns(&mut long, "outseta_sub()"),
        per_row_ns(&mut long, "current_setting('outseta_auth.token')"),
    );

    // pgbench: 4 clients, one token each transaction, the accessor per row.
    let token = server.mint(&TokenRequest::new(JANE, ACME));
    let script = std::env::temp_dir().join(format!("outseta-soak-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "BEGIN;\nSELECT set_config('outseta_auth.token', ':token', true);\n\
         SELECT count(*) FROM items WHERE user_id = outseta_sub();\nEND;\n",
    )
    .unwrap();
    let secs = a.minutes * 60;
    let pgbench = outseta_e2e::pgbench(a.port, "postgres")
        .args(["-c", "4", "-j", "2", "-T", &secs.to_string(), "-P", "60"])
        .arg("-f")
        .arg(&script)
        .arg("-D")
        .arg(format!("token={token}"))
        .arg("soak")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pgbench starts");
    // Runs alongside the faults below (an earlier version waited for it first).
    let pgbench = std::thread::spawn(move || pgbench.wait_with_output());

    let stop = Arc::new(AtomicBool::new(false));
    let minutes: Arc<Mutex<Vec<Minute>>> =
        Arc::new(Mutex::new(vec![Minute::default(); a.minutes as usize]));
    let started = Instant::now();
    let minute_now = {
        let n = a.minutes as usize;
        move || ((started.elapsed().as_secs() / 60) as usize).min(n - 1)
    };

    // The churn: a new backend every second asking about a new token (a profile request
    // through the worker), and the previous one terminated (often mid-wait).
    let churn = {
        let (stop, minutes, server) = (stop.clone(), minutes.clone(), server.clone());
        let mut killer = connect();
        std::thread::spawn(move || {
            let mut previous: Option<(i32, std::thread::JoinHandle<Client>)> = None;
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let tick = Instant::now();
                n += 1;
                let mut req = TokenRequest::new(JANE, ACME);
                req.expires_in = 3600 + n;
                let t = server.mint(&req);
                let mut c = connect();
                let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
                let asker = std::thread::spawn(move || {
                    // Terminated or not, both are expected: counted from the server log.
                    let _ = c.execute("SELECT set_config('outseta_auth.token', $1, false)", &[&t]);
                    let _ = c.query_one("SELECT outseta_profile() ->> 'Uid'", &[]);
                    // The connection stays open until the driver terminates it.
                    c
                });
                if let Some((old, handle)) = previous.take() {
                    let _ = killer.execute("SELECT pg_terminate_backend($1)", &[&old]);
                    let _ = handle.join();
                    minutes.lock().unwrap()[minute_now()].terminated += 1;
                }
                minutes.lock().unwrap()[minute_now()].opened += 1;
                previous = Some((pid, asker));
                std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
            }
        })
    };

    // Faults: the worker stopped every 30 s, keys rotated every 60 s.
    let faults = {
        let (stop, minutes, server, data) = (
            stop.clone(),
            minutes.clone(),
            server.clone(),
            a.data.clone(),
        );
        std::thread::spawn(move || {
            let mut last_stop = Instant::now();
            let mut last_rotation = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last_stop.elapsed() >= Duration::from_secs(30) {
                    last_stop = Instant::now();
                    if let Some(pid) = jwks_worker_pid(&data) {
                        let _ = Command::new("kill").args(["-TERM", &pid]).status();
                        minutes.lock().unwrap()[minute_now()].worker_stops += 1;
                    }
                }
                if last_rotation.elapsed() >= Duration::from_secs(60) {
                    last_rotation = Instant::now();
                    server.issuer.lock().unwrap().rotate(true);
                    minutes.lock().unwrap()[minute_now()].rotations += 1;
                }
            }
        })
    };

    // The long-lived backend: 1,000 per-row calls every 5 s; its own cache counters; and
    // the shared slots in use, every second.
    let counters = |c: &mut Client| -> (i64, i64) {
        let r = c
            .query_one(
                "SELECT token_cache_hits, token_cache_misses FROM outseta_jwks_status() LIMIT 1",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    let mut monitor = connect();
    let mut last = counters(&mut long);
    let mut long_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut next_calls = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        let m = minute_now();
        let slots: Vec<(String, i32)> = monitor
            .query("SELECT area, in_use FROM outseta_shared_slots()", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        {
            let mut ms = minutes.lock().unwrap();
            for (area, n) in slots {
                let slot = match area.as_str() {
                    "jwks" => &mut ms[m].max_jwks_slots,
                    "profile" => &mut ms[m].max_profile_slots,
                    "tokens" => &mut ms[m].max_token_entries,
                    other => panic!("unknown shared area {other}"),
                };
                *slot = (*slot).max(n);
            }
            ms[m].worker_rss = jwks_worker_pid(&a.data)
                .and_then(|p| rss_kib(&p))
                .or(ms[m].worker_rss);
            ms[m].backend_rss = rss_kib(&long_pid.to_string()).or(ms[m].backend_rss);
        }
        if Instant::now() >= next_calls {
            next_calls += Duration::from_secs(5);
            let r = long.query_one(
                "SELECT count(*) FROM generate_series(1, 1000) g WHERE outseta_sub() || g IS NOT NULL",
                &[],
            );
            if let Err(e) = r {
                let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                *long_errors.entry(code).or_default() += 1;
            }
            let now = counters(&mut long);
            let mut ms = minutes.lock().unwrap();
            ms[m].hits += now.0 - last.0;
            ms[m].misses += now.1 - last.1;
            last = now;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    faults.join().unwrap();
    let pgbench = pgbench.join().unwrap().expect("pgbench runs");
    let per_row_after = (
        per_row_ns(&mut long, "outseta_sub()"),
        per_row_ns(&mut long, "current_setting('outseta_auth.token')"),
    );
    let _ = std::fs::remove_file(&script);

    // Errors by SQLSTATE and severity, from the server log (log_line_prefix '%e ').
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    let mut errors: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in log.lines() {
        let mut words = line.split_whitespace();
        let (Some(code), Some(level)) = (words.next(), words.next()) else {
            continue;
        };
        let level = level.trim_end_matches(':');
        if code.len() == 5 && matches!(level, "ERROR" | "FATAL" | "PANIC") {
            *errors
                .entry((code.to_string(), level.to_string()))
                .or_default() += 1;
        }
    }
    // Terminations the driver made (backends and the worker): 57P01, FATAL.
    let expected = |code: &str, level: &str| code == "57P01" && level == "FATAL";
    let unexpected: u64 = errors
        .iter()
        .filter(|((c, l), _)| !expected(c, l))
        .map(|(_, n)| n)
        .sum::<u64>()
        + long_errors.values().sum::<u64>();

    let out = String::from_utf8_lossy(&pgbench.stdout);
    let tps = out
        .lines()
        .find(|l| l.starts_with("tps = "))
        .unwrap_or("tps = ?")
        .to_string();
    let failed = out
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .unwrap_or("")
        .to_string();
    println!("### Soak: {} minutes (`bash bench/soak`)\n", a.minutes);
    println!(
        "pgbench (4 clients, the accessor per row over 3,000 rows): {tps}; {}",
        if failed.is_empty() {
            "no failed transactions line".into()
        } else {
            failed
        }
    );
    if !pgbench.status.success() {
        println!(
            "\npgbench exited with {}: {}",
            pgbench.status,
            String::from_utf8_lossy(&pgbench.stderr)
                .lines()
                .filter(|l| l.contains("aborted") || l.contains("ERROR"))
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    println!(
        "\nPer-row cost in the long-lived backend (1M rows, best of 3, quiet machine): \
         `outseta_sub()` {:.1} ns vs `current_setting()` {:.1} ns at the start; \
         {:.1} ns vs {:.1} ns after {} minutes (its keys first parsed more than \
         jwks_max_stale = 60 s earlier).",
        per_row_before.0, per_row_before.1, per_row_after.0, per_row_after.1, a.minutes
    );
    println!("\n| SQLSTATE | severity | count | expected |\n|---|---|---|---|");
    for ((code, level), n) in &errors {
        println!(
            "| {code} | {level} | {n} | {} |",
            if expected(code, level) {
                "yes (terminated by the driver)"
            } else {
                "**no**"
            }
        );
    }
    for (code, n) in &long_errors {
        println!("| {code} | long-lived backend | {n} | **no** |");
    }
    println!("\nunexpected errors: {unexpected}\n");
    println!(
        "| minute | backends opened / terminated | worker stops | rotations | long-lived backend: hits / misses (hit ratio) | JWKS slots in use (max) | profile slots in use (max) | verified tokens in the table (max) | worker RSS / private (MiB) | long-lived backend RSS / private (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mib = |k: Option<(u64, u64)>| {
        k.map_or("?".into(), |(all, private)| {
            format!(
                "{:.1} / {:.1}",
                all as f64 / 1024.0,
                private as f64 / 1024.0
            )
        })
    };
    for (i, m) in minutes.lock().unwrap().iter().enumerate() {
        let ratio = if m.hits + m.misses > 0 {
            format!("{:.4}", m.hits as f64 / (m.hits + m.misses) as f64)
        } else {
            "?".into()
        };
        println!(
            "| {} | {} / {} | {} | {} | {} / {} ({ratio}) | {} | {} | {} | {} | {} |",
            i + 1,
            m.opened,
            m.terminated,
            m.worker_stops,
            m.rotations,
            m.hits,
            m.misses,
            m.max_jwks_slots,
            m.max_profile_slots,
            m.max_token_entries,
            mib(m.worker_rss),
            mib(m.backend_rss)
        );
    }
    if unexpected > 0 {
        std::process::exit(1);
    }
}
