//! The portable edition as hosted platforms run it (scripts/portable-hosted, PostgreSQL 15):
//! no native library; the superuser is `supabase_admin` and the project's `postgres` role is
//! not a superuser; pg_tle and the http extension as Supabase has them.
//! - Supabase: `postgres` (in pgtle_admin) installs outseta_auth_sql from portable/pg_tle.sql
//!   into `extensions`; the keys are fetched with http from a local issuer; PostgREST 12
//!   with an HS256 anon key takes its db-pre-request from `ALTER ROLE authenticator SET
//!   pgrst.db_pre_request`; supabase-js sends the anon key and the Outseta token in
//!   x-outseta-token; the four policies of Outseta's guide, verbatim.
//! - RDS-shaped: the plain script, installed by `postgres`; keys pushed with
//!   outseta_set_jwks(); an application role behind PgBouncer in transaction mode, SET LOCAL
//!   outseta_auth.token, policies with (select outseta_sub()).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use outseta_dev::gateway::{Gateway, Routes};
use outseta_dev::{Fault, Issuer, Server, TokenRequest};
use outseta_e2e::portable::psql_file_with;
use outseta_e2e::{connect_as, start_postgrest, supabase_js, PostgRest, ACME, BOB, GLOBEX, JANE};
use postgres::Client;
use serde_json::{json, Value};

const ISSUER: &str = "https://hosted.outseta.com";
const JWT_SECRET: &str = "hosted-project-jwt-secret-with-at-least-32-characters";
const SUPERUSER: &str = "supabase_admin";

fn pg_port() -> u16 {
    std::env::var("OUTSETA_HOSTED_PGPORT")
        .expect("run through scripts/portable-hosted")
        .parse()
        .unwrap()
}

struct Hosted {
    issuer: Server,
    url: String,
    anon_key: String,
    _rest: PostgRest,
    _gateway: Gateway,
}

fn superuser(db: &str) -> Client {
    connect_as(pg_port(), SUPERUSER, db)
}

/// The project's `postgres` role (not a superuser): the owner of outseta_auth_sql.
fn project(db: &str) -> Client {
    connect_as(pg_port(), "postgres", db)
}

/// The tests that set the issuer's faults or count its JWKS requests, or fetch from it
/// themselves, run one at a time (the others only verify tokens against stored keys).
fn issuer_alone() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn hosted() -> &'static Hosted {
    static H: OnceLock<Hosted> = OnceLock::new();
    H.get_or_init(|| {
        let issuer = Server::start("127.0.0.1:0", Issuer::new(ISSUER)).unwrap();
        let mut su = superuser("postgres");
        // What the platform sets up before the project owner gets the database.
        su.batch_execute(
            "CREATE ROLE postgres LOGIN CREATEROLE NOSUPERUSER;
             CREATE EXTENSION pg_tle;
             GRANT pgtle_admin TO postgres;
             CREATE SCHEMA extensions AUTHORIZATION postgres;
             CREATE EXTENSION http SCHEMA extensions;
             GRANT CREATE ON DATABASE postgres TO postgres;
             -- Supabase lets the project owner set PostgREST's in-database settings.
             GRANT SET ON PARAMETER pgrst.db_pre_request TO postgres;",
        )
        .unwrap();
        let fixture =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/supabase/fixture.sql"))
                .unwrap();
        su.batch_execute(&fixture).unwrap();
        su.batch_execute(&format!(
            "GRANT USAGE ON SCHEMA extensions TO anon, authenticated, service_role;
             INSERT INTO todos (user_id, title) VALUES
                 ('{JANE}', 'jane: renew passport'), ('{JANE}', 'jane: book dentist'),
                 ('{BOB}', 'bob: fix the bike');"
        ))
        .unwrap();
        // The project owner installs and configures the extension: no superuser from here.
        psql_file_with(
            pg_port(),
            "postgres",
            "postgres",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../portable/pg_tle.sql"),
            "public",
        );
        let mut p = project("postgres");
        let is_super: bool = p
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(!is_super);
        p.batch_execute("CREATE EXTENSION outseta_auth_sql SCHEMA extensions")
            .unwrap();
        for (setting, value) in [
            ("outseta_auth.jwks_url", issuer.jwks_url()),
            ("outseta_auth.issuer", ISSUER.to_string()),
            ("outseta_auth.authenticated_role", "authenticated".into()),
            ("outseta_auth.pre_request_claims", "on".into()),
            ("outseta_auth.token_header", "x-outseta-token".into()),
        ] {
            p.execute(
                "SELECT extensions.outseta_config_set($1, $2)",
                &[&setting, &value],
            )
            .unwrap();
        }
        // The pg_cron job of the guide, run once here: keys fetched before any request.
        let n: i32 = p
            .query_one("SELECT extensions.outseta_refresh_jwks()", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "one key fetched through the http extension");
        p.batch_execute(
            "ALTER ROLE authenticator SET pgrst.db_pre_request = 'extensions.outseta_pre_request'",
        )
        .unwrap();
        // The file names no pre-request that exists: the in-database setting must win.
        let rest = start_postgrest(
            "postgrest-hosted",
            pg_port(),
            "postgres",
            &[
                ("jwt-secret", format!("\"{JWT_SECRET}\"")),
                ("db-anon-role", "\"anon\"".into()),
                ("db-use-legacy-gucs", "false".into()),
                ("db-pre-request", "\"public.no_such_pre_request\"".into()),
            ],
        );
        let gateway = Gateway::start(
            "127.0.0.1:0",
            Routes {
                prefix: "/rest/v1".into(),
                upstream: Some(rest.addr),
                static_dir: None,
            },
        )
        .unwrap();
        Hosted {
            url: gateway.url(),
            anon_key: supabase_js::api_key(JWT_SECRET, "anon"),
            issuer,
            _rest: rest,
            _gateway: gateway,
        }
    })
}

