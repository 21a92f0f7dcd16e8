//! `Policy`: how the registry turns verdicts into a status, and how loudly it says so.

use std::time::Duration;

use crate::verdict::DEFAULT_SLOW_THRESHOLD;

/// The largest probe threshold that can be reached: the runs of probe verdicts are kept
/// in 20 bits each. A larger threshold acts as this one.
pub(crate) const MAX_PROBE_THRESHOLD: u32 = (1 << 20) - 1;

/// How the registry judges a backend: thresholds for probes, a window for traffic,
/// hysteresis, and the log budget.
///
/// Probes are built to succeed, so they are judged by counts in a row. Traffic is a
/// sample of what callers ask for, so it is judged by failure rates over a sliding
/// window, and only once the window holds enough requests. See the crate docs for how
/// the two combine into one status.
///
/// [`HealthRegistry::new`](crate::HealthRegistry::new) accepts any policy and never
/// panics on one: durations saturate (`Duration::MAX` means "never") and thresholds
/// below 1 act as 1. [`validate`](Self::validate) names the field of a value that
/// makes no sense; a gateway that reads its policy from a file should call it.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_health_classify::Policy;
///
/// let mut policy = Policy::default();
/// policy.unhealthy_threshold = 1;
/// policy.traffic_window = Duration::from_secs(60);
/// policy.validate().unwrap();
///
/// policy.traffic_degraded_rate = 0.9; // above the unhealthy rate: Degraded is unreachable
/// let error = policy.validate().unwrap_err();
/// assert_eq!(error.field(), "traffic_degraded_rate");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Policy {
    /// How many Bad probe verdicts in a row make a backend Unhealthy or Unauthenticated
    /// (default 3).
    pub unhealthy_threshold: u32,
    /// How many Good probe verdicts in a row bring a Bad backend back (default 2).
    pub healthy_threshold: u32,
    /// How many non-Good probe verdicts in a row make a backend Degraded (default 2).
    pub degraded_threshold: u32,
    /// The latency above which a success is judged slow (default 5 s).
    pub slow_threshold: Duration,
    /// How far back traffic is judged (default 30 s). `Duration::ZERO` turns traffic
    /// judgement off: only probes move the status.
    pub traffic_window: Duration,
    /// How many requests the window must hold before traffic may judge against the
    /// backend (default 20). Fewer requests can only vouch for it, when none failed. As
    /// many Bad traffic verdicts in a row make it Unhealthy at once, whatever the window
    /// holds (every request is failing).
    pub traffic_min_requests: u32,
    /// The share of Bad verdicts in the window that makes traffic call the backend
    /// Unhealthy (default 0.5).
    pub traffic_unhealthy_rate: f64,
    /// The share of non-Good verdicts (Bad, slow, throttled) in the window that makes
    /// traffic call the backend Degraded (default 0.2).
    pub traffic_degraded_rate: f64,
    /// How long a status holds before traffic may change it again (default 30 s). Not
    /// applied into Unhealthy when every recent request failed
    /// (`traffic_min_requests` Bad verdicts in a row), nor to changes made by probes,
    /// whose thresholds already wait, nor out of Unknown.
    pub hold_time: Duration,
    /// The interval of the log budget (default 10 min). `Duration::ZERO` logs every
    /// transition.
    pub log_interval: Duration,
    /// How many transitions of one backend are logged one line each per `log_interval`
    /// (default 3). Past it the backend is flapping: its changes are counted and said in
    /// one summary line per interval until an interval passes with at most this many.
    /// Subscribers and metrics see every transition regardless.
    pub log_budget: u32,
    /// The first reminder while a backend stays Bad comes this long after it went Bad
    /// (default 1 min); each next one comes twice as long after the previous.
    /// `Duration::ZERO` reminds on every Bad verdict; `Duration::MAX` never reminds.
    pub reminder_initial: Duration,
    /// The longest interval between two reminders (default 1 h).
    pub reminder_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            degraded_threshold: 2,
            slow_threshold: DEFAULT_SLOW_THRESHOLD,
            traffic_window: Duration::from_secs(30),
            traffic_min_requests: 20,
            traffic_unhealthy_rate: 0.5,
            traffic_degraded_rate: 0.2,
            hold_time: Duration::from_secs(30),
            log_interval: Duration::from_secs(600),
            log_budget: 3,
            reminder_initial: Duration::from_secs(60),
            reminder_max: Duration::from_secs(3600),
        }
    }
}

impl Policy {
    /// Checks that every field makes sense on its own and with the others.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] naming the first field that does not: a probe threshold of 0
    /// or above 1,048,575, a traffic rate that is not in `(0, 1]`, a degraded rate above
    /// the unhealthy rate, a `traffic_min_requests` of 0, or a `reminder_max` shorter
    /// than `reminder_initial`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let thresholds = [
            ("unhealthy_threshold", self.unhealthy_threshold),
            ("healthy_threshold", self.healthy_threshold),
            ("degraded_threshold", self.degraded_threshold),
        ];
        for (field, value) in thresholds {
            if value == 0 || value > MAX_PROBE_THRESHOLD {
                return Err(PolicyError::new(field, "must be between 1 and 1048575"));
            }
        }
        if self.traffic_min_requests == 0 {
            return Err(PolicyError::new(
                "traffic_min_requests",
                "must be at least 1",
            ));
        }
        let rates = [
            ("traffic_unhealthy_rate", self.traffic_unhealthy_rate),
            ("traffic_degraded_rate", self.traffic_degraded_rate),
        ];
        for (field, rate) in rates {
            // Written so that NaN fails too.
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(PolicyError::new(field, "must be above 0 and at most 1"));
            }
        }
        if self.traffic_degraded_rate > self.traffic_unhealthy_rate {
            return Err(PolicyError::new(
                "traffic_degraded_rate",
                "must not be above traffic_unhealthy_rate",
            ));
        }
        if self.reminder_max < self.reminder_initial {
            return Err(PolicyError::new(
                "reminder_max",
                "must not be shorter than reminder_initial",
            ));
        }
        Ok(())
    }
}

