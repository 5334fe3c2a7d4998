//! Supabase drop-in: self-hosted Supabase's Data API as it runs (the real PostgREST with a
//! `jwt-secret`, an anon key in `apikey` and `Authorization`, a gateway serving it under
//! `/rest/v1`), Supabase's `auth.jwt()`, the table and four policies of Outseta's guide
//! "Supabase + Outseta Auth with RLS" verbatim (tests/e2e/supabase/fixture.sql), and the
//! client the guide's readers use, `@supabase/supabase-js` (pinned, run with Node), sending
//! the Outseta token in a header or the cookie. `outseta_auth.pre_request_claims` is what
//! makes the policies work unchanged.

use std::sync::OnceLock;

use outseta_dev::gateway::{Gateway, Routes};
use outseta_dev::TokenRequest;
use outseta_e2e::*;
use serde_json::{json, Value};

const DB: &str = "outseta_supabase";
/// PostgREST's `jwt-secret`, as in self-hosted Supabase's .env (at least 32 characters).
const JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";
const CAROL: &str = "Xk3pQ8vN";

struct Supabase {
    url: String,
    anon_key: String,
    _rest: PostgRest,
    _gateway: Gateway,
}

fn supabase() -> &'static Supabase {
    static S: OnceLock<Supabase> = OnceLock::new();
    S.get_or_init(|| {
        let mut db = fresh_database(DB);
        let fixture_sql =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/supabase/fixture.sql"))
                .unwrap();
        db.batch_execute(&fixture_sql).unwrap();
        // What the migration guide tells a self-hosted Supabase operator to run, with the
        // domain (a real Outseta host) replaced by the test issuer's jwks_url.
        let setup = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../sql/examples/supabase/setup.sql"
        ))
        .unwrap();
        db.batch_execute(&setup).unwrap();
        db.batch_execute(&format!(
            "ALTER DATABASE {DB} RESET outseta_auth.domain;
             INSERT INTO todos (user_id, title) VALUES
                 ('{JANE}', 'jane: renew passport'), ('{JANE}', 'jane: book dentist'),
                 ('{BOB}', 'bob: fix the bike');"
        ))
        .unwrap();
        // Self-hosted Supabase's PostgREST settings, plus the pre-request.
        let rest = start_postgrest(
            "postgrest-supabase",
            fixture().port,
            DB,
            &[
                ("jwt-secret", format!("\"{JWT_SECRET}\"")),
                ("db-anon-role", "\"anon\"".into()),
                ("db-use-legacy-gucs", "false".into()),
                ("db-pre-request", "\"public.outseta_pre_request\"".into()),
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
        Supabase {
            url: gateway.url(),
            anon_key: outseta_e2e::supabase_js::api_key(JWT_SECRET, "anon"),
            _rest: rest,
            _gateway: gateway,
        }
    })
}

/// Run the steps through supabase-js; one `{status, data, error}` per step.
fn client(steps: Value) -> Vec<Value> {
    let s = supabase();
    outseta_e2e::supabase_js::run(&s.url, &s.anon_key, steps)
}

/// Rows with this title, as a superuser (RLS does not apply).
fn count_titled(title: &str) -> i64 {
    connect_as(fixture().port, "postgres", DB)
        .query_one("SELECT count(*) FROM todos WHERE title = $1", &[&title])
        .unwrap()
        .get(0)
}

