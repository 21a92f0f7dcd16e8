//! `TraceLayer` with `NotHealthyAsFailures`: `on_failure` sees what this crate does not
//! judge Healthy (a refused connection, a 503, a challenge nobody expected) and not what
//! it does (a success, an expected challenge).

#![cfg(feature = "tower-http")]

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_health_classify::{
    AuthStrategy, BackendError, HealthClassifyLayer, HealthFailure, HealthRegistry, HealthStatus,
    NotHealthyAsFailures, Outcome, Probe, Reason, TransportKind,
};
use tower_http::trace::TraceLayer;

type Failures = Arc<Mutex<Vec<HealthFailure>>>;

/// `TraceLayer::new($make)` over `$inner`, with an `on_failure` that records every
/// failure class: `(service, failures)`.
macro_rules! traced {
    ($make:expr, $inner:expr) => {{
        let failures = Failures::default();
        let seen = failures.clone();
        let service = ServiceBuilder::new()
            .layer(TraceLayer::new($make).on_failure(
                move |class: HealthFailure, _latency: Duration, _span: &tracing::Span| {
                    seen.lock().unwrap().push(class);
                },
            ))
            .service($inner);
        (service, failures)
    }};
}

/// A probe request: its 401s are judged by the strategy alone (a caller's never count).
fn probe() -> Request<String> {
    let mut request = Request::new(String::new());
    request.extensions_mut().insert(Probe);
    request
}

fn responds(
    status: StatusCode,
    challenge: Option<&'static str>,
) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future = impl Send>
       + Clone {
    service_fn(move |_req: Request<String>| async move {
        let mut response = Response::builder().status(status);
        if let Some(challenge) = challenge {
            response = response.header("www-authenticate", challenge);
        }
        Ok::<_, Infallible>(response.body(String::new()).unwrap())
    })
}

fn refuses(
) -> impl Service<Request<String>, Response = Response<String>, Error = io::Error, Future = impl Send>
       + Clone {
    service_fn(|_req: Request<String>| async {
        Err::<Response<String>, _>(io::Error::from(io::ErrorKind::ConnectionRefused))
    })
}

const BEARER: &str =
    r#"Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource""#;

/// Each failure as its `Display`.
fn statuses(failures: &Failures) -> Vec<String> {
    failures
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.to_string())
        .collect()
}

/// Each failure's verdict.
fn verdicts(failures: &Failures) -> Vec<String> {
    failures
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.verdict.map(|v| v.to_string()).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_503_is_a_failure() {
    let make = NotHealthyAsFailures::with_strategy(AuthStrategy::UpstreamInject);
    let (service, failures) = traced!(make, responds(StatusCode::SERVICE_UNAVAILABLE, None));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].outcome,
        Outcome::ServerError(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(failures[0].status(), Some(HealthStatus::Unhealthy));
    assert_eq!(
        failures[0].to_string(),
        "server_error 503: unhealthy (server_error)"
    );
}

#[tokio::test]
async fn a_refused_connection_is_a_failure_named_connection_refused() {
    let make = NotHealthyAsFailures::with_strategy(AuthStrategy::UpstreamInject);
    let (service, failures) = traced!(make, refuses());
    let error = service
        .oneshot(Request::new(String::new()))
        .await
        .err()
        .expect("an error");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].outcome,
        Outcome::Transport(TransportKind::ConnectionRefused)
    );
    assert_eq!(
        failures[0].verdict.map(|v| v.reason),
        Some(Reason::Transport(TransportKind::ConnectionRefused))
    );
    assert!(failures[0].to_string().contains("connection_refused"));
}

#[tokio::test]
async fn a_refused_connection_through_health_classify_keeps_its_type() {
    let registry = HealthRegistry::default();
    let handle = registry.register("mcp", AuthStrategy::UpstreamInject);
    let inner = ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(handle.clone()))
        .service(refuses());
    let (service, failures) = traced!(NotHealthyAsFailures::new(handle), inner);
    let error: BackendError = service
        .oneshot(Request::new(String::new()))
        .await
        .err()
        .expect("an error");
    assert_eq!(
        error.transport_kind(),
        Some(TransportKind::ConnectionRefused)
    );
    assert_eq!(
        statuses(&failures),
        ["transport connection_refused: unhealthy (connection_refused)"]
    );
}

