//! HTTPS backends on loopback, with certificates made in the test: every TLS failure a
//! backend can cause (expired, not yet valid, another name, self-signed, a client
//! certificate required, no TLS at all) through hyper-rustls and the layer, and through
//! reqwest 0.12 and 0.13 (rustls backends) and `ExchangeReport`: the same outcome and
//! cause for each. Also the plain transport faults through reqwest, against hyper-util's
//! outcomes for the same faults, and the success path over HTTPS (HTTP/2 through ALPN,
//! SNI from the URL's host, a 401 challenge judged as over HTTP).
//!
//! Nothing leaves 127.0.0.1: names are resolved by a resolver of the test's own, and
//! every client is told to use no proxy.

#![cfg(all(feature = "hyper-util", feature = "rustls", feature = "serde"))]

#[path = "support/sockets.rs"]
mod sockets;
#[path = "support/tls.rs"]
mod tls_support;

use std::error::Error as _;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use http::{header, Request, StatusCode, Version};
use http_body_util::Empty;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_health_classify::{
    classify_error, AuthStrategy, BackendError, ExchangeReport, HealthClassifyLayer,
    HealthRegistry, HealthReport, HealthSink, HealthStatus, Origin, Outcome, Policy, Probe, Reason,
    TlsFailure, TransportKind, Verdict,
};

use crate::sockets::reset;
use crate::tls_support::{serve, Backend, Pki, FAILING, NAME};

const CHALLENGE: &str = r#"Bearer resource_metadata="https://backend.test/.well-known/oauth-protected-resource", scope="mcp""#;

/// The cause each failing backend must be reported with.
fn cause(backend: Backend) -> TlsFailure {
    match backend {
        Backend::Expired => TlsFailure::CertificateExpired,
        Backend::NotYetValid => TlsFailure::CertificateNotYetValid,
        Backend::OtherName => TlsFailure::NameMismatch,
        Backend::SelfSigned => TlsFailure::UnknownIssuer,
        Backend::ClientCertRequired => TlsFailure::ClientCertificateRequired,
        Backend::PlainHttp => TlsFailure::NotTls,
        Backend::Valid => unreachable!("not a failing backend"),
    }
}

fn tls_verdict() -> Option<Verdict> {
    Some(Verdict::new(
        HealthStatus::Unhealthy,
        Reason::Transport(TransportKind::Tls),
    ))
}

fn ok() -> Router {
    Router::new().fallback(|| async { "ok" })
}

fn challenge() -> Router {
    Router::new().fallback(|| async {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, CHALLENGE)],
        )
            .into_response()
    })
}

// === a recording sink ===

type Seen = (Outcome, Option<Verdict>, Option<TlsFailure>);

struct Recorder {
    strategy: AuthStrategy,
    seen: Mutex<Vec<Seen>>,
}

