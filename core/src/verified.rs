//! One RSA verification per token per cluster: a memory of tokens whose signature has
//! verified, shared by every backend (the SQL layer keeps it in shared memory with preload).
//!
//! An entry is a SHA-256 digest of the *whole* token (header, payload and signature), of
//! the trust settings it was verified under ([`Config::trust_digest`]) and of the key set
//! that verified it ([`KeySet::digest`]). So:
//! - a forged token (any byte changed, the signature included) has another digest: it can
//!   hit only through a SHA-256 collision;
//! - other trust settings (issuer, audience, algorithms, leeway, key source) or another
//!   key set (a key withdrawn, rotated or added) give other digests: never shared;
//! - a hit skips only the signature check: the token is still parsed from its own bytes
//!   and its claims checked (`exp`, `nbf`, `iss`, `aud`) as on any miss, so nothing but
//!   the digest needs to be kept.
//!
//! [`Config::trust_digest`]: crate::config::Config::trust_digest
//! [`KeySet::digest`]: crate::jwks::KeySet::digest

use aws_lc_rs::digest;

pub type Digest = [u8; 32];

/// SHA-256 of `parts`, one after the other.
pub fn sha256(parts: &[&[u8]]) -> Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// What a verified token is remembered by.
pub fn token_digest(trust: &Digest, keys: &Digest, token: &str) -> Digest {
    sha256(&[
        b"outseta_auth verified token 1\0",
        trust,
        keys,
        token.as_bytes(),
    ])
}

/// Tokens whose signature verified, shared by the processes of a cluster. The engine asks
/// it before a signature check and tells it after one that passed (and whose claims did).
pub trait VerifiedTokens {
    /// False when there is no such memory here (the digest is then not even computed).
    fn active(&self) -> bool {
        true
    }
    /// Whether a token with this digest verified before (and is not past `expires`).
    fn seen(&mut self, digest: &Digest, now: f64) -> bool;
    /// Remember a verified token until `expires` (wall seconds: its `exp` plus leeway);
    /// `now`: the wall clock, for choosing an entry to replace.
    fn remember(&mut self, digest: &Digest, expires: f64, now: f64);
}

/// No shared memory of verified tokens (the library not preloaded; unit tests).
pub struct NoVerifiedTokens;

impl VerifiedTokens for NoVerifiedTokens {
    fn active(&self) -> bool {
        false
    }
    fn seen(&mut self, _: &Digest, _: f64) -> bool {
        false
    }
    fn remember(&mut self, _: &Digest, _: f64, _: f64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_covers_every_input() {
        let (t, k) = ([1u8; 32], [2u8; 32]);
        let d = token_digest(&t, &k, "a.b.c");
        assert_ne!(d, token_digest(&[3u8; 32], &k, "a.b.c"), "trust");
        assert_ne!(d, token_digest(&t, &[3u8; 32], "a.b.c"), "keys");
        assert_ne!(d, token_digest(&t, &k, "a.b.d"), "signature");
        assert_eq!(d, token_digest(&t, &k, "a.b.c"));
    }
}
