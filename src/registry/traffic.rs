//! The traffic window: how many of a backend's recent traffic verdicts were Good, Bad
//! and Soft, counted without a lock.
//!
//! Time is cut into buckets as long as the window. The estimate at a moment is the
//! current bucket's counts plus the previous bucket's, weighted by the share of the
//! previous bucket that still lies within one window of now: a sliding window from two
//! counters per kind, as rate limiters keep one.
//!
//! Counts are running totals. Good traffic verdicts are counted by the backend's state
//! word (one `fetch_add` on the hot path, see `backend.rs`); Bad and Soft ones here. A
//! bucket's counts are the difference between the totals at its two ends, so no counter
//! is ever reset under a concurrent increment. The bucket boundaries are moved by the
//! first report that is not a Good one on a Healthy backend after a boundary (a Good one
//! on a Healthy backend reads no clock). The counts since the last move, which after a
//! quiet stretch span several buckets, are spread evenly over the time they span: during
//! such a stretch only Good verdicts came, at whatever steady rate the hot path saw.

use std::sync::atomic::{AtomicU64, Ordering};

use super::machine::Window;

/// Good, Bad and Soft counts, in that order.
type Counts = [u64; 3];

#[derive(Debug)]
pub(crate) struct Traffic {
    bads: AtomicU64,
    softs: AtomicU64,
    /// The index of the current bucket (`now / window`); moved under the backend's lock.
    bucket: AtomicU64,
    /// The totals when the current bucket began.
    start: [AtomicU64; 3],
    /// The counts of the bucket before the current one.
    previous: [AtomicU64; 3],
    /// Bad traffic verdicts in a row.
    bad_run: Run,
}

impl Traffic {
    pub(crate) fn new(now: u64, window: u64) -> Self {
        Traffic {
            bads: AtomicU64::new(0),
            softs: AtomicU64::new(0),
            bucket: AtomicU64::new(now.checked_div(window).unwrap_or(0)),
            start: Default::default(),
            previous: Default::default(),
            bad_run: Run::new(),
        }
    }

    fn totals(&self, goods: u64) -> Counts {
        [
            goods,
            self.bads.load(Ordering::Acquire),
            self.softs.load(Ordering::Acquire),
        ]
    }

    /// One Bad traffic verdict; `goods` is the Good total now.
    pub(crate) fn count_bad(&self, goods: u64) {
        self.bads.fetch_add(1, Ordering::AcqRel);
        self.bad_run.count(goods);
    }

    /// One Soft traffic verdict: slow or throttled is not a failure, so it ends a run.
    pub(crate) fn count_soft(&self) {
        self.softs.fetch_add(1, Ordering::AcqRel);
        self.bad_run.end();
    }

    /// Bad traffic verdicts in a row up to now.
    pub(crate) fn bad_run(&self, goods: u64) -> u64 {
        self.bad_run.read(goods).0
    }

    /// Whether `now` lies past the current bucket, so that [`rotate`](Self::rotate) has
    /// work to do.
    pub(crate) fn is_stale(&self, now: u64, window: u64) -> bool {
        window != 0 && now / window != self.bucket.load(Ordering::Acquire)
    }

    /// Moves the buckets to `now`. Call it with the backend's lock held: it is the only
    /// writer of the bucket fields.
    pub(crate) fn rotate(&self, now: u64, window: u64, goods: u64) {
        if !self.is_stale(now, window) {
            return;
        }
        let bucket = self.bucket.load(Ordering::Acquire);
        let (previous, start) = rotated(
            bucket,
            now,
            window,
            self.load(&self.start),
            self.totals(goods),
        );
        for (cell, value) in self.previous.iter().zip(previous) {
            cell.store(value, Ordering::Release);
        }
        for (cell, value) in self.start.iter().zip(start) {
            cell.store(value, Ordering::Release);
        }
        self.bucket.store(now / window, Ordering::Release);
    }

