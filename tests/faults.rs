//! Faults beyond the core matrix of `tests/real_client.rs`: a real `hyper_util` legacy
//! client wrapped in `HealthClassifyLayer`, against loopback servers that misbehave in
//! ways a backend can: die mid-body, trickle their headers, flood challenges, send
//! non-UTF-8 or obs-folded header values, challenge without a challenge, or speak
//! HTTP/1 to an HTTP/2 client. Each gets a defined outcome, pinned here.
//!
//! Nothing leaves loopback: every address is `127.0.0.1`.

#![cfg(feature = "hyper-util")]

use std::convert::Infallible;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{ServiceBuilder, ServiceExt};
use tower_health_classify::{
    classify_error, AuthError, AuthStrategy, BackendError, Credentials, HealthClassifyLayer,
    HealthReport, HealthSink, HealthStatus, Outcome, Reason, TransportKind, Verdict,
};

#[path = "support/sockets.rs"]
mod sockets;

use sockets::{hold_until_peer_closes, read_request_head};

/// Only fires if a case hangs, so that a broken case fails instead of stalling the run.
const HANG_GUARD: Duration = Duration::from_secs(10);

// === recording sink ===

#[derive(Debug)]
struct Recorder {
    strategy: AuthStrategy,
    reports: Mutex<Vec<(Outcome, Option<Verdict>)>>,
}

impl Recorder {
    fn new(strategy: AuthStrategy) -> Arc<Self> {
        Arc::new(Recorder {
            strategy,
            reports: Mutex::new(Vec::new()),
        })
    }

    /// The one report of the exchange.
    fn only(&self) -> (Outcome, Option<Verdict>) {
        let reports = self.reports.lock().unwrap();
        assert_eq!(reports.len(), 1, "exactly one report: {reports:?}");
        reports[0].clone()
    }
}

impl HealthSink for Recorder {
    fn strategy(&self) -> AuthStrategy {
        self.strategy.clone()
    }

    fn report(&self, report: &HealthReport<'_>) {
        self.reports
            .lock()
            .unwrap()
            .push((report.outcome.clone(), report.verdict));
    }
}

// === loopback servers ===

#[derive(Debug, Clone, Copy)]
enum Then {
    /// Close cleanly (FIN) right after the bytes.
    Close,
    /// Keep the connection open until the client closes it.
    Hold,
}

/// A raw TCP server that answers every request with exactly `reply`, then `then`.
async fn raw_backend(reply: Vec<u8>, then: Then) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reply: Arc<[u8]> = reply.into();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                // The request is read in full first: closing a socket with unread bytes
                // makes Linux send RST instead of FIN.
                read_request_head(&mut stream).await;
                if stream.write_all(&reply).await.is_err() {
                    return;
                }
                match then {
                    Then::Close => drop(stream),
                    Then::Hold => hold_until_peer_closes(&mut stream).await,
                }
            });
        }
    });
    addr
}

/// A raw server that sends a valid response head one byte every `every`, and stops
/// once the client goes (or after the head: the loop is bounded by its length).
async fn trickling_backend(every: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request_head(&mut stream).await;
                for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            });
        }
    });
    addr
}

/// An HTTP/1-only hyper server that answers 200 to everything.
async fn http1_only_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

// === one exchange ===

fn get(addr: SocketAddr) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}/mcp"))
        .body(Empty::new())
        .unwrap()
}

/// One request through `HealthClassifyLayer` (typed mode) around a client built from
/// `builder`.
async fn exchange_with(
    builder: &Builder,
    request: Request<Empty<Bytes>>,
    recorder: &Arc<Recorder>,
) -> Result<Response<Incoming>, BackendError> {
    let client = builder.build_http::<Empty<Bytes>>();
    let service = ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(recorder.clone()))
        .service(client);
    tokio::time::timeout(HANG_GUARD, service.oneshot(request))
        .await
        .expect("no answer within the hang guard")
}

async fn exchange(
    addr: SocketAddr,
    recorder: &Arc<Recorder>,
) -> Result<Response<Incoming>, BackendError> {
    exchange_with(&Client::builder(TokioExecutor::new()), get(addr), recorder).await
}

fn unhealthy(kind: TransportKind) -> Option<Verdict> {
    Some(Verdict::new(
        HealthStatus::Unhealthy,
        Reason::Transport(kind),
    ))
}

fn auth_error(result: Result<Response<Incoming>, BackendError>) -> AuthError {
    match result {
        Err(BackendError::Auth(auth)) => auth,
        other => panic!(
            "expected BackendError::Auth, got {:?}",
            other.map(|r| r.status())
        ),
    }
}

// === the faults ===

