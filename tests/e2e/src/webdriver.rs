//! Just enough W3C WebDriver to drive Debian's headless Chromium through `chromedriver`
//! (both installed by scripts/setup): open a page, find, type, click, run a script, read
//! cookies, take a screenshot. Every browser gets an empty profile of its own.

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .max_redirects(0)
        .build()
        .into()
}

/// The chromedriver process the whole suite shares (started on first use; scripts/e2e
/// stops it through its pid file).
fn driver() -> &'static str {
    static D: OnceLock<(String, Mutex<Child>)> = OnceLock::new();
    &D.get_or_init(|| {
        let port = crate::free_port();
        let work = crate::work_dir();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(format!("{work}/chromedriver.log")).unwrap())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver, installed by scripts/setup)");
        std::fs::write(format!("{work}/chromedriver.pid"), child.id().to_string()).unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = agent()
                .get(format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start; see {work}/chromedriver.log"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (base, Mutex::new(child))
    })
    .0
}

/// One headless Chromium window.
pub struct Browser {
    session: String,
}

impl Browser {
    pub fn start() -> Browser {
        let profile = format!(
            "{}/chromium-{}-{:?}",
            crate::work_dir(),
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], "");
        // As the environment documents for root in a closed network: no sandbox, and no
        // background connections to Google's services.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=900,700",
            &format!("--user-data-dir={profile}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let v = call("POST", &format!("{}/session", driver()), Some(caps));
        let session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        let b = Browser { session };
        b.cmd(
            "POST",
            "/timeouts",
            json!({"script": 30_000, "pageLoad": 30_000}),
        );
        b
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", driver(), self.session);
        call(method, &url, Some(body))
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        let url = format!("{}/session/{}/url", driver(), self.session);
        call("GET", &url, None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Run `script` (a function body; `arguments` are `args`) in the page.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// Run `script` in the page; it ends by calling `arguments[arguments.length - 1](v)`.
    pub fn eval_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            json!({"script": script, "args": args}),
        )
    }

    /// Wait until `condition` (a JS expression) is truthy in the page; panics with what
    /// `describe` (a JS expression) says after `secs`.
    pub fn wait_for(&self, condition: &str, describe: &str, secs: u64) {
        let started = Instant::now();
        loop {
            let ok = self.eval(
                &format!("try {{ return !!({condition}); }} catch (e) {{ return false; }}"),
                json!([]),
            );
            if ok == true {
                return;
            }
            if started.elapsed() > Duration::from_secs(secs) {
                let seen = self.eval(&format!("return String({describe});"), json!([]));
                panic!("waited {secs} s for `{condition}`; the page shows: {seen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Type into the element `css` as a person would.
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    pub fn click(&self, css: &str) {
        let e = self.element(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    pub fn text(&self, css: &str) -> String {
        let e = self.element(css);
        let url = format!("{}/session/{}/element/{e}/text", driver(), self.session);
        call("GET", &url, None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The page as a PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        let url = format!("{}/session/{}/screenshot", driver(), self.session);
        let b64 = call("GET", &url, None);
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot"))
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", driver(), self.session);
        let _ = agent().delete(&url).call();
    }
}

/// One WebDriver command; its `value`, or a panic with WebDriver's error.
fn call(method: &str, url: &str, body: Option<Value>) -> Value {
    let a = agent();
    let result = match (method, body) {
        ("GET", _) => a.get(url).call(),
        ("DELETE", _) => a.delete(url).call(),
        (_, body) => a
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.unwrap_or(json!({})).to_string()),
    };
    let mut r = result.unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(status, 200, "WebDriver {method} {url}: {v}");
    v["value"].clone()
}
