//! Outseta's profile endpoint from SQL: `outseta_profile()` and `outseta_auth.profile_check`.
//!
//! Answers are cached per token in this backend for `outseta_auth.profile_ttl`. A miss is
//! one request: made by the cluster's background worker when the library is preloaded (the
//! backend waits for it, boundedly and interruptibly; the worker keeps definitive answers
//! for the TTL, so other backends asking about the same token cost no request), else by
//! this backend on a helper thread, also waited for interruptibly. Either way the request is bounded by
//! `outseta_auth.http_timeout`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outseta_auth_core::claims::now;
use outseta_auth_core::config::ProfileCheck;
use outseta_auth_core::engine::Revocation;
use outseta_auth_core::fetch::FetchLimits;
use outseta_auth_core::profile::{self, ProfileCache, Response};
use outseta_auth_core::{AuthError, VerifiedToken};

use crate::{settings, shared};

/// Requests this backend may have running at once without preload: a request whose wait
/// was cancelled goes on until its timeout, and repeated cancels must not pile threads and
/// sockets up in one backend. A new request waits (interruptibly) for one of them to end.
const MAX_RUNNING: usize = 2;

type Request = std::thread::JoinHandle<Result<Response, String>>;

thread_local! {
    static PROFILES: RefCell<ProfileCache> = RefCell::new(ProfileCache::default());
    /// This backend's request threads not joined yet (cancelled waits leave them here).
    static RUNNING: RefCell<Vec<(u64, Request)>> = const { RefCell::new(Vec::new()) };
}

/// The profile for `token`, which has passed JWKS verification as `v` (`outseta_profile()`).
pub fn profile_of(token: &str, v: &VerifiedToken) -> Result<Arc<str>, AuthError> {
    let resolved = settings::resolved();
    let how = resolved.profile.as_ref().map_err(Clone::clone)?;
    answer(how, token, v, now()).map(|(p, _)| p)
}

/// The endpoint's answer for `token` and when it was given: from this backend's cache
/// while fresh at `t` (wall), else one request (by the cluster's worker with preload).
fn answer(
    how: &ProfileCheck,
    token: &str,
    v: &VerifiedToken,
    t: f64,
) -> Result<(Arc<str>, f64), AuthError> {
    let (url, ttl, limits) = (how.url.as_str(), how.ttl, how.limits);
    if let Some((hit, at)) = PROFILES.with_borrow_mut(|c| c.lookup_at(url, token, t, ttl)) {
        return hit.map(|p| (p, at));
    }
    // No borrow is held while waiting: a cancel unwinds from inside the wait.
    let (answer, age) = match shared::ask_profile(url, token, limits, ttl) {
        Some(answered) => answered,
        None => (fetch_here(url, token, limits), 0.0),
    };
    // An answer the worker kept for the cluster is `age` seconds old: this backend keeps it
    // only for the rest of the TTL, so a refusal reaches every backend within one TTL.
    let at = now() - age;
    PROFILES
        .with_borrow_mut(|c| c.record(url, token, v.sub.as_deref(), at, answer))
        .map(|p| (p, at))
}

/// `outseta_auth.profile_check` as a step of the engine's verification: the profile
/// endpoint must accept the token; its answer holds for `profile_ttl` from when it was
/// given, and the engine keeps that on the cached token.
pub struct ProfileRevocation;

impl Revocation for ProfileRevocation {
    fn check(
        &mut self,
        token: &str,
        v: &VerifiedToken,
        how: &ProfileCheck,
        now: f64,
    ) -> Result<f64, AuthError> {
        answer(how, token, v, now).map(|(_, at)| at + how.ttl)
    }
}

/// The request made by this backend (no preload): on a thread with every signal blocked,
/// waited for on the backend's latch so that a cancel or statement_timeout ends the wait
/// at once (the thread finishes on its own within the timeout, and is joined later: at
/// most [`MAX_RUNNING`] at a time).
fn fetch_here(url: &str, token: &str, limits: FetchLimits) -> Result<Response, String> {
    let timed_out = || format!("timed out after {} ms", limits.total.as_millis());
    // Join what has ended; wait for a place among the running ones (each ends within its
    // own timeout, so this wait is bounded by one).
    let place = Instant::now() + limits.total + Duration::from_millis(500);
    shared::wait_until(place, 5, || {
        RUNNING.with_borrow_mut(|r| {
            r.retain(|(_, h)| !h.is_finished());
            (r.len() < MAX_RUNNING).then_some(())
        })
    })
    .ok_or_else(timed_out)?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (url, token) = (url.to_string(), token.to_string());
    let handle = shared::spawn_without_signals("outseta_auth profile", move || {
        profile::fetch(&url, &token, limits)
    })
    .map_err(|e| format!("could not start the request: {e}"))?;
    // Registered before the wait, so that a cancel unwinding out of it leaves it counted.
    RUNNING.with_borrow_mut(|r| r.push((id, handle)));
    // The request's own deadline, apart from the wait for a place.
    let answer = Instant::now() + limits.total + Duration::from_millis(500);
    shared::wait_until(answer, 5, || {
        RUNNING.with_borrow(|r| {
            r.iter()
                .any(|(i, h)| *i == id && h.is_finished())
                .then_some(())
        })
    })
    .ok_or_else(timed_out)?;
    let handle = RUNNING.with_borrow_mut(|r| {
        let at = r
            .iter()
            .position(|(i, _)| *i == id)
            .expect("registered above");
        r.swap_remove(at).1
    });
    handle
        .join()
        .unwrap_or_else(|_| Err("the request thread panicked".into()))
}
