//! `Snapshot`: every backend's health at one moment, for endpoints and dashboards.

use std::fmt;
use std::time::SystemTime;

use super::transition::Evidence;
use crate::verdict::{AuthStrategy, HealthStatus, Reason};

/// Every backend's health at one moment. With feature `serde`, serializes to snake_case
/// JSON (times as RFC 3339 UTC strings).
///
/// # Example
///
/// ```
/// use tower_health_classify::{AuthStrategy, HealthRegistry, Phase, Policy};
///
/// let registry = HealthRegistry::new(Policy::default());
/// registry.register("github", AuthStrategy::UpstreamInject);
/// let snapshot = registry.snapshot();
/// assert_eq!(snapshot.phase, Phase::Pending);
/// assert_eq!(snapshot.backends[0].name, "github");
/// assert_eq!(snapshot.summary.unknown, 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Snapshot {
    /// Every backend, sorted by name.
    pub backends: Vec<BackendHealth>,
    /// How many backends are in each status.
    pub summary: Summary,
    /// The registry as a whole.
    pub phase: Phase,
}

/// One backend's health.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BackendHealth {
    /// The backend's name.
    pub name: String,
    /// Its outgoing auth strategy now.
    pub strategy: AuthStrategy,
    /// Its status.
    pub status: HealthStatus,
    /// The reason of the latest verdict; `None` before the first.
    pub reason: Option<Reason>,
    /// The evidence behind the current status: probes or traffic; `None` while it is
    /// the status of registration.
    pub evidence: Option<Evidence>,
    /// Non-Good verdicts in a row, of probes and traffic alike.
    pub consecutive_failures: u64,
    /// Good verdicts in a row, of probes and traffic alike.
    pub consecutive_successes: u64,
    /// Traffic requests in the traffic window now (estimated: see the crate docs).
    pub window_requests: u64,
    /// Of them, those with a Bad verdict.
    pub window_failures: u64,
    /// When the status last changed (or the backend was registered).
    #[cfg_attr(feature = "serde", serde(serialize_with = "rfc3339::serialize"))]
    pub since: SystemTime,
    /// When the latest counted report came, to the millisecond; `None` before the first.
    #[cfg_attr(feature = "serde", serde(serialize_with = "rfc3339::serialize_option"))]
    pub last_checked: Option<SystemTime>,
    /// Counted reports (Cancelled and Local ones are not counted).
    pub checks: u64,
    /// Counted reports with a Bad verdict.
    pub failures: u64,
    /// The kind of the latest counted outcome (`success`, `unauthorized`, `transport`, ...).
    pub last_outcome: Option<&'static str>,
    /// The latest non-Good outcome, described, with its verdict's reason where the
    /// outcome does not say it (`server_error 503`, `success 200 (jsonrpc_error)`,
    /// `unauthorized 401 Bearer invalid_token [credentials sent] (credentials_rejected)`,
    /// `tls certificate_expired`). Built from the outcome's kind, status and known codes
    /// only: it holds no header value, no token and no text a backend sent (an
    /// `error_description` is not shown).
    pub last_error: Option<String>,
}

/// How many backends are in each status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Summary {
    /// No verdict yet.
    pub unknown: usize,
    /// Healthy.
    pub healthy: usize,
    /// Degraded.
    pub degraded: usize,
    /// Unhealthy.
    pub unhealthy: usize,
    /// Unauthenticated.
    pub unauthenticated: usize,
}

impl Summary {
    pub(crate) fn add(&mut self, status: HealthStatus) {
        match status {
            HealthStatus::Unknown => self.unknown += 1,
            HealthStatus::Healthy => self.healthy += 1,
            HealthStatus::Degraded => self.degraded += 1,
            HealthStatus::Unhealthy => self.unhealthy += 1,
            HealthStatus::Unauthenticated => self.unauthenticated += 1,
        }
    }

    /// All backends.
    pub fn total(&self) -> usize {
        self.unknown + self.healthy + self.degraded + self.unhealthy + self.unauthenticated
    }

    /// The registry as a whole, from these counts.
    pub fn phase(&self) -> Phase {
        let total = self.total();
        if total == 0 {
            Phase::Empty
        } else if self.unknown == total {
            Phase::Pending
        } else if self.healthy == total {
            Phase::Ready
        } else if self.healthy + self.degraded == 0 {
            Phase::Failed
        } else {
            Phase::Degraded
        }
    }
}

