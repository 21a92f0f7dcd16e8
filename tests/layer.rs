//! Middleware behaviour of `HealthClassify`, driven by `tower_test::mock`: readiness,
//! cancellation, one report per call, inner errors kept as sources, composition with
//! other tower layers, and what the request tells the report.

use std::error::Error as _;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderName, Request, Response, StatusCode};
use tokio_test::{assert_pending, assert_ready, assert_ready_err, assert_ready_ok, task};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_health_classify::future::ResponseFuture;
use tower_health_classify::{
    AuthStrategy, BackendError, Classifier, Credentials, DefaultClassifier, HealthClassify,
    HealthClassifyLayer, HealthReport, HealthSink, HealthStatus, LocalKind, Origin, Outcome, Probe,
    Reason, TransportKind, Verdict,
};
use tower_test::mock;

#[path = "support/recorder.rs"]
mod recorder;

use recorder::Recorder;

type Req = Request<&'static str>;
type Resp = Response<&'static str>;

type Layered = HealthClassify<mock::Mock<Req, Resp>, Arc<Recorder>, DefaultClassifier>;

fn spawn_with(
    layer: HealthClassifyLayer<Arc<Recorder>>,
) -> (mock::Spawn<Layered>, mock::Handle<Req, Resp>) {
    mock::spawn_layer(layer)
}

fn spawn(strategy: AuthStrategy) -> (Arc<Recorder>, mock::Spawn<Layered>, mock::Handle<Req, Resp>) {
    let recorder = Recorder::new(strategy);
    let (service, handle) = spawn_with(HealthClassifyLayer::new(recorder.clone()));
    (recorder, service, handle)
}

fn request() -> Req {
    Request::get("http://127.0.0.1:1/mcp").body("").unwrap()
}

fn response(status: u16) -> Resp {
    Response::builder().status(status).body("").unwrap()
}

fn unauthorized() -> Resp {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, r#"Bearer scope="mcp""#)
        .body("")
        .unwrap()
}

fn verdict(status: HealthStatus, reason: Reason) -> Option<Verdict> {
    Some(Verdict::new(status, reason))
}

/// An error type this crate has never heard of, to check it is kept as it was.
#[derive(Debug, PartialEq)]
struct BackendQuirk(u32);

impl fmt::Display for BackendQuirk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend quirk number {}", self.0)
    }
}

impl std::error::Error for BackendQuirk {}

// === readiness ===

#[tokio::test]
async fn pending_readiness_is_passed_through_and_not_reported() {
    let (recorder, mut service, mut handle) = spawn(AuthStrategy::TokenExchange);

    handle.allow(0);
    assert_pending!(service.poll_ready());
    assert_eq!(recorder.reports(), vec![], "Pending is not a report");

    handle.allow(1);
    assert!(service.is_woken(), "the inner waker is passed through");
    assert_ready_ok!(service.poll_ready());
    assert_eq!(recorder.reports(), vec![], "readiness is not a report");
}

#[tokio::test]
async fn readiness_error_is_classified_and_reported_once() {
    let (recorder, mut service, mut handle) = spawn(AuthStrategy::TokenExchange);

    handle.allow(0);
    assert_pending!(service.poll_ready());
    handle.send_error(io::Error::from(io::ErrorKind::ConnectionRefused));
    assert!(service.is_woken());

    let err = assert_ready_err!(service.poll_ready());
    assert!(
        matches!(
            err,
            BackendError::Transport {
                kind: TransportKind::ConnectionRefused,
                ..
            }
        ),
        "{err:?}"
    );
    let source = err.source().expect("the readiness error is kept as source");
    assert_eq!(
        source.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionRefused)
    );
    assert_eq!(
        recorder.reports(),
        vec![(
            Outcome::Transport(TransportKind::ConnectionRefused),
            verdict(
                HealthStatus::Unhealthy,
                Reason::Transport(TransportKind::ConnectionRefused)
            ),
            Credentials::NotSent,
            Origin::Traffic,
        )]
    );
}

