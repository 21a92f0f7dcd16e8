//! axum integration: a gateway served with `axum::serve` routes to loopback backends
//! through `HandleErrorLayer -> HealthClassify -> Timeout -> hyper-util client` (the
//! wiring of `examples/axum.rs`), and a client checks what comes back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower::timeout::Timeout;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_health_classify::{
    AuthError, AuthStrategy, BackendError, DefaultClassifier, HealthClassify, HealthClassifyLayer,
    HealthReport, HealthSink, Outcome, Reason, TransportKind, Verdict,
};

/// A real timer on a real socket: the stuck backend never answers, so this is how long
/// that test takes. Only outcomes are asserted, never durations.
const BACKEND_TIMEOUT: Duration = Duration::from_millis(200);

const CHALLENGE: &str = r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource", scope="mcp""#;

type BackendClient = Client<HttpConnector, Body>;

/// What the layer told the sink about one exchange.
type Reported = (Outcome, Option<Verdict>);

/// Keeps every report, so a test can assert what the layer told the sink.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Reported>>>);

impl Recorder {
    fn only(&self) -> Reported {
        let reports = self.0.lock().unwrap();
        assert_eq!(reports.len(), 1, "one report per exchange: {reports:?}");
        reports[0].clone()
    }
}

impl HealthSink for Recorder {
    fn strategy(&self) -> AuthStrategy {
        AuthStrategy::UpstreamInject
    }

    fn report(&self, report: &HealthReport<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((report.outcome.clone(), report.verdict));
    }
}

/// The gateway's mapping of a `BackendError` to a response, as in the example.
struct GatewayError(BackendError);

impl From<BackendError> for GatewayError {
    fn from(error: BackendError) -> Self {
        GatewayError(error)
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let error = self.0;
        let (status, body) = match &error {
            BackendError::Auth(auth) => (
                StatusCode::BAD_GATEWAY,
                json!({
                    "error": "backend_auth",
                    "status": auth.status().as_u16(),
                    "scheme": auth.scheme(),
                    "resource_metadata": auth.resource_metadata(),
                    "bearer_error": auth.bearer_error().map(|e| e.as_str().to_owned()),
                }),
            ),
            _ if error.is_timeout() => (
                StatusCode::GATEWAY_TIMEOUT,
                json!({ "error": "backend_timeout" }),
            ),
            BackendError::Local { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "gateway_error" }),
            ),
            _ => (
                StatusCode::BAD_GATEWAY,
                json!({
                    "error": "backend_unavailable",
                    "kind": error.transport_kind().map(|kind| kind.as_str()),
                }),
            ),
        };
        (status, Json(body)).into_response()
    }
}

async fn backend_error_to_response(error: BackendError) -> GatewayError {
    GatewayError(error)
}

fn proxy(
    client: BackendClient,
    backend: SocketAddr,
    prefix: &'static str,
    layer: HealthClassifyLayer<Recorder>,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
       + Clone
       + Send
       + Sync
       + 'static {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(backend_error_to_response))
        .map_request(move |mut request: Request| {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |path| path.as_str());
            let rest = path.strip_prefix(prefix).unwrap_or(path);
            *request.uri_mut() = format!("http://{backend}{rest}").parse().unwrap();
            request.headers_mut().remove(header::HOST);
            request
        })
        .layer(layer)
        .timeout(BACKEND_TIMEOUT)
        .service(client)
}

#[derive(Clone)]
struct Api {
    client: HealthClassify<Timeout<BackendClient>, Recorder, DefaultClassifier>,
    backend: SocketAddr,
}

/// A handler that calls the backend itself and lets `?` map the error.
async fn handler(State(api): State<Api>) -> Result<String, GatewayError> {
    let request = http::Request::get(format!("http://{}/private", api.backend))
        .body(Body::empty())
        .unwrap();
    let response = api.client.oneshot(request).await?;
    Ok(format!("status {}", response.status()))
}

struct Gateway {
    addr: SocketAddr,
    reports: Recorder,
    client: Client<HttpConnector, Empty<Bytes>>,
    /// Accepts connections (the kernel completes the handshake) and never answers.
    _stuck: TcpListener,
}

