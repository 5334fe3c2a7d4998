//! What the cluster shares when the library is preloaded (`shared_preload_libraries =
//! 'outseta_auth'`): one module per idea.
//!
//! - [`key_store`]: one JWKS per URL in shared memory, fetched by the background worker;
//!   backends register the URLs they need and carry out the core's [`decide`] on a slot.
//! - [`profiles`]: the profile request channel: backends hand Outseta profile requests to
//!   the worker and wait for the answer (asks about one token share one request).
//! - [`verified`]: tokens whose signature verified, so that each token costs one RSA
//!   check per cluster.
//! - [`worker`]: the background worker's loop.
//!
//! Every slot has an owner and an end of life: URL slots are freed when unused for
//! [`key_store::idle_after`]; a profile slot lists the backends waiting on it, each of
//! which leaves it when it has its answer, is cancelled, or exits (a `before_shmem_exit`
//! callback, since a FATAL exit does not unwind), and the worker frees slots whose waiters
//! are gone or whose deadline has passed.
//!
//! [`decide`]: outseta_auth_core::decision::decide

pub mod key_store;
pub mod profiles;
pub mod verified;
pub mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};

pub use key_store::{epoch, SharedKeys};
pub use profiles::ask_profile;
pub use verified::VerifiedTokenTable;

/// A worker that has not looked at the store for this long is reported as not running.
const WORKER_STALE_SECS: f64 = 10.0;

/// Who the background worker is: written by the worker at start and exit.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct WorkerInfo {
    pid: i32,
    /// The worker's process latch (`*mut Latch` in shared memory), to wake it.
    latch: usize,
    /// How many times a worker has started (0: never, e.g. no free worker slot).
    starts: u32,
}

// SAFETY: plain numbers and an address into shared memory that is the same in every
// process of the cluster.
unsafe impl PGRXSharedMemory for WorkerInfo {}

// SAFETY: the names are unique to this extension.
static WORKER: PgLwLock<WorkerInfo> = unsafe { PgLwLock::new(c"outseta_auth_worker") };
// SAFETY: as above. When the worker last looked at the store (monotonic seconds as f64
// bits): written every tick without a lock.
static WORKER_SEEN: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"outseta_auth_worker_seen") };
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether the shared store exists (the library was preloaded).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// From `_PG_init` while `shared_preload_libraries` is being processed: reserve the shared
/// memory and register the worker.
pub fn init() {
    pg_shmem_init!(
        WORKER = WorkerInfo {
            pid: 0,
            latch: 0,
            starts: 0
        }
    );
    pg_shmem_init!(WORKER_SEEN = AtomicU64::new(0));
    key_store::init();
    profiles::init();
    verified::init();
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

/// Bytes of shared memory the extension takes.
pub fn shared_memory_bytes() -> usize {
    key_store::bytes() + profiles::bytes() + verified::bytes() + std::mem::size_of::<WorkerInfo>()
}

/// One shared area, as `outseta_shared_slots()` shows it.
pub struct Area {
    pub name: &'static str,
    pub in_use: usize,
    pub slots: usize,
    pub bytes: usize,
    /// Uses that saved work (verified tokens: signature checks skipped); None elsewhere.
    pub hits: Option<u64>,
}

/// The shared areas; empty without preload.
pub fn slots() -> Vec<Area> {
    if !enabled() {
        return Vec::new();
    }
    vec![
        Area {
            name: "jwks",
            in_use: key_store::slots_in_use(),
            slots: key_store::SLOTS,
            bytes: key_store::bytes(),
            hits: None,
        },
        Area {
            name: "profile",
            in_use: profiles::slots_in_use(),
            slots: profiles::PROFILE_SLOTS,
            bytes: profiles::bytes(),
            hits: None,
        },
        Area {
            name: "tokens",
            in_use: verified::in_use(outseta_auth_core::Now::read().wall),
            slots: verified::ENTRIES,
            bytes: verified::bytes(),
            hits: Some(verified::hits()),
        },
    ]
}

/// The worker, as backends see it.
#[derive(Clone, Copy)]
pub struct WorkerView {
    pub pid: i32,
    pub alive: bool,
    pub ever_started: bool,
    /// Seconds since it last looked at the store.
    pub unseen_for: f64,
}

pub fn worker_view(now: f64) -> WorkerView {
    let w = *WORKER.share();
    let seen = f64::from_bits(WORKER_SEEN.get().load(Ordering::Relaxed));
    WorkerView {
        pid: w.pid,
        alive: w.pid != 0 && now - seen < WORKER_STALE_SECS,
        ever_started: w.starts > 0,
        unseen_for: now - seen,
    }
}

/// Wake the worker (after asking it for something).
pub fn wake_worker() {
    let latch = WORKER.share().latch;
    if latch != 0 {
        // SAFETY: the address of the worker's PGPROC latch, in shared memory, set by the
        // worker itself; SetLatch may be called on another process's latch.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) }
    }
}

/// This process's latch, for others to wake it.
pub fn my_latch() -> usize {
    // SAFETY: MyProc is this process's PGPROC in shared memory, valid for its life.
    unsafe { &raw mut (*pg_sys::MyProc).procLatch as usize }
}

pub fn my_pid() -> i32 {
    // SAFETY: MyProcPid is set at process start.
    unsafe { pg_sys::MyProcPid }
}

/// Sleep on this process's latch for up to `ms` (woken early by SetLatch), then act on a
/// cancel or statement_timeout (57014). Call with no LWLock held. A cancel raises an ERROR
/// that pgrx turns into a Rust panic unwinding to the SQL function: RefCell borrows held by
/// callers (the engine's, the key provider's) are released on the way out.
pub fn nap(ms: u64) {
    // SAFETY: MyLatch is this process's own latch; WaitLatch/ResetLatch are the standard
    // wait primitives, and no lock is held here.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms.max(1) as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// Wait, interruptibly, until `done()` returns Some, at most until `deadline`; every wait
/// of a backend on the worker goes through here. `step_ms`: the longest nap between looks
/// (the worker also sets the latch when it answers).
pub fn wait_until<T>(
    deadline: Instant,
    step_ms: u64,
    mut done: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(t) = done() {
            return Some(t);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        nap((left.as_millis() as u64).clamp(1, step_ms));
    }
}

/// Start a thread of plain Rust (no Postgres calls) with every signal blocked, so that
/// Postgres' signal handlers keep running on the process's own thread only. Every thread
/// the extension starts goes through here.
pub fn spawn_without_signals<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    // SAFETY: sigfillset/pthread_sigmask on local, initialised sigset_t values; the old
    // mask is restored before returning, and the new thread inherits the full mask.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = std::thread::Builder::new().name(name.into()).spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// Whether process `pid` is gone (a slot owner that exited without releasing it).
pub fn process_gone(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid > 0
        && unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Copy `src` into `dst`; the caller has checked that it fits (nothing is ever truncated
/// where it would be looked up).
pub(crate) fn put(dst: &mut [u8], src: &[u8]) -> usize {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    n
}

/// Register `f` with `before_shmem_exit` once per process (guarded by `flag`).
pub(crate) fn at_exit_once(
    flag: &AtomicBool,
    f: unsafe extern "C-unwind" fn(std::ffi::c_int, pg_sys::Datum),
) {
    if !flag.swap(true, Ordering::Relaxed) {
        // SAFETY: a plain function with no argument, registered once per process.
        unsafe { pg_sys::before_shmem_exit(Some(f), pg_sys::Datum::from(0)) };
    }
}
