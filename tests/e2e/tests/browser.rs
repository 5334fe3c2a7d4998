//! The headline path in a real browser: Debian's headless Chromium (through chromedriver)
//! opens the example frontend (`web/index.html`), which keeps Outseta's token in the cookie
//! `Outseta.nocode.accessToken` as Outseta's script does with `tokenStorage: 'cookie'`, and
//! talks to the real PostgREST under `/api` on the same origin, behind a reverse proxy
//! (outseta-dev's gateway, passing `Host` through as nginx's `proxy_set_header Host $host`).
//!
//! Attackers' pages on another site (127.0.0.2) and on the same site but another origin
//! (another port of 127.0.0.1) try to read and write with Jane's cookie in the jar. What
//! the browser really sent is read from the database's side: a pre-request wrapper logs
//! `request.headers` as PostgREST passed them (`browser-saw` lines in the server log).

use std::sync::OnceLock;

use outseta_dev::gateway::{Gateway, Routes};
use outseta_dev::TokenRequest;
use outseta_e2e::webdriver::Browser;
use outseta_e2e::*;
use serde_json::{json, Value};

const DB: &str = "outseta_browser";
/// The same app and schema, with `outseta_auth.cookie_origins` set to its own origin.
const DB_LISTED: &str = "outseta_browser_listed";

struct Site {
    /// The app: web/ and PostgREST under /api, cookie_origins empty.
    app: String,
    /// The same with cookie_origins set (another port of the same host).
    app_listed: String,
    /// An attacker's page on another site.
    cross_site: String,
    /// An attacker's page on the same site (same host, another port).
    same_site: String,
    _keep: Vec<Gateway>,
    _rest: Vec<PostgRest>,
}

fn database(db: &str, cookie_origins: &str) {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql/examples/");
    let read = |f: &str| std::fs::read_to_string(format!("{examples}{f}")).unwrap();
    let mut c = fresh_database(db);
    c.batch_execute(&read("outseta_app.sql")).unwrap();
    c.batch_execute(&read("seed.sql")).unwrap();
    c.batch_execute(&read("postgrest/roles.sql")).unwrap();
    c.batch_execute(&format!(
        "ALTER DATABASE {db} SET outseta_auth.cookie_origins = '{cookie_origins}';
         -- What reached the database, logged before the extension's pre-request runs.
         CREATE FUNCTION public.browser_pre_request() RETURNS void LANGUAGE plpgsql AS $f$
         DECLARE
             h jsonb := coalesce(nullif(current_setting('request.headers', true), ''), '{{}}')::jsonb;
             c jsonb := coalesce(nullif(current_setting('request.cookies', true), ''), '{{}}')::jsonb;
         BEGIN
             RAISE LOG 'browser-saw %', jsonb_build_object(
                 'db', current_database(),
                 'method', current_setting('request.method', true),
                 'path', current_setting('request.path', true),
                 'origin', h ->> 'origin', 'host', h ->> 'host',
                 'site', h ->> 'sec-fetch-site',
                 'cookie', c ? 'Outseta.nocode.accessToken',
                 'identity', (public.outseta_try_current()).claims ->> 'sub');
             PERFORM public.outseta_pre_request();
         END $f$;"
    ))
    .unwrap();
}

fn site() -> &'static Site {
    static S: OnceLock<Site> = OnceLock::new();
    S.get_or_init(|| {
        let web = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web");
        let attacker = concat!(env!("CARGO_MANIFEST_DIR"), "/attacker");
        let (app_port, listed_port) = (free_port(), free_port());
        database(DB, "");
        database(DB_LISTED, &format!("http://127.0.0.1:{listed_port}"));
        let pre = [(
            "db-pre-request",
            "\"public.browser_pre_request\"".to_string(),
        )];
        let rest = start_postgrest("postgrest-browser", fixture().port, DB, &pre);
        let rest_listed =
            start_postgrest("postgrest-browser-listed", fixture().port, DB_LISTED, &pre);
        let app = |port: u16, upstream: &PostgRest| {
            Gateway::start(
                &format!("127.0.0.1:{port}"),
                Routes {
                    prefix: "/api".into(),
                    upstream: Some(upstream.addr),
                    static_dir: Some(web.into()),
                },
            )
            .unwrap()
        };
        let page = |addr: &str| {
            Gateway::start(
                addr,
                Routes {
                    prefix: "/api".into(),
                    upstream: None,
                    static_dir: Some(attacker.into()),
                },
            )
            .unwrap()
        };
        let gws = vec![
            app(app_port, &rest),
            app(listed_port, &rest_listed),
            page("127.0.0.2:0"),
            page("127.0.0.1:0"),
        ];
        Site {
            app: gws[0].url(),
            app_listed: gws[1].url(),
            cross_site: gws[2].url(),
            same_site: gws[3].url(),
            _keep: gws,
            _rest: vec![rest, rest_listed],
        }
    })
}

