//! The cluster's memory of verified tokens (the core's [`VerifiedTokens`]): one RSA
//! verification per token per cluster, not per backend. A backend's miss in its own token
//! cache looks here before a signature check; see [`outseta_auth_core::verified`] for what
//! an entry's digest covers (the whole token, the trust settings, the key set).
//!
//! A fixed table of [`ENTRIES`] digests (48 bytes each, about 1.5 MiB): `SETS` sets of
//! `WAYS` entries, the set chosen by the digest's first bytes. An entry ends at its token's
//! `exp` (plus leeway) or when any key set of the store changes ([`clear`], called by the
//! key store under its lock): a generation number, so clearing is one write. A full set
//! gives up the entry that expires first.

use std::sync::atomic::{AtomicU64, Ordering};

use outseta_auth_core::verified::{Digest, VerifiedTokens};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};

const SETS: usize = 4096;
const WAYS: usize = 8;
pub const ENTRIES: usize = SETS * WAYS;

#[derive(Clone, Copy)]
#[repr(C)]
struct Entry {
    digest: Digest,
    /// Wall seconds: the token's `exp` plus leeway.
    expires: f64,
    /// The table's generation when stored; another one means cleared.
    generation: u64,
}

#[repr(C)]
pub struct Table {
    /// Starts at 1, so that an all-zero entry is never live.
    generation: u64,
    sets: [[Entry; WAYS]; SETS],
}

// SAFETY: plain numbers and byte arrays; nothing points into process-local memory.
unsafe impl PGRXSharedMemory for Table {}

impl Table {
    fn new() -> Self {
        // SAFETY: every field is a number or a byte array, for which zero bytes are valid.
        let mut t: Table = unsafe { std::mem::zeroed() };
        t.generation = 1;
        t
    }
}

impl Entry {
    /// Stored since the last clear, and its token not expired.
    fn live(&self, generation: u64, now: f64) -> bool {
        self.generation == generation && self.expires > now
    }
}

// SAFETY: the names are unique to this extension.
static TOKENS: PgLwLock<Table> = unsafe { PgLwLock::new(c"outseta_auth_verified_tokens") };
// SAFETY: as above. Signature checks skipped thanks to the table, since the server started.
static HITS: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"outseta_auth_verified_hits") };

pub(super) fn init() {
    pg_shmem_init!(TOKENS = Table::new());
    pg_shmem_init!(HITS = AtomicU64::new(0));
}

pub(super) fn bytes() -> usize {
    std::mem::size_of::<Table>()
}

fn set_of(digest: &Digest) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(first) % SETS as u64) as usize
}

/// Forget every entry: a key set of the store changed (or was dropped). The digests already
/// name the key set, so this only frees the room at once.
pub(super) fn clear() {
    let mut t = TOKENS.exclusive();
    t.generation += 1;
}

/// Live entries (for `outseta_shared_slots()`).
pub(super) fn in_use(now: f64) -> usize {
    let t = TOKENS.share();
    t.sets
        .iter()
        .flatten()
        .filter(|e| e.live(t.generation, now))
        .count()
}

/// Signature checks skipped since the server started.
pub(super) fn hits() -> u64 {
    HITS.get().load(Ordering::Relaxed)
}

/// The shared table, as the engine sees it (inactive without preload).
pub struct VerifiedTokenTable;

impl VerifiedTokens for VerifiedTokenTable {
    fn active(&self) -> bool {
        super::enabled()
    }

    fn seen(&mut self, digest: &Digest, now: f64) -> bool {
        let found = {
            let t = TOKENS.share();
            t.sets[set_of(digest)]
                .iter()
                .any(|e| e.digest == *digest && e.live(t.generation, now))
        };
        if found {
            HITS.get().fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    fn remember(&mut self, digest: &Digest, expires: f64, now: f64) {
        let mut t = TOKENS.exclusive();
        let generation = t.generation;
        let set = &mut t.sets[set_of(digest)];
        if set
            .iter()
            .any(|e| e.digest == *digest && e.live(generation, now))
        {
            return;
        }
        // A dead entry, else the one that expires first.
        let slot = match set.iter().position(|e| !e.live(generation, now)) {
            Some(i) => i,
            None => (0..WAYS)
                .min_by(|&a, &b| set[a].expires.total_cmp(&set[b].expires))
                .expect("WAYS > 0"),
        };
        set[slot] = Entry {
            digest: *digest,
            expires,
            generation,
        };
    }
}