/// The head arrives complete, so the exchange the layer sees is a 200: it reports
/// `Success(200)` and returns the response. The layer never reads the body (it would
/// have to buffer or wrap it): a body that then dies is the caller's error, typed by
/// hyper as a body error over an `UnexpectedEof`, and `classify_error` reads it as
/// `Closed` for a caller that wants to report it. (tower-http users get that for free:
/// `NotHealthyAsFailures` classifies a failing body.)
#[tokio::test]
async fn headers_then_death_mid_body_is_a_success_whose_body_fails() {
    let addr = raw_backend(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly twenty bytes...".to_vec(),
        Then::Close,
    )
    .await;
    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let response = exchange(addr, &recorder)
        .await
        .expect("the head was complete");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        recorder.only(),
        (
            Outcome::Success(StatusCode::OK),
            Some(Verdict::new(HealthStatus::Healthy, Reason::Ok))
        )
    );

    let body_error = response
        .into_body()
        .collect()
        .await
        .expect_err("80 bytes never came");
    // hyper: `Error(Body, io::Error(UnexpectedEof, IncompleteBody))`.
    assert!(!body_error.is_incomplete_message(), "{body_error:?}");
    let io = body_error
        .source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .expect("an io::Error under the body error");
    assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(
        classify_error(&body_error),
        Outcome::Transport(TransportKind::Closed)
    );
    assert_eq!(
        recorder.reports.lock().unwrap().len(),
        1,
        "no second report"
    );
}

/// A head sent one byte every 50 ms, behind a 150 ms `tower::timeout` inside the layer:
/// the timer ends the exchange and the layer reports `Timeout`.
#[tokio::test]
async fn headers_trickled_byte_by_byte_end_in_a_timeout() {
    let addr = trickling_backend(Duration::from_millis(50)).await;
    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let service = ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(recorder.clone()))
        .timeout(Duration::from_millis(150))
        .service(client);
    let error = tokio::time::timeout(HANG_GUARD, service.oneshot(get(addr)))
        .await
        .expect("the timeout fires first")
        .expect_err("the head never completes in time");
    assert!(matches!(error, BackendError::Timeout { .. }), "{error:?}");
    assert!(error.is_timeout());
    assert!(error
        .source()
        .unwrap()
        .is::<tower::timeout::error::Elapsed>());
    assert_eq!(
        recorder.only(),
        (
            Outcome::Transport(TransportKind::Timeout),
            unhealthy(TransportKind::Timeout)
        )
    );
}

fn challenges_reply(count: usize, extra_headers: &str) -> Vec<u8> {
    let mut reply = String::from("HTTP/1.1 401 Unauthorized\r\n");
    for i in 0..count {
        reply.push_str(&format!("www-authenticate: S{i} realm=\"r{i}\"\r\n"));
    }
    reply.push_str(extra_headers);
    reply.push_str("\r\n");
    reply.into_bytes()
}

/// hyper's HTTP/1 client reads at most 100 header lines by default; a response with
/// 100 challenges and a `content-length` has 101, and hyper refuses to parse it: a
/// `Protocol` failure, never a partial challenge list.
#[tokio::test]
async fn a_hundred_challenges_and_one_more_header_overflow_hypers_header_limit() {
    let addr = raw_backend(challenges_reply(100, "content-length: 0\r\n"), Then::Hold).await;
    let recorder = Recorder::new(AuthStrategy::TokenExchange);
    let error = exchange(addr, &recorder).await.unwrap_err();
    assert_eq!(
        error.transport_kind(),
        Some(TransportKind::Protocol),
        "{error:?}"
    );
    assert_eq!(
        recorder.only(),
        (
            Outcome::Transport(TransportKind::Protocol),
            unhealthy(TransportKind::Protocol)
        )
    );
}

/// With room for them (`http1_max_headers`), 100 `WWW-Authenticate` values arrive and
/// the parser keeps the first 16, in order.
#[tokio::test]
async fn a_hundred_challenges_keep_the_first_16() {
    let addr = raw_backend(challenges_reply(100, "content-length: 0\r\n"), Then::Hold).await;
    let recorder = Recorder::new(AuthStrategy::TokenExchange);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http1_max_headers(200);
    let auth = auth_error(exchange_with(&builder, get(addr), &recorder).await);
    let schemes: Vec<&str> = auth.challenges().iter().map(|c| c.scheme()).collect();
    let want: Vec<String> = (0..16).map(|i| format!("S{i}")).collect();
    assert_eq!(schemes, want);
    assert_eq!(auth.challenges()[15].realm(), Some("r15"));
    assert_eq!(auth.scheme(), Some("S0"), "no Bearer: the first challenge");
    let (outcome, verdict) = recorder.only();
    assert_eq!(outcome, Outcome::Auth(auth));
    assert_eq!(
        verdict,
        Some(Verdict::new(
            HealthStatus::Healthy,
            Reason::ExpectedChallenge
        ))
    );
}

