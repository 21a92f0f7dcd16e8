//! Health sinks: where the layer sends one report per exchange.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::Outcome;
use crate::clock::Stamp;
use crate::error::{TlsFailure, TransportKind};
use crate::verdict::{verdict, AuthStrategy, Credentials, Origin, Verdict, DEFAULT_SLOW_THRESHOLD};

/// What the layer tells a sink about one exchange. Plain data; borrowed for the call.
///
/// Made by the layer, or by an [`ExchangeReport`] for an exchange made without it.
///
/// # Example
///
/// ```
/// use std::io;
/// use tower_health_classify::{
///     sink_fn, AuthStrategy, ExchangeReport, Outcome, TlsFailure, TransportKind,
/// };
///
/// let sink = sink_fn(AuthStrategy::Unauthenticated, |report| {
///     if let Outcome::Transport(TransportKind::Tls) = report.outcome {
///         assert_eq!(report.tls_failure, Some(TlsFailure::UnknownIssuer));
///         assert_eq!(report.verdict.unwrap().reason.as_str(), "tls");
///     }
/// });
/// let error = io::Error::other("SSL certificate problem: self-signed certificate");
/// ExchangeReport::error(&error).report(&sink);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HealthReport<'a> {
    /// What the exchange showed.
    pub outcome: &'a Outcome,
    /// The judgement; `None` for `Cancelled` and `Local` outcomes, which never count.
    pub verdict: Option<Verdict>,
    /// The strategy the verdict was judged with (the sink's, at the time of the report).
    pub strategy: &'a AuthStrategy,
    /// Whether the request carried credentials.
    pub credentials: Credentials,
    /// Whether the request was a probe.
    pub origin: Origin,
    /// From the call to the response or error (or to the drop, for `Cancelled`). To the
    /// microsecond when the sink asks for [`precise_latency`](HealthSink::precise_latency),
    /// else from a coarse clock (one kernel tick, 1 to 10 ms): see the crate docs.
    pub latency: Duration,
    /// Why the TLS handshake failed: `Some` exactly when `outcome` is
    /// `Transport(Tls)` ([`TlsFailure::Other`] when no cause was recognised).
    pub tls_failure: Option<TlsFailure>,
    /// The layer's clock when the exchange ended, so that the registry need not read it
    /// again; `None` in reports made by hand.
    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
    pub(crate) ended: Option<Stamp>,
}

/// One exchange with a backend made without the layer (a `reqwest::Client`, a
/// hand-written probe, any client that is not a `Service<http::Request<B>>`), to judge
/// and report to a sink as the layer would.
///
/// Start from the response or the error ([`response`](Self::response) and
/// [`error`](Self::error) classify them, the TLS cause included), or from an
/// [`Outcome`] you classified yourself ([`new`](Self::new)); name the facts the outcome
/// does not hold; then [`report`](Self::report) reads the strategy and the slow
/// threshold from the sink, judges with [`verdict`], and hands the sink one
/// [`HealthReport`]. Left out: no credentials, traffic, zero latency, no TLS cause.
///
/// # Example
///
/// ```
/// use std::time::{Duration, Instant};
/// use tower_health_classify::{
///     AuthStrategy, Credentials, ExchangeReport, HealthRegistry, Origin, Policy,
/// };
///
/// let registry = HealthRegistry::new(Policy::default());
/// let github = registry.register("github", AuthStrategy::TokenExchange);
///
/// // What `reqwest::Client::get(url).send().await` gave, say.
/// let started = Instant::now();
/// let result: Result<http::Response<()>, std::io::Error> =
///     Err(std::io::ErrorKind::ConnectionRefused.into());
///
/// let exchange = match &result {
///     Ok(response) => ExchangeReport::response(response.status(), response.headers()),
///     Err(error) => ExchangeReport::error(error),
/// };
/// let verdict = exchange
///     .credentials(Credentials::Sent)
///     .origin(Origin::Probe)
///     .latency(started.elapsed())
///     .report(&github);
/// assert_eq!(verdict.unwrap().reason.as_str(), "connection_refused");
/// assert_eq!(registry.snapshot().backends[0].checks, 1);
/// ```
#[derive(Debug, Clone)]
#[must_use = "nothing is reported until `report` is called"]
pub struct ExchangeReport<'a> {
    outcome: Cow<'a, Outcome>,
    facts: Facts,
}

