//! Key stores: where the engine gets a URL's key set, and the rules for fetching it.
//!
//! [`Schedule`] holds the rules (TTL and `Cache-Control: max-age`, rate limit, backoff,
//! refresh ahead of expiry, stale-if-error bounded by `max_stale`) as plain data with an
//! explicit clock, so that the same rules run in a backend ([`LocalKeys`]) and in the
//! cluster's background worker, whose copy lives in shared memory.
//!
//! A [`KeyProvider`] hands out [`KeySnapshot`]s; the snapshot's `version` changes exactly
//! when the key set's bytes change, which is when the engine drops cached verdicts.

use std::sync::Arc;

use crate::clock::Now;
use crate::config::{Timing, MAX_TTL};
use crate::decision::{decide, Action, Failure, FetchedBy, SourceState};
use crate::error::AuthError;
use crate::fetch::{validate_url, Fetcher};
use crate::jwks::KeySet;

/// Backends remember at most this many URLs; a larger number evicts the oldest.
const MAX_LOCAL_SOURCES: usize = 8;

/// A URL's key set as of one fetch.
#[derive(Debug, Clone)]
pub struct KeySnapshot {
    pub keys: Arc<KeySet>,
    /// Monotonic seconds ([`Now::mono`]) of the last successful fetch of these keys (an
    /// unchanged body refetched moves it).
    pub fetched_at: f64,
    /// Changes whenever the key set's bytes change (never reused for one URL).
    pub version: u64,
}

/// Whether to fetch before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refetch {
    /// Only if the keys are not fresh (and the rate limit allows).
    No,
    /// The token's kid is not in key set version `seen`: the issuer may have rotated keys.
    /// Newer keys if the store has them, else a fetch started after this ask if the rate
    /// limit allows one.
    UnknownKid { seen: u64 },
    /// Now, whatever the rate limit (a superuser's `outseta_refresh_jwks()`): an attempt
    /// started after this ask, or an error.
    Now,
}

pub trait KeyProvider {
    /// The key set of `url` (already checked to be an allowed URL by the caller or here),
    /// at monotonic time `now` ([`Now::mono`]), as [`decide`] rules.
    fn keys(
        &mut self,
        url: &str,
        timing: &Timing,
        now: f64,
        refetch: Refetch,
    ) -> Result<KeySnapshot, AuthError>;

    /// One row per URL this provider knows (times shown on the wall clock).
    fn status(&self, now: Now) -> Vec<SourceStatus>;

    /// A number that moves whenever a key set this provider holds may have changed without
    /// this backend asking (the cluster's store: the worker fetched a new version, or
    /// dropped keys). Cheap: read on every verification, cache hits included. Providers
    /// whose keys change only inside [`KeyProvider::keys`] keep the default.
    fn epoch(&self) -> u64 {
        0
    }
}

#[derive(Debug, Clone, Default)]
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
    /// Shared by the whole cluster (kept by the background worker).
    pub shared: bool,
    /// A backend asked the worker for a refresh that has not happened yet.
    pub refresh_pending: bool,
}

impl SourceStatus {
    pub fn describe_keys(&mut self, keys: &KeySet) {
        self.keys = keys
            .keys
            .iter()
            .map(|k| (k.kid.clone(), k.alg_label().to_string()))
            .collect();
        self.ignored = keys
            .ignored
            .iter()
            .map(|i| (i.kid.clone(), i.reason.clone()))
            .collect();
    }
}

/// Fetch bookkeeping of one URL: plain data, explicit monotonic clock ([`Now::mono`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[repr(C)]
pub struct Schedule {
    /// Last successful fetch; 0 = never.
    pub fetched_at: f64,
    pub expires_at: f64,
    /// Last attempt, successful or not; 0 = never.
    pub last_attempt: f64,
    /// Consecutive failed attempts.
    pub failures: u32,
    pub fetch_count: u64,
    /// When keys were dropped for passing `max_stale` (0 = not dropped), and their age.
    pub dropped_at: f64,
    pub dropped_age: u64,
}

impl Schedule {
    pub fn fresh(&self, now: f64) -> bool {
        self.fetched_at > 0.0 && now < self.expires_at
    }

