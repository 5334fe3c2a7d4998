//! The per-backend verification engine: the current configuration, the verified-token
//! cache, and the last-token fast path that makes per-row accessors a comparison, not a
//! signature check. Keys of a URL come from a [`KeyProvider`] (per backend, or the
//! cluster's shared store); a literal JWKS is parsed here.
//!
//! Invariants:
//! - a cached token is re-checked for `exp`/`nbf` on every hit;
//! - no cached token survives a change of what is trusted (key source, algorithms,
//!   issuer, audience, leeway) or a change of the key set (its version);
//! - no cached verdict is served once the keys that gave it are older than `max_stale`;
//! - an unknown `kid` asks the provider for a refetch, which its rate limit may refuse.

use std::sync::Arc;

use crate::claims::{self, VerifiedToken};
use crate::config::{Config, KeySource};
use crate::error::AuthError;
use crate::jwks::KeySet;
use crate::key_store::{KeyProvider, Refetch, SourceStatus};
use crate::token_cache::TokenCache;
use crate::verify;

#[derive(Default)]
pub struct Engine {
    generation: Option<u64>,
    config: Option<Arc<Config>>,
    /// The last token verified, byte for byte, and its result.
    last: Option<(Box<str>, Arc<VerifiedToken>)>,
    tokens: TokenCache,
    /// Cached verdicts are served only until then: the fetch time of the keys that
    /// verified them plus `max_stale` (infinite for a literal JWKS).
    trust_until: f64,
    /// (URL, version) of the key set the cached verdicts were verified with.
    seen: Option<(String, u64)>,
    /// A literal JWKS, parsed once per text.
    literal: Option<(String, Arc<KeySet>, f64)>,
    pub hits: u64,
    pub misses: u64,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Make `generation`'s configuration current. `build` runs only when the generation
    /// changed; a build error is returned every time (it is not cached), so a broken
    /// setting keeps failing loudly until fixed.
    pub fn configure(
        &mut self,
        generation: u64,
        build: impl FnOnce() -> Result<Config, AuthError>,
    ) -> Result<&Config, AuthError> {
        if self.generation != Some(generation) || self.config.is_none() {
            let cfg = build()?;
            if !self.config.as_ref().is_some_and(|old| old.same_trust(&cfg)) {
                self.forget_tokens();
            }
            self.config = Some(Arc::new(cfg));
            self.generation = Some(generation);
        }
        Ok(self.config.as_deref().expect("set above"))
    }

    pub fn config(&self) -> Option<&Config> {
        self.config.as_deref()
    }

    pub fn forget_tokens(&mut self) {
        self.tokens.clear();
        self.last = None;
        self.trust_until = 0.0;
    }

    /// The cached verdict for `token`, if any, with `exp`/`nbf` re-checked against `now`.
    ///
    /// This is the per-row path of the accessors: the last token is compared byte for byte
    /// (no hashing, no UTF-8 validation); other cached tokens cost one hash lookup.
    pub fn cached(
        &mut self,
        token: &[u8],
        now: f64,
    ) -> Option<Result<Arc<VerifiedToken>, AuthError>> {
        let leeway = self.config.as_ref()?.policy.leeway;
        if now > self.trust_until {
            // The keys behind a cached verdict are older than max_stale: verify afresh
            // (which refreshes the keys, or fails closed), starting a new cache.
            self.forget_tokens();
            return None;
        }
        if let Some((last, v)) = &self.last {
            if last.as_bytes() == token {
                self.hits += 1;
                return Some(v.check_times(now, leeway).map(|_| v.clone()));
            }
        }
        let token = std::str::from_utf8(token).ok()?;
        let v = self.tokens.get(token)?.clone();
        self.hits += 1;
        self.last = Some((token.into(), v.clone()));
        Some(v.check_times(now, leeway).map(|_| v))
    }

    /// Verify `token` under the current configuration (call [`Engine::configure`] first).
    pub fn verify(
        &mut self,
        token: &str,
        keys: &mut dyn KeyProvider,
        now: f64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        match self.cached(token.as_bytes(), now) {
            Some(cached) => cached,
            None => self.verify_uncached(token, keys, now),
        }
    }

    fn current(&self) -> Result<Arc<Config>, AuthError> {
        self.config
            .clone()
            .ok_or_else(|| AuthError::config("outseta_auth", "the verifier is not configured"))
    }

    /// Note the key set version about to be used; a new one drops every cached verdict.
    fn note_version(&mut self, url: &str, version: u64) {
        if !self
            .seen
            .as_ref()
            .is_some_and(|(u, v)| u == url && *v == version)
        {
            self.forget_tokens();
            self.seen = Some((url.to_string(), version));
        }
    }

    fn literal_keys(&mut self, json: &str, now: f64) -> Result<Arc<KeySet>, AuthError> {
        if let Some((text, keys, _)) = &self.literal {
            if text == json {
                return Ok(keys.clone());
            }
        }
        let set = KeySet::parse(json.as_bytes())
            .map_err(|reason| AuthError::config("outseta_auth.jwks", reason))?;
        let keys = Arc::new(set);
        self.literal = Some((json.to_string(), keys.clone(), now));
        Ok(keys)
    }