fn token(sub: &str, account: &str) -> String {
    hosted().issuer.mint(&TokenRequest::new(sub, account))
}

fn client(steps: Value) -> Vec<Value> {
    let h = hosted();
    supabase_js::run(&h.url, &h.anon_key, steps)
}

fn count_titled(title: &str) -> i64 {
    superuser("postgres")
        .query_one("SELECT count(*) FROM todos WHERE title = $1", &[&title])
        .unwrap()
        .get(0)
}

/// Named `hosted::…` so that scripts/e2e can leave these to their own runner.
mod hosted {
    use super::*;

    #[test]
    fn supabase_the_guides_policies_read_the_verified_claims() {
        let jane = token(JANE, ACME);
        let bob = token(BOB, GLOBEX);
        let r = client(json!([
            {"token": jane, "via": "header", "op": "select"},
            {"token": bob, "via": "header", "op": "select"},
            {"op": "select"},
            {"token": jane, "via": "header", "op": "whoami"},
            {"token": jane, "via": "header", "op": "select"},
        ]));
        let jane_sees = vec!["jane: book dentist", "jane: renew passport"];
        assert_eq!(supabase_js::titles(&r[0]), jane_sees, "Jane");
        assert_eq!(supabase_js::titles(&r[1]), vec!["bob: fix the bike"], "Bob");
        assert!(
            supabase_js::titles(&r[2]).is_empty(),
            "the anon key alone sees nothing"
        );
        let me = &r[3]["data"];
        assert_eq!(me["current_user"], "authenticated", "{me}");
        assert_eq!(me["sub"], JANE, "{me}");
        assert_eq!(me["iss"], ISSUER, "{me}");
        assert_eq!(supabase_js::titles(&r[4]), jane_sees, "Jane again");
    }

    #[test]
    fn supabase_writes_only_her_own_rows() {
        let jane = token(JANE, ACME);
        let bob = token(BOB, GLOBEX);
        let mine = "sb: jane's hosted todo";
        let r = client(json!([
            {"token": jane, "via": "header", "op": "insert", "user_id": JANE, "title": mine},
            {"token": jane, "via": "header", "op": "insert", "user_id": BOB, "title": "sb: planted"},
            {"token": bob, "via": "header", "op": "update", "title": mine},
            {"token": jane, "via": "header", "op": "update", "title": mine},
            {"token": bob, "via": "header", "op": "delete", "title": mine},
            {"token": jane, "via": "header", "op": "delete", "title": mine},
        ]));
        assert_eq!(r[0]["status"], 201, "{}", r[0]);
        assert_eq!(r[1]["error"]["code"], "42501", "{}", r[1]);
        assert_eq!(count_titled("sb: planted"), 0);
        assert_eq!(r[2]["data"], json!([]), "{}", r[2]);
        assert_eq!(r[3]["data"], json!([{"title": mine, "is_completed": true}]));
        assert_eq!(r[4]["data"], json!([]), "{}", r[4]);
        assert_eq!(r[5]["data"], json!([{"title": mine}]));
        assert_eq!(count_titled(mine), 0);
    }

