//! No token in any message: an `emit_log_hook` that hides the value of every statement text
//! that sets `outseta_auth.token` (core's [`hide_token_values`]) in each message part, before
//! it goes to the client or the server log, and leaves out the `STATEMENT:` line of a
//! statement that sets one. Citus, for one, quotes the `SET LOCAL` it was sending to a worker
//! in the CONTEXT of a failed connection; `log_statement` and errors quote whole statements.

use std::ffi::{CStr, CString};

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

/// `p` with the token's values hidden, as a new string in ErrorContext; `None` when `p`
/// sets none (or is NULL, or not UTF-8).
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string.
unsafe fn hidden(p: *const std::ffi::c_char) -> Option<*mut std::ffi::c_char> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the contract.
    let text = unsafe { CStr::from_ptr(p) }.to_str().ok()?;
    let out = CString::new(hide_token_values(text)?).ok()?;
    // SAFETY: ErrorContext exists while an error is being reported; elog.c allocates these
    // strings there too. `out` outlives the call.
    Some(unsafe { pg_sys::MemoryContextStrdup(pg_sys::ErrorContext, out.as_ptr()) })
}

// No pg_guard: this runs inside error reporting, where raising another error would recurse.
// Nothing here raises: allocation failure in ErrorContext is the only way out, as for
// elog.c's own strings; a Rust panic is caught below.
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: Postgres passes the error being reported; its string fields are NULL or
        // NUL-terminated, and may be replaced by strings in ErrorContext.
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
                if let Some(h) = hidden(*field) {
                    *field = h;
                }
            }
            let stmt = pg_sys::debug_query_string;
            if !stmt.is_null()
                && CStr::from_ptr(stmt)
                    .to_str()
                    .is_ok_and(|s| hide_token_values(s).is_some())
            {
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
