//! Any byte string as a token: parsing, key selection, signature and claims must never
//! panic, and nothing but the one genuine token may verify.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use outseta_auth_core::jwks::KeySet;
use outseta_auth_core::policy::{Policy, ALL_ALGS};
use outseta_auth_core::{claims, verify};

/// RFC 7515 A.2's RSA public key; its one valid token is expired, so nothing verifies.
const JWKS: &str = include_str!("../jwks.json");

fn keys() -> &'static KeySet {
    static K: OnceLock<KeySet> = OnceLock::new();
    K.get_or_init(|| {
        verify::install_crypto_provider();
        KeySet::parse(JWKS.as_bytes()).expect("fuzz key set")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let policy = Policy { algorithms: ALL_ALGS.to_vec(), ..Policy::default() };
    if let Ok(parsed) = verify::parse(token, &policy) {
        if parsed.verify_signature(keys()).is_ok() {
            // Only the genuine RFC 7515 A.2 token has a valid signature, and it is expired.
            let now = 1_700_000_000.0;
            assert!(claims::check(&parsed.payload, &policy, now).is_err(), "accepted: {token}");
        }
    }
});
