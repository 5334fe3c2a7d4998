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
use outseta_auth_core::fetch::FetchLimits;
use outseta_auth_core::profile::{self, ProfileCache, Response};
use outseta_auth_core::{AuthError, VerifiedToken};
use pgrx::pg_sys;

use crate::{settings, shared};

thread_local! {
    static PROFILES: RefCell<ProfileCache> = RefCell::new(ProfileCache::default());
}

/// The profile for `token`, which has passed JWKS verification as `v`.
pub fn profile_of(token: &str, v: &VerifiedToken) -> Result<Arc<str>, AuthError> {
    let (url, ttl, limits) = settings::profile_settings()?;
    let t = now();
    if let Some(hit) = PROFILES.with_borrow_mut(|c| c.lookup(&url, token, t, ttl)) {
        return hit;
    }
    // No borrow is held while waiting: a cancel unwinds from inside the wait.
    let (answer, age) = match shared::ask_profile(&url, token, limits, ttl) {
        Some(answered) => answered,
        None => (fetch_here(&url, token, limits), 0.0),
    };
    // An answer the worker kept for the cluster is `age` seconds old: this backend keeps it
    // only for the rest of the TTL, so a refusal reaches every backend within one TTL.
    PROFILES.with_borrow_mut(|c| c.record(&url, token, v.sub.as_deref(), now() - age, answer))
}

/// With `outseta_auth.profile_check` on, refuse `v` unless the profile endpoint accepts it.
pub fn check(token: &[u8], v: Arc<VerifiedToken>) -> Result<Arc<VerifiedToken>, AuthError> {
    if !settings::profile_check() {
        return Ok(v);
    }
    let token = std::str::from_utf8(token)
        .map_err(|_| AuthError::malformed("the token is not valid UTF-8"))?;
    profile_of(token, &v).map(|_| v)
}

/// The request made by this backend (no preload): on a thread with every signal blocked,
/// waited for on the backend's latch so that a cancel or statement_timeout ends the wait
/// at once (the thread finishes on its own within the timeout).
fn fetch_here(url: &str, token: &str, limits: FetchLimits) -> Result<Response, String> {
    let (url, token) = (url.to_string(), token.to_string());
    let handle = shared::without_signals(|| {
        std::thread::Builder::new()
            .name("outseta_auth profile".into())
            .spawn(move || profile::fetch(&url, &token, limits))
    })
    .map_err(|e| format!("could not start the request: {e}"))?;
    let deadline = Instant::now() + limits.total + Duration::from_millis(500);
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {} ms", limits.total.as_millis()));
        }
        // SAFETY: MyLatch is this backend's own latch; no lock is held.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                5,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
    handle
        .join()
        .unwrap_or_else(|_| Err("the request thread panicked".into()))
}
