//! The judgement of one backend, as pure functions: the probes' state machine, the
//! traffic window's opinion, how the two combine; and the compact encodings the
//! registry stores in atomics.

use crate::classify::Outcome;
use crate::error::{AuthError, TransportKind};
use crate::registry::policy::{Limits, RATE_ONE};
use crate::registry::transition::Evidence;
use crate::registry::Policy;
use crate::verdict::{HealthStatus, Reason, Verdict};

/// The verdicts in a row that led to this moment: Good ones, or non-Good ones. At most
/// one of the two is non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Runs {
    pub(crate) good: u64,
    pub(crate) not_good: u64,
}

impl Runs {
    /// The runs after one more verdict.
    #[cfg(test)]
    pub(crate) fn after(self, good: bool) -> Self {
        if good {
            Runs {
                good: self.good.saturating_add(1),
                not_good: 0,
            }
        } else {
            Runs {
                good: 0,
                not_good: self.not_good.saturating_add(1),
            }
        }
    }
}

/// What probes say after one more probe verdict (the table of DESIGN §6.2). `runs` and
/// `bad_run` already count this verdict; `from` is what probes said before.
pub(crate) fn next_status(
    from: HealthStatus,
    verdict: Verdict,
    runs: Runs,
    bad_run: u64,
    policy: &Policy,
) -> HealthStatus {
    let threshold = |n: u32| u64::from(n.clamp(1, super::policy::MAX_PROBE_THRESHOLD));
    if verdict.is_good() {
        if from.is_bad() && runs.good < threshold(policy.healthy_threshold) {
            return from;
        }
        return HealthStatus::Healthy;
    }
    if verdict.is_bad() && bad_run >= threshold(policy.unhealthy_threshold) {
        return verdict.status;
    }
    if from.is_bad() {
        // Soft verdicts, and Bad ones below the threshold, never recover a Bad backend.
        return from;
    }
    if runs.not_good >= threshold(policy.degraded_threshold) {
        return HealthStatus::Degraded;
    }
    from
}

/// The traffic verdicts of the window, as estimated at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Window {
    pub(crate) good: u64,
    pub(crate) bad: u64,
    pub(crate) soft: u64,
}

impl Window {
    pub(crate) fn requests(self) -> u64 {
        self.good.saturating_add(self.bad).saturating_add(self.soft)
    }
}

/// What traffic says: `None` when it has nothing to say.
///
/// Every request failing (`min_requests` Bad verdicts in a row) is Unhealthy at once.
/// Otherwise a window that holds no failure vouches for the backend whatever its volume
/// (a first success is a sign of life); a window with failures judges only once it holds
/// `min_requests` requests, by its share of Bad verdicts, then of non-Good ones.
pub(crate) fn traffic_opinion(
    window: Window,
    bad_run: u64,
    limits: &Limits,
) -> Option<HealthStatus> {
    if limits.window == 0 {
        return None;
    }
    if bad_run >= limits.min_requests {
        return Some(HealthStatus::Unhealthy);
    }
    let requests = window.requests();
    if requests == 0 {
        return None;
    }
    let not_good = window.bad.saturating_add(window.soft);
    if not_good == 0 {
        return Some(HealthStatus::Healthy);
    }
    if requests < limits.min_requests {
        return None;
    }
    // `part / requests >= rate / RATE_ONE`, without division.
    let reaches = |part: u64, rate: u64| {
        u128::from(part) * u128::from(RATE_ONE) >= u128::from(rate) * u128::from(requests)
    };
    Some(if reaches(window.bad, limits.unhealthy_rate) {
        HealthStatus::Unhealthy
    } else if reaches(not_good, limits.degraded_rate) {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    })
}

/// One status from both kinds of evidence: the worse of the two opinions (Unknown from
/// probes is no opinion), with the evidence that decided it (`origin` when both agree).
/// `None` when neither has an opinion.
pub(crate) fn combine(
    probes: HealthStatus,
    traffic: Option<HealthStatus>,
    origin: Evidence,
) -> Option<(HealthStatus, Evidence)> {
    let probes = (probes != HealthStatus::Unknown).then_some(probes);
    match (probes, traffic) {
        (None, None) => None,
        (Some(p), None) => Some((p, Evidence::Probes)),
        (None, Some(t)) => Some((t, Evidence::Traffic)),
        (Some(p), Some(t)) if p == t => Some((p, origin)),
        // Status codes rank from Unknown up to Unauthenticated: the higher, the worse.
        (Some(p), Some(t)) if status_code(p) > status_code(t) => Some((p, Evidence::Probes)),
        (Some(_), Some(t)) => Some((t, Evidence::Traffic)),
    }
}