/// An auth layer further in that fetches the gateway's token while getting ready, and
/// has it refused: the error says credentials were sent, and the report keeps it.
#[tokio::test]
async fn a_readiness_auth_error_keeps_the_credentials_it_knows() {
    let (recorder, mut service, mut handle) = spawn(AuthStrategy::TokenExchange);
    handle.allow(0);
    assert_pending!(service.poll_ready());
    let Outcome::Auth(auth) =
        tower_health_classify::classify_response(StatusCode::UNAUTHORIZED, &http::HeaderMap::new())
    else {
        unreachable!()
    };
    let refused = tower_health_classify::AuthError::Unauthorized {
        challenges: auth.challenges().to_vec(),
        credentials_sent: true,
        source: None,
    };
    handle.send_error(BackendError::Auth(refused));
    let err = assert_ready_err!(service.poll_ready());
    assert!(err.auth().unwrap().credentials_sent(), "{err:?}");
    let reports = recorder.reports();
    assert_eq!(reports.len(), 1);
    let (outcome, verdict_given, credentials, origin) = &reports[0];
    assert_eq!(*credentials, Credentials::Sent);
    assert_eq!(*origin, Origin::Traffic, "no request yet: nobody's probe");
    // A caller's exchange: never Bad on a 401, but not mistaken for a credential-less one.
    assert_eq!(
        *verdict_given,
        verdict(HealthStatus::Healthy, Reason::RequestDenied)
    );
    let Outcome::Auth(reported) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reported.credentials_sent());
}

/// A sink that asks for precise latencies gets them to the nanosecond; one that does not
/// gets whole kernel ticks (on Linux, without feature `precise-clock`).
#[test]
fn precise_latency_when_the_sink_asks_for_it() {
    #[derive(Clone)]
    struct Latencies(Arc<Mutex<Vec<Duration>>>, bool);
    impl HealthSink for Latencies {
        fn strategy(&self) -> AuthStrategy {
            AuthStrategy::Unauthenticated
        }
        fn precise_latency(&self) -> bool {
            self.1
        }
        fn report(&self, report: &HealthReport<'_>) {
            self.0.lock().unwrap().push(report.latency);
        }
    }
    // Each exchange spins for 20 µs of real time. A precise clock measures about that; a
    // coarse one (a tick is 1 to 10 ms) zero or whole ticks, and a tick measured may be a
    // nanosecond short of 1 ms (999 999 ns at HZ=1000): the span ends at half a tick.
    // Asserted on most, not all, exchanges: a busy machine may stop the spin for longer
    // now and then.
    let sub_tick = |precise: bool| {
        let sink = Latencies(Arc::default(), precise);
        let mut service =
            HealthClassifyLayer::new(sink.clone()).layer(tower::service_fn(|_req: Req| {
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_micros(20) {
                    std::hint::spin_loop();
                }
                std::future::ready(Ok::<_, io::Error>(response(200)))
            }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..200 {
            runtime.block_on(async {
                service
                    .ready()
                    .await
                    .unwrap()
                    .call(request())
                    .await
                    .unwrap();
            });
        }
        let latencies = sink.0.lock().unwrap().clone();
        let span = Duration::from_micros(20)..Duration::from_micros(500);
        latencies.iter().filter(|l| span.contains(l)).count()
    };
    let precise = sub_tick(true);
    assert!(
        precise >= 100,
        "{precise} of 200 measured between 20 µs and 500 µs"
    );
    #[cfg(all(target_os = "linux", not(feature = "precise-clock")))]
    {
        let coarse = sub_tick(false);
        assert_eq!(coarse, 0, "coarse latencies are whole ticks");
    }
}

// === cancellation and exactly-once ===

#[tokio::test]
async fn future_dropped_while_pending_reports_cancelled_once() {
    let (recorder, mut service, mut handle) = spawn(AuthStrategy::UpstreamInject);

    assert_ready_ok!(service.poll_ready());
    let mut request = request();
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
    request.extensions_mut().insert(Probe);
    let mut future = task::spawn(service.call(request));
    assert_pending!(future.poll());
    let (_request, send) = assert_ready!(handle.poll_request()).unwrap();
    assert_eq!(
        recorder.reports(),
        vec![],
        "nothing reported while in flight"
    );

    drop(future);
    let cancelled = vec![(Outcome::Cancelled, None, Credentials::Sent, Origin::Probe)];
    assert_eq!(
        recorder.reports(),
        cancelled,
        "cancelled keeps the request's marks"
    );

    send.send_response(response(200));
    assert_eq!(
        recorder.reports(),
        cancelled,
        "a late answer is not reported"
    );
}

#[tokio::test]
async fn future_dropped_before_first_poll_reports_cancelled() {
    let (recorder, mut service, _handle) = spawn(AuthStrategy::UpstreamInject);

    assert_ready_ok!(service.poll_ready());
    drop(service.call(request()));
    assert_eq!(
        recorder.reports(),
        vec![(
            Outcome::Cancelled,
            None,
            Credentials::NotSent,
            Origin::Traffic
        )]
    );
}

#[tokio::test]
async fn completed_call_reports_once_and_drop_adds_nothing() {
    let (recorder, mut service, mut handle) = spawn(AuthStrategy::UpstreamInject);

    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request()));
    assert_pending!(future.poll());
    let (_request, send) = assert_ready!(handle.poll_request()).unwrap();
    send.send_response(response(200));
    assert!(future.is_woken());
    let response = assert_ready_ok!(future.poll());
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.extensions().get::<Outcome>(),
        None,
        "plain success not inserted"
    );

    let success = vec![(
        Outcome::Success(StatusCode::OK),
        verdict(HealthStatus::Healthy, Reason::Ok),
        Credentials::NotSent,
        Origin::Traffic,
    )];
    assert_eq!(recorder.reports(), success);
    drop(future);
    assert_eq!(
        recorder.reports(),
        success,
        "dropping a finished future reports nothing"
    );
}