/// What the database saw for requests in `db` whose log line satisfies `pick`.
fn saw(db: &str, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
    let log = std::fs::read_to_string(std::env::var("OUTSETA_E2E_SERVER_LOG").unwrap()).unwrap();
    log.lines()
        .filter_map(|l| l.split_once("browser-saw ").map(|(_, j)| j))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .filter(|v| v["db"] == db && pick(v))
        .collect()
}

fn count_titled(db: &str, title: &str) -> i64 {
    connect_as(fixture().port, "postgres", db)
        .query_one(
            "SELECT count(*) FROM todos WHERE title LIKE $1 || '%'",
            &[&title],
        )
        .unwrap()
        .get(0)
}

/// Sign Jane in on `app` as Outseta's script does after its sign-in redirect.
fn sign_in(b: &Browser, app: &str, token: &str) {
    b.goto(&format!("{app}/?access_token={token}"));
}

/// Until the page has loaded the signed-in person's todos.
fn wait_ready(b: &Browser) {
    b.wait_for(
        "document.body.dataset.state === 'ready'",
        "document.body.innerText",
        20,
    );
}

fn listed_titles(b: &Browser) -> Vec<String> {
    let v = b.eval(
        "return [...document.querySelectorAll('#todos li')].map(li => li.textContent);",
        json!([]),
    );
    serde_json::from_value(v).unwrap()
}

#[test]
fn jane_signs_in_sees_her_todos_and_adds_one() {
    let s = site();
    let b = Browser::start();
    sign_in(&b, &s.app, &token(JANE, ACME));
    wait_ready(&b);
    assert_eq!(
        b.text("#who"),
        format!("Signed in as {JANE} · account {ACME}")
    );
    // The token left the address bar and lives in Outseta's cookie.
    assert!(!b.url().contains("access_token"), "{}", b.url());
    let cookie = b.eval("return document.cookie;", json!([]));
    assert!(
        cookie
            .as_str()
            .unwrap()
            .contains("Outseta.nocode.accessToken="),
        "{cookie}"
    );
    let before = listed_titles(&b);
    assert!(!before.is_empty());
    assert!(
        before.iter().all(|t| t.starts_with("Jane")),
        "only Jane's todos: {before:?}"
    );
    let title = "Jane: water the plants (from Chromium)";
    b.type_into("#new-title", title);
    b.click("#add");
    b.wait_for(
        &format!(
            "[...document.querySelectorAll('#todos li')].some(li => li.textContent === {title:?})"
        ),
        "document.body.innerText",
        20,
    );
    let after = listed_titles(&b);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(after.iter().all(|t| t.starts_with("Jane")), "{after:?}");
    // The row is Jane's, written through the cookie alone.
    let owner: String = connect_as(fixture().port, "postgres", DB)
        .query_one("SELECT user_id FROM todos WHERE title = $1", &[&title])
        .unwrap()
        .get(0);
    assert_eq!(owner, JANE);
    // What Chromium sent: the cookie, and for the POST its own Origin and Host.
    let app_authority = s.app.trim_start_matches("http://").to_string();
    let posts = saw(DB, |v| v["method"] == "POST" && v["path"] == "/todos");
    let post = posts
        .iter()
        .find(|v| v["origin"] == s.app.as_str())
        .unwrap_or_else(|| panic!("no POST from the app's origin in {posts:?}"));
    assert_eq!(post["host"], app_authority.as_str());
    assert_eq!(post["site"], "same-origin");
    assert_eq!(post["cookie"], true);
    assert_eq!(post["identity"], JANE);
    // The page as README shows it.
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let out = std::env::var("OUTSETA_SCREENSHOT")
        .unwrap_or_else(|_| format!("{}/browser-jane.png", work_dir()));
    std::fs::write(&out, png).unwrap();
}

