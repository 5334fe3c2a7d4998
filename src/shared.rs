//! Cluster-wide keys: with `shared_preload_libraries = 'outseta_auth'`, one JWKS per URL
//! lives in shared memory and a background worker does all the fetching. Backends register
//! the URLs they need, wait (boundedly, interruptibly) for a first fetch, and otherwise
//! only copy a URL's key set out of shared memory when its version changes: no network I/O
//! in queries, one fetch per TTL for the whole cluster, parallel workers included.
//!
//! The fetch rules (TTL, `Cache-Control: max-age`, rate limit, backoff, refresh ahead of
//! expiry, `max_stale`) are the core's [`Schedule`], kept in each slot. The timing settings
//! of a slot are those of the backend that last asked for the URL (they are per-session
//! settings; the worker has none of its own).
//!
//! A URL the store has no room for (more than [`SLOTS`]) is served by the per-backend path,
//! with a WARNING; so is a URL with no keys yet when no worker has ever run. While the
//! worker restarts, backends use what the store holds, or wait for it (bounded).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outseta_auth_core::claims::now;
use outseta_auth_core::fetch::{validate_url, FetchLimits, Fetcher, HttpFetcher, MAX_JWKS_BYTES};
use outseta_auth_core::jwks::KeySet;
use outseta_auth_core::key_store::{
    unavailable, KeyProvider, KeySnapshot, LocalKeys, Refetch, Schedule, SourceStatus,
};
use outseta_auth_core::profile::{self, AnswerCache, Response, MAX_PROFILE_BYTES};
use outseta_auth_core::verify::MAX_TOKEN_BYTES;
use outseta_auth_core::{AuthError, Timing};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};

/// URLs the cluster can share. Shared memory: [`std::mem::size_of::<Store>()`], about
/// 8 x 66 KiB.
pub const SLOTS: usize = 8;
const URL_MAX: usize = outseta_auth_core::fetch::MAX_URL_BYTES;
const BODY_MAX: usize = MAX_JWKS_BYTES as usize;
const ERROR_MAX: usize = 512;
/// A worker that has not looked at the store for this long is reported as not running.
const WORKER_STALE_SECS: f64 = 10.0;

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    used: bool,
    /// A backend asked for a fetch (first use, unknown kid).
    requested: bool,
    /// ... whatever the rate limit (`outseta_refresh_jwks()`).
    forced: bool,
    /// The worker has a fetch of this URL under way.
    fetching: bool,
    url_len: u16,
    error_len: u16,
    body_len: u32,
    /// Changes whenever `body` changes; 0 = no keys.
    version: u64,
    /// Attempts finished (success or failure): what waiting backends watch.
    attempts_done: u64,
    timing: Timing,
    schedule: Schedule,
    url: [u8; URL_MAX],
    error: [u8; ERROR_MAX],
    body: [u8; BODY_MAX],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Store {
    worker_pid: i32,
    /// The worker's process latch (`*mut Latch` in shared memory), to wake it.
    worker_latch: usize,
    worker_seen: f64,
    worker_starts: u32,
    next_version: u64,
    slots: [Slot; SLOTS],
}

// SAFETY: plain data (numbers, bools, byte arrays, and an address into shared memory that is
// the same in every process of the cluster); nothing points into process-local memory.
unsafe impl PGRXSharedMemory for Store {}