impl Recorder {
    fn new(strategy: AuthStrategy) -> Arc<Self> {
        Arc::new(Recorder {
            strategy,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn only(&self) -> Seen {
        let seen = self.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "one report per exchange: {seen:?}");
        seen[0].clone()
    }
}

impl HealthSink for Recorder {
    fn strategy(&self) -> AuthStrategy {
        self.strategy.clone()
    }

    fn report(&self, report: &HealthReport<'_>) {
        self.seen.lock().unwrap().push((
            report.outcome.clone(),
            report.verdict,
            report.tls_failure,
        ));
    }
}

// === clients ===

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn tls_config(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(tls_support::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// hyper-util's legacy client over hyper-rustls, trusting the test CA, HTTP/2 offered.
fn hyper_rustls(pki: &Pki) -> HttpsClient {
    hyper_rustls_with(pki, HttpConnector::new())
}

fn hyper_rustls_with<R>(
    pki: &Pki,
    mut http: HttpConnector<R>,
) -> Client<HttpsConnector<HttpConnector<R>>, Empty<Bytes>>
where
    HttpsConnector<HttpConnector<R>>: Connect + Clone + Send + Sync + 'static,
{
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(pki.roots()))
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

fn reqwest012(pki: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&pki.ca_der()).unwrap())
        .no_proxy()
        .build()
        .unwrap()
}

fn reqwest013(pki: &Pki) -> reqwest013::Client {
    tls_support::install_default_provider();
    reqwest013::Client::builder()
        .tls_certs_only([reqwest013::Certificate::from_der(&pki.ca_der()).unwrap()])
        .no_proxy()
        .build()
        .unwrap()
}

/// A probe through `client` wrapped in the layer, reporting to `recorder`.
async fn through_the_layer(
    client: &HttpsClient,
    recorder: &Arc<Recorder>,
    url: &str,
) -> Result<http::Response<hyper::body::Incoming>, BackendError> {
    let mut request = Request::get(url).body(Empty::new()).unwrap();
    request.extensions_mut().insert(Probe);
    ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(recorder.clone()).pass_through_auth())
        .service(client.clone())
        .oneshot(request)
        .await
}

// === the failing backends ===

#[tokio::test]
async fn every_tls_failure_through_hyper_rustls_and_the_layer() {
    let pki = Pki::new();
    let client = hyper_rustls(&pki);
    for &backend in FAILING {
        let (addr, _) = serve(&pki, backend, ok()).await;
        let url = format!("https://{addr}/");
        let recorder = Recorder::new(AuthStrategy::Unauthenticated);
        let err = through_the_layer(&client, &recorder, &url)
            .await
            .expect_err("the handshake fails");
        let want = cause(backend);
        assert_eq!(err.tls_failure(), Some(want), "{backend:?}: {err:?}");
        assert_eq!(
            err.transport_kind(),
            Some(TransportKind::Tls),
            "{backend:?}"
        );
        assert_eq!(err.to_string(), format!("tls error: {want}"), "{backend:?}");
        // No certificate in any form: DER starts with 0x30 0x82, PEM with MII.
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("48, 130") && !shown.contains("MII"),
            "{shown}"
        );
        assert_eq!(
            recorder.only(),
            (
                Outcome::Transport(TransportKind::Tls),
                tls_verdict(),
                Some(want)
            ),
            "{backend:?}"
        );

        // The same error, straight from the client: the chain the issue describes.
        let raw = client
            .get(url.parse().unwrap())
            .await
            .expect_err("the handshake fails");
        assert_eq!(
            classify_error(&raw),
            Outcome::Transport(TransportKind::Tls),
            "{backend:?}: {raw:?}"
        );
        assert_eq!(TlsFailure::from_error(&raw), Some(want), "{backend:?}");
        // A missing client certificate is refused after the handshake, on the first
        // read: not a connect error. Every other failure is one.
        assert_eq!(
            raw.is_connect(),
            backend != Backend::ClientCertRequired,
            "{backend:?}: {raw:?}"
        );
    }
}

