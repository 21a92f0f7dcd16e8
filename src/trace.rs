//! tower-http integration: [`TraceLayer`] failures judged by this crate's verdicts
//! (feature `tower-http`).
//!
//! [`NotHealthyAsFailures`] is a [`MakeClassifier`]: give it to [`TraceLayer::new`] and
//! `on_failure` fires for exactly the exchanges this crate does not judge
//! [`Healthy`](HealthStatus::Healthy), with a [`HealthFailure`] that carries the
//! [`Outcome`] and the [`Verdict`]. A refused connection or a 503 is a failure; the
//! `401` + Bearer challenge that a credential-less request gets from an OAuth-protected
//! backend is not, when the backend's strategy expects it.
//!
//! [`TraceLayer`]: tower_http::trace::TraceLayer
//! [`TraceLayer::new`]: tower_http::trace::TraceLayer::new

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Request, Response};
use tower_http::classify::{ClassifiedResponse, ClassifyEos, ClassifyResponse, MakeClassifier};

use crate::classify::{display_text, Classifier, DefaultClassifier, Outcome};
use crate::error::{AuthError, BackendError, BoxError};
use crate::sink::{sink_fn, HealthReport, HealthSink, SinkFn};
use crate::verdict::{verdict, AuthStrategy, Credentials, HealthStatus, Origin, Verdict};

/// A [`MakeClassifier`] for tower-http's [`TraceLayer`]: an exchange is a failure unless
/// this crate's [`verdict`] on it is [`Healthy`](HealthStatus::Healthy).
///
/// Classification is this crate's (the same tables as
/// [`HealthClassifyLayer`](crate::HealthClassifyLayer)); the verdict uses the strategy
/// of a [`HealthSink`], read on every exchange, so a registry's
/// [`BackendHandle`](crate::BackendHandle) gives the live strategy (the sink only
/// supplies the strategy: nothing is reported to it). Credentials and probes are read
/// from the request as the layer reads them: `Authorization`, any
/// [`credential_header`](Self::credential_header), the [`Credentials::Sent`] extension,
/// the [`Probe`](crate::Probe) extension.
///
/// | exchange | failure? |
/// |---|---|
/// | 2xx, 3xx; 4xx on traffic | no |
/// | 401/403 without credentials, strategy configured (`expected_challenge`) | no |
/// | 401/403 rejecting a user's forwarded token (`user_credentials_rejected`) | no |
/// | 401/403 to a caller's request that a probe would be judged Bad for (`request_denied`) | no |
/// | 401/403 to a probe under `Unauthenticated`, or rejecting the gateway's own credentials | yes |
/// | 407, 408, 429, 5xx; 4xx on a probe | yes |
/// | any error (refused, timeout, reset, ...) | yes, always (see below) |
/// | a response body that fails after a good response | yes |
///
/// Latency is not judged: a slow success is not a failure of that request (the
/// `on_response` callback has the latency).
///
/// # Errors are always failures
///
/// tower-http's [`ClassifyResponse::classify_error`] must return a failure class: every
/// error of the inner service reaches `on_failure`. When [`HealthClassify`] runs *inside*
/// the `TraceLayer` in typed mode, it turns 401/403 into [`BackendError::Auth`], so an
/// expected challenge reaches `on_failure` too, with a [`HealthFailure::verdict`] that
/// is Healthy. To keep expected challenges out of `on_failure`, use
/// [`pass_through_auth`](crate::HealthClassifyLayer::pass_through_auth) or put the
/// `TraceLayer` inside `HealthClassify`.
///
/// # Errors are read by type where possible
///
/// tower-http only promises that an error is `Display + 'static`, not that it is an
/// [`Error`]. The error is downcast to the types this crate knows ([`BackendError`],
/// [`BoxError`], [`AuthError`], `std::io::Error`, `hyper::Error`, tower's and tokio's
/// `Elapsed`, tower's `Overloaded`, `http::Error`, and with feature `hyper-util`
/// hyper-util's client error) and walked with [`Classifier::classify_error`]. Any other
/// type is read through its `Display` text only, by the [`text`](crate::text) fallback.
/// To keep the typed path for another error type, map it into a [`BoxError`] below the
/// `TraceLayer` (`.map_err(BoxError::from)`), or run [`HealthClassify`] inside it.
///
/// [`TraceLayer`]: tower_http::trace::TraceLayer
/// [`HealthClassify`]: crate::HealthClassify
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::{Arc, Mutex};
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_http::trace::TraceLayer;
/// use tower_health_classify::{AuthStrategy, HealthFailure, HealthRegistry, NotHealthyAsFailures};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = HealthRegistry::default();
/// let github = registry.register("github", AuthStrategy::UpstreamInject);
///
/// let failures = Arc::new(Mutex::new(Vec::<HealthFailure>::new()));
/// let seen = failures.clone();
/// let backend = service_fn(|_req: Request<String>| async {
///     let challenge = Response::builder()
///         .status(StatusCode::UNAUTHORIZED)
///         .header("www-authenticate", r#"Bearer scope="mcp""#)
///         .body(String::new())
///         .unwrap();
///     Ok::<_, Infallible>(challenge)
/// });
/// let service = ServiceBuilder::new()
///     .layer(
///         TraceLayer::new(NotHealthyAsFailures::new(github))
///             .on_failure(move |class: HealthFailure, _latency, _span: &tracing::Span| {
///                 seen.lock().unwrap().push(class);
///             }),
///     )
///     .service(backend);
///
/// // Users bring their own token: a credential-less 401 proves the backend is up.
/// let response = service.clone().oneshot(Request::new(String::new())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// assert!(failures.lock().unwrap().is_empty());
///
/// // Without a strategy the same answer to a probe means the gateway lacks credentials.
/// // (A caller's 401 never counts against the backend: it is `request_denied`.)
/// assert!(registry.set_strategy("github", AuthStrategy::Unauthenticated));
/// let mut probe = Request::new(String::new());
/// probe.extensions_mut().insert(tower_health_classify::Probe);
/// service.oneshot(probe).await.unwrap();
/// let failures = failures.lock().unwrap();
/// assert_eq!(failures[0].verdict.unwrap().reason.as_str(), "no_auth_configured");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct NotHealthyAsFailures<K, C = DefaultClassifier> {
    sink: K,
    classifier: C,
    credential_headers: Arc<[HeaderName]>,
}

