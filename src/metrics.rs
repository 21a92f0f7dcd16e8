//! Metrics of the [`HealthRegistry`](crate::HealthRegistry), through the
//! [`metrics`] facade (feature `metrics`).
//!
//! Every registered backend records these; install an exporter (a Prometheus one, say) as
//! the `metrics` recorder to publish them.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | [`backend_health_status`](STATUS) | gauge | `backend`, `status` | `1` for the backend's current status, `0` for the others it has been in |
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
//! # Series are created when first used
//!
//! A registered backend has one series, `backend_health_status{status="unknown"} 1`;
//! every other series appears with the first event that moves it: a status gauge when
//! the backend first enters that status, a transition counter with its first
//! transition, a report counter with the first report of its outcome and reason, the
//! histogram with the first report. A healthy backend that has only been probed has
//! five series, not the 57 its labels could make, and a gateway whose backends come and
//! go keeps only what they used. Three things follow:
//!
//! - **Alert on the status gauge, not on the first increment of a counter.** A series
//!   created by its first increment has no earlier sample, so
//!   `increase(backend_health_transitions_total{to="unhealthy"}[5m]) > 0` misses a
//!   backend's first failure. `backend_health_status{status=~"unhealthy|unauthenticated"}
//!   == 1` fires on it (`max_over_time(...[5m])` for a failure shorter than the scrape
//!   interval). To count a first transition as an increase too, add the series that are
//!   new: `increase(T[5m]) > 0 or (T unless T offset 5m)` for `T` the counter.
//! - **Series resolve with the recorder in effect where they are first used.** Install
//!   the recorder (once, globally) before traffic starts; a backend registered earlier
//!   misses only its `unknown` gauge. With a thread-local recorder
//!   ([`with_local_recorder`](::metrics::with_local_recorder)), the registration and the
//!   reports must run inside it, as in the example below.
//! - **Removed backends' series go when the exporter lets them.** The `metrics` facade
//!   cannot delete a series. A [removed](crate::HealthRegistry::remove) backend's status
//!   gauges are all `0` (it counts in no status) and its counters keep their values;
//!   with an exporter that drops series idle for longer than a timeout (the Prometheus
//!   exporter's `idle_timeout`), call [`keep_alive`] before each render and they
//!   disappear after the timeout while every registered backend's stay. Registering the
//!   name again sets `unknown` to `1`.
//!
//! Recording is a handle call once the series exists: no label set is built, nothing is
//! allocated and no lock is taken, so reports stay lock-free and allocation-free (the
//! recorder's own handle aside). Creating a series builds its labels and asks the
//! recorder once per backend and series.
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

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
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
/// so four targets per origin. `None` for no change.
fn transition_slot(from: HealthStatus, to: HealthStatus) -> Option<usize> {
    if from == to {
        return None;
    }
    let to = status_index(to).checked_sub(1)?;
    Some(status_index(from) * 4 + to)
}

/// The slot of a success judged `ok` in [`REPORT_KINDS`].
const OK_SLOT: usize = 0;

