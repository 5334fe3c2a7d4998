//! The profile request channel: backends hand Outseta profile requests
//! (`outseta_profile()`, `profile_check`) to the background worker and wait for the answer.
//!
//! A slot goes `Free -> Pending` (a backend filled it) `-> Fetching` (the worker took it)
//! `-> Done` (answered) `-> Free`. Backends asking about the same token while a slot for it
//! is not free join it as waiters: one request answers all of them, parallel workers
//! included. Each slot has an end of life:
//! - a waiter leaves when it has copied the answer, is cancelled (a guard, on unwind), or
//!   exits (a `before_shmem_exit` callback: a FATAL exit does not unwind); the last one
//!   out frees a `Pending` or `Done` slot;
//! - a `Fetching` slot nobody waits for any more is freed by the worker at once (its
//!   request thread runs on detached, a bounded number of them);
//! - the worker frees slots whose waiters are all gone (a process that vanished) or whose
//!   deadline passed.
//!
//! A backend waits first for a place (at most `http_timeout`), then for the answer (the
//! request's own deadline): two bounds, not one shared by both.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use outseta_auth_core::clock::monotonic as mono;
use outseta_auth_core::fetch::FetchLimits;
use outseta_auth_core::profile::{self, AnswerCache, Response, MAX_PROFILE_BYTES};
use outseta_auth_core::verify::MAX_TOKEN_BYTES;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use super::{my_latch, my_pid, process_gone, put, text, wake_worker, worker_view};

