//! One registered backend: its state, and `BackendHandle`, the sink that reports to it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::machine::{self, Runs};
use super::snapshot::BackendHealth;
use super::transition::Transition;
use super::Policy;
use crate::classify::Outcome;
use crate::error::{AuthError, LocalKind};
use crate::sink::{HealthReport, HealthSink};
use crate::verdict::{AuthStrategy, HealthStatus, Verdict};

/// What every backend of one registry shares. Holds no backend, so no cycle.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) policy: Policy,
    pub(crate) transitions: broadcast::Sender<Transition>,
    base: Instant,
    base_wall: SystemTime,
}

impl Common {
    pub(crate) fn new(policy: Policy) -> Self {
        let (transitions, _) = broadcast::channel(1024);
        Common {
            policy,
            transitions,
            base: Instant::now(),
            base_wall: SystemTime::now(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::now().max(self.base)
    }

    /// Wall-clock time of a monotonic instant, anchored at the registry's creation, so
    /// that it follows paused time in tests.
    pub(crate) fn wall(&self, at: Instant) -> SystemTime {
        self.base_wall + at.saturating_duration_since(self.base)
    }

    /// An instant as nanoseconds since the registry's creation, plus one: 0 stays free
    /// for "never".
    fn tick(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
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

impl StrategyCell {
    fn new(strategy: AuthStrategy) -> Self {
        let cell = StrategyCell {
            tag: AtomicU8::new(0),
            custom: Mutex::new(None),
        };
        cell.set(strategy);
        cell
    }

    fn get(&self) -> AuthStrategy {
        match self.tag.load(Ordering::Acquire) {
            0 => AuthStrategy::Unauthenticated,
            1 => AuthStrategy::HeaderInjection,
            2 => AuthStrategy::TokenExchange,
            3 => AuthStrategy::UpstreamInject,
            _ => lock(&self.custom)
                .clone()
                .unwrap_or(AuthStrategy::Unauthenticated),
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

/// What only a status change or a non-Good report touches, behind the lock.
#[derive(Debug)]
struct Slow {
    bad_run: u64,
    since: Instant,
    last_error: Option<String>,
    failures_while_bad: u64,
    next_reminder: Instant,
    reminder_interval: Duration,
    warned_invalid_request: bool,
}

/// One registered backend.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) name: Arc<str>,
    common: Arc<Common>,
    strategy: StrategyCell,
    status: AtomicU8,
    runs: AtomicU64,
    checks: AtomicU64,
    failures: AtomicU64,
    last_checked: AtomicU64,
    last_reason: AtomicU8,
    last_outcome: AtomicU8,
    removed: AtomicBool,
    slow: Mutex<Slow>,
}

/// A panicking sink or subscriber elsewhere must not make the registry unusable: the
/// state behind these locks is valid after any panic (every write is a plain store).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

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
            name,
            strategy: StrategyCell::new(strategy),
            status: AtomicU8::new(machine::status_code(HealthStatus::Unknown)),
            runs: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_checked: AtomicU64::new(0),
            last_reason: AtomicU8::new(0),
            last_outcome: AtomicU8::new(0),
            removed: AtomicBool::new(false),
            slow: Mutex::new(Slow {
                bad_run: 0,
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

    pub(crate) fn status(&self) -> HealthStatus {
        machine::status_from_code(self.status.load(Ordering::Acquire))
    }

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

    pub(crate) fn remove(&self) {
        // Under the lock, so that no report in the slow path can publish a transition
        // after the removal.
        let _slow = lock(&self.slow);
        self.removed.store(true, Ordering::Release);
    }

    pub(crate) fn health(&self) -> BackendHealth {
        let slow = lock(&self.slow);
        let runs = Runs::unpack(self.runs.load(Ordering::Acquire));
        BackendHealth {
            name: self.name.to_string(),
            strategy: self.strategy.get(),
            status: self.status(),
            reason: machine::reason_from_code(self.last_reason.load(Ordering::Relaxed)),
            consecutive_failures: u64::from(runs.not_good),
            consecutive_successes: u64::from(runs.good),
            since: self.common.wall(slow.since),
            last_checked: self
                .common
                .wall_of_tick(self.last_checked.load(Ordering::Relaxed)),
            checks: self.checks.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_outcome: machine::outcome_from_code(self.last_outcome.load(Ordering::Relaxed)),
            last_error: slow.last_error.clone(),
        }
    }

    fn report(&self, report: &HealthReport<'_>) {
        let Some(verdict) = report.verdict else {
            self.not_counted(report.outcome);
            return;
        };
        if self.removed.load(Ordering::Acquire) {
            return;
        }
        if verdict.is_good() && self.good_while_healthy(report, verdict) {
            return;
        }
        self.judge(report, verdict);
    }

    /// The hot path: a Good verdict on a Healthy backend with no failure run to reset.
    /// Atomics only: no lock, no allocation.
    fn good_while_healthy(&self, report: &HealthReport<'_>, verdict: Verdict) -> bool {
        if self.status() != HealthStatus::Healthy {
            return false;
        }
        // Fails when a non-Good verdict got in first; the slow path then sorts it out.
        // A status change away from Healthy always starts with such a verdict, so a
        // successful swap means the status is still Healthy.
        let swapped = self
            .runs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let runs = Runs::unpack(word);
                (runs.not_good == 0).then(|| runs.after(true).pack())
            });
        if swapped.is_err() {
            return false;
        }
        self.record(report, verdict);
        true
    }

    fn record(&self, report: &HealthReport<'_>, verdict: Verdict) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if verdict.is_bad() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.last_checked
            .store(self.common.tick(report.at), Ordering::Relaxed);
        store_if_changed(&self.last_reason, machine::reason_code(verdict.reason));
        store_if_changed(&self.last_outcome, machine::outcome_code(report.outcome));
    }

    /// Every report but the hot path's: may change the status, under the lock.
    fn judge(&self, report: &HealthReport<'_>, verdict: Verdict) {
        let mut slow = lock(&self.slow);
        if self.removed.load(Ordering::Acquire) {
            return;
        }
        self.record(report, verdict);
        let good = verdict.is_good();
        let before = self
            .runs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(Runs::unpack(word).after(good).pack())
            })
            .unwrap_or_else(|word| word);
        let runs = Runs::unpack(before).after(good);
        slow.bad_run = if verdict.is_bad() {
            slow.bad_run + 1
        } else {
            0
        };
        if !good {
            slow.last_error = Some(describe(report.outcome));
        }

        let from = self.status();
        let to = machine::next_status(from, verdict, runs, slow.bad_run, &self.common.policy);
        if to != from {
            self.status
                .store(machine::status_code(to), Ordering::Release);
            let consecutive = match to {
                HealthStatus::Healthy => u64::from(runs.good),
                HealthStatus::Unhealthy | HealthStatus::Unauthenticated => slow.bad_run,
                _ => u64::from(runs.not_good),
            };
            slow.since = report.at;
            slow.failures_while_bad = u64::from(to.is_bad());
            slow.reminder_interval = self.common.policy.reminder_initial;
            slow.next_reminder = report.at + slow.reminder_interval;
            self.transition(from, to, verdict, consecutive, report.at);
        } else if to.is_bad() && verdict.is_bad() {
            slow.failures_while_bad += 1;
            if report.at >= slow.next_reminder {
                tracing::warn!(
                    target: "tower_health_classify",
                    backend = %self.name.escape_debug(),
                    status = to.as_str(),
                    reason = verdict.reason.as_str(),
                    failures = slow.failures_while_bad,
                    down_for_secs = report.at.saturating_duration_since(slow.since).as_secs(),
                    "backend still {}", to.as_str()
                );
                slow.reminder_interval = (slow.reminder_interval * 2).min(
                    self.common
                        .policy
                        .reminder_max
                        .max(self.common.policy.reminder_initial),
                );
                slow.next_reminder = report.at + slow.reminder_interval;
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
            if !slow.warned_invalid_request && !self.removed.load(Ordering::Acquire) {
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
        self.backend.removed.load(Ordering::Acquire)
    }
}

impl HealthSink for BackendHandle {
    fn strategy(&self) -> AuthStrategy {
        self.backend.strategy()
    }

    fn slow_threshold(&self) -> Duration {
        self.backend.common.policy.slow_threshold
    }

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