/// What a report says besides the outcome.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Facts {
    pub(crate) credentials: Credentials,
    pub(crate) origin: Origin,
    pub(crate) latency: Duration,
    /// `Some` exactly when the outcome is `Transport(Tls)`.
    pub(crate) tls_failure: Option<TlsFailure>,
    /// The layer's clock reading of the end; `None` in reports made by hand.
    pub(crate) ended: Option<Stamp>,
}

impl<'a> ExchangeReport<'a> {
    /// An exchange whose outcome is `outcome`.
    pub fn new(outcome: &'a Outcome) -> Self {
        Self::of(Cow::Borrowed(outcome))
    }

    fn of(outcome: Cow<'a, Outcome>) -> Self {
        ExchangeReport {
            outcome,
            facts: Facts::default(),
        }
    }

    /// An exchange that got a response: classified by
    /// [`classify_response`](crate::classify_response).
    pub fn response(status: http::StatusCode, headers: &http::HeaderMap) -> Self {
        Self::of(Cow::Owned(crate::classify::classify_response(
            status, headers,
        )))
    }

    /// An exchange that failed: classified by [`classify_error`](crate::classify_error),
    /// with the TLS cause read by [`TlsFailure::from_error`].
    pub fn error(error: &(dyn std::error::Error + 'static)) -> Self {
        let outcome = crate::classify::classify_error(error);
        let tls_failure = crate::classify::tls_failure_of(&outcome, error);
        Self::of(Cow::Owned(outcome)).tls_failure(tls_failure)
    }

    /// Whether the request carried credentials.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.facts.credentials = credentials;
        self
    }

    /// Whether the request was a probe.
    pub fn origin(mut self, origin: Origin) -> Self {
        self.facts.origin = origin;
        self
    }

    /// How long the exchange took, from sending to the response head or the error.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.facts.latency = latency;
        self
    }

    /// Why the TLS handshake failed. Only a `Transport(Tls)` outcome carries a cause: for
    /// one, `None` reports [`TlsFailure::Other`]; for any other outcome this is ignored.
    pub fn tls_failure(mut self, failure: Option<TlsFailure>) -> Self {
        self.facts.tls_failure = failure;
        self
    }

    /// Judges the exchange with the sink's strategy and slow threshold, reports it, and
    /// returns the verdict (`None` for `Cancelled` and `Local` outcomes, which never
    /// count).
    pub fn report<K: HealthSink + ?Sized>(&self, sink: &K) -> Option<Verdict> {
        let tls_failure = match *self.outcome {
            Outcome::Transport(TransportKind::Tls) => {
                Some(self.facts.tls_failure.unwrap_or(TlsFailure::Other))
            }
            _ => None,
        };
        judge_and_report(
            sink,
            &self.outcome,
            Facts {
                tls_failure,
                ..self.facts
            },
        )
    }
}

/// Judges one exchange with the sink's strategy and slow threshold and hands the sink
/// its report: the layer's path, and [`ExchangeReport`]'s.
#[inline]
pub(crate) fn judge_and_report<K: HealthSink + ?Sized>(
    sink: &K,
    outcome: &Outcome,
    facts: Facts,
) -> Option<Verdict> {
    let strategy = sink.strategy();
    let verdict = verdict(
        outcome,
        &strategy,
        facts.credentials,
        facts.origin,
        facts.latency,
        sink.slow_threshold(),
    );
    sink.report(&HealthReport {
        outcome,
        verdict,
        strategy: &strategy,
        credentials: facts.credentials,
        origin: facts.origin,
        latency: facts.latency,
        tls_failure: facts.tls_failure,
        ended: facts.ended,
    });
    verdict
}

