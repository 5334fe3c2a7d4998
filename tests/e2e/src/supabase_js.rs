//! Supabase's side of the Supabase suites: an API key as Supabase signs it, and the client
//! Outseta's Supabase guide uses (`@supabase/supabase-js`, pinned, run with Node through
//! `tests/e2e/supabase/client.mjs`).

use std::process::Command;

use outseta_dev::{b64url, hmac_sha256};
use serde_json::{json, Value};

/// An HS256 JWT for `role` signed with the project's `jwt_secret`, as Supabase's anon key is.
pub fn api_key(jwt_secret: &str, role: &str) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let now = outseta_dev::now();
    let claims = json!({"role": role, "iss": "supabase", "iat": now, "exp": now + 3600});
    let payload = b64url(claims.to_string().as_bytes());
    let signed = format!("{header}.{payload}");
    let sig = b64url(&hmac_sha256(jwt_secret.as_bytes(), signed.as_bytes()));
    format!("{signed}.{sig}")
}

/// Run the steps (see client.mjs) through supabase-js against `url` with `anon_key`; one
/// `{status, data, error}` per step.
pub fn run(url: &str, anon_key: &str, steps: Value) -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/supabase");
    let out = Command::new("node")
        .current_dir(dir)
        .arg("client.mjs")
        .arg(steps.to_string())
        .env("SUPABASE_URL", url)
        .env("SUPABASE_ANON_KEY", anon_key)
        .output()
        .expect("node (installed by scripts/setup)");
    assert!(
        out.status.success(),
        "supabase-js client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    v.as_array().unwrap().clone()
}

/// The titles a select step returned (status 200 asserted), leaving out the rows the writes
/// tests add and remove meanwhile (titled "sb: ...").
pub fn titles(r: &Value) -> Vec<&str> {
    assert_eq!(r["status"], 200, "{r}");
    r["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|row| row["title"].as_str().unwrap())
        .filter(|t| !t.starts_with("sb: "))
        .collect()
}
