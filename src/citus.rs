//! Citus: the request's verified identity reaches the worker nodes, whatever path set it.
//!
//! Citus runs a distributed query's shard queries on the worker nodes over connections of
//! its own, and the workers evaluate the RLS policies themselves: they need the token too.
//! Citus forwards a `SET LOCAL` statement of a transaction block (with
//! `citus.propagate_set_commands = 'local'`) to the worker connections the transaction
//! already has and, after `BEGIN`, to those it opens later, so it ends with the
//! transaction. `set_config(..., true)`, `outseta_authenticate()` and PostgREST's
//! `request.cookies` / `request.headers` take no such path.
//!
//! So before each statement of a transaction block on a Citus node, when the token the
//! accessors would use (after `token_sources` and the cookie's CSRF rule) differs from the
//! one last handed on in this transaction, the extension issues
//! `SET LOCAL outseta_auth.token = '…'` itself, through SPI (so that Citus's utility hook
//! sees a real `SET LOCAL`), with propagation switched on for that one statement. The
//! workers then verify the token themselves, against their own keys. Outside Citus
//! nothing is installed: Citus must be first in `shared_preload_libraries`, so whether it
//! is loaded is known when this library loads.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void, CString};

use outseta_auth_core::handoff::Handed;
use outseta_auth_core::verify::MAX_TOKEN_BYTES;
use pgrx::pg_sys;
use pgrx::prelude::*;

use crate::settings::set_local;
use crate::token_source::{other_setting, with_current_token};

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;

thread_local! {
    /// What the workers hold of the token in this transaction, as far as this node knows.
    static HANDED_ON: RefCell<Handed> = const { RefCell::new(Handed::Nothing) };
    /// Whether Citus is loaded in this process.
    static CITUS: Cell<Option<bool>> = const { Cell::new(None) };
}

/// On a Citus node, install the executor hook and the transaction callbacks (from
/// `_PG_init`); elsewhere nothing.
pub fn init() {
    if !citus_loaded() {
        return;
    }
    // SAFETY: _PG_init runs once per process, before any query; this is the documented way
    // to chain an executor hook. The callbacks are plain functions with no argument.
    unsafe {
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        pg_sys::RegisterXactCallback(Some(xact_end), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_end), std::ptr::null_mut());
    }
}

fn citus_loaded() -> bool {
    CITUS.with(|c| match c.get() {
        Some(known) => known,
        None => {
            // Defined by Citus itself, not a placeholder someone SET without Citus.
            let name = c"citus.propagate_set_commands";
            // SAFETY: a NUL-terminated name; missing_ok returns 0 for an unknown setting.
            let flags = unsafe { pg_sys::GetConfigOptionFlags(name.as_ptr(), true) };
            let known = !other_setting(name).is_empty()
                && (flags as u32 & pg_sys::GUC_CUSTOM_PLACEHOLDER) == 0;
            c.set(Some(known));
            known
        }
    })
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start(query_desc: *mut pg_sys::QueryDesc, eflags: c_int) {
    // SAFETY: plain reads of backend state.
    let in_block = unsafe { pg_sys::IsTransactionBlock() && !pg_sys::IsInParallelMode() };
    if in_block && !citus_internal_connection() {
        hand_on_token();
    }
    // SAFETY: the previous hook (Citus's) or the standard function, with the arguments we
    // were given; an ERROR raised there is caught at the boundary and raised again.
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => pg_sys::ffi::pg_guard_ffi_boundary(|| prev(query_desc, eflags)),
            None => pg_sys::standard_ExecutorStart(query_desc, eflags),
        }
    }
}

/// Citus's own connections (to a worker, from another node) say so in application_name;
/// the token they carry was handed on already.
fn citus_internal_connection() -> bool {
    other_setting(c"application_name").starts_with(b"citus_internal")
}

/// What is sent for the token: the token itself when it has only the characters of a
/// compact JWS (so it needs no quoting) and is no longer than a token may be, else a value
/// every node refuses as malformed (a role's multi-megabyte setting is not sent on).
fn wire_value(token: Option<&[u8]>) -> &[u8] {
    match token {
        None => b"",
        Some(t)
            if t.len() <= MAX_TOKEN_BYTES
                && t.iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b)) =>
        {
            t
        }
        Some(_) => b"!",
    }
}

fn hand_on_token() {
    // An error here (an oversize request setting) is the accessors' error too: the
    // workers get a token they refuse, never none.
    // Compared in place (this runs before every statement of a block): a copy is made
    // only when the token changed.
    let changed = |current: &[u8]| HANDED_ON.with_borrow(|h| h.must_hand_on(current));
    let current = match with_current_token(|t| {
        let wire = wire_value(t);
        changed(wire).then(|| wire.to_vec())
    }) {
        Ok(Some(changed)) => changed,
        Ok(None) => return,
        Err(_) if changed(b"!") => b"!".to_vec(),
        Err(_) => return,
    };
    let stmt = format!(
        "SET LOCAL outseta_auth.token = '{}'",
        String::from_utf8_lossy(&current)
    );
    // Both settings are put back afterwards (as transaction-local values, without Citus
    // seeing it): this node's token sources stay as the request set them, so a cookie or
    // header that changes later in the transaction is still seen here, and handed on again.
    // The statement's text carries the token: wherever Citus quotes it (a failed worker
    // connection's CONTEXT), the log hook (log_redaction) hides the value.
    let propagate =
        CString::new(other_setting(c"citus.propagate_set_commands")).unwrap_or_default();
    let token = CString::new(other_setting(c"outseta_auth.token")).unwrap_or_default();
    set_local(c"citus.propagate_set_commands", c"local");
    let done = Spi::run(&stmt);
    set_local(c"outseta_auth.token", &token);
    set_local(c"citus.propagate_set_commands", &propagate);
    if let Err(e) = done {
        pgrx::error!("outseta_auth: handing the token on to the Citus workers failed: {e}");
    }
    HANDED_ON.with_borrow_mut(|h| *h = Handed::Value(current));
}

#[pg_guard]
unsafe extern "C-unwind" fn xact_end(_event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    // Any end (commit, abort, prepare): the workers' SET LOCAL ended with it.
    HANDED_ON.with_borrow_mut(|h| *h = Handed::Nothing);
}

#[pg_guard]
unsafe extern "C-unwind" fn subxact_end(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    // A rolled-back savepoint may have undone a SET LOCAL on the workers, or left one made
    // before it: what they hold is unknown, and the next statement hands the current value
    // on, even none.
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        HANDED_ON.with_borrow_mut(|h| *h = Handed::Unknown);
    }
}
