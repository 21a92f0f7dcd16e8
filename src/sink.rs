//! Health sinks: where the layer sends one report per exchange.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::Outcome;
use crate::clock::Stamp;
use crate::verdict::{verdict, AuthStrategy, Credentials, Origin, Verdict, DEFAULT_SLOW_THRESHOLD};

/// What the layer tells a sink about one exchange. Plain data; borrowed for the call.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use tower_health_classify::{
///     AuthStrategy, Credentials, HealthReport, HealthStatus, Origin, Outcome,
///     DEFAULT_SLOW_THRESHOLD,
/// };
///
/// let outcome = Outcome::Success(StatusCode::OK);
/// let strategy = AuthStrategy::Unauthenticated;
/// let report = HealthReport::new(
///     &outcome,
///     &strategy,
///     Credentials::NotSent,
///     Origin::Traffic,
///     Duration::from_millis(3),
///     DEFAULT_SLOW_THRESHOLD,
/// );
/// assert_eq!(report.verdict.unwrap().status, HealthStatus::Healthy);
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
    /// From the call to the response or error (or to the drop, for `Cancelled`). Read
    /// from a coarse clock unless feature `precise-clock` is on: see the crate docs.
    pub latency: Duration,
    /// The layer's clock when the exchange ended, so that the registry need not read it
    /// again; `None` in reports made by hand.
    pub(crate) ended: Option<Stamp>,
}

impl<'a> HealthReport<'a> {
    /// A report of an exchange that took `latency`, with its verdict judged by
    /// [`verdict`].
    #[inline]
    pub fn new(
        outcome: &'a Outcome,
        strategy: &'a AuthStrategy,
        credentials: Credentials,
        origin: Origin,
        latency: Duration,
        slow_threshold: Duration,
    ) -> Self {
        HealthReport {
            outcome,
            verdict: verdict(
                outcome,
                strategy,
                credentials,
                origin,
                latency,
                slow_threshold,
            ),
            strategy,
            credentials,
            origin,
            latency,
            ended: None,
        }
    }
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

    /// Takes one report.
    fn report(&self, report: &HealthReport<'_>);
}

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
/// `reason`, `strategy`, `credentials_sent`, `probe`, `latency_ms`. Nothing from a
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
        let strategy = sink.strategy();
        sink.report(&HealthReport::new(
            outcome,
            &strategy,
            Credentials::NotSent,
            Origin::Probe,
            Duration::from_millis(1),
            sink.slow_threshold(),
        ));
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
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines.iter().all(|l| l.contains("DEBUG")), "{text}");
        assert!(lines[0].contains(r"backend=git\nhub"), "{text}");
        assert!(lines[0].contains("status=\"healthy\""), "{text}");
        assert!(lines[1].contains("reason=\"expected_challenge\""), "{text}");
    }
}
