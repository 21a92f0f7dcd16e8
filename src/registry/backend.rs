//! One registered backend: its state, and `BackendHandle`, the sink that reports to it.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::machine::{self, Runs};
use super::snapshot::BackendHealth;
use super::transition::Transition;
use super::Policy;
use crate::classify::Outcome;
use crate::clock::{self, Stamp};
use crate::error::{AuthError, LocalKind};
use crate::sink::{HealthReport, HealthSink};
use crate::verdict::{AuthStrategy, HealthStatus, Verdict};

/// What every backend of one registry shares. Holds no backend, so no cycle.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) policy: Policy,
    pub(crate) transitions: broadcast::Sender<Transition>,
    /// Bumped whenever a backend is added or removed, so that a watcher (the prober)
    /// learns of membership changes without polling.
    pub(crate) membership: watch::Sender<u64>,
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
            policy,
            transitions,
            membership,
            base: Instant::now(),
            base_stamp: clock::now(),
            base_wall: SystemTime::now(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::now().max(self.base)
    }

    /// Tells membership watchers that a backend was added or removed. Call it once the
    /// change is visible in the map: a watcher marks the generation seen, then reads the
    /// map, so it either sees the change or is woken for it.
    pub(crate) fn membership_changed(&self) {
        // `send_modify` updates even with no receiver, unlike `send`.
        self.membership
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Wall-clock time of a monotonic instant, anchored at the registry's creation, so
    /// that it follows paused time in tests.
    pub(crate) fn wall(&self, at: Instant) -> SystemTime {
        self.base_wall + at.saturating_duration_since(self.base)
    }

    /// A reading of the layer's clock as nanoseconds since the registry's creation, plus
    /// one: 0 stays free for "never".
    #[inline]
    fn tick(&self, at: Stamp) -> u64 {
        let nanos = at.since(self.base_stamp).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    fn wall_of_tick(&self, tick: u64) -> Option<SystemTime> {
        let nanos = tick.checked_sub(1)?;
        Some(self.base_wall + Duration::from_nanos(nanos))
    }
}

/// The strategy, readable without a lock for the four built-in strategies.
#[derive(Debug)]
struct StrategyCell {
    tag: AtomicU8,
    custom: Mutex<Option<AuthStrategy>>,
}

const CUSTOM: u8 = 4;

/// The built-in strategy a tag stands for; `None` for [`CUSTOM`].
#[inline]
fn builtin(tag: u8) -> Option<AuthStrategy> {
    match tag {
        0 => Some(AuthStrategy::Unauthenticated),
        1 => Some(AuthStrategy::HeaderInjection),
        2 => Some(AuthStrategy::TokenExchange),
        3 => Some(AuthStrategy::UpstreamInject),
        _ => None,
    }
}

impl StrategyCell {
    fn new(strategy: AuthStrategy) -> Self {
        let cell = StrategyCell {
            tag: AtomicU8::new(0),
            custom: Mutex::new(None),
        };
        cell.set(strategy);
        cell
    }

    #[inline]
    fn get(&self) -> AuthStrategy {
        if let Some(strategy) = builtin(self.tag.load(Ordering::Acquire)) {
            return strategy;
        }
        let custom = lock(&self.custom);
        match &*custom {
            Some(strategy) => strategy.clone(),
            // A `set` to a built-in strategy ran between the tag's load and the lock. It
            // wrote the tag under this lock, so the tag now names that strategy.
            None => {
                builtin(self.tag.load(Ordering::Acquire)).unwrap_or(AuthStrategy::Unauthenticated)
            }
        }
    }

    fn set(&self, strategy: AuthStrategy) {
        let tag = match strategy {
            AuthStrategy::Unauthenticated => 0,
            AuthStrategy::HeaderInjection => 1,
            AuthStrategy::TokenExchange => 2,
            AuthStrategy::UpstreamInject => 3,
            AuthStrategy::Custom { .. } => CUSTOM,
        };
        let mut custom = lock(&self.custom);
        *custom = (tag == CUSTOM).then_some(strategy);
        self.tag.store(tag, Ordering::Release);
    }
}

/// What only the slow path touches, behind the lock: every report but a Good one on a
/// Healthy backend.
#[derive(Debug)]
struct Slow {
    /// Non-Good verdicts in a row (exact; the packed word only has a flag for it).
    not_good_run: u64,
    /// Bad verdicts in a row.
    bad_run: u64,
    /// Counted reports, except the lock-free ones of the current Good run.
    checks: u64,
    /// The current Good run's verdicts that went through this path.
    slow_goods_in_run: u64,
    /// Counted reports with a Bad verdict.
    failures: u64,
    since: Instant,
    last_error: Option<String>,
    failures_while_bad: u64,
    next_reminder: Instant,
    reminder_interval: Duration,
    warned_invalid_request: bool,
}

/// Set in the packed run word while a run of non-Good verdicts lasts.
const NOT_GOOD: u64 = 1 << 63;

/// One registered backend.
///
/// The hot path, a Good verdict on a Healthy backend, is one `fetch_add` on `runs` (the
/// Good run's length, with the [`NOT_GOOD`] flag on top) and relaxed stores. Everything
/// else takes the lock; the totals are kept there and the lock-free reports of the
/// current Good run are added when they are read or when the run ends.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) name: Arc<str>,
    common: Arc<Common>,
    strategy: StrategyCell,
    status: AtomicU8,
    runs: AtomicU64,
    last_checked: AtomicU64,
    last_reason: AtomicU8,
    last_outcome: AtomicU8,
    slow: Mutex<Slow>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::BackendMetrics,
}