/// Receives one report per exchange and knows how the gateway authenticates to the
/// backend, so the layer can judge each exchange against the current strategy.
///
/// `report` is called on the request path: keep it short and never block (count, swap
/// an atomic, `try_send` on a channel). If a sink panics, the layer catches the panic,
/// logs it at `ERROR` and returns the response (or error) as if the report had been
/// made: a broken sink loses reports, never requests. The registry's own state stays
/// usable after such a panic.
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use tower_health_classify::{AuthStrategy, HealthReport, HealthSink};
///
/// #[derive(Default)]
/// struct CountBad(AtomicUsize);
///
/// impl HealthSink for CountBad {
///     fn strategy(&self) -> AuthStrategy {
///         AuthStrategy::TokenExchange
///     }
///     fn report(&self, report: &HealthReport<'_>) {
///         if report.verdict.is_some_and(|v| v.is_bad()) {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait HealthSink: Send + Sync {
    /// The outgoing auth strategy for this backend, looked up on every report so that a
    /// change takes effect on the next one.
    fn strategy(&self) -> AuthStrategy;

    /// The latency above which a success is judged slow.
    fn slow_threshold(&self) -> Duration {
        DEFAULT_SLOW_THRESHOLD
    }

    /// Whether this sink needs latencies to the microsecond (it records them, or judges
    /// them against a threshold close to the coarse clock's tick).
    ///
    /// The layer then reads a precise clock at the start and the end of each exchange
    /// (about 29 ns a reading on Linux) instead of a coarse one (about 6 ns, and one
    /// kernel tick of resolution, 1 to 10 ms). The default asks for it when
    /// [`slow_threshold`](Self::slow_threshold) is under one second, where a tick is
    /// more than 1% of the threshold.
    #[inline]
    fn precise_latency(&self) -> bool {
        self.slow_threshold() < PRECISE_BELOW
    }

    /// Takes one report.
    fn report(&self, report: &HealthReport<'_>);
}

/// Slow thresholds under this one need precise latencies: a coarse tick (up to 10 ms) is
/// then more than 1% of the threshold.
pub(crate) const PRECISE_BELOW: Duration = Duration::from_secs(1);

/// Discards every report; judges with [`AuthStrategy::Unauthenticated`]. Useful to get
/// the typed errors alone.
impl HealthSink for () {
    fn strategy(&self) -> AuthStrategy {
        AuthStrategy::Unauthenticated
    }

    fn report(&self, _report: &HealthReport<'_>) {}
}

/// A borrowed sink. With a `&'static` sink (a handle leaked once per backend, for a
/// fixed set of backends) the layer clones a plain reference per request instead of
/// touching a reference count, which is measurable on the hottest paths.
impl<T: HealthSink + ?Sized> HealthSink for &T {
    #[inline]
    fn strategy(&self) -> AuthStrategy {
        (**self).strategy()
    }

    #[inline]
    fn slow_threshold(&self) -> Duration {
        (**self).slow_threshold()
    }

    #[inline]
    fn precise_latency(&self) -> bool {
        (**self).precise_latency()
    }

    #[inline]
    fn report(&self, report: &HealthReport<'_>) {
        (**self).report(report)
    }
}

impl<T: HealthSink + ?Sized> HealthSink for Arc<T> {
    fn strategy(&self) -> AuthStrategy {
        (**self).strategy()
    }

    fn slow_threshold(&self) -> Duration {
        (**self).slow_threshold()
    }

    fn precise_latency(&self) -> bool {
        (**self).precise_latency()
    }

    fn report(&self, report: &HealthReport<'_>) {
        (**self).report(report)
    }
}

impl<T: HealthSink + ?Sized> HealthSink for Box<T> {
    fn strategy(&self) -> AuthStrategy {
        (**self).strategy()
    }

    fn slow_threshold(&self) -> Duration {
        (**self).slow_threshold()
    }

    fn precise_latency(&self) -> bool {
        (**self).precise_latency()
    }

    fn report(&self, report: &HealthReport<'_>) {
        (**self).report(report)
    }
}

/// Fan-out: every report goes to both sinks, first `A`, then `B`. The strategy and the
/// slow threshold are `A`'s; `B` sees the report as `A` judged it.
impl<A: HealthSink, B: HealthSink> HealthSink for (A, B) {
    fn strategy(&self) -> AuthStrategy {
        self.0.strategy()
    }

    fn slow_threshold(&self) -> Duration {
        self.0.slow_threshold()
    }

    /// Either sink's need: a precise latency serves both.
    fn precise_latency(&self) -> bool {
        self.0.precise_latency() || self.1.precise_latency()
    }

