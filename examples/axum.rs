//! An axum gateway that calls its backend through `HealthClassifyLayer`, with
//! `HandleErrorLayer` mapping `BackendError` to 502/504: `cargo run --example axum`.
//!
//! It starts a backend and the gateway on 127.0.0.1, sends a few requests to the gateway,
//! prints what the gateway's client got and what the layer reported, and exits. Nothing
//! leaves this machine.
//!
//! The gateway routes:
//!
//! | route | what it shows |
//! |---|---|
//! | `/typed/{*rest}` | typed mode: a backend 401 becomes 502 with a JSON body naming the problem, no answer in time 504 |
//! | `/pass/{*rest}` | [`pass_through_auth`]: the backend's 401 with its `WWW-Authenticate`, as sent |
//! | `/down/{*rest}` | typed mode to a port nothing listens on: 502 |
//! | `/greeting` | a handler that calls the layered client itself and returns its error with `?` |
//!
//! [`pass_through_auth`]: tower_health_classify::HealthClassifyLayer::pass_through_auth

#![allow(clippy::print_stdout)] // printing is what this example is for

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::net::TcpListener;
use tower::timeout::Timeout;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_health_classify::{
    AuthStrategy, BackendError, DefaultClassifier, HealthClassify, HealthClassifyLayer,
    HealthReport, HealthSink, LocalKind,
};

/// Per attempt; short so that the stuck backend route answers 504 quickly.
const BACKEND_TIMEOUT: Duration = Duration::from_millis(300);

const CHALLENGE: &str = r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource", scope="mcp""#;

/// The gateway's client to its backends; its request body is axum's, so requests are
/// forwarded without buffering.
type BackendClient = Client<HttpConnector, Body>;

/// Prints every report next to the exchange it describes. A real gateway gives the
/// layer a `HealthRegistry` handle instead.
#[derive(Debug, Clone)]
struct PrintSink {
    backend: &'static str,
}

impl HealthSink for PrintSink {
    fn strategy(&self) -> AuthStrategy {
        // The gateway forwards each user's own token.
        AuthStrategy::UpstreamInject
    }

    fn report(&self, report: &HealthReport<'_>) {
        let verdict = report
            .verdict
            .map_or_else(|| "not counted".to_owned(), |v| v.to_string());
        println!(
            "    reported  {}: {} -> {verdict}",
            self.backend, report.outcome
        );
    }
}

/// A `BackendError` as the gateway's own client sees it.
///
/// The body is built from the error's kind and the backend's parsed challenge only,
/// never from the request, so a credential the client sent cannot end up in it.
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
            // Connect timeouts too: the backend did not answer in time either way.
            _ if error.is_timeout() => (
                StatusCode::GATEWAY_TIMEOUT,
                json!({ "error": "backend_timeout" }),
            ),
            BackendError::Local {
                kind: LocalKind::Overloaded,
                ..
            } => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "overloaded" }),
            ),
            // A request the gateway cannot send is the gateway's bug, not the backend's.
            BackendError::Local { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "gateway_error" }),
            ),
            // Refused, reset, closed, not HTTP, ...
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

/// The function `HandleErrorLayer` calls: axum routes only services whose error is
/// `Infallible`, and the layer's error is `BackendError`.
async fn backend_error_to_response(error: BackendError) -> GatewayError {
    GatewayError(error)
}

/// A service that forwards every request under `prefix` to `backend`, ready for
/// `Router::route_service`.
fn proxy(
    client: BackendClient,
    backend: SocketAddr,
    prefix: &'static str,
    layer: HealthClassifyLayer<PrintSink>,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
       + Clone
       + Send
       + Sync
       + 'static {
    ServiceBuilder::new()
        // Outermost: axum routes only services whose error is `Infallible`. This turns
        // the layer's `BackendError` into a response; every error that reaches it is
        // already a `BackendError`, because nothing between here and the layer fails.
        .layer(HandleErrorLayer::new(backend_error_to_response))
        .map_request(move |request| to_backend(request, backend, prefix))
        // Classifies and reports every exchange, and types every error below it.
        .layer(layer)
        // Inside the layer: tower's `Elapsed` is then an error the layer classifies, so
        // a timeout is reported as `transport timeout` and arrives here as
        // `BackendError::Timeout`. With `Timeout` outside the layer, the timer would
        // drop the layer's future (reported as `Cancelled`, which never counts against
        // the backend) and `HandleErrorLayer` would get tower's `BoxError`.
        .timeout(BACKEND_TIMEOUT)
        .service(client)
}