    /// Full verification of a token that [`Engine::cached`] just missed; the result is
    /// cached. Callers that already asked `cached` use this to avoid a second lookup.
    pub fn verify_uncached(
        &mut self,
        token: &str,
        keys: &mut dyn KeyProvider,
        now: f64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let cfg = self.current()?;
        self.misses += 1;

        // Parse before any key lookup: garbage never causes network traffic.
        let parsed = verify::parse(token, &cfg.policy)?;
        let trusted_until = match &cfg.source {
            KeySource::Literal(json) => {
                let set = self.literal_keys(json, now)?;
                parsed.verify_signature(&set)?;
                f64::INFINITY
            }
            KeySource::Url(url) => {
                let mut snap = keys.keys(url, &cfg.timing, now, Refetch::No)?;
                self.note_version(url, snap.version);
                if let Err(e) = parsed.verify_signature(&snap.keys) {
                    let AuthError::UnknownKid { .. } = e else {
                        return Err(e);
                    };
                    // The issuer may have rotated keys since the last fetch.
                    let again = keys.keys(url, &cfg.timing, now, Refetch::IfAllowed)?;
                    self.note_version(url, again.version);
                    if again.version == snap.version {
                        return Err(e);
                    }
                    parsed.verify_signature(&again.keys)?;
                    snap = again;
                }
                snap.fetched_at + cfg.timing.max_stale as f64
            }
        };
        let v = Arc::new(claims::check(&parsed.payload, &cfg.policy, now)?);
        self.trust_until = if self.tokens.is_empty() {
            trusted_until
        } else {
            // Older verdicts keep the earliest bound; a new key set has already emptied
            // the cache.
            self.trust_until.min(trusted_until)
        };
        self.tokens.insert(token, parsed.payload.len(), v.clone());
        self.last = Some((token.into(), v.clone()));
        Ok(v)
    }

    /// Fetch the configured URL now, whatever the rate limit. Returns the usable keys.
    pub fn refresh(&mut self, keys: &mut dyn KeyProvider, now: f64) -> Result<usize, AuthError> {
        let cfg = self.current()?;
        match &cfg.source {
            KeySource::Literal(json) => Ok(self.literal_keys(json, now)?.keys.len()),
            KeySource::Url(url) => {
                let snap = keys.keys(url, &cfg.timing, now, Refetch::Now)?;
                self.note_version(url, snap.version);
                Ok(snap.keys.keys.len())
            }
        }
    }

