//! A real `hyper_util` legacy client wrapped in `HealthClassifyLayer`, against loopback
//! listeners this test starts: real statuses and challenge headers, and the transport
//! faults that can be made locally (refused, closed, reset, garbage, silence).
//!
//! Nothing leaves loopback: every address is `127.0.0.1`, and the URLs inside challenge
//! headers are only text, never resolved.

#![cfg(feature = "hyper-util")]

use std::convert::Infallible;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::{ServiceBuilder, ServiceExt};
use tower_health_classify::{
    AuthError, AuthStrategy, BackendError, BearerError, Credentials, HealthClassifyLayer,
    HealthStatus, Origin, Outcome, Probe, Reason, TransportKind,
};

#[path = "support/recorder.rs"]
mod recorder;

use recorder::Recorder;

#[path = "support/sockets.rs"]
mod sockets;

use sockets::{hold_until_peer_closes, read_request_head, reset};

const RESOURCE_METADATA: &str = "https://auth.example/.well-known/oauth-protected-resource";
const UNAUTHORIZED_CHALLENGE: &str = r#"Bearer resource_metadata="https://auth.example/.well-known/oauth-protected-resource", scope="mcp:read mcp:write""#;
const INSUFFICIENT_SCOPE_CHALLENGE: &str = r#"Bearer error="insufficient_scope", scope="admin""#;
const PROXY_CHALLENGE: &str = r#"Basic realm="proxy""#;

/// The one real-time wait of this file: a listener that never answers.
const SILENT_TIMEOUT: Duration = Duration::from_millis(200);
/// Only fires if a case hangs, so that a broken case fails instead of stalling the run.
const HANG_GUARD: Duration = Duration::from_secs(10);

fn x_api_key() -> HeaderName {
    HeaderName::from_static("x-api-key")
}

// === loopback backends ===

/// An HTTP/1 server that answers every request with `status` and `headers`.
async fn http_backend(status: u16, headers: &'static [(&'static str, &'static str)]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| async move {
                    let mut response = Response::builder().status(status);
                    for (name, value) in headers {
                        response = response.header(*name, *value);
                    }
                    Ok::<_, Infallible>(response.body(Full::new(Bytes::new())).unwrap())
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A port nothing listens on: bound, read, released.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Reads the whole request, then closes cleanly (FIN) without a byte of response.
    CloseAfterRequest,
    /// Reads the whole request, then resets the connection (SO_LINGER 0: RST).
    ResetAfterRequest,
    /// Reads the whole request and answers with bytes that are not HTTP.
    Garbage,
    /// Reads the whole request and never answers; holds the socket until the client goes.
    Silent,
}

/// A raw TCP server that misbehaves with `fault` on every connection.
async fn faulty_backend(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(misbehave(stream, fault));
        }
    });
    addr
}

async fn misbehave(mut stream: TcpStream, fault: Fault) {
    // The request is read in full first: closing a socket with unread bytes makes Linux
    // send RST instead of FIN, which would turn "closed" into "reset" at random.
    read_request_head(&mut stream).await;
    match fault {
        Fault::CloseAfterRequest => drop(stream),
        Fault::ResetAfterRequest => reset(stream),
        Fault::Garbage => {
            stream.write_all(b"this is not http\r\n\r\n").await.unwrap();
            hold_until_peer_closes(&mut stream).await;
        }
        Fault::Silent => hold_until_peer_closes(&mut stream).await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Ok,
    NotFound,
    Unauthorized,
    InsufficientScope,
    ProxyAuth,
    Throttled,
    Unavailable,
    ClosedPort,
    CloseAfterRequest,
    ResetAfterRequest,
    Garbage,
    Silent,
}

impl Backend {
    async fn start(self) -> SocketAddr {
        match self {
            Backend::Ok => http_backend(200, &[]).await,
            Backend::NotFound => http_backend(404, &[]).await,
            Backend::Unauthorized => {
                http_backend(401, &[("www-authenticate", UNAUTHORIZED_CHALLENGE)]).await
            }
            Backend::InsufficientScope => {
                http_backend(403, &[("www-authenticate", INSUFFICIENT_SCOPE_CHALLENGE)]).await
            }
            Backend::ProxyAuth => {
                http_backend(407, &[("proxy-authenticate", PROXY_CHALLENGE)]).await
            }
            Backend::Throttled => http_backend(429, &[("retry-after", "30")]).await,
            Backend::Unavailable => http_backend(503, &[]).await,
            Backend::ClosedPort => closed_port(),
            Backend::CloseAfterRequest => faulty_backend(Fault::CloseAfterRequest).await,
            Backend::ResetAfterRequest => faulty_backend(Fault::ResetAfterRequest).await,
            Backend::Garbage => faulty_backend(Fault::Garbage).await,
            Backend::Silent => faulty_backend(Fault::Silent).await,
        }
    }
}

// === the case table ===

/// What the request carries, and what the layer is told counts as credentials.
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    authorization: bool,
    api_key: bool,
    credentials_extension: bool,
    probe: bool,
    /// Configure the layer with `.credential_header(x-api-key)`.
    api_key_configured: bool,
}