    /// Earliest time of the next attempt. In a backend (`worker = false`): one attempt per
    /// `min_interval`, successful or not. The worker waits at least 1 s between attempts and
    /// doubles the wait after each consecutive failure, up to 5 minutes (or `min_interval`
    /// if that is longer).
    pub fn next_attempt(&self, timing: &Timing, worker: bool) -> f64 {
        if self.last_attempt == 0.0 {
            return 0.0;
        }
        let mut wait = timing.min_interval as f64;
        if worker {
            wait = wait.max(1.0);
            if self.failures > 0 {
                let cap = wait.max(300.0);
                wait = (wait * 2f64.powi(self.failures.min(20) as i32 - 1)).min(cap);
            }
        }
        self.last_attempt + wait
    }

    pub fn may_attempt(&self, now: f64, timing: &Timing, worker: bool) -> bool {
        now >= self.next_attempt(timing, worker)
    }

    /// When the worker refreshes keys ahead of expiry, so that a steady stream of queries
    /// never meets stale keys: a tenth of their lifetime before it ends, at most 30 s.
    pub fn refresh_at(&self) -> f64 {
        let life = (self.expires_at - self.fetched_at).max(0.0);
        self.expires_at - (life * 0.1).min(30.0)
    }

    /// For the worker: fetch now? (`has_keys`: a usable key set is held; `requested`: a
    /// backend asked for a refresh, e.g. an unknown kid.)
    pub fn due(&self, now: f64, timing: &Timing, has_keys: bool, requested: bool) -> bool {
        let wanted = !has_keys || requested || now >= self.refresh_at();
        wanted && self.may_attempt(now, timing, true)
    }

    pub fn on_attempt(&mut self, now: f64) {
        self.last_attempt = now;
        self.fetch_count += 1;
    }

    pub fn on_success(&mut self, now: f64, max_age: Option<u64>, timing: &Timing) {
        let ttl = max_age
            .map(|a| a.clamp(timing.min_interval, MAX_TTL))
            .unwrap_or(timing.ttl);
        self.fetched_at = now;
        self.expires_at = now + ttl as f64;
        self.failures = 0;
        self.dropped_at = 0.0;
        self.dropped_age = 0;
    }

    pub fn on_failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// Keys from the last successful fetch may still be used at `now` (stale-if-error).
    pub fn within_max_stale(&self, now: f64, timing: &Timing) -> bool {
        self.fetched_at > 0.0 && now - self.fetched_at <= timing.max_stale as f64
    }

    pub fn on_dropped(&mut self, now: f64) {
        self.dropped_age = (now - self.fetched_at).max(0.0) as u64;
        self.dropped_at = now;
    }

    /// Why the keys are gone, when they were dropped for passing `max_stale`.
    pub fn dropped_note(&self, timing: &Timing) -> Option<String> {
        (self.dropped_at > 0.0).then(|| {
            format!(
                "the cached keys were dropped: their last successful fetch was {} s earlier, more than outseta_auth.jwks_max_stale ({} s)",
                self.dropped_age, timing.max_stale
            )
        })
    }
}

/// The error for a URL without usable keys.
pub fn unavailable(
    url: &str,
    last_error: Option<&str>,
    schedule: &Schedule,
    timing: &Timing,
) -> AuthError {
    let mut cause = last_error.unwrap_or("no keys yet").to_string();
    if let Some(note) = schedule.dropped_note(timing) {
        cause = format!("{cause}; {note}");
    }
    AuthError::JwksUnavailable {
        url: url.to_string(),
        cause,
    }
}

struct LocalSource {
    url: String,
    body: Vec<u8>,
    keys: Option<Arc<KeySet>>,
    version: u64,
    schedule: Schedule,
    attempts: u64,
    last_error: Option<String>,
}

/// The per-backend store: each backend fetches for itself, in the query that needs it.
/// Used without `shared_preload_libraries`, and for URLs the shared store has no room for.
pub struct LocalKeys<F: Fetcher> {
    fetcher: F,
    sources: Vec<LocalSource>,
    /// Versions are unique across URLs and evictions.
    next_version: u64,
}

