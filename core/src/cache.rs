//! The per-backend verification engine: JWKS cache (per source), verified-token cache,
//! and the last-token fast path that makes per-row accessors a comparison, not a
//! signature check.
//!
//! Invariants:
//! - a cached token is re-checked for `exp`/`nbf` on every hit;
//! - no cached token survives a change of what is trusted (key source, algorithms,
//!   issuer, audience, leeway) or a change of the fetched key set;
//! - an unknown `kid` causes at most one fetch per `min_interval`, and so does a failing
//!   JWKS server; while keys are cached they keep working (stale-if-error), but never longer
//!   than `max_stale` after the last successful fetch: then they are dropped and
//!   verification fails closed, cached verdicts included.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use crate::claims::{self, VerifiedToken};
use crate::error::AuthError;
use crate::fetch::{validate_url, FetchLimits, Fetcher};
use crate::jwks::KeySet;
use crate::policy::Policy;
use crate::verify;

/// Where keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// A literal JWKS document (setting `outseta_auth.jwks`).
    Literal(String),
    /// A URL to fetch it from (`outseta_auth.jwks_url`, or derived from `outseta_auth.domain`).
    Url(String),
}

impl KeySource {
    pub fn label(&self) -> &str {
        match self {
            KeySource::Literal(_) => "outseta_auth.jwks (literal)",
            KeySource::Url(u) => u,
        }
    }
}

/// Everything verification depends on, built from the settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: KeySource,
    pub policy: Policy,
    /// Seconds a fetched key set is fresh when the server sends no `max-age`.
    pub ttl: u64,
    /// Minimum seconds between two fetch attempts of one URL.
    pub min_interval: u64,
    /// Seconds fetched keys may be used after the last successful fetch while refreshes
    /// fail (`outseta_auth.jwks_max_stale`); past it they are dropped.
    pub max_stale: u64,
    pub limits: FetchLimits,
}

impl Config {
    fn same_trust(&self, other: &Config) -> bool {
        self.source == other.source && self.policy == other.policy
    }
}

/// Upper bound on how long a `Cache-Control: max-age` may keep keys.
pub const MAX_TTL: u64 = 24 * 3600;
pub const TOKEN_CACHE_ENTRIES: usize = 1024;
/// Approximate bytes the token cache may hold (tokens may be up to 16 KiB each).
pub const TOKEN_CACHE_BYTES: usize = 4 * 1024 * 1024;
const MAX_SOURCES: usize = 8;

#[derive(Debug, Clone)]
pub struct SourceStatus {
    pub source: String,
    /// (kid, alg label) of usable keys.
    pub keys: Vec<(Option<String>, String)>,
    /// (kid, reason) of keys set aside.
    pub ignored: Vec<(Option<String>, String)>,
    pub fetched_at: Option<f64>,
    pub expires_at: Option<f64>,
    pub last_error: Option<String>,
    pub fetch_count: u64,
}

#[derive(Default)]
struct SourceState {
    source: String,
    body: Vec<u8>,
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<f64>,
    expires_at: Option<f64>,
    last_attempt: Option<f64>,
    last_error: Option<String>,
    /// When keys were dropped for being older than `max_stale`, and how old they were.
    dropped_stale: Option<(f64, u64)>,
    fetch_count: u64,
}

#[derive(Default)]
struct TokenCache {
    map: HashMap<Rc<str>, Arc<VerifiedToken>>,
    order: VecDeque<(Rc<str>, usize)>,
    bytes: usize,
}

impl TokenCache {
    fn get(&self, token: &str) -> Option<&Arc<VerifiedToken>> {
        self.map.get(token)
    }