/// The registry as a whole, from how many backends are in each status: what a gateway's
/// health endpoint answers a load balancer with.
///
/// Every backend Degraded is [`Degraded`](Phase::Degraded), not
/// [`Failed`](Phase::Failed): a Degraded backend is slow, throttled or failing now and
/// then, but it answers, and a load balancer that takes the gateway out for that turns a
/// slowdown into an outage (for every replica at once: they all see the same backends).
/// `Failed` means no backend can serve.
///
/// # Example
///
/// ```
/// use tower_health_classify::{Phase, Summary};
///
/// let mut summary = Summary::default();
/// assert_eq!(summary.phase(), Phase::Empty);
/// summary.degraded = 2;
/// assert_eq!(summary.phase(), Phase::Degraded);
/// assert!(summary.phase().is_serving());
/// summary.degraded = 0;
/// summary.unhealthy = 2;
/// assert_eq!(summary.phase(), Phase::Failed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Phase {
    /// No backend is registered.
    Empty,
    /// Backends are registered, none has a verdict yet.
    Pending,
    /// Every backend is Healthy.
    Ready,
    /// Some backend is not Healthy, and some backend is Healthy or Degraded: every
    /// backend Degraded is this phase.
    Degraded,
    /// No backend is Healthy or Degraded (each is Unhealthy, Unauthenticated or still
    /// Unknown), and some has a verdict: nothing can serve.
    Failed,
}

impl Phase {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Empty => "empty",
            Phase::Pending => "pending",
            Phase::Ready => "ready",
            Phase::Degraded => "degraded",
            Phase::Failed => "failed",
        }
    }

    /// Whether a gateway in this phase can serve: `Ready` or `Degraded` (some backend
    /// answers, if slowly).
    pub fn is_serving(self) -> bool {
        matches!(self, Phase::Ready | Phase::Degraded)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3339 UTC timestamps (`2026-11-28T14:51:12.345Z`) without a date library.
#[cfg(feature = "serde")]
mod rfc3339 {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format(*t))
    }

    pub(super) fn serialize_option<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn format(t: SystemTime) -> String {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days as i64);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            since.subsec_millis()
        )
    }

    /// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
    fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::time::Duration;

        #[test]
        fn formats_known_instants() {
            let at = |secs: u64, millis: u64| {
                format(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
            };
            assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
            assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
            assert_eq!(at(1_795_877_472, 345), "2026-11-28T14:51:12.345Z");
            assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(counts: [usize; 5]) -> Summary {
        Summary {
            unknown: counts[0],
            healthy: counts[1],
            degraded: counts[2],
            unhealthy: counts[3],
            unauthenticated: counts[4],
        }
    }

    #[test]
    fn phase_from_counts() {
        // Counts of [unknown, healthy, degraded, unhealthy, unauthenticated].
        let cases: &[(&str, [usize; 5], Phase)] = &[
            ("no backend is empty", [0, 0, 0, 0, 0], Phase::Empty),
            ("no verdict yet is pending", [3, 0, 0, 0, 0], Phase::Pending),
            ("all healthy is ready", [0, 2, 0, 0, 0], Phase::Ready),
            (
                "one still unknown is degraded",
                [1, 2, 0, 0, 0],
                Phase::Degraded,
            ),
            ("one degraded is degraded", [0, 2, 1, 0, 0], Phase::Degraded),
            (
                "one healthy among bad is degraded",
                [0, 1, 0, 0, 1],
                Phase::Degraded,
            ),
            (
                "all degraded is degraded, not failed",
                [0, 0, 3, 0, 0],
                Phase::Degraded,
            ),
            (
                "degraded among bad is degraded",
                [0, 0, 1, 1, 0],
                Phase::Degraded,
            ),
            ("all bad is failed", [0, 0, 0, 1, 1], Phase::Failed),
            ("bad and unknown is failed", [2, 0, 0, 1, 0], Phase::Failed),
        ];
        for (name, counts, want) in cases {
            assert_eq!(summary(*counts).phase(), *want, "{name}");
        }
        let serving = [Phase::Ready, Phase::Degraded];
        for phase in [
            Phase::Empty,
            Phase::Pending,
            Phase::Ready,
            Phase::Degraded,
            Phase::Failed,
        ] {
            assert_eq!(phase.is_serving(), serving.contains(&phase), "{phase}");
        }
    }
}
