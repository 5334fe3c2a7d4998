//! Verified tokens of one backend, bounded by count and bytes, oldest evicted first
//! ([`Bounded`]). Each verdict carries until when its revocation check (the profile
//! endpoint) holds.

use std::rc::Rc;
use std::sync::Arc;

use crate::bounded::Bounded;
use crate::claims::VerifiedToken;

pub const TOKEN_CACHE_ENTRIES: usize = 1024;
/// Approximate bytes the token cache may hold (tokens may be up to 16 KiB each).
pub const TOKEN_CACHE_BYTES: usize = 4 * 1024 * 1024;

/// A verified token and the monotonic time ([`crate::clock::Now::mono`]) until which its
/// revocation check holds (infinite when none is required).
#[derive(Clone)]
pub struct Cached {
    pub v: Arc<VerifiedToken>,
    pub checked_until: f64,
}

pub struct TokenCache {
    cache: Bounded<Rc<str>, Cached>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            cache: Bounded::new(TOKEN_CACHE_ENTRIES, TOKEN_CACHE_BYTES),
        }
    }
}

impl TokenCache {
    pub fn get(&self, token: &str) -> Option<&Cached> {
        self.cache.get(token)
    }

    /// The cached token itself (shared by the engine's last-token copy) and its verdict.
    pub fn entry(&self, token: &str) -> Option<(&Rc<str>, &Cached)> {
        self.cache.get_key_value(token)
    }

    /// A new revocation verdict for a cached token.
    pub fn set_checked_until(&mut self, token: &str, until: f64) {
        if let Some(c) = self.cache.get_mut(token) {
            c.checked_until = until;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Cost: the token twice (the key, and a last-token copy of it when it is not shared)
    /// and its payload. A token already there takes the new verdict (and counts as new).
    pub fn insert(&mut self, token: Rc<str>, payload_len: usize, v: Cached) {
        let cost = 2 * token.len() + payload_len;
        self.cache.insert(token, v, cost);
    }

    pub fn clear(&mut self) {
        self.cache.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::check;
    use crate::policy::Policy;

    fn verified() -> Cached {
        Cached {
            v: Arc::new(check(br#"{"exp": 9999999999}"#, &Policy::default(), 0.0).unwrap()),
            checked_until: f64::INFINITY,
        }
    }

    #[test]
    fn bounded_by_entries_and_bytes() {
        let mut c = TokenCache::default();
        for i in 0..TOKEN_CACHE_ENTRIES + 10 {
            c.insert(Rc::from(format!("t{i}")), 10, verified());
        }
        assert_eq!(c.cache.len(), TOKEN_CACHE_ENTRIES);
        assert!(c.get("t0").is_none(), "oldest evicted");
        assert!(c.get(&format!("t{}", TOKEN_CACHE_ENTRIES + 9)).is_some());
        c.clear();
        let big = "x".repeat(16 * 1024);
        for i in 0..1000 {
            c.insert(Rc::from(format!("{big}{i}")), 1000, verified());
        }
        assert!(c.cache.cost() <= TOKEN_CACHE_BYTES);
        assert!(!c.is_empty());
    }
}
