//! Cluster-wide keys: one JWKS per URL in shared memory, fetched by the background worker.
//! Backends register the URLs they need and carry out the core's [`decide`] on a slot: use
//! its keys, or ask the worker for an attempt and wait (boundedly, interruptibly). They
//! copy a URL's key set out of shared memory only when its version changes: no network
//! I/O in queries, one fetch per TTL for the whole cluster, parallel workers included.
//!
//! Timing per URL: a slot keeps the strictest timing of the backends that asked for it
//! since it was taken (the smallest TTL, `min_interval`, `max_stale` and HTTP timeouts), so
//! databases with different settings never flip each other's bounds, and a backend whose
//! timing the slot already covers registers under the shared lock. The slot, and its
//! timing, go when no backend has asked for the URL for [`idle_after`].
//!
//! A URL the store has no room for (more than [`SLOTS`]) is served by the per-backend
//! path, with a WARNING; so is a URL with no keys yet when no worker has ever run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outseta_auth_core::clock::Now;
use outseta_auth_core::decision::{
    decide, worker_step, Action, Failure, FetchedBy, SourceState, WorkerStep,
};
use outseta_auth_core::fetch::{validate_url, FetchLimits, HttpFetcher, MAX_JWKS_BYTES};
use outseta_auth_core::jwks::KeySet;
use outseta_auth_core::key_store::{
    unavailable, KeyProvider, KeySnapshot, LocalKeys, Refetch, Schedule, SourceStatus,
};
use outseta_auth_core::{AuthError, Timing};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};

use outseta_auth_core::clock::monotonic as mono;

use super::{put, text, wake_worker, worker_view};