/// Bytes above 0x7F are legal in a header value (obs-text) and reach the parser: a
/// UTF-8 sequence decodes, a stray Latin-1 byte becomes U+FFFD, and the rest of the
/// challenge is read as usual.
#[tokio::test]
async fn non_utf8_challenge_bytes_are_decoded_lossily() {
    let reply = b"HTTP/1.1 401 Unauthorized\r\n\
        www-authenticate: Bearer realm=\"caf\xc3\xa9 caf\xe9\", error=\"invalid_token\", scope=\xff\r\n\
        content-length: 0\r\n\r\n"
        .to_vec();
    let addr = raw_backend(reply, Then::Hold).await;
    let recorder = Recorder::new(AuthStrategy::UpstreamInject);
    let auth = auth_error(exchange(addr, &recorder).await);
    assert_eq!(auth.scheme(), Some("Bearer"));
    assert_eq!(auth.realm(), Some("caf\u{e9} caf\u{fffd}"));
    assert_eq!(
        auth.bearer_error(),
        Some(tower_health_classify::BearerError::InvalidToken)
    );
    assert_eq!(
        auth.scope(),
        None,
        "a bare 0xFF is no token: that element is dropped"
    );
    assert_eq!(
        recorder.only().1,
        Some(Verdict::new(
            HealthStatus::Healthy,
            Reason::ExpectedChallenge
        ))
    );
}

const OBS_FOLD_REPLY: &[u8] = b"HTTP/1.1 401 Unauthorized\r\n\
    www-authenticate: Bearer realm=\"api\",\r\n error=\"invalid_token\"\r\n\
    content-length: 0\r\n\r\n";

/// An obs-folded header line (RFC 9112 §5.2: a line continued by leading whitespace) is
/// rejected by hyper's parser by default: a `Protocol` failure.
#[tokio::test]
async fn an_obs_folded_challenge_is_a_protocol_error_by_default() {
    let addr = raw_backend(OBS_FOLD_REPLY.to_vec(), Then::Hold).await;
    let recorder = Recorder::new(AuthStrategy::TokenExchange);
    let error = exchange(addr, &recorder).await.unwrap_err();
    assert_eq!(
        error.transport_kind(),
        Some(TransportKind::Protocol),
        "{error:?}"
    );
    assert_eq!(
        recorder.only().0,
        Outcome::Transport(TransportKind::Protocol)
    );
}

/// A client told to accept obs-fold (`http1_allow_obsolete_multiline_headers_in_responses`)
/// replaces the fold with spaces, as RFC 9112 asks; the parser then reads the unfolded
/// value like any other.
#[tokio::test]
async fn an_obs_folded_challenge_accepted_by_the_client_is_unfolded() {
    let addr = raw_backend(OBS_FOLD_REPLY.to_vec(), Then::Hold).await;
    let recorder = Recorder::new(AuthStrategy::TokenExchange);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http1_allow_obsolete_multiline_headers_in_responses(true);
    let auth = auth_error(exchange_with(&builder, get(addr), &recorder).await);
    assert_eq!(auth.challenges().len(), 1, "{auth:?}");
    assert_eq!(auth.realm(), Some("api"));
    assert_eq!(
        auth.bearer_error(),
        Some(tower_health_classify::BearerError::InvalidToken)
    );
}

/// A 401 without any `WWW-Authenticate` (RFC 9110 says it must send one; some don't):
/// still `Auth(Unauthorized)`, with no challenge, judged like any 401.
#[tokio::test]
async fn a_401_without_a_challenge_is_unauthorized_judged_per_strategy() {
    let addr = raw_backend(
        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_vec(),
        Then::Hold,
    )
    .await;
    use HealthStatus::{Healthy, Unauthenticated};
    let rows = [
        (
            AuthStrategy::Unauthenticated,
            false,
            Unauthenticated,
            Reason::NoAuthConfigured,
        ),
        (
            AuthStrategy::TokenExchange,
            false,
            Healthy,
            Reason::ExpectedChallenge,
        ),
        (
            AuthStrategy::TokenExchange,
            true,
            Unauthenticated,
            Reason::CredentialsRejected,
        ),
        (
            AuthStrategy::HeaderInjection,
            true,
            Unauthenticated,
            Reason::CredentialsRejected,
        ),
        (
            AuthStrategy::UpstreamInject,
            false,
            Healthy,
            Reason::ExpectedChallenge,
        ),
        (
            AuthStrategy::UpstreamInject,
            true,
            Healthy,
            Reason::UserCredentialsRejected,
        ),
    ];
    for (strategy, sent, status, reason) in rows {
        let what = format!("{strategy:?}, credentials sent: {sent}");
        let recorder = Recorder::new(strategy);
        let mut request = get(addr);
        // A probe's 401: on traffic, a 401 is never held against the backend.
        request
            .extensions_mut()
            .insert(tower_health_classify::Probe);
        if sent {
            request.extensions_mut().insert(Credentials::Sent);
        }
        let client = Client::builder(TokioExecutor::new());
        let auth = auth_error(exchange_with(&client, request, &recorder).await);
        assert!(matches!(auth, AuthError::Unauthorized { .. }), "{what}");
        assert!(auth.challenges().is_empty(), "{what}");
        assert_eq!(auth.scheme(), None, "{what}");
        assert_eq!(auth.bearer_error(), None, "{what}");
        assert_eq!(auth.credentials_sent(), sent, "{what}");
        assert_eq!(
            auth.to_string(),
            "backend answered 401 unauthorized",
            "{what}"
        );
        assert_eq!(
            recorder.only(),
            (Outcome::Auth(auth), Some(Verdict::new(status, reason))),
            "{what}"
        );
    }
}