    fn report(&self, report: &HealthReport<'_>) {
        self.0.report(report);
        self.1.report(report);
    }
}

/// A sink made of a closure and a fixed strategy. Made by [`sink_fn`].
#[derive(Clone)]
pub struct SinkFn<F> {
    strategy: AuthStrategy,
    f: F,
}

/// Makes a sink of a closure, judging with a fixed `strategy`.
///
/// # Example
///
/// ```
/// use tower_health_classify::{sink_fn, AuthStrategy, HealthClassifyLayer};
///
/// let layer = HealthClassifyLayer::new(sink_fn(AuthStrategy::UpstreamInject, |report| {
///     if let Some(verdict) = report.verdict {
///         println!("{} -> {verdict}", report.outcome);
///     }
/// }));
/// # let _ = layer;
/// ```
pub fn sink_fn<F>(strategy: AuthStrategy, f: F) -> SinkFn<F>
where
    F: Fn(&HealthReport<'_>) + Send + Sync,
{
    SinkFn { strategy, f }
}

impl<F> HealthSink for SinkFn<F>
where
    F: Fn(&HealthReport<'_>) + Send + Sync,
{
    fn strategy(&self) -> AuthStrategy {
        self.strategy.clone()
    }

    fn report(&self, report: &HealthReport<'_>) {
        (self.f)(report)
    }
}

impl<F> fmt::Debug for SinkFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkFn")
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

/// Logs every report at `DEBUG` with `tracing`, under target `tower_health_classify`.
///
/// For per-request visibility while debugging; it logs repeats. For the quiet,
/// transitions-only log, use the registry. Fields: `backend`, `outcome`, `status`,
/// `reason`, `strategy`, `credentials_sent`, `probe`, `latency_ms`, and `tls_failure`
/// for a TLS failure (`certificate_expired`, ...). Nothing from a
/// request header is ever logged; backend-supplied text is escaped.
///
/// # Example
///
/// ```
/// use tower_health_classify::{AuthStrategy, HealthClassifyLayer, LogSink};
///
/// let layer = HealthClassifyLayer::new(LogSink::new("github", AuthStrategy::UpstreamInject));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct LogSink {
    backend: Arc<str>,
    strategy: AuthStrategy,
}

impl LogSink {
    /// A logging sink for `backend`, judging with a fixed `strategy`.
    pub fn new(backend: impl Into<Arc<str>>, strategy: AuthStrategy) -> Self {
        LogSink {
            backend: backend.into(),
            strategy,
        }
    }
}

impl HealthSink for LogSink {
    fn strategy(&self) -> AuthStrategy {
        self.strategy.clone()
    }

    /// Yes: it logs every latency.
    fn precise_latency(&self) -> bool {
        true
    }

    fn report(&self, report: &HealthReport<'_>) {
        let (status, reason) = match report.verdict {
            Some(v) => (v.status.as_str(), v.reason.as_str()),
            None => ("none", "not_counted"),
        };
        tracing::debug!(
            target: "tower_health_classify",
            backend = %self.backend.escape_debug(),
            outcome = %report.outcome,
            status,
            reason,
            strategy = %report.strategy.name().escape_debug(),
            credentials_sent = report.credentials.is_sent(),
            probe = report.origin == Origin::Probe,
            latency_ms = report.latency.as_secs_f64() * 1000.0,
            tls_failure = report.tls_failure.map(TlsFailure::as_str),
            "backend exchange classified"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{HealthStatus, Reason};
    use http::StatusCode;
    use std::sync::{Arc, Mutex};

    fn report_with(sink: &dyn HealthSink, outcome: &Outcome) {
        ExchangeReport::new(outcome)
            .origin(Origin::Probe)
            .latency(Duration::from_millis(1))
            .report(sink);
    }

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    struct Named(&'static str, AuthStrategy, Arc<Seen>);

    impl HealthSink for Named {
        fn strategy(&self) -> AuthStrategy {
            self.1.clone()
        }
        fn slow_threshold(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn report(&self, report: &HealthReport<'_>) {
            let verdict = report.verdict.map(|v| v.to_string()).unwrap_or_default();
            self.2
                 .0
                .lock()
                .unwrap()
                .push(format!("{}: {} {verdict}", self.0, report.outcome));
        }
    }

    #[test]
    fn unit_sink_judges_as_unauthenticated_and_drops_reports() {
        assert_eq!(().strategy(), AuthStrategy::Unauthenticated);
        assert_eq!(().slow_threshold(), DEFAULT_SLOW_THRESHOLD);
        report_with(&(), &Outcome::Success(StatusCode::OK));
    }

    #[test]
    fn pair_reports_to_both_in_order_with_the_first_ones_strategy() {
        let seen = Arc::new(Seen::default());
        let pair = (
            Named("a", AuthStrategy::UpstreamInject, seen.clone()),
            Named("b", AuthStrategy::Unauthenticated, seen.clone()),
        );
        assert_eq!(pair.strategy(), AuthStrategy::UpstreamInject);
        assert_eq!(pair.slow_threshold(), Duration::from_secs(1));
        report_with(&pair, &Outcome::ServerError(StatusCode::BAD_GATEWAY));
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "a: server_error 502 unhealthy (server_error)",
                "b: server_error 502 unhealthy (server_error)"
            ]
        );
    }

    #[test]
    fn arc_and_box_delegate_everything() {
        let seen = Arc::new(Seen::default());
        let arc: Arc<dyn HealthSink> =
            Arc::new(Named("arc", AuthStrategy::TokenExchange, seen.clone()));
        let boxed: Box<dyn HealthSink> =
            Box::new(Named("box", AuthStrategy::HeaderInjection, seen.clone()));
        assert_eq!(arc.strategy(), AuthStrategy::TokenExchange);
        assert_eq!(boxed.strategy(), AuthStrategy::HeaderInjection);
        assert_eq!(arc.slow_threshold(), Duration::from_secs(1));
        report_with(&arc, &Outcome::Cancelled);
        report_with(&boxed, &Outcome::Cancelled);
        assert_eq!(
            *seen.0.lock().unwrap(),
            ["arc: cancelled ", "box: cancelled "]
        );
    }

    #[test]
    fn closure_sink_has_a_fixed_strategy() {
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let verdicts = verdicts.clone();
            sink_fn(AuthStrategy::UpstreamInject, move |report| {
                verdicts.lock().unwrap().push(report.verdict.unwrap());
            })
        };
        let outcome =
            crate::classify::classify_response(StatusCode::UNAUTHORIZED, &http::HeaderMap::new());
        report_with(&sink, &outcome);
        assert_eq!(
            *verdicts.lock().unwrap(),
            [crate::Verdict::new(
                HealthStatus::Healthy,
                Reason::ExpectedChallenge
            )]
        );
        assert!(format!("{sink:?}").contains("UpstreamInject"));
    }

    /// A report's verdict, TLS cause, credentials and origin.
    type Fact = (Option<Verdict>, Option<TlsFailure>, Credentials, Origin);

    /// Records every report's facts.
    #[derive(Default)]
    struct Facts(Mutex<Vec<Fact>>);

    impl HealthSink for Facts {
        fn strategy(&self) -> AuthStrategy {
            AuthStrategy::TokenExchange
        }
        fn slow_threshold(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn report(&self, report: &HealthReport<'_>) {
            assert_eq!(*report.strategy, AuthStrategy::TokenExchange);
            self.0.lock().unwrap().push((
                report.verdict,
                report.tls_failure,
                report.credentials,
                report.origin,
            ));
        }
    }

    #[test]
    fn exchange_report_judges_with_the_sinks_strategy_and_threshold() {
        let sink = Facts::default();
        let ok = Outcome::Success(StatusCode::OK);
        let unauthorized =
            crate::classify::classify_response(StatusCode::UNAUTHORIZED, &http::HeaderMap::new());
        let cases: Vec<(&str, ExchangeReport<'_>, Option<Verdict>)> = vec![
            (
                "fast success",
                ExchangeReport::new(&ok).latency(Duration::from_millis(999)),
                Some(Verdict::new(HealthStatus::Healthy, Reason::Ok)),
            ),
            (
                "slow by the sink's threshold, not the default",
                ExchangeReport::new(&ok).latency(Duration::from_secs(2)),
                Some(Verdict::new(HealthStatus::Degraded, Reason::Slow)),
            ),
            (
                "a challenge to a probe without credentials",
                ExchangeReport::new(&unauthorized).origin(Origin::Probe),
                Some(Verdict::new(
                    HealthStatus::Healthy,
                    Reason::ExpectedChallenge,
                )),
            ),
            (
                "the gateway's credentials rejected",
                ExchangeReport::new(&unauthorized)
                    .origin(Origin::Probe)
                    .credentials(Credentials::Sent),
                Some(Verdict::new(
                    HealthStatus::Unauthenticated,
                    Reason::CredentialsRejected,
                )),
            ),
            (
                "cancelled never counts",
                ExchangeReport::new(&Outcome::Cancelled),
                None,
            ),
        ];
        for (name, exchange, want) in cases {
            assert_eq!(exchange.report(&sink), want, "{name}");
            let (reported, ..) = *sink.0.lock().unwrap().last().unwrap();
            assert_eq!(reported, want, "{name}: what the sink saw");
        }
        let seen = sink.0.lock().unwrap();
        assert_eq!(seen[3].2, Credentials::Sent);
        assert_eq!(seen[3].3, Origin::Probe);
        assert_eq!(seen[0].2, Credentials::NotSent);
        assert_eq!(seen[0].3, Origin::Traffic);
    }

    #[test]
    fn only_a_tls_outcome_carries_a_cause_and_always_one() {
        let sink = Facts::default();
        let tls = Outcome::Transport(TransportKind::Tls);
        let reset = Outcome::Transport(TransportKind::Reset);
        let cases: Vec<(&str, ExchangeReport<'_>, Option<TlsFailure>)> = vec![
            (
                "tls with its cause",
                ExchangeReport::new(&tls).tls_failure(Some(TlsFailure::CertificateExpired)),
                Some(TlsFailure::CertificateExpired),
            ),
            (
                "tls without a cause is other",
                ExchangeReport::new(&tls),
                Some(TlsFailure::Other),
            ),
            (
                "a cause on another outcome is dropped",
                ExchangeReport::new(&reset).tls_failure(Some(TlsFailure::UnknownIssuer)),
                None,
            ),
            (
                "from an error: classified, the cause read",
                ExchangeReport::error(&std::io::Error::other(
                    "invalid peer certificate: UnknownIssuer",
                )),
                Some(TlsFailure::UnknownIssuer),
            ),
            (
                "from a response: no cause",
                ExchangeReport::response(StatusCode::BAD_GATEWAY, &http::HeaderMap::new()),
                None,
            ),
        ];
        for (name, exchange, want) in cases {
            let verdict = exchange.report(&sink);
            let (_, cause, ..) = *sink.0.lock().unwrap().last().unwrap();
            assert_eq!(cause, want, "{name}");
            if want.is_some() {
                assert_eq!(
                    verdict,
                    Some(Verdict::new(
                        HealthStatus::Unhealthy,
                        Reason::Transport(TransportKind::Tls)
                    )),
                    "{name}"
                );
            }
        }
    }

    /// Collects what a `tracing` subscriber writes, for assertions on log lines.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_sink_writes_one_debug_line_per_report_and_escapes_names() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // A name from a config file could hold anything; a raw newline would forge a line.
        let sink = LogSink::new("git\nhub", AuthStrategy::UpstreamInject);
        let headers = http::HeaderMap::new();
        tracing::subscriber::with_default(subscriber, || {
            report_with(&sink, &Outcome::Success(StatusCode::OK));
            report_with(
                &sink,
                &crate::classify::classify_response(StatusCode::UNAUTHORIZED, &headers),
            );
            ExchangeReport::new(&Outcome::Transport(TransportKind::Tls))
                .tls_failure(Some(TlsFailure::CertificateExpired))
                .report(&sink);
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(!lines[0].contains("tls_failure"), "{text}");
        assert!(
            lines[2].contains("tls_failure=\"certificate_expired\""),
            "{text}"
        );
        assert!(lines.iter().all(|l| l.contains("DEBUG")), "{text}");
        assert!(lines[0].contains(r"backend=git\nhub"), "{text}");
        assert!(lines[0].contains("status=\"healthy\""), "{text}");
        assert!(lines[1].contains("reason=\"expected_challenge\""), "{text}");
    }
}