/// URLs the cluster can share. Shared memory: [`bytes`], about 8 x 66 KiB.
pub const SLOTS: usize = 8;
const URL_MAX: usize = outseta_auth_core::fetch::MAX_URL_BYTES;
const BODY_MAX: usize = MAX_JWKS_BYTES as usize;
const ERROR_MAX: usize = 512;
/// A backend that asks for a URL marks the slot used at most this often (under the
/// exclusive lock); the idle rule counts in much longer spans.
const TOUCH_EVERY: f64 = 5.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum UrlState {
    Free = 0,
    Used = 1,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct UrlSlot {
    state: UrlState,
    url_len: u16,
    error_len: u16,
    body_len: u32,
    /// Changes whenever `body` changes; 0 = no keys. Unique across slots and reuse.
    version: u64,
    attempts_started: u64,
    /// Attempts finished (success or failure): what waiting backends watch.
    attempts_done: u64,
    /// The highest attempt number a backend asked for, and one asked for whatever the
    /// rate limit (`outseta_refresh_jwks()`).
    need: u64,
    forced_need: u64,
    /// Monotonic seconds of the last backend's ask (for [`idle_after`]).
    last_used: f64,
    /// The strictest timing of the askers since the slot was taken.
    timing: Timing,
    schedule: Schedule,
    url: [u8; URL_MAX],
    error: [u8; ERROR_MAX],
    body: [u8; BODY_MAX],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Store {
    next_version: u64,
    slots: [UrlSlot; SLOTS],
}

// SAFETY: plain data (numbers, enums with a zero variant, byte arrays); nothing points
// into process-local memory.
unsafe impl PGRXSharedMemory for Store {}

impl Store {
    fn zeroed() -> Self {
        // SAFETY: every field is a number, a bool, a byte array, an enum whose variant 0
        // exists (UrlState::Free) or a struct of those (Timing holds Durations), for which
        // all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }
}

// SAFETY: the names are unique to this extension.
static STORE: PgLwLock<Store> = unsafe { PgLwLock::new(c"outseta_auth_jwks") };
// SAFETY: as above.
static KEY_EPOCH: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"outseta_auth_key_epoch") };

pub(super) fn init() {
    pg_shmem_init!(STORE = Store::zeroed());
    pg_shmem_init!(KEY_EPOCH = AtomicU64::new(0));
}

pub(super) fn bytes() -> usize {
    std::mem::size_of::<Store>()
}

/// How long a URL slot stays without an ask before the worker frees it: its
/// `jwks_max_stale`, at least ten of its TTLs and 30 s. A backend with cached verdicts asks
/// again once per TTL while it runs queries, so only a URL nobody verifies with goes.
pub fn idle_after(timing: &Timing) -> f64 {
    (timing.max_stale as f64)
        .max(timing.ttl as f64 * 10.0)
        .max(30.0)
}

impl UrlSlot {
    fn url(&self) -> &[u8] {
        &self.url[..self.url_len as usize]
    }
    fn error(&self) -> Option<String> {
        (self.error_len > 0).then(|| text(&self.error[..self.error_len as usize]))
    }
    fn has_keys(&self) -> bool {
        self.version != 0 && self.body_len > 0
    }
    fn state(&self, fetched_by: FetchedBy) -> SourceState {
        SourceState {
            version: if self.has_keys() { self.version } else { 0 },
            schedule: self.schedule,
            attempts_started: self.attempts_started,
            attempts_done: self.attempts_done,
            fetcher: fetched_by,
        }
    }
    fn is(&self, url: &str) -> bool {
        self.state == UrlState::Used && self.url() == url.as_bytes()
    }
}

/// `a` is at least as strict as `b` in every bound.
fn covers(a: &Timing, b: &Timing) -> bool {
    a.ttl <= b.ttl
        && a.min_interval <= b.min_interval
        && a.max_stale <= b.max_stale
        && a.limits.total <= b.limits.total
        && a.limits.connect <= b.limits.connect
}

fn strictest(a: &Timing, b: &Timing) -> Timing {
    Timing {
        ttl: a.ttl.min(b.ttl),
        min_interval: a.min_interval.min(b.min_interval),
        max_stale: a.max_stale.min(b.max_stale),
        limits: FetchLimits {
            total: a.limits.total.min(b.limits.total),
            connect: a.limits.connect.min(b.limits.connect),
        },
    }
}

/// Moves whenever a slot's key set changes (a new version, keys dropped, a slot freed):
/// backends compare it on every verification, cache hits included
/// ([`KeyProvider::epoch`]).
fn key_sets_changed() {
    KEY_EPOCH.get().fetch_add(1, Ordering::Release);
    super::verified::clear();
}

/// The store's epoch (see [`key_sets_changed`]): one atomic read.
pub fn epoch() -> u64 {
    KEY_EPOCH.get().load(Ordering::Acquire)
}

/// The slot of `url`, registering it if it is new. Under the shared lock only when the
/// slot's timing already covers the asker's and it was marked used recently.
fn register(url: &str, timing: &Timing, now: f64) -> Option<usize> {
    {
        let store = STORE.share();
        if let Some(i) = store.slots.iter().position(|s| s.is(url)) {
            let s = &store.slots[i];
            if covers(&s.timing, timing) && now - s.last_used < TOUCH_EVERY {
                return Some(i);
            }
        }
    }
    let mut store = STORE.exclusive();
    let i = match store.slots.iter().position(|s| s.is(url)) {
        Some(i) => {
            let s = &mut store.slots[i];
            s.timing = strictest(&s.timing, timing);
            i
        }
        None => {
            let i = store.slots.iter().position(|s| s.state == UrlState::Free)?;
            let s = &mut store.slots[i];
            s.state = UrlState::Used;
            s.version = 0;
            s.body_len = 0;
            s.error_len = 0;
            s.attempts_started = 0;
            s.attempts_done = 0;
            s.need = 0;
            s.forced_need = 0;
            s.schedule = Schedule::default();
            s.timing = *timing;
            s.url_len = put(&mut s.url, url.as_bytes()) as u16;
            i
        }
    };
    store.slots[i].last_used = now;
    Some(i)
}

struct Parsed {
    url: String,
    version: u64,
    keys: Arc<KeySet>,
}

/// A backend's view of the shared store: key sets parsed once per version, and the
/// per-backend fallback.
pub struct SharedKeys {
    parsed: Vec<Parsed>,
    local: LocalKeys<HttpFetcher>,
    /// URLs served by the per-backend path (no room in the store), and since when (mono):
    /// the store is asked again after a TTL.
    fallback: Vec<(String, f64)>,
}

impl Default for SharedKeys {
    fn default() -> Self {
        SharedKeys {
            parsed: Vec::new(),
            local: LocalKeys::new(HttpFetcher),
            fallback: Vec::new(),
        }
    }
}

/// What a backend saw of a slot, copied out under the shared lock.
struct View {
    state: SourceState,
    timing: Timing,
    error: Option<String>,
}

fn view(i: usize, url: &str, now: f64) -> Option<View> {
    let w = worker_view(now);
    let fetched_by = FetchedBy::Worker {
        ever_started: w.ever_started,
    };
    let store = STORE.share();
    let s = &store.slots[i];
    s.is(url).then(|| View {
        state: s.state(fetched_by),
        timing: s.timing,
        error: s.error(),
    })
}

impl SharedKeys {
    /// The parsed key set of slot `i` at `version`, copying and parsing it only when the
    /// version is new to this backend.
    fn snapshot(&mut self, i: usize, url: &str, v: &View) -> Result<KeySnapshot, AuthError> {
        let fetched_at = v.state.schedule.fetched_at;
        if let Some(p) = self
            .parsed
            .iter()
            .find(|p| p.url == url && p.version == v.state.version)
        {
            return Ok(KeySnapshot {
                keys: p.keys.clone(),
                fetched_at,
                version: p.version,
            });
        }
        let (body, fetched_at, current) = {
            let store = STORE.share();
            let s = &store.slots[i];
            if !s.is(url) || !s.has_keys() {
                return Err(unavailable(
                    url,
                    s.error().as_deref(),
                    &s.schedule,
                    &s.timing,
                ));
            }
            (
                s.body[..s.body_len as usize].to_vec(),
                s.schedule.fetched_at,
                s.version,
            )
        };
        // The worker stored only bodies that parse; a failure here is a bug, reported.
        let keys = Arc::new(
            KeySet::parse(&body).map_err(|cause| AuthError::JwksUnavailable {
                url: url.to_string(),
                cause: format!("the shared key set does not parse: {cause}"),
            })?,
        );
        self.parsed.retain(|p| p.url != url);
        self.parsed.push(Parsed {
            url: url.to_string(),
            version: current,
            keys: keys.clone(),
        });
        Ok(KeySnapshot {
            keys,
            fetched_at,
            version: current,
        })
    }
}

/// Ask the worker for attempt `need` of slot `i` (`forced`: whatever its rate limit).
fn request(i: usize, url: &str, need: u64, forced: bool) {
    {
        let mut store = STORE.exclusive();
        let s = &mut store.slots[i];
        if !s.is(url) {
            return;
        }
        s.need = s.need.max(need);
        if forced {
            s.forced_need = s.forced_need.max(need);
        }
    }
    wake_worker();
}

impl KeyProvider for SharedKeys {
    fn keys(
        &mut self,
        url: &str,
        timing: &Timing,
        now: f64,
        refetch: Refetch,
    ) -> Result<KeySnapshot, AuthError> {
        validate_url(url, "outseta_auth.jwks_url")?;
        self.fallback
            .retain(|(_, since)| now - since < timing.ttl as f64);
        if self.fallback.iter().any(|(u, _)| u == url) {
            return self.local.keys(url, timing, now, refetch);
        }
        let Some(i) = register(url, timing, now) else {
            pgrx::warning!(
                "outseta_auth: the shared JWKS store is full ({SLOTS} URLs); this backend fetches {url} itself"
            );
            self.fallback.push((url.to_string(), now));
            return self.local.keys(url, timing, now, refetch);
        };
        let gone = || AuthError::JwksUnavailable {
            url: url.to_string(),
            cause: "the URL's slot was freed while waiting".into(),
        };
        let v = view(i, url, now).ok_or_else(gone)?;
        let mut action = decide(&v.state, &v.timing, refetch, now, None);
        let mut v = v;
        let mut waited_ms = 0;
        if let Action::Wait {
            need,
            request: ask,
            forced,
            for_ms,
        } = action
        {
            if ask {
                request(i, url, need, forced);
            }
            waited_ms = for_ms;
            let deadline = Instant::now() + Duration::from_millis(for_ms + 100);
            super::wait_until(deadline, 10, || {
                let store = STORE.share();
                let s = &store.slots[i];
                (!s.is(url) || s.attempts_done >= need).then_some(())
            });
            let now = mono();
            v = view(i, url, now).ok_or_else(gone)?;
            action = decide(&v.state, &v.timing, refetch, now, Some(need));
        }
        match action {
            Action::Use => self.snapshot(i, url, &v),
            Action::FetchHere => self.local.keys(url, timing, now, refetch),
            Action::Fail(Failure::TimedOut) => Err(AuthError::JwksUnavailable {
                url: url.to_string(),
                cause: format!(
                    "timed out after {waited_ms} ms waiting for the background worker's fetch{}",
                    if worker_view(now).alive {
                        ""
                    } else {
                        " (the background worker is not running)"
                    }
                ),
            }),
            Action::Fail(Failure::TooStale) => Err(unavailable(
                url,
                Some("the keys are older than outseta_auth.jwks_max_stale"),
                &v.state.schedule,
                &v.timing,
            )),
            Action::Fail(Failure::NoKeys) | Action::Wait { .. } => Err(unavailable(
                url,
                v.error.as_deref(),
                &v.state.schedule,
                &v.timing,
            )),
        }
    }

    fn epoch(&self) -> u64 {
        epoch()
    }

    fn status(&self, now: Now) -> Vec<SourceStatus> {
        let w = worker_view(now.mono);
        // Read in place under the shared lock: the store is over 500 KB, no copy of it
        // belongs on a backend's stack.
        let store = STORE.share();
        let mut out: Vec<SourceStatus> = store
            .slots
            .iter()
            .filter(|s| s.state == UrlState::Used)
            .map(|s| {
                let fetched = s.schedule.fetched_at > 0.0;
                let mut st = SourceStatus {
                    source: text(s.url()),
                    fetched_at: fetched.then(|| now.wall_of(s.schedule.fetched_at)),
                    expires_at: fetched.then(|| now.wall_of(s.schedule.expires_at)),
                    last_error: s.error(),
                    fetch_count: s.schedule.fetch_count,
                    shared: true,
                    refresh_pending: s.need > s.attempts_done
                        || s.forced_need > s.attempts_done
                        || s.attempts_started > s.attempts_done,
                    ..Default::default()
                };
                if let Some(note) = s.schedule.dropped_note(&s.timing) {
                    st.last_error = Some(match st.last_error {
                        Some(e) => format!("{e}; {note}"),
                        None => note,
                    });
                }
                if !w.alive {
                    let note = if w.pid == 0 {
                        "the background worker is not running".to_string()
                    } else {
                        format!(
                            "the background worker (pid {}) has not been seen for {:.0} s",
                            w.pid, w.unseen_for
                        )
                    };
                    st.last_error = Some(match st.last_error {
                        Some(e) => format!("{note}; {e}"),
                        None => note,
                    });
                }
                if s.has_keys() {
                    if let Ok(k) = KeySet::parse(&s.body[..s.body_len as usize]) {
                        st.describe_keys(&k);
                    }
                }
                st
            })
            .collect();
        drop(store);
        out.extend(self.local.status(now));
        out
    }
}

/// URL slots in use (for the soak benchmark and status).
pub fn slots_in_use() -> usize {
    STORE
        .share()
        .slots
        .iter()
        .filter(|s| s.state == UrlState::Used)
        .count()
}

// ---- the worker's side ----

/// A fetch under way: the slot's URL, the attempt number and the thread.
pub(super) type Fetch = (
    String,
    u64,
    std::thread::JoinHandle<Result<outseta_auth_core::fetch::Fetched, String>>,
);

/// At worker start: an attempt the previous worker had under way died with it. Its number
/// is started again (backends waiting for it keep waiting, boundedly).
pub(super) fn worker_started() {
    let mut store = STORE.exclusive();
    for s in store
        .slots
        .iter_mut()
        .filter(|s| s.state == UrlState::Used && s.attempts_started > s.attempts_done)
    {
        // At once, whatever the rate limit: it is the same attempt, made again.
        s.need = s.need.max(s.attempts_started);
        s.forced_need = s.forced_need.max(s.attempts_started);
        s.attempts_started = s.attempts_done;
    }
}

/// One look at every slot: finish the fetches that ended, start the ones [`worker_step`]
/// says are due, drop keys past `max_stale`, free slots idle for [`idle_after`]. Scans under
/// the shared lock; the exclusive one only to write.
pub(super) fn tick(in_flight: &mut [Option<Fetch>; SLOTS]) {
    for (i, slot) in in_flight.iter_mut().enumerate() {
        match slot.take() {
            Some((url, n, handle)) if handle.is_finished() => {
                let result = handle
                    .join()
                    .unwrap_or_else(|_| Err("the fetch thread panicked".into()));
                store_result(i, &url, n, result);
            }
            Some(running) => *slot = Some(running),
            None => {}
        }
    }
    let now = mono();
    let mut todo: Vec<(usize, WorkerStep, bool)> = Vec::new();
    {
        let store = STORE.share();
        for (i, s) in store.slots.iter().enumerate() {
            if s.state != UrlState::Used || in_flight[i].is_some() {
                continue;
            }
            let step = worker_step(
                &s.state(FetchedBy::Here),
                &s.timing,
                s.need,
                s.forced_need,
                now,
            );
            let idle = now - s.last_used > idle_after(&s.timing);
            if step != WorkerStep::Idle || idle {
                todo.push((i, step, idle));
            }
        }
    }
    for (i, step, idle) in todo {
        let mut store = STORE.exclusive();
        let s = &mut store.slots[i];
        // Re-checked under the exclusive lock: a backend may have asked since the scan.
        let idle = idle
            && s.state == UrlState::Used
            && now - s.last_used > idle_after(&s.timing)
            && s.need <= s.attempts_done
            && s.forced_need <= s.attempts_done;
        if idle {
            // Nobody asked for a while and nobody waits: the slot goes.
            s.state = UrlState::Free;
            s.url_len = 0;
            s.body_len = 0;
            s.version = 0;
            drop(store);
            key_sets_changed();
            continue;
        }
        match step {
            WorkerStep::Idle => {}
            WorkerStep::DropKeys => {
                drop_keys(s, now);
            }
            WorkerStep::Start => {
                s.schedule.on_attempt(now);
                s.attempts_started += 1;
                let (url, n, limits) = (text(s.url()), s.attempts_started, s.timing.limits);
                drop(store);
                let thread_url = url.clone();
                let started = super::spawn_without_signals("outseta_auth fetch", move || {
                    use outseta_auth_core::fetch::Fetcher;
                    HttpFetcher
                        .fetch(&thread_url, limits)
                        .and_then(|f| KeySet::parse(&f.body).map(|_| f))
                });
                match started {
                    Ok(h) => in_flight[i] = Some((url, n, h)),
                    Err(e) => {
                        store_result(i, &url, n, Err(format!("could not start a fetch: {e}")))
                    }
                }
            }
        }
    }
}

fn store_result(
    i: usize,
    url: &str,
    attempt: u64,
    result: Result<outseta_auth_core::fetch::Fetched, String>,
) {
    let t = mono();
    let mut store = STORE.exclusive();
    let next = store.next_version + 1;
    let s = &mut store.slots[i];
    if !s.is(url) || s.attempts_started != attempt {
        return;
    }
    let timing = s.timing;
    let mut changed = false;
    match result {
        Ok(f) => {
            if !s.has_keys() || s.body[..s.body_len as usize] != f.body[..] {
                s.body_len = put(&mut s.body, &f.body) as u32;
                s.version = next;
                changed = true;
            }
            s.schedule.on_success(t, f.max_age, &timing);
            s.error_len = 0;
        }
        Err(cause) => {
            s.schedule.on_failure();
            s.error_len = put(&mut s.error, cause.as_bytes()) as u16;
            if s.has_keys() && !s.schedule.within_max_stale(t, &timing) {
                drop_keys(s, t);
            }
        }
    }
    s.attempts_done = attempt;
    if changed {
        store.next_version = next;
        key_sets_changed();
    }
}

fn drop_keys(s: &mut UrlSlot, t: f64) {
    key_sets_changed();
    s.body_len = 0;
    s.version = 0;
    s.schedule.on_dropped(t);
}
