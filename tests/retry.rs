//! `RetryPolicy` behaviour, driven by `tower_test::mock` on paused tokio time: one test per
//! rule of the policy's table, the bounds (attempts, backoff, budget), and where the layer
//! sits relative to `Retry`.

#![cfg(feature = "retry")]

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, Method, Request, Response, StatusCode};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;
use tower::retry::Retry;
use tower::{BoxError, Layer, ServiceBuilder, ServiceExt};
use tower_health_classify::{
    AuthStrategy, BackendError, HealthClassifyLayer, HealthReport, HealthSink, Origin, Outcome,
    Probe, RetryPolicy, TransportKind,
};
use tower_test::mock;

type Req = Request<&'static str>;
type Resp = Response<&'static str>;
type Handle = mock::Handle<Req, Resp>;
type Call = JoinHandle<Result<Resp, BackendError>>;

// === recording sink ===

#[derive(Debug, Default)]
struct Recorder {
    reports: Mutex<Vec<(Outcome, Origin)>>,
}

impl Recorder {
    fn outcomes(&self) -> Vec<Outcome> {
        self.reports
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.0.clone())
            .collect()
    }

    fn origins(&self) -> Vec<Origin> {
        self.reports.lock().unwrap().iter().map(|r| r.1).collect()
    }
}

impl HealthSink for Recorder {
    fn strategy(&self) -> AuthStrategy {
        AuthStrategy::TokenExchange
    }

    fn report(&self, report: &HealthReport<'_>) {
        self.reports
            .lock()
            .unwrap()
            .push((report.outcome.clone(), report.origin));
    }
}

// === stacks ===

/// The recommended placement, `Retry -> HealthClassify -> mock`, with one call started.
fn call_through(
    policy: RetryPolicy,
    layer: HealthClassifyLayer<Arc<Recorder>>,
    request: Req,
) -> (Call, Handle) {
    let (mock, handle) = mock::pair::<Req, Resp>();
    let service = ServiceBuilder::new()
        .retry(policy)
        .layer(layer)
        .service(mock);
    (tokio::spawn(service.oneshot(request)), handle)
}

/// [`call_through`] with a fresh recorder, returned.
fn start(policy: RetryPolicy, request: Req) -> (Arc<Recorder>, Call, Handle) {
    let recorder = Arc::new(Recorder::default());
    let (call, handle) = call_through(policy, HealthClassifyLayer::new(recorder.clone()), request);
    (recorder, call, handle)
}

/// Exact timings: waits are the backoff bound, 100 ms then 200 ms, ...
fn exact() -> RetryPolicy {
    RetryPolicy::new().no_jitter()
}

fn request(method: Method) -> Req {
    Request::builder()
        .method(method)
        .uri("http://127.0.0.1:1/mcp")
        .body("{}")
        .unwrap()
}

fn get() -> Req {
    request(Method::GET)
}

fn post() -> Req {
    request(Method::POST)
}

fn resp(status: u16) -> Resp {
    Response::builder().status(status).body("").unwrap()
}

fn resp_retry_after(status: u16, after: &'static str) -> Resp {
    Response::builder()
        .status(status)
        .header(header::RETRY_AFTER, after)
        .body("")
        .unwrap()
}