#[test]
fn an_expired_token_sends_the_page_back_to_sign_in() {
    let s = site();
    let b = Browser::start();
    let mut expired = TokenRequest::new(JANE, ACME);
    expired.expires_in = -120;
    sign_in(&b, &s.app, &token_with(expired));
    b.wait_for(
        "document.body.dataset.state === 'signed-out'",
        "document.body.innerText",
        20,
    );
    assert_eq!(
        b.text("#status"),
        "Your session has expired. Please sign in again."
    );
    assert!(listed_titles(&b).is_empty());
    // The page dropped the dead token.
    let cookie = b.eval("return document.cookie;", json!([]));
    assert!(
        !cookie
            .as_str()
            .unwrap()
            .contains("Outseta.nocode.accessToken="),
        "{cookie}"
    );
}

/// Jane is signed in to `app`; a page at `attacker` tries to read and write `app`'s API
/// with her cookie. Returns what the page's script got.
fn attack(b: &Browser, attacker: &str, app: &str, tag: &str) -> Value {
    b.goto(&format!("{attacker}/?target={app}&tag={tag}"));
    let got = b.eval_async(
        "const done = arguments[arguments.length - 1]; window.attack().then(done);",
        json!([]),
    );
    // And the classic CSRF: a form POST, a top-level navigation to the API.
    b.click("#go");
    b.wait_for(
        &format!("location.href.startsWith({:?})", format!("{app}/api/todos")),
        "location.href",
        20,
    );
    b.wait_for(
        "document.readyState === 'complete'",
        "document.readyState",
        20,
    );
    got
}

#[test]
fn pages_on_other_origins_cannot_act_or_read_with_janes_cookie() {
    let s = site();
    let b = Browser::start();
    sign_in(&b, &s.app, &token(JANE, ACME));
    wait_ready(&b);
    let janes: Vec<String> = listed_titles(&b);
    for (name, attacker, app, db) in [
        ("cross-site", &s.cross_site, &s.app, DB),
        ("same-site", &s.same_site, &s.app, DB),
        ("same-site-listed", &s.same_site, &s.app_listed, DB_LISTED),
    ] {
        let tag = format!("csrf-{name}");
        let got = attack(&b, attacker, app, &tag);
        // Nothing written, by the form or by fetch.
        assert_eq!(
            count_titled(db, &tag),
            0,
            "{name}: written; the page got {got}"
        );
        // Nothing read: the request was anonymous (or the browser kept the answer).
        let read = &got["read"];
        assert!(
            read.get("blocked").is_some() || read["body"] == "[]",
            "{name}: the page read {read}"
        );
        for t in &janes {
            assert!(!got.to_string().contains(t.as_str()), "{name}: read {t}");
        }
        // What the database saw: the attacker's Origin, never Jane's identity.
        let attacker_origin = attacker.as_str();
        let seen = saw(db, |v| v["origin"] == attacker_origin);
        assert!(
            seen.iter().any(|v| v["method"] == "POST"),
            "{name}: no POST from the attacker reached the database: {seen:?}"
        );
        for v in &seen {
            assert!(v["identity"].is_null(), "{name}: acted as Jane: {v}");
        }
        if name.starts_with("same-site") {
            // Same site: the browser did send Jane's cookie; the rule is what stopped it
            // (these are the cases that test the rule; across sites Chromium's default
            // SameSite=Lax may already keep the cookie back, and Sec-Fetch-Site: cross-site
            // would refuse it if not).
            assert!(
                seen.iter()
                    .any(|v| v["cookie"] == true && v["site"] == "same-site"),
                "{name}: {seen:?}"
            );
        } else {
            assert!(
                seen.iter().all(|v| v["site"] == "cross-site"),
                "{name}: {seen:?}"
            );
        }
    }
    // Jane's own page still works afterwards, with the same cookie (another test may have
    // added a todo of hers meanwhile).
    b.goto(&s.app);
    wait_ready(&b);
    let now = listed_titles(&b);
    assert!(janes.iter().all(|t| now.contains(t)), "{now:?}");
    assert!(now.iter().all(|t| t.starts_with("Jane")), "{now:?}");
}