const NOTHING: Sent = Sent {
    authorization: false,
    api_key: false,
    credentials_extension: false,
    probe: false,
    api_key_configured: false,
};
const BEARER: Sent = Sent {
    authorization: true,
    ..NOTHING
};
const PROBE: Sent = Sent {
    probe: true,
    ..NOTHING
};

/// What the challenge of an auth answer must read as.
#[derive(Debug, Clone)]
struct Challenged {
    status: StatusCode,
    header: HeaderName,
    value: &'static str,
    scheme: &'static str,
    scope: Option<&'static str>,
    resource_metadata: Option<&'static str>,
    realm: Option<&'static str>,
    bearer_error: Option<BearerError>,
}

#[derive(Debug, Clone)]
enum Expect {
    /// `Ok(response)` in both modes; the outcome in its extensions unless a plain success.
    Response(Outcome),
    /// `Err(BackendError::Auth)` in typed mode, `Ok(response)` untouched in pass-through.
    Auth(Challenged),
    /// The same `Err` in both modes.
    Transport(TransportKind),
}

#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    backend: Backend,
    strategy: AuthStrategy,
    sent: Sent,
    expect: Expect,
    verdict: Option<(HealthStatus, Reason)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Typed,
    PassThrough,
}

fn unauthorized() -> Expect {
    Expect::Auth(Challenged {
        status: StatusCode::UNAUTHORIZED,
        header: header::WWW_AUTHENTICATE,
        value: UNAUTHORIZED_CHALLENGE,
        scheme: "Bearer",
        scope: Some("mcp:read mcp:write"),
        resource_metadata: Some(RESOURCE_METADATA),
        realm: None,
        bearer_error: None,
    })
}

fn insufficient_scope() -> Expect {
    Expect::Auth(Challenged {
        status: StatusCode::FORBIDDEN,
        header: header::WWW_AUTHENTICATE,
        value: INSUFFICIENT_SCOPE_CHALLENGE,
        scheme: "Bearer",
        scope: Some("admin"),
        resource_metadata: None,
        realm: None,
        bearer_error: Some(BearerError::InsufficientScope),
    })
}

fn proxy_auth() -> Expect {
    Expect::Auth(Challenged {
        status: StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        header: header::PROXY_AUTHENTICATE,
        value: PROXY_CHALLENGE,
        scheme: "Basic",
        scope: None,
        resource_metadata: None,
        realm: Some("proxy"),
        bearer_error: None,
    })
}

// === running a case ===

fn request(addr: SocketAddr, sent: Sent) -> Request<Empty<Bytes>> {
    let mut builder = Request::get(format!("http://{addr}/mcp"));
    if sent.authorization {
        builder = builder.header(header::AUTHORIZATION, "Bearer secret");
    }
    if sent.api_key {
        builder = builder.header(x_api_key(), "secret-key");
    }
    let mut request = builder.body(Empty::new()).unwrap();
    if sent.credentials_extension {
        request.extensions_mut().insert(Credentials::Sent);
    }
    if sent.probe {
        request.extensions_mut().insert(Probe);
    }
    request
}