/// An error chain link with a fixed message, as connector errors arrive.
#[derive(Debug)]
struct Link {
    message: &'static str,
    source: Option<BoxError>,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl Error for Link {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

type MakeError = fn() -> BoxError;

fn io(kind: io::ErrorKind) -> BoxError {
    io::Error::from(kind).into()
}

fn refused() -> BoxError {
    io(io::ErrorKind::ConnectionRefused)
}

/// hyper-util's resolver failure: an entry whose text is exactly `dns error`.
fn dns() -> BoxError {
    Box::new(Link {
        message: "dns error",
        source: Some(io(io::ErrorKind::Other)),
    })
}

/// hyper-util's connector timing out: `tcp connect error` over a timer.
fn connect_timeout() -> BoxError {
    Box::new(Link {
        message: "tcp connect error",
        source: Some(io(io::ErrorKind::TimedOut)),
    })
}

fn transport(kind: TransportKind) -> Outcome {
    Outcome::Transport(kind)
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

// === driving the mock ===

/// Longer than any wait in these tests. Paused time jumps to it at once when nothing
/// else can happen, so a missing attempt fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(3_600);

/// Waits for the next attempt and returns when it arrived and how to answer it.
async fn attempt(handle: &mut Handle) -> (Instant, mock::SendResponse<Resp>) {
    let next = tokio::time::timeout(PATIENCE, handle.next_request());
    let (_request, send) = next
        .await
        .expect("another attempt was expected")
        .expect("the service is gone");
    (Instant::now(), send)
}

/// Answers attempts in turn, returns when each one arrived.
async fn answer(handle: &mut Handle, replies: Vec<Result<Resp, BoxError>>) -> Vec<Instant> {
    let mut arrivals = Vec::new();
    for reply in replies {
        let (at, send) = attempt(handle).await;
        match reply {
            Ok(response) => send.send_response(response),
            Err(error) => send.send_error(error),
        }
        arrivals.push(at);
    }
    arrivals
}

/// The call's result, once it has finished without another attempt.
async fn finish<E>(call: JoinHandle<Result<Resp, E>>, handle: &mut Handle) -> Result<Resp, E> {
    tokio::select! {
        result = call => {
            // Every clone of the mock is gone with the call: no attempt is pending.
            assert!(handle.next_request().await.is_none(), "no attempt after the call");
            result.expect("the call task panicked")
        }
        Some(_) = handle.next_request() => panic!("an attempt too many"),
    }
}

fn gaps(arrivals: &[Instant]) -> Vec<Duration> {
    arrivals.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Paused time advances to the timer's deadline, rounded up to the timer wheel's 1 ms.
fn assert_about(got: Duration, want: Duration, what: &str) {
    assert!(
        got >= want && got <= want + Duration::from_millis(2),
        "{what}: waited {got:?}, expected {want:?}"
    );
}

// === connect failures: any method ===

#[tokio::test(start_paused = true)]
async fn connect_failures_are_retried_for_any_method() {
    let cases: Vec<(&str, MakeError, TransportKind)> = vec![
        ("refused", refused, TransportKind::ConnectionRefused),
        ("dns", dns, TransportKind::Dns),
        (
            "connect timeout",
            connect_timeout,
            TransportKind::ConnectTimeout,
        ),
    ];
    for (name, error, kind) in cases {
        for method in [Method::POST, Method::PATCH, Method::GET] {
            let (recorder, call, mut handle) = start(exact(), request(method.clone()));
            answer(&mut handle, vec![Err(error()), Ok(resp(200))]).await;
            let response = finish(call, &mut handle).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{name} {method}");
            assert_eq!(
                recorder.outcomes(),
                [transport(kind), Outcome::Success(StatusCode::OK)],
                "{name} {method}: retried once"
            );
        }
    }
}

// === failures after the request was sent: idempotent methods only ===

#[tokio::test(start_paused = true)]
async fn failures_after_sending_are_retried_for_idempotent_methods_only() {
    let cases: Vec<(&str, io::ErrorKind, TransportKind)> = vec![
        (
            "reset",
            io::ErrorKind::ConnectionReset,
            TransportKind::Reset,
        ),
        (
            "broken pipe",
            io::ErrorKind::BrokenPipe,
            TransportKind::Reset,
        ),
        (
            "closed",
            io::ErrorKind::UnexpectedEof,
            TransportKind::Closed,
        ),
        ("timeout", io::ErrorKind::TimedOut, TransportKind::Timeout),
    ];
    for (name, error, kind) in cases {
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            let (recorder, call, mut handle) = start(exact(), request(method.clone()));
            answer(&mut handle, vec![Err(io(error)), Ok(resp(200))]).await;
            assert!(finish(call, &mut handle).await.is_ok(), "{name} {method}");
            assert_eq!(recorder.outcomes().len(), 2, "{name} {method}: retried");
        }
        for method in [Method::POST, Method::PATCH] {
            let (recorder, call, mut handle) = start(exact(), request(method.clone()));
            answer(&mut handle, vec![Err(io(error))]).await;
            let err = finish(call, &mut handle).await.unwrap_err();
            assert_eq!(err.transport_kind(), Some(kind), "{name} {method}");
            assert_eq!(
                recorder.outcomes(),
                [transport(kind)],
                "{name} {method}: not retried"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn gateway_errors_are_retried_for_idempotent_methods_only() {
    for code in [502, 503, 504] {
        let (recorder, call, mut handle) = start(exact(), get());
        answer(&mut handle, vec![Ok(resp(code)), Ok(resp(200))]).await;
        let response = finish(call, &mut handle).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{code} on GET");
        assert_eq!(
            recorder.outcomes(),
            [
                Outcome::ServerError(status(code)),
                Outcome::Success(StatusCode::OK)
            ],
            "{code} on GET: retried"
        );

        let (recorder, call, mut handle) = start(exact(), post());
        answer(&mut handle, vec![Ok(resp(code))]).await;
        let response = finish(call, &mut handle).await.unwrap();
        assert_eq!(
            response.status(),
            code,
            "{code} on POST: returned as it came"
        );
        assert_eq!(recorder.outcomes().len(), 1, "{code} on POST: not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn other_server_errors_are_never_retried() {
    for code in [500, 501, 505, 507] {
        let (recorder, call, mut handle) = start(exact(), get());
        answer(&mut handle, vec![Ok(resp(code))]).await;
        let response = finish(call, &mut handle).await.unwrap();
        assert_eq!(response.status(), code);
        assert_eq!(recorder.outcomes().len(), 1, "{code}: not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn other_transport_failures_are_never_retried() {
    let cases: Vec<(&str, BoxError, TransportKind)> = vec![
        (
            "unreachable",
            io(io::ErrorKind::HostUnreachable),
            TransportKind::Unreachable,
        ),
        (
            "unknown",
            Box::new(Link {
                message: "something odd",
                source: None,
            }),
            TransportKind::Other,
        ),
    ];
    for (name, error, kind) in cases {
        let (recorder, call, mut handle) = start(exact(), get());
        answer(&mut handle, vec![Err(error)]).await;
        let err = finish(call, &mut handle).await.unwrap_err();
        assert_eq!(err.transport_kind(), Some(kind), "{name}");
        assert_eq!(recorder.outcomes().len(), 1, "{name}: not retried");
    }
}

// === Retry-After ===

#[tokio::test(start_paused = true)]
async fn throttled_retry_after_is_waited_for_before_the_retry() {
    let (recorder, call, mut handle) = start(exact(), get());
    let (first, send) = attempt(&mut handle).await;
    send.send_response(resp_retry_after(429, "2"));

    tokio::time::sleep(Duration::from_millis(1_999)).await;
    assert!(
        handle.poll_request().is_pending(),
        "no retry before Retry-After has passed"
    );

    let (second, send) = attempt(&mut handle).await;
    assert_about(second - first, Duration::from_secs(2), "Retry-After: 2");
    send.send_response(resp(200));
    assert!(finish(call, &mut handle).await.is_ok());
    assert_eq!(
        recorder.outcomes(),
        [
            Outcome::Throttled {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(Duration::from_secs(2)),
            },
            Outcome::Success(StatusCode::OK),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn service_unavailable_retry_after_is_waited_for_too() {
    let (_recorder, call, mut handle) = start(exact(), get());
    let arrivals = answer(
        &mut handle,
        vec![Ok(resp_retry_after(503, "3")), Ok(resp(200))],
    )
    .await;
    assert!(finish(call, &mut handle).await.is_ok());
    assert_about(
        gaps(&arrivals)[0],
        Duration::from_secs(3),
        "503 Retry-After: 3",
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_above_the_cap_gives_up_at_once_with_the_response() {
    let cases = [
        ("429 far above the default cap", 429, "600", exact()),
        ("503 far above the default cap", 503, "600", exact()),
        (
            "429 just above a configured cap",
            429,
            "2",
            exact().retry_after_cap(Duration::from_secs(1)),
        ),
    ];
    for (name, code, after, policy) in cases {
        let (recorder, call, mut handle) = start(policy, get());
        let start = Instant::now();
        answer(&mut handle, vec![Ok(resp_retry_after(code, after))]).await;
        let response = finish(call, &mut handle).await.unwrap();
        assert_eq!(response.status(), code, "{name}: the response is returned");
        assert_eq!(
            response.headers()[header::RETRY_AFTER],
            after,
            "{name}: with its Retry-After, for the caller"
        );
        assert_eq!(start.elapsed(), Duration::ZERO, "{name}: at once");
        assert_eq!(recorder.outcomes().len(), 1, "{name}: not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn throttled_without_retry_after_backs_off_for_idempotent_methods_only() {
    let (recorder, call, mut handle) = start(exact(), get());
    let arrivals = answer(&mut handle, vec![Ok(resp(429)), Ok(resp(200))]).await;
    assert!(finish(call, &mut handle).await.is_ok());
    assert_about(
        gaps(&arrivals)[0],
        Duration::from_millis(100),
        "first backoff",
    );
    assert_eq!(recorder.outcomes().len(), 2);

    // RFC 6585 does not say a 429 was rejected before processing: a POST is not repeated,
    // with or without Retry-After.
    for reply in [resp(429), resp_retry_after(429, "1")] {
        let (recorder, call, mut handle) = start(exact(), post());
        answer(&mut handle, vec![Ok(reply)]).await;
        let response = finish(call, &mut handle).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(recorder.outcomes().len(), 1, "429 on POST: not retried");
    }
}

// === never retried ===

#[tokio::test(start_paused = true)]
async fn auth_and_client_errors_are_never_retried() {
    for code in [401, 403, 407] {
        let (recorder, call, mut handle) = start(exact(), get());
        answer(&mut handle, vec![Ok(resp(code))]).await;
        let err = finish(call, &mut handle).await.unwrap_err();
        assert_eq!(err.auth().map(|a| a.status().as_u16()), Some(code));
        assert_eq!(recorder.outcomes().len(), 1, "{code}: not retried");

        // Pass-through mode returns the challenge as a response, with its outcome.
        let recorder = Arc::new(Recorder::default());
        let layer = HealthClassifyLayer::new(recorder.clone()).pass_through_auth();
        let (call, mut handle) = call_through(exact(), layer, get());
        answer(&mut handle, vec![Ok(resp(code))]).await;
        let response = finish(call, &mut handle).await.unwrap();
        assert_eq!(response.status(), code);
        assert!(matches!(
            response.extensions().get::<Outcome>(),
            Some(Outcome::Auth(_))
        ));
        assert_eq!(
            recorder.outcomes().len(),
            1,
            "{code} passed through: not retried"
        );
    }
    for code in [400, 404, 409, 410, 422] {
        let (recorder, call, mut handle) = start(exact(), get());
        answer(&mut handle, vec![Ok(resp(code))]).await;
        let response = finish(call, &mut handle).await.unwrap();
        assert_eq!(response.status(), code);
        assert_eq!(recorder.outcomes().len(), 1, "{code}: not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn successes_are_not_retried() {
    for code in [200, 204, 301, 304] {
        let (recorder, call, mut handle) = start(exact(), get());
        answer(&mut handle, vec![Ok(resp(code))]).await;
        let response = finish(call, &mut handle).await.unwrap();
        assert_eq!(response.status(), code);
        assert_eq!(recorder.outcomes().len(), 1, "{code}: not retried");
    }
}

// === bounds ===

#[tokio::test(start_paused = true)]
async fn attempts_are_bounded() {
    for (policy, attempts) in [
        (exact(), 3),
        (exact().max_attempts(5), 5),
        (exact().max_attempts(1), 1),
    ] {
        let (recorder, call, mut handle) = start(policy, post());
        answer(&mut handle, (0..attempts).map(|_| Err(refused())).collect()).await;
        // `finish` asserts that no further attempt comes.
        let err = finish(call, &mut handle).await.unwrap_err();
        assert_eq!(err.transport_kind(), Some(TransportKind::ConnectionRefused));
        assert_eq!(
            recorder.outcomes(),
            vec![transport(TransportKind::ConnectionRefused); attempts],
            "exactly {attempts} attempts"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_up_to_its_max() {
    let policy = exact()
        .max_attempts(5)
        .backoff(Duration::from_millis(100), Duration::from_millis(300));
    let (_recorder, call, mut handle) = start(policy, get());
    let arrivals = answer(&mut handle, (0..5).map(|_| Err(refused())).collect()).await;
    assert!(finish(call, &mut handle).await.is_err());
    let gaps = gaps(&arrivals);
    for (got, want) in gaps.iter().zip([100, 200, 300, 300]) {
        assert_about(*got, Duration::from_millis(want), "backoff");
    }
    assert!(
        gaps[1] > gaps[0],
        "the second retry waits longer than the first"
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_backoff_stays_within_its_bound() {
    for _ in 0..20 {
        let policy = RetryPolicy::new().max_attempts(4);
        let (_recorder, call, mut handle) = start(policy, get());
        let arrivals = answer(&mut handle, (0..4).map(|_| Err(refused())).collect()).await;
        assert!(finish(call, &mut handle).await.is_err());
        for (got, bound) in gaps(&arrivals).into_iter().zip([100, 200, 400]) {
            assert!(
                got <= Duration::from_millis(bound + 1),
                "{got:?} above {bound} ms"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_stops_retries() {
    // No reserve and no share of requests: nothing to withdraw, ever.
    let empty = Arc::new(TpsBudget::new(Duration::from_secs(1), 0, 0.0));
    let (recorder, call, mut handle) = start(exact().budget(empty), post());
    answer(&mut handle, vec![Err(refused())]).await;
    let err = finish(call, &mut handle).await.unwrap_err();
    assert_eq!(err.transport_kind(), Some(TransportKind::ConnectionRefused));
    assert_eq!(recorder.outcomes().len(), 1, "not retried");
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_policy_share_its_budget() {
    // A reserve of exactly one retry per second, shared by every clone.
    let policy = exact().budget(Arc::new(TpsBudget::new(Duration::from_secs(1), 1, 0.0)));
    let recorder = Arc::new(Recorder::default());
    let (mock, mut handle) = mock::pair::<Req, Resp>();
    let service = ServiceBuilder::new()
        .retry(policy)
        .layer(HealthClassifyLayer::new(recorder.clone()))
        .service(mock);

    let first = tokio::spawn(service.clone().oneshot(get()));
    answer(&mut handle, vec![Err(refused()), Ok(resp(200))]).await;
    assert!(
        first.await.unwrap().is_ok(),
        "the first request gets the retry"
    );

    let second = tokio::spawn(service.oneshot(get()));
    answer(&mut handle, vec![Err(refused())]).await;
    assert!(
        finish(second, &mut handle).await.is_err(),
        "the budget is spent"
    );
    assert_eq!(recorder.outcomes().len(), 3);
}

// === what each attempt carries ===

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_request_extensions() {
    let mut probe = get();
    probe.extensions_mut().insert(Probe);
    let (recorder, call, mut handle) = start(exact(), probe);
    answer(&mut handle, vec![Err(refused()), Ok(resp(200))]).await;
    assert!(finish(call, &mut handle).await.is_ok());
    assert_eq!(recorder.origins(), [Origin::Probe, Origin::Probe]);
}

// === placement ===

#[tokio::test(start_paused = true)]
async fn layer_inside_retry_reports_every_attempt() {
    let (recorder, call, mut handle) = start(exact(), post());
    answer(
        &mut handle,
        vec![Err(refused()), Err(refused()), Ok(resp(200))],
    )
    .await;
    assert!(finish(call, &mut handle).await.is_ok());
    assert_eq!(
        recorder.outcomes(),
        [
            transport(TransportKind::ConnectionRefused),
            transport(TransportKind::ConnectionRefused),
            Outcome::Success(StatusCode::OK),
        ],
        "3 attempts, 3 reports"
    );
}

/// `HealthClassify` over `Retry` over the mock: the policy sees the mock's `BoxError` and
/// classifies it itself (its `Policy<_, _, BoxError>` impl), and the layer sees only what
/// `Retry` finally returns.
#[tokio::test(start_paused = true)]
async fn layer_outside_retry_reports_only_the_final_result() {
    for (replies, last) in [
        (
            vec![Err(refused()), Err(refused()), Ok(resp(200))],
            Outcome::Success(StatusCode::OK),
        ),
        (
            vec![Err(refused()), Err(refused()), Err(refused())],
            transport(TransportKind::ConnectionRefused),
        ),
    ] {
        let recorder = Arc::new(Recorder::default());
        let (mock, mut handle) = mock::pair::<Req, Resp>();
        let service = HealthClassifyLayer::new(recorder.clone()).layer(Retry::new(exact(), mock));
        let call = tokio::spawn(service.oneshot(post()));
        answer(&mut handle, replies).await;
        let _ = finish(call, &mut handle).await;
        assert_eq!(recorder.outcomes(), [last], "3 attempts, 1 report");
    }
}

/// `Retry -> Timeout -> HealthClassify -> mock`: the policy sees `BoxError`s, either a
/// boxed `BackendError` or the outer timer's `Elapsed`.
#[tokio::test(start_paused = true)]
async fn boxed_errors_under_retry_are_recognised() {
    let recorder = Arc::new(Recorder::default());
    let (mock, mut handle) = mock::pair::<Req, Resp>();
    let service = ServiceBuilder::new()
        .retry(exact())
        .timeout(Duration::from_secs(1))
        .layer(HealthClassifyLayer::new(recorder.clone()))
        .service(mock);

    // A boxed `BackendError` keeps its outcome: refused, retried even for a POST.
    let call = tokio::spawn(service.clone().oneshot(post()));
    answer(&mut handle, vec![Err(refused()), Ok(resp(200))]).await;
    assert!(call.await.unwrap().is_ok());

    // The outer timer fires on a GET that never gets an answer: retried as a timeout.
    let call = tokio::spawn(service.oneshot(get()));
    let (first, unanswered) = attempt(&mut handle).await;
    let (second, send) = attempt(&mut handle).await;
    drop(unanswered);
    assert_about(
        second - first,
        Duration::from_millis(1_100),
        "timeout, then backoff",
    );
    send.send_response(resp(200));
    assert!(finish(call, &mut handle).await.is_ok());
    assert_eq!(
        recorder.outcomes(),
        [
            transport(TransportKind::ConnectionRefused),
            Outcome::Success(StatusCode::OK),
            // The layer's future was dropped by the outer timer.
            Outcome::Cancelled,
            Outcome::Success(StatusCode::OK),
        ]
    );
}
