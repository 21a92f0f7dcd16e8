//! Metrics of the [`HealthRegistry`](crate::HealthRegistry), through the
//! [`metrics`] facade (feature `metrics`).
//!
//! Every registered backend records these; install an exporter (a Prometheus one, say) as
//! the `metrics` recorder to publish them.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | [`backend_health_status`](STATUS) | gauge | `backend`, `status` | `1` for the backend's current status, `0` for the four others |
//! | [`backend_health_transitions_total`](TRANSITIONS) | counter | `backend`, `from`, `to` | status changes |
//! | [`backend_health_reports_total`](REPORTS) | counter | `backend`, `outcome`, `reason` | reports with a verdict (`Cancelled` and `Local` outcomes are not counted) |
//! | [`backend_health_latency_seconds`](LATENCY) | histogram | `backend` | latency of every report with a verdict, failures included |
//!
//! # Label values
//!
//! Every label value comes from a fixed list, so the number of series is bounded:
//!
//! - `backend`: the name given to [`register`](crate::HealthRegistry::register), chosen by
//!   the operator;
//! - `status`, `from`, `to`: [`HealthStatus::as_str`] (`unknown`, `healthy`, `degraded`,
//!   `unhealthy`, `unauthenticated`);
//! - `outcome`: [`Outcome::as_str`] of a counted outcome (`success`, `client_error`,
//!   `unauthorized`, `forbidden`, `proxy_authentication_required`, `throttled`,
//!   `server_error`, `transport`);
//! - `reason`: [`Reason::as_str`] (`ok`, `expected_challenge`, `connection_refused`, ...).
//!
//! No label ever holds a header value, a URI, an error message, a challenge parameter
//! or a strategy name: nothing a request or a backend controls, nothing secret.
//!
//! # Why one status gauge per status
//!
//! The status is published as a state set (one series per status, `1` for the current
//! one, as `kube_pod_status_phase` does), not as a single gauge holding a number: then
//! `sum by (status) (backend_health_status)` counts backends per status,
//! `backend_health_status{status="unhealthy"} == 1` is an alert that needs no table of
//! codes, and no query averages status codes into nonsense.
//!
//! # Series exist from registration
//!
//! Every series a backend can produce (5 status gauges, 16 possible transitions, the 28
//! outcome and reason pairs the verdict table can yield and the 7 more that probe checks
//! add, and the histogram) is resolved
//! once, when the backend is registered, and starts at zero. Two things follow:
//!
//! - **Install the recorder before registering backends.** A backend registered earlier
//!   holds handles of the no-op recorder and records nothing.
//! - An alert on `increase(backend_health_transitions_total{to="unhealthy"}[5m]) > 0`
//!   fires on a backend's very first failure too: a series created by its first
//!   increment would have no earlier sample to compare with.
//!
//! Recording is then a handle call: no label set is built, nothing is allocated and no
//! lock is taken, so the registry's lock-free path for a Good verdict on a Healthy backend
//! stays lock-free and allocation-free (the recorder's own handle aside).
//!
//! A [removed](crate::HealthRegistry::remove) backend's status gauges are all set to `0`,
//! so that it counts in no status; its counters keep their values. Registering the name
//! again sets `unknown` to `1`.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_health_classify::{metrics, AuthStrategy, HealthClassifyLayer, HealthRegistry};
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! ::metrics::with_local_recorder(&recorder, || {
//!     // The recorder first, then the backends.
//!     let registry = HealthRegistry::default();
//!     let github = registry.register("github", AuthStrategy::UpstreamInject);
//!
//!     let backend = service_fn(|_req: Request<()>| async {
//!         Ok::<_, Infallible>(Response::new(()))
//!     });
//!     let service = ServiceBuilder::new()
//!         .layer(HealthClassifyLayer::new(github))
//!         .service(backend);
//!     let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
//!     runtime.block_on(service.oneshot(Request::new(()))).unwrap();
//! });
//!
//! let healthy = snapshotter.snapshot().into_vec().into_iter().find(|(key, _, _, _)| {
//!     key.key().name() == metrics::STATUS
//!         && key.key().labels().any(|l| l.key() == "status" && l.value() == "healthy")
//! });
//! let (_, _, _, value) = healthy.unwrap();
//! assert_eq!(value, DebugValue::Gauge(1.0.into()));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

use crate::classify::Outcome;
use crate::error::AuthError;
use crate::verdict::{HealthStatus, Reason};

/// `backend_health_status`: a gauge per backend and status, `1` for the current status
/// and `0` for the others. Labels `backend`, `status`.
pub const STATUS: &str = "backend_health_status";

/// `backend_health_transitions_total`: a counter of status changes. Labels `backend`,
/// `from`, `to`.
pub const TRANSITIONS: &str = "backend_health_transitions_total";

/// `backend_health_reports_total`: a counter of reports with a verdict. Labels `backend`,
/// `outcome`, `reason`.
pub const REPORTS: &str = "backend_health_reports_total";

/// `backend_health_latency_seconds`: a histogram of the latency of reports with a
/// verdict, in seconds. Label `backend`.
pub const LATENCY: &str = "backend_health_latency_seconds";

/// Indexed by [`status_index`].
const STATUSES: [HealthStatus; 5] = [
    HealthStatus::Unknown,
    HealthStatus::Healthy,
    HealthStatus::Degraded,
    HealthStatus::Unhealthy,
    HealthStatus::Unauthenticated,
];

use crate::registry::machine::TRANSPORT_KINDS;

/// What [`verdict`](crate::verdict) can answer to a 401 (in this order)...
const UNAUTHORIZED_REASONS: [Reason; 5] = [
    Reason::NoAuthConfigured,
    Reason::ExpectedChallenge,
    Reason::CredentialsRejected,
    Reason::UserCredentialsRejected,
    Reason::RequestDenied,
];

/// ... and to a 403: `insufficient_scope` too.
const FORBIDDEN_REASONS: [Reason; 6] = [
    Reason::NoAuthConfigured,
    Reason::ExpectedChallenge,
    Reason::CredentialsRejected,
    Reason::InsufficientScope,
    Reason::UserCredentialsRejected,
    Reason::RequestDenied,
];

/// Every (outcome, reason) pair the verdict table and the built-in probe checks
/// ([`check`](crate::check)) can yield, indexed by [`report_slot`].
const REPORT_KINDS: [(&str, Reason); 35] = [
    ("success", Reason::Ok),
    ("success", Reason::Slow),
    ("client_error", Reason::Ok),
    ("client_error", Reason::UnexpectedStatus),
    ("unauthorized", UNAUTHORIZED_REASONS[0]),
    ("unauthorized", UNAUTHORIZED_REASONS[1]),
    ("unauthorized", UNAUTHORIZED_REASONS[2]),
    ("unauthorized", UNAUTHORIZED_REASONS[3]),
    ("unauthorized", UNAUTHORIZED_REASONS[4]),
    ("forbidden", FORBIDDEN_REASONS[0]),
    ("forbidden", FORBIDDEN_REASONS[1]),
    ("forbidden", FORBIDDEN_REASONS[2]),
    ("forbidden", FORBIDDEN_REASONS[3]),
    ("forbidden", FORBIDDEN_REASONS[4]),
    ("forbidden", FORBIDDEN_REASONS[5]),
    ("proxy_authentication_required", Reason::ProxyAuthRequired),
    ("throttled", Reason::Throttled),
    ("server_error", Reason::ServerError),
    ("transport", Reason::Transport(TRANSPORT_KINDS[0])),
    ("transport", Reason::Transport(TRANSPORT_KINDS[1])),
    ("transport", Reason::Transport(TRANSPORT_KINDS[2])),
    ("transport", Reason::Transport(TRANSPORT_KINDS[3])),
    ("transport", Reason::Transport(TRANSPORT_KINDS[4])),
    ("transport", Reason::Transport(TRANSPORT_KINDS[5])),
    ("transport", Reason::Transport(TRANSPORT_KINDS[6])),
    ("transport", Reason::Transport(TRANSPORT_KINDS[7])),
    ("transport", Reason::Transport(TRANSPORT_KINDS[8])),
    ("transport", Reason::Transport(TRANSPORT_KINDS[9])),
    // Probe checks: an MCP answer, an RFC 9728 document, a status a check refuses.
    ("success", Reason::JsonRpcError),
    ("success", Reason::NotMcp),
    ("success", Reason::InvalidMetadata),
    ("success", Reason::ResourceMismatch),
    ("success", Reason::UnexpectedStatus),
    ("unauthorized", Reason::UnexpectedStatus),
    ("forbidden", Reason::UnexpectedStatus),
];

/// A status's place in [`STATUSES`]: the registry's own status code.
fn status_index(status: HealthStatus) -> usize {
    usize::from(crate::registry::machine::status_code(status))
}

/// The slot of a transition in `BackendMetrics::transitions`: `Unknown` is never a target,
/// so four targets per origin.
fn transition_slot(from: HealthStatus, to: HealthStatus) -> Option<usize> {
    let to = status_index(to).checked_sub(1)?;
    Some(status_index(from) * 4 + to)
}

/// The slot of a report in [`REPORT_KINDS`], by a `match`: no string is compared.
fn report_slot(outcome: &Outcome, reason: Reason) -> Option<usize> {
    let position = |reasons: &[Reason]| reasons.iter().position(|r| *r == reason);
    Some(match (outcome, reason) {
        (Outcome::Success(_), Reason::Ok) => 0,
        (Outcome::Success(_), Reason::Slow) => 1,
        (Outcome::ClientError(_), Reason::Ok) => 2,
        (Outcome::ClientError(_), Reason::UnexpectedStatus) => 3,
        // Probe checks refuse a challenge where a public document belongs.
        (Outcome::Auth(AuthError::Unauthorized { .. }), Reason::UnexpectedStatus) => 33,
        (Outcome::Auth(AuthError::Forbidden { .. }), Reason::UnexpectedStatus) => 34,
        (Outcome::Auth(AuthError::Unauthorized { .. }), _) => 4 + position(&UNAUTHORIZED_REASONS)?,
        (Outcome::Auth(AuthError::Forbidden { .. }), _) => 9 + position(&FORBIDDEN_REASONS)?,
        (
            Outcome::Auth(AuthError::ProxyAuthenticationRequired { .. }),
            Reason::ProxyAuthRequired,
        ) => 15,
        (Outcome::Throttled { .. }, Reason::Throttled) => 16,
        (Outcome::ServerError(_), Reason::ServerError) => 17,
        (Outcome::Transport(_), Reason::Transport(kind)) => {
            18 + TRANSPORT_KINDS.iter().position(|k| *k == kind)?
        }
        (Outcome::Success(_), Reason::JsonRpcError) => 28,
        (Outcome::Success(_), Reason::NotMcp) => 29,
        (Outcome::Success(_), Reason::InvalidMetadata) => 30,
        (Outcome::Success(_), Reason::ResourceMismatch) => 31,
        (Outcome::Success(_), Reason::UnexpectedStatus) => 32,
        _ => return None,
    })
}

/// One backend's metric handles, resolved once at registration.
pub(crate) struct BackendMetrics {
    name: Arc<str>,
    /// Indexed by [`status_index`].
    status: [Gauge; 5],
    /// Indexed by [`transition_slot`]; a no-op handle where `from == to`.
    transitions: [Counter; 20],
    /// Indexed by [`report_slot`].
    reports: [Counter; 35],
    latency: Histogram,
}

impl BackendMetrics {
    /// Describes the metrics to the current recorder, resolves every handle of backend
    /// `name` with it, and publishes the status `Unknown`.
    pub(crate) fn new(name: &Arc<str>) -> Self {
        describe();
        // An `Arc<str>` label value is shared, not copied.
        let backend = || name.clone();
        let status = STATUSES
            .map(|status| gauge!(STATUS, "backend" => backend(), "status" => status.as_str()));
        let transitions = std::array::from_fn(|slot| {
            let (from, to) = (STATUSES[slot / 4], STATUSES[slot % 4 + 1]);
            if from == to {
                return Counter::noop();
            }
            counter!(TRANSITIONS, "backend" => backend(), "from" => from.as_str(), "to" => to.as_str())
        });
        let reports = REPORT_KINDS.map(|(outcome, reason)| {
            counter!(REPORTS, "backend" => backend(), "outcome" => outcome, "reason" => reason.as_str())
        });
        let metrics = BackendMetrics {
            name: name.clone(),
            status,
            transitions,
            reports,
            latency: histogram!(LATENCY, "backend" => backend()),
        };
        metrics.set_status(HealthStatus::Unknown);
        metrics
    }

    /// One report with a verdict. Handle calls only: this runs on the lock-free path.
    pub(crate) fn report(&self, outcome: &Outcome, reason: Reason, latency: Duration) {
        match report_slot(outcome, reason) {
            Some(slot) => self.reports[slot].increment(1),
            // Not in the verdict table today; resolved on the spot should it ever be.
            None => counter!(
                REPORTS,
                "backend" => self.name.clone(),
                "outcome" => outcome.as_str(),
                "reason" => reason.as_str()
            )
            .increment(1),
        }
        self.latency.record(latency.as_secs_f64());
    }

    /// A status change; called under the backend's lock, so changes never interleave.
    pub(crate) fn transition(&self, from: HealthStatus, to: HealthStatus) {
        if let Some(slot) = transition_slot(from, to) {
            self.transitions[slot].increment(1);
        }
        self.set_status(to);
    }

    /// The backend left the registry: it counts in no status any more. Only the current
    /// status's gauge is `1`, so only that one is cleared: a backend registered again
    /// under the same name in the meantime keeps its own `unknown` (unless the removed
    /// one was still `unknown` too).
    pub(crate) fn removed(&self, current: HealthStatus) {
        self.status[status_index(current)].set(0.0);
    }

    fn set_status(&self, current: HealthStatus) {
        for (gauge, status) in self.status.iter().zip(STATUSES) {
            gauge.set(if status == current { 1.0 } else { 0.0 });
        }
    }
}

impl fmt::Debug for BackendMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendMetrics")
            .field("backend", &self.name)
            .finish_non_exhaustive()
    }
}