/// A [`Policy`] field whose value makes no sense, from [`Policy::validate`].
///
/// # Example
///
/// ```
/// use tower_health_classify::Policy;
///
/// let mut policy = Policy::default();
/// policy.traffic_unhealthy_rate = 1.5;
/// let error = policy.validate().unwrap_err();
/// assert_eq!(error.to_string(), "traffic_unhealthy_rate must be above 0 and at most 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct PolicyError {
    field: &'static str,
    problem: &'static str,
}

impl PolicyError {
    fn new(field: &'static str, problem: &'static str) -> Self {
        PolicyError { field, problem }
    }

    /// The field's name, as in [`Policy`] (`traffic_degraded_rate`).
    pub fn field(&self) -> &'static str {
        self.field
    }
}

/// The policy as the registry reads it on every report: durations as saturated
/// nanosecond ticks, thresholds clamped, rates as fixed-point fractions.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) window: u64,
    pub(crate) min_requests: u64,
    /// Parts per [`RATE_ONE`].
    pub(crate) unhealthy_rate: u64,
    pub(crate) degraded_rate: u64,
    pub(crate) hold: u64,
    pub(crate) log_interval: u64,
    pub(crate) log_budget: u32,
    pub(crate) reminder_initial: u64,
    pub(crate) reminder_max: u64,
}

/// The fixed-point one of the rates: a rate of 0.2 is 200,000 parts.
pub(crate) const RATE_ONE: u64 = 1_000_000;

/// Nanoseconds, saturated: `Duration::MAX` becomes "never" (`u64::MAX`).
pub(crate) fn ticks(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Limits {
    pub(crate) fn new(policy: &Policy) -> Self {
        // A NaN or out-of-range rate is clamped rather than trusted: `validate` is the
        // place to reject it.
        let rate = |rate: f64| {
            let rate = if rate.is_nan() { 1.0 } else { rate };
            (rate.clamp(0.0, 1.0) * RATE_ONE as f64).round() as u64
        };
        let reminder_initial = ticks(policy.reminder_initial);
        Limits {
            window: ticks(policy.traffic_window),
            min_requests: u64::from(policy.traffic_min_requests.max(1)),
            unhealthy_rate: rate(policy.traffic_unhealthy_rate).max(1),
            degraded_rate: rate(policy.traffic_degraded_rate).max(1),
            hold: ticks(policy.hold_time),
            log_interval: ticks(policy.log_interval),
            log_budget: policy.log_budget,
            reminder_initial,
            reminder_max: ticks(policy.reminder_max).max(reminder_initial),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_valid() {
        Policy::default().validate().unwrap();
    }

    #[test]
    fn validate_names_the_field() {
        type Change = fn(&mut Policy);
        let cases: &[(&str, Change, &str)] = &[
            (
                "a zero threshold",
                |p| p.healthy_threshold = 0,
                "healthy_threshold",
            ),
            (
                "a threshold the runs cannot reach",
                |p| p.unhealthy_threshold = MAX_PROBE_THRESHOLD + 1,
                "unhealthy_threshold",
            ),
            (
                "no minimum volume",
                |p| p.traffic_min_requests = 0,
                "traffic_min_requests",
            ),
            (
                "a rate of zero",
                |p| p.traffic_unhealthy_rate = 0.0,
                "traffic_unhealthy_rate",
            ),
            (
                "a NaN rate",
                |p| p.traffic_degraded_rate = f64::NAN,
                "traffic_degraded_rate",
            ),
            (
                "a rate above one",
                |p| p.traffic_unhealthy_rate = 1.01,
                "traffic_unhealthy_rate",
            ),
            (
                "degraded above unhealthy",
                |p| p.traffic_degraded_rate = 0.6,
                "traffic_degraded_rate",
            ),
            (
                "reminders that shrink",
                |p| p.reminder_max = Duration::from_secs(1),
                "reminder_max",
            ),
        ];
        for (name, change, field) in cases {
            let mut policy = Policy::default();
            change(&mut policy);
            let error = policy.validate().expect_err(name);
            assert_eq!(error.field(), *field, "{name}");
            assert!(error.to_string().starts_with(field), "{name}: {error}");
        }
    }

    #[test]
    fn extreme_durations_are_valid_and_saturate() {
        let policy = Policy {
            reminder_initial: Duration::MAX,
            reminder_max: Duration::MAX,
            traffic_window: Duration::ZERO,
            hold_time: Duration::MAX,
            ..Policy::default()
        };
        policy.validate().unwrap();
        let limits = Limits::new(&policy);
        assert_eq!(limits.reminder_initial, u64::MAX);
        assert_eq!(limits.hold, u64::MAX);
        assert_eq!(limits.window, 0);
    }

    #[test]
    fn limits_clamp_what_validate_rejects() {
        let limits = Limits::new(&Policy {
            traffic_min_requests: 0,
            traffic_unhealthy_rate: f64::NAN,
            traffic_degraded_rate: -3.0,
            reminder_initial: Duration::from_secs(10),
            reminder_max: Duration::from_secs(1),
            ..Policy::default()
        });
        assert_eq!(limits.min_requests, 1);
        assert_eq!(limits.unhealthy_rate, RATE_ONE);
        assert_eq!(
            limits.degraded_rate, 1,
            "never zero: zero failures never degrade"
        );
        assert_eq!(limits.reminder_max, limits.reminder_initial);
    }
}
