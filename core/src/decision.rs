//! The one decision behind every key lookup: from a URL's fetch state, what the asker
//! wants and a monotonic `now`, whether to use the held keys, fetch here, wait for the
//! background worker, or fail. [`LocalKeys`](crate::key_store::LocalKeys) (a backend
//! fetching for itself) and the cluster's shared store only carry out what [`decide`]
//! returns; the worker carries out [`worker_step`]. Pure functions over plain data, so
//! every transition is unit-tested with a fake clock.
//!
//! Attempts are numbered: `attempts_started` and `attempts_done` count the fetch attempts
//! of a URL, and an attempt numbered `n` is under way while `attempts_done < n <=
//! attempts_started`. A request for a fetch is the attempt number that satisfies it
//! (`need`): one started after the request was made. So a request made while a fetch is
//! in flight is never satisfied by that older fetch (a rotation published meanwhile is
//! picked up), and no flag has to be cleared, or can be lost, when a worker restarts.
//!
//! Times are monotonic seconds ([`crate::clock::Now::mono`]): a wall clock stepped back
//! blocks no fetch and extends no trust.

use crate::config::Timing;
use crate::key_store::{Refetch, Schedule};

/// Who performs the fetches of a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchedBy {
    /// The asking process itself, in the query that needs the keys.
    Here,
    /// The cluster's background worker; `ever_started` is false when none has run yet
    /// (say, no free background-worker slot). A worker that is restarting is waited for
    /// (boundedly), so whether it runs right now decides nothing here.
    Worker { ever_started: bool },
}

/// One URL's fetch state, as its store holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceState {
    /// The held key set's version; 0 = no usable keys.
    pub version: u64,
    pub schedule: Schedule,
    pub attempts_started: u64,
    pub attempts_done: u64,
    pub fetcher: FetchedBy,
}

impl SourceState {
    pub fn in_flight(&self) -> bool {
        self.attempts_started > self.attempts_done
    }
    fn has_keys(&self) -> bool {
        self.version != 0
    }
    /// The held keys may be used at `now`: fetched no longer than `max_stale` ago.
    pub fn trusted(&self, now: f64, timing: &Timing) -> bool {
        self.has_keys() && self.schedule.within_max_stale(now, timing)
    }
}

/// Why there are no keys to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No keys: never fetched, or the last attempts failed (the last error says why).
    NoKeys,
    /// Keys are held but their last successful fetch is older than `max_stale`: they
    /// must be dropped and never used.
    TooStale,
    /// The worker did not finish the attempt waited for within the wait's bound.
    TimedOut,
}

/// What the asker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Use the held keys.
    Use,
    /// Fetch in this process, now, then decide again (`FetchedBy::Here`, or a worker that
    /// never ran and no keys).
    FetchHere,
    /// Ask the worker (if `request`) for an attempt numbered `need` or later (`forced`:
    /// whatever its rate limit), wake it, wait until `attempts_done >= need` for at most
    /// `for_ms`, then decide again with `waited = Some(need)`.
    Wait {
        need: u64,
        request: bool,
        forced: bool,
        for_ms: u64,
    },
    Fail(Failure),
}