pub(crate) fn status_code(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Unknown => 0,
        HealthStatus::Healthy => 1,
        HealthStatus::Degraded => 2,
        HealthStatus::Unhealthy => 3,
        HealthStatus::Unauthenticated => 4,
    }
}

/// The status code of a removed backend: no report may move it again.
pub(crate) const REMOVED: u8 = 7;

/// A removed backend reads as `Unknown`: nothing is known of it any more.
pub(crate) fn status_from_code(code: u8) -> HealthStatus {
    match code {
        1 => HealthStatus::Healthy,
        2 => HealthStatus::Degraded,
        3 => HealthStatus::Unhealthy,
        4 => HealthStatus::Unauthenticated,
        _ => HealthStatus::Unknown,
    }
}

/// Every transport kind, in the order of the reason codes.
pub(crate) const TRANSPORT_KINDS: [TransportKind; 10] = [
    TransportKind::ConnectionRefused,
    TransportKind::Dns,
    TransportKind::ConnectTimeout,
    TransportKind::Timeout,
    TransportKind::Tls,
    TransportKind::Closed,
    TransportKind::Reset,
    TransportKind::Unreachable,
    TransportKind::Protocol,
    TransportKind::Other,
];

const REASONS: [Reason; 16] = [
    Reason::Ok,
    Reason::Slow,
    Reason::NoAuthConfigured,
    Reason::ExpectedChallenge,
    Reason::CredentialsRejected,
    Reason::InsufficientScope,
    Reason::UserCredentialsRejected,
    Reason::ProxyAuthRequired,
    Reason::Throttled,
    Reason::UnexpectedStatus,
    Reason::ServerError,
    Reason::RequestDenied,
    Reason::JsonRpcError,
    Reason::NotMcp,
    Reason::InvalidMetadata,
    Reason::ResourceMismatch,
];

/// 0 means "no reason yet"; then the plain reasons in the order of `REASONS`; then one
/// code per transport kind in the order of `TRANSPORT_KINDS`. A match, not a search: this
/// runs on the hot path.
#[inline]
pub(crate) fn reason_code(reason: Reason) -> u8 {
    match reason {
        Reason::Ok => 1,
        Reason::Slow => 2,
        Reason::NoAuthConfigured => 3,
        Reason::ExpectedChallenge => 4,
        Reason::CredentialsRejected => 5,
        Reason::InsufficientScope => 6,
        Reason::UserCredentialsRejected => 7,
        Reason::ProxyAuthRequired => 8,
        Reason::Throttled => 9,
        Reason::UnexpectedStatus => 10,
        Reason::ServerError => 11,
        Reason::RequestDenied => 12,
        Reason::JsonRpcError => 13,
        Reason::NotMcp => 14,
        Reason::InvalidMetadata => 15,
        Reason::ResourceMismatch => 16,
        Reason::Transport(kind) => {
            17 + match kind {
                TransportKind::ConnectionRefused => 0,
                TransportKind::Dns => 1,
                TransportKind::ConnectTimeout => 2,
                TransportKind::Timeout => 3,
                TransportKind::Tls => 4,
                TransportKind::Closed => 5,
                TransportKind::Reset => 6,
                TransportKind::Unreachable => 7,
                TransportKind::Protocol => 8,
                _ => 9,
            }
        }
    }
}

pub(crate) fn reason_from_code(code: u8) -> Option<Reason> {
    let index = usize::from(code.checked_sub(1)?);
    REASONS.get(index).copied().or_else(|| {
        TRANSPORT_KINDS
            .get(index - REASONS.len())
            .map(|kind| Reason::Transport(*kind))
    })
}

const OUTCOMES: [&str; 10] = [
    "success",
    "client_error",
    "unauthorized",
    "forbidden",
    "proxy_authentication_required",
    "throttled",
    "server_error",
    "transport",
    "cancelled",
    "local",
];

