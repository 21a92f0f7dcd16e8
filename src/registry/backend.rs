//! One registered backend: its state, and `BackendHandle`, the sink that reports to it.
//!
//! # No lock but to change the status
//!
//! A report updates atomics only. The hot path, a Good traffic verdict on a Healthy
//! backend, is one `fetch_add` on the state word, which holds the status and the count
//! of Good traffic verdicts together: the increment and the status it was counted under
//! are one atomic step, so no report can be counted under a status that had already
//! changed. Every other report updates its counters, reads the registry's clock, and
//! works out what probes and traffic say. Only when that differs from the status does it
//! take the backend's lock, to decide again and change the status; the lock is also
//! tried (never waited for) to move the traffic window's buckets once per window. Log
//! lines are written after the lock is released.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;

use super::failure;
use super::machine::{self, Runs};
use super::policy::{Limits, MAX_PROBE_THRESHOLD};
use super::snapshot::BackendHealth;
use super::strategy::{Customs, StrategyCell};
use super::traffic::{Run, Traffic};
use super::transition::{Evidence, Transition};
use super::Policy;
use crate::classify::Outcome;
use crate::clock::{self, Stamp};
use crate::error::{LocalKind, TlsFailure, TransportKind};
use crate::sink::{HealthReport, HealthSink};
use crate::verdict::{AuthStrategy, HealthStatus, Origin, Reason, Verdict};

/// What every backend of one registry shares. Holds no backend, so no cycle.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) policy: Policy,
    limits: Limits,
    /// What [`BackendHandle::precise_latency`] answers.
    precise_latency: bool,
    pub(crate) transitions: broadcast::Sender<Transition>,
    /// Bumped whenever a backend is added or removed, so that a watcher (the prober)
    /// learns of membership changes without polling.
    pub(crate) membership: watch::Sender<u64>,
    customs: Customs,
    base: Instant,
    /// The layer's clock at the same moment as `base`, for `last_checked`.
    base_stamp: Stamp,
    base_wall: SystemTime,
}

impl Common {
    pub(crate) fn new(policy: Policy) -> Self {
        let (transitions, _) = broadcast::channel(1024);
        let (membership, _) = watch::channel(0);
        Common {
            limits: Limits::new(&policy),
            precise_latency: cfg!(feature = "metrics")
                || policy.slow_threshold < crate::sink::PRECISE_BELOW,
            policy,
            transitions,
            membership,
            customs: Customs::default(),
            base: Instant::now(),
            base_stamp: clock::now(),
            base_wall: SystemTime::now(),
        }
    }

    /// The registry's clock: nanoseconds since its creation, on tokio's clock (so that it
    /// follows paused time in tests), saturated. Read off the hot path only: a reading
    /// costs about 28 ns.
    fn now(&self) -> u64 {
        super::policy::ticks(Instant::now().saturating_duration_since(self.base))
    }

    /// Tells membership watchers that a backend was added or removed. Call it once the
    /// change is visible in the map: a watcher marks the generation seen, then reads the
    /// map, so it either sees the change or is woken for it.
    pub(crate) fn membership_changed(&self) {
        // `send_modify` updates even with no receiver, unlike `send`.
        self.membership
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    fn wall(&self, tick: u64) -> SystemTime {
        self.base_wall + Duration::from_nanos(tick)
    }

    /// A reading of the layer's clock as nanoseconds since the registry's creation, plus
    /// one: 0 stays free for "never".
    #[inline]
    fn stamp_tick(&self, at: Stamp) -> u64 {
        let nanos = at.since(self.base_stamp).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    fn wall_of_stamp_tick(&self, tick: u64) -> Option<SystemTime> {
        Some(self.wall(tick.checked_sub(1)?))
    }
}

// === the state word ===

/// Bits 61-63 of the state word: the status code.
const STATUS_SHIFT: u32 = 61;
/// Bit 60: a log summary waits for the end of its interval (see [`Log`]).
const SUMMARY_DUE: u64 = 1 << 60;
/// Bits 0-59: Good traffic verdicts, ever. At a billion a second they last 36 years.
const GOODS: u64 = SUMMARY_DUE - 1;

fn status_of(word: u64) -> u8 {
    (word >> STATUS_SHIFT) as u8
}

/// The top four bits of a state word whose Good traffic verdicts take the hot path:
/// Healthy, and no summary due.
const HOT: u64 = 1 << 1;

// === the probe word ===

/// Probes' opinion (a status code) in bits 61-63, then three 20-bit runs of probe
/// verdicts: Good ones in bits 40-59, non-Good ones in 20-39, Bad ones in 0-19.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProbeRuns {
    opinion: HealthStatus,
    good: u64,
    not_good: u64,
    bad: u64,
}

const RUN: u64 = MAX_PROBE_THRESHOLD as u64;

impl ProbeRuns {
    fn decode(word: u64) -> Self {
        ProbeRuns {
            opinion: machine::status_from_code((word >> 61) as u8),
            good: (word >> 40) & RUN,
            not_good: (word >> 20) & RUN,
            bad: word & RUN,
        }
    }