async fn exchange(
    case: &Case,
    mode: Mode,
    addr: SocketAddr,
    recorder: Arc<Recorder>,
) -> Result<Response<Incoming>, BackendError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut layer = HealthClassifyLayer::new(recorder);
    if case.sent.api_key_configured {
        layer = layer.credential_header(x_api_key());
    }
    if mode == Mode::PassThrough {
        layer = layer.pass_through_auth();
    }
    let request = request(addr, case.sent);
    let exchange = async {
        if case.backend == Backend::Silent {
            // The timeout sits inside the health layer, as in the recommended stack.
            ServiceBuilder::new()
                .layer(layer)
                .timeout(SILENT_TIMEOUT)
                .service(client)
                .oneshot(request)
                .await
        } else {
            ServiceBuilder::new()
                .layer(layer)
                .service(client)
                .oneshot(request)
                .await
        }
    };
    tokio::time::timeout(HANG_GUARD, exchange)
        .await
        .unwrap_or_else(|_| panic!("{} ({mode:?}): no answer within {HANG_GUARD:?}", case.name))
}

fn check_challenge(what: &str, auth: &AuthError, want: &Challenged, credentials_sent: bool) {
    assert_eq!(auth.status(), want.status, "{what}: status");
    let variant_ok = match want.status.as_u16() {
        401 => matches!(auth, AuthError::Unauthorized { .. }),
        403 => matches!(auth, AuthError::Forbidden { .. }),
        407 => matches!(auth, AuthError::ProxyAuthenticationRequired { .. }),
        _ => false,
    };
    assert!(
        variant_ok,
        "{what}: auth variant for {}: {auth:?}",
        want.status
    );
    assert_eq!(auth.scheme(), Some(want.scheme), "{what}: scheme");
    assert_eq!(auth.scope(), want.scope, "{what}: scope");
    assert_eq!(
        auth.resource_metadata(),
        want.resource_metadata,
        "{what}: resource_metadata"
    );
    assert_eq!(auth.realm(), want.realm, "{what}: realm");
    assert_eq!(
        auth.bearer_error(),
        want.bearer_error,
        "{what}: bearer_error"
    );
    assert_eq!(
        auth.credentials_sent(),
        credentials_sent,
        "{what}: credentials_sent"
    );
}