impl Store {
    fn zeroed() -> Self {
        // SAFETY: every field is a number, a bool, a byte array or a struct of those
        // (Timing holds Durations), for which all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }
}

/// Profile requests the worker can carry at once (`outseta_profile()`, `profile_check`).
pub const PROFILE_SLOTS: usize = 4;

const FREE: u8 = 0;
const PENDING: u8 = 1;
const FETCHING: u8 = 2;
const DONE: u8 = 3;

/// One profile request: a backend fills it (PENDING), the worker performs it (FETCHING)
/// and answers (DONE); the backend copies the answer and frees the slot. The token is
/// wiped when the slot is freed.
#[derive(Clone, Copy)]
#[repr(C)]
struct ProfileSlot {
    state: u8,
    /// The backend stopped waiting (cancel, timeout): the worker frees the slot when done.
    abandoned: bool,
    answered: bool,
    status: u16,
    url_len: u16,
    error_len: u16,
    token_len: u32,
    body_len: u32,
    /// Identifies this use of the slot.
    id: u64,
    /// The backend that asked (its pid); a backend that exits releases its slots.
    owner: i32,
    /// The waiting backend's process latch (`*mut Latch` in shared memory).
    requester_latch: usize,
    limits: FetchLimits,
    /// The asker's `outseta_auth.profile_ttl`: how old a kept answer may be.
    ttl_ms: u64,
    /// How old the answer is (0: just asked; more: from the worker's answers).
    age_ms: u64,
    url: [u8; URL_MAX],
    token: [u8; MAX_TOKEN_BYTES],
    error: [u8; ERROR_MAX],
    body: [u8; MAX_PROFILE_BYTES],
}

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Profiles {
    next_id: u64,
    slots: [ProfileSlot; PROFILE_SLOTS],
}

// SAFETY: as for Store: plain data and shared-memory addresses only.
unsafe impl PGRXSharedMemory for Profiles {}

impl Profiles {
    fn zeroed() -> Self {
        // SAFETY: numbers, bools, byte arrays and Durations: all-zero bytes are valid.
        unsafe { std::mem::zeroed() }
    }
}

impl ProfileSlot {
    /// The asker is done with the slot (answer copied, cancel, timeout or exit): free it,
    /// or, while the worker's request is under way, leave it to the worker to free.
    fn release(&mut self) {
        if self.state == FETCHING {
            self.abandoned = true;
        } else {
            self.free();
        }
    }

    fn free(&mut self) {
        self.token.fill(0);
        self.body_len = 0;
        self.token_len = 0;
        self.state = FREE;
        self.abandoned = false;
        self.answered = false;
    }
}

// SAFETY: the names are unique to this extension.
static STORE: PgLwLock<Store> = unsafe { PgLwLock::new(c"outseta_auth_jwks") };
// SAFETY: as above.
static PROFILES: PgLwLock<Profiles> = unsafe { PgLwLock::new(c"outseta_auth_profiles") };
static ENABLED: AtomicBool = AtomicBool::new(false);
// SAFETY: as above.
static KEY_EPOCH: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"outseta_auth_key_epoch") };

/// Whether the shared store exists (the library was preloaded).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// From `_PG_init` while `shared_preload_libraries` is being processed: reserve the shared
/// memory and register the worker.
pub fn init() {
    pg_shmem_init!(STORE = Store::zeroed());
    pg_shmem_init!(PROFILES = Profiles::zeroed());
    pg_shmem_init!(KEY_EPOCH = AtomicU64::new(0));
    BackgroundWorkerBuilder::new("outseta_auth JWKS worker")
        .set_type("outseta_auth JWKS worker")
        .set_library("outseta_auth")
        .set_function("outseta_auth_jwks_worker")
        .enable_shmem_access(None)
        // No database connection: it runs from postmaster start, on a standby too.
        .set_start_time(BgWorkerStartTime::PostmasterStart)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
    ENABLED.store(true, Ordering::Relaxed);
}

