//! When a gate on a Bad backend lets a trial request through: exponential backoff with
//! jitter, capped, shared by every clone of one layer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff;
use crate::registry::{ticks, BackendHandle};

/// Default wait before the first trial of a Bad spell.
pub(crate) const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
/// Default cap of the wait between trials.
pub(crate) const DEFAULT_MAX: Duration = Duration::from_secs(30);

/// No Bad spell seen yet: no registry tick is this large.
const NO_SPELL: u64 = u64::MAX;

/// The trial schedule of one gate layer.
///
/// While the backend stays Bad (one spell: from a change of status to the next), the
/// wait before trial `n` (from 0) is drawn from 80% to 100% of
/// `min(initial * 2^n, max)`, counted from the previous trial (from the gate's first
/// look at the spell, for trial 0). A new spell starts the schedule over.
///
/// Rejections read two atomics; only a call that may claim or arm takes the lock, and
/// only with `try_lock`: a call that finds it busy is rejected, so no two calls can
/// claim the same interval and none waits.
#[derive(Debug)]
pub(crate) struct Trials {
    initial: Duration,
    max: Duration,
    base: Instant,
    /// The spell the schedule is for ([`BackendHandle::changed_at`]); written after
    /// `next`, so that a reader that sees a spell sees its `next`.
    spell: AtomicU64,
    /// Nanoseconds since `base` from which the next trial may go.
    next: AtomicU64,
    /// The next trial's number in its spell, and the jitter's xorshift state.
    lock: Mutex<(u32, u64)>,
}

impl Trials {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Trials {
            initial,
            max,
            base: Instant::now(),
            spell: AtomicU64::new(NO_SPELL),
            next: AtomicU64::new(0),
            lock: Mutex::new((0, 0)),
        }
    }

    pub(crate) fn initial(&self) -> Duration {
        self.initial
    }

    pub(crate) fn max(&self) -> Duration {
        self.max
    }

    fn ticks(&self, at: Instant) -> u64 {
        ticks(at.saturating_duration_since(self.base))
    }

    /// Whether the caller, on a backend whose status is Bad, may send a trial now. The
    /// first call of a spell arms the schedule and is refused.
    pub(crate) fn try_claim(&self, handle: &BackendHandle) -> bool {
        let spell = handle.changed_at();
        let now = self.ticks(Instant::now());
        if self.spell.load(Ordering::Acquire) == spell && now < self.next.load(Ordering::Acquire) {
            return false;
        }
        let Ok(mut state) = self.lock.try_lock() else {
            return false;
        };
        let (step, rng) = &mut *state;
        let claimed = if self.spell.load(Ordering::Acquire) != spell {
            *step = 0;
            false
        } else if now < self.next.load(Ordering::Acquire) {
            return false;
        } else {
            *step = step.saturating_add(1);
            true
        };
        let wait = self.wait(*step, rng);
        self.next
            .store(now.saturating_add(ticks(wait)), Ordering::Release);
        self.spell.store(spell, Ordering::Release);
        claimed
    }

    /// When the next trial may go, once the schedule is armed.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        if self.spell.load(Ordering::Acquire) == NO_SPELL {
            return None;
        }
        let next = self.next.load(Ordering::Acquire);
        self.base.checked_add(Duration::from_nanos(next))
    }

    /// The wait before trial `step` of a spell: 80% to 100% of the capped exponential.
    fn wait(&self, step: u32, rng: &mut u64) -> Duration {
        let nominal = backoff::doubled(self.initial, step, self.max);
        // A fresh seed per layer: layers do not jitter in step.
        let fraction = backoff::unit(rng);
        Duration::try_from_secs_f64(nominal.as_secs_f64() * (1.0 - 0.2 * fraction))
            .map_or(nominal, |wait| wait.min(nominal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_the_initial_up_to_the_cap_within_a_fifth_below() {
        let trials = Trials::new(Duration::from_secs(1), Duration::from_secs(10));
        let mut rng = 0;
        // (trial number, nominal wait)
        let rows: &[(u32, u64)] = &[(0, 1), (1, 2), (2, 4), (3, 8), (4, 10), (40, 10)];
        for &(step, nominal) in rows {
            let nominal = Duration::from_secs(nominal);
            for _ in 0..200 {
                let wait = trials.wait(step, &mut rng);
                assert!(wait <= nominal, "trial {step}: {wait:?} over {nominal:?}");
                assert!(
                    wait >= nominal.mul_f64(0.8),
                    "trial {step}: {wait:?} under 80%"
                );
            }
        }
    }

    #[test]
    fn the_jitter_spreads_the_waits() {
        let trials = Trials::new(Duration::from_secs(10), Duration::from_secs(10));
        let mut rng = 0;
        let waits: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| trials.wait(0, &mut rng)).collect();
        assert!(waits.len() > 40, "only {} distinct waits", waits.len());
    }

    #[test]
    fn huge_settings_saturate_instead_of_overflowing() {
        let trials = Trials::new(Duration::MAX, Duration::MAX);
        let mut rng = 0;
        assert!(trials.wait(63, &mut rng) >= Duration::MAX / 2);
        assert_eq!(ticks(Duration::MAX), u64::MAX);
    }
}