#[test]
fn the_guides_policies_work_unchanged_for_reads() {
    let jane = token(JANE, ACME);
    let bob = token(BOB, GLOBEX);
    let carol = token(CAROL, ACME);
    let r = client(json!([
        {"token": jane, "via": "header", "op": "select"},
        {"token": jane, "via": "cookie", "op": "select"},
        {"token": bob, "via": "header", "op": "select"},
        {"token": carol, "via": "header", "op": "select"},
        {"op": "select"},
        {"token": jane, "via": "header", "op": "whoami"},
        {"op": "whoami"},
    ]));
    let jane_sees = vec!["jane: book dentist", "jane: renew passport"];
    assert_eq!(supabase_js::titles(&r[0]), jane_sees, "Jane, header");
    assert_eq!(supabase_js::titles(&r[1]), jane_sees, "Jane, cookie");
    assert_eq!(supabase_js::titles(&r[2]), vec!["bob: fix the bike"], "Bob");
    assert!(
        supabase_js::titles(&r[3]).is_empty(),
        "a third person sees nothing"
    );
    assert!(
        supabase_js::titles(&r[4]).is_empty(),
        "the anon key alone sees nothing"
    );
    // auth.jwt() / auth.role() as Supabase defines them see the verified Outseta claims.
    let me = &r[5]["data"];
    assert_eq!(me["current_user"], "authenticated", "{me}");
    assert_eq!(me["auth_role"], "authenticated", "{me}");
    assert_eq!(me["sub"], JANE, "{me}");
    assert_eq!(me["iss"], ISSUER, "{me}");
    // No Outseta token: PostgREST's own claims (the anon key's) stay.
    let anon = &r[6]["data"];
    assert_eq!(anon["current_user"], "anon", "{anon}");
    assert_eq!(anon["auth_role"], "anon", "{anon}");
    assert_eq!(anon["iss"], "supabase", "{anon}");
}

#[test]
fn the_guides_policies_work_unchanged_for_writes() {
    let jane = token(JANE, ACME);
    let bob = token(BOB, GLOBEX);
    let mine = "sb: jane's new todo";
    let r = client(json!([
        {"token": jane, "via": "header", "op": "insert", "user_id": JANE, "title": mine},
        {"token": jane, "via": "header", "op": "insert", "user_id": BOB, "title": "sb: planted for bob"},
        {"token": bob, "via": "header", "op": "update", "title": mine},
        {"token": jane, "via": "header", "op": "update", "title": mine},
        {"token": bob, "via": "header", "op": "delete", "title": mine},
        {"token": jane, "via": "header", "op": "delete", "title": mine},
    ]));
    assert_eq!(r[0]["status"], 201, "{}", r[0]);
    assert_eq!(r[0]["data"][0]["user_id"], JANE);
    // WITH CHECK (user_id = auth.jwt() ->> 'sub'): Jane cannot write Bob's rows.
    assert_eq!(r[1]["error"]["code"], "42501", "{}", r[1]);
    assert_eq!(count_titled("sb: planted for bob"), 0);
    // Bob's update and delete of Jane's row touch nothing; Jane's own do.
    assert_eq!(r[2]["data"], json!([]), "{}", r[2]);
    assert_eq!(r[3]["data"], json!([{"title": mine, "is_completed": true}]));
    assert_eq!(r[4]["data"], json!([]), "{}", r[4]);
    assert_eq!(r[5]["data"], json!([{"title": mine}]));
    assert_eq!(count_titled(mine), 0);
}

#[test]
fn bad_tokens_get_401_and_expired_ones_too() {
    let jane = token(JANE, ACME);
    let forged = outseta_dev::with_payload(
        &jane,
        json!({"sub": BOB, "iss": ISSUER, "exp": outseta_dev::now() + 600})
            .to_string()
            .as_bytes(),
    );
    let mut expired = TokenRequest::new(JANE, ACME);
    expired.expires_in = -120;
    let expired = token_with(expired);
    let r = client(json!([
        {"token": forged, "via": "header", "op": "select"},
        {"token": forged, "via": "cookie", "op": "insert", "user_id": BOB, "title": "sb: forged"},
        {"token": expired, "via": "header", "op": "select"},
    ]));
    assert_eq!(r[0]["status"], 401, "{}", r[0]);
    assert_eq!(r[0]["error"]["code"], "bad_signature", "{}", r[0]);
    assert_eq!(r[1]["status"], 401, "{}", r[1]);
    assert_eq!(count_titled("sb: forged"), 0);
    assert_eq!(r[2]["status"], 401, "{}", r[2]);
    assert_eq!(r[2]["error"]["code"], "expired", "{}", r[2]);
}
