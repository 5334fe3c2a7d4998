//! The per-backend verification engine: the current configuration, the verified-token
//! cache, and the last-token fast path that makes per-row accessors a comparison, not a
//! signature check. Keys of a URL come from a [`KeyProvider`] (per backend, or the
//! cluster's shared store); a literal JWKS is parsed here.
//!
//! Invariants:
//! - a cached token is re-checked for `exp`/`nbf` on every hit;
//! - no cached token survives a change of what is trusted (key source, algorithms,
//!   issuer, audience, leeway) or a change of the key set (its version);
//! - no cached verdict is served once the keys that gave it are older than `max_stale`
//!   (the current setting: lowering it applies to verdicts already cached);
//! - a cached verdict is served only while the key set that gave it is still the one the
//!   provider holds: every call compares the provider's epoch (one atomic read with the
//!   cluster's store), and past the keys' TTL the next call looks at the keys again, so a
//!   kid withdrawn from the JWKS stops verifying at the next refresh, in every backend;
//! - an unknown `kid` asks the provider for a refetch, which its rate limit may refuse;
//! - with a revocation check configured (`profile_check`), a verdict is served only while
//!   that check's answer holds: it is a step of verification ([`Revocation`]), and its
//!   verdict is kept on the cached token, so a hit costs the same with it as without.

use std::rc::Rc;
use std::sync::Arc;

use crate::claims::{self, VerifiedToken};
use crate::clock::Now;
use crate::config::ProfileCheck;
use crate::config::{Config, KeySource};
use crate::error::AuthError;
use crate::jwks::KeySet;
use crate::key_store::{KeyProvider, KeySnapshot, Refetch, SourceStatus};
use crate::token_cache::{Cached, TokenCache};
use crate::verified::{token_digest, Digest, NoVerifiedTokens, VerifiedTokens};
use crate::verify::{self, Parsed};

/// A check every verified token must also pass (Outseta's profile endpoint with
/// `outseta_auth.profile_check`): the SQL layer implements it, the engine calls it after the
/// signature and claims, and again once its answer has run out.
pub trait Revocation {
    /// Whether `token`, verified as `v`, is still accepted; `Ok(until)`: its answer holds
    /// until that wall time.
    fn check(
        &mut self,
        token: &str,
        v: &VerifiedToken,
        how: &ProfileCheck,
        now: f64,
    ) -> Result<f64, AuthError>;
}

/// No revocation check (for callers whose configuration never asks for one).
pub struct NoRevocation;

impl Revocation for NoRevocation {
    fn check(
        &mut self,
        _: &str,
        _: &VerifiedToken,
        _: &ProfileCheck,
        _: f64,
    ) -> Result<f64, AuthError> {
        Err(AuthError::config(
            "outseta_auth.profile_check",
            "no revocation check is available here",
        ))
    }
}

/// A wall-clock deadline as a monotonic one, so that a wall clock stepped back does not
/// extend it.
fn to_mono(wall_until: f64, now: Now) -> f64 {
    now.mono + (wall_until - now.wall)
}

#[derive(Default)]
pub struct Engine {
    generation: Option<u64>,
    config: Option<Arc<Config>>,
    /// [`Config::trust_digest`] of `config`.
    trust: Digest,
    /// The last token verified, byte for byte, and its result.
    last: Option<(Rc<str>, Cached)>,
    tokens: TokenCache,
    /// Cached verdicts are served only until then: the fetch time of the keys that
    /// verified them plus `max_stale` (infinite for a literal JWKS).
    trust_until: f64,
    /// (URL, version) of the key set the cached verdicts were verified with.
    seen: Option<(String, u64)>,
    /// The provider's epoch when the cached verdicts were last checked against its keys.
    checked_epoch: u64,
    /// When they must be checked again (the keys' TTL), whatever the epoch says.
    recheck_at: f64,
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
            match &self.config {
                Some(old) if old.same_trust(&cfg) => {
                    if old.timing != cfg.timing {
                        // A shorter max_stale (or TTL) applies to the verdicts already
                        // cached: look at their keys again on the next call.
                        self.recheck_at = f64::NEG_INFINITY;
                    }
                }
                _ => self.forget_tokens(),
            }
            self.trust = cfg.trust_digest();
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

