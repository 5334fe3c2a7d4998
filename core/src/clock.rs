//! Time as the core sees it: the wall clock (token `exp`/`nbf`/`iat`, what users read) and
//! a monotonic clock (key ages, fetch scheduling, trust bounds), so that a wall clock
//! stepped back or forward never blocks a fetch nor extends the trust in old keys.

/// Both clocks, read once per call. Tests build it from one number ([`From<f64>`]) or set
/// the clocks apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Now {
    /// Unix seconds.
    pub wall: f64,
    /// Seconds on a clock that never steps back and is the same in every process of the
    /// machine (`CLOCK_BOOTTIME`: suspend counts as time passing), so that it can be kept
    /// in shared memory.
    pub mono: f64,
}

impl Now {
    pub fn read() -> Now {
        Now {
            wall: crate::claims::now(),
            mono: monotonic(),
        }
    }

    /// Both clocks as of the last tick of the kernel's coarse clock (a few milliseconds ago;
    /// more when a tick comes late, as on a busy virtual machine): read again only when
    /// `CLOCK_MONOTONIC_COARSE` (a memory read, no timer access) has moved since the last
    /// reading of this thread ([`Recent::at`]). The per-row path calls this: two precise
    /// readings cost more than the rest of a cache hit. Ticks of error are nothing next to
    /// `exp`'s seconds and the leeway; the coarse clock stops during a suspend, but moves at
    /// the first tick after it, so a reading is never kept past the next tick that runs.
    pub fn recent() -> Now {
        thread_local! {
            static LAST: std::cell::Cell<Recent> = const { std::cell::Cell::new(Recent::NONE) };
        }
        let mut last = LAST.get();
        let now = last.at(coarse_monotonic(), Now::read);
        LAST.set(last);
        now
    }

    /// The wall time of monotonic instant `mono` (for display).
    pub fn wall_of(&self, mono: f64) -> f64 {
        self.wall - (self.mono - mono)
    }
}

/// The reading [`Now::recent`] keeps: the precise clocks as read when the coarse clock
/// showed `coarse`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Recent {
    coarse: Option<(i64, i64)>,
    now: Now,
}

impl Recent {
    const NONE: Recent = Recent {
        coarse: None,
        now: Now {
            wall: 0.0,
            mono: 0.0,
        },
    };

    /// The kept reading while the coarse clock shows what it showed then; else `read()`,
    /// kept with the coarse clock's new value. An unreadable coarse clock (None) reads every
    /// time.
    fn at(&mut self, coarse: Option<(i64, i64)>, read: impl FnOnce() -> Now) -> Now {
        if coarse.is_some() && coarse == self.coarse {
            return self.now;
        }
        *self = Recent {
            coarse,
            now: read(),
        };
        self.now
    }
}

impl From<f64> for Now {
    /// One reading for both clocks (tests, and callers that only compare within one clock).
    fn from(t: f64) -> Now {
        Now { wall: t, mono: t }
    }
}

/// Seconds of `CLOCK_BOOTTIME`; never 0 on a running machine (0 means "never" in
/// [`crate::key_store::Schedule`]).
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_BOOTTIME exists on every
    // Linux this builds for.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 1.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9 + 1.0
}

/// `CLOCK_MONOTONIC_COARSE` as (seconds, nanoseconds); None if unreadable (then
/// [`Now::recent`] reads the precise clocks every time).
fn coarse_monotonic() -> Option<(i64, i64)> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (rc == 0).then_some((ts.tv_sec, ts.tv_nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_moves_forward_and_wall_of_maps_back() {
        let a = Now::read();
        let b = monotonic();
        assert!(b >= a.mono && a.mono > 0.0);
        let earlier = a.wall_of(a.mono - 10.0);
        assert!((a.wall - earlier - 10.0).abs() < 1e-6);
    }

    #[test]
    fn recent_reads_again_only_when_the_coarse_clock_moves() {
        let mut reads = 0;
        let mut clock = 100.0;
        let read = |reads: &mut i32, t: f64| {
            *reads += 1;
            Now::from(t)
        };
        let mut kept = Recent::NONE;
        assert_eq!(
            kept.at(Some((5, 0)), || read(&mut reads, clock)).mono,
            100.0
        );
        clock = 100.003;
        // Same tick: the kept reading, no read.
        assert_eq!(
            kept.at(Some((5, 0)), || read(&mut reads, clock)).mono,
            100.0
        );
        assert_eq!(reads, 1);
        // The tick moved (nanoseconds, then seconds): read again, keep the new one.
        assert_eq!(
            kept.at(Some((5, 4_000_000)), || read(&mut reads, clock))
                .mono,
            100.003
        );
        clock = 101.0;
        assert_eq!(
            kept.at(Some((6, 0)), || read(&mut reads, clock)).mono,
            101.0
        );
        assert_eq!(reads, 3);
        // Without a coarse clock every call reads.
        clock = 101.5;
        assert_eq!(kept.at(None, || read(&mut reads, clock)).mono, 101.5);
        clock = 101.6;
        assert_eq!(kept.at(None, || read(&mut reads, clock)).mono, 101.6);
        assert_eq!(reads, 5);
    }

    #[test]
    fn recent_moves_on_with_the_real_coarse_clock() {
        // No bound on how late a tick may come (a virtual machine's vCPU can wait for its
        // host): recent() is never ahead of a later precise reading, and it moves on once the
        // coarse clock does (within 10 s of trying, which only a stopped clock would miss).
        let first = Now::recent();
        let mut moved = false;
        for _ in 0..10_000 {
            let r = Now::recent();
            let b = Now::read();
            assert!(r.mono <= b.mono, "{r:?} {b:?}");
            if r.mono > first.mono {
                moved = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(moved, "recent() never read again: {first:?}");
    }
}