impl<F: Fetcher> LocalKeys<F> {
    pub fn new(fetcher: F) -> Self {
        LocalKeys {
            fetcher,
            sources: Vec::new(),
            next_version: 1,
        }
    }

    pub fn fetcher(&self) -> &F {
        &self.fetcher
    }

    fn index(&mut self, url: &str) -> usize {
        if let Some(i) = self.sources.iter().position(|s| s.url == url) {
            return i;
        }
        if self.sources.len() >= MAX_LOCAL_SOURCES {
            self.sources.remove(0);
        }
        self.sources.push(LocalSource {
            url: url.to_string(),
            body: Vec::new(),
            keys: None,
            version: 0,
            schedule: Schedule::default(),
            attempts: 0,
            last_error: None,
        });
        self.sources.len() - 1
    }

    fn snapshot(s: &LocalSource) -> Option<KeySnapshot> {
        s.keys.as_ref().map(|keys| KeySnapshot {
            keys: keys.clone(),
            fetched_at: s.schedule.fetched_at,
            version: s.version,
        })
    }

    fn state(s: &LocalSource) -> SourceState {
        SourceState {
            version: if s.keys.is_some() { s.version } else { 0 },
            schedule: s.schedule,
            attempts_started: s.attempts,
            attempts_done: s.attempts,
            fetcher: FetchedBy::Here,
        }
    }

    /// Carry out a decision that is not a fetch: the held keys, or an error (keys past
    /// `max_stale` are dropped: the URL fails closed until a fetch succeeds).
    fn answer(
        &mut self,
        i: usize,
        action: Action,
        timing: &Timing,
        now: f64,
    ) -> Result<KeySnapshot, AuthError> {
        let s = &mut self.sources[i];
        if action == Action::Use {
            if let Some(snap) = Self::snapshot(s) {
                return Ok(snap);
            }
        }
        if action == Action::Fail(Failure::TooStale) && s.keys.is_some() {
            s.keys = None;
            s.body.clear();
            s.version = self.next_version;
            self.next_version += 1;
            s.schedule.on_dropped(now);
        }
        Err(unavailable(
            &s.url,
            s.last_error.as_deref(),
            &s.schedule,
            timing,
        ))
    }
}

impl<F: Fetcher> KeyProvider for LocalKeys<F> {
    fn keys(
        &mut self,
        url: &str,
        timing: &Timing,
        now: f64,
        refetch: Refetch,
    ) -> Result<KeySnapshot, AuthError> {
        validate_url(url, "outseta_auth.jwks_url")?;
        let i = self.index(url);
        let action = decide(&Self::state(&self.sources[i]), timing, refetch, now, None);
        if action != Action::FetchHere {
            return self.answer(i, action, timing, now);
        }
        let s = &mut self.sources[i];
        s.schedule.on_attempt(now);
        s.attempts += 1;
        let result = self
            .fetcher
            .fetch(url, timing.limits)
            .and_then(|f| KeySet::parse(&f.body).map(|set| (f, set)));
        let s = &mut self.sources[i];
        match result {
            Ok((fetched, set)) => {
                if s.keys.is_none() || s.body != fetched.body {
                    s.version = self.next_version;
                    self.next_version += 1;
                    s.body = fetched.body;
                    s.keys = Some(Arc::new(set));
                }
                s.schedule.on_success(now, fetched.max_age, timing);
                s.last_error = None;
            }
            Err(cause) => {
                s.schedule.on_failure();
                s.last_error = Some(cause);
            }
        }
        let need = s.attempts;
        let after = decide(&Self::state(s), timing, refetch, now, Some(need));
        self.answer(i, after, timing, now)
    }

