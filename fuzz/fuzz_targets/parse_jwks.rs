//! Any byte string as a JWKS document: parsing and key selection must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outseta_auth_core::jwks::KeySet;
use outseta_auth_core::policy::ALL_ALGS;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = KeySet::parse(data) {
        for alg in ALL_ALGS {
            let _ = set.select(alg, None);
            let _ = set.select(alg, Some("k"));
        }
    }
});
