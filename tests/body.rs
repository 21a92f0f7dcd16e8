//! Judged streams (`HealthClassifyLayer::classify_body`): a body that fails after the head
//! is reported once as the backend's failure, at the poll of the failing frame; a clean
//! end, a dropped body, and a failing body whose head was already Bad add nothing. Scripted
//! bodies for the rules, a real hyper-util client against loopback servers that die in
//! the middle of an event stream for the faults.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::error::Error as _;
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};
use tower_health_classify::body::ResponseBody;
use tower_health_classify::{
    AuthStrategy, BackendError, Credentials, HealthClassifyLayer, HealthRegistry, HealthStatus,
    Origin, Outcome, Policy, Probe, Reason, TransportKind, Verdict,
};

#[path = "support/sockets.rs"]
mod sockets;

use sockets::{read_request_head, reset};

#[path = "support/recorder.rs"]
mod recorder;

use recorder::{Recorded, Recorder};

/// Only fires if a case hangs, so that a broken case fails instead of stalling the run.
const HANG_GUARD: Duration = Duration::from_secs(10);

// === scripted bodies ===

#[derive(Debug, Clone, Copy)]
enum Step {
    Data(&'static str),
    Fail(io::ErrorKind),
}

/// Yields its steps in order, then ends.
#[derive(Debug)]
struct Scripted(VecDeque<Step>);

impl Scripted {
    fn new(steps: &[Step]) -> Self {
        Scripted(steps.iter().copied().collect())
    }
}

impl Body for Scripted {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|step| match step {
            Step::Data(text) => Ok(Frame::data(Bytes::from_static(text.as_bytes()))),
            Step::Fail(kind) => Err(io::Error::from(kind)),
        }))
    }
}

fn answer(status: u16, steps: &'static [Step]) -> Response<Scripted> {
    let mut response = Response::new(Scripted::new(steps));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    if status == 401 {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            r#"Bearer resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource""#
                .parse()
                .unwrap(),
        );
    }
    response
}

/// One call through a `classify_body` layer in pass-through mode, answered with `status`
/// and `steps`: the response body, for the caller to read.
async fn call(
    recorder: &Arc<Recorder>,
    status: u16,
    steps: &'static [Step],
    request: Request<()>,
) -> ResponseBody<Scripted, Arc<Recorder>, tower_health_classify::DefaultClassifier> {
    let backend =
        service_fn(
            move |_req: Request<()>| async move { Ok::<_, Infallible>(answer(status, steps)) },
        );
    let service = HealthClassifyLayer::new(recorder.clone())
        .pass_through_auth()
        .classify_body()
        .layer(backend);
    service.oneshot(request).await.unwrap().into_body()
}

/// Polls `body` to its end or first error, recording after each poll how many reports
/// the sink had: a report made at the failing frame shows in that very poll.
fn drain(
    mut body: Pin<&mut impl Body<Data = Bytes, Error = BackendError>>,
    recorder: &Recorder,
) -> DrainEnd {
    let mut cx = Context::from_waker(Waker::noop());
    let mut data = Vec::new();
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                data.extend_from_slice(&frame.into_data().expect("data frames only"))
            }
            Poll::Ready(Some(Err(error))) => {
                return DrainEnd {
                    data,
                    error: Some(error),
                    reports_at_end: recorder.count(),
                }
            }
            Poll::Ready(None) => {
                return DrainEnd {
                    data,
                    error: None,
                    reports_at_end: recorder.count(),
                }
            }
            Poll::Pending => panic!("scripted bodies are always ready"),
        }
    }
}

struct DrainEnd {
    data: Vec<u8>,
    error: Option<BackendError>,
    reports_at_end: usize,
}

const OK: Option<Verdict> = Some(Verdict::new(HealthStatus::Healthy, Reason::Ok));

fn down(kind: TransportKind) -> Recorded {
    (
        Outcome::Transport(kind),
        Some(Verdict::new(
            HealthStatus::Unhealthy,
            Reason::Transport(kind),
        )),
        Credentials::NotSent,
        Origin::Traffic,
    )
}

fn head(outcome: Outcome, verdict: Option<Verdict>) -> Recorded {
    (outcome, verdict, Credentials::NotSent, Origin::Traffic)
}

// === the rules ===