impl Gateway {
    async fn start() -> Gateway {
        let ok = serve(Router::new().route("/hello", get(|| async { "hello" }))).await;
        let oauth = serve(Router::new().route(
            "/private",
            get(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, CHALLENGE)],
                )
            }),
        ))
        .await;
        let refused = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let stuck = TcpListener::bind("127.0.0.1:0").await.unwrap();

        let reports = Recorder::default();
        let typed = HealthClassifyLayer::new(reports.clone());
        let client: BackendClient = Client::builder(TokioExecutor::new()).build_http();
        let routes = [
            ("/ok", ok, typed.clone()),
            ("/typed", oauth, typed.clone()),
            ("/pass", oauth, typed.clone().pass_through_auth()),
            ("/refused", refused, typed.clone()),
            ("/stuck", stuck.local_addr().unwrap(), typed.clone()),
        ];
        let mut app = Router::new();
        for (prefix, backend, layer) in routes {
            app = app.route_service(
                &format!("{prefix}/{{*rest}}"),
                proxy(client.clone(), backend, prefix, layer),
            );
        }
        let app = app.route("/handler", get(handler)).with_state(Api {
            client: ServiceBuilder::new()
                .layer(typed)
                .timeout(BACKEND_TIMEOUT)
                .service(client),
            backend: oauth,
        });

        Gateway {
            addr: serve(app).await,
            reports,
            client: Client::builder(TokioExecutor::new()).build_http(),
            _stuck: stuck,
        }
    }

    async fn get(&self, path: &str, authorization: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
        let mut request = http::Request::get(format!("http://{}{path}", self.addr));
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = self
            .client
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn json_body(headers: &HeaderMap, body: &[u8]) -> Value {
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    serde_json::from_slice(body).unwrap()
}

fn reason(verdict: Option<Verdict>) -> Reason {
    verdict.expect("a counted exchange").reason
}

#[tokio::test]
async fn success_is_returned_with_its_body() {
    let gateway = Gateway::start().await;
    let (status, _, body) = gateway.get("/ok/hello", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"hello");
    let (outcome, verdict) = gateway.reports.only();
    assert_eq!(outcome, Outcome::Success(StatusCode::OK));
    assert_eq!(reason(verdict), Reason::Ok);
}

#[tokio::test]
async fn typed_backend_401_becomes_502_json_naming_the_problem_without_the_credential() {
    let gateway = Gateway::start().await;
    let (status, headers, body) = gateway.get("/typed/private", Some("Bearer sekrit")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let json = json_body(&headers, &body);
    assert_eq!(json["error"], "backend_auth");
    assert_eq!(json["status"], 401);
    assert_eq!(json["scheme"], "Bearer");
    assert_eq!(
        json["resource_metadata"],
        "http://127.0.0.1/.well-known/oauth-protected-resource"
    );
    assert!(!String::from_utf8_lossy(&body).contains("sekrit"));
    assert!(headers
        .values()
        .all(|value| !String::from_utf8_lossy(value.as_bytes()).contains("sekrit")));
    assert!(!headers.contains_key(header::WWW_AUTHENTICATE));

    // The forwarded user token was rejected: the backend itself is fine.
    let (outcome, verdict) = gateway.reports.only();
    assert!(matches!(
        outcome,
        Outcome::Auth(AuthError::Unauthorized {
            credentials_sent: true,
            ..
        })
    ));
    assert_eq!(reason(verdict), Reason::UserCredentialsRejected);
}

#[tokio::test]
async fn pass_through_forwards_the_401_with_its_challenge() {
    let gateway = Gateway::start().await;
    let (status, headers, _) = gateway.get("/pass/private", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], CHALLENGE);
    // Still classified and reported.
    let (outcome, verdict) = gateway.reports.only();
    assert!(matches!(
        outcome,
        Outcome::Auth(AuthError::Unauthorized { .. })
    ));
    assert_eq!(reason(verdict), Reason::ExpectedChallenge);
}

#[tokio::test]
async fn refused_connection_becomes_502() {
    let gateway = Gateway::start().await;
    let (status, headers, body) = gateway.get("/refused/hello", None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let json = json_body(&headers, &body);
    assert_eq!(json["error"], "backend_unavailable");
    assert_eq!(json["kind"], "connection_refused");
    let (outcome, verdict) = gateway.reports.only();
    assert_eq!(
        outcome,
        Outcome::Transport(TransportKind::ConnectionRefused)
    );
    assert_eq!(
        reason(verdict),
        Reason::Transport(TransportKind::ConnectionRefused)
    );
}

#[tokio::test]
async fn timeout_inside_the_layer_becomes_504_and_is_reported_as_a_timeout() {
    let gateway = Gateway::start().await;
    let (status, headers, body) = gateway.get("/stuck/hello", None).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json_body(&headers, &body)["error"], "backend_timeout");
    // Not `Cancelled`: the timer fired below the layer, which classified its error.
    let (outcome, verdict) = gateway.reports.only();
    assert_eq!(outcome, Outcome::Transport(TransportKind::Timeout));
    assert_eq!(reason(verdict), Reason::Transport(TransportKind::Timeout));
}

#[tokio::test]
async fn handler_maps_backend_errors_with_question_mark_like_handle_error_layer() {
    let gateway = Gateway::start().await;
    let (status, headers, body) = gateway.get("/handler", None).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let json = json_body(&headers, &body);
    assert_eq!(json["error"], "backend_auth");
    assert_eq!(json["status"], 401);
    let (_, verdict) = gateway.reports.only();
    assert_eq!(reason(verdict), Reason::ExpectedChallenge);
}