/// Points a request received under `prefix` at the same path on `backend`.
fn to_backend(mut request: Request, backend: SocketAddr, prefix: &str) -> Request {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    *request.uri_mut() = format!("http://{backend}{rest}")
        .parse()
        .expect("a path taken from a valid URI stays valid");
    // The client sets `Host` from the new URI when the request has none.
    request.headers_mut().remove(header::HOST);
    request
}

/// What the `/greeting` handler needs: the layered client and where its backend is.
#[derive(Clone)]
struct Api {
    /// `HealthClassify -> Timeout -> client`, in the order and for the reasons above.
    client: HealthClassify<Timeout<BackendClient>, PrintSink, DefaultClassifier>,
    backend: SocketAddr,
}

/// A handler that calls the backend itself: `?` turns a `BackendError` into the same
/// 502/504 responses, no `HandleErrorLayer` needed.
async fn greeting(State(api): State<Api>) -> Result<String, GatewayError> {
    let request = http::Request::get(format!("http://{}/hello", api.backend))
        .body(Body::empty())
        .expect("a valid request");
    let response = api.client.oneshot(request).await?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| BackendError::from_error(e.into()))?;
    Ok(format!(
        "the backend says: {}",
        String::from_utf8_lossy(&body.to_bytes())
    ))
}

/// The backend: `/hello` answers, `/private` wants a Bearer token, `/stuck` never answers.
async fn start_backend() -> SocketAddr {
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/private",
            get(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, CHALLENGE)],
                )
            }),
        )
        .route("/stuck", get(std::future::pending::<()>));
    serve(app).await
}

async fn start_gateway(backend: SocketAddr, down: SocketAddr) -> SocketAddr {
    let client: BackendClient = Client::builder(TokioExecutor::new()).build_http();
    let typed = HealthClassifyLayer::new(PrintSink { backend: "api" });
    let app = Router::new()
        .route_service(
            "/typed/{*rest}",
            proxy(client.clone(), backend, "/typed", typed.clone()),
        )
        .route_service(
            "/pass/{*rest}",
            proxy(
                client.clone(),
                backend,
                "/pass",
                typed.clone().pass_through_auth(),
            ),
        )
        .route_service(
            "/down/{*rest}",
            proxy(
                client.clone(),
                down,
                "/down",
                HealthClassifyLayer::new(PrintSink { backend: "down" }),
            ),
        )
        .route("/greeting", get(greeting))
        .with_state(Api {
            client: ServiceBuilder::new()
                .layer(typed)
                .timeout(BACKEND_TIMEOUT)
                .service(client),
            backend,
        });
    serve(app).await
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let backend = start_backend().await;
    let gateway = start_gateway(backend, closed_port()).await;

    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let cases = [
        ("a plain success", "/typed/hello", None),
        (
            "the backend rejects the user's token (typed: 502)",
            "/typed/private",
            Some("Bearer user-token"),
        ),
        (
            "the backend challenges (pass-through: the 401 as sent)",
            "/pass/private",
            None,
        ),
        ("nothing listens (502)", "/down/hello", None),
        ("the backend never answers (504)", "/typed/stuck", None),
        ("a handler calls the backend", "/greeting", None),
    ];
    for (name, path, authorization) in cases {
        println!("{name}: GET {path}");
        let mut request = http::Request::get(format!("http://{gateway}{path}"));
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = client
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        print_response(response).await;
    }
}

async fn print_response(response: http::Response<Incoming>) {
    let status = response.status();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    println!("    got       {status} {}", String::from_utf8_lossy(&body));
    if let Some(challenge) = challenge {
        println!(
            "              www-authenticate: {}",
            challenge.to_str().unwrap()
        );
    }
}
