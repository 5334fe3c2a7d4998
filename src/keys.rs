//! The backend's key provider: the cluster's shared store when the library is preloaded
//! (`shared_preload_libraries`), else the per-backend store, which fetches in the query
//! that needs the keys.

use std::cell::RefCell;

use outseta_auth_core::fetch::HttpFetcher;
use outseta_auth_core::key_store::{KeyProvider, LocalKeys};

use crate::shared::{self, SharedKeys};

thread_local! {
    static LOCAL: RefCell<LocalKeys<HttpFetcher>> = RefCell::new(LocalKeys::new(HttpFetcher));
    static SHARED: RefCell<SharedKeys> = RefCell::new(SharedKeys::default());
}

/// Run `f` with this backend's key provider.
pub fn with_keys<R>(f: impl FnOnce(&mut dyn KeyProvider) -> R) -> R {
    if shared::enabled() {
        SHARED.with_borrow_mut(|s| f(s))
    } else {
        LOCAL.with_borrow_mut(|l| f(l))
    }
}

/// The key provider's epoch ([`KeyProvider::epoch`]) without borrowing it: one atomic read
/// of the cluster's store with preload, else 0 (per-backend keys change only when asked).
pub fn epoch() -> u64 {
    if shared::enabled() {
        shared::epoch()
    } else {
        0
    }
}