/// The decision of an asker at monotonic `now`. `waited`: the attempt number this asker
/// has already waited for (after a [`Action::Wait`]); then the answer is `Use` or `Fail`,
/// never another wait or fetch.
pub fn decide(
    s: &SourceState,
    timing: &Timing,
    refetch: Refetch,
    now: f64,
    waited: Option<u64>,
) -> Action {
    let stale_held = s.has_keys() && !s.trusted(now, timing);
    if let Some(need) = waited {
        let missed = s.attempts_done < need;
        return if refetch == Refetch::Now && missed {
            // "Refresh now" that did not happen is an error, never the old keys' count.
            Action::Fail(Failure::TimedOut)
        } else if s.trusted(now, timing) {
            Action::Use
        } else if stale_held {
            Action::Fail(Failure::TooStale)
        } else if !missed {
            Action::Fail(Failure::NoKeys)
        } else {
            Action::Fail(Failure::TimedOut)
        };
    }
    let usable = |fallback: Failure| {
        if s.trusted(now, timing) {
            Action::Use
        } else if stale_held {
            Action::Fail(Failure::TooStale)
        } else {
            Action::Fail(fallback)
        }
    };
    match s.fetcher {
        FetchedBy::Here => {
            let fresh = s.has_keys() && s.schedule.fresh(now);
            match refetch {
                Refetch::No if fresh && s.trusted(now, timing) => Action::Use,
                Refetch::UnknownKid { seen } if s.trusted(now, timing) && s.version != seen => {
                    Action::Use
                }
                Refetch::Now => Action::FetchHere,
                _ if s.schedule.may_attempt(now, timing, false) => Action::FetchHere,
                // Rate limit: what is held (if not too stale), or the last failure.
                _ => usable(Failure::NoKeys),
            }
        }
        FetchedBy::Worker { ever_started, .. } if !ever_started && !s.has_keys() => {
            Action::FetchHere
        }
        FetchedBy::Worker { .. } => {
            // An attempt started after this ask.
            let next = s.attempts_started + 1;
            let total = timing.limits.total.as_secs_f64();
            let ms = |secs: f64| (secs * 1000.0).ceil() as u64;
            match refetch {
                // "Refresh now": a new attempt whatever the rate limit, waited for even while
                // the worker restarts (bounded); never satisfied by a fetch already under way,
                // which it may first have to wait out.
                Refetch::Now => Action::Wait {
                    need: next,
                    request: true,
                    forced: true,
                    for_ms: ms(2.0 * total),
                },
                Refetch::No if s.has_keys() => usable(Failure::NoKeys),
                Refetch::UnknownKid { seen } if s.trusted(now, timing) && s.version != seen => {
                    Action::Use
                }
                Refetch::UnknownKid { .. } => {
                    // The issuer may have rotated: an attempt started after this ask, if the
                    // worker's rate limit lets one start within http_timeout (then every
                    // asker shares it); else, during a fetch, that fetch (it may bring the
                    // key); else the token fails fast. Never a fetch the rate limit refuses
                    // (garbage kids must not drive the issuer). A worker restarting (about
                    // 1 s) is waited for, boundedly.
                    let start_in = (s.schedule.next_attempt(timing, true) - now).max(0.0);
                    if start_in < total {
                        Action::Wait {
                            need: next,
                            request: true,
                            forced: false,
                            for_ms: ms(start_in + total + if s.in_flight() { total } else { 0.0 }),
                        }
                    } else if s.in_flight() {
                        Action::Wait {
                            need: s.attempts_started,
                            request: false,
                            forced: false,
                            for_ms: ms(total),
                        }
                    } else {
                        usable(Failure::NoKeys)
                    }
                }
                // No keys: wait for the attempt under way, or ask for one, unless the worker's
                // backoff holds a failing URL back (then the last error is the answer).
                Refetch::No if s.in_flight() => Action::Wait {
                    need: s.attempts_started,
                    request: false,
                    forced: false,
                    for_ms: ms(total),
                },
                Refetch::No
                    if s.schedule.last_attempt == 0.0
                        || s.schedule.may_attempt(now, timing, true) =>
                {
                    Action::Wait {
                        need: next,
                        request: true,
                        forced: false,
                        for_ms: ms(total),
                    }
                }
                Refetch::No => Action::Fail(Failure::NoKeys),
            }
        }
    }
}

/// What the worker does with a URL at monotonic `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStep {
    Idle,
    /// Start attempt number `attempts_started + 1`.
    Start,
    /// The held keys passed `max_stale`: drop them (no attempt is due yet).
    DropKeys,
}

