//! A real PostgREST 12 (the pinned binary scripts/setup installs) in front of the example
//! schema, configured with `sql/examples/postgrest/`, spoken to over HTTP as a browser
//! frontend would: the Outseta cookie, a header token, anonymous requests, bad tokens, and
//! cross-site form posts.

use std::sync::OnceLock;
use std::time::Duration;

use outseta_dev::TokenRequest;
use outseta_e2e::*;
use serde_json::Value;

const REST_DB: &str = "outseta_rest";
const APP_ORIGIN: &str = "https://app.example.com";
const COOKIE: &str = "Outseta.nocode.accessToken";

struct Rest {
    base: String,
    _server: PostgRest,
}

fn examples(file: &str) -> String {
    let path = format!("{}/../../sql/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The database, roles and settings of sql/examples (+ postgrest/roles.sql), and PostgREST
/// running with sql/examples/postgrest/postgrest.conf on a free loopback port.
fn rest() -> &'static Rest {
    static R: OnceLock<Rest> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixture();
        let mut db = fresh_database(REST_DB);
        db.batch_execute(&examples("outseta_app.sql")).unwrap();
        db.batch_execute(&examples("seed.sql")).unwrap();
        db.batch_execute(&examples("postgrest/roles.sql")).unwrap();
        db.batch_execute(&examples("postgrest/webhook.sql"))
            .unwrap();
        configure_webhook_secret(f.port);
        let server = start_postgrest("postgrest", f.port, REST_DB, &[]);
        Rest {
            base: server.base(),
            _server: server,
        }
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .max_redirects(0)
        .build()
        .into()
}

/// A request as the browser frontend sends it. `token` goes in Outseta's cookie.
struct Req<'a> {
    method: &'a str,
    path: &'a str,
    cookie: Option<&'a str>,
    headers: Vec<(&'a str, String)>,
    body: Option<(&'a str, String)>,
}

struct Resp {
    status: u16,
    www_authenticate: Option<String>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl<'a> Req<'a> {
    fn new(method: &'a str, path: &'a str) -> Self {
        Req {
            method,
            path,
            cookie: None,
            headers: vec![],
            body: None,
        }
    }
    fn cookie(mut self, token: &'a str) -> Self {
        self.cookie = Some(token);
        self
    }
    fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(("application/json", body.to_string()));
        self
    }
    /// A body sent byte for byte as given.
    fn raw(mut self, content_type: &'a str, body: &str) -> Self {
        self.body = Some((content_type, body.to_string()));
        self
    }
    fn form(mut self, body: &str) -> Self {
        self.body = Some(("application/x-www-form-urlencoded", body.to_string()));
        self
    }
    fn send(self) -> Resp {
        let url = format!("{}{}", rest().base, self.path);
        let a = agent();
        let mut headers = self.headers;
        if let Some(t) = self.cookie {
            headers.push(("Cookie", format!("theme=dark; {COOKIE}={t}")));
        }
        let result = match (self.method, self.body) {
            ("GET", None) => headers
                .iter()
                .fold(a.get(&url), |r, (k, v)| r.header(*k, v))
                .call(),
            ("DELETE", None) => headers
                .iter()
                .fold(a.delete(&url), |r, (k, v)| r.header(*k, v))
                .call(),
            ("POST", Some((ct, body))) => headers
                .iter()
                .fold(a.post(&url), |r, (k, v)| r.header(*k, v))
                .header("Content-Type", ct)
                .send(body),
            ("PATCH", Some((ct, body))) => headers
                .iter()
                .fold(a.patch(&url), |r, (k, v)| r.header(*k, v))
                .header("Content-Type", ct)
                .send(body),
            (m, _) => panic!("unsupported request {m}"),
        };
        let mut r = result.unwrap_or_else(|e| panic!("{url}: {e}"));
        Resp {
            status: r.status().as_u16(),
            www_authenticate: r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string()),
            body: r.body_mut().read_to_string().unwrap(),
        }
    }
}

fn whoami(req: Req) -> Value {
    let r = req.send();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn titles(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["title"].as_str().unwrap().to_string())
        .collect()
}

/// Rows with this title, counted as a superuser (RLS does not apply).
fn count_titled(title: &str) -> i64 {
    connect_as(fixture().port, "postgres", REST_DB)
        .query_one("SELECT count(*) FROM todos WHERE title = $1", &[&title])
        .unwrap()
        .get(0)
}

#[test]
fn the_cookie_reads_as_each_person() {
    let jane = token(JANE, ACME);
    let bob = token(BOB, GLOBEX);
    let get = |t: &str| {
        titles(
            &Req::new("GET", "/todos?select=title&title=not.like.rest*&order=id")
                .cookie(t)
                .send(),
        )
    };
    assert_eq!(get(&jane), ["Jane: renew passport", "Jane: book dentist"]);
    assert_eq!(get(&bob), ["Bob: file expenses"]);
    let docs = Req::new("GET", "/documents?select=title&order=id")
        .cookie(&jane)
        .send();
    assert_eq!(titles(&docs), ["Acme roadmap"]);
    let docs = Req::new("GET", "/documents?select=title&order=id")
        .cookie(&token(JANE, GLOBEX))
        .send();
    assert_eq!(titles(&docs), ["Globex budget", "Globex hiring plan"]);
}

#[test]
fn anonymous_requests_read_nothing_and_cannot_write() {
    let r = Req::new("GET", "/todos").send();
    assert_eq!(titles(&r), Vec::<String>::new());
    let me = whoami(Req::new("GET", "/rpc/whoami"));
    assert_eq!(me["role"], "anon");
    assert_eq!(me["sub"], Value::Null);
    let r = Req::new("POST", "/todos")
        .json(serde_json::json!({"title": "rest-anon"}))
        .send();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(count_titled("rest-anon"), 0);
}

#[test]
fn a_valid_token_switches_to_the_authenticated_role() {
    let me = whoami(Req::new("GET", "/rpc/whoami").cookie(&token(JANE, ACME)));
    assert_eq!(me["role"], "authenticated");
    assert_eq!(me["sub"], JANE);
    assert_eq!(me["account"], ACME);
}

#[test]
fn writes_through_the_cookie_follow_the_policies() {
    let jane = token(JANE, ACME);
    let bob = token(BOB, GLOBEX);
    let title = "rest-write-1";
    let origin = ("Origin", APP_ORIGIN.to_string());
    // POST: the row is stamped with Jane's uid by the column default.
    let r = Req::new("POST", "/todos")
        .cookie(&jane)
        .header(origin.0, origin.1.clone())
        .header("Prefer", "return=representation")
        .json(serde_json::json!({"title": title}))
        .send();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()[0]["user_id"], JANE);
    let path = format!("/todos?title=eq.{title}");
    // PATCH by Bob matches nothing; by Jane, her row.
    for (who, expected) in [(&bob, 0), (&jane, 1)] {
        let r = Req::new("PATCH", &path)
            .cookie(who)
            .header(origin.0, origin.1.clone())
            .header("Prefer", "return=representation")
            .json(serde_json::json!({"done": true}))
            .send();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json().as_array().unwrap().len(), expected);
    }
    // Writing a row for someone else fails the policy's WITH CHECK. PostgREST answers 42501
    // with 401 whenever it did not authenticate the request itself (it saw no JWT of its
    // own), whatever the database role; unlike a bad token, no invalid_token challenge.
    let r = Req::new("POST", "/todos")
        .cookie(&jane)
        .header(origin.0, origin.1.clone())
        .json(serde_json::json!({"title": "rest-write-other", "user_id": BOB}))
        .send();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["code"], "42501");
    assert!(
        !r.www_authenticate
            .unwrap_or_default()
            .contains("invalid_token"),
        "a policy refusal must not look like a bad token"
    );
    assert_eq!(count_titled("rest-write-other"), 0);
    // DELETE by Bob removes nothing; by Jane, her row.
    for (who, expected) in [(&bob, 1), (&jane, 0)] {
        let r = Req::new("DELETE", &path)
            .cookie(who)
            .header(origin.0, origin.1.clone())
            .send();
        assert_eq!(r.status, 204, "{}", r.body);
        assert_eq!(count_titled(title), expected);
    }
}