#[tokio::test]
async fn an_expected_challenge_is_not_a_failure() {
    let make = NotHealthyAsFailures::with_strategy(AuthStrategy::UpstreamInject);
    let (service, failures) = traced!(make, responds(StatusCode::UNAUTHORIZED, Some(BEARER)));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The body is watched for a failure midway: read it to its end.
    response.into_body().collect().await.unwrap();
    assert_eq!(statuses(&failures), Vec::<String>::new());
}

#[tokio::test]
async fn a_success_is_not_a_failure() {
    let make = NotHealthyAsFailures::with_strategy(AuthStrategy::Unauthenticated);
    let (service, failures) = traced!(make, responds(StatusCode::OK, None));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(statuses(&failures), Vec::<String>::new());
}

#[tokio::test]
async fn the_same_challenge_without_a_strategy_is_a_failure() {
    let make = NotHealthyAsFailures::with_strategy(AuthStrategy::Unauthenticated);
    let (service, failures) = traced!(make, responds(StatusCode::UNAUTHORIZED, Some(BEARER)));
    service.oneshot(probe()).await.unwrap();
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].verdict.map(|v| (v.status, v.reason)),
        Some((HealthStatus::Unauthenticated, Reason::NoAuthConfigured))
    );
    let Outcome::Auth(auth) = &failures[0].outcome else {
        panic!("a 401 is an auth outcome");
    };
    assert_eq!(
        auth.resource_metadata(),
        Some("https://mcp.example/.well-known/oauth-protected-resource")
    );
}

/// One row per line of the table in `NotHealthyAsFailures`'s docs that a response can
/// reach: the strategy, whether the request carried credentials or was a probe, what
/// came back, and whether `on_failure` must see it.
#[tokio::test]
async fn failures_follow_the_verdict_table() {
    struct Row {
        name: &'static str,
        strategy: AuthStrategy,
        authorization: bool,
        probe: bool,
        status: StatusCode,
        failure: Option<&'static str>,
    }
    let row = |name, strategy, authorization, probe, status: u16, failure| Row {
        name,
        strategy,
        authorization,
        probe,
        status: StatusCode::from_u16(status).unwrap(),
        failure,
    };
    let rows = [
        row(
            "a 404 on traffic is the caller's mistake",
            AuthStrategy::UpstreamInject,
            false,
            false,
            404,
            None,
        ),
        row(
            "a 404 on a probe is unexpected",
            AuthStrategy::UpstreamInject,
            false,
            true,
            404,
            Some("unexpected_status"),
        ),
        row(
            "a 429 is throttled",
            AuthStrategy::UpstreamInject,
            false,
            false,
            429,
            Some("throttled"),
        ),
        row(
            "a 407 blames the proxy",
            AuthStrategy::UpstreamInject,
            false,
            false,
            407,
            Some("proxy_auth_required"),
        ),
        row(
            "a user's rejected token is the user's problem",
            AuthStrategy::UpstreamInject,
            true,
            false,
            401,
            None,
        ),
        row(
            "the gateway's rejected key is a failure, on a probe",
            AuthStrategy::HeaderInjection,
            true,
            true,
            401,
            Some("credentials_rejected"),
        ),
        row(
            "a caller's request the backend denies is not (request_denied)",
            AuthStrategy::HeaderInjection,
            true,
            false,
            401,
            None,
        ),
        row(
            "a credential-less 403 with a strategy is expected",
            AuthStrategy::TokenExchange,
            false,
            true,
            403,
            None,
        ),
        row(
            "a redirect is a success",
            AuthStrategy::Unauthenticated,
            false,
            true,
            302,
            None,
        ),
    ];
    for row in rows {
        let make = NotHealthyAsFailures::with_strategy(row.strategy.clone());
        let (service, failures) = traced!(make, responds(row.status, Some(BEARER)));
        let mut request = Request::new(String::new());
        if row.authorization {
            request
                .headers_mut()
                .insert("authorization", "Bearer t".parse().unwrap());
        }
        if row.probe {
            request.extensions_mut().insert(Probe);
        }
        let response = service.oneshot(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        let reasons: Vec<&str> = failures
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.verdict.unwrap().reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            row.failure.into_iter().collect::<Vec<_>>(),
            "{}",
            row.name
        );
    }
}