    /// The window's counts at `now`. Read without the lock, it may mix the fields of two
    /// moments while another report rotates; a decision taken on it is taken again under
    /// the lock.
    pub(crate) fn window(&self, now: u64, window: u64, goods: u64) -> Window {
        if window == 0 {
            return Window::default();
        }
        let bucket = self.bucket.load(Ordering::Acquire);
        let totals = self.totals(goods);
        let (previous, start) = if now / window > bucket {
            rotated(bucket, now, window, self.load(&self.start), totals)
        } else {
            (self.load(&self.previous), self.load(&self.start))
        };
        let [good, bad, soft] = estimate(now, window, previous, start, totals);
        Window { good, bad, soft }
    }

    fn load(&self, cells: &[AtomicU64; 3]) -> Counts {
        cells.each_ref().map(|cell| cell.load(Ordering::Acquire))
    }
}

/// Verdicts of one kind in a row, which any Good verdict ends without touching them: the
/// run counts while the Good total is what it was at the run's latest verdict.
#[derive(Debug)]
pub(crate) struct Run {
    length: AtomicU64,
    /// The Good total at the run's latest verdict; `u64::MAX`: none yet.
    goods_at_last: AtomicU64,
}

impl Run {
    pub(crate) fn new() -> Self {
        Run {
            length: AtomicU64::new(0),
            goods_at_last: AtomicU64::new(u64::MAX),
        }
    }

    /// One more verdict of the run's kind; `goods` is the Good total now.
    pub(crate) fn count(&self, goods: u64) {
        if self.goods_at_last.swap(goods, Ordering::AcqRel) == goods {
            self.length.fetch_add(1, Ordering::AcqRel);
        } else {
            self.length.store(1, Ordering::Release);
        }
    }

    /// Ends the run by a verdict that is neither Good nor of its kind.
    pub(crate) fn end(&self) {
        self.length.store(0, Ordering::Release);
    }

    /// The run's length, and the Good verdicts since its latest verdict (all of them
    /// before its first), given the Good total `goods`: at most one of the two is not 0.
    pub(crate) fn read(&self, goods: u64) -> (u64, u64) {
        match self.goods_at_last.load(Ordering::Acquire) {
            mark if mark == goods => (self.length.load(Ordering::Acquire), 0),
            u64::MAX => (0, goods),
            mark => (0, goods.saturating_sub(mark)),
        }
    }
}

/// `value * numerator / denominator`, without overflow (`numerator <= denominator`).
fn scale(value: u64, numerator: u64, denominator: u64) -> u64 {
    (u128::from(value) * u128::from(numerator) / u128::from(denominator.max(1))) as u64
}

/// The previous bucket's counts and the current bucket's start totals once the buckets
/// are moved from `bucket` to the one holding `now`. Whatever was counted since `bucket`
/// began is spread evenly over the time since then.
fn rotated(bucket: u64, now: u64, window: u64, start: Counts, totals: Counts) -> (Counts, Counts) {
    let current = now / window;
    let deltas: Counts = std::array::from_fn(|i| totals[i].saturating_sub(start[i]));
    if current == bucket + 1 {
        return (deltas, totals);
    }
    let began = bucket.saturating_mul(window);
    let elapsed = now.saturating_sub(began).max(1);
    let into_current = now - current * window;
    let previous = deltas.map(|d| scale(d, window.min(elapsed), elapsed));
    let start = std::array::from_fn(|i| totals[i] - scale(deltas[i], into_current, elapsed));
    (previous, start)
}