#[tokio::test]
async fn every_tls_failure_through_reqwest_0_12_and_0_13() {
    let pki = Pki::new();
    let (old, new) = (reqwest012(&pki), reqwest013(&pki));
    for &backend in FAILING {
        let (addr, _) = serve(&pki, backend, ok()).await;
        let url = format!("https://{addr}/");
        let want = cause(backend);
        let old_err = old.get(&url).send().await.expect_err("the handshake fails");
        let new_err = new.get(&url).send().await.expect_err("the handshake fails");
        let errors: [(&str, &(dyn std::error::Error + 'static)); 2] =
            [("reqwest 0.12", &old_err), ("reqwest 0.13", &new_err)];
        for (client, error) in errors {
            assert_eq!(
                classify_error(error),
                Outcome::Transport(TransportKind::Tls),
                "{client} {backend:?}: {error:?}"
            );
            assert_eq!(
                TlsFailure::from_error(error),
                Some(want),
                "{client} {backend:?}: {error:?}"
            );
            let recorder = Recorder::new(AuthStrategy::TokenExchange);
            let verdict = ExchangeReport::error(error)
                .origin(Origin::Probe)
                .report(&recorder);
            assert_eq!(verdict, tls_verdict(), "{client} {backend:?}");
            assert_eq!(
                recorder.only(),
                (
                    Outcome::Transport(TransportKind::Tls),
                    tls_verdict(),
                    Some(want)
                ),
                "{client} {backend:?}"
            );
        }
    }
}

/// What a gateway built on reqwest does: report each exchange to its registry handle.
#[tokio::test]
async fn a_reqwest_probe_reported_to_a_registry() {
    let pki = Pki::new();
    let client = reqwest013(&pki);
    let mut policy = Policy::default();
    policy.unhealthy_threshold = 1;
    let registry = HealthRegistry::new(policy);
    let handle = registry.register("billing", AuthStrategy::TokenExchange);
    let (addr, _) = serve(&pki, Backend::Expired, ok()).await;

    let started = tokio::time::Instant::now();
    let result = client.get(format!("https://{addr}/")).send().await;
    let exchange = match &result {
        Ok(response) => ExchangeReport::response(response.status(), response.headers()),
        Err(error) => ExchangeReport::error(error),
    };
    exchange
        .origin(Origin::Probe)
        .latency(started.elapsed())
        .report(&handle);

    let snapshot = registry.snapshot();
    let billing = &snapshot.backends[0];
    assert_eq!(billing.status, HealthStatus::Unhealthy);
    assert_eq!(billing.reason, Some(Reason::Transport(TransportKind::Tls)));
    let json = serde_json::to_value(billing).unwrap();
    assert_eq!(json["reason"], "tls");
    assert_eq!(json["last_error"], "tls certificate_expired", "{json}");
}

// === the success path ===

#[tokio::test]
async fn a_valid_certificate_is_healthy_over_http2_through_alpn() {
    let pki = Pki::new();
    let (addr, handshakes) = serve(&pki, Backend::Valid, ok()).await;
    let recorder = Recorder::new(AuthStrategy::Unauthenticated);
    let response = through_the_layer(&hyper_rustls(&pki), &recorder, &format!("https://{addr}/"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2, "the backend offers h2");
    let (outcome, verdict, tls) = recorder.only();
    assert_eq!(outcome, Outcome::Success(StatusCode::OK));
    assert_eq!(verdict.unwrap().reason, Reason::Ok);
    assert_eq!(tls, None);
    // An IP address is never sent as SNI (RFC 6066 §3).
    assert_eq!(*handshakes.server_names.lock().unwrap(), [None]);

    let url = format!("https://{addr}/");
    let old = reqwest012(&pki).get(&url).send().await.unwrap().status();
    let new = reqwest013(&pki).get(&url).send().await.unwrap().status();
    assert_eq!((old.as_u16(), new.as_u16()), (200, 200));
}

#[tokio::test]
async fn sni_and_the_name_checked_come_from_the_urls_host() {
    let pki = Pki::new();
    let (addr, handshakes) = serve(&pki, Backend::Valid, ok()).await;
    // `backend.test` resolves to the server, by this resolver only.
    let resolver = tower::service_fn(move |name: Name| async move {
        assert_eq!(name.as_str(), NAME, "only the test's own name is resolved");
        Ok::<_, io::Error>(vec![addr].into_iter())
    });
    let client = hyper_rustls_with(&pki, HttpConnector::new_with_resolver(resolver));
    let url = format!("https://{NAME}:{}/", addr.port());
    let response = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        *handshakes.server_names.lock().unwrap(),
        [Some(NAME.to_owned())]
    );
}

#[tokio::test]
async fn a_challenge_over_https_is_judged_as_over_http() {
    let pki = Pki::new();
    let (tls_addr, _) = serve(&pki, Backend::Valid, challenge()).await;
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(plain, challenge()).await });

    let client = hyper_rustls(&pki);
    let mut judged = Vec::new();
    for url in [
        format!("https://{tls_addr}/"),
        format!("http://{plain_addr}/"),
    ] {
        let recorder = Recorder::new(AuthStrategy::UpstreamInject);
        let response = through_the_layer(&client, &recorder, &url).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{url}");
        let (outcome, verdict, tls) = recorder.only();
        let Outcome::Auth(auth) = &outcome else {
            panic!("{url}: {outcome:?}");
        };
        assert_eq!(auth.scope(), Some("mcp"), "{url}");
        assert_eq!(tls, None, "{url}");
        judged.push((outcome.to_string(), verdict));
    }
    assert_eq!(judged[0], judged[1]);
    assert_eq!(
        judged[0].1,
        Some(Verdict::new(
            HealthStatus::Healthy,
            Reason::ExpectedChallenge
        ))
    );
}

// === plain transport faults: reqwest against hyper-util ===

/// A loopback fault, made by a listener this test starts.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Refused,
    Closed,
    Reset,
    Garbage,
    Silent,
}