    fn encode(self) -> u64 {
        u64::from(machine::status_code(self.opinion)) << 61
            | self.good << 40
            | self.not_good << 20
            | self.bad
    }

    /// The runs and the opinion after one more probe verdict.
    fn after(self, verdict: Verdict, policy: &Policy) -> Self {
        let good = verdict.is_good();
        let runs = Runs {
            good: if good { (self.good + 1).min(RUN) } else { 0 },
            not_good: if good {
                0
            } else {
                (self.not_good + 1).min(RUN)
            },
        };
        let bad = if verdict.is_bad() {
            (self.bad + 1).min(RUN)
        } else {
            0
        };
        ProbeRuns {
            opinion: machine::next_status(self.opinion, verdict, runs, bad, policy),
            good: runs.good,
            not_good: runs.not_good,
            bad,
        }
    }

    /// The verdicts in a row that led probes to say `status`.
    fn leading_to(self, status: HealthStatus) -> u64 {
        match status {
            HealthStatus::Healthy => self.good,
            HealthStatus::Unhealthy | HealthStatus::Unauthenticated => self.bad,
            _ => self.not_good,
        }
    }
}

// === the log budget ===

/// The log budget of one backend, under its lock.
///
/// An interval begins with the first transition after a quiet spell. Its first
/// `log_budget` transitions are logged one line each; past that the backend is
/// flapping: its transitions are only counted, and each interval that saw any ends with
/// one summary line, until an interval passes with at most `log_budget` transitions.
#[derive(Debug, Default)]
struct Log {
    /// When the current interval ends; 0: none running.
    interval_end: u64,
    /// Transitions in the current interval.
    changes: u32,
    /// Of them, logged one line each.
    lines: u32,
    flapping: bool,
}

impl Log {
    /// Closes every interval that ended by `now`, and returns the number of changes the
    /// summary line must tell, if one is due.
    fn roll(&mut self, now: u64, limits: &Limits) -> Option<u32> {
        let mut summary = None;
        while self.interval_end != 0 && now >= self.interval_end {
            if self.changes > self.lines {
                summary = Some(self.changes);
            }
            self.flapping = self.changes > limits.log_budget;
            self.interval_end = if self.flapping {
                self.interval_end.saturating_add(limits.log_interval)
            } else {
                0
            };
            self.changes = 0;
            self.lines = 0;
        }
        summary
    }

    /// One transition: whether to log it, and a summary due first.
    fn transition(&mut self, now: u64, limits: &Limits) -> (bool, Option<u32>) {
        if limits.log_interval == 0 {
            return (true, None);
        }
        let summary = self.roll(now, limits);
        if self.interval_end == 0 {
            self.interval_end = now.saturating_add(limits.log_interval);
        }
        self.changes = self.changes.saturating_add(1);
        let logged = !self.flapping && self.lines < limits.log_budget;
        if logged {
            self.lines += 1;
        }
        (logged, summary)
    }