impl<K> NotHealthyAsFailures<K> {
    /// Judges with `sink`'s strategy, read on every exchange, and the default classifier.
    pub fn new(sink: K) -> Self {
        NotHealthyAsFailures {
            sink,
            classifier: DefaultClassifier,
            credential_headers: Arc::from([]),
        }
    }
}

impl NotHealthyAsFailures<SinkFn<fn(&HealthReport<'_>)>> {
    /// Judges with a fixed `strategy`, for a `TraceLayer` used without a registry.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_http::trace::TraceLayer;
    /// use tower_health_classify::{AuthStrategy, NotHealthyAsFailures};
    ///
    /// let layer = TraceLayer::new(NotHealthyAsFailures::with_strategy(AuthStrategy::TokenExchange));
    /// # let _ = layer;
    /// ```
    pub fn with_strategy(strategy: AuthStrategy) -> Self {
        let ignore: fn(&HealthReport<'_>) = |_| {};
        NotHealthyAsFailures::new(sink_fn(strategy, ignore))
    }
}

impl<K, C> NotHealthyAsFailures<K, C> {
    /// Classifies with `classifier` instead of the default tables (use the one the
    /// backend's [`HealthClassifyLayer`](crate::HealthClassifyLayer) uses).
    pub fn classifier<C2>(self, classifier: C2) -> NotHealthyAsFailures<K, C2> {
        NotHealthyAsFailures {
            sink: self.sink,
            classifier,
            credential_headers: self.credential_headers,
        }
    }

    /// Counts `name` as a credential header, in addition to `Authorization`, as
    /// [`HealthClassifyLayer::credential_header`](crate::HealthClassifyLayer::credential_header)
    /// does. Only the header's presence is looked at, never its value.
    pub fn credential_header(mut self, name: HeaderName) -> Self {
        self.credential_headers = crate::verdict::with_header(&self.credential_headers, name);
        self
    }
}

impl<K, C> MakeClassifier for NotHealthyAsFailures<K, C>
where
    K: HealthSink + Clone,
    C: Classifier + Clone,
{
    type Classifier = ClassifyExchange<K, C>;
    type FailureClass = HealthFailure;
    type ClassifyEos = ClassifyExchange<K, C>;

    fn make_classifier<B>(&self, request: &Request<B>) -> Self::Classifier {
        ClassifyExchange {
            sink: self.sink.clone(),
            classifier: self.classifier.clone(),
            credentials: Credentials::of(request, &self.credential_headers),
            origin: Origin::of(request),
        }
    }
}

/// Classifies one exchange for [`NotHealthyAsFailures`]: its response, its response
/// body's end, or its error. Made per request by
/// [`make_classifier`](MakeClassifier::make_classifier), which notes whether the request
/// carried credentials and whether it was a probe.
///
/// # Example
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use tower_http::classify::{ClassifiedResponse, ClassifyResponse, MakeClassifier};
/// use tower_health_classify::{AuthStrategy, NotHealthyAsFailures, Reason};
///
/// let make = NotHealthyAsFailures::with_strategy(AuthStrategy::HeaderInjection);
/// let request = Request::builder()
///     .header("authorization", "Bearer k")
///     .extension(tower_health_classify::Probe)
///     .body(())
///     .unwrap();
/// let classify = make.make_classifier(&request);
///
/// // A probe's own key was rejected: a failure.
/// let response = Response::builder().status(StatusCode::UNAUTHORIZED).body(()).unwrap();
/// let ClassifiedResponse::Ready(Err(failure)) = classify.classify_response(&response) else {
///     panic!("a rejected gateway key is a failure");
/// };
/// assert_eq!(failure.verdict.unwrap().reason, Reason::CredentialsRejected);
/// assert!(failure.to_string().ends_with(": unauthenticated (credentials_rejected)"));
/// ```
#[derive(Debug, Clone)]
pub struct ClassifyExchange<K, C = DefaultClassifier> {
    sink: K,
    classifier: C,
    credentials: Credentials,
    origin: Origin,
}

impl<K: HealthSink, C: Classifier> ClassifyExchange<K, C> {
    /// The verdict, without latency (a success is never slow here). Credentials count as
    /// sent when this request carried them or when a `HealthClassify` further in saw
    /// them (an auth layer between the two may have added them).
    fn judge(&self, outcome: &Outcome) -> Option<Verdict> {
        let sent = match outcome {
            Outcome::Auth(auth) => self.credentials.is_sent() || auth.credentials_sent(),
            _ => self.credentials.is_sent(),
        };
        let credentials = if sent {
            Credentials::Sent
        } else {
            Credentials::NotSent
        };
        let strategy = self.sink.strategy();
        verdict(
            outcome,
            &strategy,
            credentials,
            self.origin,
            Duration::ZERO,
            Duration::MAX,
        )
    }

    fn failure(&self, mut outcome: Outcome) -> HealthFailure {
        if let Outcome::Auth(auth) = &mut outcome {
            let sent = self.credentials.is_sent() || auth.credentials_sent();
            auth.set_credentials_sent(sent);
        }
        let verdict = self.judge(&outcome);
        HealthFailure { outcome, verdict }
    }

    fn error_failure<E: fmt::Display + 'static>(&self, error: &E) -> HealthFailure {
        let outcome = match typed(error) {
            Some(error) => self.classifier.classify_error(error),
            // What a failing `Display` wrote before it failed is kept.
            None => self
                .classifier
                .classify_error(&Flattened(display_text(error))),
        };
        self.failure(outcome)
    }
}