    /// The cached verdict for `token`, if any, with `exp`/`nbf` re-checked against `now`;
    /// `epoch` is the provider's ([`KeyProvider::epoch`]).
    ///
    /// This is the per-row path of the accessors: the last token is compared byte for byte
    /// (no hashing, no UTF-8 validation); other cached tokens cost one hash lookup. None
    /// also when the cached verdicts must first be checked against the provider's keys
    /// (the epoch moved, or their TTL passed): [`Engine::verify_uncached`] does that, and
    /// answers from the cache again when the keys are still the same.
    pub fn cached(
        &mut self,
        token: &[u8],
        now: impl Into<Now>,
        epoch: u64,
    ) -> Option<Result<&Arc<VerifiedToken>, AuthError>> {
        let now = now.into();
        let leeway = self.config.as_ref()?.policy.leeway;
        if self.must_recheck(now.mono, epoch) {
            return None;
        }
        let last_matches = self
            .last
            .as_ref()
            .is_some_and(|(last, _)| last.as_bytes() == token);
        if !last_matches {
            let token = std::str::from_utf8(token).ok()?;
            let (key, c) = self.tokens.entry(token)?;
            self.last = Some((key.clone(), c.clone()));
        }
        let (_, c) = self.last.as_ref().expect("set above");
        if now.mono >= c.checked_until {
            return None;
        }
        self.hits += 1;
        Some(c.v.check_times(now.wall, leeway).map(|_| &c.v))
    }

    /// Verify `token` under the current configuration (call [`Engine::configure`] first),
    /// with no revocation check available (a configuration that asks for one fails).
    pub fn verify(
        &mut self,
        token: &str,
        keys: &mut dyn KeyProvider,
        now: impl Into<Now>,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        self.verify_with(token, keys, &mut NoRevocation, now)
    }

    /// As [`Engine::verify`], with the SQL layer's revocation check.
    pub fn verify_with(
        &mut self,
        token: &str,
        keys: &mut dyn KeyProvider,
        revocation: &mut dyn Revocation,
        now: impl Into<Now>,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let now = now.into();
        match self.cached(token.as_bytes(), now, keys.epoch()) {
            Some(cached) => cached.cloned(),
            None => self.verify_uncached(token, keys, revocation, &mut NoVerifiedTokens, now),
        }
    }

    /// Whether the cached verdicts must be looked at against the provider's keys before
    /// one is served: the epoch moved, the keys' TTL passed, or their trust ran out (the
    /// keys may have been refetched meanwhile: then the verdicts stay; else they go).
    /// `now`: monotonic.
    fn must_recheck(&self, now: f64, epoch: u64) -> bool {
        !self.tokens.is_empty()
            && (epoch != self.checked_epoch || now >= self.recheck_at || now > self.trust_until)
    }