    /// The provider's sources, plus the configured one (a literal JWKS, or a URL not yet
    /// used).
    pub fn status(&self, keys: &dyn KeyProvider, now: f64) -> Vec<SourceStatus> {
        let mut out = keys.status(now);
        if let Some((_, set, parsed_at)) = &self.literal {
            let mut st = SourceStatus {
                source: KeySource::Literal(String::new()).label().to_string(),
                fetched_at: Some(*parsed_at),
                ..Default::default()
            };
            st.describe_keys(set);
            out.push(st);
        }
        if let Some(cfg) = &self.config {
            let label = cfg.source.label();
            if !out.iter().any(|s| s.source == label) {
                out.push(SourceStatus {
                    source: label.to_string(),
                    ..Default::default()
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use outseta_dev::{Issuer, TokenRequest};

    use super::*;
    use crate::config::Timing;
    use crate::fetch::{FetchLimits, Fetched, Fetcher};
    use crate::key_store::LocalKeys;
    use crate::policy::Policy;

    const URL: &str = "https://test.outseta.com/.well-known/jwks";
    const DAY: f64 = 86_400.0;

    /// Serves a fixed JWKS, or fails, and counts calls: no network, no sleeps.
    struct FakeFetcher {
        body: RefCell<Result<Vec<u8>, String>>,
        calls: Cell<u32>,
    }

    impl FakeFetcher {
        fn serving(issuer: &Issuer) -> Self {
            FakeFetcher {
                body: RefCell::new(Ok(issuer.jwks().to_string().into_bytes())),
                calls: Cell::new(0),
            }
        }
        fn fail(&self) {
            *self.body.borrow_mut() = Err("HTTP 503".into());
        }
        fn serve(&self, issuer: &Issuer) {
            *self.body.borrow_mut() = Ok(issuer.jwks().to_string().into_bytes());
        }
    }

    impl Fetcher for FakeFetcher {
        fn fetch(&self, _url: &str, _limits: FetchLimits) -> Result<Fetched, String> {
            self.calls.set(self.calls.get() + 1);
            self.body.borrow().clone().map(|body| Fetched {
                body,
                max_age: None,
            })
        }
    }

    fn config(max_stale: u64) -> Config {
        Config {
            source: KeySource::Url(URL.into()),
            policy: Policy::default(),
            timing: Timing {
                ttl: 300,
                min_interval: 30,
                max_stale,
                limits: FetchLimits::default(),
            },
        }
    }

    fn long_lived(sub: &str, account: &str) -> TokenRequest {
        let mut req = TokenRequest::new(sub, account);
        req.expires_in = 30 * 86_400;
        req
    }

    fn setup(max_stale: u64) -> (Engine, Issuer, String, f64) {
        let issuer = Issuer::new("https://test.outseta.com");
        let token = issuer.mint(&long_lived("dQGxEz94", "wZmNw7Q2"));
        let mut engine = Engine::new();
        engine.configure(1, || Ok(config(max_stale))).unwrap();
        (engine, issuer, token, outseta_dev::now() as f64)
    }

    fn calls(keys: &LocalKeys<FakeFetcher>) -> u32 {
        keys.fetcher().calls.get()
    }

    #[test]
    fn stale_keys_serve_until_max_stale_then_fail_closed() {
        let (mut engine, issuer, token, t0) = setup(DAY as u64);
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        engine.verify(&token, &mut keys, t0).unwrap();
        keys.fetcher().fail();

        // Past the TTL the refresh fails: stale-if-error, and the cached verdict holds.
        engine.verify(&token, &mut keys, t0 + 600.0).unwrap();
        let fresh = issuer.mint(&long_lived("DQ2b7wmV", "y9gE3kWj"));
        engine.verify(&fresh, &mut keys, t0 + DAY - 60.0).unwrap();
        assert_eq!(calls(&keys), 2, "one failed refresh was attempted");

        // Past max_stale: the keys are dropped, and so are the cached verdicts.
        for t in [&token, &fresh] {
            let e = engine.verify(t, &mut keys, t0 + DAY + 60.0).unwrap_err();
            assert_eq!(e.code(), "jwks_unavailable");
            assert!(format!("{e}").contains("jwks_max_stale"), "{e}");
        }
        let status = &engine.status(&keys, t0)[0];
        assert!(status.keys.is_empty());
        assert!(
            status
                .last_error
                .as_deref()
                .unwrap()
                .contains("jwks_max_stale"),
            "{:?}",
            status.last_error
        );

        // A successful fetch restores service.
        keys.fetcher().serve(&issuer);
        engine.verify(&token, &mut keys, t0 + DAY + 3600.0).unwrap();
        assert_eq!(engine.status(&keys, t0)[0].last_error, None);
    }

    #[test]
    fn a_cached_verdict_is_not_served_past_max_stale() {
        let (mut engine, issuer, token, t0) = setup(3600);
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        engine.verify(&token, &mut keys, t0).unwrap();
        keys.fetcher().fail();
        assert!(engine.cached(token.as_bytes(), t0 + 3000.0).is_some());
        // The per-row path refuses to answer from the cache once the keys are too old...
        assert!(engine.cached(token.as_bytes(), t0 + 3700.0).is_none());
        // ...and the full path fails closed.
        let e = engine.verify(&token, &mut keys, t0 + 3700.0).unwrap_err();
        assert_eq!(e.code(), "jwks_unavailable");
    }

    #[test]
    fn refreshed_keys_extend_trust() {
        let (mut engine, issuer, token, t0) = setup(3600);
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        engine.verify(&token, &mut keys, t0).unwrap();
        // Each time the cached verdict's keys pass max_stale, a miss refetches them
        // successfully and trust is extended: long after the first max_stale, the token
        // still verifies, with one fetch per period.
        for k in 1..5 {
            let t = t0 + k as f64 * 3700.0;
            engine.verify(&token, &mut keys, t).unwrap();
            assert_eq!(calls(&keys), 1 + k);
        }
    }

    #[test]
    fn unknown_kids_refetch_once_per_interval_and_rotation_drops_verdicts() {
        let (mut engine, mut issuer, token, t0) = setup(DAY as u64);
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        engine.verify(&token, &mut keys, t0).unwrap();
        // A token signed with a key the store has not seen yet.
        issuer.rotate(false);
        let rotated = issuer.mint(&long_lived("dQGxEz94", "wZmNw7Q2"));
        // The rate limit holds the refetch back (the first fetch was just now).
        let e = engine.verify(&rotated, &mut keys, t0 + 10.0).unwrap_err();
        assert_eq!(e.code(), "unknown_kid");
        assert_eq!(calls(&keys), 1);
        // After the interval an unknown kid refetches and the new key verifies; the old
        // key is gone, and so is the verdict it gave.
        keys.fetcher().serve(&issuer);
        engine.verify(&rotated, &mut keys, t0 + 31.0).unwrap();
        assert_eq!(calls(&keys), 2);
        assert!(engine.cached(token.as_bytes(), t0 + 32.0).is_none());
        let e = engine.verify(&token, &mut keys, t0 + 33.0).unwrap_err();
        assert_eq!(e.code(), "unknown_kid");
        assert_eq!(calls(&keys), 2, "rate limited again");
    }
}