    #[test]
    fn supabase_forged_and_expired_tokens_get_401_and_write_nothing() {
        let jane = token(JANE, ACME);
        let forged = outseta_dev::with_payload(
            &jane,
            json!({"sub": BOB, "iss": ISSUER, "exp": outseta_dev::now() + 600})
                .to_string()
                .as_bytes(),
        );
        let mut expired = TokenRequest::new(JANE, ACME);
        expired.expires_in = -120;
        let expired = hosted().issuer.mint(&expired);
        let r = client(json!([
            {"token": forged, "via": "header", "op": "select"},
            {"token": forged, "via": "header", "op": "insert", "user_id": BOB, "title": "sb: forged"},
            {"token": expired, "via": "header", "op": "insert", "user_id": JANE, "title": "sb: expired"},
        ]));
        assert_eq!(r[0]["status"], 401, "{}", r[0]);
        assert_eq!(r[0]["error"]["code"], "bad_signature", "{}", r[0]);
        assert_eq!(r[1]["status"], 401, "{}", r[1]);
        assert_eq!(r[2]["status"], 401, "{}", r[2]);
        assert_eq!(r[2]["error"]["code"], "expired", "{}", r[2]);
        assert_eq!(count_titled("sb: forged") + count_titled("sb: expired"), 0);
    }