    /// Whether some transition of this interval waits for a summary.
    fn summary_pending(&self) -> bool {
        self.changes > self.lines
    }
}

/// A status change decided on, before it is made.
#[derive(Debug, Clone, Copy)]
struct Decision {
    to: HealthStatus,
    evidence: Evidence,
    /// Every recent traffic request failed: a change into Unhealthy does not wait.
    overwhelming: bool,
    consecutive: u64,
}

/// How often traffic that a probe would judge Bad (`request_denied`) may ask for a probe.
const SUSPICION_SPACING: u64 = 1_000_000_000;

/// The state word on a cache line of its own: every Good traffic report of every thread
/// increments it, and what every report only reads (the strategy, the policy) must not
/// move between cores with it.
#[derive(Debug)]
#[repr(align(128))]
struct Hot(AtomicU64);

/// One registered backend.
#[derive(Debug)]
pub(crate) struct Backend {
    /// The status, the summary flag, and the Good traffic verdicts (see the consts).
    state: Hot,
    pub(crate) name: Arc<str>,
    common: Arc<Common>,
    strategy: StrategyCell,
    /// Probe runs and probes' opinion ([`ProbeRuns`]).
    probes: AtomicU64,
    traffic: Traffic,
    /// Counted reports, but for the Good traffic ones in the state word.
    other_checks: AtomicU64,
    probe_goods: AtomicU64,
    failures: AtomicU64,
    /// Non-Good verdicts of any origin in a row, ended by a Good verdict of any origin.
    not_good_run: Run,
    last_checked: AtomicU64,
    last_reason: AtomicU8,
    last_outcome: AtomicU8,
    /// The latest non-Good outcome, encoded ([`failure`]).
    last_failure: AtomicU64,
    /// Registry ticks of the last status change, and the evidence behind it (0: none,
    /// 1: probes, 2: traffic).
    since: AtomicU64,
    evidence: AtomicU8,
    next_reminder: AtomicU64,
    reminders: AtomicU32,
    failures_while_bad: AtomicU64,
    summary_due: AtomicU64,
    suspected_at: AtomicU64,
    warned_invalid_request: AtomicBool,
    /// The health at removal: what a removed backend reads as from then on, so that a
    /// report still in flight when it was removed changes nothing visible.
    removed: OnceLock<BackendHealth>,
    /// Held to change the status (and tried, to move the traffic buckets).
    lock: Mutex<Log>,
    /// Woken when traffic asks for a probe; the prober's task for this backend waits on it.
    pub(crate) probe_now: Notify,
    /// Every waiter woken at each change of status and at removal: what a gate that is
    /// not ready while the backend is Bad waits on ([`BackendHandle::changed`]).
    changed: Notify,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::BackendMetrics,
}

/// A panicking sink or subscriber elsewhere must not make the registry unusable: the
/// state behind this lock is valid after any panic (every write is a plain store).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[inline]
fn store_if_changed(cell: &AtomicU8, value: u8) {
    // A load first keeps the cache line shared while the value does not change.
    if cell.load(Ordering::Relaxed) != value {
        cell.store(value, Ordering::Relaxed);
    }
}

impl Backend {
    pub(crate) fn new(name: Arc<str>, strategy: AuthStrategy, common: Arc<Common>) -> Self {
        let now = common.now();
        Backend {
            // metrics hook: before `name` moves (fields are evaluated in this order).
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::BackendMetrics::new(&name),
            name,
            strategy: StrategyCell::new(strategy, &common.customs),
            state: Hot(AtomicU64::new(
                u64::from(machine::status_code(HealthStatus::Unknown)) << STATUS_SHIFT,
            )),
            // Probes say Unknown, with no runs.
            probes: AtomicU64::new(0),
            traffic: Traffic::new(now, common.limits.window),
            other_checks: AtomicU64::new(0),
            probe_goods: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            not_good_run: Run::new(),
            last_checked: AtomicU64::new(0),
            last_reason: AtomicU8::new(0),
            last_outcome: AtomicU8::new(0),
            last_failure: AtomicU64::new(0),
            since: AtomicU64::new(now),
            evidence: AtomicU8::new(0),
            next_reminder: AtomicU64::new(u64::MAX),
            reminders: AtomicU32::new(0),
            failures_while_bad: AtomicU64::new(0),
            summary_due: AtomicU64::new(u64::MAX),
            suspected_at: AtomicU64::new(0),
            warned_invalid_request: AtomicBool::new(false),
            removed: OnceLock::new(),
            lock: Mutex::new(Log::default()),
            probe_now: Notify::new(),
            changed: Notify::new(),
            common,
        }
    }

    #[inline]
    pub(crate) fn status(&self) -> HealthStatus {
        machine::status_from_code(status_of(self.state.0.load(Ordering::Acquire)))
    }

    #[inline]
    pub(crate) fn strategy(&self) -> AuthStrategy {
        self.strategy.get(&self.common.customs)
    }

    pub(crate) fn set_strategy(&self, strategy: AuthStrategy) {
        let before = self.strategy();
        if before != strategy {
            tracing::info!(
                target: "tower_health_classify",
                backend = %self.name.escape_debug(),
                from = %before.name().escape_debug(),
                to = %strategy.name().escape_debug(),
                "backend auth strategy changed"
            );
            self.strategy.set(strategy, &self.common.customs);
        }
    }

    pub(crate) fn is_removed(&self) -> bool {
        status_of(self.state.0.load(Ordering::Acquire)) == machine::REMOVED
    }