/// The slot of a report in [`REPORT_KINDS`], by a `match`: no string is compared.
fn report_slot(outcome: &Outcome, reason: Reason) -> Option<usize> {
    let position = |reasons: &[Reason]| reasons.iter().position(|r| *r == reason);
    Some(match (outcome, reason) {
        (Outcome::Success(_), Reason::Ok) => OK_SLOT,
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

/// One family of a backend's series (its status gauges, say), each created on first use.
///
/// An append-only list whose nodes never change or move once linked: a reader walks it
/// with acquire loads and no lock, and a series is created at most once even when many
/// threads use it for the first time together (they race for the same empty link, and
/// the losers find the winner's node there).
struct Series<H> {
    head: OnceLock<Box<Node<H>>>,
}

struct Node<H> {
    slot: usize,
    handle: H,
    next: OnceLock<Box<Node<H>>>,
}

impl<H> Series<H> {
    const fn new() -> Self {
        Series {
            head: OnceLock::new(),
        }
    }

    /// The handle of `slot`, made by `create` if this backend never used the slot.
    #[inline]
    fn get_or_create(&self, slot: usize, create: impl FnOnce() -> H) -> &H {
        let mut create = Some(create);
        let mut link = &self.head;
        loop {
            let node = link.get_or_init(|| {
                let create = create.take().expect("a node made here has this slot");
                Box::new(Node {
                    slot,
                    handle: create(),
                    next: OnceLock::new(),
                })
            });
            if node.slot == slot {
                return &node.handle;
            }
            link = &node.next;
        }
    }

    fn get(&self, slot: usize) -> Option<&H> {
        self.iter()
            .find_map(|(s, handle)| (s == slot).then_some(handle))
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &H)> {
        let mut link = &self.head;
        std::iter::from_fn(move || {
            let node = link.get()?;
            link = &node.next;
            Some((node.slot, &node.handle))
        })
    }
}

/// One backend's series. Only those the backend has used exist: a status it has been
/// in, a transition it has made, a kind of report it has had, the latency histogram once
/// it has a report.
pub(crate) struct BackendMetrics {
    /// The handles of a success judged `ok`, the report of nearly every request, behind
    /// one check and without going through `series`: its counter (also in
    /// `series.reports`, for `keep_alive`) and the histogram.
    ok: OnceLock<(Counter, Histogram)>,
    /// The histogram, for every report. `keep_alive` cannot touch a histogram, so it
    /// lives here only.
    latency: OnceLock<Histogram>,
    series: Arc<Created>,
}

/// What [`BackendMetrics`] created, shared with [`LIVE`] while the backend is registered.
struct Created {
    name: Arc<str>,
    /// By [`status_index`].
    status: Series<Gauge>,
    /// By [`transition_slot`].
    transitions: Series<Counter>,
    /// By [`report_slot`].
    reports: Series<Counter>,
}

/// The series of every registered backend of the process, by address: what
/// [`keep_alive`] touches. Taken at registration, removal and `keep_alive` only.
static LIVE: Mutex<BTreeMap<usize, Arc<Created>>> = Mutex::new(BTreeMap::new());

fn live() -> MutexGuard<'static, BTreeMap<usize, Arc<Created>>> {
    // The map is valid after any panic: every change is one insert or remove.
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BackendMetrics {
    /// Describes the metrics to the current recorder and publishes the status `Unknown`
    /// for backend `name`: one series, the only one a backend has before its first
    /// report.
    pub(crate) fn new(name: &Arc<str>) -> Self {
        describe();
        let metrics = BackendMetrics {
            ok: OnceLock::new(),
            latency: OnceLock::new(),
            series: Arc::new(Created {
                name: name.clone(),
                status: Series::new(),
                transitions: Series::new(),
                reports: Series::new(),
            }),
        };
        metrics.set_status(HealthStatus::Unknown);
        live().insert(metrics.key(), metrics.series.clone());
        metrics
    }

    fn key(&self) -> usize {
        Arc::as_ptr(&self.series) as usize
    }

    /// One report with a verdict. Lock-free and allocation-free once the report's
    /// series exist: this runs on every request.
    #[inline]
    pub(crate) fn report(&self, outcome: &Outcome, reason: Reason, latency: Duration) {
        let series = &*self.series;
        let seconds = latency.as_secs_f64();
        // Nearly every report is a success judged `ok`: known before the table's `match`.
        let slot = if matches!((outcome, reason), (Outcome::Success(_), Reason::Ok)) {
            Some(OK_SLOT)
        } else {
            report_slot(outcome, reason)
        };
        match slot {
            Some(OK_SLOT) => {
                let (counter, histogram) = self.ok.get_or_init(|| self.ok_handles());
                counter.increment(1);
                histogram.record(seconds);
                return;
            }
            Some(slot) => series
                .reports
                .get_or_create(slot, || series.report_counter(slot))
                .increment(1),
            // A pair no built-in rule yields, only a custom probe check's verdict (a
            // probe's, so rare): resolved on the spot, and its labels still fixed names.
            None => counter!(
                REPORTS,
                "backend" => series.name.clone(),
                "outcome" => outcome.as_str(),
                "reason" => reason.as_str()
            )
            .increment(1),
        }
        self.histogram().record(seconds);
    }

    fn histogram(&self) -> &Histogram {
        self.latency.get_or_init(|| self.series.latency_histogram())
    }

    #[cold]
    #[inline(never)]
    fn ok_handles(&self) -> (Counter, Histogram) {
        let series = &*self.series;
        let counter = series
            .reports
            .get_or_create(OK_SLOT, || series.report_counter(OK_SLOT));
        (counter.clone(), self.histogram().clone())
    }

    /// A status change; called under the backend's lock, so changes never interleave.
    pub(crate) fn transition(&self, from: HealthStatus, to: HealthStatus) {
        let series = &*self.series;
        if let Some(slot) = transition_slot(from, to) {
            series
                .transitions
                .get_or_create(slot, || series.transition_counter(from, to))
                .increment(1);
        }
        self.set_status(to);
    }

    /// The backend left the registry: it counts in no status any more, and
    /// [`keep_alive`] no longer touches its series, so that an exporter's idle timeout
    /// drops them. Only the current status's gauge is `1`, so only that one is cleared:
    /// a backend registered again under the same name in the meantime keeps its own
    /// `unknown` (unless the removed one was still `unknown` too).
    pub(crate) fn removed(&self, current: HealthStatus) {
        if let Some(gauge) = self.series.status.get(status_index(current)) {
            gauge.set(0.0);
        }
        live().remove(&self.key());
    }

    /// `1` for `current`, `0` for every other status this backend has been in.
    fn set_status(&self, current: HealthStatus) {
        let series = &*self.series;
        let current = status_index(current);
        series
            .status
            .get_or_create(current, || series.status_gauge(current));
        for (slot, gauge) in series.status.iter() {
            gauge.set(if slot == current { 1.0 } else { 0.0 });
        }
    }
}

/// A registry dropped without removing its backends must not leave them in [`LIVE`].
impl Drop for BackendMetrics {
    fn drop(&mut self) {
        live().remove(&self.key());
    }
}

impl fmt::Debug for BackendMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendMetrics")
            .field("backend", &self.series.name)
            .finish_non_exhaustive()
    }
}

// Resolving a handle builds a label set and allocates: out of line, off the hot path.
impl Created {
    #[cold]
    #[inline(never)]
    fn status_gauge(&self, slot: usize) -> Gauge {
        let status = STATUSES[slot].as_str();
        gauge!(STATUS, "backend" => self.name.clone(), "status" => status)
    }

    #[cold]
    #[inline(never)]
    fn transition_counter(&self, from: HealthStatus, to: HealthStatus) -> Counter {
        counter!(
            TRANSITIONS,
            "backend" => self.name.clone(),
            "from" => from.as_str(),
            "to" => to.as_str()
        )
    }

    #[cold]
    #[inline(never)]
    fn report_counter(&self, slot: usize) -> Counter {
        let (outcome, reason) = REPORT_KINDS[slot];
        counter!(
            REPORTS,
            "backend" => self.name.clone(),
            "outcome" => outcome,
            "reason" => reason.as_str()
        )
    }

    #[cold]
    #[inline(never)]
    fn latency_histogram(&self) -> Histogram {
        histogram!(LATENCY, "backend" => self.name.clone())
    }

    /// Marks every series as updated without changing a value.
    fn touch(&self) {
        for (_, gauge) in self.status.iter() {
            gauge.increment(0.0);
        }
        for (_, counter) in self.transitions.iter().chain(self.reports.iter()) {
            counter.increment(0);
        }
    }
}

/// Marks every series of every registered backend (of every
/// [`HealthRegistry`](crate::HealthRegistry) in the process) as updated, without changing
/// a value, so that an exporter's idle timeout removes only the series of
/// [removed](crate::HealthRegistry::remove) backends.
///
/// A backend that stays Healthy sets its status gauge once and may not increment a
/// transition counter for days; an exporter that drops series idle for longer than a
/// timeout (the Prometheus exporter's `idle_timeout`) would drop them, and the handles
/// this crate holds would from then on update series the exporter no longer has. Call
/// this before each render (the example proxy calls it in its `/metrics` handler), and
/// give removed backends' series the idle timeout to disappear.
///
/// A histogram cannot be marked without recording a value: a backend's latency
/// histogram stays only while the backend has counted reports. One the exporter drops
/// for want of values stays dropped (the backend's handle records into nothing until it
/// is registered again), so set the idle timeout well above the longest gap between a
/// backend's reports (several probe intervals; the example proxy uses ten), or leave
/// histograms out of the timeout's mask.
///
/// Takes one lock for the whole walk (registrations and removals wait for it), touches
/// each existing series once, and allocates nothing.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use metrics_exporter_prometheus::PrometheusBuilder;
/// use metrics_util::MetricKindMask;
/// use tower_health_classify::{metrics, AuthStrategy, HealthRegistry};
///
/// let recorder = PrometheusBuilder::new()
///     .idle_timeout(MetricKindMask::ALL, Some(Duration::from_secs(300)))
///     .build_recorder();
/// let prometheus = recorder.handle();
/// let registry = HealthRegistry::default();
/// ::metrics::with_local_recorder(&recorder, || {
///     registry.register("github", AuthStrategy::UpstreamInject);
/// });
///
/// // In the `/metrics` handler:
/// metrics::keep_alive();
/// let text = prometheus.render();
/// assert!(text.contains(r#"backend_health_status{backend="github",status="unknown"} 1"#));
/// ```
pub fn keep_alive() {
    for series in live().values() {
        series.touch();
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
    use crate::error::{LocalKind, TransportKind};
    use crate::verdict::{verdict, AuthStrategy, CredentialOwner, Credentials, Origin};
    use ::metrics::{KeyName, Metadata, SharedString};
    use http::{header, HeaderMap, HeaderValue, StatusCode};
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicU64, Ordering};

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
    fn transition_slots_are_distinct_and_skip_unknown_targets_and_no_change() {
        let mut seen = BTreeSet::new();
        for from in STATUSES {
            assert_eq!(transition_slot(from, HealthStatus::Unknown), None);
            assert_eq!(transition_slot(from, from), None, "{from} -> {from}");
            for to in STATUSES[1..].iter().filter(|to| **to != from) {
                let slot = transition_slot(from, *to).unwrap();
                assert!(slot < 20 && seen.insert(slot), "{from} -> {to}");
                assert_eq!((STATUSES[slot / 4], STATUSES[slot % 4 + 1]), (from, *to));
            }
        }
    }

    // === series created on first use, by many threads, and kept alive ===

    /// A handle that counts the calls made through it, value changes or not.
    #[derive(Debug, Default)]
    struct Handle {
        value: AtomicU64,
        calls: AtomicU64,
    }

    impl ::metrics::CounterFn for Handle {
        fn increment(&self, value: u64) {
            self.value.fetch_add(value, Ordering::Relaxed);
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.value.store(value, Ordering::Relaxed);
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl ::metrics::GaugeFn for Handle {
        fn increment(&self, value: f64) {
            let now = f64::from_bits(self.value.load(Ordering::Relaxed)) + value;
            self.set(now);
        }
        fn decrement(&self, value: f64) {
            self.increment(-value);
        }
        fn set(&self, value: f64) {
            self.value.store(value.to_bits(), Ordering::Relaxed);
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl ::metrics::HistogramFn for Handle {
        fn record(&self, _value: f64) {
            self.value.fetch_add(1, Ordering::Relaxed);
            self.calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One shared [`Handle`] per series, as real recorders do, and how many times each
    /// series was asked for.
    #[derive(Debug, Default)]
    struct Recorder {
        series: Mutex<BTreeMap<String, (Arc<Handle>, usize)>>,
    }

    impl Recorder {
        fn handle(&self, key: &::metrics::Key) -> Arc<Handle> {
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut series = self.series.lock().unwrap();
            let (handle, asked) = series.entry(name).or_default();
            *asked += 1;
            handle.clone()
        }

        /// Every series as (name and labels, value, calls, times asked for).
        fn series(&self) -> Vec<(String, u64, u64, usize)> {
            let series = self.series.lock().unwrap();
            let row = |(name, (handle, asked)): (&String, &(Arc<Handle>, usize))| {
                let value = handle.value.load(Ordering::Relaxed);
                (
                    name.clone(),
                    value,
                    handle.calls.load(Ordering::Relaxed),
                    *asked,
                )
            };
            series.iter().map(row).collect()
        }

        fn value(&self, name: &str) -> Option<u64> {
            let series = self.series.lock().unwrap();
            series
                .get(name)
                .map(|(h, _)| h.value.load(Ordering::Relaxed))
        }
    }

    impl ::metrics::Recorder for Recorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &::metrics::Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.handle(key))
        }
        fn register_gauge(&self, key: &::metrics::Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.handle(key))
        }
        fn register_histogram(&self, key: &::metrics::Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.handle(key))
        }
    }

    #[test]
    fn a_registered_backend_has_only_its_unknown_gauge() {
        let recorder = Recorder::default();
        let _metrics =
            ::metrics::with_local_recorder(&recorder, || BackendMetrics::new(&Arc::from("fresh")));
        assert_eq!(
            recorder.series(),
            [(
                "backend_health_status{backend=fresh,status=unknown}".to_owned(),
                1f64.to_bits(),
                1,
                1
            )]
        );
    }

    /// Four threads report four kinds of outcome into one backend at once, each kind
    /// new to it: every series is asked of the recorder once, and no report is lost.
    #[test]
    fn first_reports_from_many_threads_create_each_series_once() {
        const THREADS: u64 = 4;
        const REPORTS: u64 = 2_000;
        let recorder = Recorder::default();
        let metrics =
            ::metrics::with_local_recorder(&recorder, || BackendMetrics::new(&Arc::from("shared")));
        let kinds = [
            (Outcome::Success(StatusCode::OK), Reason::Ok),
            (
                Outcome::ServerError(StatusCode::BAD_GATEWAY),
                Reason::ServerError,
            ),
            (
                Outcome::Transport(TransportKind::ConnectionRefused),
                Reason::Transport(TransportKind::ConnectionRefused),
            ),
            (
                Outcome::Transport(TransportKind::Timeout),
                Reason::Transport(TransportKind::Timeout),
            ),
        ];
        let start = std::sync::Barrier::new(THREADS as usize);
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (metrics, recorder, kinds, start) = (&metrics, &recorder, &kinds, &start);
                scope.spawn(move || {
                    ::metrics::with_local_recorder(recorder, || {
                        start.wait();
                        for i in 0..REPORTS {
                            let (outcome, reason) = &kinds[((thread + i) % 4) as usize];
                            metrics.report(outcome, *reason, Duration::from_millis(1));
                        }
                    })
                });
            }
        });
        let series = recorder.series();
        for (name, value, _, asked) in &series {
            assert_eq!(*asked, 1, "{name} asked for {asked} times");
            if name.starts_with(REPORTS_NAME) {
                assert_eq!(*value, THREADS * REPORTS / 4, "{name}");
            }
        }
        let reports = series.iter().filter(|s| s.0.starts_with(REPORTS_NAME));
        assert_eq!(reports.count(), kinds.len());
        assert_eq!(
            recorder.value("backend_health_latency_seconds{backend=shared}"),
            Some(THREADS * REPORTS),
            "every report reached the histogram"
        );
    }

    const REPORTS_NAME: &str = "backend_health_reports_total{";

    /// `keep_alive` marks every series of a registered backend without changing its
    /// value, and leaves a removed backend's alone, so that an idle timeout takes them.
    #[test]
    fn keep_alive_touches_registered_backends_only() {
        let recorder = Recorder::default();
        let ok = Outcome::Success(StatusCode::OK);
        let (live, gone) = ::metrics::with_local_recorder(&recorder, || {
            let live = BackendMetrics::new(&Arc::from("live"));
            let gone = BackendMetrics::new(&Arc::from("gone"));
            for metrics in [&live, &gone] {
                metrics.report(&ok, Reason::Ok, Duration::ZERO);
                metrics.transition(HealthStatus::Unknown, HealthStatus::Healthy);
            }
            gone.removed(HealthStatus::Healthy);
            (live, gone)
        });
        let before = recorder.series();
        keep_alive();
        let after = recorder.series();
        assert_eq!(before.len(), 10, "{before:#?}");
        for (was, now) in before.iter().zip(&after) {
            let (name, value) = (&now.0, now.1);
            assert_eq!(value, was.1, "{name}: keep_alive changes no value");
            let touched = now.2 > was.2;
            let histogram = name.starts_with(LATENCY);
            let removed = name.contains("backend=gone");
            assert_eq!(touched, !removed && !histogram, "{name}");
        }
        let gone_healthy = "backend_health_status{backend=gone,status=healthy}";
        assert_eq!(recorder.value(gone_healthy), Some(0f64.to_bits()));
        drop((live, gone));
    }

    #[test]
    fn a_backend_dropped_without_removal_is_not_kept_alive() {
        let metrics = BackendMetrics::new(&Arc::from("dropped"));
        let key = metrics.key();
        assert!(live().contains_key(&key));
        drop(metrics);
        assert!(!live().contains_key(&key));
    }
}