    fn status(&self, now: Now) -> Vec<SourceStatus> {
        self.sources
            .iter()
            .map(|s| {
                let mut st = SourceStatus {
                    source: s.url.clone(),
                    fetched_at: (s.schedule.fetched_at > 0.0)
                        .then(|| now.wall_of(s.schedule.fetched_at)),
                    expires_at: (s.schedule.fetched_at > 0.0)
                        .then(|| now.wall_of(s.schedule.expires_at)),
                    last_error: match (&s.last_error, s.schedule.dropped_at > 0.0) {
                        (e, true) => Some(format!(
                            "{}keys dropped: their last successful fetch was {} s earlier, more than outseta_auth.jwks_max_stale",
                            e.as_ref().map(|e| format!("{e}; ")).unwrap_or_default(),
                            s.schedule.dropped_age
                        )),
                        (e, false) => e.clone(),
                    },
                    fetch_count: s.schedule.fetch_count,
                    ..Default::default()
                };
                if let Some(k) = &s.keys {
                    st.describe_keys(k);
                }
                st
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(ttl: u64, min_interval: u64, max_stale: u64) -> Timing {
        Timing {
            ttl,
            min_interval,
            max_stale,
            ..Timing::default()
        }
    }

    #[test]
    fn ttl_and_max_age() {
        let t = timing(300, 30, 86_400);
        let mut s = Schedule::default();
        assert!(!s.fresh(100.0));
        s.on_attempt(100.0);
        s.on_success(100.0, None, &t);
        assert!(s.fresh(399.0) && !s.fresh(400.0));
        s.on_success(100.0, Some(5), &t);
        assert_eq!(s.expires_at, 130.0, "max-age is raised to min_interval");
        s.on_success(100.0, Some(10 * 86_400), &t);
        assert_eq!(s.expires_at, 100.0 + MAX_TTL as f64, "and capped at 24 h");
    }

    #[test]
    fn rate_limit_per_backend() {
        let t = timing(300, 30, 86_400);
        let mut s = Schedule::default();
        assert!(s.may_attempt(0.0, &t, false), "never tried: now");
        s.on_attempt(100.0);
        s.on_failure();
        s.on_failure();
        assert!(!s.may_attempt(129.0, &t, false));
        assert!(s.may_attempt(130.0, &t, false), "no backoff in a backend");
    }

    #[test]
    fn worker_backoff_doubles_and_is_capped() {
        let t = timing(300, 30, 86_400);
        let mut s = Schedule::default();
        s.on_attempt(1000.0);
        let waits: Vec<f64> = (1..=6)
            .map(|_| {
                s.on_failure();
                s.next_attempt(&t, true) - 1000.0
            })
            .collect();
        assert_eq!(waits, [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]);
        // With no interval configured, the worker still waits 1 s, then 2, 4, ...
        let t0 = timing(300, 0, 86_400);
        let mut s = Schedule::default();
        s.on_attempt(10.0);
        assert_eq!(s.next_attempt(&t0, true), 11.0);
        s.on_failure();
        s.on_failure();
        s.on_failure();
        assert_eq!(s.next_attempt(&t0, true), 14.0);
        // Success resets the backoff.
        s.on_success(10.0, None, &t0);
        assert_eq!(s.failures, 0);
    }

    #[test]
    fn worker_refreshes_ahead_of_expiry_and_on_request() {
        let t = timing(300, 30, 86_400);
        let mut s = Schedule::default();
        assert!(s.due(0.0, &t, false, false), "nothing held: fetch");
        s.on_attempt(1000.0);
        s.on_success(1000.0, None, &t);
        assert!(!s.due(1100.0, &t, true, false));
        assert!(!s.due(1269.0, &t, true, false));
        assert!(s.due(1270.0, &t, true, false), "30 s before expiry");
        assert!(
            !s.due(1010.0, &t, true, true),
            "a request waits for the rate limit"
        );
        assert!(s.due(1030.0, &t, true, true));
    }

    #[test]
    fn max_stale() {
        let t = timing(300, 30, 3600);
        let mut s = Schedule::default();
        assert!(!s.within_max_stale(0.0, &t), "never fetched");
        s.on_success(1000.0, None, &t);
        assert!(s.within_max_stale(4600.0, &t));
        assert!(!s.within_max_stale(4601.0, &t));
        s.on_dropped(4700.0);
        let note = s.dropped_note(&t).unwrap();
        assert!(
            note.contains("3700 s") && note.contains("jwks_max_stale"),
            "{note}"
        );
        s.on_success(5000.0, None, &t);
        assert!(s.dropped_note(&t).is_none());
    }
}