fn is_good(verdict: Option<Verdict>) -> bool {
    verdict.is_some_and(Verdict::is_good)
}

impl<K: HealthSink, C: Classifier> ClassifyResponse for ClassifyExchange<K, C> {
    type FailureClass = HealthFailure;
    type ClassifyEos = Self;

    /// A response judged Healthy is not a failure yet: its body is watched, so that a
    /// body that fails midway still reaches `on_failure`. A response with an [`Outcome`]
    /// in its extensions (put there by a `HealthClassify` further in) is judged on that
    /// outcome, not classified again.
    fn classify_response<B>(
        self,
        response: &Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        let failure = match response.extensions().get::<Outcome>() {
            Some(outcome) if is_good(self.judge(outcome)) => None,
            Some(outcome) => Some(self.failure(outcome.clone())),
            None => {
                let outcome = self
                    .classifier
                    .classify_response(response.status(), response.headers());
                // Success allocates nothing and is always Healthy here.
                if outcome.is_success() || is_good(self.judge(&outcome)) {
                    None
                } else {
                    Some(self.failure(outcome))
                }
            }
        };
        match failure {
            Some(failure) => ClassifiedResponse::Ready(Err(failure)),
            None => ClassifiedResponse::RequiresEos(self),
        }
    }

    fn classify_error<E>(self, error: &E) -> Self::FailureClass
    where
        E: fmt::Display + 'static,
    {
        self.error_failure(error)
    }
}