/// Bytes of shared memory the store takes.
pub fn shared_memory_bytes() -> usize {
    std::mem::size_of::<Store>() + std::mem::size_of::<Profiles>()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn put(dst: &mut [u8], src: &[u8]) -> usize {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    n
}

impl Slot {
    fn url(&self) -> &[u8] {
        &self.url[..self.url_len as usize]
    }
    fn error(&self) -> Option<String> {
        (self.error_len > 0).then(|| text(&self.error[..self.error_len as usize]))
    }
    fn has_keys(&self) -> bool {
        self.version != 0 && self.body_len > 0
    }
}

fn worker_alive(store: &Store, now: f64) -> bool {
    store.worker_pid != 0 && now - store.worker_seen < WORKER_STALE_SECS
}

fn wake_worker(store: &Store) {
    if store.worker_latch != 0 {
        // SAFETY: the address of the worker's PGPROC latch, in shared memory, set by the
        // worker itself; SetLatch may be called on another process's latch.
        unsafe { pg_sys::SetLatch(store.worker_latch as *mut pg_sys::Latch) }
    }
}

/// What a backend saw of a slot, copied out under the lock.
struct View {
    version: u64,
    attempts_done: u64,
    schedule: Schedule,
    error: Option<String>,
    fetching: bool,
    worker_alive: bool,
    /// The worker has never run (e.g. no free background worker slot).
    worker_never_started: bool,
}

fn view(i: usize, now: f64) -> View {
    let store = STORE.share();
    let s = &store.slots[i];
    View {
        version: if s.has_keys() { s.version } else { 0 },
        attempts_done: s.attempts_done,
        schedule: s.schedule,
        error: s.error(),
        fetching: s.fetching,
        worker_alive: worker_alive(&store, now),
        worker_never_started: store.worker_starts == 0,
    }
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
    /// URLs served by the per-backend path (no room in the store).
    fallback: Vec<String>,
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

enum Registered {
    Slot(usize),
    Full,
}

/// The slot of `url`, registering it (and asking for a first fetch) if it is new. The
/// slot's timing becomes this backend's.
fn register(url: &str, timing: &Timing) -> Registered {
    // Refused when set (validate_url); never truncated into a slot that would not match.
    if url.len() > URL_MAX {
        return Registered::Full;
    }
    {
        let store = STORE.share();
        if let Some(i) = store
            .slots
            .iter()
            .position(|s| s.used && s.url() == url.as_bytes())
        {
            if store.slots[i].timing == *timing {
                return Registered::Slot(i);
            }
        }
    }
    let mut store = STORE.exclusive();
    let found = store
        .slots
        .iter()
        .position(|s| s.used && s.url() == url.as_bytes());
    let i = match found {
        Some(i) => i,
        None => {
            let Some(i) = store.slots.iter().position(|s| !s.used) else {
                return Registered::Full;
            };
            let s = &mut store.slots[i];
            s.used = true;
            s.requested = true;
            s.forced = false;
            s.fetching = false;
            s.version = 0;
            s.body_len = 0;
            s.error_len = 0;
            s.attempts_done = 0;
            s.schedule = Schedule::default();
            s.url_len = put(&mut s.url, url.as_bytes()) as u16;
            wake_worker(&store);
            i
        }
    };
    store.slots[i].timing = *timing;
    Registered::Slot(i)
}

/// Ask the worker for a fetch of slot `i` and wake it.
fn request(i: usize, forced: bool) {
    let mut store = STORE.exclusive();
    store.slots[i].requested = true;
    store.slots[i].forced |= forced;
    wake_worker(&store);
}

/// Wait until an attempt on slot `i` finishes after `seen` attempts, at most `limit`.
/// Interruptible: a cancel or statement_timeout ends the wait at once (57014).
fn wait_for_attempt(i: usize, seen: u64, limit: Duration) -> bool {
    let started = Instant::now();
    loop {
        if STORE.share().slots[i].attempts_done != seen {
            return true;
        }
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            return false;
        }
        let ms = left.as_millis().clamp(1, 10) as std::ffi::c_long;
        // SAFETY: MyLatch is this backend's own latch; WaitLatch/ResetLatch are the
        // standard wait primitives (no lock is held here).
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                ms,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}

impl SharedKeys {
    /// The parsed key set of slot `i` at `version`, copying and parsing it only when the
    /// version is new to this backend. `fetched_at` is the store's last successful fetch
    /// (an unchanged body refetched keeps its version but moves this time).
    fn snapshot(
        &mut self,
        i: usize,
        url: &str,
        version: u64,
        fetched_at: f64,
    ) -> Result<KeySnapshot, AuthError> {
        if let Some(p) = self
            .parsed
            .iter()
            .find(|p| p.url == url && p.version == version)
        {
            return Ok(KeySnapshot {
                keys: p.keys.clone(),
                fetched_at,
                version,
            });
        }
        let (body, fetched_at, current) = {
            let store = STORE.share();
            let s = &store.slots[i];
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

impl KeyProvider for SharedKeys {
    fn keys(
        &mut self,
        url: &str,
        timing: &Timing,
        now: f64,
        refetch: Refetch,
    ) -> Result<KeySnapshot, AuthError> {
        validate_url(url, "outseta_auth.jwks_url")?;
        if self.fallback.iter().any(|u| u == url) {
            return self.local.keys(url, timing, now, refetch);
        }
        let i = match register(url, timing) {
            Registered::Slot(i) => i,
            Registered::Full => {
                pgrx::warning!(
                    "outseta_auth: the shared JWKS store is full ({SLOTS} URLs); this backend fetches {url} itself"
                );
                self.fallback.push(url.to_string());
                return self.local.keys(url, timing, now, refetch);
            }
        };
        let v = view(i, now);
        if v.version == 0 && v.worker_never_started {
            // No keys, and no worker has ever run to get them (say, no free background
            // worker slot): fetch here rather than fail. A worker that is restarting is
            // waited for below instead.
            return self.local.keys(url, timing, now, refetch);
        }
        // Wait for the worker only when it is fetching, or will fetch now; never while its
        // backoff holds a failing URL back (then the last error is the answer).
        let may = v.fetching || v.schedule.may_attempt(now, timing, true);
        let wait = match refetch {
            Refetch::Now => true,
            Refetch::IfAllowed => may,
            Refetch::No => v.version == 0 && (v.schedule.last_attempt == 0.0 || may),
        };
        let v = if wait && (v.worker_alive || v.version == 0) {
            if !v.fetching || refetch == Refetch::Now {
                request(i, refetch == Refetch::Now);
            }
            if !wait_for_attempt(i, v.attempts_done, timing.limits.total) && v.version == 0 {
                return Err(AuthError::JwksUnavailable {
                    url: url.to_string(),
                    cause: format!(
                        "timed out after {} ms waiting for the background worker's fetch",
                        timing.limits.total.as_millis()
                    ),
                });
            }
            view(i, now)
        } else {
            v
        };
        if v.version == 0 {
            return Err(unavailable(url, v.error.as_deref(), &v.schedule, timing));
        }
        if !v.schedule.within_max_stale(now, timing) {
            // The worker drops such keys too; never use them meanwhile.
            return Err(unavailable(
                url,
                Some("the keys are older than outseta_auth.jwks_max_stale"),
                &v.schedule,
                timing,
            ));
        }
        self.snapshot(i, url, v.version, v.schedule.fetched_at)
    }

    fn epoch(&self) -> u64 {
        epoch()
    }

    fn status(&self, now: f64) -> Vec<SourceStatus> {
        // Read in place under the shared lock: the store is over 500 KB, no copy of it
        // belongs on a backend's stack.
        let store = STORE.share();
        let alive = worker_alive(&store, now);
        let mut out: Vec<SourceStatus> = store
            .slots
            .iter()
            .filter(|s| s.used)
            .map(|s| {
                let mut st = SourceStatus {
                    source: text(s.url()),
                    fetched_at: (s.schedule.fetched_at > 0.0).then_some(s.schedule.fetched_at),
                    expires_at: (s.schedule.fetched_at > 0.0).then_some(s.schedule.expires_at),
                    last_error: s.error(),
                    fetch_count: s.schedule.fetch_count,
                    shared: true,
                    refresh_pending: s.requested || s.forced || s.fetching,
                    ..Default::default()
                };
                if let Some(note) = s.schedule.dropped_note(&s.timing) {
                    st.last_error = Some(match st.last_error {
                        Some(e) => format!("{e}; {note}"),
                        None => note,
                    });
                }
                if !alive {
                    let note = if store.worker_pid == 0 {
                        "the background worker is not running".to_string()
                    } else {
                        format!(
                            "the background worker (pid {}) has not been seen for {:.0} s",
                            store.worker_pid,
                            now - store.worker_seen
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
        out.extend(self.local.status(now));
        out
    }
}

// ---- profile requests, performed by the worker ----

/// Sleep on this backend's latch for up to `ms`, then act on a cancel or timeout (57014).
fn nap(ms: i64) {
    // SAFETY: MyLatch is this backend's own latch; no lock is held here.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// Frees (or hands to the worker to free) a profile slot, whatever way the wait ends,
/// including a cancel that unwinds out of it.
struct SlotClaim {
    i: usize,
    id: u64,
}

impl Drop for SlotClaim {
    fn drop(&mut self) {
        let mut p = PROFILES.exclusive();
        let s = &mut p.slots[self.i];
        if s.id == self.id {
            s.release();
        }
    }
}

/// A backend that exits on FATAL (pg_terminate_backend, a lost client) does not unwind, so
/// no [`SlotClaim`] is dropped: this `before_shmem_exit` callback releases its slots.
#[pg_guard]
unsafe extern "C-unwind" fn release_slots_at_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    // SAFETY: MyProcPid is this process's pid, set at start.
    let me = unsafe { pg_sys::MyProcPid };
    let mut p = PROFILES.exclusive();
    for s in p
        .slots
        .iter_mut()
        .filter(|s| s.state != FREE && s.owner == me)
    {
        s.release();
    }
}

/// Register [`release_slots_at_exit`] once per backend, before its first profile request.
fn release_slots_at_exit_once() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: a plain function with no argument, registered once per process.
        unsafe { pg_sys::before_shmem_exit(Some(release_slots_at_exit), pg_sys::Datum::from(0)) };
    }
}

/// Ask the background worker to call the profile endpoint with `token`. `None` when there
/// is no worker to ask (not preloaded, or no worker ever started): the caller makes the
/// request itself. The wait is bounded by the request's own timeout (plus a margin) and
/// ends at once on a cancel or statement_timeout (57014).
pub fn ask_profile(
    url: &str,
    token: &str,
    limits: FetchLimits,
    ttl: f64,
) -> Option<(Result<Response, String>, f64)> {
    if !enabled() || STORE.share().worker_starts == 0 {
        return None;
    }
    if url.len() > URL_MAX || token.len() > MAX_TOKEN_BYTES {
        return Some((Err("the URL or the token is too large".into()), 0.0));
    }
    release_slots_at_exit_once();
    let deadline = Instant::now() + limits.total + Duration::from_millis(500);
    let claim = loop {
        {
            let mut p = PROFILES.exclusive();
            if let Some(i) = p.slots.iter().position(|s| s.state == FREE) {
                p.next_id += 1;
                let id = p.next_id;
                let s = &mut p.slots[i];
                s.id = id;
                // SAFETY: MyProcPid is this process's pid, set at start.
                s.owner = unsafe { pg_sys::MyProcPid };
                s.url_len = put(&mut s.url, url.as_bytes()) as u16;
                s.token_len = put(&mut s.token, token.as_bytes()) as u32;
                s.limits = limits;
                s.ttl_ms = (ttl * 1000.0) as u64;
                s.age_ms = 0;
                s.error_len = 0;
                s.body_len = 0;
                s.answered = false;
                s.abandoned = false;
                // SAFETY: MyProc is this process's PGPROC in shared memory.
                s.requester_latch = unsafe { &raw mut (*pg_sys::MyProc).procLatch } as usize;
                s.state = PENDING;
                break SlotClaim { i, id };
            }
        }
        if Instant::now() >= deadline {
            return Some((
                Err(format!(
                    "all {PROFILE_SLOTS} profile request slots of the background worker stayed busy"
                )),
                0.0,
            ));
        }
        nap(5);
    };
    wake_worker(&STORE.share());
    loop {
        {
            let p = PROFILES.share();
            let s = &p.slots[claim.i];
            if s.id == claim.id && s.state == DONE {
                let answer = if s.answered {
                    Ok(Response {
                        status: s.status,
                        body: s.body[..s.body_len as usize].to_vec(),
                    })
                } else {
                    Err(text(&s.error[..s.error_len as usize]))
                };
                let age = s.age_ms as f64 / 1000.0;
                drop(p);
                drop(claim);
                return Some((answer, age));
            }
        }
        if Instant::now() >= deadline {
            return Some((
                Err(format!(
                    "timed out after {} ms waiting for the background worker's request",
                    limits.total.as_millis()
                )),
                0.0,
            ));
        }
        nap(10);
    }
}

type ProfileFetch = std::thread::JoinHandle<Result<Response, String>>;

/// A profile request under way: the slot's id, the URL and token (to keep the answer), and
/// the request's thread.
type ProfileInFlight = (u64, String, String, ProfileFetch);

/// Worker: answer a pending profile slot from the kept answers, or start its request.
fn start_profile(i: usize, answers: &AnswerCache) -> Option<ProfileInFlight> {
    let (id, url, token, limits, ttl) = {
        let mut p = PROFILES.exclusive();
        let s = &mut p.slots[i];
        if s.state != PENDING {
            return None;
        }
        s.state = FETCHING;
        (
            s.id,
            text(&s.url[..s.url_len as usize]),
            text(&s.token[..s.token_len as usize]),
            s.limits,
            s.ttl_ms as f64 / 1000.0,
        )
    };
    if let Some((r, age)) = answers.lookup(&url, &token, now(), ttl) {
        PROFILES.exclusive().slots[i].age_ms = (age * 1000.0) as u64;
        answer_profile(i, id, Ok(r));
        return None;
    }
    let (u, t) = (url.clone(), token.clone());
    let started = without_signals(move || {
        std::thread::Builder::new()
            .name("outseta_auth profile".into())
            .spawn(move || profile::fetch(&u, &t, limits))
    });
    match started {
        Ok(h) => Some((id, url, token, h)),
        Err(e) => {
            answer_profile(i, id, Err(format!("could not start the request: {e}")));
            None
        }
    }
}

/// Worker: store a profile answer and wake the backend waiting for it.
fn answer_profile(i: usize, id: u64, answer: Result<Response, String>) {
    let mut p = PROFILES.exclusive();
    let s = &mut p.slots[i];
    if s.id != id || s.state != FETCHING {
        return;
    }
    if s.abandoned {
        s.free();
        return;
    }
    match answer {
        Ok(r) => {
            s.answered = true;
            s.status = r.status;
            s.body_len = put(&mut s.body, &r.body) as u32;
        }
        Err(e) => {
            s.answered = false;
            s.error_len = put(&mut s.error, e.as_bytes()) as u16;
        }
    }
    s.token.fill(0);
    s.state = DONE;
    if s.requester_latch != 0 {
        // SAFETY: the latch of the waiting backend's PGPROC, in shared memory; SetLatch may
        // be called on another process's latch.
        unsafe { pg_sys::SetLatch(s.requester_latch as *mut pg_sys::Latch) }
    }
}

// ---- the background worker ----

type Fetch = std::thread::JoinHandle<Result<outseta_auth_core::fetch::Fetched, String>>;

/// The worker's main loop: every 100 ms (or when a backend wakes it), start the fetches
/// that are due and store the ones that finished. Each fetch runs on its own thread (plain
/// Rust, no Postgres calls, signals blocked), so one hung issuer delays no other URL.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn outseta_auth_jwks_worker(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    {
        let mut store = STORE.exclusive();
        // SAFETY: MyProc is this process's PGPROC, in shared memory; its latch stays valid
        // for the life of the process. MyProcPid is set for every process.
        unsafe {
            store.worker_latch = &raw mut (*pg_sys::MyProc).procLatch as usize;
            store.worker_pid = pg_sys::MyProcPid;
        }
        store.worker_seen = now();
        store.worker_starts += 1;
    }
    log!(
        "outseta_auth JWKS worker started ({SLOTS} URLs, {} bytes of shared memory)",
        shared_memory_bytes()
    );
    let mut in_flight: [Option<(String, Timing, Fetch)>; SLOTS] = Default::default();
    let mut profiles_in_flight: [Option<ProfileInFlight>; PROFILE_SLOTS] = Default::default();
    // Definitive profile answers, reused for every backend of the cluster (per token, for
    // the asker's TTL).
    let mut answers = AnswerCache::default();
    // A request left in flight by a previous incarnation of the worker died with it: ask
    // again (a JWKS slot still marked fetching would otherwise never be requested again,
    // and its backends would wait out http_timeout until the next scheduled refresh).
    {
        let mut p = PROFILES.exclusive();
        for s in p.slots.iter_mut().filter(|s| s.state == FETCHING) {
            s.state = PENDING;
        }
    }
    {
        let mut store = STORE.exclusive();
        for s in store.slots.iter_mut().filter(|s| s.used && s.fetching) {
            s.fetching = false;
            s.requested = true;
        }
    }
    let mut nap = Duration::from_millis(100);
    while BackgroundWorker::wait_latch(Some(nap)) {
        // A backend waits for each profile request: look at finished ones every 5 ms.
        nap = if profiles_in_flight.iter().any(Option::is_some) {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(100)
        };
        for (i, slot) in profiles_in_flight.iter_mut().enumerate() {
            match slot.take() {
                Some((id, url, token, handle)) if handle.is_finished() => {
                    let answer = handle
                        .join()
                        .unwrap_or_else(|_| Err("the request thread panicked".into()));
                    if let Ok(r) = &answer {
                        answers.store(&url, &token, now(), r);
                    }
                    answer_profile(i, id, answer);
                }
                Some(running) => *slot = Some(running),
                None => *slot = start_profile(i, &answers),
            }
        }
        if profiles_in_flight.iter().any(Option::is_some) {
            nap = Duration::from_millis(5);
        }
        STORE.exclusive().worker_seen = now();
        for (i, slot) in in_flight.iter_mut().enumerate() {
            match slot.take() {
                Some((url, timing, handle)) if handle.is_finished() => {
                    let result = handle
                        .join()
                        .unwrap_or_else(|_| Err("the fetch thread panicked".into()));
                    store_result(i, &url, &timing, result);
                }
                Some(running) => *slot = Some(running),
                None => *slot = start_if_due(i),
            }
        }
    }
    {
        let mut store = STORE.exclusive();
        store.worker_pid = 0;
        store.worker_latch = 0;
    }
    // Exit code 1: the postmaster starts the worker again after its restart time, unless
    // the cluster is shutting down (code 0 would unregister it for good).
    // SAFETY: proc_exit runs Postgres' exit callbacks and never returns.
    unsafe { pg_sys::proc_exit(1) }
}

/// Start a fetch of slot `i` if one is due; drop keys older than `max_stale`.
fn start_if_due(i: usize) -> Option<(String, Timing, Fetch)> {
    let t = now();
    let mut store = STORE.exclusive();
    let s = &mut store.slots[i];
    if !s.used {
        return None;
    }
    let due = s.forced || s.schedule.due(t, &s.timing, s.has_keys(), s.requested);
    if !due {
        if s.has_keys() && !s.schedule.within_max_stale(t, &s.timing) {
            drop_keys(s, t);
        }
        return None;
    }
    s.schedule.on_attempt(t);
    s.fetching = true;
    let (url, timing) = (text(s.url()), s.timing);
    drop(store);
    let thread_url = url.clone();
    let handle = without_signals(move || {
        std::thread::Builder::new()
            .name("outseta_auth fetch".into())
            .spawn(move || {
                HttpFetcher
                    .fetch(&thread_url, timing.limits)
                    .and_then(|f| KeySet::parse(&f.body).map(|_| f))
            })
    });
    match handle {
        Ok(h) => Some((url, timing, h)),
        Err(e) => {
            store_result(
                i,
                &url,
                &timing,
                Err(format!("could not start a fetch: {e}")),
            );
            None
        }
    }
}

/// Run `f` (which spawns a thread) with every signal blocked, so that the new thread
/// inherits a mask that keeps Postgres' signal handlers on the process's own thread.
pub fn without_signals<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigfillset/pthread_sigmask on local, initialised sigset_t values; the old
    // mask is restored before returning.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

fn store_result(
    i: usize,
    url: &str,
    timing: &Timing,
    result: Result<outseta_auth_core::fetch::Fetched, String>,
) {
    let t = now();
    let mut store = STORE.exclusive();
    let next = store.next_version + 1;
    let s = &mut store.slots[i];
    if !s.used || s.url() != url.as_bytes() {
        return;
    }
    let mut bumped = false;
    match result {
        Ok(f) => {
            if !s.has_keys() || s.body[..s.body_len as usize] != f.body[..] {
                s.body_len = put(&mut s.body, &f.body) as u32;
                s.version = next;
                bumped = true;
            }
            s.schedule.on_success(t, f.max_age, timing);
            s.error_len = 0;
        }
        Err(cause) => {
            s.schedule.on_failure();
            s.error_len = put(&mut s.error, cause.as_bytes()) as u16;
            if s.has_keys() && !s.schedule.within_max_stale(t, &s.timing) {
                drop_keys(s, t);
            }
        }
    }
    s.requested = false;
    s.forced = false;
    s.fetching = false;
    s.attempts_done += 1;
    if bumped {
        store.next_version = next;
        key_sets_changed();
    }
}

/// Moves whenever a slot's key set changes (a new version, or keys dropped): backends
/// compare it on every verification, cache hits included ([`KeyProvider::epoch`]).
fn key_sets_changed() {
    KEY_EPOCH.get().fetch_add(1, Ordering::Release);
}

/// The store's epoch (see [`key_sets_changed`]): one atomic read.
pub fn epoch() -> u64 {
    KEY_EPOCH.get().load(Ordering::Acquire)
}

fn drop_keys(s: &mut Slot, t: f64) {
    key_sets_changed();
    s.body_len = 0;
    s.version = 0;
    s.schedule.on_dropped(t);
}