#[tokio::test]
async fn n_calls_make_n_reports_in_order() {
    let (recorder, mut service, mut handle) = spawn(AuthStrategy::HeaderInjection);
    let statuses = [200, 404, 503, 429, 204];

    for status in statuses {
        assert_ready_ok!(service.poll_ready());
        let mut future = task::spawn(service.call(request()));
        let (_request, send) = assert_ready!(handle.poll_request()).unwrap();
        send.send_response(response(status));
        assert_eq!(assert_ready_ok!(future.poll()).status().as_u16(), status);
    }

    let reported: Vec<u16> = recorder
        .outcomes()
        .iter()
        .map(|outcome| outcome.status().unwrap().as_u16())
        .collect();
    assert_eq!(reported, statuses);
}

// === inner errors ===

#[tokio::test]
async fn inner_io_error_is_classified_and_kept_as_source() {
    let (recorder, mut service, mut handle) = spawn(AuthStrategy::UpstreamInject);

    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request()));
    let (_request, send) = assert_ready!(handle.poll_request()).unwrap();
    send.send_error(io::Error::from(io::ErrorKind::ConnectionReset));

    let err = assert_ready_err!(future.poll());
    assert!(
        matches!(
            err,
            BackendError::Transport {
                kind: TransportKind::Reset,
                ..
            }
        ),
        "{err:?}"
    );
    let source = err.source().expect("the inner error is kept as source");
    assert_eq!(
        source.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(
        recorder.reports(),
        vec![(
            Outcome::Transport(TransportKind::Reset),
            verdict(
                HealthStatus::Unhealthy,
                Reason::Transport(TransportKind::Reset)
            ),
            Credentials::NotSent,
            Origin::Traffic,
        )]
    );
}

