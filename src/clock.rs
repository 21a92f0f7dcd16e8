//! The clock the layer times exchanges with.
//!
//! Two readings per request are most of what the layer costs: a precise monotonic
//! reading takes about 24 ns here, a coarse one about 3 ns. Health is judged at the scale
//! of seconds (the slow threshold defaults to 5 s), so by default the layer reads the
//! coarse clock (`CLOCK_MONOTONIC_COARSE` on Linux and Android: one kernel tick of
//! resolution, 1 to 4 ms) and keeps the raw reading, so that a latency is one
//! subtraction. Feature `precise-clock`, and every other platform, use
//! [`tokio::time::Instant::now`], which also follows tokio's paused time in tests.

use std::time::Duration;

/// One reading of the layer's clock. Only differences between readings mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(imp::Reading);

impl Stamp {
    /// The time from `earlier` to this reading; zero if `earlier` is later.
    #[inline]
    pub(crate) fn since(self, earlier: Stamp) -> Duration {
        imp::between(earlier.0, self.0)
    }
}

/// Now, from the clock chosen at build time.
#[inline]
pub(crate) fn now() -> Stamp {
    Stamp(imp::now())
}

#[cfg(all(
    not(feature = "precise-clock"),
    any(target_os = "linux", target_os = "android")
))]
use coarse as imp;

#[cfg(not(all(
    not(feature = "precise-clock"),
    any(target_os = "linux", target_os = "android")
)))]
use precise as imp;

#[cfg(any(target_os = "linux", target_os = "android"))]
// Kept, and tested, with `precise-clock` too.
#[cfg_attr(feature = "precise-clock", allow(dead_code))]
mod coarse {
    use std::time::Duration;

    use rustix::time::{clock_gettime, ClockId};

    /// Nanoseconds of `CLOCK_MONOTONIC_COARSE`.
    pub(super) type Reading = u64;

    #[inline]
    pub(super) fn now() -> Reading {
        let t = clock_gettime(ClockId::MonotonicCoarse);
        // A monotonic clock is never negative.
        (t.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(t.tv_nsec as u64)
    }

    #[inline]
    pub(super) fn between(earlier: Reading, later: Reading) -> Duration {
        Duration::from_nanos(later.saturating_sub(earlier))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn coarse_readings_never_go_back_and_track_the_precise_clock() {
            let mut last = now();
            for _ in 0..10_000 {
                let reading = now();
                assert!(reading >= last);
                last = reading;
            }
            // The coarse clock is the monotonic one, updated once per kernel tick (at most
            // 10 ms on any configuration Linux ships).
            let coarse = now();
            let t = clock_gettime(ClockId::Monotonic);
            let precise = (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64;
            let gap = Duration::from_nanos(precise.abs_diff(coarse));
            assert!(gap <= Duration::from_millis(10), "{gap:?}");
            assert_eq!(between(5, 3), Duration::ZERO);
        }
    }
}

#[cfg_attr(
    all(
        not(feature = "precise-clock"),
        any(target_os = "linux", target_os = "android")
    ),
    allow(dead_code)
)]
mod precise {
    use std::time::Duration;

    pub(super) type Reading = tokio::time::Instant;

    #[inline]
    pub(super) fn now() -> Reading {
        tokio::time::Instant::now()
    }

    #[inline]
    pub(super) fn between(earlier: Reading, later: Reading) -> Duration {
        later.saturating_duration_since(earlier)
    }
}