async fn fault(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if let Fault::Refused = fault {
        drop(listener);
        return addr;
    }
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.read(&mut [0u8; 4096]).await;
            match fault {
                Fault::Closed => drop(stream),
                Fault::Reset => reset(stream),
                Fault::Garbage => {
                    let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
                    let _ = stream.shutdown().await;
                }
                Fault::Silent | Fault::Refused => held.push(stream),
            }
        }
    });
    addr
}

/// Paused time: the 5 s timeouts of the silent case fire as soon as nothing else can
/// happen, never on a real clock.
#[tokio::test(start_paused = true)]
async fn reqwest_faults_classify_as_hyper_utils() {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let pki = Pki::new();
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let old = reqwest::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let new = reqwest013::Client::builder()
        .no_proxy()
        .timeout(TIMEOUT)
        .tls_certs_only([reqwest013::Certificate::from_der(&pki.ca_der()).unwrap()])
        .build()
        .unwrap();
    let cases = [
        (Fault::Refused, TransportKind::ConnectionRefused),
        (Fault::Closed, TransportKind::Closed),
        (Fault::Reset, TransportKind::Reset),
        (Fault::Garbage, TransportKind::Protocol),
        (Fault::Silent, TransportKind::Timeout),
    ];
    for (fault_kind, want) in cases {
        let addr = fault(fault_kind).await;
        let url = format!("http://{addr}/");
        let hyper_err: Box<dyn std::error::Error + Send + Sync> =
            match tokio::time::timeout(TIMEOUT, hyper.get(url.parse().unwrap())).await {
                Err(elapsed) => elapsed.into(),
                Ok(result) => result.expect_err("the fault fails the request").into(),
            };
        let old_err = old
            .get(&url)
            .send()
            .await
            .expect_err("the fault fails the request");
        let new_err = new
            .get(&url)
            .send()
            .await
            .expect_err("the fault fails the request");
        let hyper_outcome = classify_error(&*hyper_err);
        assert_eq!(
            hyper_outcome,
            Outcome::Transport(want),
            "hyper-util {fault_kind:?}: {hyper_err:?}"
        );
        assert_eq!(
            classify_error(&old_err),
            hyper_outcome,
            "reqwest 0.12 {fault_kind:?}: {old_err:?}"
        );
        assert_eq!(
            classify_error(&new_err),
            hyper_outcome,
            "reqwest 0.13 {fault_kind:?}: {new_err:?}"
        );
        assert_eq!(TlsFailure::from_error(&new_err), None, "{fault_kind:?}");
        // reqwest keeps the chain: the typed cause is reachable, not only its text.
        assert!(old_err.source().is_some() && new_err.source().is_some());
    }
}