#[test]
fn bad_tokens_get_401_with_www_authenticate_and_no_token_material() {
    let mut expired = TokenRequest::new(JANE, ACME);
    expired.expires_in = -3600;
    let expired = token_with(expired);
    let jane = token(JANE, ACME);
    let bob = token(BOB, GLOBEX);
    let (j, b): (Vec<&str>, Vec<&str>) = (jane.split('.').collect(), bob.split('.').collect());
    let tampered = format!("{}.{}.{}", b[0], j[1], b[2]);
    // An error whose message quotes the token's alg: the header must stay well-formed.
    let ps256 = {
        let issuer = fixture().server.issuer.lock().unwrap();
        let key = issuer.signing_key();
        let claims = outseta_dev::outseta_claims(&TokenRequest::new(JANE, ACME), ISSUER, None);
        key.mint_with_header(
            &serde_json::json!({"alg": "PS256", "kid": key.kid, "typ": "JWT"}),
            &claims,
        )
    };
    for (t, code, words) in [
        (&expired, "expired", "has expired"),
        (&tampered, "bad_signature", "bad signature"),
        (&"not-a-token".to_string(), "malformed", "malformed"),
        (&ps256, "algorithm_not_allowed", "is not allowed"),
    ] {
        for req in [
            Req::new("GET", "/todos").cookie(t),
            Req::new("GET", "/todos").header("X-Outseta-Token", format!("Bearer {t}")),
        ] {
            let r = req.send();
            assert_eq!(r.status, 401, "{}", r.body);
            let www = r.www_authenticate.clone().expect("WWW-Authenticate");
            assert!(
                www.starts_with("Bearer error=\"invalid_token\", error_description=\""),
                "{www}"
            );
            assert!(www.contains(words), "{www}");
            // RFC 6750 quoting: one quoted description, nothing after it, no quote inside.
            let description = www
                .strip_prefix("Bearer error=\"invalid_token\", error_description=\"")
                .and_then(|d| d.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{www}"));
            assert!(!description.contains(['"', '\\']), "{www}");
            let body = r.json();
            assert_eq!(body["code"], code, "{body}");
            assert!(body["message"].as_str().unwrap().contains(words), "{body}");
            for part in t.split('.').filter(|p| p.len() > 8) {
                assert!(!r.body.contains(part), "token material in the body");
                assert!(!www.contains(part), "token material in the header");
            }
        }
    }
}

#[test]
fn a_header_token_works_with_the_bearer_prefix() {
    let bob = token(BOB, GLOBEX);
    for value in [format!("Bearer {bob}"), bob.clone()] {
        let me = whoami(Req::new("GET", "/rpc/whoami").header("X-Outseta-Token", value));
        assert_eq!(me["sub"], BOB);
        assert_eq!(me["role"], "authenticated");
    }
}

#[test]
fn writes_with_the_cookie_need_a_same_origin_sign() {
    let jane = token(JANE, ACME);
    // No Origin and no Fetch Metadata (a client that is not a browser, or a request a
    // browser would have marked): the cookie does not count for a write.
    let title = "rest-no-origin-write";
    let r = Req::new("POST", "/todos")
        .cookie(&jane)
        .json(serde_json::json!({"title": title}))
        .send();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(count_titled(title), 0);
    // The app's origin over http while the proxy says https: not the same origin.
    let title = "rest-wrong-scheme-write";
    let r = Req::new("POST", "/todos")
        .cookie(&jane)
        .header("Origin", "http://app.example.com")
        .header("X-Forwarded-Proto", "https")
        .json(serde_json::json!({"title": title}))
        .send();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(count_titled(title), 0);
    // Sec-Fetch-Site: same-origin without an Origin: the browser says it is the app.
    let title = "rest-same-origin-fetch-metadata";
    let r = Req::new("POST", "/todos")
        .cookie(&jane)
        .header("Sec-Fetch-Site", "same-origin")
        .json(serde_json::json!({"title": title}))
        .send();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(count_titled(title), 1);
    // Reads without an Origin still use the cookie (a browser sends none on a same-origin GET).
    assert_eq!(
        whoami(Req::new("GET", "/rpc/whoami").cookie(&jane))["sub"],
        JANE
    );
}

#[test]
fn a_cross_site_form_post_does_not_act_with_the_cookie() {
    let jane = token(JANE, ACME);
    // What an attacker's page makes the browser send: Jane's cookie rides along.
    for (title, headers) in [
        (
            "csrf-fetch-metadata",
            vec![
                ("Sec-Fetch-Site", "cross-site"),
                ("Origin", "https://evil.example"),
            ],
        ),
        ("csrf-origin-only", vec![("Origin", "https://evil.example")]),
        ("csrf-null-origin", vec![("Origin", "null")]),
        (
            "csrf-listed-origin-but-cross-site",
            vec![("Sec-Fetch-Site", "cross-site"), ("Origin", APP_ORIGIN)],
        ),
    ] {
        let mut req = Req::new("POST", "/todos")
            .cookie(&jane)
            .form(&format!("title={title}"));
        for (k, v) in &headers {
            req = req.header(k, *v);
        }
        let r = req.send();
        assert_eq!(
            r.status, 401,
            "{title}: anonymous may not insert: {}",
            r.body
        );
        assert_eq!(count_titled(title), 0, "{title} was written");
        // Reads are anonymous too.
        let mut req = Req::new("GET", "/rpc/whoami").cookie(&jane);
        for (k, v) in &headers {
            req = req.header(k, *v);
        }
        assert_eq!(whoami(req)["role"], "anon", "{title}");
    }
    // The same form from the app's own origin writes.
    let title = "rest-same-origin-form";
    let r = Req::new("POST", "/todos")
        .cookie(&jane)
        .header("Sec-Fetch-Site", "same-origin")
        .header("Origin", APP_ORIGIN)
        .form(&format!("title={title}"))
        .send();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(count_titled(title), 1);
    connect_as(fixture().port, "postgres", REST_DB)
        .execute("DELETE FROM todos WHERE title = $1", &[&title])
        .unwrap();
    // A header token is not a cookie: a cross-site page cannot set it, so it still counts.
    let me = whoami(
        Req::new("GET", "/rpc/whoami")
            .header("Sec-Fetch-Site", "cross-site")
            .header("X-Outseta-Token", jane.clone()),
    );
    assert_eq!(me["role"], "authenticated");
}

/// POST a webhook to the example receiver (sql/examples/postgrest/webhook.sql), the body
/// byte for byte, with `signature` in `x-hub-signature-256` if given.
fn post_webhook(body: &str, signature: Option<&str>) -> Resp {
    let mut r = Req::new("POST", "/rpc/outseta_webhook").raw("application/json", body);
    if let Some(s) = signature {
        r = r.header("x-hub-signature-256", s);
    }
    r.send()
}

/// The account's row as the receiver wrote it (superuser: RLS does not apply).
fn subscription_row(account: &str) -> Option<(Option<String>, Vec<String>)> {
    connect_as(fixture().port, "postgres", REST_DB)
        .query_opt(
            "SELECT plan_uid, add_on_uids FROM account_subscriptions WHERE account_uid = $1",
            &[&account],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

fn sign(body: &str) -> String {
    outseta_dev::webhook_signature(WEBHOOK_KEY, body.as_bytes()).unwrap()
}

#[test]
fn a_signed_webhook_is_written_byte_for_byte_and_bad_signatures_are_refused() {
    // Pretty-printed with extra whitespace: if PostgREST re-serialized the body, the
    // signature over these exact bytes would not match.
    let account = "whAcct01";
    let v = outseta_dev::account_webhook_body(account, "plan_pro", &["addon_x", "addon_y"]);
    let body = format!("  {}\n", serde_json::to_string_pretty(&v).unwrap());
    let compact = v.to_string();
    assert_ne!(body, compact);

    // Refused, nothing written: no signature, another key's, a signature of other bytes
    // (the compact form of the same JSON), garbage.
    let other_key = outseta_dev::webhook_signature(&"ab".repeat(32), body.as_bytes()).unwrap();
    let other_bytes = sign(&compact);
    for (sig, what) in [
        (None, "no signature"),
        (Some(other_key.as_str()), "another key"),
        (Some(other_bytes.as_str()), "other bytes"),
        (Some("sha256=zz"), "garbage"),
    ] {
        let r = post_webhook(&body, sig);
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.json()["code"], "outseta_webhook_signature", "{what}");
        assert!(
            !r.body.contains(WEBHOOK_KEY),
            "{what}: the key is never echoed"
        );
        assert_eq!(subscription_row(account), None, "{what}: nothing written");
    }

    // Signed: written.
    let r = post_webhook(&body, Some(&sign(&body)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["account_uid"], account);
    assert_eq!(
        subscription_row(account),
        Some((
            Some("plan_pro".to_string()),
            vec!["addon_x".to_string(), "addon_y".to_string()]
        ))
    );

    // The digest without the "sha256=" prefix is accepted too.
    let v = outseta_dev::account_webhook_body(account, "plan_basic", &[]);
    let body = v.to_string();
    let bare = sign(&body).trim_start_matches("sha256=").to_string();
    let r = post_webhook(&body, Some(&bare));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        subscription_row(account),
        Some((Some("plan_basic".to_string()), vec![]))
    );

    // Signed but not an account: 422, nothing written.
    let odd = r#"{"Hello": "world"}"#;
    let r = post_webhook(odd, Some(&sign(odd)));
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["code"], "outseta_webhook_payload");
}

#[test]
fn a_downgrade_webhook_hides_gated_rows_while_the_token_still_has_the_add_on() {
    let mut req = TokenRequest::new(JANE, ACME);
    req.add_on_uids = vec!["addon_reporting".into()];
    let jane = token_with(req);
    let reports = || {
        titles(
            &Req::new("GET", "/reports?select=title")
                .cookie(&jane)
                .send(),
        )
    };
    assert_eq!(reports(), ["Acme quarterly report"], "the token decides");

    let webhook = |add_ons: &[&str], updated: Option<&str>| {
        let mut v = outseta_dev::account_webhook_body(ACME, "plan_team", add_ons);
        if let Some(u) = updated {
            v["Updated"] = u.into();
        }
        let body = v.to_string();
        let r = post_webhook(&body, Some(&sign(&body)));
        assert_eq!(r.status, 200, "{}", r.body);
    };
    // Outseta reports the add-on removed: hidden at once, same token.
    webhook(&[], None);
    assert_eq!(reports(), Vec::<String>::new());
    // A replayed older webhook (with the add-on) does not undo it.
    webhook(&["addon_reporting"], Some("2020-01-01T00:00:00Z"));
    assert_eq!(reports(), Vec::<String>::new());
    assert_eq!(
        subscription_row(ACME),
        Some((Some("plan_team".to_string()), vec![]))
    );
    // Added back (a newer webhook): visible again.
    webhook(&["addon_reporting"], None);
    assert_eq!(reports(), ["Acme quarterly report"]);

    // The table itself is readable through the API by the account's people only.
    let rows = Req::new("GET", "/account_subscriptions?select=account_uid,plan_uid")
        .cookie(&jane)
        .send();
    assert_eq!(rows.status, 200, "{}", rows.body);
    assert_eq!(
        rows.json(),
        serde_json::json!([{"account_uid": ACME, "plan_uid": "plan_team"}])
    );
    let bob = Req::new("GET", "/account_subscriptions?select=account_uid")
        .cookie(&token(BOB, GLOBEX))
        .send();
    assert_eq!(bob.json(), serde_json::json!([]));
}

#[test]
fn an_unreachable_issuer_is_a_503_that_names_no_url_or_cause() {
    const DOWN_DB: &str = "outseta_rest_down";
    let mut db = fresh_database(DOWN_DB);
    db.batch_execute(&examples("outseta_app.sql")).unwrap();
    db.batch_execute(&examples("postgrest/roles.sql")).unwrap();
    // Nothing listens on port 1 of loopback: every fetch fails, no keys are ever cached.
    db.batch_execute(&format!(
        "ALTER DATABASE {DOWN_DB} SET outseta_auth.jwks_url = 'http://127.0.0.1:1/internal/jwks'"
    ))
    .unwrap();
    let server = start_postgrest("postgrest-down", fixture().port, DOWN_DB, &[]);
    let mut r = agent()
        .get(format!("{}/todos", server.base()))
        .header("Cookie", format!("{COOKIE}={}", token(JANE, ACME)))
        .call()
        .unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status(), 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "jwks_unavailable", "{body}");
    for leak in ["127.0.0.1", "internal", "jwks_url", "refused", "http:"] {
        assert!(
            !body.contains(leak),
            "{leak} in the anonymous client's body: {body}"
        );
    }
    // The operator finds the cause in the server log.
    let log = std::fs::read_to_string(std::env::var("OUTSETA_E2E_SERVER_LOG").unwrap()).unwrap();
    // (the anonymous role is told no cause; the server log has it, with the URL)
    assert!(
        log.lines()
            .any(|l| l.contains("outseta_pre_request: jwks_unavailable")),
        "no pre-request line in the server log"
    );
    assert!(
        log.lines().any(|l| l.contains(
            "outseta_auth: could not load the JWKS from http://127.0.0.1:1/internal/jwks"
        )),
        "no cause in the server log"
    );
}