/// 0 means "no outcome yet"; then the names of `OUTCOMES`, in order.
#[inline]
pub(crate) fn outcome_code(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Success(_) => 1,
        Outcome::ClientError(_) => 2,
        Outcome::Auth(AuthError::Unauthorized { .. }) => 3,
        Outcome::Auth(AuthError::Forbidden { .. }) => 4,
        Outcome::Auth(AuthError::ProxyAuthenticationRequired { .. }) => 5,
        Outcome::Throttled { .. } => 6,
        Outcome::ServerError(_) => 7,
        Outcome::Transport(_) => 8,
        Outcome::Cancelled => 9,
        Outcome::Local(_) => 10,
    }
}

pub(crate) fn outcome_from_code(code: u8) -> Option<&'static str> {
    OUTCOMES.get(usize::from(code.checked_sub(1)?)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Degraded, Healthy, Unauthenticated, Unhealthy, Unknown};

    const GOOD: Verdict = Verdict::new(Healthy, Reason::Ok);
    const SOFT: Verdict = Verdict::new(Degraded, Reason::Throttled);
    const DOWN: Verdict = Verdict::new(Unhealthy, Reason::ServerError);
    const LOCKED: Verdict = Verdict::new(Unauthenticated, Reason::CredentialsRejected);

    /// Feeds `verdicts` from `Unknown` and returns the status after each one.
    fn run(policy: &Policy, verdicts: &[Verdict]) -> Vec<HealthStatus> {
        let mut status = Unknown;
        let mut runs = Runs::default();
        let mut bad_run = 0;
        verdicts
            .iter()
            .map(|v| {
                runs = runs.after(v.is_good());
                bad_run = if v.is_bad() { bad_run + 1 } else { 0 };
                status = next_status(status, *v, runs, bad_run, policy);
                status
            })
            .collect()
    }

    fn policy(unhealthy: u32, healthy: u32, degraded: u32) -> Policy {
        Policy {
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
            degraded_threshold: degraded,
            ..Policy::default()
        }
    }

    #[test]
    fn state_machine_rows() {
        let defaults = Policy::default();
        let cases: &[(&str, Policy, &[Verdict], &[HealthStatus])] = &[
            (
                "one good verdict makes an unknown backend healthy",
                defaults.clone(),
                &[GOOD],
                &[Healthy],
            ),
            (
                "bad verdicts degrade, then flip at the unhealthy threshold",
                defaults.clone(),
                &[DOWN, DOWN, DOWN],
                &[Unknown, Degraded, Unhealthy],
            ),
            (
                "five failures then one success stays unhealthy; the second recovers",
                defaults.clone(),
                &[DOWN, DOWN, DOWN, DOWN, DOWN, GOOD, GOOD],
                &[
                    Unknown, Degraded, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy,
                ],
            ),
            (
                "unhealthy threshold 1 flips on the first failure",
                policy(1, 2, 2),
                &[GOOD, DOWN],
                &[Healthy, Unhealthy],
            ),
            (
                "while bad, the latest bad verdict decides between the two bad statuses",
                defaults.clone(),
                &[DOWN, DOWN, DOWN, LOCKED, DOWN],
                &[Unknown, Degraded, Unhealthy, Unauthenticated, Unhealthy],
            ),
            (
                "soft verdicts never recover a bad backend",
                defaults.clone(),
                &[DOWN, DOWN, DOWN, SOFT, SOFT, SOFT, GOOD, SOFT, GOOD, GOOD],
                &[
                    Unknown, Degraded, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy,
                    Unhealthy, Unhealthy, Healthy,
                ],
            ),
            (
                "a soft verdict breaks a bad run",
                defaults.clone(),
                &[GOOD, DOWN, DOWN, SOFT, DOWN, DOWN],
                &[Healthy, Healthy, Degraded, Degraded, Degraded, Degraded],
            ),
            (
                "soft verdicts degrade a healthy backend at the degraded threshold",
                defaults,
                &[GOOD, SOFT, SOFT, GOOD],
                &[Healthy, Healthy, Degraded, Healthy],
            ),
            (
                "one good verdict heals a degraded backend",
                policy(3, 5, 1),
                &[SOFT, GOOD],
                &[Degraded, Healthy],
            ),
            (
                "a good verdict in a bad backend below the threshold does not count twice",
                policy(2, 3, 2),
                &[DOWN, DOWN, GOOD, GOOD, DOWN, GOOD, GOOD, GOOD],
                &[
                    Unknown, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy,
                    Healthy,
                ],
            ),
            (
                "zero thresholds act as one",
                policy(0, 0, 0),
                &[SOFT, DOWN, GOOD],
                &[Degraded, Unhealthy, Healthy],
            ),
        ];
        for (name, policy, verdicts, want) in cases {
            assert_eq!(run(policy, verdicts), *want, "{name}");
        }
    }

    #[test]
    fn traffic_opinion_rows() {
        let limits = Limits::new(&Policy::default());
        let w = |good, bad, soft| Window { good, bad, soft };
        let cases: &[(&str, Window, u64, Option<HealthStatus>)] = &[
            ("nothing to judge", w(0, 0, 0), 0, None),
            (
                "one success is a sign of life",
                w(1, 0, 0),
                0,
                Some(Healthy),
            ),
            (
                "few requests with a failure say nothing",
                w(10, 5, 0),
                1,
                None,
            ),
            (
                "a tenth failing is healthy",
                w(900, 100, 0),
                1,
                Some(Healthy),
            ),
            (
                "a fifth slow or failing is degraded",
                w(80, 10, 10),
                0,
                Some(Degraded),
            ),
            (
                "half failing is unhealthy",
                w(50, 50, 0),
                2,
                Some(Unhealthy),
            ),
            (
                "just under half is degraded",
                w(51, 49, 0),
                0,
                Some(Degraded),
            ),
            (
                "throttled is soft, never unhealthy",
                w(0, 0, 100),
                0,
                Some(Degraded),
            ),
            (
                "every request failing is unhealthy whatever the window",
                w(100_000, 20, 0),
                20,
                Some(Unhealthy),
            ),
            (
                "nineteen in a row is not every request",
                w(100_000, 19, 0),
                19,
                Some(Healthy),
            ),
        ];
        for (name, window, bad_run, want) in cases {
            assert_eq!(traffic_opinion(*window, *bad_run, &limits), *want, "{name}");
        }
        let off = Limits::new(&Policy {
            traffic_window: std::time::Duration::ZERO,
            ..Policy::default()
        });
        assert_eq!(
            traffic_opinion(w(0, 100, 0), 100, &off),
            None,
            "a zero window is off"
        );
    }

    #[test]
    fn the_worse_opinion_decides() {
        use Evidence::{Probes, Traffic};
        type Row = (
            HealthStatus,
            Option<HealthStatus>,
            Evidence,
            Option<(HealthStatus, Evidence)>,
        );
        let cases: &[Row] = &[
            (Unknown, None, Traffic, None),
            (Unknown, Some(Healthy), Traffic, Some((Healthy, Traffic))),
            (Healthy, None, Traffic, Some((Healthy, Probes))),
            (Unhealthy, Some(Healthy), Traffic, Some((Unhealthy, Probes))),
            (Healthy, Some(Degraded), Probes, Some((Degraded, Traffic))),
            (
                Unauthenticated,
                Some(Unhealthy),
                Traffic,
                Some((Unauthenticated, Probes)),
            ),
            (Healthy, Some(Healthy), Probes, Some((Healthy, Probes))),
            (Healthy, Some(Healthy), Traffic, Some((Healthy, Traffic))),
        ];
        for (probes, traffic, origin, want) in cases {
            assert_eq!(
                combine(*probes, *traffic, *origin),
                *want,
                "{probes:?} {traffic:?} {origin:?}"
            );
        }
    }

    #[test]
    fn runs_saturate_and_reset_each_other() {
        let runs = Runs {
            good: u64::MAX,
            not_good: 0,
        };
        assert_eq!(runs.after(true).good, u64::MAX);
        assert_eq!(
            runs.after(false),
            Runs {
                good: 0,
                not_good: 1
            }
        );
    }

    #[test]
    fn codes_round_trip() {
        for status in [Unknown, Healthy, Degraded, Unhealthy, Unauthenticated] {
            assert_eq!(status_from_code(status_code(status)), status);
        }
        let reasons = REASONS
            .iter()
            .copied()
            .chain(TRANSPORT_KINDS.iter().map(|k| Reason::Transport(*k)));
        for reason in reasons {
            assert_eq!(
                reason_from_code(reason_code(reason)),
                Some(reason),
                "{reason}"
            );
        }
        assert_eq!(reason_from_code(0), None);
        assert_eq!(
            outcome_from_code(outcome_code(&Outcome::Cancelled)),
            Some("cancelled")
        );
        assert_eq!(outcome_from_code(0), None);
    }
}