async fn run_case(case: Case, mode: Mode, addr: SocketAddr) {
    let what = format!("{} ({mode:?})", case.name);
    let recorder = Recorder::new(case.strategy.clone());
    let result = exchange(&case, mode, addr, recorder.clone()).await;

    let reports = recorder.reports();
    assert_eq!(
        reports.len(),
        1,
        "{what}: exactly one report, got {reports:?}"
    );
    let (outcome, verdict, credentials, origin) = reports.into_iter().next().unwrap();
    let got = describe(&result);

    let sent = case.sent;
    let credentials_counted = sent.authorization
        || sent.credentials_extension
        || (sent.api_key && sent.api_key_configured);
    let want_credentials = if credentials_counted {
        Credentials::Sent
    } else {
        Credentials::NotSent
    };
    let want_origin = if sent.probe {
        Origin::Probe
    } else {
        Origin::Traffic
    };
    assert_eq!(
        credentials, want_credentials,
        "{what}: reported credentials"
    );
    assert_eq!(origin, want_origin, "{what}: reported origin");
    // The table says what a probe gets. A caller's 401 or 403 that a probe would be
    // judged Bad for is never held against the backend (DESIGN §9.3).
    let caller_denied = !sent.probe
        && matches!(&outcome, Outcome::Auth(auth) if auth.status() != StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    let want_verdict = match case.verdict {
        Some((status, _)) if status.is_bad() && caller_denied => {
            Some((HealthStatus::Healthy, Reason::RequestDenied))
        }
        verdict => verdict,
    };
    assert_eq!(
        verdict.map(|v| (v.status, v.reason)),
        want_verdict,
        "{what}: verdict (outcome {outcome:?}, got {got})"
    );

    match (&case.expect, mode, result) {
        (Expect::Response(want), _, Ok(response)) => {
            assert_eq!(&outcome, want, "{what}: reported outcome");
            assert_eq!(
                Some(response.status()),
                want.status(),
                "{what}: status passed through"
            );
            let in_extensions = response.extensions().get::<Outcome>();
            if want.is_success() {
                assert_eq!(
                    in_extensions, None,
                    "{what}: a plain success is not inserted"
                );
            } else {
                assert_eq!(in_extensions, Some(want), "{what}: outcome in extensions");
            }
        }
        (Expect::Auth(want), Mode::Typed, Err(err)) => {
            let Outcome::Auth(reported) = &outcome else {
                panic!("{what}: reported {outcome:?}, want an auth outcome");
            };
            check_challenge(&what, reported, want, credentials_counted);
            assert!(err.is_auth(), "{what}: {err:?}");
            let BackendError::Auth(auth) = &err else {
                panic!("{what}: want BackendError::Auth, got {err:?}");
            };
            assert_eq!(
                auth, reported,
                "{what}: the error is the reported auth error"
            );
            assert_eq!(err.outcome(), outcome, "{what}: err.outcome()");
            assert!(err.transport_kind().is_none(), "{what}: no transport kind");
        }
        (Expect::Auth(want), Mode::PassThrough, Ok(response)) => {
            let Outcome::Auth(reported) = &outcome else {
                panic!("{what}: reported {outcome:?}, want an auth outcome");
            };
            check_challenge(&what, reported, want, credentials_counted);
            assert_eq!(
                response.status(),
                want.status,
                "{what}: status passed through"
            );
            assert_eq!(
                response
                    .headers()
                    .get(&want.header)
                    .map(|v| v.to_str().unwrap()),
                Some(want.value),
                "{what}: challenge header passed through"
            );
            assert_eq!(
                response.extensions().get::<Outcome>(),
                Some(&outcome),
                "{what}: outcome in extensions"
            );
        }
        (Expect::Transport(kind), _, Err(err)) => {
            assert_eq!(
                outcome,
                Outcome::Transport(*kind),
                "{what}: reported outcome (got {got})"
            );
            assert_eq!(err.transport_kind(), Some(*kind), "{what}: {err:?}");
            assert_eq!(err.outcome(), outcome, "{what}: err.outcome()");
            assert!(err.is_transport(), "{what}: is_transport");
            let source = err.source().expect("the original error is kept as source");
            if *kind == TransportKind::Timeout {
                assert!(
                    matches!(err, BackendError::Timeout { .. }) && err.is_timeout(),
                    "{what}: want BackendError::Timeout, got {err:?}"
                );
                assert!(
                    source.is::<tower::timeout::error::Elapsed>(),
                    "{what}: source is the timer's Elapsed: {source:?}"
                );
            } else {
                assert!(
                    matches!(&err, BackendError::Transport { kind: k, .. } if k == kind),
                    "{what}: want BackendError::Transport {{ {kind:?} }}, got {err:?}"
                );
                assert!(!err.is_timeout(), "{what}: not a timeout");
                assert!(
                    source.is::<hyper_util::client::legacy::Error>(),
                    "{what}: source is the client's own error: {source:?}"
                );
            }
        }
        (_, _, Ok(response)) => panic!(
            "{what}: got a {} response, reported {outcome:?}",
            response.status()
        ),
        (_, _, Err(err)) => panic!("{what}: got {err:?}, reported {outcome:?}"),
    }
}

/// The status of a response, or an error with its whole source chain.
fn describe(result: &Result<Response<Incoming>, BackendError>) -> String {
    let err = match result {
        Ok(response) => return format!("a {} response", response.status()),
        Err(err) => err,
    };
    let mut chain = format!("{err:?}");
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(&format!(" <- {cause:?}"));
        source = cause.source();
    }
    chain
}

