//! The clock the layer times exchanges with.
//!
//! Two readings per request are most of what the layer costs: a precise monotonic
//! reading takes about 29 ns here, a coarse one about 6 ns (BENCHMARKS.md). Health is
//! judged at the scale of seconds (the slow threshold defaults to 5 s), so unless its
//! sink asks for [`precise_latency`](crate::HealthSink::precise_latency) the layer reads
//! the coarse clock (`CLOCK_MONOTONIC_COARSE` on Linux and Android: one kernel tick of
//! resolution, 1 to 10 ms) and keeps the raw reading, so that a latency is one
//! subtraction. A sink that records latencies asks for [`precise_now`],
//! `CLOCK_MONOTONIC`: the same clock at full resolution, so the two kinds of reading
//! share one timebase. Feature `precise-clock`, and every other platform, use
//! [`tokio::time::Instant::now`] for both, which also follows tokio's paused time in
//! tests.

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

/// Now, at full resolution (1 µs or better): for latencies that are recorded.
#[inline]
pub(crate) fn precise_now() -> Stamp {
    Stamp(imp::precise_now())
}

/// [`precise_now`] if `precise`, else [`now`].
#[inline]
pub(crate) fn read(precise: bool) -> Stamp {
    if precise {
        precise_now()
    } else {
        now()
    }
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
        nanos(ClockId::MonotonicCoarse)
    }

    /// `CLOCK_MONOTONIC`: the coarse clock's own timebase, read at full resolution.
    #[inline]
    pub(super) fn precise_now() -> Reading {
        nanos(ClockId::Monotonic)
    }

    #[inline]
    fn nanos(clock: ClockId) -> Reading {
        let t = clock_gettime(clock);
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
            // 10 ms on any configuration Linux ships): one timebase for both readings.
            let coarse = now();
            let precise = precise_now();
            let gap = Duration::from_nanos(precise.abs_diff(coarse));
            assert!(gap <= Duration::from_millis(10), "{gap:?}");
            assert_eq!(between(5, 3), Duration::ZERO);
        }

        #[test]
        fn precise_readings_resolve_microseconds() {
            // Ten thousand readings in a row cover far less than one kernel tick; the
            // precise clock tells most of them apart, the coarse one almost none.
            let precise: Vec<_> = (0..10_000).map(|_| precise_now()).collect();
            let distinct = precise.windows(2).filter(|w| w[1] > w[0]).count();
            assert!(distinct > 100, "{distinct} distinct precise readings");
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
    pub(super) fn precise_now() -> Reading {
        tokio::time::Instant::now()
    }

    #[inline]
    pub(super) fn between(earlier: Reading, later: Reading) -> Duration {
        later.saturating_duration_since(earlier)
    }
}