    fn insert(&mut self, token: &str, payload_len: usize, v: Arc<VerifiedToken>) {
        let cost = 2 * token.len() + payload_len;
        if cost > TOKEN_CACHE_BYTES || self.map.contains_key(token) {
            return;
        }
        while self.map.len() >= TOKEN_CACHE_ENTRIES || self.bytes + cost > TOKEN_CACHE_BYTES {
            let Some((old, c)) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
            self.bytes -= c;
        }
        let key: Rc<str> = Rc::from(token);
        self.map.insert(key.clone(), v);
        self.order.push_back((key, cost));
        self.bytes += cost;
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.bytes = 0;
    }
}

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
    sources: Vec<SourceState>,
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
        fetcher: &dyn Fetcher,
        now: f64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        match self.cached(token.as_bytes(), now) {
            Some(cached) => cached,
            None => self.verify_uncached(token, fetcher, now),
        }
    }

    /// Full verification of a token that [`Engine::cached`] just missed; the result is
    /// cached. Callers that already asked `cached` use this to avoid a second lookup.
    pub fn verify_uncached(
        &mut self,
        token: &str,
        fetcher: &dyn Fetcher,
        now: f64,
    ) -> Result<Arc<VerifiedToken>, AuthError> {
        let cfg = self
            .config
            .clone()
            .ok_or_else(|| AuthError::config("outseta_auth", "the verifier is not configured"))?;
        self.misses += 1;

        // Parse before any key lookup: garbage never causes network traffic.
        let parsed = verify::parse(token, &cfg.policy)?;
        let mut keys = self.keys(&cfg, fetcher, now, false)?;
        match parsed.verify_signature(&keys) {
            Err(AuthError::UnknownKid { .. }) if self.may_refetch(&cfg, now) => {
                // The issuer may have rotated keys since our last fetch.
                keys = self.keys(&cfg, fetcher, now, true)?;
                parsed.verify_signature(&keys)?;
            }
            other => other?,
        }
        let v = Arc::new(claims::check(&parsed.payload, &cfg.policy, now)?);
        let trusted_until = match &cfg.source {
            KeySource::Literal(_) => f64::INFINITY,
            KeySource::Url(url) => self
                .sources
                .iter()
                .find(|s| s.source == *url)
                .and_then(|s| s.fetched_at)
                .map_or(now, |f| f + cfg.max_stale as f64),
        };
        if self.tokens.map.is_empty() {
            self.trust_until = trusted_until;
        } else {
            // Older verdicts keep the earliest bound; a fetch that changed the keys has
            // already emptied the cache.
            self.trust_until = self.trust_until.min(trusted_until);
        }
        self.tokens.insert(token, parsed.payload.len(), v.clone());
        self.last = Some((token.into(), v.clone()));
        Ok(v)
    }

    /// Fetch the configured URL now (subject to nothing but the URL check).
    pub fn refresh(&mut self, fetcher: &dyn Fetcher, now: f64) -> Result<usize, AuthError> {
        let cfg = self
            .config
            .clone()
            .ok_or_else(|| AuthError::config("outseta_auth", "the verifier is not configured"))?;
        Ok(self.keys(&cfg, fetcher, now, true)?.keys.len())
    }

    /// One entry per key source this backend has used, plus the configured one.
    pub fn status(&self) -> Vec<SourceStatus> {
        let mut out: Vec<SourceStatus> = self
            .sources
            .iter()
            .map(|s| SourceStatus {
                source: s.source.clone(),
                keys: s
                    .keys
                    .iter()
                    .flat_map(|k| {
                        k.keys
                            .iter()
                            .map(|k| (k.kid.clone(), k.alg_label().to_string()))
                    })
                    .collect(),
                ignored: s
                    .keys
                    .iter()
                    .flat_map(|k| k.ignored.iter().map(|i| (i.kid.clone(), i.reason.clone())))
                    .collect(),
                fetched_at: s.fetched_at,
                expires_at: s.expires_at,
                last_error: match (&s.last_error, s.dropped_stale) {
                    (e, Some((at, age))) => Some(format!(
                        "{}keys dropped at {at:.0} (unix time): their last successful fetch was {age} s earlier, more than outseta_auth.jwks_max_stale",
                        e.as_ref().map(|e| format!("{e}; ")).unwrap_or_default(),
                    )),
                    (e, None) => e.clone(),
                },
                fetch_count: s.fetch_count,
            })
            .collect();
        if let Some(cfg) = &self.config {
            let label = cfg.source.label();
            if !out.iter().any(|s| s.source == label) {
                out.push(SourceStatus {
                    source: label.to_string(),
                    keys: vec![],
                    ignored: vec![],
                    fetched_at: None,
                    expires_at: None,
                    last_error: None,
                    fetch_count: 0,
                });
            }
        }
        out
    }

    fn may_refetch(&self, cfg: &Config, now: f64) -> bool {
        match &cfg.source {
            KeySource::Literal(_) => false,
            KeySource::Url(url) => self
                .sources
                .iter()
                .find(|s| s.source == *url)
                .and_then(|s| s.last_attempt)
                .is_none_or(|t| now - t >= cfg.min_interval as f64),
        }
    }

    fn source_index(&mut self, label: &str) -> usize {
        if let Some(i) = self.sources.iter().position(|s| s.source == label) {
            return i;
        }
        if self.sources.len() >= MAX_SOURCES {
            self.sources.remove(0);
        }
        self.sources.push(SourceState {
            source: label.to_string(),
            ..Default::default()
        });
        self.sources.len() - 1
    }

    fn keys(
        &mut self,
        cfg: &Config,
        fetcher: &dyn Fetcher,
        now: f64,
        force: bool,
    ) -> Result<Arc<KeySet>, AuthError> {
        let i = self.source_index(cfg.source.label());
        match &cfg.source {
            KeySource::Literal(json) => {
                let st = &mut self.sources[i];
                if st.keys.is_none() || st.body != json.as_bytes() {
                    let set = KeySet::parse(json.as_bytes())
                        .map_err(|reason| AuthError::config("outseta_auth.jwks", reason))?;
                    st.body = json.as_bytes().to_vec();
                    st.keys = Some(Arc::new(set));
                    st.fetched_at = Some(now);
                }
                Ok(st.keys.clone().expect("set above"))
            }
            KeySource::Url(url) => {
                validate_url(url, "outseta_auth.jwks_url")?;
                let st = &self.sources[i];
                if !force {
                    if let (Some(keys), Some(exp)) = (&st.keys, st.expires_at) {
                        if now < exp {
                            return Ok(keys.clone());
                        }
                    }
                }
                let recently_tried = st
                    .last_attempt
                    .is_some_and(|t| now - t < cfg.min_interval as f64);
                if recently_tried && !force {
                    // Rate limit: serve what we have (stale), or the last failure.
                    return self.stale_or_error(i, url, cfg, now);
                }
                self.fetch_into(i, url, cfg, fetcher, now)
            }
        }
    }

    fn fetch_into(
        &mut self,
        i: usize,
        url: &str,
        cfg: &Config,
        fetcher: &dyn Fetcher,
        now: f64,
    ) -> Result<Arc<KeySet>, AuthError> {
        self.sources[i].last_attempt = Some(now);
        self.sources[i].fetch_count += 1;
        let result = fetcher
            .fetch(url, cfg.limits)
            .and_then(|f| KeySet::parse(&f.body).map(|set| (f, set)));
        match result {
            Ok((fetched, set)) => {
                let changed = self.sources[i].body != fetched.body;
                if changed {
                    // Keys were added or removed: nothing verified with the old set stays cached.
                    self.forget_tokens();
                }
                let ttl = fetched
                    .max_age
                    .map(|a| a.clamp(cfg.min_interval, MAX_TTL))
                    .unwrap_or(cfg.ttl);
                let st = &mut self.sources[i];
                st.body = fetched.body;
                st.keys = Some(Arc::new(set));
                st.fetched_at = Some(now);
                st.expires_at = Some(now + ttl as f64);
                st.last_error = None;
                st.dropped_stale = None;
                Ok(st.keys.clone().expect("set above"))
            }
            Err(cause) => {
                self.sources[i].last_error = Some(cause);
                self.stale_or_error(i, url, cfg, now)
            }
        }
    }

    /// After a failed or rate-limited fetch: the cached keys while they are younger than
    /// `max_stale`; past it they are dropped (with every verdict they gave) and the
    /// source fails closed until a fetch succeeds.
    fn stale_or_error(
        &mut self,
        i: usize,
        url: &str,
        cfg: &Config,
        now: f64,
    ) -> Result<Arc<KeySet>, AuthError> {
        let st = &mut self.sources[i];
        if let Some(keys) = &st.keys {
            let age = st.fetched_at.map_or(f64::INFINITY, |f| now - f);
            if age <= cfg.max_stale as f64 {
                return Ok(keys.clone());
            }
            st.keys = None;
            st.body.clear();
            st.expires_at = None;
            st.dropped_stale = Some((now, age as u64));
            self.forget_tokens();
        }
        let st = &self.sources[i];
        let mut cause = st.last_error.clone().unwrap_or_else(|| "no keys".into());
        if let Some((_, age)) = st.dropped_stale {
            cause = format!(
                "{cause}; the cached keys were dropped: their last successful fetch was {age} s ago, more than outseta_auth.jwks_max_stale ({} s)",
                cfg.max_stale
            );
        }
        Err(AuthError::JwksUnavailable {
            url: url.to_string(),
            cause,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use outseta_dev::{Issuer, TokenRequest};

    use super::*;
    use crate::fetch::Fetched;

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
            ttl: 300,
            min_interval: 30,
            max_stale,
            limits: FetchLimits::default(),
        }
    }

    fn setup(max_stale: u64) -> (Engine, Issuer, String, f64) {
        let issuer = Issuer::new("https://test.outseta.com");
        let mut req = TokenRequest::new("dQGxEz94", "wZmNw7Q2");
        req.expires_in = 30 * 86_400;
        let token = issuer.mint(&req);
        let mut engine = Engine::new();
        engine.configure(1, || Ok(config(max_stale))).unwrap();
        (engine, issuer, token, outseta_dev::now() as f64)
    }

    #[test]
    fn stale_keys_serve_until_max_stale_then_fail_closed() {
        let (mut engine, issuer, token, t0) = setup(DAY as u64);
        let fetcher = FakeFetcher::serving(&issuer);
        engine.verify(&token, &fetcher, t0).unwrap();
        fetcher.fail();

        // Past the TTL the refresh fails: stale-if-error, and the cached verdict holds.
        engine.verify(&token, &fetcher, t0 + 600.0).unwrap();
        let mut bob = TokenRequest::new("DQ2b7wmV", "y9gE3kWj");
        bob.expires_in = 30 * 86_400;
        let fresh = issuer.mint(&bob);
        engine.verify(&fresh, &fetcher, t0 + DAY - 60.0).unwrap();
        assert!(fetcher.calls.get() >= 2, "refreshes were attempted");

        // Past max_stale: the keys are dropped, and so are the cached verdicts.
        for t in [&token, &fresh] {
            let e = engine.verify(t, &fetcher, t0 + DAY + 60.0).unwrap_err();
            assert_eq!(e.code(), "jwks_unavailable");
            assert!(format!("{e}").contains("jwks_max_stale"), "{e}");
        }
        let status = &engine.status()[0];
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
        *fetcher.body.borrow_mut() = Ok(issuer.jwks().to_string().into_bytes());
        engine.verify(&token, &fetcher, t0 + DAY + 3600.0).unwrap();
        assert_eq!(engine.status()[0].last_error, None);
    }

    #[test]
    fn a_cached_verdict_is_not_served_past_max_stale() {
        let (mut engine, issuer, token, t0) = setup(3600);
        let fetcher = FakeFetcher::serving(&issuer);
        engine.verify(&token, &fetcher, t0).unwrap();
        fetcher.fail();
        assert!(engine.cached(token.as_bytes(), t0 + 3000.0).is_some());
        // The per-row path refuses to answer from the cache once the keys are too old...
        assert!(engine.cached(token.as_bytes(), t0 + 3700.0).is_none());
        // ...and the full path fails closed.
        let e = engine.verify(&token, &fetcher, t0 + 3700.0).unwrap_err();
        assert_eq!(e.code(), "jwks_unavailable");
    }

    #[test]
    fn refreshed_keys_extend_trust() {
        let (mut engine, issuer, token, t0) = setup(3600);
        let fetcher = FakeFetcher::serving(&issuer);
        engine.verify(&token, &fetcher, t0).unwrap();
        // Each time the cached verdict's keys pass max_stale, a miss refetches them
        // successfully and trust is extended: long after the first max_stale, the token
        // still verifies, with one fetch per period.
        for k in 1..5 {
            let t = t0 + k as f64 * 3700.0;
            engine.verify(&token, &fetcher, t).unwrap();
            assert_eq!(fetcher.calls.get(), 1 + k);
        }
    }
}