/// Runs every case in both modes, each on its own task so that one failing case does not
/// hide the others; fails listing every failed case.
async fn run(cases: Vec<Case>) {
    let mut addrs = Vec::<(Backend, SocketAddr)>::new();
    let mut tasks = Vec::new();
    for case in cases {
        let addr = match addrs.iter().find(|(b, _)| *b == case.backend) {
            Some((_, addr)) => *addr,
            None => {
                let addr = case.backend.start().await;
                addrs.push((case.backend, addr));
                addr
            }
        };
        for mode in [Mode::Typed, Mode::PassThrough] {
            let name = format!("{} ({mode:?})", case.name);
            tasks.push((name, tokio::spawn(run_case(case.clone(), mode, addr))));
        }
    }
    let mut failed = Vec::new();
    for (name, task) in tasks {
        if task.await.is_err() {
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "failed cases:\n  {}",
        failed.join("\n  ")
    );
}

// === tests ===

#[tokio::test]
async fn responses_are_classified_and_returned_by_mode() {
    use HealthStatus::{Degraded, Healthy, Unhealthy};
    run(vec![
        Case {
            name: "200 is a success, returned as is, nothing in extensions",
            backend: Backend::Ok,
            strategy: AuthStrategy::UpstreamInject,
            sent: NOTHING,
            expect: Expect::Response(Outcome::Success(StatusCode::OK)),
            verdict: Some((Healthy, Reason::Ok)),
        },
        Case {
            name: "200 to a probe is healthy and reported as a probe",
            backend: Backend::Ok,
            strategy: AuthStrategy::Unauthenticated,
            sent: PROBE,
            expect: Expect::Response(Outcome::Success(StatusCode::OK)),
            verdict: Some((Healthy, Reason::Ok)),
        },
        Case {
            name: "401 carries resource_metadata and scope from the Bearer challenge",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::UpstreamInject,
            sent: NOTHING,
            expect: unauthorized(),
            verdict: Some((Healthy, Reason::ExpectedChallenge)),
        },
        Case {
            name: "403 carries bearer error insufficient_scope",
            backend: Backend::InsufficientScope,
            strategy: AuthStrategy::UpstreamInject,
            sent: NOTHING,
            expect: insufficient_scope(),
            verdict: Some((Healthy, Reason::ExpectedChallenge)),
        },
        Case {
            name: "407 reads Proxy-Authenticate and blames the proxy",
            backend: Backend::ProxyAuth,
            strategy: AuthStrategy::TokenExchange,
            sent: BEARER,
            expect: proxy_auth(),
            verdict: Some((Unhealthy, Reason::ProxyAuthRequired)),
        },
        Case {
            name: "429 with Retry-After 30 is throttled for 30 s, returned with the outcome",
            backend: Backend::Throttled,
            strategy: AuthStrategy::HeaderInjection,
            sent: NOTHING,
            expect: Expect::Response(Outcome::Throttled {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(Duration::from_secs(30)),
            }),
            verdict: Some((Degraded, Reason::Throttled)),
        },
        Case {
            name: "503 is a server error, returned with the outcome",
            backend: Backend::Unavailable,
            strategy: AuthStrategy::HeaderInjection,
            sent: NOTHING,
            expect: Expect::Response(Outcome::ServerError(StatusCode::SERVICE_UNAVAILABLE)),
            verdict: Some((Unhealthy, Reason::ServerError)),
        },
        Case {
            name: "404 to traffic is the caller's mistake",
            backend: Backend::NotFound,
            strategy: AuthStrategy::Unauthenticated,
            sent: NOTHING,
            expect: Expect::Response(Outcome::ClientError(StatusCode::NOT_FOUND)),
            verdict: Some((Healthy, Reason::Ok)),
        },
        Case {
            name: "404 to a probe is an unexpected status",
            backend: Backend::NotFound,
            strategy: AuthStrategy::Unauthenticated,
            sent: PROBE,
            expect: Expect::Response(Outcome::ClientError(StatusCode::NOT_FOUND)),
            verdict: Some((Unhealthy, Reason::UnexpectedStatus)),
        },
    ])
    .await;
}

#[tokio::test]
async fn auth_verdicts_follow_strategy_and_credentials() {
    use HealthStatus::{Healthy, Unauthenticated};
    run(vec![
        Case {
            name: "401 without credentials under upstream_inject is an expected challenge",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::UpstreamInject,
            sent: NOTHING,
            expect: unauthorized(),
            verdict: Some((Healthy, Reason::ExpectedChallenge)),
        },
        Case {
            name: "401 without credentials under token_exchange is an expected challenge",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::TokenExchange,
            sent: NOTHING,
            expect: unauthorized(),
            verdict: Some((Healthy, Reason::ExpectedChallenge)),
        },
        Case {
            name: "401 under unauthenticated means no auth is configured",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::Unauthenticated,
            sent: NOTHING,
            expect: unauthorized(),
            verdict: Some((Unauthenticated, Reason::NoAuthConfigured)),
        },
        Case {
            name: "401 to the gateway's bearer under token_exchange rejects its credentials",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::TokenExchange,
            sent: BEARER,
            expect: unauthorized(),
            verdict: Some((Unauthenticated, Reason::CredentialsRejected)),
        },
        Case {
            name: "401 to a user's bearer under upstream_inject is the user's problem",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::UpstreamInject,
            sent: BEARER,
            expect: unauthorized(),
            verdict: Some((Healthy, Reason::UserCredentialsRejected)),
        },
        Case {
            name: "403 insufficient_scope to gateway credentials under header_injection",
            backend: Backend::InsufficientScope,
            strategy: AuthStrategy::HeaderInjection,
            sent: BEARER,
            expect: insufficient_scope(),
            verdict: Some((Unauthenticated, Reason::InsufficientScope)),
        },
        Case {
            name: "403 insufficient_scope to user credentials under upstream_inject",
            backend: Backend::InsufficientScope,
            strategy: AuthStrategy::UpstreamInject,
            sent: BEARER,
            expect: insufficient_scope(),
            verdict: Some((Healthy, Reason::UserCredentialsRejected)),
        },
        Case {
            name: "a configured x-api-key header counts as credentials",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::HeaderInjection,
            sent: Sent {
                api_key: true,
                api_key_configured: true,
                ..NOTHING
            },
            expect: unauthorized(),
            verdict: Some((Unauthenticated, Reason::CredentialsRejected)),
        },
        Case {
            name: "an x-api-key header the layer was not told about does not count",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::HeaderInjection,
            sent: Sent {
                api_key: true,
                ..NOTHING
            },
            expect: unauthorized(),
            verdict: Some((Healthy, Reason::ExpectedChallenge)),
        },
        Case {
            name: "a Credentials::Sent request extension counts as credentials",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::TokenExchange,
            sent: Sent {
                credentials_extension: true,
                ..NOTHING
            },
            expect: unauthorized(),
            verdict: Some((Unauthenticated, Reason::CredentialsRejected)),
        },
        Case {
            name: "a credential-less probe of an OAuth backend is healthy",
            backend: Backend::Unauthorized,
            strategy: AuthStrategy::UpstreamInject,
            sent: PROBE,
            expect: unauthorized(),
            verdict: Some((Healthy, Reason::ExpectedChallenge)),
        },
    ])
    .await;
}

#[tokio::test]
async fn transport_faults_on_loopback_are_typed() {
    use HealthStatus::Unhealthy;
    let transport = |kind| Some((Unhealthy, Reason::Transport(kind)));
    run(vec![
        Case {
            name: "a closed port is connection refused",
            backend: Backend::ClosedPort,
            strategy: AuthStrategy::UpstreamInject,
            sent: NOTHING,
            expect: Expect::Transport(TransportKind::ConnectionRefused),
            verdict: transport(TransportKind::ConnectionRefused),
        },
        Case {
            name: "a refused probe is connection refused, reported as a probe",
            backend: Backend::ClosedPort,
            strategy: AuthStrategy::TokenExchange,
            sent: PROBE,
            expect: Expect::Transport(TransportKind::ConnectionRefused),
            verdict: transport(TransportKind::ConnectionRefused),
        },
        Case {
            name: "a peer that reads the request and closes is closed",
            backend: Backend::CloseAfterRequest,
            strategy: AuthStrategy::UpstreamInject,
            sent: NOTHING,
            expect: Expect::Transport(TransportKind::Closed),
            verdict: transport(TransportKind::Closed),
        },
        Case {
            name: "a peer that reads the request and lingers 0 is reset",
            backend: Backend::ResetAfterRequest,
            strategy: AuthStrategy::UpstreamInject,
            sent: NOTHING,
            expect: Expect::Transport(TransportKind::Reset),
            verdict: transport(TransportKind::Reset),
        },
        Case {
            name: "a reply that is not HTTP is a protocol error",
            backend: Backend::Garbage,
            strategy: AuthStrategy::UpstreamInject,
            sent: NOTHING,
            expect: Expect::Transport(TransportKind::Protocol),
            verdict: transport(TransportKind::Protocol),
        },
        Case {
            name: "a peer that never answers hits the inner timeout",
            backend: Backend::Silent,
            strategy: AuthStrategy::UpstreamInject,
            sent: BEARER,
            expect: Expect::Transport(TransportKind::Timeout),
            verdict: transport(TransportKind::Timeout),
        },
    ])
    .await;
}
