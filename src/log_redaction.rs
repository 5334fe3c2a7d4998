//! No token in any message: an `emit_log_hook` that hides every token value (core's
//! [`hide_token_values`]: anything shaped like a JWT, and whatever a statement sets
//! `outseta_auth.token` to) in each message part, before it goes to the client or the server
//! log, and leaves out the `STATEMENT:` line of a statement that holds one. PostgreSQL calls
//! the hook for messages that go to the server log (`log_min_messages`); one logged only to
//! the client is not seen by it. Citus, for one, quotes the `SET LOCAL` it was sending to a worker
//! in the CONTEXT of a failed connection; `log_statement` and errors quote whole statements.

use std::ffi::CStr;

use outseta_auth_core::redact::hide_token_values;
use pgrx::pg_sys;

static mut PREV_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

/// Install the hook (from `_PG_init`, in every process that loads the library).
pub fn init() {
    // SAFETY: _PG_init runs once per process before any query; chaining emit_log_hook is the
    // documented way to install one.
    unsafe {
        PREV_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
    }
}

/// `*field` with the token's values hidden, as a new string in ErrorContext (the old one
/// freed); unchanged when it holds none, or when there is no memory for the copy (nothing
/// here may raise an error: it runs while one is being reported).
///
/// # Safety
/// `*field` must be NULL or a NUL-terminated string allocated in ErrorContext.
unsafe fn hide_in(field: &mut *mut std::ffi::c_char) {
    let p = *field;
    if p.is_null() {
        return;
    }
    // SAFETY: non-null and NUL-terminated per the contract.
    let text = unsafe { CStr::from_ptr(p) }.to_bytes();
    let Some(hidden) = hide_token_values(text) else {
        return;
    };
    // SAFETY: ErrorContext exists while an error is being reported (elog.c allocates these
    // strings there too); MCXT_ALLOC_NO_OOM returns NULL instead of raising.
    let copy = unsafe {
        pg_sys::MemoryContextAllocExtended(
            pg_sys::ErrorContext,
            hidden.len() + 1,
            pg_sys::MCXT_ALLOC_NO_OOM as i32,
        )
    } as *mut u8;
    if copy.is_null() {
        return;
    }
    // SAFETY: `copy` has room for the bytes and the NUL; the old string is ours to free
    // (errfinish frees only what the fields point at).
    unsafe {
        std::ptr::copy_nonoverlapping(hidden.as_ptr(), copy, hidden.len());
        *copy.add(hidden.len()) = 0;
        *field = copy.cast();
        pg_sys::pfree(p.cast());
    }
}

// No pg_guard: this runs inside error reporting, where raising another error would recurse.
// Nothing here raises: allocation failure in ErrorContext is the only way out, as for
// elog.c's own strings; a Rust panic is caught below.
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: Postgres passes the error being reported; its string fields are NULL or
        // NUL-terminated strings in ErrorContext.
        unsafe {
            let e = &mut *edata;
            for field in [
                &mut e.message,
                &mut e.detail,
                &mut e.detail_log,
                &mut e.hint,
                &mut e.context,
                &mut e.internalquery,
            ] {
                hide_in(field);
            }
            let stmt = pg_sys::debug_query_string;
            if !stmt.is_null() && hide_token_values(CStr::from_ptr(stmt).to_bytes()).is_some() {
                e.hide_stmt = true;
            }
        }
    });
    // SAFETY: the previous hook, with the argument we were given.
    unsafe {
        if let Some(prev) = PREV_EMIT_LOG_HOOK {
            prev(edata);
        }
    }
}
