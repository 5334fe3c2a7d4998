//! The cluster's memory of verified tokens (the core's [`VerifiedTokens`]): one RSA
//! verification per token per cluster, not per backend. A backend's miss in its own token
//! cache looks here before a signature check; see [`outseta_auth_core::verified`] for what
//! an entry's digest covers (the whole token, the trust settings, the key set).
//!
//! A fixed table of [`ENTRIES`] digests (48 bytes each, about 1.5 MiB): `SETS` sets of
//! `WAYS` entries. A digest may live in either of two sets (chosen by two parts of the
//! digest) and goes into the one with fewer live entries: two choices keep the sets even, so
//! that 20,000 tokens fill no set where one choice overflows about 450 of them (each then
//! verified again and again, evicting another). An entry ends at its token's `exp` (plus
//! leeway) or when any key set of the store changes ([`clear`], called by the key store
//! under its lock): a generation number, so clearing is one write. When both sets are full
//! the entry that expires first gives way.

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

/// The two sets `digest` may live in.
fn sets_of(digest: &Digest) -> [usize; 2] {
    let at = |i: usize| {
        let mut part = [0u8; 8];
        part.copy_from_slice(&digest[i..i + 8]);
        (u64::from_le_bytes(part) % SETS as u64) as usize
    };
    [at(0), at(8)]
}

impl Table {
    /// `digest` is stored, live at `now`.
    fn contains(&self, digest: &Digest, now: f64) -> bool {
        sets_of(digest).iter().any(|&s| {
            self.sets[s]
                .iter()
                .any(|e| e.digest == *digest && e.live(self.generation, now))
        })
    }

    /// Store `digest` until `expires`: in the set with fewer live entries (a dead entry of
    /// it), or when both are full in place of the entry of either that expires first.
    fn insert(&mut self, digest: &Digest, expires: f64, now: f64) {
        if self.contains(digest, now) {
            return;
        }
        let generation = self.generation;
        let [a, b] = sets_of(digest);
        let live = |s: &[Entry; WAYS]| s.iter().filter(|e| e.live(generation, now)).count();
        let set = if live(&self.sets[b]) < live(&self.sets[a]) {
            b
        } else {
            a
        };
        let (set, way) = match self.sets[set].iter().position(|e| !e.live(generation, now)) {
            Some(way) => (set, way),
            None => [a, b]
                .into_iter()
                .flat_map(|s| (0..WAYS).map(move |w| (s, w)))
                .min_by(|&(s, w), &(t, v)| {
                    self.sets[s][w].expires.total_cmp(&self.sets[t][v].expires)
                })
                .expect("WAYS > 0"),
        };
        self.sets[set][way] = Entry {
            digest: *digest,
            expires,
            generation,
        };
    }
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
        let found = TOKENS.share().contains(digest, now);
        if found {
            HITS.get().fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    fn remember(&mut self, digest: &Digest, expires: f64, now: f64) {
        TOKENS.exclusive().insert(digest, expires, now);
    }
}

/// How many of `n` distinct digests a fresh table keeps, all inserted live (a test of the
/// placement, on a table of the backend's own).
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn kept_of(n: u32) -> usize {
    let layout = std::alloc::Layout::new::<Table>();
    // SAFETY: a zeroed allocation of Table's layout (checked non-null) is a valid Table
    // (numbers and byte arrays), owned by the Box from here on.
    let mut t: Box<Table> = unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<Table>();
        assert!(!p.is_null(), "out of memory");
        Box::from_raw(p)
    };
    t.generation = 1;
    let digests: Vec<Digest> = (0..n)
        .map(|i| outseta_auth_core::verified::sha256(&[&i.to_le_bytes()]))
        .collect();
    for d in &digests {
        t.insert(d, 2e9, 1e9);
    }
    digests.iter().filter(|d| t.contains(d, 1e9)).count()
}
