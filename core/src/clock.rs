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
}