#[tokio::test]
async fn the_strategy_is_read_live_from_the_registry() {
    let registry = HealthRegistry::default();
    let handle = registry.register("mcp", AuthStrategy::UpstreamInject);
    let (service, failures) = traced!(
        NotHealthyAsFailures::new(handle),
        responds(StatusCode::UNAUTHORIZED, Some(BEARER))
    );
    service.clone().oneshot(probe()).await.unwrap();
    assert!(registry.set_strategy("mcp", AuthStrategy::Unauthenticated));
    service.oneshot(probe()).await.unwrap();
    assert_eq!(
        verdicts(&failures),
        ["unauthenticated (no_auth_configured)"]
    );
}

#[tokio::test]
async fn a_custom_credential_header_counts_as_credentials() {
    let make = NotHealthyAsFailures::with_strategy(AuthStrategy::HeaderInjection)
        .credential_header(http::HeaderName::from_static("x-api-key"));
    let (service, failures) = traced!(make, responds(StatusCode::UNAUTHORIZED, None));
    let request = Request::builder()
        .header("x-api-key", "sekrit")
        .extension(Probe)
        .body(String::new())
        .unwrap();
    service.oneshot(request).await.unwrap();
    assert_eq!(
        verdicts(&failures),
        ["unauthenticated (credentials_rejected)"]
    );
    assert!(!statuses(&failures)[0].contains("sekrit"));
}

/// Errors are always failures to tower-http: an expected challenge that a typed-mode
/// `HealthClassify` turned into `BackendError::Auth` reaches `on_failure`, with a Healthy
/// verdict; in pass-through mode it stays a response and is no failure.
#[tokio::test]
async fn an_expected_challenge_as_an_error_is_a_failure_with_a_healthy_verdict() {
    let make = NotHealthyAsFailures::with_strategy(AuthStrategy::UpstreamInject);
    let typed = ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(()))
        .service(responds(StatusCode::UNAUTHORIZED, Some(BEARER)));
    let (service, failures) = traced!(make.clone(), typed);
    assert!(service
        .oneshot(Request::new(String::new()))
        .await
        .err()
        .expect("an error")
        .is_auth());
    assert_eq!(
        failures.lock().unwrap()[0].verdict.map(|v| v.reason),
        Some(Reason::ExpectedChallenge)
    );

    let pass_through = ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(()).pass_through_auth())
        .service(responds(StatusCode::UNAUTHORIZED, Some(BEARER)));
    let (service, failures) = traced!(make, pass_through);
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(statuses(&failures), Vec::<String>::new());
}

/// A body that breaks after a good response still reaches `on_failure`, classified by
/// its error type.
#[tokio::test]
async fn a_body_that_fails_midway_is_a_failure() {
    let make = NotHealthyAsFailures::with_strategy(AuthStrategy::Unauthenticated);
    let inner = service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(BreaksMidway { sent: false }))
    });
    let (service, failures) = traced!(make, inner);
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert!(
        failures.lock().unwrap().is_empty(),
        "not before the body fails"
    );
    assert!(response.into_body().collect().await.is_err());
    assert_eq!(statuses(&failures), ["transport reset: unhealthy (reset)"]);
}

/// One chunk of data, then a connection reset.
struct BreaksMidway {
    sent: bool,
}

impl http_body::Body for BreaksMidway {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.sent {
            return Poll::Ready(Some(Err(io::ErrorKind::ConnectionReset.into())));
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"partial")))))
    }
}
