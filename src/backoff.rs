//! Waits that grow and spread out: the capped doubling of a backoff, and the random draws
//! that jitter waits, for the gate's trials, the discover's ejections, the retry policy's
//! delays and the prober's intervals.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
#[cfg(feature = "registry")]
use std::time::Duration;

/// `initial` doubled `step` times, never more than `max` (a product too large for a
/// `Duration` is `max`).
#[cfg(feature = "registry")]
pub(crate) fn doubled(initial: Duration, step: u32, max: Duration) -> Duration {
    1u32.checked_shl(step)
        .and_then(|factor| initial.checked_mul(factor))
        .unwrap_or(max)
        .min(max)
}

/// The next draw of xorshift64* from `state`: plenty for spreading waits, and no
/// dependency. A `state` of 0 is seeded first, from `RandomState::new`, which gives every
/// call fresh keys (random per thread, then incremented): two states seeded so never draw
/// in step.
pub(crate) fn next_random(state: &mut u64) -> u64 {
    if *state == 0 {
        *state = RandomState::new().build_hasher().finish() | 1;
    }
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// A draw from `[0, 1)`: the top 53 bits of [`next_random`].
#[cfg(feature = "registry")]
pub(crate) fn unit(state: &mut u64) -> f64 {
    (next_random(state) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_state_is_seeded_and_never_returns_to_zero() {
        let mut a = 0;
        let mut b = 0;
        let first = next_random(&mut a);
        assert_ne!(a, 0);
        assert_ne!(first, next_random(&mut b), "two fresh seeds");
        for _ in 0..10_000 {
            next_random(&mut a);
            assert_ne!(a, 0);
        }
    }

    #[cfg(feature = "registry")]
    #[test]
    fn units_lie_in_zero_to_one() {
        let mut state = 0;
        assert!((0..10_000)
            .map(|_| unit(&mut state))
            .all(|u| (0.0..1.0).contains(&u)));
    }

    #[cfg(feature = "registry")]
    #[test]
    fn doubling_is_capped_and_saturates() {
        let s = Duration::from_secs;
        // (initial, step, max, want)
        let rows = [
            ("the first wait is the initial one", s(1), 0, s(30), s(1)),
            ("each step doubles", s(1), 3, s(30), s(8)),
            ("the cap holds", s(1), 5, s(30), s(30)),
            ("a shift past 32 bits is the cap", s(1), 40, s(30), s(30)),
            (
                "an overflowing product is the cap",
                Duration::MAX,
                1,
                Duration::MAX,
                Duration::MAX,
            ),
        ];
        for (name, initial, step, max, want) in rows {
            assert_eq!(doubled(initial, step, max), want, "{name}");
        }
    }
}
