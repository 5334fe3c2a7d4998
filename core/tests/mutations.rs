//! Property: a mutation of a valid token is never accepted unless it is byte-identical.

use outseta_auth_core::jwks::KeySet;
use outseta_auth_core::policy::{Policy, ALL_ALGS};
use outseta_auth_core::verify::{install_crypto_provider, parse};
use outseta_auth_core::{claims, AuthError};
use outseta_dev::SigningKey;
use proptest::prelude::*;
use serde_json::json;
use std::sync::OnceLock;

struct Setup {
    token: String,
    keys: KeySet,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        install_crypto_provider();
        let key = SigningKey::generate("prop");
        let token =
            key.mint(&json!({"sub": "p1", "outseta:accountUid": "a1", "exp": 4_000_000_000u64}));
        let keys = KeySet::parse(json!({"keys": [key.jwk()]}).to_string().as_bytes()).unwrap();
        Setup { token, keys }
    })
}

fn accepted(token: &str) -> Result<(), AuthError> {
    let policy = Policy {
        algorithms: ALL_ALGS.to_vec(),
        ..Policy::default()
    };
    let p = parse(token, &policy)?;
    p.verify_signature(&setup().keys)?;
    claims::check(&p.payload, &policy, 1_700_000_000.0).map(|_| ())
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    FlipBit(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::FlipBit(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_tokens_are_refused(edits in proptest::collection::vec(edit(), 1..4)) {
        let s = setup();
        prop_assert!(accepted(&s.token).is_ok());
        let mut bytes = s.token.clone().into_bytes();
        for e in edits {
            let n = bytes.len();
            match e {
                Edit::Replace(i, b) => bytes[i % n] = b,
                Edit::Insert(i, b) => bytes.insert(i % (n + 1), b),
                Edit::Delete(i) => { bytes.remove(i % n); }
                Edit::FlipBit(i, b) => bytes[i % n] ^= 1 << b,
            }
        }
        let Ok(mutated) = String::from_utf8(bytes) else { return Ok(()) };
        if mutated != s.token {
            prop_assert!(accepted(&mutated).is_err(), "accepted a mutation: {mutated}");
        }
    }
}