/// Units and help texts, for exporters that publish them (Prometheus `# HELP`). Repeated
/// at every registration, so that a recorder installed late still gets them.
fn describe() {
    describe_gauge!(
        STATUS,
        "1 for the backend's current health status, 0 for the others"
    );
    describe_counter!(TRANSITIONS, "Changes of a backend's health status");
    describe_counter!(
        REPORTS,
        "Exchanges with a backend that were judged, by outcome and verdict reason"
    );
    describe_histogram!(
        LATENCY,
        Unit::Seconds,
        "Latency of the judged exchanges with a backend"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify_response;
    use crate::error::LocalKind;
    use crate::verdict::{verdict, AuthStrategy, CredentialOwner, Credentials, Origin};
    use http::{header, HeaderMap, HeaderValue, StatusCode};
    use std::collections::BTreeSet;

    fn plain() -> HeaderMap {
        HeaderMap::new()
    }

    fn outcomes() -> Vec<Outcome> {
        let scope = HeaderValue::from_static(r#"Bearer error="insufficient_scope""#);
        let mut scoped = HeaderMap::new();
        scoped.insert(header::WWW_AUTHENTICATE, scope);
        let plain = HeaderMap::new();
        let mut outcomes: Vec<Outcome> = [200, 404, 401, 403, 407, 408, 429, 503]
            .into_iter()
            .map(|code| classify_response(StatusCode::from_u16(code).unwrap(), &plain))
            .collect();
        outcomes.push(classify_response(StatusCode::FORBIDDEN, &scoped));
        outcomes.push(classify_response(StatusCode::UNAUTHORIZED, &scoped));
        outcomes.extend(TRANSPORT_KINDS.map(Outcome::Transport));
        outcomes.push(Outcome::Cancelled);
        outcomes.push(Outcome::Local(LocalKind::Overloaded));
        outcomes
    }

    /// Every verdict the table can yield has a slot whose labels are its own, and every
    /// slot is reachable: no series is published that can never move.
    #[test]
    fn report_slots_cover_the_verdict_table_exactly() {
        let strategies = [
            AuthStrategy::Unauthenticated,
            AuthStrategy::TokenExchange,
            AuthStrategy::UpstreamInject,
            AuthStrategy::custom("mtls", CredentialOwner::Gateway),
        ];
        let latencies = [Duration::ZERO, Duration::from_secs(60)];
        let mut reached = BTreeSet::new();
        for outcome in outcomes() {
            for strategy in &strategies {
                for credentials in [Credentials::NotSent, Credentials::Sent] {
                    for origin in [Origin::Traffic, Origin::Probe] {
                        for latency in latencies {
                            let Some(v) = verdict(
                                &outcome,
                                strategy,
                                credentials,
                                origin,
                                latency,
                                Duration::from_secs(5),
                            ) else {
                                continue;
                            };
                            let slot = report_slot(&outcome, v.reason)
                                .unwrap_or_else(|| panic!("no slot for {outcome} {v}"));
                            assert_eq!(
                                REPORT_KINDS[slot],
                                (outcome.as_str(), v.reason),
                                "{outcome} {v}"
                            );
                            reached.insert(slot);
                        }
                    }
                }
            }
        }
        // What the built-in probe checks give instead of the table's verdict.
        let probe_judgements = [
            (200, Reason::JsonRpcError),
            (200, Reason::NotMcp),
            (200, Reason::InvalidMetadata),
            (200, Reason::ResourceMismatch),
            (202, Reason::UnexpectedStatus),
            (401, Reason::UnexpectedStatus),
            (403, Reason::UnexpectedStatus),
        ];
        for (code, reason) in probe_judgements {
            let outcome = classify_response(StatusCode::from_u16(code).unwrap(), &plain());
            let slot = report_slot(&outcome, reason)
                .unwrap_or_else(|| panic!("no slot for {outcome} {reason}"));
            assert_eq!(REPORT_KINDS[slot], (outcome.as_str(), reason));
            reached.insert(slot);
        }
        assert_eq!(reached.len(), REPORT_KINDS.len(), "unreachable slots");
    }

    #[test]
    fn transition_slots_are_distinct_and_skip_unknown_targets() {
        let mut seen = BTreeSet::new();
        for from in STATUSES {
            assert_eq!(transition_slot(from, HealthStatus::Unknown), None);
            for to in &STATUSES[1..] {
                let slot = transition_slot(from, *to).unwrap();
                assert!(slot < 20 && seen.insert(slot), "{from} -> {to}");
                assert_eq!((STATUSES[slot / 4], STATUSES[slot % 4 + 1]), (from, *to));
            }
        }
    }
}