/// A panicking sink or subscriber elsewhere must not make the registry unusable: the
/// state behind these locks is valid after any panic (every write is a plain store).
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
            strategy: StrategyCell::new(strategy),
            status: AtomicU8::new(machine::status_code(HealthStatus::Unknown)),
            runs: AtomicU64::new(0),
            last_checked: AtomicU64::new(0),
            last_reason: AtomicU8::new(0),
            last_outcome: AtomicU8::new(0),
            slow: Mutex::new(Slow {
                not_good_run: 0,
                bad_run: 0,
                checks: 0,
                slow_goods_in_run: 0,
                failures: 0,
                since: now,
                last_error: None,
                failures_while_bad: 0,
                next_reminder: now,
                reminder_interval: common.policy.reminder_initial,
                warned_invalid_request: false,
            }),
            common,
        }
    }

    #[inline]
    pub(crate) fn status(&self) -> HealthStatus {
        machine::status_from_code(self.status.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn strategy(&self) -> AuthStrategy {
        self.strategy.get()
    }

    pub(crate) fn set_strategy(&self, strategy: AuthStrategy) {
        let before = self.strategy.get();
        if before != strategy {
            tracing::info!(
                target: "tower_health_classify",
                backend = %self.name.escape_debug(),
                from = %before.name().escape_debug(),
                to = %strategy.name().escape_debug(),
                "backend auth strategy changed"
            );
            self.strategy.set(strategy);
        }
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.status.load(Ordering::Acquire) == machine::REMOVED
    }

    pub(crate) fn remove(&self) {
        // Under the lock, so that no report in the slow path can publish a transition
        // after the removal; the lock-free path only runs on Healthy, which this ends.
        let _slow = lock(&self.slow);
        #[cfg(feature = "metrics")]
        self.metrics.removed(self.status());
        self.status.store(machine::REMOVED, Ordering::Release);
    }

    /// The runs now and the counted reports, as the lock's holder sees them.
    fn totals(&self, slow: &Slow) -> (Runs, u64) {
        let word = self.runs.load(Ordering::Acquire);
        if word & NOT_GOOD != 0 {
            let runs = Runs {
                good: 0,
                not_good: slow.not_good_run,
            };
            return (runs, slow.checks);
        }
        let good = word & !NOT_GOOD;
        let lock_free = good.saturating_sub(slow.slow_goods_in_run);
        (Runs { good, not_good: 0 }, slow.checks + lock_free)
    }

    pub(crate) fn health(&self) -> BackendHealth {
        let slow = lock(&self.slow);
        let (runs, checks) = self.totals(&slow);
        BackendHealth {
            name: self.name.to_string(),
            strategy: self.strategy.get(),
            status: self.status(),
            reason: machine::reason_from_code(self.last_reason.load(Ordering::Relaxed)),
            consecutive_failures: runs.not_good,
            consecutive_successes: runs.good,
            since: self.common.wall(slow.since),
            last_checked: self
                .common
                .wall_of_tick(self.last_checked.load(Ordering::Relaxed)),
            checks,
            failures: slow.failures,
            last_outcome: machine::outcome_from_code(self.last_outcome.load(Ordering::Relaxed)),
            last_error: slow.last_error.clone(),
        }
    }

    #[inline]
    fn report(&self, report: &HealthReport<'_>) {
        let Some(verdict) = report.verdict else {
            self.not_counted(report.outcome);
            return;
        };
        if verdict.is_good() && self.good_while_healthy(report, verdict) {
            return;
        }
        self.judge(report, verdict);
    }

    /// The hot path: a Good verdict on a Healthy backend with no failure run to reset.
    /// Atomics only: no lock, no allocation.
    #[inline]
    fn good_while_healthy(&self, report: &HealthReport<'_>, verdict: Verdict) -> bool {
        if self.status.load(Ordering::Acquire) != machine::status_code(HealthStatus::Healthy) {
            return false;
        }
        // The slow path raises the flag before it moves the status away from Healthy, so
        // an increment that finds the flag down counts a Good verdict on a Healthy
        // backend. One that finds it up is ignored (the slow path resets the word) and
        // the report goes the slow way.
        if self.runs.fetch_add(1, Ordering::AcqRel) & NOT_GOOD != 0 {
            return false;
        }
        self.record(report, verdict);
        true
    }

    #[inline]
    fn record(&self, report: &HealthReport<'_>, verdict: Verdict) {
        self.last_checked.store(
            self.common.tick(report.ended.unwrap_or_else(clock::now)),
            Ordering::Relaxed,
        );
        store_if_changed(&self.last_reason, machine::reason_code(verdict.reason));
        store_if_changed(&self.last_outcome, machine::outcome_code(report.outcome));
        #[cfg(feature = "metrics")]
        self.metrics
            .report(report.outcome, verdict.reason, report.latency);
    }

    /// Every report but the hot path's: may change the status, under the lock.
    fn judge(&self, report: &HealthReport<'_>, verdict: Verdict) {
        let mut slow = lock(&self.slow);
        if self.is_removed() {
            return;
        }
        self.record(report, verdict);
        let good = verdict.is_good();
        slow.checks += 1;
        let runs = if good {
            let before = self.runs.load(Ordering::Acquire);
            if before & NOT_GOOD != 0 {
                // The first Good verdict after non-Good ones. Increments made on the word
                // since the flag went up came from reports that then took this path.
                self.runs.store(1, Ordering::Release);
                slow.slow_goods_in_run = 1;
            } else {
                self.runs.fetch_add(1, Ordering::AcqRel);
                slow.slow_goods_in_run += 1;
            }
            slow.not_good_run = 0;
            self.totals(&slow).0
        } else {
            let before = self.runs.swap(NOT_GOOD, Ordering::AcqRel);
            if before & NOT_GOOD == 0 {
                // A Good run ends: its lock-free reports join the total now.
                slow.checks += (before & !NOT_GOOD).saturating_sub(slow.slow_goods_in_run);
                slow.slow_goods_in_run = 0;
                slow.not_good_run = 0;
            }
            slow.not_good_run += 1;
            if verdict.is_bad() {
                slow.failures += 1;
            }
            Runs {
                good: 0,
                not_good: slow.not_good_run,
            }
        };
        slow.bad_run = if verdict.is_bad() {
            slow.bad_run + 1
        } else {
            0
        };
        if !good {
            slow.last_error = Some(describe(report.outcome));
        }

        // The layer's clock may be the coarse one, which does not follow tokio's paused
        // time; status times and reminders use tokio's clock, read here off the hot path.
        let now = self.common.now();
        let from = self.status();
        let to = machine::next_status(from, verdict, runs, slow.bad_run, &self.common.policy);
        if to != from {
            self.status
                .store(machine::status_code(to), Ordering::Release);
            let consecutive = match to {
                HealthStatus::Healthy => runs.good,
                HealthStatus::Unhealthy | HealthStatus::Unauthenticated => slow.bad_run,
                _ => runs.not_good,
            };
            slow.since = now;
            slow.failures_while_bad = u64::from(to.is_bad());
            slow.reminder_interval = self.common.policy.reminder_initial;
            slow.next_reminder = now + slow.reminder_interval;
            self.transition(from, to, verdict, consecutive, now);
        } else if to.is_bad() && verdict.is_bad() {
            slow.failures_while_bad += 1;
            if now >= slow.next_reminder {
                tracing::warn!(
                    target: "tower_health_classify",
                    backend = %self.name.escape_debug(),
                    status = to.as_str(),
                    reason = verdict.reason.as_str(),
                    failures = slow.failures_while_bad,
                    down_for_secs = now.saturating_duration_since(slow.since).as_secs(),
                    "backend still {}", to.as_str()
                );
                slow.reminder_interval = (slow.reminder_interval * 2).min(
                    self.common
                        .policy
                        .reminder_max
                        .max(self.common.policy.reminder_initial),
                );
                slow.next_reminder = now + slow.reminder_interval;
            } else {
                self.debug(report, verdict, to);
            }
        } else {
            self.debug(report, verdict, to);
        }
    }

    fn debug(&self, report: &HealthReport<'_>, verdict: Verdict, status: HealthStatus) {
        tracing::debug!(
            target: "tower_health_classify",
            backend = %self.name.escape_debug(),
            outcome = %report.outcome,
            verdict = %verdict,
            status = status.as_str(),
            "backend report"
        );
    }

    fn transition(
        &self,
        from: HealthStatus,
        to: HealthStatus,
        verdict: Verdict,
        consecutive: u64,
        at: Instant,
    ) {
        macro_rules! log_transition {
            ($level:ident) => {
                tracing::$level!(
                    target: "tower_health_classify",
                    backend = %self.name.escape_debug(),
                    from = from.as_str(),
                    to = to.as_str(),
                    reason = verdict.reason.as_str(),
                    consecutive,
                    "backend health changed"
                )
            };
        }
        if to.is_bad() {
            log_transition!(warn);
        } else {
            log_transition!(info);
        }
        #[cfg(feature = "metrics")]
        self.metrics.transition(from, to);
        // No subscriber is fine: transitions are not queued for nobody.
        let _ = self.common.transitions.send(Transition {
            backend: self.name.clone(),
            from,
            to,
            reason: verdict.reason,
            consecutive,
            at: self.common.wall(at),
        });
    }

    /// Cancelled and Local outcomes: no counter moves. A request that cannot be sent as
    /// built is a gateway misconfiguration, said once per backend.
    fn not_counted(&self, outcome: &Outcome) {
        if let Outcome::Local(LocalKind::InvalidRequest) = outcome {
            let mut slow = lock(&self.slow);
            if !slow.warned_invalid_request && !self.is_removed() {
                slow.warned_invalid_request = true;
                tracing::warn!(
                    target: "tower_health_classify",
                    backend = %self.name.escape_debug(),
                    "requests to this backend cannot be sent as built (bad URI or scheme): check the gateway's configuration"
                );
            }
        }
    }
}

/// What `last_error` shows: built from the outcome alone, never from the request, so it
/// cannot carry a credential. Backend-supplied text is escaped and cut short.
fn describe(outcome: &Outcome) -> String {
    let mut text = outcome.to_string();
    if let Outcome::Auth(auth) = outcome {
        if let Some(description) = auth.error_description() {
            let description: String = description.chars().take(200).collect();
            text.push_str(": ");
            text.extend(description.escape_debug());
        }
        if let AuthError::Unauthorized { .. } | AuthError::Forbidden { .. } = auth {
            if auth.credentials_sent() {
                text.push_str(" [credentials sent]");
            }
        }
    }
    text
}

/// The sink for one backend of a [`HealthRegistry`](crate::HealthRegistry): give it to
/// [`HealthClassifyLayer::new`](crate::HealthClassifyLayer::new).
///
/// Cheap to clone; clones report to the same backend. The strategy is read from the
/// registry on every report, so [`set_strategy`](crate::HealthRegistry::set_strategy)
/// takes effect on the next one. A Good verdict on a Healthy backend takes no lock and
/// allocates nothing; a built-in strategy is read without a lock (a custom one takes an
/// uncontended one). Reports made after the backend was removed are dropped.
#[derive(Clone)]
pub struct BackendHandle {
    pub(crate) backend: Arc<Backend>,
}

impl BackendHandle {
    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.backend.name
    }

    /// The backend's current status.
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
}

impl HealthSink for BackendHandle {
    fn strategy(&self) -> AuthStrategy {
        self.backend.strategy()
    }

    #[inline]
    fn slow_threshold(&self) -> Duration {
        self.backend.common.policy.slow_threshold
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