/// A 401 with only a `Basic` challenge: the scheme is `Basic`, there is no Bearer error
/// to read, and the realm is.
#[tokio::test]
async fn a_401_with_basic_only() {
    let addr = raw_backend(
        b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"admin area\", charset=\"UTF-8\"\r\ncontent-length: 0\r\n\r\n"
            .to_vec(),
        Then::Hold,
    )
    .await;
    let recorder = Recorder::new(AuthStrategy::HeaderInjection);
    let auth = auth_error(exchange(addr, &recorder).await);
    assert_eq!(auth.scheme(), Some("Basic"));
    assert_eq!(auth.bearer_error(), None);
    assert_eq!(auth.realm(), Some("admin area"));
    assert_eq!(auth.scope(), None);
    assert_eq!(auth.resource_metadata(), None);
    assert_eq!(
        auth.to_string(),
        "backend answered 401 unauthorized (Basic)"
    );
    assert_eq!(
        recorder.only().1,
        Some(Verdict::new(
            HealthStatus::Healthy,
            Reason::ExpectedChallenge
        ))
    );
}

/// An HTTP/2 prior-knowledge client against an HTTP/1-only hyper server. hyper's HTTP/1
/// server recognises the HTTP/2 preface and closes the connection without a byte of
/// reply (pinned below with a raw socket); the client, still writing its SETTINGS and
/// HEADERS frames into a socket the peer closed with unread data, gets a broken pipe or
/// a reset: `Reset`. Were the peer's close to win the race against the client's writes,
/// the client would read EOF instead: `Closed`. Either way, no HTTP was exchanged, and
/// it is never a success nor a `Protocol` error: nothing unparsable arrived.
#[tokio::test]
async fn http2_prior_knowledge_to_an_http1_only_server_is_a_lost_connection() {
    let addr = http1_only_backend().await;

    // What the server does with the preface: close, silently.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply).await;
    assert!(reply.is_empty(), "{:?}", String::from_utf8_lossy(&reply));

    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(true);
    let error = exchange_with(&builder, get(addr), &recorder)
        .await
        .unwrap_err();
    let kind = error.transport_kind().expect("a transport error");
    assert!(
        matches!(kind, TransportKind::Reset | TransportKind::Closed),
        "{error:?}"
    );
    assert_eq!(recorder.only(), (Outcome::Transport(kind), unhealthy(kind)));
}

/// An HTTP/2 client against a server that answers in HTTP/1 anyway (as some proxies do
/// with a `400`): the h2 codec reads `HTTP/1.1 ` as a frame header announcing a frame far
/// over the size limit and fails the connection with `FRAME_SIZE_ERROR`. hyper reports
/// that as an `Http2` error with no predicate (`is_parse` is false), and the chain holds
/// an `h2::Error` this crate does not depend on, so the walk finds no signal and no
/// phrase: `Transport(Other)`, judged Unhealthy like every transport failure. (A
/// `Protocol` outcome would name it better: see the hardening report.)
#[tokio::test]
async fn http2_prior_knowledge_to_an_http1_reply_is_transport_other() {
    let addr = raw_backend(
        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
        Then::Hold,
    )
    .await;
    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(true);
    let error = exchange_with(&builder, get(addr), &recorder)
        .await
        .unwrap_err();
    let hyper_error = error
        .source()
        .and_then(|client| client.source())
        .and_then(|e| e.downcast_ref::<hyper::Error>())
        .expect("legacy::Error(SendRequest, hyper::Error(Http2, ..))");
    assert!(!hyper_error.is_parse());
    assert_eq!(
        hyper_error.source().unwrap().to_string(),
        "connection error detected: frame with invalid size"
    );
    assert_eq!(
        error.transport_kind(),
        Some(TransportKind::Other),
        "{error:?}"
    );
    assert_eq!(
        recorder.only(),
        (
            Outcome::Transport(TransportKind::Other),
            unhealthy(TransportKind::Other)
        )
    );
}