    pub(crate) fn remove(&self) {
        // Under the lock, so that no transition is published after the removal.
        let _log = lock(&self.lock);
        let mut last = self.health();
        last.status = HealthStatus::Unknown;
        let _ = self.removed.set(last);
        let word = self.state.0.load(Ordering::Acquire);
        #[cfg(feature = "metrics")]
        self.metrics
            .removed(machine::status_from_code(status_of(word)));
        let flip = u64::from(status_of(word) ^ machine::REMOVED) << STATUS_SHIFT;
        self.state.0.fetch_xor(flip, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Good traffic verdicts so far.
    fn goods(&self) -> u64 {
        self.state.0.load(Ordering::Acquire) & GOODS
    }

    /// Good verdicts of any origin so far.
    fn all_goods(&self) -> u64 {
        self.goods()
            .saturating_add(self.probe_goods.load(Ordering::Acquire))
    }

    pub(crate) fn health(&self) -> BackendHealth {
        if let Some(last) = self.removed.get() {
            return last.clone();
        }
        let word = self.state.0.load(Ordering::Acquire);
        let goods = word & GOODS;
        let all_goods = goods.saturating_add(self.probe_goods.load(Ordering::Acquire));
        // Read while reports go on, the two totals may be a report apart.
        let (consecutive_failures, consecutive_successes) = self.not_good_run.read(all_goods);
        let window = self
            .traffic
            .window(self.common.now(), self.common.limits.window, goods);
        BackendHealth {
            name: self.name.to_string(),
            strategy: self.strategy(),
            status: machine::status_from_code(status_of(word)),
            reason: machine::reason_from_code(self.last_reason.load(Ordering::Relaxed)),
            evidence: match self.evidence.load(Ordering::Acquire) {
                1 => Some(Evidence::Probes),
                2 => Some(Evidence::Traffic),
                _ => None,
            },
            consecutive_failures,
            consecutive_successes,
            window_requests: window.requests(),
            window_failures: window.bad,
            since: self.common.wall(self.since.load(Ordering::Acquire)),
            last_checked: self
                .common
                .wall_of_stamp_tick(self.last_checked.load(Ordering::Relaxed)),
            checks: goods.saturating_add(self.other_checks.load(Ordering::Acquire)),
            failures: self.failures.load(Ordering::Acquire),
            last_outcome: machine::outcome_from_code(self.last_outcome.load(Ordering::Relaxed)),
            last_error: failure::describe(self.last_failure.load(Ordering::Acquire)),
        }
    }

    // Always: the hot path is a handful of instructions, the rest is out of line.
    #[inline(always)]
    fn report(&self, report: &HealthReport<'_>) {
        let Some(verdict) = report.verdict else {
            self.not_counted(report.outcome);
            return;
        };
        if verdict.is_good() && report.origin == Origin::Traffic {
            let before = self.state.0.fetch_add(1, Ordering::AcqRel);
            if before >> 60 == HOT && verdict.reason != Reason::RequestDenied {
                self.record(report, verdict);
                return;
            }
            self.good_traffic(report, verdict, before);
            return;
        }
        self.judge(report, verdict);
    }

    #[inline]
    fn record(&self, report: &HealthReport<'_>, verdict: Verdict) {
        // At most one write a millisecond: a write per report would bounce the cache line
        // between the cores that report, and `last_checked` is shown to the millisecond.
        let checked = self
            .common
            .stamp_tick(report.ended.unwrap_or_else(clock::now));
        let last = self.last_checked.load(Ordering::Relaxed);
        if last == 0 || checked > last.saturating_add(1_000_000) {
            self.last_checked.store(checked, Ordering::Relaxed);
        }
        store_if_changed(&self.last_reason, machine::reason_code(verdict.reason));
        store_if_changed(&self.last_outcome, machine::outcome_code(report.outcome));
        #[cfg(feature = "metrics")]
        self.metrics
            .report(report.outcome, verdict.reason, report.latency);
    }

    /// A Good traffic verdict off the hot path (the backend is not Healthy, a summary is
    /// due, or the caller was denied). The state word has counted it already. Never
    /// inlined, nor is [`judge`](Self::judge): `report` stays small enough to be inlined
    /// into the layer.
    #[inline(never)]
    fn good_traffic(&self, report: &HealthReport<'_>, verdict: Verdict, before: u64) {
        if status_of(before) == machine::REMOVED {
            return;
        }
        self.record(report, verdict);
        let now = self.common.now();
        if verdict.reason == Reason::RequestDenied {
            self.suspect(now);
        }
        self.rotate(now);
        self.settle(now, Evidence::Traffic, verdict);
        self.flush_summary(now);
        self.debug(report, verdict);
    }

    /// Every report but a Good traffic one.
    #[inline(never)]
    fn judge(&self, report: &HealthReport<'_>, verdict: Verdict) {
        if self.is_removed() {
            return;
        }
        self.record(report, verdict);
        self.other_checks.fetch_add(1, Ordering::AcqRel);
        let now = self.common.now();
        // Before this report is counted: a rotation spreads what came before it.
        self.rotate(now);
        if verdict.is_good() {
            self.probe_goods.fetch_add(1, Ordering::AcqRel);
        } else {
            if verdict.is_bad() {
                self.failures.fetch_add(1, Ordering::AcqRel);
            }
            self.last_failure.store(
                failure::encode(report.outcome, verdict.reason, report.tls_failure),
                Ordering::Release,
            );
            self.not_good_run.count(self.all_goods());
        }
        let changed = match report.origin {
            Origin::Probe => self
                .count_probe(now, verdict)
                .unwrap_or_else(|| self.settle(now, Evidence::Probes, verdict)),
            Origin::Traffic => {
                if verdict.is_bad() {
                    self.traffic.count_bad(self.goods());
                } else {
                    self.traffic.count_soft();
                }
                self.settle(now, Evidence::Traffic, verdict)
            }
        };
        if !changed && verdict.is_bad() {
            self.remind(now, verdict);
        }
        self.flush_summary(now);
        self.debug(report, verdict);
    }

    /// Counts a probe verdict. One that changes what probes say is counted under the
    /// lock, and the status settled in the same hold, so that the status follows probes'
    /// opinion step by step even when probes race: then returns whether the status
    /// changed. `None`: counted without the lock; the status is still to be settled.
    fn count_probe(&self, now: u64, verdict: Verdict) -> Option<bool> {
        let policy = &self.common.policy;
        let mut word = self.probes.load(Ordering::Acquire);
        loop {
            let runs = ProbeRuns::decode(word);
            let next = runs.after(verdict, policy);
            if next.opinion != runs.opinion {
                break;
            }
            match self.probes.compare_exchange_weak(
                word,
                next.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return None,
                Err(current) => word = current,
            }
        }
        let log = lock(&self.lock);
        let next = loop {
            let word = self.probes.load(Ordering::Acquire);
            let next = ProbeRuns::decode(word).after(verdict, policy);
            if self
                .probes
                .compare_exchange_weak(word, next.encode(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break next;
            }
        };
        Some(self.settle_locked(log, now, Evidence::Probes, verdict, Some(next)))
    }

    /// Moves the traffic buckets if a window has passed, unless another report is busy
    /// with the lock (it may be doing just that).
    fn rotate(&self, now: u64) {
        let window = self.common.limits.window;
        if self.traffic.is_stale(now, window) {
            if let Ok(_log) = self.lock.try_lock() {
                self.traffic.rotate(now, window, self.goods());
            }
        }
    }

    /// What the evidence says the status should be, if not what it is. `probes`: what
    /// they say, if already read.
    fn decide(
        &self,
        now: u64,
        origin: Evidence,
        from: HealthStatus,
        probes: Option<ProbeRuns>,
    ) -> Option<Decision> {
        let limits = &self.common.limits;
        let goods = self.goods();
        let window = self.traffic.window(now, limits.window, goods);
        let bad_run = self.traffic.bad_run(goods);
        let probes =
            probes.unwrap_or_else(|| ProbeRuns::decode(self.probes.load(Ordering::Acquire)));
        let traffic = machine::traffic_opinion(window, bad_run, limits);
        let (to, evidence) = machine::combine(probes.opinion, traffic, origin)?;
        if to == from {
            return None;
        }
        let overwhelming = evidence == Evidence::Traffic && bad_run >= limits.min_requests;
        let consecutive = match evidence {
            Evidence::Probes => probes.leading_to(to),
            Evidence::Traffic if overwhelming => bad_run,
            Evidence::Traffic => window.requests(),
        };
        Some(Decision {
            to,
            evidence,
            overwhelming,
            consecutive,
        })
    }

    /// Whether a decided change may be made now: traffic's changes wait `hold_time`
    /// after the previous change, but out of Unknown and into Unhealthy when every
    /// request fails.
    fn may_change(&self, now: u64, from: HealthStatus, decision: Decision) -> bool {
        from == HealthStatus::Unknown
            || decision.evidence == Evidence::Probes
            || (decision.overwhelming && decision.to.is_bad())
            || now
                >= self
                    .since
                    .load(Ordering::Acquire)
                    .saturating_add(self.common.limits.hold)
    }

    /// Changes the status if the evidence asks for it and the hold allows it. Returns
    /// whether it changed.
    fn settle(&self, now: u64, origin: Evidence, verdict: Verdict) -> bool {
        let from = status_of(self.state.0.load(Ordering::Acquire));
        if from == machine::REMOVED {
            return false;
        }
        let from = machine::status_from_code(from);
        match self.decide(now, origin, from, None) {
            Some(decision) if self.may_change(now, from, decision) => {}
            _ => return false,
        }
        self.settle_locked(lock(&self.lock), now, origin, verdict, None)
    }

    /// [`settle`](Self::settle) with the lock held: decides again (another report may
    /// have changed the status, and a window read without the lock may have been torn
    /// by a rotation), and makes the change.
    fn settle_locked(
        &self,
        mut log: MutexGuard<'_, Log>,
        now: u64,
        origin: Evidence,
        verdict: Verdict,
        probes: Option<ProbeRuns>,
    ) -> bool {
        let word = self.state.0.load(Ordering::Acquire);
        if status_of(word) == machine::REMOVED {
            return false;
        }
        let from = machine::status_from_code(status_of(word));
        let decision = match self.decide(now, origin, from, probes) {
            Some(decision) if self.may_change(now, from, decision) => decision,
            _ => return false,
        };
        let to = decision.to;
        let flip = u64::from(machine::status_code(from) ^ machine::status_code(to));
        self.state
            .0
            .fetch_xor(flip << STATUS_SHIFT, Ordering::AcqRel);
        self.since.store(now, Ordering::Release);
        self.changed.notify_waiters();
        self.evidence.store(
            match decision.evidence {
                Evidence::Probes => 1,
                Evidence::Traffic => 2,
            },
            Ordering::Release,
        );
        if to.is_bad() && !from.is_bad() {
            // Into Bad: the reminders start over. Between the two Bad statuses they go on.
            self.next_reminder.store(
                now.saturating_add(self.common.limits.reminder_initial),
                Ordering::Release,
            );
            self.reminders.store(0, Ordering::Release);
            self.failures_while_bad.store(1, Ordering::Release);
        }
        #[cfg(feature = "metrics")]
        self.metrics.transition(from, to);
        let (logged, summary) = log.transition(now, &self.common.limits);
        if log.summary_pending() {
            self.summary_due.store(log.interval_end, Ordering::Release);
            self.state.0.fetch_or(SUMMARY_DUE, Ordering::AcqRel);
        }
        // Published under the lock, so that subscribers see one backend's changes in
        // order. No subscriber is fine: transitions are not queued for nobody.
        let _ = self.common.transitions.send(Transition {
            backend: self.name.clone(),
            from,
            to,
            reason: verdict.reason,
            evidence: decision.evidence,
            consecutive: decision.consecutive,
            at: self.common.wall(now),
        });
        drop(log);

        if let Some(changes) = summary {
            self.log_summary(changes, from);
        }
        if logged {
            self.log_transition(from, to, verdict.reason, decision);
        }
        true
    }

    /// Writes the summary of a log interval that has ended, if one is due.
    fn flush_summary(&self, now: u64) {
        if self.state.0.load(Ordering::Acquire) & SUMMARY_DUE == 0
            || now < self.summary_due.load(Ordering::Acquire)
        {
            return;
        }
        let Ok(mut log) = self.lock.try_lock() else {
            return;
        };
        let summary = log.roll(now, &self.common.limits);
        if !log.summary_pending() {
            self.state.0.fetch_and(!SUMMARY_DUE, Ordering::AcqRel);
        }
        drop(log);
        if let Some(changes) = summary {
            self.log_summary(changes, self.status());
        }
    }

    fn log_transition(
        &self,
        from: HealthStatus,
        to: HealthStatus,
        reason: Reason,
        decision: Decision,
    ) {
        // A TLS failure's cause, from the failure that made the change.
        let tls_failure = match reason {
            Reason::Transport(TransportKind::Tls) => {
                failure::tls_failure(self.last_failure.load(Ordering::Acquire))
            }
            _ => None,
        };
        macro_rules! log_transition {
            ($level:ident) => {
                tracing::$level!(
                    target: "tower_health_classify",
                    backend = %self.name.escape_debug(),
                    from = from.as_str(),
                    to = to.as_str(),
                    reason = reason.as_str(),
                    tls_failure = tls_failure.map(TlsFailure::as_str),
                    evidence = decision.evidence.as_str(),
                    consecutive = decision.consecutive,
                    "backend health changed"
                )
            };
        }
        if to.is_bad() {
            log_transition!(warn);
        } else {
            log_transition!(info);
        }
    }

    fn log_summary(&self, changes: u32, now: HealthStatus) {
        let interval = Duration::from_nanos(self.common.limits.log_interval);
        let minutes = interval.as_secs() / 60;
        macro_rules! log_summary {
            ($level:ident) => {
                tracing::$level!(
                    target: "tower_health_classify",
                    backend = %self.name.escape_debug(),
                    changes,
                    interval_secs = interval.as_secs(),
                    status = now.as_str(),
                    "backend health changed {changes} times in the last {}, now {}",
                    if minutes > 0 && interval.as_secs() % 60 == 0 {
                        format!("{minutes} min")
                    } else {
                        format!("{} s", interval.as_secs())
                    },
                    now.as_str(),
                )
            };
        }
        if now.is_bad() {
            log_summary!(warn);
        } else {
            log_summary!(info);
        }
    }

    /// One more Bad verdict while the backend stays Bad: a reminder when one is due.
    fn remind(&self, now: u64, verdict: Verdict) {
        let status = self.status();
        if !status.is_bad() {
            return;
        }
        let failures = self.failures_while_bad.fetch_add(1, Ordering::AcqRel) + 1;
        let due = self.next_reminder.load(Ordering::Acquire);
        if now < due {
            return;
        }
        let limits = &self.common.limits;
        let step = self.reminders.load(Ordering::Acquire).saturating_add(1);
        let interval = 1u64
            .checked_shl(step)
            .and_then(|factor| limits.reminder_initial.checked_mul(factor))
            .unwrap_or(u64::MAX)
            .min(limits.reminder_max);
        // One reporter wins the reminder; the others were not due after all.
        if self
            .next_reminder
            .compare_exchange(
                due,
                now.saturating_add(interval),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        self.reminders.store(step, Ordering::Release);
        let since = self.since.load(Ordering::Acquire);
        tracing::warn!(
            target: "tower_health_classify",
            backend = %self.name.escape_debug(),
            status = status.as_str(),
            reason = verdict.reason.as_str(),
            failures,
            down_for_secs = Duration::from_nanos(now.saturating_sub(since)).as_secs(),
            "backend still {}", status.as_str()
        );
    }

    /// Traffic a probe would judge Bad: ask the prober for a probe, at most once per
    /// [`SUSPICION_SPACING`].
    fn suspect(&self, now: u64) {
        let last = self.suspected_at.load(Ordering::Acquire);
        if last != 0 && now < last.saturating_add(SUSPICION_SPACING) {
            return;
        }
        if self
            .suspected_at
            .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::debug!(
                target: "tower_health_classify",
                backend = %self.name.escape_debug(),
                "a caller's request was denied; asking for a probe"
            );
            self.probe_now.notify_one();
        }
    }

    fn debug(&self, report: &HealthReport<'_>, verdict: Verdict) {
        tracing::debug!(
            target: "tower_health_classify",
            backend = %self.name.escape_debug(),
            outcome = %report.outcome,
            verdict = %verdict,
            origin = match report.origin {
                Origin::Probe => "probe",
                Origin::Traffic => "traffic",
            },
            status = self.status().as_str(),
            "backend report"
        );
    }

    /// Cancelled and Local outcomes: no counter moves. A request that cannot be sent as
    /// built is a gateway misconfiguration, said once per backend.
    #[inline(never)]
    fn not_counted(&self, outcome: &Outcome) {
        if let Outcome::Local(LocalKind::InvalidRequest) = outcome {
            if !self.is_removed() && !self.warned_invalid_request.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    target: "tower_health_classify",
                    backend = %self.name.escape_debug(),
                    "requests to this backend cannot be sent as built (bad URI or scheme): check the gateway's configuration"
                );
            }
        }
    }
}

/// The sink for one backend of a [`HealthRegistry`](crate::HealthRegistry): give it to
/// [`HealthClassifyLayer::new`](crate::HealthClassifyLayer::new).
///
/// Cheap to clone; clones report to the same backend. The strategy is read from the
/// registry on every report, so [`set_strategy`](crate::HealthRegistry::set_strategy)
/// takes effect on the next one. Whatever the strategy, a report waits on no lock and
/// allocates nothing unless it changes the status (or what probes say), which takes the
/// backend's lock: a Good traffic verdict on a Healthy backend is one atomic increment.
/// Reports made after the backend was removed are dropped.
#[derive(Clone)]
pub struct BackendHandle {
    pub(crate) backend: Arc<Backend>,
}

impl BackendHandle {
    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.backend.name
    }