/// Profile requests the worker can carry at once.
pub const PROFILE_SLOTS: usize = 4;
/// Backends that can wait on one request.
const WAITERS: usize = 8;
/// Request threads the worker lets run on after nobody waits for them.
const DETACHED_MAX: usize = PROFILE_SLOTS;
const URL_MAX: usize = outseta_auth_core::fetch::MAX_URL_BYTES;
const ERROR_MAX: usize = 512;
/// A request's deadline is its timeout plus this; a `Done` slot not collected this long
/// after it is freed by the worker.
const MARGIN: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum State {
    Free = 0,
    Pending = 1,
    Fetching = 2,
    Done = 3,
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Waiter {
    /// 0: no waiter in this place.
    pid: i32,
    /// Its process latch (`*mut Latch` in shared memory).
    latch: usize,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct ProfileSlot {
    state: State,
    answered: bool,
    status: u16,
    url_len: u16,
    error_len: u16,
    token_len: u32,
    body_len: u32,
    /// Identifies this use of the slot.
    id: u64,
    waiters: [Waiter; WAITERS],
    /// Monotonic seconds after which nobody waits for the answer any more.
    deadline: f64,
    limits: FetchLimits,
    /// The first asker's `outseta_auth.profile_ttl`: how old a kept answer may be.
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

// SAFETY: plain data and shared-memory addresses only.
unsafe impl PGRXSharedMemory for Profiles {}

impl Profiles {
    fn zeroed() -> Self {
        // SAFETY: numbers, bools, byte arrays, Durations and an enum whose variant 0
        // exists (State::Free): all-zero bytes are valid.
        unsafe { std::mem::zeroed() }
    }
}

// SAFETY: the name is unique to this extension.
static PROFILES: PgLwLock<Profiles> = unsafe { PgLwLock::new(c"outseta_auth_profiles") };

pub(super) fn init() {
    pg_shmem_init!(PROFILES = Profiles::zeroed());
}

pub(super) fn bytes() -> usize {
    std::mem::size_of::<Profiles>()
}

impl ProfileSlot {
    fn free(&mut self) {
        self.token.fill(0);
        self.body_len = 0;
        self.token_len = 0;
        self.waiters = [Waiter::default(); WAITERS];
        self.state = State::Free;
        self.answered = false;
    }

    fn nobody_waits(&self) -> bool {
        self.waiters.iter().all(|w| w.pid == 0)
    }

    fn asks(&self, url: &str, token: &str) -> bool {
        self.url[..self.url_len as usize] == *url.as_bytes()
            && self.token[..self.token_len as usize] == *token.as_bytes()
    }

    /// Waiter `pid` leaves; the last one out frees the slot unless the worker holds it.
    fn leave(&mut self, pid: i32) {
        for w in self.waiters.iter_mut().filter(|w| w.pid == pid) {
            *w = Waiter::default();
        }
        if self.nobody_waits() && matches!(self.state, State::Pending | State::Done) {
            self.free();
        }
    }

    fn join(&mut self, pid: i32) -> bool {
        match self.waiters.iter_mut().find(|w| w.pid == 0) {
            Some(w) => {
                *w = Waiter {
                    pid,
                    latch: my_latch(),
                };
                true
            }
            None => false,
        }
    }
}

/// Profile slots not free (for the soak benchmark).
pub fn slots_in_use() -> usize {
    PROFILES
        .share()
        .slots
        .iter()
        .filter(|s| s.state != State::Free)
        .count()
}

/// Leaves its slot whatever way the wait ends, a cancel unwinding out of it included.
struct Claim {
    i: usize,
    id: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut p = PROFILES.exclusive();
        let s = &mut p.slots[self.i];
        if s.id == self.id && s.state != State::Free {
            s.leave(my_pid());
        }
    }
}

/// A backend that exits on FATAL (pg_terminate_backend, a lost client) does not unwind, so
/// no [`Claim`] is dropped: this `before_shmem_exit` callback leaves its slots.
#[pg_guard]
unsafe extern "C-unwind" fn leave_slots_at_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    let me = my_pid();
    let mut p = PROFILES.exclusive();
    for s in p.slots.iter_mut().filter(|s| s.state != State::Free) {
        s.leave(me);
    }
}

/// Ask the background worker to call the profile endpoint with `token`. `None` when there
/// is no worker to ask (not preloaded, or no worker ever started): the caller makes the
/// request itself. Returns the answer and its age in seconds.
pub fn ask_profile(
    url: &str,
    token: &str,
    limits: FetchLimits,
    ttl: f64,
) -> Option<(Result<Response, String>, f64)> {
    if !super::enabled() || !worker_view(mono()).ever_started {
        return None;
    }
    if url.len() > URL_MAX || token.len() > MAX_TOKEN_BYTES {
        return Some((Err("the URL or the token is too large".into()), 0.0));
    }
    static AT_EXIT: AtomicBool = AtomicBool::new(false);
    super::at_exit_once(&AT_EXIT, leave_slots_at_exit);
    let me = my_pid();
    // No caller waits past its own deadline, even on a request another one started.
    let own_deadline = mono() + (limits.total + MARGIN).as_secs_f64();
    let waited_for_token = std::cell::Cell::new(false);
    // First bound: a place (joining a request about the same token, or a free slot).
    let place_deadline = Instant::now() + limits.total;
    let placed = super::wait_until(place_deadline, 5, || {
        let mut p = PROFILES.exclusive();
        let p = &mut *p;
        // One token takes one slot at most: join any slot asking about it; when all its
        // places are taken, wait for one (never a second slot, which would let one token
        // take every slot from everyone else).
        let mut asked = false;
        for (i, s) in p.slots.iter_mut().enumerate() {
            if matches!(s.state, State::Pending | State::Fetching | State::Done)
                && !s.nobody_waits()
                && s.asks(url, token)
            {
                asked = true;
                if s.join(me) {
                    // An answer kept for the cluster must be young enough for every waiter.
                    s.ttl_ms = s.ttl_ms.min((ttl * 1000.0) as u64);
                    return Some((i, s.id, s.deadline.min(own_deadline)));
                }
            }
        }
        if asked {
            waited_for_token.set(true);
            return None;
        }
        let i = p.slots.iter().position(|s| s.state == State::Free)?;
        p.next_id += 1;
        let id = p.next_id;
        let deadline = mono() + (limits.total + MARGIN).as_secs_f64();
        let s = &mut p.slots[i];
        s.free();
        s.id = id;
        s.url_len = put(&mut s.url, url.as_bytes()) as u16;
        s.token_len = put(&mut s.token, token.as_bytes()) as u32;
        s.limits = limits;
        s.ttl_ms = (ttl * 1000.0) as u64;
        s.age_ms = 0;
        s.error_len = 0;
        s.deadline = deadline;
        s.join(me);
        s.state = State::Pending;
        Some((i, id, deadline))
    });
    let Some((i, id, deadline)) = placed else {
        return Some((
            Err(if waited_for_token.get() {
                "every place in the background worker's request about this token stayed taken"
                    .to_string()
            } else {
                format!(
                    "all {PROFILE_SLOTS} profile request slots of the background worker stayed busy"
                )
            }),
            0.0,
        ));
    };
    let claim = Claim { i, id };
    wake_worker();
    // Second bound: the answer, by the request's own deadline.
    let left = Duration::from_secs_f64((deadline - mono()).max(0.0));
    let answer = super::wait_until(Instant::now() + left, 10, || {
        let p = PROFILES.share();
        let s = &p.slots[claim.i];
        if s.id != claim.id || s.state == State::Free {
            // Freed under us (the worker reclaimed it past its deadline).
            return Some(Err("the request was dropped".to_string()));
        }
        if s.state != State::Done {
            return None;
        }
        Some(if s.answered {
            Ok((
                Response {
                    status: s.status,
                    body: s.body[..s.body_len as usize].to_vec(),
                },
                s.age_ms,
            ))
        } else {
            Err(text(&s.error[..s.error_len as usize]))
        })
    });
    drop(claim);
    Some(match answer {
        Some(Ok((r, age_ms))) => (Ok(r), age_ms as f64 / 1000.0),
        Some(Err(e)) => (Err(e), 0.0),
        None => (
            Err(format!(
                "timed out after {} ms waiting for the background worker's request",
                limits.total.as_millis()
            )),
            0.0,
        ),
    })
}

// ---- the worker's side ----

type Request = std::thread::JoinHandle<Result<Response, String>>;

/// The worker's requests: per slot the one under way (slot id, URL, token, thread), the
/// detached ones, and the answers kept for the cluster.
#[derive(Default)]
pub(super) struct WorkerRequests {
    in_flight: [Option<(u64, String, String, Request)>; PROFILE_SLOTS],
    detached: Vec<Request>,
    answers: AnswerCache,
}

impl WorkerRequests {
    pub(super) fn busy(&self) -> bool {
        self.in_flight.iter().any(Option::is_some)
    }
}

/// At worker start: requests the previous worker had under way died with it; ask again.
pub(super) fn worker_started() {
    let mut p = PROFILES.exclusive();
    for s in p.slots.iter_mut().filter(|s| s.state == State::Fetching) {
        s.state = State::Pending;
    }
}

/// One look at the channel: answer finished requests, start pending ones, free what
/// nobody waits for. Scans under the shared lock; the exclusive one only to write.
pub(super) fn tick(w: &mut WorkerRequests) {
    w.detached.retain(|h| !h.is_finished());
    for i in 0..PROFILE_SLOTS {
        if let Some((id, url, token, handle)) = w.in_flight[i].take() {
            if handle.is_finished() {
                let result = handle
                    .join()
                    .unwrap_or_else(|_| Err("the request thread panicked".into()));
                if let Ok(r) = &result {
                    w.answers
                        .store(&url, &token, outseta_auth_core::claims::now(), r);
                }
                answer(i, id, result);
            } else {
                w.in_flight[i] = Some((id, url, token, handle));
            }
        }
    }
    let now = mono();
    let mut pending = Vec::new();
    let mut reclaim = Vec::new();
    {
        let p = PROFILES.share();
        for (i, s) in p.slots.iter().enumerate() {
            match s.state {
                State::Free => {}
                State::Pending => pending.push(i),
                State::Fetching if s.nobody_waits() => reclaim.push((i, s.id)),
                _ if now > s.deadline + MARGIN.as_secs_f64()
                    || s.waiters.iter().all(|w| w.pid == 0 || process_gone(w.pid)) =>
                {
                    reclaim.push((i, s.id))
                }
                _ => {}
            }
        }
    }
    for (i, id) in reclaim {
        let mut p = PROFILES.exclusive();
        let s = &mut p.slots[i];
        // The same use of the slot as at the scan (a new asker may have taken it since).
        if s.id != id || s.state == State::Free {
            continue;
        }
        if s.state == State::Fetching {
            // Nobody waits: free the slot now and let the request run out on its own (its
            // timeout bounds it), unless too many already do.
            if w.detached.len() >= DETACHED_MAX || !s.nobody_waits() {
                continue;
            }
            if let Some((_, _, _, h)) = w.in_flight[i].take() {
                w.detached.push(h);
            }
        }
        s.free();
    }
    for i in pending {
        start(i, w);
    }
}

/// Answer pending slot `i` from the kept answers, or start its request.
fn start(i: usize, w: &mut WorkerRequests) {
    if w.in_flight[i].is_some() {
        return;
    }
    let (id, url, token, limits, ttl) = {
        let mut p = PROFILES.exclusive();
        let s = &mut p.slots[i];
        if s.state != State::Pending {
            return;
        }
        s.state = State::Fetching;
        (
            s.id,
            text(&s.url[..s.url_len as usize]),
            text(&s.token[..s.token_len as usize]),
            s.limits,
            s.ttl_ms as f64 / 1000.0,
        )
    };
    let wall = outseta_auth_core::claims::now();
    if let Some((r, age)) = w.answers.lookup(&url, &token, wall, ttl) {
        PROFILES.exclusive().slots[i].age_ms = (age * 1000.0) as u64;
        answer(i, id, Ok(r));
        return;
    }
    let (u, t) = (url.clone(), token.clone());
    match super::spawn_without_signals("outseta_auth profile", move || {
        profile::fetch(&u, &t, limits)
    }) {
        Ok(h) => w.in_flight[i] = Some((id, url, token, h)),
        Err(e) => answer(i, id, Err(format!("could not start the request: {e}"))),
    }
}

/// Store an answer and wake the backends waiting for it.
fn answer(i: usize, id: u64, answer: Result<Response, String>) {
    let mut p = PROFILES.exclusive();
    let s = &mut p.slots[i];
    if s.id != id || s.state != State::Fetching {
        return;
    }
    if s.nobody_waits() {
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
    s.token_len = 0;
    s.state = State::Done;
    for w in s.waiters.iter().filter(|w| w.pid != 0 && w.latch != 0) {
        // SAFETY: the latch of a waiting backend's PGPROC, in shared memory; SetLatch may
        // be called on another process's latch.
        unsafe { pg_sys::SetLatch(w.latch as *mut pg_sys::Latch) }
    }
}
