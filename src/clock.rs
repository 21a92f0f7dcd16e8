//! The clock the layer times exchanges with.
//!
//! Two readings per request are most of what the layer costs: a precise monotonic
//! reading takes about 24 ns here, a coarse one about 3 ns. Health is judged at the scale
//! of seconds (the slow threshold defaults to 5 s), so by default the layer reads the
//! coarse clock (`CLOCK_MONOTONIC_COARSE` on Linux and Android: one kernel tick of
//! resolution, 1 to 4 ms). Feature `precise-clock`, and every other platform, use
//! [`tokio::time::Instant::now`], which also follows tokio's paused time in tests.
//!
//! Either way the result is a `tokio::time::Instant`: a coarse reading is placed on the
//! timeline of a precise one taken once, at first use.

use tokio::time::Instant;

/// Now, from the clock chosen at build time.
#[inline]
pub(crate) fn now() -> Instant {
    #[cfg(all(
        not(feature = "precise-clock"),
        any(target_os = "linux", target_os = "android")
    ))]
    {
        coarse::now()
    }
    #[cfg(not(all(
        not(feature = "precise-clock"),
        any(target_os = "linux", target_os = "android")
    )))]
    {
        Instant::now()
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
// Kept, and tested, with `precise-clock` too.
#[cfg_attr(feature = "precise-clock", allow(dead_code))]
pub(crate) mod coarse {
    use std::sync::OnceLock;
    use std::time::Duration;

    use rustix::time::{clock_gettime, ClockId};
    use tokio::time::Instant;

    #[inline]
    fn nanos() -> u64 {
        let t = clock_gettime(ClockId::MonotonicCoarse);
        // A monotonic clock is never negative.
        (t.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(t.tv_nsec as u64)
    }

    /// A precise instant and the coarse reading taken right after it.
    static ORIGIN: OnceLock<(Instant, u64)> = OnceLock::new();

    #[inline]
    pub(crate) fn now() -> Instant {
        let (origin, origin_nanos) = *ORIGIN.get_or_init(|| (Instant::now(), nanos()));
        origin + Duration::from_nanos(nanos().saturating_sub(origin_nanos))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn coarse_readings_never_go_back_and_track_the_precise_clock() {
            let first = now();
            let mut last = first;
            for _ in 0..10_000 {
                let reading = now();
                assert!(reading >= last);
                last = reading;
            }
            // One kernel tick is at most 10 ms on any configuration Linux ships.
            let precise = Instant::now();
            let coarse = now();
            let gap = if precise > coarse {
                precise - coarse
            } else {
                coarse - precise
            };
            assert!(gap <= Duration::from_millis(20), "{gap:?}");
        }
    }
}