    /// The backend's current status: one atomic load.
    #[inline]
    pub fn status(&self) -> HealthStatus {
        self.backend.status()
    }

    /// The backend's current health, as in a snapshot.
    pub fn health(&self) -> BackendHealth {
        self.backend.health()
    }

    /// Whether the backend was removed from its registry (reports are then dropped).
    pub fn is_removed(&self) -> bool {
        self.backend.is_removed()
    }

    /// Completes at the backend's next change of status (or its removal), from the
    /// moment it is first polled: read [`status`](Self::status) after that first poll,
    /// so that a change between the two is not missed. For a task that waits for one
    /// backend rather than following every [`Transition`] of the registry.
    ///
    /// # Example
    ///
    /// ```
    /// use std::pin::pin;
    /// use tower_health_classify::{AuthStrategy, ExchangeReport, HealthRegistry, HealthStatus, Origin, Outcome};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = HealthRegistry::default();
    /// let search = registry.register("search", AuthStrategy::Unauthenticated);
    /// let mut changed = pin!(search.changed());
    /// assert!(futures_poll_once(changed.as_mut()).is_pending());
    ///
    /// let ok = Outcome::Success(http::StatusCode::OK);
    /// ExchangeReport::new(&ok).origin(Origin::Probe).report(&search);
    /// changed.await;
    /// assert_eq!(search.status(), HealthStatus::Healthy);
    /// # }
    /// # fn futures_poll_once<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    /// #     f.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    /// # }
    /// ```
    pub fn changed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let backend = self.backend.clone();
        async move { backend.changed.notified().await }
    }

