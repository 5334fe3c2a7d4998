//! External test vectors nobody here wrote: Wycheproof JWS and JWK suites, RFC 7515 A.2.
//! Sources and licences: tests/vectors/SOURCE.md.

use std::collections::BTreeSet;

use outseta_auth_core::cache::{Config, Engine, KeySource};
use outseta_auth_core::fetch::{FetchLimits, Fetched, Fetcher};
use outseta_auth_core::jwks::KeySet;
use outseta_auth_core::policy::{Policy, ALL_ALGS};
use outseta_auth_core::verify::{install_crypto_provider, parse};
use serde_json::{json, Value};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");

/// Upstream defects (SOURCE.md): the only verdicts allowed to differ.
const DOCUMENTED: [u64; 6] = [346, 350, 367, 370, 372, 373];

fn load(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{DIR}{path}")).unwrap()).unwrap()
}

fn all_algs() -> Policy {
    Policy {
        algorithms: ALL_ALGS.to_vec(),
        ..Policy::default()
    }
}

/// A JWK with private members removed, as a verifier would publish it.
fn public_part(k: &Value) -> Value {
    let mut k = k.clone();
    if let Some(o) = k.as_object_mut() {
        for m in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
            o.remove(m);
        }
    }
    k
}

/// The group's key material as a JWKS: `public` if given (a key or a key set), else the
/// public part of `private`.
fn group_jwks(g: &Value) -> Value {
    let (material, strip) = match g.get("public") {
        Some(p) => (p, false),
        None => (&g["private"], true),
    };
    let keys: Vec<Value> = match material.get("keys").and_then(Value::as_array) {
        Some(ks) => ks.clone(),
        None => vec![material.clone()],
    };
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| if strip { public_part(k) } else { k.clone() })
        .collect();
    json!({ "keys": keys })
}

/// Signature-layer verdict: parse + key selection + signature, no claims check.
fn accepts(keys: &Result<KeySet, String>, jws: &Value) -> bool {
    let (Ok(keys), Some(jws)) = (keys, jws.as_str()) else {
        return false; // unusable key set, or a JSON serialization (compact only)
    };
    match parse(jws, &all_algs()) {
        Ok(p) => p.verify_signature(keys).is_ok(),
        Err(_) => false,
    }
}

fn run_suite(file: &str) -> (usize, usize, BTreeSet<u64>) {
    install_crypto_provider();
    let doc = load(file);
    let (mut total, mut agree, mut differ) = (0, 0, BTreeSet::new());
    for g in doc["testGroups"].as_array().unwrap() {
        let keys = KeySet::parse(group_jwks(g).to_string().as_bytes());
        for t in g["tests"].as_array().unwrap() {
            total += 1;
            let expected = t["result"] == "valid";
            if accepts(&keys, &t["jws"]) == expected {
                agree += 1;
            } else {
                differ.insert(t["tcId"].as_u64().unwrap());
            }
        }
    }
    (total, agree, differ)
}

#[test]
fn wycheproof_json_web_signature() {
    let (total, agree, differ) = run_suite("wycheproof/json_web_signature_test.json");
    println!("wycheproof JWS: {agree}/{total} verdicts agree; differing tcIds: {differ:?}");
    assert_eq!(total, 401);
    // Valid cases we cannot accept because the algorithm is unsupported (HS*, ES512) are
    // refusals, which is the safe direction; list them to keep the tally honest.
    let doc = load("wycheproof/json_web_signature_test.json");
    let mut unsupported = BTreeSet::new();
    for g in doc["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let id = t["tcId"].as_u64().unwrap();
            if differ.contains(&id) && !DOCUMENTED.contains(&id) {
                assert_eq!(
                    t["result"], "valid",
                    "tcId {id} ({}) was ACCEPTED but is invalid",
                    t["comment"]
                );
                let header = t["jws"]
                    .as_str()
                    .and_then(|j| j.split('.').next())
                    .unwrap_or("");
                let header = outseta_auth_core::b64::decode(header).unwrap_or_default();
                let alg = serde_json::from_slice::<Value>(&header)
                    .ok()
                    .and_then(|h| h["alg"].as_str().map(String::from));
                assert!(
                    matches!(alg.as_deref(), Some("HS256" | "HS384" | "HS512" | "ES512")),
                    "tcId {id} ({}) refused though its algorithm is supported",
                    t["comment"]
                );
                unsupported.insert(id);
            }
        }
    }
    println!("wycheproof JWS: refused as unsupported algorithm (HS*/ES512): {unsupported:?}");
    // Every invalid vector is refused: no accepted forgery, documented or not.
    for g in doc["testGroups"].as_array().unwrap() {
        let keys = KeySet::parse(group_jwks(g).to_string().as_bytes());
        for t in g["tests"].as_array().unwrap() {
            let id = t["tcId"].as_u64().unwrap();
            if t["result"] == "invalid" && !matches!(id, 367 | 370) {
                assert!(
                    !accepts(&keys, &t["jws"]),
                    "tcId {id} accepted: {}",
                    t["comment"]
                );
            }
        }
    }
}

#[test]
fn wycheproof_json_web_key() {
    let (total, agree, differ) = run_suite("wycheproof/json_web_key_test.json");
    println!("wycheproof JWK: {agree}/{total} verdicts agree; differing tcIds: {differ:?}");
    assert_eq!(total, 26);
    let doc = load("wycheproof/json_web_key_test.json");
    for g in doc["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let id = t["tcId"].as_u64().unwrap();
            if !differ.contains(&id) {
                continue;
            }
            // Otherwise only HMAC key sets, which we never use, may differ, and only by refusing.
            assert_eq!(t["result"], "valid", "tcId {id} accepted: {}", t["comment"]);
            let keys = group_jwks(g);
            let all_oct = keys["keys"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k["kty"] == "oct");
            assert!(
                all_oct,
                "tcId {id}: a usable key was refused: {}",
                t["comment"]
            );
        }
    }
}

fn rfc7515_a2() -> (String, Value) {
    let jws = std::fs::read_to_string(format!("{DIR}rfc7515/rfc7515_A.2.jwsc")).unwrap();
    let jwk: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DIR}rfc7515/rfc7515_A.2.jwk")).unwrap(),
    )
    .unwrap();
    (jws.trim().to_string(), json!({"keys": [public_part(&jwk)]}))
}

struct NoFetch;
impl Fetcher for NoFetch {
    fn fetch(&self, _: &str, _: FetchLimits) -> Result<Fetched, String> {
        panic!("a literal JWKS must never cause a fetch")
    }
}

#[test]
fn rfc7515_a2_signature_verifies_but_token_is_expired() {
    install_crypto_provider();
    let (jws, jwks) = rfc7515_a2();
    let keys = KeySet::parse(jwks.to_string().as_bytes()).unwrap();
    parse(&jws, &Policy::default())
        .unwrap()
        .verify_signature(&keys)
        .unwrap();

    let mut engine = Engine::new();
    engine
        .configure(1, || {
            Ok(Config {
                source: KeySource::Literal(jwks.to_string()),
                policy: Policy::default(),
                ttl: 300,
                min_interval: 30,
                limits: FetchLimits::from_ms(5000, 2000),
            })
        })
        .unwrap();
    let now = outseta_dev::now() as f64;
    assert_eq!(
        engine.verify(&jws, &NoFetch, now).unwrap_err().code(),
        "expired"
    );

    // One character changed in the signature: a bad signature, not an expiry.
    let mut tampered = jws.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        engine.verify(&tampered, &NoFetch, now).unwrap_err().code(),
        "bad_signature"
    );
}