#[tokio::test]
async fn each_body_ending_adds_what_the_rule_says() {
    use io::ErrorKind::{ConnectionReset, TimedOut, UnexpectedEof};
    use Step::{Data, Fail};
    let success = || head(Outcome::Success(StatusCode::OK), OK);
    struct Case {
        name: &'static str,
        status: u16,
        steps: &'static [Step],
        strategy: AuthStrategy,
        reports: Vec<Recorded>,
        error: Option<TransportKind>,
        data: &'static str,
    }
    let cases = [
        Case {
            name: "a clean end after frames adds nothing",
            status: 200,
            steps: &[Data("data: 1\n\n"), Data("data: 2\n\n")],
            strategy: AuthStrategy::Unauthenticated,
            reports: vec![success()],
            error: None,
            data: "data: 1\n\ndata: 2\n\n",
        },
        Case {
            name: "an empty body adds nothing",
            status: 200,
            steps: &[],
            strategy: AuthStrategy::Unauthenticated,
            reports: vec![success()],
            error: None,
            data: "",
        },
        Case {
            name: "a reset after the first event is the backend's reset",
            status: 200,
            steps: &[Data("data: 1\n\n"), Fail(ConnectionReset)],
            strategy: AuthStrategy::Unauthenticated,
            reports: vec![success(), down(TransportKind::Reset)],
            error: Some(TransportKind::Reset),
            data: "data: 1\n\n",
        },
        Case {
            name: "a peer that closes mid-body is closed",
            status: 200,
            steps: &[Data("data: 1\n"), Fail(UnexpectedEof)],
            strategy: AuthStrategy::Unauthenticated,
            reports: vec![success(), down(TransportKind::Closed)],
            error: Some(TransportKind::Closed),
            data: "data: 1\n",
        },
        Case {
            name: "a timeout while streaming is a timeout",
            status: 200,
            steps: &[Fail(TimedOut)],
            strategy: AuthStrategy::Unauthenticated,
            reports: vec![success(), down(TransportKind::Timeout)],
            error: Some(TransportKind::Timeout),
            data: "",
        },
        Case {
            name: "a 503 cut off is one failure: the head's",
            status: 503,
            steps: &[Fail(ConnectionReset)],
            strategy: AuthStrategy::Unauthenticated,
            reports: vec![head(
                Outcome::ServerError(StatusCode::SERVICE_UNAVAILABLE),
                Some(Verdict::new(HealthStatus::Unhealthy, Reason::ServerError)),
            )],
            error: Some(TransportKind::Reset),
            data: "",
        },
        Case {
            name: "an expected challenge whose body fails reports the failure",
            status: 401,
            steps: &[Fail(ConnectionReset)],
            strategy: AuthStrategy::UpstreamInject,
            reports: vec![
                (
                    tower_health_classify::classify_response(
                        StatusCode::UNAUTHORIZED,
                        &http::HeaderMap::new(),
                    ),
                    Some(Verdict::new(
                        HealthStatus::Healthy,
                        Reason::ExpectedChallenge,
                    )),
                    Credentials::NotSent,
                    Origin::Traffic,
                ),
                down(TransportKind::Reset),
            ],
            error: Some(TransportKind::Reset),
            data: "",
        },
    ];
    for case in cases {
        let recorder = Recorder::new(case.strategy.clone());
        let body = call(&recorder, case.status, case.steps, Request::new(())).await;
        assert_eq!(recorder.count(), 1, "{}: the head reports first", case.name);
        let end = drain(pin!(body), &recorder);
        let reports = recorder.reports();
        assert_eq!(
            reports.len(),
            case.reports.len(),
            "{}: {reports:?}",
            case.name
        );
        for (got, want) in reports.iter().zip(&case.reports) {
            // The challenge list is compared by kind only: its contents are the parser's
            // business (tests/layer.rs).
            assert_eq!(got.0.as_str(), want.0.as_str(), "{}", case.name);
            assert_eq!(got.1, want.1, "{}", case.name);
            assert_eq!((got.2, got.3), (want.2, want.3), "{}", case.name);
        }
        assert_eq!(
            end.reports_at_end,
            case.reports.len(),
            "{}: reported within the poll of the failing frame",
            case.name
        );
        assert_eq!(
            end.error.as_ref().and_then(BackendError::transport_kind),
            case.error,
            "{}: {:?}",
            case.name,
            end.error
        );
        assert_eq!(end.data, case.data.as_bytes(), "{}", case.name);
    }
}

#[tokio::test]
async fn the_body_error_is_typed_and_keeps_the_original_as_its_source() {
    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let body = call(
        &recorder,
        200,
        &[Step::Fail(io::ErrorKind::TimedOut)],
        Request::new(()),
    )
    .await;
    let error = body.collect().await.unwrap_err();
    assert!(matches!(error, BackendError::Timeout { .. }), "{error:?}");
    let source = error.source().and_then(|e| e.downcast_ref::<io::Error>());
    assert_eq!(source.map(io::Error::kind), Some(io::ErrorKind::TimedOut));
}

#[tokio::test]
async fn a_second_failing_frame_reports_nothing_more() {
    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let mut body = pin!(
        call(
            &recorder,
            200,
            &[
                Step::Fail(io::ErrorKind::ConnectionReset),
                Step::Fail(io::ErrorKind::ConnectionReset),
            ],
            Request::new(()),
        )
        .await
    );
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..2 {
        let polled = body.as_mut().poll_frame(&mut cx);
        assert!(matches!(polled, Poll::Ready(Some(Err(_)))));
    }
    assert_eq!(recorder.count(), 2, "the head and the first failure");
}