    /// Registry ticks of the latest change of status: tells one Bad spell from the next.
    #[inline]
    pub(crate) fn changed_at(&self) -> u64 {
        self.backend.since.load(Ordering::Acquire)
    }
}

impl HealthSink for BackendHandle {
    #[inline]
    fn strategy(&self) -> AuthStrategy {
        self.backend.strategy()
    }

    #[inline]
    fn slow_threshold(&self) -> Duration {
        self.backend.common.policy.slow_threshold
    }

    /// With feature `metrics` (the registry records every latency in a histogram), or a
    /// slow threshold under one second.
    #[inline]
    fn precise_latency(&self) -> bool {
        self.backend.common.precise_latency
    }

    #[inline]
    fn report(&self, report: &HealthReport<'_>) {
        self.backend.report(report)
    }
}

impl fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendHandle")
            .field("name", &self.backend.name)
            .field("status", &self.backend.status())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(budget: u32) -> Limits {
        Limits::new(&Policy {
            log_budget: budget,
            log_interval: Duration::from_nanos(100),
            ..Policy::default()
        })
    }

    #[test]
    fn the_log_budget_summarizes_a_flapping_backend() {
        let limits = limits(2);
        let mut log = Log::default();
        // Interval [10, 110): two lines, then counted only.
        assert_eq!(log.transition(10, &limits), (true, None));
        assert_eq!(log.transition(20, &limits), (true, None));
        assert_eq!(log.transition(30, &limits), (false, None));
        assert!(log.summary_pending());
        assert_eq!(log.transition(40, &limits), (false, None));
        // The interval's end: a summary of its four changes; now flapping, [110, 210).
        assert_eq!(log.roll(110, &limits), Some(4));
        assert!(log.flapping && !log.summary_pending());
        assert_eq!(log.transition(150, &limits), (false, None));
        assert_eq!(log.transition(160, &limits), (false, None));
        // One summary per interval while it flaps, then calm: two changes in [110, 210)
        // are within the budget, so the next change starts an interval of single lines.
        assert_eq!(log.transition(215, &limits), (true, Some(2)));
        assert!(!log.flapping);
        assert_eq!(log.roll(315, &limits), None);
        assert_eq!(log.interval_end, 0);
        assert_eq!(log.transition(400, &limits), (true, None));
    }

    #[test]
    fn quiet_intervals_end_without_a_summary() {
        let limits = limits(3);
        let mut log = Log::default();
        assert_eq!(log.transition(0, &limits), (true, None));
        assert_eq!(log.roll(1_000, &limits), None);
        assert_eq!(log.interval_end, 0);
        let mut unlimited = Log::default();
        let no_budget = Limits::new(&Policy {
            log_interval: Duration::ZERO,
            ..Policy::default()
        });
        for at in 0..10 {
            assert_eq!(unlimited.transition(at, &no_budget), (true, None));
        }
    }

    #[test]
    fn probe_runs_round_trip_and_saturate() {
        let runs = ProbeRuns {
            opinion: HealthStatus::Unauthenticated,
            good: 0,
            not_good: RUN,
            bad: 12,
        };
        assert_eq!(ProbeRuns::decode(runs.encode()), runs);
        let policy = Policy::default();
        let bad = Verdict::new(HealthStatus::Unhealthy, Reason::ServerError);
        let after = runs.after(bad, &policy);
        assert_eq!((after.not_good, after.bad), (RUN, 13));
        assert_eq!(after.opinion, HealthStatus::Unhealthy);
    }
}
