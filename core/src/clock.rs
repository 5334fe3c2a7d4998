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

    /// Both clocks as of at most one kernel tick ago (a few milliseconds): read again only
    /// when `CLOCK_MONOTONIC_COARSE` (a memory read, no timer access) has moved since the
    /// last reading of this thread. The per-row path calls this: two precise readings cost
    /// more than the rest of a cache hit. A tick of error is nothing next to `exp`'s
    /// seconds and the leeway; the coarse clock stops during a suspend, but moves at the
    /// first tick after it, so a reading is never kept longer than a tick of running time.
    pub fn recent() -> Now {
        thread_local! {
            static LAST: std::cell::Cell<(i64, i64, Now)> =
                const { std::cell::Cell::new((-1, -1, Now { wall: 0.0, mono: 0.0 })) };
        }
        let Some(tick) = coarse_monotonic() else {
            return Now::read();
        };
        let (sec, nsec, last) = LAST.get();
        if (sec, nsec) == tick {
            return last;
        }
        let now = Now::read();
        LAST.set((tick.0, tick.1, now));
        now
    }

    /// The wall time of monotonic instant `mono` (for display).
    pub fn wall_of(&self, mono: f64) -> f64 {
        self.wall - (self.mono - mono)
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
    fn recent_is_at_most_a_tick_old() {
        // Bracketed by precise readings: recent() is never ahead of a later one, and never
        // older than an earlier one by more than the coarse clock's resolution (1-10 ms,
        // CONFIG_HZ) plus a millisecond, whatever the scheduler does in between.
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_getres writes into the timespec we own.
        assert_eq!(
            unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) },
            0
        );
        let tick = res.tv_sec as f64 + res.tv_nsec as f64 / 1e9;
        for _ in 0..50 {
            let a = Now::read();
            let r = Now::recent();
            let b = Now::read();
            assert!(r.mono <= b.mono, "{r:?} {b:?}");
            assert!(a.mono - r.mono <= tick + 0.001, "{a:?} {r:?} tick {tick}");
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
    }
}