#[tokio::test]
async fn unknown_inner_error_is_other_and_downcasts_to_its_own_type() {
    let (recorder, mut service, mut handle) = spawn(AuthStrategy::UpstreamInject);

    assert_ready_ok!(service.poll_ready());
    let mut future = task::spawn(service.call(request()));
    let (_request, send) = assert_ready!(handle.poll_request()).unwrap();
    send.send_error(BackendQuirk(7));

    let err = assert_ready_err!(future.poll());
    assert_eq!(err.transport_kind(), Some(TransportKind::Other), "{err:?}");
    let source = err.source().expect("the inner error is kept as source");
    assert_eq!(
        source.downcast_ref::<BackendQuirk>(),
        Some(&BackendQuirk(7))
    );
    assert_eq!(
        recorder.outcomes(),
        vec![Outcome::Transport(TransportKind::Other)]
    );
}

/// A classifier that reads an outcome out of a `BackendQuirk`: row `n` of [`CUSTOM`].
#[derive(Debug, Clone, Copy)]
struct QuirkClassifier;

impl Classifier for QuirkClassifier {
    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Outcome {
        match error.downcast_ref::<BackendQuirk>() {
            Some(BackendQuirk(n)) => CUSTOM[*n as usize].1.clone(),
            None => DefaultClassifier.classify_error(error),
        }
    }
}

/// What a custom classifier may make of an inner error: each variant of `BackendError`,
/// and outcomes that have none of their own.
const CUSTOM: [(&str, Outcome); 10] = [
    (
        "a 5xx read in a client library's error",
        Outcome::ServerError(StatusCode::BAD_GATEWAY),
    ),
    (
        "a 401 read in a client library's error (the error becomes its source)",
        Outcome::Auth(tower_health_classify::AuthError::Unauthorized {
            challenges: Vec::new(),
            credentials_sent: false,
            source: None,
        }),
    ),
    (
        "a 429 with its delay",
        Outcome::Throttled {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(Duration::from_secs(30)),
        },
    ),
    ("a 404", Outcome::ClientError(StatusCode::NOT_FOUND)),
    ("a success", Outcome::Success(StatusCode::OK)),
    ("a cancellation", Outcome::Cancelled),
    (
        "a transport failure",
        Outcome::Transport(TransportKind::Reset),
    ),
    ("a timeout", Outcome::Transport(TransportKind::Timeout)),
    (
        "a connect timeout",
        Outcome::Transport(TransportKind::ConnectTimeout),
    ),
    ("a local failure", Outcome::Local(LocalKind::Overloaded)),
];

/// `BackendError::outcome()` is the outcome the sink was given, whatever the classifier
/// chose, and the inner error stays the source.
#[tokio::test]
async fn a_custom_classifiers_outcome_is_the_errors_outcome() {
    for (n, (what, outcome)) in CUSTOM.iter().enumerate() {
        let recorder = Recorder::new(AuthStrategy::UpstreamInject);
        let layer = HealthClassifyLayer::new(recorder.clone()).classifier(QuirkClassifier);
        let (mut service, mut handle) = mock::spawn_layer::<Req, Resp, _>(layer);
        assert_ready_ok!(service.poll_ready());
        let mut future = task::spawn(service.call(request()));
        let (_request, send) = assert_ready!(handle.poll_request()).unwrap();
        send.send_error(BackendQuirk(n as u32));

        let err = assert_ready_err!(future.poll());
        assert_eq!(
            recorder.outcomes(),
            std::slice::from_ref(outcome),
            "{what}: reported"
        );
        assert_eq!(err.outcome(), *outcome, "{what}: err.outcome()");
        let source = err.source().expect("the inner error is kept as source");
        assert_eq!(
            source.downcast_ref::<BackendQuirk>(),
            Some(&BackendQuirk(n as u32)),
            "{what}"
        );
    }
}

// === Send, Sync, Clone ===

fn assert_send<T: Send>() {}
fn assert_send_sync<T: Send + Sync>() {}
fn assert_clone<T: Clone>() {}