#[tokio::test]
async fn a_body_dropped_by_the_caller_reports_nothing() {
    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let mut body = Box::pin(
        call(
            &recorder,
            200,
            &[
                Step::Data("data: 1\n\n"),
                Step::Fail(io::ErrorKind::ConnectionReset),
            ],
            Request::new(()),
        )
        .await,
    );
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(
        body.as_mut().poll_frame(&mut cx),
        Poll::Ready(Some(Ok(_)))
    ));
    drop(body);
    assert_eq!(recorder.count(), 1, "only the head: the caller hung up");
}

#[tokio::test]
async fn the_failure_report_keeps_the_requests_credentials_and_origin() {
    let recorder = Recorder::new(AuthStrategy::TokenExchange);
    let mut request = Request::new(());
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
    request.extensions_mut().insert(Probe);
    let body = call(
        &recorder,
        200,
        &[Step::Fail(io::ErrorKind::ConnectionReset)],
        request,
    )
    .await;
    let _ = body.collect().await;
    let reports = recorder.reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(
        (reports[1].2, reports[1].3),
        (Credentials::Sent, Origin::Probe)
    );
}

#[test]
fn the_body_and_the_future_are_send_when_their_parts_are() {
    fn send<T: Send>(_: &T) {}
    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let backend = service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(answer(200, &[])) });
    let mut service = HealthClassifyLayer::new(recorder)
        .classify_body()
        .layer(backend);
    let future = tower::Service::call(&mut service, Request::new(()));
    send(&future);
    let response = futures_ready(future).unwrap();
    send(response.body());
}

/// Polls a future that is ready at once.
fn futures_ready<F: std::future::Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("ready at once"),
    }
}

// === a real client against a server that dies mid-stream ===

/// How the server ends the event stream after its first event.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// FIN after a chunk: the chunked body never gets its last chunk.
    Close,
    /// RST (linger 0).
    Reset,
}

/// A raw HTTP/1.1 server answering every request with an open SSE stream (chunked), one
/// event, then `death`.
async fn dying_sse_server(death: Death) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request_head(&mut stream).await;
                let event = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                    event.len()
                );
                if stream.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                let _ = stream.flush().await;
                match death {
                    Death::Close => drop(stream),
                    Death::Reset => reset(stream),
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_backend_dying_mid_event_stream_is_reported_once_as_its_transport_failure() {
    for (death, kind) in [
        (Death::Close, TransportKind::Closed),
        (Death::Reset, TransportKind::Reset),
    ] {
        let addr = dying_sse_server(death).await;
        let registry = HealthRegistry::new(Policy::default());
        let handle = registry.register("mcp", AuthStrategy::Unauthenticated);
        let recorder = Recorder::new(AuthStrategy::Unauthenticated);
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let service = ServiceBuilder::new()
            .layer(HealthClassifyLayer::new((handle, recorder.clone())).classify_body())
            .service(client);
        let request = Request::post(format!("http://{addr}/mcp"))
            .body(Empty::new())
            .unwrap();
        let response = tokio::time::timeout(HANG_GUARD, service.oneshot(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = pin!(response.into_body());
        let first = tokio::time::timeout(HANG_GUARD, body.frame())
            .await
            .unwrap()
            .expect("the first event")
            .expect("the first event is fine");
        assert!(first.into_data().unwrap().starts_with(b"event: message"));
        assert_eq!(recorder.count(), 1, "{death:?}: the head only, so far");

        let error = loop {
            match tokio::time::timeout(HANG_GUARD, body.frame())
                .await
                .unwrap()
            {
                Some(Ok(_)) => continue,
                Some(Err(error)) => break error,
                None => panic!("{death:?}: the stream cannot end cleanly"),
            }
        };
        assert_eq!(error.transport_kind(), Some(kind), "{death:?}: {error:?}");
        assert_eq!(recorder.reports()[1..], [down(kind)], "{death:?}");

        let health = registry.snapshot().backends.remove(0);
        assert_eq!(health.checks, 2, "{death:?}: a normal report, counted");
        assert_eq!(health.failures, 1, "{death:?}");
        assert_eq!(health.reason, Some(Reason::Transport(kind)), "{death:?}");
        assert_eq!(health.last_outcome, Some("transport"), "{death:?}");
    }
}

#[tokio::test]
async fn a_panicking_sink_loses_its_reports_not_the_stream() {
    let sink = tower_health_classify::sink_fn(AuthStrategy::Unauthenticated, |_report| {
        panic!("broken sink")
    });
    let backend = service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(answer(
            200,
            &[
                Step::Data("data: 1\n\n"),
                Step::Fail(io::ErrorKind::ConnectionReset),
            ],
        ))
    });
    let service = HealthClassifyLayer::new(sink)
        .classify_body()
        .layer(backend);
    let response = service.oneshot(Request::new(())).await.unwrap();
    let error = response.into_body().collect().await.unwrap_err();
    assert_eq!(error.transport_kind(), Some(TransportKind::Reset));
}