    #[test]
    fn keys_fetched_with_http_obey_the_fetch_rules() {
        let _alone = issuer_alone();
        let h = hosted();
        let mut p = project("postgres");
        let before = h.issuer.hits("/.well-known/jwks");
        // A server error: nothing stored, the cause kept for the owner, the old keys serve on.
        h.issuer.set_fault(Fault::Status(500));
        let n: i32 = p
            .query_one("SELECT extensions.outseta_refresh_jwks()", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, -1);
        let err: String = p
            .query_one(
                "SELECT last_error FROM extensions.outseta_jwks_status()",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(err, "HTTP 500");
        // A slow server: the request ends at outseta_auth.http_timeout.
        p.execute(
            "SELECT extensions.outseta_config_set('outseta_auth.http_timeout', '1000')",
            &[],
        )
        .unwrap();
        h.issuer.set_fault(Fault::Slow(Duration::from_secs(20)));
        let t0 = Instant::now();
        let n: i32 = p
            .query_one("SELECT extensions.outseta_refresh_jwks()", &[])
            .unwrap()
            .get(0);
        let took = t0.elapsed();
        assert_eq!(n, -1);
        assert!(
            took < Duration::from_secs(10),
            "bounded by http_timeout: {took:?}"
        );
        // A redirect is never followed into a key set: here to another issuer's valid JWKS.
        let other = Server::start("127.0.0.1:0", Issuer::new("https://other.example")).unwrap();
        h.issuer.set_fault(Fault::Redirect(other.jwks_url()));
        let n: i32 = p
            .query_one("SELECT extensions.outseta_refresh_jwks()", &[])
            .unwrap()
            .get(0);
        let err: String = p
            .query_one(
                "SELECT last_error FROM extensions.outseta_jwks_status()",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(n, -1, "{err}");
        assert!(err.contains("redirect"), "{err}");
        let r = client(
            json!([{"token": other.mint(&TokenRequest::new(JANE, ACME)), "via": "header", "op": "select"}]),
        );
        assert_eq!(
            r[0]["status"], 401,
            "the other issuer's keys were not taken: {}",
            r[0]
        );
        h.issuer.set_fault(Fault::None);
        p.execute(
            "SELECT extensions.outseta_config_reset('outseta_auth.http_timeout')",
            &[],
        )
        .unwrap();
        // The http extension's session options (a proxy nobody runs) are not the fetch's:
        // it starts from the extension's defaults.
        p.batch_execute(
            "SELECT extensions.http_set_curlopt('CURLOPT_PROXY', 'http://127.0.0.1:9')",
        )
        .unwrap();
        let n: i32 = p
            .query_one("SELECT extensions.outseta_refresh_jwks()", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 1);
        assert!(h.issuer.hits("/.well-known/jwks") >= before + 3);
        // An ordinary role's token with a kid nobody has makes no fetch (a caller's session
        // may carry a proxy of its own): keys come from the owner's refresh only.
        let before = h.issuer.hits("/.well-known/jwks");
        let stranger = outseta_dev::SigningKey::generate("unknown-kid");
        let forged =
            stranger.mint(&json!({"sub": JANE, "iss": ISSUER, "exp": outseta_dev::now() + 600}));
        let r = client(json!([{"token": forged, "via": "header", "op": "select"}]));
        assert_eq!(r[0]["status"], 401, "{}", r[0]);
        assert_eq!(r[0]["error"]["code"], "unknown_kid", "{}", r[0]);
        assert_eq!(
            h.issuer.hits("/.well-known/jwks"),
            before,
            "no fetch from a caller's request"
        );
        // Tokens verify throughout: the key set in use was never replaced by a failed fetch.
        let r = client(json!([{"token": token(JANE, ACME), "via": "header", "op": "select"}]));
        assert_eq!(r[0]["status"], 200, "{}", r[0]);
    }

    #[test]
    fn rds_an_application_role_behind_pgbouncer_in_transaction_mode() {
        let _alone = issuer_alone();
        // The deploy step outside the database: fetch the key set, push it in.
        let jwks = ureq::get(&hosted().issuer.jwks_url())
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let mut su = superuser("postgres");
        su.batch_execute("DROP DATABASE IF EXISTS portable_rds WITH (FORCE)")
            .unwrap();
        su.batch_execute("CREATE DATABASE portable_rds OWNER postgres")
            .unwrap();
        su.batch_execute(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_app') THEN
                     CREATE ROLE rds_app LOGIN;
                 END IF;
             END $$",
        )
        .unwrap();
        // The plain script, as the database's owner (Cloud SQL, Azure, Neon, RDS without pg_tle).
        psql_file_with(
            pg_port(),
            "postgres",
            "portable_rds",
            &outseta_e2e::portable::script(),
            "public",
        );
        let mut owner = project("portable_rds");
        owner
            .batch_execute(&format!(
                "SELECT outseta_config_set('outseta_auth.jwks_url', 'https://hosted.outseta.com/.well-known/jwks');
                 SELECT outseta_config_set('outseta_auth.issuer', '{ISSUER}');
                 CREATE TABLE notes (account_uid text NOT NULL, person_uid text NOT NULL, body text);
                 ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY mine ON notes USING (person_uid = (SELECT outseta_sub()))
                     WITH CHECK (person_uid = (SELECT outseta_sub()));
                 GRANT SELECT, INSERT ON notes TO rds_app;
                 INSERT INTO notes VALUES ('{ACME}', '{JANE}', 'jane 1'), ('{GLOBEX}', '{BOB}', 'bob 1');"
            ))
            .unwrap();
        let pushed: i32 = owner
            .query_one("SELECT outseta_set_jwks($1::text::jsonb)", &[&jwks])
            .unwrap()
            .get(0);
        assert_eq!(pushed, 1);
        let bouncer: u16 = std::env::var("OUTSETA_HOSTED_BOUNCER_PORT")
            .unwrap()
            .parse()
            .unwrap();
        let mut app = connect_as(bouncer, "rds_app", "portable_rds");
        let jane = token(JANE, ACME);
        let bob = token(BOB, GLOBEX);
        let read = |app: &mut Client, tok: Option<&str>| -> Vec<String> {
            let mut tx = app.transaction().unwrap();
            if let Some(t) = tok {
                tx.batch_execute(&format!("SET LOCAL outseta_auth.token = '{t}'"))
                    .unwrap();
            }
            let rows = tx
                .query("SELECT body FROM notes ORDER BY body", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.commit().unwrap();
            rows
        };
        for _ in 0..3 {
            assert_eq!(read(&mut app, Some(&jane)), vec!["jane 1"]);
            assert!(read(&mut app, None).is_empty(), "no token left behind");
            assert_eq!(read(&mut app, Some(&bob)), vec!["bob 1"]);
        }
        let mut tx = app.transaction().unwrap();
        tx.batch_execute(&format!("SET LOCAL outseta_auth.token = '{jane}'"))
            .unwrap();
        let e = tx
            .execute(
                "INSERT INTO notes VALUES ($1, $2, 'planted')",
                &[&GLOBEX, &BOB],
            )
            .unwrap_err();
        assert_eq!(e.code().unwrap().code(), "42501", "{e}");
    }
}