#[test]
fn service_and_future_are_send_and_service_is_clone() {
    type Boxed = tower::util::BoxCloneService<Request<String>, Response<String>, BoxError>;
    type BoxedFuture = <Boxed as Service<Request<String>>>::Future;
    type Client = hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >;
    type ClientFuture = hyper_util::client::legacy::ResponseFuture;

    assert_send::<HealthClassify<Boxed, Arc<Recorder>, DefaultClassifier>>();
    assert_clone::<HealthClassify<Boxed, Arc<Recorder>, DefaultClassifier>>();
    assert_send::<ResponseFuture<BoxedFuture, Arc<Recorder>, DefaultClassifier>>();

    assert_send_sync::<HealthClassify<Client, Arc<Recorder>, DefaultClassifier>>();
    assert_clone::<HealthClassify<Client, Arc<Recorder>, DefaultClassifier>>();
    assert_send::<ResponseFuture<ClientFuture, Arc<Recorder>, DefaultClassifier>>();

    assert_send_sync::<HealthClassify<Client, Arc<dyn HealthSink>, DefaultClassifier>>();
    assert_send::<ResponseFuture<ClientFuture, Arc<dyn HealthSink>, DefaultClassifier>>();
    assert_send_sync::<HealthClassifyLayer<Arc<dyn HealthSink>>>();
    assert_clone::<HealthClassifyLayer<Arc<dyn HealthSink>>>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_on_other_threads() {
    let recorder = Recorder::new(AuthStrategy::UpstreamInject);
    let (mock, mut handle) = mock::pair::<Req, Resp>();
    let service = HealthClassifyLayer::new(recorder.clone()).layer(mock);

    let call = tokio::spawn(service.clone().oneshot(request()));
    let (_request, send) = handle.next_request().await.unwrap();
    send.send_response(response(200));
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(recorder.outcomes(), vec![Outcome::Success(StatusCode::OK)]);
}

// === composition ===

#[test]
fn backend_error_converts_into_box_error() {
    let err = BackendError::from_error(Box::new(BackendQuirk(1)));
    let boxed: BoxError = err.into();
    let back = boxed.downcast_ref::<BackendError>().unwrap();
    assert!(back.source().unwrap().is::<BackendQuirk>());
}

#[tokio::test]
async fn works_under_concurrency_limit_and_timeout() {
    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let (mock, mut handle) = mock::pair::<Req, Resp>();
    let service = ServiceBuilder::new()
        .concurrency_limit(1)
        .timeout(Duration::from_secs(30))
        .layer(HealthClassifyLayer::new(recorder.clone()))
        .service(mock);

    let call = tokio::spawn(service.clone().oneshot(request()));
    let (_request, send) = handle.next_request().await.unwrap();
    send.send_response(unauthorized());
    let err: BoxError = call.await.unwrap().unwrap_err();
    let err = err
        .downcast_ref::<BackendError>()
        .expect("outer layers see the BackendError");
    assert!(err.is_auth(), "{err:?}");
    assert_eq!(err.auth().unwrap().status(), StatusCode::UNAUTHORIZED);

    let call = tokio::spawn(service.oneshot(request()));
    let (_request, send) = handle.next_request().await.unwrap();
    send.send_response(response(200));
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);

    let verdicts: Vec<_> = recorder.reports().into_iter().map(|r| r.1).collect();
    assert_eq!(
        verdicts,
        vec![
            // A caller's 401 where the gateway has no credentials: not held against it.
            verdict(HealthStatus::Healthy, Reason::RequestDenied),
            verdict(HealthStatus::Healthy, Reason::Ok),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn inner_timeout_becomes_a_typed_timeout() {
    let recorder = Recorder::new(AuthStrategy::UpstreamInject);
    let (mock, mut handle) = mock::pair::<Req, Resp>();
    let service = ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(recorder.clone()))
        .timeout(Duration::from_secs(5))
        .service(mock);

    let call = tokio::spawn(service.oneshot(request()));
    // Held, never answered: only the (paused, auto-advancing) timer can end the call.
    let (_request, _send) = handle.next_request().await.unwrap();
    let err = call.await.unwrap().unwrap_err();

    assert!(matches!(err, BackendError::Timeout { .. }), "{err:?}");
    assert!(err.is_timeout());
    assert!(err.source().unwrap().is::<tower::timeout::error::Elapsed>());
    assert_eq!(
        recorder.reports(),
        vec![(
            Outcome::Transport(TransportKind::Timeout),
            verdict(
                HealthStatus::Unhealthy,
                Reason::Transport(TransportKind::Timeout)
            ),
            Credentials::NotSent,
            Origin::Traffic,
        )]
    );
}

// === what the request tells the report ===

#[tokio::test]
async fn request_marks_set_credentials_and_origin() {
    struct Case {
        name: &'static str,
        mark: fn(&mut Req),
        api_key_configured: bool,
        credentials: Credentials,
        origin: Origin,
    }
    let cases = [
        Case {
            name: "a bare request is credential-less traffic",
            mark: |_| {},
            api_key_configured: false,
            credentials: Credentials::NotSent,
            origin: Origin::Traffic,
        },
        Case {
            name: "an Authorization header counts as credentials",
            mark: |r| {
                r.headers_mut()
                    .insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
            },
            api_key_configured: false,
            credentials: Credentials::Sent,
            origin: Origin::Traffic,
        },
        Case {
            name: "a Credentials::Sent extension counts as credentials",
            mark: |r| {
                r.extensions_mut().insert(Credentials::Sent);
            },
            api_key_configured: false,
            credentials: Credentials::Sent,
            origin: Origin::Traffic,
        },
        Case {
            name: "a Credentials::NotSent extension does not",
            mark: |r| {
                r.extensions_mut().insert(Credentials::NotSent);
            },
            api_key_configured: false,
            credentials: Credentials::NotSent,
            origin: Origin::Traffic,
        },
        Case {
            name: "a configured credential header counts as credentials",
            mark: |r| {
                r.headers_mut()
                    .insert("x-api-key", "secret-key".parse().unwrap());
            },
            api_key_configured: true,
            credentials: Credentials::Sent,
            origin: Origin::Traffic,
        },
        Case {
            name: "an unconfigured custom header does not",
            mark: |r| {
                r.headers_mut()
                    .insert("x-api-key", "secret-key".parse().unwrap());
            },
            api_key_configured: false,
            credentials: Credentials::NotSent,
            origin: Origin::Traffic,
        },
        Case {
            name: "a Probe extension makes a probe",
            mark: |r| {
                r.extensions_mut().insert(Probe);
            },
            api_key_configured: false,
            credentials: Credentials::NotSent,
            origin: Origin::Probe,
        },
        Case {
            name: "a probe with credentials is both",
            mark: |r| {
                r.extensions_mut().insert(Probe);
                r.extensions_mut().insert(Credentials::Sent);
            },
            api_key_configured: false,
            credentials: Credentials::Sent,
            origin: Origin::Probe,
        },
    ];

    for case in cases {
        let recorder = Recorder::new(AuthStrategy::TokenExchange);
        let mut layer = HealthClassifyLayer::new(recorder.clone());
        if case.api_key_configured {
            layer = layer.credential_header(HeaderName::from_static("x-api-key"));
        }
        let (mut service, mut handle) = spawn_with(layer);

        let mut request = request();
        (case.mark)(&mut request);
        assert_ready_ok!(service.poll_ready());
        let mut future = task::spawn(service.call(request));
        let (_request, send) = assert_ready!(handle.poll_request()).unwrap();
        send.send_response(unauthorized());
        let err = assert_ready_err!(future.poll());

        let name = case.name;
        let auth = err.auth().unwrap_or_else(|| panic!("{name}: {err:?}"));
        assert_eq!(
            auth.credentials_sent(),
            case.credentials.is_sent(),
            "{name}: AuthError::credentials_sent"
        );
        let want_verdict = match (case.credentials, case.origin) {
            (Credentials::Sent, Origin::Probe) => {
                verdict(HealthStatus::Unauthenticated, Reason::CredentialsRejected)
            }
            // A caller's request: never held against the backend.
            (Credentials::Sent, Origin::Traffic) => {
                verdict(HealthStatus::Healthy, Reason::RequestDenied)
            }
            (Credentials::NotSent, _) => verdict(HealthStatus::Healthy, Reason::ExpectedChallenge),
        };
        let reports = recorder.reports();
        assert_eq!(reports.len(), 1, "{name}: one report");
        let (_, verdict, credentials, origin) = &reports[0];
        assert_eq!(*credentials, case.credentials, "{name}: credentials");
        assert_eq!(*origin, case.origin, "{name}: origin");
        assert_eq!(*verdict, want_verdict, "{name}: verdict");
    }
}

#[tokio::test]
async fn strategy_is_read_on_every_report() {
    let (recorder, mut service, mut handle) = spawn(AuthStrategy::UpstreamInject);

    for strategy in [AuthStrategy::UpstreamInject, AuthStrategy::Unauthenticated] {
        recorder.set_strategy(strategy);
        assert_ready_ok!(service.poll_ready());
        // A probe: its 401 is judged by the strategy alone.
        let mut probe = request();
        probe.extensions_mut().insert(Probe);
        let mut future = task::spawn(service.call(probe));
        let (_request, send) = assert_ready!(handle.poll_request()).unwrap();
        send.send_response(unauthorized());
        assert_ready_err!(future.poll());
    }

    let verdicts: Vec<_> = recorder.reports().into_iter().map(|r| r.1).collect();
    assert_eq!(
        verdicts,
        vec![
            verdict(HealthStatus::Healthy, Reason::ExpectedChallenge),
            verdict(HealthStatus::Unauthenticated, Reason::NoAuthConfigured),
        ]
    );
}

// === what the layer returns, by mode ===

#[tokio::test]
async fn auth_answers_are_errors_in_typed_mode_and_responses_in_pass_through() {
    for pass_through in [false, true] {
        let recorder = Recorder::new(AuthStrategy::UpstreamInject);
        let mut layer = HealthClassifyLayer::new(recorder.clone());
        if pass_through {
            layer = layer.pass_through_auth();
        }
        let (mut service, mut handle) = spawn_with(layer);

        let mut results = Vec::new();
        for answer in [unauthorized(), response(503), response(200)] {
            assert_ready_ok!(service.poll_ready());
            let mut future = task::spawn(service.call(request()));
            let (_request, send) = assert_ready!(handle.poll_request()).unwrap();
            send.send_response(answer);
            results.push(assert_ready!(future.poll()));
        }
        let outcomes = recorder.outcomes();
        let mode = if pass_through {
            "pass-through"
        } else {
            "typed"
        };

        match &results[0] {
            Err(BackendError::Auth(auth)) if !pass_through => {
                assert_eq!(outcomes[0], Outcome::Auth(auth.clone()), "{mode}: 401");
            }
            Ok(response) if pass_through => {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{mode}");
                assert_eq!(
                    response.headers()[header::WWW_AUTHENTICATE],
                    r#"Bearer scope="mcp""#,
                    "{mode}: challenge kept"
                );
                assert_eq!(
                    response.extensions().get::<Outcome>(),
                    Some(&outcomes[0]),
                    "{mode}: 401 outcome in extensions"
                );
                assert!(matches!(outcomes[0], Outcome::Auth(_)), "{mode}");
            }
            other => panic!("{mode}: 401 gave {other:?}"),
        }

        let unavailable = results[1]
            .as_ref()
            .expect("503 is a response in both modes");
        assert_eq!(
            unavailable.extensions().get::<Outcome>(),
            Some(&Outcome::ServerError(StatusCode::SERVICE_UNAVAILABLE)),
            "{mode}: 503 outcome in extensions"
        );

        let ok = results[2].as_ref().expect("200 is a response");
        assert_eq!(
            ok.extensions().get::<Outcome>(),
            None,
            "{mode}: 200 not inserted"
        );
        assert_eq!(outcomes.len(), 3, "{mode}: one report per call");
    }
}
