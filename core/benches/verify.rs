//! Cold and warm verification cost of the core, next to jsonwebtoken alone, same process,
//! same tokens. Prints figures (median and spread over runs); never fails on speed.

use std::hint::black_box;
use std::time::Instant;

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use outseta_auth_core::fetch::{FetchLimits, Fetched, Fetcher};
use outseta_auth_core::jwks::KeySet;
use outseta_auth_core::key_store::LocalKeys;
use outseta_auth_core::policy::Policy;
use outseta_auth_core::{claims, verify};
use outseta_auth_core::{Config, Engine, KeySource, Timing};
use outseta_dev::{Issuer, TokenRequest};
use serde_json::{json, Value};

const TOKENS: usize = 2000;
const RUNS: usize = 7;

struct NoFetch;
impl Fetcher for NoFetch {
    fn fetch(&self, _: &str, _: FetchLimits) -> Result<Fetched, String> {
        unreachable!("literal key set")
    }
}

/// ns per operation: median, min, max over RUNS runs of `f` applied to every token.
fn measure(tokens: &[String], mut f: impl FnMut(&str)) -> (f64, f64, f64) {
    let mut per_op: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t0 = Instant::now();
            for t in tokens {
                f(t);
            }
            t0.elapsed().as_nanos() as f64 / tokens.len() as f64
        })
        .collect();
    per_op.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (per_op[RUNS / 2], per_op[0], per_op[RUNS - 1])
}

fn row(name: &str, (med, min, max): (f64, f64, f64), base: f64) {
    println!(
        "| {name} | {:.2} us | {:.2}-{:.2} us | {:.2}x |",
        med / 1000.0,
        min / 1000.0,
        max / 1000.0,
        med / base
    );
}

fn main() {
    verify::install_crypto_provider();
    let issuer = Issuer::new("https://bench.outseta.com");
    let jwk = issuer.signing_key().jwk();
    let jwks = json!({"keys": [jwk.clone()]}).to_string();
    let tokens: Vec<String> = (0..TOKENS)
        .map(|i| issuer.mint(&TokenRequest::new(&format!("person{i:05}"), "acct0001")))
        .collect();
    let policy = Policy::default();
    let keys = KeySet::parse(jwks.as_bytes()).unwrap();
    let now = claims::now();

    // jsonwebtoken alone: its own parsing, key from components, RS256, exp check.
    let dk =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let bare = measure(&tokens, |t| {
        black_box(decode::<Value>(t, &dk, &validation).unwrap());
    });

    let core = measure(&tokens, |t| {
        let p = verify::parse(t, &policy).unwrap();
        p.verify_signature(&keys).unwrap();
        black_box(claims::check(&p.payload, &policy, now).unwrap());
    });

    let cfg = Config {
        source: KeySource::Literal(jwks.clone()),
        policy: policy.clone(),
        timing: Timing::default(),
        profile: None,
    };
    let mut engine = Engine::new();
    let mut no_fetch = LocalKeys::new(NoFetch);
    engine.configure(1, || Ok(cfg.clone())).unwrap();
    // 2000 distinct tokens round-robin through a 1024-entry FIFO cache: every call misses.
    let cold = measure(&tokens, |t| {
        black_box(engine.verify(t, &mut no_fetch, now).unwrap());
    });
    let one = vec![tokens[0].clone(); TOKENS];
    let warm_last = measure(&one, |t| {
        black_box(engine.verify(t, &mut no_fetch, now).unwrap());
    });
    let some: Vec<String> = tokens[..500].iter().cycle().take(TOKENS).cloned().collect();
    for t in &some[..500] {
        engine.verify(t, &mut no_fetch, now).unwrap();
    }
    let warm_cache = measure(&some, |t| {
        black_box(engine.verify(t, &mut no_fetch, now).unwrap());
    });

    println!("core verification, {TOKENS} distinct RS256 tokens (RSA-2048), {RUNS} runs");
    println!("| what | median | min-max | vs jsonwebtoken |");
    println!("|---|---|---|---|");
    row("jsonwebtoken::decode alone (baseline)", bare, bare.0);
    row("core parse + signature + claims, no cache", core, bare.0);
    row("Engine::verify, cache miss (cold)", cold, bare.0);
    row(
        "Engine::verify, same token again (last-token hit)",
        warm_last,
        bare.0,
    );
    row(
        "Engine::verify, 500 tokens rotating (cache hit)",
        warm_cache,
        bare.0,
    );
}