/// The sliding estimate: the current bucket's counts, plus the previous bucket's
/// weighted by how much of it lies within one window of `now`.
fn estimate(now: u64, window: u64, previous: Counts, start: Counts, totals: Counts) -> Counts {
    let into_current = now % window;
    let remaining = window - into_current;
    std::array::from_fn(|i| {
        totals[i]
            .saturating_sub(start[i])
            .saturating_add(scale(previous[i], remaining, window))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 30_000;

    #[test]
    fn a_bucket_ahead_closes_the_current_one() {
        let (previous, start) = rotated(3, 4 * W + 10, W, [100, 5, 1], [400, 35, 1]);
        assert_eq!(previous, [300, 30, 0]);
        assert_eq!(start, [400, 35, 1]);
    }

    #[test]
    fn a_quiet_stretch_is_spread_evenly() {
        // 600 Good verdicts over ten windows since bucket 2 began, found a third into
        // bucket 12: a window's worth (60) is the previous bucket, a third of one is the
        // current bucket's, the rest is older than the window.
        let (previous, start) = rotated(2, 12 * W + W / 3, W, [0, 0, 0], [620, 0, 0]);
        let elapsed = 10 * W + W / 3;
        assert_eq!(previous[0], 620 * W / elapsed);
        assert_eq!(620 - start[0], 620 * (W / 3) / elapsed);
        let window = estimate(12 * W + W / 3, W, previous, start, [620, 0, 0]);
        // Two thirds of the previous bucket plus the current third: one window's worth.
        assert!((window[0] as i64 - 60).abs() <= 1, "{window:?}");
    }

    #[test]
    fn the_estimate_slides() {
        let previous = [90, 10, 0];
        let start = [1000, 10, 0];
        // At the start of the current bucket, all of the previous one counts...
        assert_eq!(estimate(5 * W, W, previous, start, start), [90, 10, 0]);
        // ... half-way, half of it plus what came since.
        assert_eq!(
            estimate(5 * W + W / 2, W, previous, start, [1050, 10, 0]),
            [95, 5, 0]
        );
    }

    #[test]
    fn a_window_follows_time_with_or_without_rotation() {
        let traffic = Traffic::new(0, W);
        let mut goods = 0;
        // 10 Bad then 90 Good in the first window.
        for _ in 0..10 {
            traffic.count_bad(goods);
        }
        goods += 90;
        assert_eq!(
            traffic.window(W / 2, W, goods),
            Window {
                good: 90,
                bad: 10,
                soft: 0
            }
        );
        // One window later without a rotation, the estimate still slides...
        let unrotated = traffic.window(W + W / 2, W, goods);
        assert_eq!(
            unrotated,
            Window {
                good: 45,
                bad: 5,
                soft: 0
            }
        );
        // ... and a rotation changes nothing about it.
        traffic.rotate(W + W / 2, W, goods);
        assert!(!traffic.is_stale(W + W / 2, W));
        assert_eq!(traffic.window(W + W / 2, W, goods), unrotated);
        // Two windows on, the failures are gone.
        assert_eq!(traffic.window(3 * W + 1, W, goods).bad, 0);
    }

    #[test]
    fn bad_runs_end_with_a_good_or_a_soft_verdict() {
        let traffic = Traffic::new(0, W);
        traffic.count_bad(7);
        traffic.count_bad(7);
        assert_eq!(traffic.bad_run(7), 2);
        assert_eq!(traffic.bad_run(8), 0, "a Good verdict since");
        traffic.count_bad(8);
        assert_eq!(traffic.bad_run(8), 1);
        traffic.count_soft();
        assert_eq!(traffic.bad_run(8), 0);
        traffic.count_bad(8);
        assert_eq!(traffic.bad_run(8), 1);
    }

    #[test]
    fn a_run_reads_the_good_verdicts_since_its_latest_verdict() {
        let run = Run::new();
        assert_eq!(
            run.read(5),
            (0, 5),
            "no verdict of its kind yet: every Good counts"
        );
        run.count(5);
        run.count(5);
        assert_eq!(run.read(5), (2, 0));
        assert_eq!(run.read(8), (0, 3), "three Good verdicts since");
        run.end();
        assert_eq!(
            run.read(5),
            (0, 0),
            "ended by another verdict, no Good one since"
        );
    }

    #[test]
    fn a_zero_window_counts_nothing() {
        let traffic = Traffic::new(5, 0);
        traffic.count_bad(0);
        assert_eq!(traffic.window(10, 0, 3), Window::default());
        assert!(!traffic.is_stale(10, 0));
    }
}