/// The worker's decision for one URL. `need`/`forced_need`: the highest attempt numbers
/// asked for (plain and whatever-the-rate-limit).
pub fn worker_step(
    s: &SourceState,
    timing: &Timing,
    need: u64,
    forced_need: u64,
    now: f64,
) -> WorkerStep {
    if s.in_flight() {
        return WorkerStep::Idle;
    }
    let forced = forced_need > s.attempts_started;
    let requested = need > s.attempts_started;
    if forced || s.schedule.due(now, timing, s.has_keys(), requested) {
        WorkerStep::Start
    } else if s.has_keys() && !s.trusted(now, timing) {
        WorkerStep::DropKeys
    } else {
        WorkerStep::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            ttl: 300,
            min_interval: 30,
            max_stale: 3600,
            ..Timing::default()
        }
    }

    const ALIVE: FetchedBy = FetchedBy::Worker { ever_started: true };
    /// Restarting: the same to the decision.
    const GONE: FetchedBy = ALIVE;

    /// A URL fetched once at t = 1000 (attempt 1), version 7.
    fn fetched(fetcher: FetchedBy) -> SourceState {
        let mut schedule = Schedule::default();
        schedule.on_attempt(1000.0);
        schedule.on_success(1000.0, None, &timing());
        SourceState {
            version: 7,
            schedule,
            attempts_started: 1,
            attempts_done: 1,
            fetcher,
        }
    }

    fn empty(fetcher: FetchedBy) -> SourceState {
        SourceState {
            version: 0,
            schedule: Schedule::default(),
            attempts_started: 0,
            attempts_done: 0,
            fetcher,
        }
    }

    /// A wait with the default 5 s http_timeout: forced ones get twice that.
    fn wait(need: u64, forced: bool) -> Action {
        Action::Wait {
            need,
            request: true,
            forced,
            for_ms: if forced { 10_000 } else { 5_000 },
        }
    }

    #[test]
    fn here_fresh_keys_are_used_then_refetched_after_ttl() {
        let s = fetched(FetchedBy::Here);
        let t = timing();
        assert_eq!(decide(&s, &t, Refetch::No, 1100.0, None), Action::Use);
        assert_eq!(decide(&s, &t, Refetch::No, 1300.0, None), Action::FetchHere);
        assert_eq!(
            decide(&s, &t, Refetch::Now, 1001.0, None),
            Action::FetchHere
        );
    }

    #[test]
    fn here_rate_limit_serves_held_keys_until_max_stale_then_fails() {
        let mut s = fetched(FetchedBy::Here);
        let t = timing();
        s.schedule.on_attempt(4590.0);
        s.schedule.on_failure();
        assert_eq!(decide(&s, &t, Refetch::No, 4595.0, None), Action::Use);
        assert_eq!(
            decide(&s, &t, Refetch::No, 4601.0, None),
            Action::Fail(Failure::TooStale),
            "past max_stale, rate-limited: never the old keys"
        );
        assert_eq!(
            decide(&s, &t, Refetch::UnknownKid { seen: 7 }, 4595.0, None),
            Action::Use,
            "an unknown kid within the rate limit: the held keys (the engine says unknown kid)"
        );
    }

    #[test]
    fn worker_no_keys_waits_for_one_attempt_then_fails_or_uses() {
        let s = empty(ALIVE);
        let t = timing();
        assert_eq!(decide(&s, &t, Refetch::No, 5.0, None), wait(1, false));
        let mut after = s;
        after.attempts_started = 1;
        after.attempts_done = 1;
        after.schedule.on_attempt(5.0);
        after.schedule.on_failure();
        assert_eq!(
            decide(&after, &t, Refetch::No, 6.0, Some(1)),
            Action::Fail(Failure::NoKeys)
        );
        assert_eq!(
            decide(&s, &t, Refetch::No, 6.0, Some(1)),
            Action::Fail(Failure::TimedOut),
            "the attempt did not finish within the wait"
        );
        // The worker's backoff holds the failing URL back: the last error, no wait.
        assert_eq!(
            decide(&after, &t, Refetch::No, 10.0, None),
            Action::Fail(Failure::NoKeys)
        );
        after.version = 3;
        after.schedule.on_success(6.0, None, &t);
        assert_eq!(decide(&after, &t, Refetch::No, 7.0, Some(1)), Action::Use);
    }

    #[test]
    fn a_worker_that_never_ran_leaves_the_first_fetch_to_the_asker() {
        let s = empty(FetchedBy::Worker {
            ever_started: false,
        });
        assert_eq!(
            decide(&s, &timing(), Refetch::No, 1.0, None),
            Action::FetchHere
        );
    }

    #[test]
    fn restart_with_a_fetch_in_flight_waits_for_it_not_for_a_new_one() {
        // The worker died during attempt 2 and a new one started: attempts_started says 2
        // is under way, and the new worker starts it again ("in flight" is attempts, not a
        // flag the old worker would have had to clear).
        let mut s = empty(ALIVE);
        s.attempts_started = 2;
        s.attempts_done = 1;
        s.schedule.on_attempt(10.0);
        assert_eq!(
            decide(&s, &timing(), Refetch::No, 11.0, None),
            Action::Wait {
                need: 2,
                request: false,
                forced: false,
                for_ms: 5_000
            }
        );
    }

    #[test]
    fn forced_refresh_during_a_fetch_needs_a_later_attempt() {
        let mut s = fetched(ALIVE);
        s.attempts_started = 2; // attempt 2 in flight, started before the ask
        s.schedule.on_attempt(1100.0);
        let t = timing();
        assert_eq!(decide(&s, &t, Refetch::Now, 1100.5, None), wait(3, true));
        // Attempt 2 ends (same body): the ask is not satisfied, the worker must start 3
        // at once, whatever the rate limit.
        s.attempts_done = 2;
        assert_eq!(
            worker_step(&s, &t, 0, 3, 1101.0),
            WorkerStep::Start,
            "forced beats the rate limit"
        );
        assert_eq!(
            worker_step(&s, &t, 3, 0, 1101.0),
            WorkerStep::Idle,
            "a plain request waits for it"
        );
        assert_eq!(worker_step(&s, &t, 3, 0, 1130.0), WorkerStep::Start);
        s.attempts_started = 3;
        s.attempts_done = 3;
        assert_eq!(
            worker_step(&s, &t, 3, 3, 1101.0),
            WorkerStep::Idle,
            "satisfied"
        );
    }

    #[test]
    fn forced_refresh_with_the_worker_gone_waits_and_times_out_instead_of_saying_done() {
        let s = fetched(GONE);
        let t = timing();
        assert_eq!(decide(&s, &t, Refetch::Now, 1001.0, None), wait(2, true));
        assert_eq!(
            decide(&s, &t, Refetch::Now, 1003.0, Some(2)),
            Action::Fail(Failure::TimedOut),
            "no attempt happened: an error, not the old keys"
        );
        assert_eq!(
            decide(&s, &t, Refetch::No, 1003.0, Some(2)),
            Action::Use,
            "a plain lookup that waited in vain still uses trusted keys"
        );
    }

    #[test]
    fn unknown_kid_asks_for_an_attempt_after_the_ask() {
        let mut s = fetched(ALIVE);
        let t = timing();
        assert_eq!(
            decide(&s, &t, Refetch::UnknownKid { seen: 7 }, 1031.0, None),
            wait(2, false)
        );
        // The worker's rate limit (30 s after the fetch at 1000) lets an attempt start at
        // 1030: within http_timeout (5 s) of 1026 it is waited for, with that much longer.
        assert_eq!(
            decide(&s, &t, Refetch::UnknownKid { seen: 7 }, 1026.0, None),
            Action::Wait {
                need: 2,
                request: true,
                forced: false,
                for_ms: 9_000
            }
        );
        assert_eq!(
            decide(&s, &t, Refetch::UnknownKid { seen: 7 }, 1010.0, None),
            Action::Use,
            "further off: the held keys, at once (the engine says unknown kid)"
        );
        assert_eq!(
            decide(&s, &t, Refetch::UnknownKid { seen: 5 }, 1010.0, None),
            Action::Use,
            "newer keys than the asker saw: use them"
        );
        // During a fetch that started before the ask, the rate limit far off: that fetch
        // (found by review: waiting for a later one meant waiting out the rate limit).
        s.attempts_started = 2;
        s.schedule.on_attempt(1040.0);
        assert_eq!(
            decide(&s, &t, Refetch::UnknownKid { seen: 7 }, 1040.5, None),
            Action::Wait {
                need: 2,
                request: false,
                forced: false,
                for_ms: 5_000
            }
        );
        // ...and when the next allowed attempt comes within http_timeout: that one.
        assert_eq!(
            decide(&s, &t, Refetch::UnknownKid { seen: 7 }, 1066.0, None),
            Action::Wait {
                need: 3,
                request: true,
                forced: false,
                for_ms: 14_000
            }
        );
        // Worker restarting (found by the soak: a rotation while the worker was stopped
        // failed new sign-ins): waited for too, boundedly.
        s.fetcher = GONE;
        s.attempts_done = 2;
        assert_eq!(
            decide(&s, &t, Refetch::UnknownKid { seen: 7 }, 1100.0, None),
            wait(3, false)
        );
    }

    #[test]
    fn unchanged_body_refreshed_extends_trust() {
        let mut s = fetched(ALIVE);
        let t = timing();
        s.schedule.on_attempt(4000.0);
        s.schedule.on_success(4000.0, None, &t);
        assert_eq!(
            decide(&s, &t, Refetch::No, 7000.0, None),
            Action::Use,
            "trust counts from the last successful fetch"
        );
    }

    #[test]
    fn max_stale_passed_without_a_successful_refresh() {
        let mut s = fetched(ALIVE);
        let t = timing();
        for at in [1300.0, 1400.0, 2000.0] {
            s.schedule.on_attempt(at);
            s.schedule.on_failure();
        }
        s.attempts_started = 4;
        s.attempts_done = 4;
        assert_eq!(decide(&s, &t, Refetch::No, 4600.0, None), Action::Use);
        assert_eq!(
            decide(&s, &t, Refetch::No, 4601.0, None),
            Action::Fail(Failure::TooStale)
        );
        // Not due yet (backoff): the worker drops them.
        assert_eq!(worker_step(&s, &t, 0, 0, 2001.0), WorkerStep::Idle);
        assert_eq!(worker_step(&s, &t, 0, 0, 4601.0), WorkerStep::Start);
        s.attempts_started = 5;
        s.schedule.on_attempt(4601.0);
        s.schedule.on_failure();
        s.attempts_done = 5;
        assert_eq!(worker_step(&s, &t, 0, 0, 4602.0), WorkerStep::DropKeys);
    }

    #[test]
    fn a_clock_stepped_back_blocks_nothing() {
        // Monotonic time does not step back: a wall clock set back an hour changes no
        // figure here. What would block fetches is a `now` smaller than `last_attempt`,
        // which a monotonic clock never gives; the rule still allows a forced one.
        let mut s = fetched(ALIVE);
        let t = timing();
        s.schedule.on_attempt(5000.0);
        assert_eq!(worker_step(&s, &t, 0, 2, 1400.0), WorkerStep::Start);
        assert_eq!(
            decide(&s, &t, Refetch::Now, 1400.0, None),
            wait(2, true),
            "refresh now is never rate-limited"
        );
    }

    #[test]
    fn worker_ahead_of_expiry_and_in_flight() {
        let mut s = fetched(ALIVE);
        let t = timing();
        assert_eq!(worker_step(&s, &t, 0, 0, 1100.0), WorkerStep::Idle);
        assert_eq!(worker_step(&s, &t, 0, 0, 1270.0), WorkerStep::Start);
        s.attempts_started = 2;
        assert_eq!(
            worker_step(&s, &t, 5, 5, 1270.0),
            WorkerStep::Idle,
            "one attempt at a time"
        );
    }
}