impl<K: HealthSink, C: Classifier> ClassifyEos for ClassifyExchange<K, C> {
    type FailureClass = HealthFailure;

    /// A body that ends is fine, trailers or not.
    fn classify_eos(self, _trailers: Option<&HeaderMap>) -> Result<(), Self::FailureClass> {
        Ok(())
    }

    /// A body that failed midway: classified like an inner error.
    fn classify_error<E>(self, error: &E) -> Self::FailureClass
    where
        E: fmt::Display + 'static,
    {
        self.error_failure(error)
    }
}

/// The failure class of [`NotHealthyAsFailures`]: what the exchange showed and how this
/// crate judged it.
///
/// Its `Display` is the outcome and the verdict (`server_error 503: unhealthy
/// (server_error)`); it never holds a request header, and backend-supplied text in it is
/// escaped, so it is safe to log.
///
/// # Example
///
/// ```
/// use std::io;
/// use http::Request;
/// use tower_http::classify::{ClassifyResponse, MakeClassifier};
/// use tower_health_classify::{AuthStrategy, NotHealthyAsFailures, Outcome, TransportKind};
///
/// let make = NotHealthyAsFailures::with_strategy(AuthStrategy::Unauthenticated);
/// let classify = make.make_classifier(&Request::new(()));
/// let failure = classify.classify_error(&io::Error::from(io::ErrorKind::ConnectionRefused));
/// assert_eq!(failure.outcome, Outcome::Transport(TransportKind::ConnectionRefused));
/// assert_eq!(
///     failure.to_string(),
///     "transport connection_refused: unhealthy (connection_refused)",
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HealthFailure {
    /// What the exchange showed.
    pub outcome: Outcome,
    /// The verdict on it; `None` for `Cancelled` and `Local` outcomes, which say nothing
    /// about the backend. `Some` Healthy only for an error that stands for a Healthy
    /// exchange, such as an expected challenge returned as [`BackendError::Auth`] (errors
    /// are always failures to tower-http).
    pub verdict: Option<Verdict>,
}

impl HealthFailure {
    /// The status the verdict points to; `None` when there is no verdict.
    pub fn status(&self) -> Option<HealthStatus> {
        self.verdict.map(|v| v.status)
    }
}

impl fmt::Display for HealthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict {
            Some(verdict) => write!(f, "{}: {verdict}", self.outcome),
            None => write!(f, "{}: not judged", self.outcome),
        }
    }
}

