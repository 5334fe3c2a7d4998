//! Load and concurrency (issue #5): pgbench, 8 clients for 30 s; each transaction sets a
//! random token from a pool (some invalid) and reads through RLS. Every outcome is recorded
//! in the database, then checked: no unexpected error, every invalid token refused with
//! 28000, every valid one sees only its person's rows, no backend crash in the server log,
//! and the JWKS server sees at most one fetch per backend.

use outseta_dev::{b64url, with_payload, TokenRequest};
use outseta_e2e::*;

const CLIENTS: usize = 8;
const SECONDS: u64 = 30;

#[test]
fn pgbench_mixed_valid_and_invalid_tokens() {
    let f = fixture();
    let mut su = superuser();
    su.batch_execute(
        "DROP TABLE IF EXISTS load_tokens, load_results;
         CREATE TABLE load_tokens (id int PRIMARY KEY, token text, valid boolean, person text, expected bigint);
         CREATE TABLE load_results (id int, valid boolean, accepted boolean, n bigint, own_rows_only boolean, sqlstate text);
         GRANT SELECT ON load_tokens TO outseta_app;
         GRANT INSERT ON load_results TO outseta_app;
         CREATE OR REPLACE FUNCTION load_step(tid int) RETURNS void LANGUAGE plpgsql AS $$
         DECLARE t load_tokens; n bigint; own boolean;
         BEGIN
             SELECT * INTO t FROM load_tokens WHERE id = tid;
             PERFORM set_config('outseta_auth.token', t.token, true);
             BEGIN
                 SELECT count(*), coalesce(bool_and(user_id = t.person), true) INTO n, own FROM todos;
                 INSERT INTO load_results VALUES (tid, t.valid, true, n, own, NULL);
             EXCEPTION WHEN invalid_authorization_specification THEN
                 INSERT INTO load_results VALUES (tid, t.valid, false, NULL, NULL, SQLSTATE);
             END;
         END $$;
         GRANT EXECUTE ON FUNCTION load_step(int) TO outseta_app;",
    )
    .unwrap();

    let people = [
        (JANE, ACME, 2i64),
        (BOB, GLOBEX, 1),
        ("nobody01", ACME, 0),
        ("nobody02", GLOBEX, 0),
    ];
    let mut id = 0i32;
    for i in 0..40 {
        let (p, a, expected) = people[i % people.len()];
        let mut req = TokenRequest::new(p, a);
        req.expires_in = 3600 + i as i64; // distinct tokens
        let t = token_with(req);
        su.execute(
            "INSERT INTO load_tokens VALUES ($1, $2, true, $3, $4)",
            &[&id, &t, &p, &expected],
        )
        .unwrap();
        id += 1;
    }
    let good = token(BOB, GLOBEX);
    let parts: Vec<&str> = good.split('.').collect();
    let mut expired = TokenRequest::new(JANE, ACME);
    expired.expires_in = -3600;
    let invalid = [
        token_with(expired),
        with_payload(&good, br#"{"sub":"L9nqAzQZ","exp":9999999999}"#),
        format!("{}.{}.{}", parts[0], parts[1], b64url(b"not a signature")),
        "garbage".to_string(),
        format!("{}.{}", parts[0], parts[1]),
    ];
    for t in invalid.iter().cycle().take(20) {
        su.execute(
            "INSERT INTO load_tokens VALUES ($1, $2, false, NULL, NULL)",
            &[&id, t],
        )
        .unwrap();
        id += 1;
    }

    let script = std::env::temp_dir().join(format!("outseta-load-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        format!("\\set id random(0, {})\nSELECT load_step(:id);\n", id - 1),
    )
    .unwrap();
    let fetches_before = f.server.hits("/.well-known/jwks");
    let out = pgbench(f.port, "outseta_app")
        .args([
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &SECONDS.to_string(),
        ])
        .arg("-f")
        .arg(&script)
        .arg(DB)
        .output()
        .expect("pgbench");
    let _ = std::fs::remove_file(&script);
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("{report}");
    assert!(out.status.success(), "pgbench failed:\n{report}");
    let fetches = f.server.hits("/.well-known/jwks") - fetches_before;

    let mut q = |sql: &str| -> i64 { su.query_one(sql, &[]).unwrap().get(0) };
    let total = q("SELECT count(*) FROM load_results");
    assert!(total > 1000, "only {total} transactions");
    assert_eq!(
        q("SELECT count(*) FROM load_results WHERE valid AND NOT accepted"),
        0,
        "a valid token was refused"
    );
    assert_eq!(
        q("SELECT count(*) FROM load_results WHERE NOT valid AND accepted"),
        0,
        "an invalid token was accepted"
    );
    assert_eq!(
        q("SELECT count(*) FROM load_results WHERE NOT accepted AND sqlstate <> '28000'"),
        0
    );
    assert_eq!(
        q("SELECT count(*) FROM load_results WHERE accepted AND NOT own_rows_only"),
        0,
        "someone saw another's rows"
    );
    assert_eq!(
        q("SELECT count(*) FROM load_results r JOIN load_tokens t USING (id) WHERE r.accepted AND r.n <> t.expected"),
        0,
        "a person saw the wrong number of rows"
    );
    assert!(
        q("SELECT count(*) FROM load_results WHERE NOT valid") > 0,
        "invalid tokens were exercised"
    );
    println!("load: {total} transactions checked, {fetches} JWKS fetches by {CLIENTS} clients");
    assert!(
        fetches <= CLIENTS as u64,
        "{fetches} JWKS fetches for {CLIENTS} backends"
    );

    if let Ok(log) = std::env::var("OUTSETA_E2E_SERVER_LOG") {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for bad in [
            "terminated by signal",
            "server process (PID",
            "PANIC:",
            "was terminated",
        ] {
            assert!(!text.contains(bad), "server log shows a crash ({bad})");
        }
    } else {
        panic!("OUTSETA_E2E_SERVER_LOG is not set: run through scripts/e2e");
    }
}