    /// Look at the keys behind the cached verdicts again: a new key set (or none) drops
    /// them; the same one extends their trust to its last fetch plus max_stale (as set
    /// now). Keys are fetched only as the provider's own rules allow. Returns the keys
    /// looked at (None for a literal JWKS), for a verification that follows.
    fn recheck(
        &mut self,
        keys: &mut dyn KeyProvider,
        now: f64,
        epoch: u64,
    ) -> Result<Option<KeySnapshot>, AuthError> {
        let cfg = self.current()?;
        let KeySource::Url(url) = &cfg.source else {
            // A literal JWKS changes only with the settings, which drop the cache.
            self.checked_epoch = epoch;
            self.recheck_at = f64::INFINITY;
            return Ok(None);
        };
        let snap = match keys.keys(url, &cfg.timing, now, Refetch::No) {
            Ok(snap) => snap,
            Err(e) => {
                self.forget_tokens();
                return Err(e);
            }
        };
        self.note_version(url, snap.version);
        self.checked_epoch = epoch;
        // Look again at the keys' TTL, but not more often than a fetch may be tried.
        self.recheck_at = (snap.fetched_at + cfg.timing.ttl as f64)
            .max(now + cfg.timing.min_interval.max(1) as f64);
        if !self.tokens.is_empty() {
            self.trust_until = snap.fetched_at + cfg.timing.max_stale as f64;
            if now > self.trust_until {
                self.forget_tokens();
            }
        }
        Ok(Some(snap))
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

    /// `now`: the wall clock (shown as the literal's "fetched" time).
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

    /// The signature check of `parsed` (`token`) against `set`, unless the cluster's
    /// memory has seen this very token verify under these trust settings and this key set.
    /// Returns the digest to remember once its claims pass (None: nothing to remember).
    fn check_signature(
        &self,
        token: &str,
        parsed: &Parsed,
        set: &KeySet,
        memory: &mut dyn VerifiedTokens,
        now: f64,
    ) -> Result<Option<Digest>, AuthError> {
        if !memory.active() {
            parsed.verify_signature(set)?;
            return Ok(None);
        }
        let digest = token_digest(&self.trust, &set.digest, token);
        if memory.seen(&digest, now) {
            return Ok(None);
        }
        parsed.verify_signature(set)?;
        Ok(Some(digest))
    }

    /// Full verification of a token that [`Engine::cached`] just missed; the result is
    /// cached. Callers that already asked `cached` use this to avoid a second lookup.
    /// `memory`: the cluster's verified tokens, asked before a signature check.
    pub fn verify_uncached(
        &mut self,
        token: &str,
        keys: &mut dyn KeyProvider,
        revocation: &mut dyn Revocation,
        memory: &mut dyn VerifiedTokens,
        now: impl Into<Now>,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let clock: Now = now.into();
        let now = clock.mono;
        // The epoch before any look at the keys: a key set stored meanwhile moves it again,
        // so a verdict is never marked as checked against keys newer than its own.
        let epoch = keys.epoch();
        // One look at the keys per call: a recheck's snapshot serves the verification.
        let mut looked = None;
        if self.must_recheck(now, epoch) {
            looked = self.recheck(keys, now, epoch)?;
            if let Some(cached) = self.cached(token.as_bytes(), clock, self.checked_epoch) {
                return cached.cloned();
            }
        }
        let cfg = self.current()?;
        // A verdict whose revocation answer ran out: that check again, nothing else.
        if let Some(how) = &cfg.profile {
            if let Some((key, c)) = self
                .tokens
                .entry(token)
                .map(|(k, c)| (k.clone(), c.clone()))
            {
                c.v.check_times(clock.wall, cfg.policy.leeway)?;
                let until = to_mono(revocation.check(token, &c.v, how, clock.wall)?, clock);
                self.tokens.set_checked_until(token, until);
                self.last = Some((
                    key,
                    Cached {
                        v: c.v.clone(),
                        checked_until: until,
                    },
                ));
                return Ok(c.v);
            }
        }
        self.misses += 1;

        // Parse before any key lookup: garbage never causes network traffic.
        let parsed = verify::parse(token, &cfg.policy)?;
        // When the keys that verify it were fetched (None: a literal JWKS, always trusted).
        let (keys_fetched_at, remember) = match &cfg.source {
            KeySource::Literal(json) => {
                let set = self.literal_keys(json, clock.wall)?;
                (
                    None,
                    self.check_signature(token, &parsed, &set, memory, clock.wall)?,
                )
            }
            KeySource::Url(url) => {
                let mut snap = match looked.take() {
                    Some(snap) => snap,
                    None => keys.keys(url, &cfg.timing, now, Refetch::No)?,
                };
                self.note_version(url, snap.version);
                let remember =
                    match self.check_signature(token, &parsed, &snap.keys, memory, clock.wall) {
                        Ok(remember) => remember,
                        Err(e @ AuthError::UnknownKid { .. }) => {
                            // The issuer may have rotated keys since the last fetch.
                            let seen = snap.version;
                            let again =
                                keys.keys(url, &cfg.timing, now, Refetch::UnknownKid { seen })?;
                            self.note_version(url, again.version);
                            if again.version == snap.version {
                                return Err(e);
                            }
                            snap = again;
                            self.check_signature(token, &parsed, &snap.keys, memory, clock.wall)?
                        }
                        Err(e) => return Err(e),
                    };
                (Some(snap.fetched_at), remember)
            }
        };
        let v = Arc::new(claims::check(&parsed.payload, &cfg.policy, clock.wall)?);
        if let Some(digest) = remember {
            memory.remember(&digest, v.exp + cfg.policy.leeway as f64, clock.wall);
        }
        let trusted_until =
            keys_fetched_at.map_or(f64::INFINITY, |at| at + cfg.timing.max_stale as f64);
        if self.tokens.is_empty() {
            // The first verdict of a new cache: its keys were just looked at.
            self.trust_until = trusted_until;
            self.checked_epoch = epoch;
            self.recheck_at = keys_fetched_at.map_or(f64::INFINITY, |at| {
                (at + cfg.timing.ttl as f64).max(now + cfg.timing.min_interval.max(1) as f64)
            });
        } else {
            // Older verdicts keep the earliest bound; a new key set has already emptied
            // the cache.
            self.trust_until = self.trust_until.min(trusted_until);
        }
        // The revocation check last: only a token that verified causes a profile request.
        let checked_until = match &cfg.profile {
            Some(how) => to_mono(revocation.check(token, &v, how, clock.wall)?, clock),
            None => f64::INFINITY,
        };
        let c = Cached {
            v: v.clone(),
            checked_until,
        };
        let key: Rc<str> = Rc::from(token);
        self.tokens
            .insert(key.clone(), parsed.payload.len(), c.clone());
        self.last = Some((key, c));
        Ok(v)
    }

    /// Fetch the configured URL now, whatever the rate limit. Returns the usable keys.
    pub fn refresh(
        &mut self,
        keys: &mut dyn KeyProvider,
        now: impl Into<Now>,
    ) -> Result<usize, AuthError> {
        let now = now.into();
        let cfg = self.current()?;
        match &cfg.source {
            KeySource::Literal(json) => Ok(self.literal_keys(json, now.wall)?.keys.len()),
            KeySource::Url(url) => {
                let snap = keys.keys(url, &cfg.timing, now.mono, Refetch::Now)?;
                self.note_version(url, snap.version);
                Ok(snap.keys.keys.len())
            }
        }
    }

    /// The provider's sources, plus the configured one (a literal JWKS, or a URL not yet
    /// used).
    pub fn status(&self, keys: &dyn KeyProvider, now: impl Into<Now>) -> Vec<SourceStatus> {
        let mut out = keys.status(now.into());
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
    use crate::jwks::KeySet;
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
            profile: None,
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
        assert_eq!(
            calls(&keys),
            3,
            "a refresh was tried at each look past the TTL (t0+600, t0+DAY-60), both failed"
        );

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
        // Past the TTL the keys are looked at again (the refresh fails: the same, stale
        // keys), and the cached verdict is still served, without a second signature check.
        engine.verify(&token, &mut keys, t0 + 3000.0).unwrap();
        assert_eq!(engine.misses, 1);
        assert!(engine.cached(token.as_bytes(), t0 + 3001.0, 0).is_some());
        // The per-row path refuses to answer from the cache once the keys are too old...
        assert!(engine.cached(token.as_bytes(), t0 + 3700.0, 0).is_none());
        // ...and the full path fails closed.
        let e = engine.verify(&token, &mut keys, t0 + 3700.0).unwrap_err();
        assert_eq!(e.code(), "jwks_unavailable");
    }

    /// The cluster's memory of verified tokens, as a set; counts hits.
    #[derive(Default)]
    struct FakeMemory {
        set: std::collections::HashMap<Digest, f64>,
        hits: u32,
    }

    impl VerifiedTokens for FakeMemory {
        fn seen(&mut self, d: &Digest, now: f64) -> bool {
            let hit = self.set.get(d).is_some_and(|&until| until > now);
            self.hits += hit as u32;
            hit
        }
        fn remember(&mut self, d: &Digest, expires: f64, _now: f64) {
            self.set.insert(*d, expires);
        }
    }

    fn shared_verify(
        engine: &mut Engine,
        token: &str,
        keys: &mut dyn KeyProvider,
        memory: &mut FakeMemory,
        now: f64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        engine.verify_uncached(token, keys, &mut NoRevocation, memory, now)
    }

    #[test]
    fn a_token_is_verified_once_per_cluster() {
        let (mut a, issuer, token, t0) = setup(DAY as u64);
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        let mut memory = FakeMemory::default();
        shared_verify(&mut a, &token, &mut keys, &mut memory, t0).unwrap();
        assert_eq!((memory.set.len(), memory.hits), (1, 0));
        // Another backend: its own cache misses, the cluster's memory hits, and the claims
        // are the token's own.
        let (mut b, ..) = setup(DAY as u64);
        let v = shared_verify(&mut b, &token, &mut keys, &mut memory, t0 + 1.0).unwrap();
        assert_eq!(v.sub.as_deref(), Some("dQGxEz94"));
        assert_eq!(memory.hits, 1);
        // The claims are still checked on a hit: past exp (+ leeway) the token fails even
        // though the memory still holds it (its entry would be gone too in shared memory).
        memory
            .set
            .values_mut()
            .for_each(|until| *until = f64::INFINITY);
        let (mut c, ..) = setup(DAY as u64);
        let e = shared_verify(&mut c, &token, &mut keys, &mut memory, t0 + 31.0 * DAY);
        assert_eq!(e.unwrap_err().code(), "expired");
        assert_eq!(
            memory.hits, 2,
            "the expired token was a hit, and still refused"
        );
    }

    #[test]
    fn a_forged_token_never_hits() {
        let (mut a, issuer, token, t0) = setup(DAY as u64);
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        let mut memory = FakeMemory::default();
        shared_verify(&mut a, &token, &mut keys, &mut memory, t0).unwrap();
        // The genuine header and payload with another signature; and another payload
        // with the genuine signature.
        let (signed, sig) = token.rsplit_once('.').unwrap();
        // One character in the middle (the last one carries padding bits).
        let mid = sig.len() / 2;
        let flip = if &sig[mid..mid + 1] == "A" { "B" } else { "A" };
        let other_sig = format!("{}{flip}{}", &sig[..mid], &sig[mid + 1..]);
        let other = issuer.mint(&long_lived("someone-else", "wZmNw7Q2"));
        let (other_signed, _) = other.rsplit_once('.').unwrap();
        for forged in [
            format!("{signed}.{other_sig}"),
            format!("{other_signed}.{sig}"),
        ] {
            let (mut b, ..) = setup(DAY as u64);
            let e = shared_verify(&mut b, &forged, &mut keys, &mut memory, t0).unwrap_err();
            assert_eq!(e.code(), "bad_signature", "{forged}");
        }
        assert_eq!(memory.hits, 0);
    }

    #[test]
    fn other_trust_settings_or_another_key_set_never_share() {
        let (mut a, mut issuer, _, t0) = setup(DAY as u64);
        issuer.audience = Some("test.outseta.com".into());
        let token = issuer.mint(&long_lived("dQGxEz94", "wZmNw7Q2"));
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        let mut memory = FakeMemory::default();
        shared_verify(&mut a, &token, &mut keys, &mut memory, t0).unwrap();
        // The same token accepted under another audience (or issuer) list: verified again.
        for policy in [
            Policy::new("RS256", "", "test.outseta.com", 30).unwrap(),
            Policy::new("RS256", "https://test.outseta.com", "", 30).unwrap(),
        ] {
            let mut b = Engine::new();
            b.configure(1, || {
                Ok(Config {
                    policy: policy.clone(),
                    ..config(DAY as u64)
                })
            })
            .unwrap();
            shared_verify(&mut b, &token, &mut keys, &mut memory, t0).unwrap();
        }
        assert_eq!((memory.hits, memory.set.len()), (0, 3));
        // A key added to the JWKS (the old one kept): another key set, verified again.
        issuer.rotate(true);
        let mut keys2 = LocalKeys::new(FakeFetcher::serving(&issuer));
        let (mut c, ..) = setup(DAY as u64);
        shared_verify(&mut c, &token, &mut keys2, &mut memory, t0).unwrap();
        assert_eq!((memory.hits, memory.set.len()), (0, 4));
    }

    /// A provider standing in for the cluster's store: the test sets its key set and
    /// moves its epoch, as the background worker does.
    struct FakeStore {
        snap: KeySnapshot,
        epoch: u64,
        calls: u32,
    }

    impl FakeStore {
        fn snapshot(issuer: &Issuer, version: u64, now: f64) -> KeySnapshot {
            let jwks = issuer.jwks().to_string();
            KeySnapshot {
                keys: Arc::new(KeySet::parse(jwks.as_bytes()).unwrap()),
                fetched_at: now,
                version,
            }
        }
        fn holding(issuer: &Issuer, version: u64, now: f64) -> Self {
            FakeStore {
                snap: Self::snapshot(issuer, version, now),
                epoch: 1,
                calls: 0,
            }
        }
        /// The worker stored a new key set: version and epoch move.
        fn set(&mut self, issuer: &Issuer, version: u64, now: f64) {
            self.snap = Self::snapshot(issuer, version, now);
            self.epoch += 1;
        }
    }

    impl KeyProvider for FakeStore {
        fn keys(
            &mut self,
            _url: &str,
            _timing: &Timing,
            _now: f64,
            _refetch: Refetch,
        ) -> Result<KeySnapshot, AuthError> {
            self.calls += 1;
            Ok(self.snap.clone())
        }
        fn status(&self, _now: Now) -> Vec<SourceStatus> {
            vec![]
        }
        fn epoch(&self) -> u64 {
            self.epoch
        }
    }

    #[test]
    fn a_withdrawn_kid_stops_verifying_at_the_next_refresh_even_from_the_cache() {
        let (mut engine, mut issuer, token, t0) = setup(DAY as u64);
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        engine.verify(&token, &mut keys, t0).unwrap();
        // The issuer withdraws the (compromised) key: its JWKS no longer lists the kid.
        issuer.rotate(false);
        keys.fetcher().serve(&issuer);
        // Within the keys' TTL (300 s) the cached verdict stands: nobody looked yet.
        engine.verify(&token, &mut keys, t0 + 100.0).unwrap();
        assert_eq!(calls(&keys), 1);
        // Past it, the next call (a cache hit for 0.2.0) looks at the keys again.
        assert!(engine.cached(token.as_bytes(), t0 + 301.0, 0).is_none());
        let e = engine.verify(&token, &mut keys, t0 + 301.0).unwrap_err();
        assert_eq!(e.code(), "unknown_kid");
        assert_eq!(calls(&keys), 2, "one refresh");
    }

    #[test]
    fn a_new_key_set_in_the_store_reaches_cached_verdicts_at_once() {
        let (mut engine, mut issuer, token, t0) = setup(DAY as u64);
        let mut store = FakeStore::holding(&issuer, 1, t0);
        engine.verify(&token, &mut store, t0).unwrap();
        assert!(engine
            .cached(token.as_bytes(), t0 + 1.0, store.epoch())
            .is_some());
        // The epoch moves but the key set is the same (another URL changed): still a hit,
        // after one look at the store, and no second signature check.
        store.epoch += 1;
        assert!(engine
            .cached(token.as_bytes(), t0 + 2.0, store.epoch())
            .is_none());
        engine.verify(&token, &mut store, t0 + 2.0).unwrap();
        assert_eq!((engine.misses, store.calls), (1, 2));
        assert!(engine
            .cached(token.as_bytes(), t0 + 3.0, store.epoch())
            .is_some());
        // The worker stores a key set without the token's kid: the next call refuses it.
        issuer.rotate(false);
        store.set(&issuer, 2, t0 + 4.0);
        assert!(engine
            .cached(token.as_bytes(), t0 + 5.0, store.epoch())
            .is_none());
        let e = engine.verify(&token, &mut store, t0 + 5.0).unwrap_err();
        assert_eq!(e.code(), "unknown_kid");
    }

    #[test]
    fn a_lower_max_stale_applies_to_verdicts_already_cached() {
        let issuer = Issuer::new("https://test.outseta.com");
        let token = issuer.mint(&long_lived("dQGxEz94", "wZmNw7Q2"));
        let with = |ttl: u64, max_stale: u64| {
            let mut c = config(max_stale);
            c.timing.ttl = ttl;
            c.timing.min_interval = 10;
            c
        };
        let mut engine = Engine::new();
        engine.configure(1, || Ok(with(30, DAY as u64))).unwrap();
        let t0 = outseta_dev::now() as f64;
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        engine.verify(&token, &mut keys, t0).unwrap();
        keys.fetcher().fail();
        engine.verify(&token, &mut keys, t0 + 100.0).unwrap();
        // The operator lowers jwks_max_stale to 60 s; nothing else changes.
        engine.configure(2, || Ok(with(30, 60))).unwrap();
        assert!(engine.cached(token.as_bytes(), t0 + 101.0, 0).is_none());
        let e = engine.verify(&token, &mut keys, t0 + 101.0).unwrap_err();
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
        assert!(engine.cached(token.as_bytes(), t0 + 32.0, 0).is_none());
        let e = engine.verify(&token, &mut keys, t0 + 33.0).unwrap_err();
        assert_eq!(e.code(), "unknown_kid");
        assert_eq!(calls(&keys), 2, "rate limited again");
    }

    /// Counts its checks; refuses while `refuse` is set; answers hold for 60 s.
    #[derive(Default)]
    struct FakeRevocation {
        checks: u32,
        refuse: bool,
    }

    impl Revocation for FakeRevocation {
        fn check(
            &mut self,
            _: &str,
            _: &VerifiedToken,
            how: &ProfileCheck,
            now: f64,
        ) -> Result<f64, AuthError> {
            self.checks += 1;
            if self.refuse {
                Err(AuthError::Revoked { status: 401 })
            } else {
                Ok(now + how.ttl)
            }
        }
    }

    #[test]
    fn the_revocation_verdict_is_kept_on_the_cached_token_until_its_ttl() {
        let (mut engine, issuer, token, now) = setup(86_400);
        let mut cfg = config(86_400);
        cfg.profile = Some(ProfileCheck {
            url: "https://test.outseta.com/api/v1/profile?fields=*".into(),
            ttl: 60.0,
            limits: FetchLimits::default(),
        });
        engine.configure(2, || Ok(cfg)).unwrap();
        let mut keys = LocalKeys::new(FakeFetcher::serving(&issuer));
        let mut r = FakeRevocation::default();
        for i in 0..1000 {
            engine
                .verify_with(&token, &mut keys, &mut r, now + i as f64 * 0.01)
                .unwrap();
        }
        assert_eq!(r.checks, 1, "1,000 calls, one check: a hit is a comparison");
        assert_eq!(engine.misses, 1);
        // Past the answer's TTL: the check again, not the signature.
        r.refuse = true;
        let e = engine
            .verify_with(&token, &mut keys, &mut r, now + 61.0)
            .unwrap_err();
        assert!(matches!(e, AuthError::Revoked { .. }), "{e:?}");
        assert_eq!((r.checks, engine.misses), (2, 1));
        // Refused: never served from the cache.
        assert!(engine
            .verify_with(&token, &mut keys, &mut r, now + 61.5)
            .is_err());
        assert_eq!(r.checks, 3);
        // Turning the check off is a change of what is trusted: the verdicts go.
        engine.configure(3, || Ok(config(86_400))).unwrap();
        assert!(engine
            .verify_with(&token, &mut keys, &mut r, now + 62.0)
            .is_ok());
        assert_eq!((r.checks, engine.misses), (3, 2));
    }
}