/// The error as a `dyn Error`, when its type is one whose chain this crate can walk.
fn typed<E: fmt::Display + 'static>(error: &E) -> Option<&(dyn Error + 'static)> {
    let any: &dyn Any = error;
    if let Some(boxed) = any.downcast_ref::<BoxError>() {
        return Some(&**boxed);
    }
    macro_rules! known {
        ($($ty:ty),* $(,)?) => {$(
            if let Some(error) = any.downcast_ref::<$ty>() {
                return Some(error);
            }
        )*};
    }
    known!(
        BackendError,
        AuthError,
        io::Error,
        hyper::Error,
        tower::timeout::error::Elapsed,
        tower::load_shed::error::Overloaded,
        tokio::time::error::Elapsed,
        http::Error,
    );
    #[cfg(feature = "hyper-util")]
    known!(hyper_util::client::legacy::Error);
    None
}

/// An error known only by its text, for the text fallback.
#[derive(Debug)]
struct Flattened(String);

impl fmt::Display for Flattened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Flattened {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TransportKind;

    fn classify(strategy: AuthStrategy) -> ClassifyExchange<SinkFn<fn(&HealthReport<'_>)>> {
        NotHealthyAsFailures::with_strategy(strategy).make_classifier(&Request::new(()))
    }

    #[test]
    fn typed_errors_keep_their_type_and_others_fall_back_to_text() {
        let c = classify(AuthStrategy::Unauthenticated);
        let boxed: BoxError = io::Error::from(io::ErrorKind::ConnectionReset).into();
        let cases: Vec<(&str, HealthFailure, Outcome)> = vec![
            (
                "a boxed io error is walked",
                c.clone().error_failure(&boxed),
                Outcome::Transport(TransportKind::Reset),
            ),
            (
                "tower's elapsed is a timeout",
                c.clone()
                    .error_failure(&tower::timeout::error::Elapsed::new()),
                Outcome::Transport(TransportKind::Timeout),
            ),
            (
                "a backend error keeps its outcome",
                c.clone().error_failure(&BackendError::from_error(
                    io::Error::from(io::ErrorKind::ConnectionRefused).into(),
                )),
                Outcome::Transport(TransportKind::ConnectionRefused),
            ),
            (
                "plain text goes through the text fallback",
                c.clone()
                    .error_failure(&String::from("read: connection reset by peer")),
                Outcome::Transport(TransportKind::Reset),
            ),
            (
                "text that says nothing is other",
                c.error_failure(&"boom"),
                Outcome::Transport(TransportKind::Other),
            ),
        ];
        for (name, failure, want) in cases {
            assert_eq!(failure.outcome, want, "{name}");
            assert_eq!(failure.status(), Some(HealthStatus::Unhealthy), "{name}");
        }
    }

    #[test]
    fn a_failing_display_is_read_up_to_the_failure_without_panicking() {
        struct Broken(&'static str);
        impl fmt::Display for Broken {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)?;
                Err(fmt::Error)
            }
        }
        let c = classify(AuthStrategy::Unauthenticated);
        let cases = [
            ("nothing before the failure", "", TransportKind::Other),
            (
                "a phrase before the failure",
                "connection refused",
                TransportKind::ConnectionRefused,
            ),
        ];
        for (name, written, want) in cases {
            let failure = c.clone().error_failure(&Broken(written));
            assert_eq!(failure.outcome, Outcome::Transport(want), "{name}");
        }
    }

    #[test]
    fn an_outcome_in_the_extensions_is_judged_not_reclassified() {
        let mut response = Response::new(());
        *response.status_mut() = http::StatusCode::OK;
        response
            .extensions_mut()
            .insert(Outcome::Transport(TransportKind::Protocol));
        let ClassifiedResponse::Ready(Err(failure)) =
            classify(AuthStrategy::UpstreamInject).classify_response(&response)
        else {
            panic!("the outcome in the extensions decides");
        };
        assert_eq!(failure.outcome, Outcome::Transport(TransportKind::Protocol));
    }

    #[test]
    fn a_local_error_is_a_failure_without_a_verdict() {
        let failure = classify(AuthStrategy::UpstreamInject)
            .error_failure(&tower::load_shed::error::Overloaded::new());
        assert_eq!(failure.verdict, None);
        assert_eq!(failure.to_string(), "local overloaded: not judged");
    }
}
