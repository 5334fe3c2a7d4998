//! External test vectors nobody here wrote: Wycheproof JWS and JWK suites, RFC 7515 A.2.
//! Sources and licences: tests/vectors/SOURCE.md.

use std::collections::BTreeSet;

use outseta_auth_core::fetch::{FetchLimits, Fetched, Fetcher};
use outseta_auth_core::jwks::KeySet;
use outseta_auth_core::key_store::LocalKeys;
use outseta_auth_core::policy::{Policy, ALL_ALGS};
use outseta_auth_core::verify::{install_crypto_provider, parse};
use outseta_auth_core::{Config, Engine, KeySource, Timing};
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

/// One vector's outcome.
struct Case {
    id: u64,
    comment: String,
    expected_valid: bool,
    accepted: bool,
    /// The token header's `alg`, when it has one.
    alg: Option<String>,
    /// Every key of the group is symmetric (`oct`): never usable here.
    hmac_only: bool,
}

impl Case {
    fn agrees(&self) -> bool {
        self.accepted == self.expected_valid
    }
}

fn header_alg(jws: &Value) -> Option<String> {
    let header = jws.as_str()?.split('.').next()?;
    let header = outseta_auth_core::b64::decode(header).ok()?;
    let h: Value = serde_json::from_slice(&header).ok()?;
    h["alg"].as_str().map(String::from)
}

/// Every vector of a Wycheproof file through the signature / key-selection layer, once.
fn run_suite(file: &str) -> Vec<Case> {
    install_crypto_provider();
    let doc = load(file);
    let mut cases = Vec::new();
    for g in doc["testGroups"].as_array().unwrap() {
        let jwks = group_jwks(g);
        let keys = KeySet::parse(jwks.to_string().as_bytes());
        let hmac_only = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kty"] == "oct");
        for t in g["tests"].as_array().unwrap() {
            cases.push(Case {
                id: t["tcId"].as_u64().unwrap(),
                comment: t["comment"].as_str().unwrap_or_default().to_string(),
                expected_valid: t["result"] == "valid",
                accepted: accepts(&keys, &t["jws"]),
                alg: header_alg(&t["jws"]),
                hmac_only,
            });
        }
    }
    let differ: BTreeSet<u64> = cases.iter().filter(|c| !c.agrees()).map(|c| c.id).collect();
    let agree = cases.len() - differ.len();
    println!(
        "{file}: {agree}/{} verdicts agree; differing tcIds: {differ:?}",
        cases.len()
    );
    cases
}

#[test]
fn wycheproof_json_web_signature() {
    let cases = run_suite("wycheproof/json_web_signature_test.json");
    assert_eq!(cases.len(), 401);
    // Valid cases we cannot accept because the algorithm is unsupported (HS*, ES512) are
    // refusals, which is the safe direction; list them to keep the tally honest.
    let mut unsupported = BTreeSet::new();
    for c in cases
        .iter()
        .filter(|c| !c.agrees() && !DOCUMENTED.contains(&c.id))
    {
        assert!(
            c.expected_valid,
            "tcId {} ({}) was ACCEPTED but is invalid",
            c.id, c.comment
        );
        assert!(
            matches!(
                c.alg.as_deref(),
                Some("HS256" | "HS384" | "HS512" | "ES512")
            ),
            "tcId {} ({}) refused though its algorithm is supported",
            c.id,
            c.comment
        );
        unsupported.insert(c.id);
    }
    println!("wycheproof JWS: refused as unsupported algorithm (HS*/ES512): {unsupported:?}");
    // Every invalid vector is refused: no accepted forgery, documented or not (367 and 370
    // are byte-identical to valid 357, an HS256 case we refuse anyway).
    for c in &cases {
        if !c.expected_valid {
            assert!(!c.accepted, "tcId {} accepted: {}", c.id, c.comment);
        }
    }
}

#[test]
fn wycheproof_json_web_key() {
    let cases = run_suite("wycheproof/json_web_key_test.json");
    assert_eq!(cases.len(), 26);
    // Only HMAC key sets, which we never use, may differ, and only by refusing.
    for c in cases.iter().filter(|c| !c.agrees()) {
        assert!(c.expected_valid, "tcId {} accepted: {}", c.id, c.comment);
        assert!(
            c.hmac_only,
            "tcId {}: a usable key was refused: {}",
            c.id, c.comment
        );
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
                timing: Timing::default(),
                profile: None,
            })
        })
        .unwrap();
    let now = outseta_dev::now() as f64;
    assert_eq!(
        engine
            .verify(&jws, &mut LocalKeys::new(NoFetch), now)
            .unwrap_err()
            .code(),
        "expired"
    );

    // One character changed in the signature: a bad signature, not an expiry.
    let mut tampered = jws.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        engine
            .verify(&tampered, &mut LocalKeys::new(NoFetch), now)
            .unwrap_err()
            .code(),
        "bad_signature"
    );
}
