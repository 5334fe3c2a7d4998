//! The background worker: every 100 ms (5 ms while a profile request is under way, or at
//! once when a backend wakes it), one look at the key store and one at the profile channel.
//! Fetches and requests run on threads of their own (plain Rust, no Postgres calls,
//! signals blocked), so one hung issuer delays no other URL.
//!
//! It reads no settings (the timing of each URL is in its slot), so it handles SIGTERM only.

use std::sync::atomic::Ordering;
use std::time::Duration;

use outseta_auth_core::clock::monotonic as mono;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

use super::key_store::{self, SLOTS};
use super::profiles::{self, WorkerRequests};
use super::{my_latch, my_pid, shared_memory_bytes, WORKER, WORKER_SEEN};

fn seen_now() {
    WORKER_SEEN.get().store(mono().to_bits(), Ordering::Relaxed);
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn outseta_auth_jwks_worker(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    seen_now();
    {
        let mut w = WORKER.exclusive();
        w.latch = my_latch();
        w.pid = my_pid();
        w.starts += 1;
    }
    // What a previous incarnation had under way died with it.
    key_store::worker_started();
    profiles::worker_started();
    log!(
        "outseta_auth JWKS worker started ({SLOTS} URLs, {} bytes of shared memory)",
        shared_memory_bytes()
    );
    let mut fetches: [Option<key_store::Fetch>; SLOTS] = Default::default();
    let mut requests = WorkerRequests::default();
    let mut nap = Duration::from_millis(100);
    while BackgroundWorker::wait_latch(Some(nap)) {
        seen_now();
        profiles::tick(&mut requests);
        key_store::tick(&mut fetches);
        // A backend waits for each profile request: look at finished ones every 5 ms.
        nap = Duration::from_millis(if requests.busy() { 5 } else { 100 });
    }
    {
        let mut w = WORKER.exclusive();
        w.pid = 0;
        w.latch = 0;
    }
    // Exit code 1: the postmaster starts the worker again after its restart time, unless
    // the cluster is shutting down (code 0 would unregister it for good).
    // SAFETY: proc_exit runs Postgres' exit callbacks and never returns.
    unsafe { pg_sys::proc_exit(1) }
}
