//! End-to-end tests of the proxy example (`examples/proxy/`): its modules are compiled into
//! this test, each test starts the proxy in-process on an ephemeral loopback port in front
//! of loopback backends (`tests/proxy/backends.rs`), and talks to it over real sockets.
//! Nothing leaves 127.0.0.1. The modules' own unit tests (config parsing, durations, token
//! cache on paused time, hop-by-hop headers) run here too.
//!
//! Waits are bounded (5 s) but nothing asserts on how long anything took.

#![cfg(all(
    feature = "probe",
    feature = "serde",
    feature = "metrics",
    feature = "hyper-util"
))]

// The example's modules; main.rs uses all of them, these tests only part.
#[allow(dead_code)]
#[path = "../examples/proxy/auth.rs"]
mod auth;
#[allow(dead_code)]
#[path = "../examples/proxy/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../examples/proxy/demo.rs"]
mod demo;
#[allow(dead_code)]
#[path = "../examples/proxy/discovery.rs"]
mod discovery;
#[allow(dead_code)]
#[path = "../examples/proxy/endpoints.rs"]
mod endpoints;
#[allow(dead_code)]
#[path = "../examples/proxy/forward.rs"]
mod forward;
#[allow(dead_code)]
#[path = "../examples/proxy/gateway.rs"]
mod gateway;
#[allow(dead_code)]
#[path = "../examples/proxy/health.rs"]
mod health;
#[allow(dead_code)]
#[path = "../examples/proxy/token.rs"]
mod token;

#[path = "proxy/backends.rs"]
mod backends;
#[path = "support/logs.rs"]
mod logs;
#[path = "support/mcp_server.rs"]
mod mcp_server;
#[path = "support/tls.rs"]
mod tls_support;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower_health_classify::{HealthStatus, Reason, TlsFailure, TransportKind};

use crate::backends::{channel_body, closed_port, garbage, raw, recording, silent, Seen, Server};
use crate::gateway::Gateway;
use crate::logs::Logs;

/// Every wait in these tests gives up (and fails) after this long.
const PATIENCE: Duration = Duration::from_secs(5);

/// Probes every 50 ms; one verdict moves a status.
const FAST: &str = r#"
[health]
interval = "50ms"
timeout = "1s"
jitter = 0.0
unhealthy_threshold = 1
healthy_threshold = 1
degraded_threshold = 1
"#;

/// One probe at start, then none for an hour: traffic alone moves what follows. No gate:
/// these tests look at what a failing backend's answers become, and the probe at start
/// may mark the backend before their first request (the gate has its own test).
const ONCE: &str = r#"
[health]
interval = "1h"
timeout = "1s"
jitter = 0.0
unhealthy_threshold = 1
healthy_threshold = 1
degraded_threshold = 1
fail_fast = false
"#;

/// Marks the probes so that a backend can tell them from traffic.
const PROBE: &str = "[backends.probe]\nheaders = { \"x-probe\" = \"1\" }\n";

// === helpers ===

/// The idle timeout of the process's one Prometheus recorder, installed by [`start`]
/// before any gateway's own choice (ten probe intervals, an hour for [`ONCE`]) can apply:
/// short, so that a removed backend's series are seen to go.
const METRICS_IDLE: Duration = Duration::from_millis(300);

async fn start(toml: &str, env: &[(&str, &str)]) -> Gateway {
    health::prometheus(METRICS_IDLE);
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = config::parse(toml, &|name: &str| env.get(name).cloned())
        .unwrap_or_else(|e| panic!("test config: {e}\n{toml}"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    gateway::start(&config, listener).unwrap()
}

fn url(gateway: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gateway.addr())
}

/// A `[[backends]]` entry.
fn backend(name: &str, url: &str, strategy: &str, extra: &str) -> String {
    format!(
        "\n[[backends]]\nname = \"{name}\"\nurl = \"{url}\"\nstrategy = \"{strategy}\"\n{extra}\n"
    )
}

struct Answer {
    version: Version,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn send(request: Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("the proxy answers")
        .expect("the proxy answers");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the body ends")
        .unwrap()
        .to_bytes();
    Answer {
        version: parts.version,
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(url: &str) -> Answer {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(url).body(Full::default()).unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    send(request).await
}

/// Waits until `backend` is in `status`.
async fn wait_status(gateway: &Gateway, backend: &str, status: HealthStatus) {
    let reached = tokio::time::timeout(PATIENCE, async {
        while gateway.registry().status(backend) != Some(status) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if reached.is_err() {
        panic!(
            "{backend} never became {status}: {:#?}",
            gateway.registry().snapshot()
        );
    }
}

/// Waits until `condition` holds.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("never happened: {what}"))
}

fn ok_json(body: &serde_json::Value) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn ok(_: &Seen) -> Response {
    Response::new(Body::from("ok"))
}

fn too_many_requests(_: &Seen) -> Response {
    let mut response = Response::new(Body::from("slow down"));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response
}

fn challenge(_: &Seen) -> Response {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(
            header::WWW_AUTHENTICATE,
            r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource", scope="mcp""#,
        )
        .body(Body::empty())
        .unwrap()
}

// === routing ===

#[tokio::test]
async fn routes_path_and_query_to_the_backend_under_its_base_path() {
    let (server, seen) = recording(|seen: &Seen| {
        ok_json(
            &serde_json::json!({ "uri": seen.uri, "body": String::from_utf8_lossy(&seen.body) }),
        )
    })
    .await;
    let base = format!("{}/api/", server.url());
    let gateway = start(&backend("echo", &base, "unauthenticated", PROBE), &[]).await;

    let cases = [
        ("/echo/a/b?x=1&y=two%20words", "/api/a/b?x=1&y=two%20words"),
        ("/echo/a%2Fb/", "/api/a%2Fb/"),
        ("/echo", "/api/"),
        ("/echo/", "/api/"),
        ("/echo?q=1", "/api/?q=1"),
    ];
    for (path, want) in cases {
        let answer = get(&url(&gateway, path)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.json()["uri"], want, "{path}");
    }

    let posted = send(
        Request::post(url(&gateway, "/echo/submit"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from_static(b"hello backend")))
            .unwrap(),
    )
    .await;
    assert_eq!(posted.json()["body"], "hello backend");

    let last = seen.traffic().pop().unwrap();
    assert_eq!(last.method, Method::POST);
    assert_eq!(last.header("host"), Some(server.addr.to_string().as_str()));
    assert_eq!(last.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        last.header("x-forwarded-host"),
        Some(gateway.addr().to_string().as_str())
    );
    assert_eq!(last.header("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let (server, seen) = recording(|_: &Seen| {
        Response::builder()
            .header("connection", "x-private")
            .header("x-private", "backend-internal")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"inner\"")
            .header("upgrade", "h2c")
            .header("x-kept", "yes")
            .body(Body::from("ok"))
            .unwrap()
    })
    .await;
    let gateway = start(
        &backend("api", &server.url(), "unauthenticated", PROBE),
        &[],
    )
    .await;

    let answer = get_with(
        &url(&gateway, "/api/"),
        &[
            ("connection", "x-caller-private"),
            ("x-caller-private", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic cHJveHk6cHJveHk="),
            ("x-caller-kept", "1"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    for name in ["x-private", "keep-alive", "proxy-authenticate", "upgrade"] {
        assert!(
            !answer.headers.contains_key(name),
            "{name} reached the client"
        );
    }
    assert_eq!(answer.headers["x-kept"], "yes");

    let request = seen.traffic().pop().unwrap();
    for name in [
        "x-caller-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(request.header(name).is_none(), "{name} reached the backend");
    }
    assert_eq!(request.header("x-caller-kept"), Some("1"));
}

#[tokio::test]
async fn answers_in_its_own_http_version_whatever_the_backend_speaks() {
    let (addr, _task) = raw(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let gateway = start(
        &backend("old", &format!("http://{addr}"), "unauthenticated", ""),
        &[],
    )
    .await;

    let answer = get(&url(&gateway, "/old/")).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "ok")
    );
    assert_eq!(
        answer.version,
        Version::HTTP_11,
        "not the backend's HTTP/1.0"
    );
}

// === outgoing auth ===

#[tokio::test]
async fn an_injected_header_reaches_the_backend_and_never_the_client() {
    // A backend that echoes the key back, as a debugging endpoint might.
    let (server, seen) = recording(|seen: &Seen| {
        let mut response = Response::new(Body::from("ok"));
        if let Some(key) = seen.headers.get("x-api-key") {
            response.headers_mut().insert("x-api-key", key.clone());
        }
        response
    })
    .await;
    let gateway = start(
        &format!(
            "{FAST}{}",
            backend(
                "keyed",
                &server.url(),
                "header_injection",
                &format!("header = \"x-api-key\"\nvalue_env = \"KEYED_API_KEY\"\n{PROBE}")
            )
        ),
        &[("KEYED_API_KEY", "key-from-the-environment")],
    )
    .await;

    let answer = get_with(
        &url(&gateway, "/keyed/data"),
        &[
            ("x-api-key", "the-callers-own"),
            ("authorization", "Bearer caller"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        !answer.headers.contains_key("x-api-key"),
        "{:?}",
        answer.headers
    );
    assert!(!answer.body.contains("key-from-the-environment"));

    let traffic = seen.traffic().pop().unwrap();
    assert_eq!(
        traffic.header("x-api-key"),
        Some("key-from-the-environment")
    );
    assert_eq!(
        traffic.headers.get_all("x-api-key").iter().count(),
        1,
        "the caller's copy is replaced"
    );
    assert_eq!(traffic.header("authorization"), None);

    wait_until("a probe", || !seen.probes().is_empty()).await;
    let probe = seen.probes().pop().unwrap();
    assert_eq!(probe.header("x-api-key"), Some("key-from-the-environment"));
    wait_status(&gateway, "keyed", HealthStatus::Healthy).await;
}

#[tokio::test]
async fn unauthenticated_backends_never_see_the_callers_authorization() {
    let (server, seen) = recording(ok).await;
    let gateway = start(
        &backend("open", &server.url(), "unauthenticated", PROBE),
        &[],
    )
    .await;
    let answer = get_with(
        &url(&gateway, "/open/"),
        &[("authorization", "Bearer user-token-for-the-gateway")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let request = seen.traffic().pop().unwrap();
    assert_eq!(request.header("authorization"), None);
}

#[tokio::test]
async fn upstream_inject_forwards_the_callers_authorization_and_probes_send_none() {
    let (server, seen) = recording(ok).await;
    let gateway = start(
        &format!(
            "{FAST}{}",
            backend(
                "user",
                &server.url(),
                "upstream_inject",
                // Even a probe configured with one sends none.
                "[backends.probe]\nheaders = { \"x-probe\" = \"1\", authorization = \"Bearer probe\" }\n"
            )
        ),
        &[],
    )
    .await;
    let answer = get_with(
        &url(&gateway, "/user/me"),
        &[("authorization", "Bearer user-1")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        seen.traffic().pop().unwrap().header("authorization"),
        Some("Bearer user-1")
    );
    wait_until("a probe", || !seen.probes().is_empty()).await;
    assert!(seen
        .probes()
        .iter()
        .all(|probe| probe.header("authorization").is_none()));
}

#[tokio::test]
async fn challenges_pass_through_and_are_judged_by_the_strategy() {
    let (server, _) = recording(challenge).await;
    let toml = format!(
        "{ONCE}{}{}",
        backend("oauth", &server.url(), "upstream_inject", PROBE),
        backend("misconfigured", &server.url(), "unauthenticated", PROBE),
    );
    let gateway = start(&toml, &[]).await;

    // The probe, without credentials, got the challenge: the backend is up.
    wait_status(&gateway, "oauth", HealthStatus::Healthy).await;
    let health = gateway.registry().handle("oauth").unwrap().health();
    assert_eq!(health.reason, Some(Reason::ExpectedChallenge));

    // The caller gets the 401 and its challenge, untouched.
    let answer = get(&url(&gateway, "/oauth/mcp")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.headers[header::WWW_AUTHENTICATE],
        r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource", scope="mcp""#
    );

    // A user's token rejected: the user's problem, the backend stays healthy.
    let answer = get_with(
        &url(&gateway, "/oauth/mcp"),
        &[("authorization", "Bearer expired")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let health = gateway.registry().handle("oauth").unwrap().health();
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.reason, Some(Reason::UserCredentialsRejected));

    // The same backend with no auth configured: the operator must be told.
    wait_status(&gateway, "misconfigured", HealthStatus::Unauthenticated).await;
    let health = gateway.registry().handle("misconfigured").unwrap().health();
    assert_eq!(health.reason, Some(Reason::NoAuthConfigured));
}

/// A token endpoint that counts its requests and checks them.
async fn token_endpoint(
    answer: fn(usize) -> Response,
) -> (Server, backends::Recorder, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let (server, seen) =
        recording(move |_: &Seen| answer(counter.fetch_add(1, Ordering::SeqCst) + 1)).await;
    (server, seen, count)
}

fn issue_token(n: usize) -> Response {
    ok_json(&serde_json::json!({
        "access_token": format!("access-token-{n}"),
        "token_type": "Bearer",
        "expires_in": 3600,
    }))
}

#[tokio::test]
async fn token_exchange_fetches_once_and_reuses_the_token() {
    let (tokens, token_requests, fetches) = token_endpoint(issue_token).await;
    let (server, seen) = recording(ok).await;
    let toml = format!(
        "{FAST}{}",
        backend(
            "billing",
            &server.url(),
            "token_exchange",
            &format!(
                "token_url = \"{}/oauth/token\"\nclient_id = \"gateway\"\nclient_secret_env = \"BILLING_SECRET\"\nscope = \"billing:read billing:write\"\n{PROBE}",
                tokens.url()
            )
        )
    );
    let gateway = start(&toml, &[("BILLING_SECRET", "client-secret-value")]).await;

    // Concurrent requests, then more, while probes run.
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..10 {
        let url = url(&gateway, &format!("/billing/invoices/{i}"));
        requests.spawn(async move {
            get_with(&url, &[("authorization", "Bearer caller")])
                .await
                .status
        });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    wait_until("two probes", || seen.probes().len() >= 2).await;
    for _ in 0..5 {
        assert_eq!(
            get(&url(&gateway, "/billing/")).await.status,
            StatusCode::OK
        );
    }

    assert_eq!(fetches.load(Ordering::SeqCst), 1, "one token fetch in all");
    assert!(
        seen.all()
            .iter()
            .all(|request| request.header("authorization") == Some("Bearer access-token-1")),
        "every request and probe carried the token, and only it"
    );
    let grant = token_requests.all().pop().unwrap();
    assert_eq!(grant.method, Method::POST);
    assert_eq!(grant.uri, "/oauth/token");
    assert_eq!(
        grant.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        std::str::from_utf8(&grant.body).unwrap(),
        "grant_type=client_credentials&scope=billing%3Aread%20billing%3Awrite"
    );
    // base64("gateway:client-secret-value")
    assert_eq!(
        grant.header("authorization"),
        Some("Basic Z2F0ZXdheTpjbGllbnQtc2VjcmV0LXZhbHVl")
    );
    wait_status(&gateway, "billing", HealthStatus::Healthy).await;
}

#[tokio::test]
async fn a_token_endpoint_that_refuses_or_is_down_is_reported_against_the_backend() {
    fn refuse(_: usize) -> Response {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"error":"invalid_client"}"#))
            .unwrap()
    }
    let (tokens, _, _) = token_endpoint(refuse).await;
    let (server, seen) = recording(ok).await;
    let grant = |token_url: &str| {
        format!("token_url = \"{token_url}\"\nclient_id = \"gateway\"\nclient_secret_env = \"SECRET\"\nclient_auth = \"post\"\n{PROBE}")
    };
    let toml = format!(
        "{ONCE}{}{}",
        backend(
            "refused",
            &server.url(),
            "token_exchange",
            &grant(&format!("{}/token", tokens.url()))
        ),
        backend(
            "nobody",
            &server.url(),
            "token_exchange",
            &grant(&format!("http://{}/token", closed_port()))
        ),
    );
    let gateway = start(&toml, &[("SECRET", "s")]).await;

    let answer = get(&url(&gateway, "/refused/")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["error"], "token_exchange_failed");
    assert_eq!(answer.json()["reason"], "credentials_rejected");
    wait_status(&gateway, "refused", HealthStatus::Unauthenticated).await;
    let health = gateway.registry().handle("refused").unwrap().health();
    // Found by the probes, which carry the gateway's credentials; a caller's request
    // that got the same answer is never held against the backend by itself.
    assert_eq!(
        health.evidence,
        Some(tower_health_classify::Evidence::Probes)
    );
    assert!(
        matches!(
            health.reason,
            Some(Reason::CredentialsRejected | Reason::RequestDenied)
        ),
        "{health:?}"
    );

    let answer = get(&url(&gateway, "/nobody/")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.json()["reason"], "connection_refused");
    wait_status(&gateway, "nobody", HealthStatus::Unhealthy).await;
    let health = gateway.registry().handle("nobody").unwrap().health();
    assert_eq!(
        health.reason,
        Some(Reason::Transport(TransportKind::ConnectionRefused))
    );

    assert!(
        seen.all().is_empty(),
        "no request reached the backend without a token"
    );
}

// === failures ===

#[tokio::test]
async fn transport_failures_give_502_and_504_and_unknown_backends_404() {
    let (silent, _silent_task) = silent().await;
    let (garbage, _garbage_task) = garbage().await;
    let toml = format!(
        "{ONCE}{}{}{}",
        backend(
            "closed",
            &format!("http://{}", closed_port()),
            "unauthenticated",
            ""
        ),
        backend(
            "slow",
            &format!("http://{silent}"),
            "unauthenticated",
            "timeout = \"200ms\"\n"
        ),
        backend(
            "garbled",
            &format!("http://{garbage}"),
            "unauthenticated",
            ""
        ),
    );
    let gateway = start(&toml, &[]).await;

    let cases: &[(&str, StatusCode, &str, Option<&str>)] = &[
        (
            "/closed/x",
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            Some("connection_refused"),
        ),
        (
            "/slow/x",
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            Some("timeout"),
        ),
        (
            "/garbled/x",
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            Some("protocol"),
        ),
        ("/nope/x", StatusCode::NOT_FOUND, "unknown_backend", None),
        ("/healthz/x", StatusCode::NOT_FOUND, "unknown_backend", None),
    ];
    for (path, status, error, reason) in cases {
        let answer = get(&url(&gateway, path)).await;
        assert_eq!(answer.status, *status, "{path}: {}", answer.body);
        assert_eq!(
            answer.headers[header::CONTENT_TYPE],
            "application/json",
            "{path}"
        );
        let json = answer.json();
        assert_eq!(json["error"], *error, "{path}");
        assert_eq!(json["reason"].as_str(), *reason, "{path}");
    }
    wait_status(&gateway, "slow", HealthStatus::Unhealthy).await;
}

// === health endpoints ===

#[tokio::test]
async fn health_backends_shows_every_backend_after_probes() {
    let (healthy, _) = recording(ok).await;
    let (oauth, _) = recording(challenge).await;
    let toml = format!(
        "{FAST}{}{}{}",
        backend("search", &healthy.url(), "unauthenticated", ""),
        backend("github", &oauth.url(), "upstream_inject", ""),
        backend(
            "gone",
            &format!("http://{}", closed_port()),
            "unauthenticated",
            ""
        ),
    );
    let gateway = start(&toml, &[]).await;
    wait_status(&gateway, "search", HealthStatus::Healthy).await;
    wait_status(&gateway, "github", HealthStatus::Healthy).await;
    wait_status(&gateway, "gone", HealthStatus::Unhealthy).await;

    let answer = get(&url(&gateway, "/health/backends")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let json = answer.json();
    assert_eq!(json["phase"], "degraded");
    assert_eq!(json["summary"]["healthy"], 2);
    assert_eq!(json["summary"]["unhealthy"], 1);
    let backends: HashMap<&str, &serde_json::Value> = json["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap(), b))
        .collect();
    let expect = [
        ("search", "unauthenticated", "healthy", "ok"),
        ("github", "upstream_inject", "healthy", "expected_challenge"),
        ("gone", "unauthenticated", "unhealthy", "connection_refused"),
    ];
    for (name, strategy, status, reason) in expect {
        let backend = backends[name];
        assert_eq!(backend["strategy"], strategy, "{name}");
        assert_eq!(backend["status"], status, "{name}");
        assert_eq!(backend["reason"], reason, "{name}");
        for field in [
            "consecutive_failures",
            "consecutive_successes",
            "since",
            "last_checked",
            "checks",
            "failures",
            "last_outcome",
            "last_error",
        ] {
            assert!(backend.get(field).is_some(), "{name} has no {field}");
        }
    }
    assert!(backends["gone"]["consecutive_failures"].as_u64().unwrap() >= 1);
    assert_eq!(backends["search"]["consecutive_failures"], 0);
}

#[tokio::test]
async fn a_backend_that_goes_down_and_comes_back_is_unhealthy_then_healthy() {
    let (server, _) = recording(ok).await;
    let addr = server.addr;
    let mut gateway = start(
        &format!(
            "{FAST}{}",
            backend("flaky", &server.url(), "unauthenticated", "")
        ),
        &[],
    )
    .await;
    let mut transitions = gateway.take_transitions().unwrap();
    wait_status(&gateway, "flaky", HealthStatus::Healthy).await;

    server.stop().await;
    wait_status(&gateway, "flaky", HealthStatus::Unhealthy).await;
    let down = gateway.registry().handle("flaky").unwrap().health();
    assert!(
        matches!(down.reason, Some(Reason::Transport(_))),
        "{down:?}"
    );

    let router = backends::recording_router(backends::Recorder::default(), ok);
    let _back = Server::start_on(addr, router)
        .await
        .expect("the port is free again");
    wait_status(&gateway, "flaky", HealthStatus::Healthy).await;

    let mut seen = Vec::new();
    while let Some(transition) = transitions.try_recv() {
        seen.push(transition.to);
    }
    let unhealthy = seen.iter().position(|s| *s == HealthStatus::Unhealthy);
    let healthy_after =
        unhealthy.and_then(|i| seen[i..].iter().position(|s| *s == HealthStatus::Healthy));
    assert!(healthy_after.is_some(), "transitions: {seen:?}");
}

#[tokio::test]
async fn healthz_answers_200_when_ready_or_degraded_and_503_otherwise() {
    let (healthy, _) = recording(ok).await;
    let (silent, _task) = silent().await;
    let closed = format!("http://{}", closed_port());

    // pending: registered, no verdict yet (the only probe hangs for a minute).
    let pending = start(
        &format!(
            "[health]\ninterval = \"1h\"\ntimeout = \"60s\"\n{}",
            backend(
                "hanging",
                &format!("http://{silent}"),
                "unauthenticated",
                ""
            )
        ),
        &[],
    )
    .await;
    let ready = start(
        &format!(
            "{FAST}{}",
            backend("up", &healthy.url(), "unauthenticated", "")
        ),
        &[],
    )
    .await;
    let failed = start(
        &format!("{FAST}{}", backend("down", &closed, "unauthenticated", "")),
        &[],
    )
    .await;
    let degraded = start(
        &format!(
            "{FAST}{}{}",
            backend("up", &healthy.url(), "unauthenticated", ""),
            backend("down", &closed, "unauthenticated", "")
        ),
        &[],
    )
    .await;
    // Every backend Degraded (throttled) still serves: `degraded`, not `failed`.
    let (throttling, _) = recording(too_many_requests).await;
    let all_degraded = start(
        &format!(
            "{FAST}{}{}",
            backend("slow1", &throttling.url(), "unauthenticated", ""),
            backend("slow2", &throttling.url(), "unauthenticated", "")
        ),
        &[],
    )
    .await;
    wait_status(&ready, "up", HealthStatus::Healthy).await;
    wait_status(&failed, "down", HealthStatus::Unhealthy).await;
    wait_status(&degraded, "up", HealthStatus::Healthy).await;
    wait_status(&degraded, "down", HealthStatus::Unhealthy).await;
    wait_status(&all_degraded, "slow1", HealthStatus::Degraded).await;
    wait_status(&all_degraded, "slow2", HealthStatus::Degraded).await;

    let cases = [
        (&pending, StatusCode::SERVICE_UNAVAILABLE, "pending"),
        (&ready, StatusCode::OK, "ready"),
        (&degraded, StatusCode::OK, "degraded"),
        (&all_degraded, StatusCode::OK, "degraded"),
        (&failed, StatusCode::SERVICE_UNAVAILABLE, "failed"),
    ];
    for (gateway, status, phase) in cases {
        let answer = get(&url(gateway, "/healthz")).await;
        assert_eq!(answer.status, status, "{phase}");
        assert_eq!(answer.json()["phase"], phase);
    }
}

#[tokio::test]
async fn metrics_shows_backend_status_in_prometheus_text() {
    let (healthy, _) = recording(ok).await;
    let gateway = start(
        &format!(
            "{FAST}{}",
            backend("metered", &healthy.url(), "unauthenticated", "")
        ),
        &[],
    )
    .await;
    wait_status(&gateway, "metered", HealthStatus::Healthy).await;
    let answer = get(&url(&gateway, "/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for line in [
        r#"backend_health_status{backend="metered",status="healthy"} 1"#,
        r#"backend_health_status{backend="metered",status="unknown"} 0"#,
        r#"backend_health_transitions_total{backend="metered",from="unknown",to="healthy"} 1"#,
    ] {
        assert!(
            answer.body.lines().any(|l| l == line),
            "no {line} in\n{}",
            answer.body
        );
    }
    assert!(answer
        .body
        .contains(r#"backend_health_latency_seconds_bucket{backend="metered""#));
}

/// A removed backend's series leave `/metrics` once idle for the timeout. Those of the
/// backend that stays, whose status gauge and transition counter have not moved since
/// before the removal, are still there in the same scrape: only `keep_alive` kept them.
#[tokio::test]
async fn a_removed_backends_series_leave_metrics_and_a_steady_backends_stay() {
    let (stays, _) = recording(ok).await;
    let (leaves, _) = recording(ok).await;
    let gateway = start(
        &format!(
            "{FAST}{}{}",
            backend("stays", &stays.url(), "unauthenticated", ""),
            backend("leaves", &leaves.url(), "unauthenticated", "")
        ),
        &[],
    )
    .await;
    wait_status(&gateway, "stays", HealthStatus::Healthy).await;
    wait_status(&gateway, "leaves", HealthStatus::Healthy).await;
    let steady = [
        r#"backend_health_status{backend="stays",status="healthy"} 1"#,
        r#"backend_health_status{backend="stays",status="unknown"} 0"#,
        r#"backend_health_transitions_total{backend="stays",from="unknown",to="healthy"} 1"#,
    ];
    let before = get(&url(&gateway, "/metrics")).await.body;
    for line in steady
        .iter()
        .chain(&[r#"backend_health_status{backend="leaves",status="healthy"} 1"#])
    {
        assert!(before.lines().any(|l| l == *line), "no {line} in\n{before}");
    }

    assert!(gateway.registry().remove("leaves"));
    let mut scrapes = 0;
    let after = tokio::time::timeout(PATIENCE, async {
        loop {
            let body = get(&url(&gateway, "/metrics")).await.body;
            scrapes += 1;
            if !body.contains(r#"backend="leaves""#) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the removed backend's series never left /metrics"));
    assert!(
        scrapes > 1,
        "gone at once: the timeout was not what removed them"
    );
    for line in steady {
        assert!(after.lines().any(|l| l == line), "no {line} in\n{after}");
    }
    assert!(after.contains(r#"backend_health_latency_seconds_bucket{backend="stays""#));
}

// === streaming ===

#[tokio::test]
async fn an_event_stream_arrives_chunk_by_chunk() {
    let (release, released) = mpsc::channel::<()>(1);
    let released = Arc::new(tokio::sync::Mutex::new(released));
    let router = Router::new().fallback(any(move |request: Request<Body>| {
        let released = released.clone();
        async move {
            if request.uri().path() != "/sse" {
                return Response::new(Body::from("ok"));
            }
            let (sender, body) = channel_body();
            tokio::spawn(async move {
                let _ = sender
                    .send(Bytes::from_static(b"event: message\ndata: one\n\n"))
                    .await;
                // The second event waits until the test has the first one.
                let _ = released.lock().await.recv().await;
                let _ = sender
                    .send(Bytes::from_static(b"event: message\ndata: two\n\n"))
                    .await;
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::new(body))
                .unwrap()
        }
    }));
    let server = Server::start(router).await;
    let gateway = start(&backend("mcp", &server.url(), "unauthenticated", ""), &[]).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = within(
        "the response head",
        client.request(
            Request::get(url(&gateway, "/mcp/sse"))
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();

    let mut received = Vec::new();
    while !received.ends_with(b"data: one\n\n") {
        let frame = within("the first event, before the second is sent", body.frame())
            .await
            .expect("the stream is open")
            .unwrap();
        received.extend_from_slice(frame.data_ref().unwrap());
    }
    assert_eq!(received, b"event: message\ndata: one\n\n");

    release.send(()).await.unwrap();
    let rest = within("the rest of the stream", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&rest[..], b"event: message\ndata: two\n\n");
}

#[tokio::test]
async fn a_request_body_streams_to_the_backend() {
    let (first_tx, mut first_rx) = mpsc::channel::<Bytes>(1);
    let router = Router::new().fallback(any(move |request: Request<Body>| {
        let first_tx = first_tx.clone();
        async move {
            let mut body = request.into_body();
            let mut all = Vec::new();
            let mut told = false;
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap_or_default();
                if !told {
                    let _ = first_tx.send(data.clone()).await;
                    told = true;
                }
                all.extend_from_slice(&data);
            }
            Response::new(Body::from(all))
        }
    }));
    let server = Server::start(router).await;
    let gateway = start(
        &backend("upload", &server.url(), "unauthenticated", ""),
        &[],
    )
    .await;

    let (sender, body) = channel_body();
    let client = Client::builder(TokioExecutor::new()).build_http::<backends::ChannelBody>();
    let request = Request::post(url(&gateway, "/upload/")).body(body).unwrap();
    let response = tokio::spawn(client.request(request));

    sender
        .send(Bytes::from_static(b"first chunk;"))
        .await
        .unwrap();
    let first = within(
        "the backend reads the first chunk while the upload goes on",
        first_rx.recv(),
    )
    .await
    .unwrap();
    assert_eq!(&first[..], b"first chunk;");
    sender
        .send(Bytes::from_static(b"second chunk"))
        .await
        .unwrap();
    drop(sender);

    let response = within("the response", response).await.unwrap().unwrap();
    let echoed = within("the echo", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&echoed[..], b"first chunk;second chunk");
}

// === secrets ===

// The default current-thread runtime: every task of the proxy runs on this thread, under
// this thread's subscriber.
#[tokio::test]
async fn secrets_never_reach_logs_or_health_endpoints() {
    const API_KEY: &str = "api-key-3f9a1c";
    const CLIENT_SECRET: &str = "client-secret-77be02";
    const ACCESS_TOKEN: &str = "access-token-c0ffee";
    const USER_TOKEN: &str = "user-token-9d2e41";
    let (logs, _guard) = Logs::capture(tracing::Level::TRACE);

    fn issue(_: usize) -> Response {
        ok_json(&serde_json::json!({ "access_token": ACCESS_TOKEN, "expires_in": 3600 }))
    }
    fn refuse(_: usize) -> Response {
        Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Body::from(format!(
                r#"{{"error":"invalid_client","error_description":"{CLIENT_SECRET} is wrong"}}"#
            )))
            .unwrap()
    }
    let (tokens, _, _) = token_endpoint(issue).await;
    let (refusing, _, _) = token_endpoint(refuse).await;
    // Rejects the key: the failure path logs too.
    let (rejecting, _) = recording(|_: &Seen| {
        Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header(
                header::WWW_AUTHENTICATE,
                r#"Bearer error="insufficient_scope""#,
            )
            .body(Body::empty())
            .unwrap()
    })
    .await;
    let (echo, _) = recording(|seen: &Seen| {
        let mut response = Response::new(Body::from("ok"));
        for (name, value) in &seen.headers {
            if name.as_str().starts_with("x-") || name == header::AUTHORIZATION {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
        response
    })
    .await;
    let grant = |token_url: String, auth: &str| {
        format!("token_url = \"{token_url}\"\nclient_id = \"gw\"\nclient_secret_env = \"CLIENT_SECRET\"\nclient_auth = \"{auth}\"\n")
    };
    let key = "header = \"x-api-key\"\nvalue_env = \"API_KEY\"\n";
    let toml = format!(
        "{FAST}{}{}{}{}{}",
        backend("keyed", &echo.url(), "header_injection", key),
        backend("rejecting", &rejecting.url(), "header_injection", key),
        backend(
            "exchanged",
            &echo.url(),
            "token_exchange",
            &grant(format!("{}/token", tokens.url()), "post")
        ),
        backend(
            "refused",
            &echo.url(),
            "token_exchange",
            &grant(format!("{}/token", refusing.url()), "basic")
        ),
        backend("user", &echo.url(), "upstream_inject", ""),
    );
    let gateway = start(
        &toml,
        &[("API_KEY", API_KEY), ("CLIENT_SECRET", CLIENT_SECRET)],
    )
    .await;

    let user = format!("Bearer {USER_TOKEN}");
    let mut bodies = String::new();
    for name in ["keyed", "rejecting", "exchanged", "refused", "user"] {
        let answer = get_with(
            &url(&gateway, &format!("/{name}/x?access_token={USER_TOKEN}")),
            &[("authorization", &user)],
        )
        .await;
        for (header_name, value) in &answer.headers {
            let value = value.to_str().unwrap_or_default();
            assert!(
                !value.contains(API_KEY) && !value.contains(ACCESS_TOKEN),
                "{name}: the response header {header_name} carries a gateway secret"
            );
        }
        bodies.push_str(&answer.body);
    }
    wait_status(&gateway, "keyed", HealthStatus::Healthy).await;
    wait_status(&gateway, "rejecting", HealthStatus::Unauthenticated).await;
    wait_status(&gateway, "exchanged", HealthStatus::Healthy).await;
    wait_status(&gateway, "refused", HealthStatus::Unauthenticated).await;
    bodies.push_str(&get(&url(&gateway, "/health/backends")).await.body);
    bodies.push_str(&get(&url(&gateway, "/metrics")).await.body);
    bodies.push_str(&get(&url(&gateway, "/healthz")).await.body);

    let logs = logs.text();
    assert!(
        logs.contains("backend health changed"),
        "the capture works:\n{logs}"
    );
    assert!(
        logs.contains("token fetch failed"),
        "the failure was logged:\n{logs}"
    );
    for secret in [API_KEY, CLIENT_SECRET, ACCESS_TOKEN, USER_TOKEN] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
        assert!(!bodies.contains(secret), "{secret} in an answer:\n{bodies}");
    }
    gateway.shutdown(Duration::from_secs(1)).await;
}

// === MCP backends: probe kinds, judged streams, OAuth discovery ===

/// `[backends.probe]` of `kind` at `/mcp`.
fn probe_kind(kind: &str) -> String {
    format!("[backends.probe]\nkind = \"{kind}\"\npath = \"/mcp\"\n")
}

#[tokio::test]
async fn probe_kinds_from_the_config_file_judge_mcp_servers() {
    use mcp_server::{Answer, Behaviour, McpServer};
    let json = McpServer::start(Behaviour::answering(Answer::Json)).await;
    let sse = McpServer::start(Behaviour::answering(Answer::SseHeldOpen)).await;
    let oauth = McpServer::start(Behaviour::answering(Answer::Json).with_auth()).await;
    let html = McpServer::start(Behaviour::answering(Answer::Html)).await;
    let refusing = McpServer::start(Behaviour::answering(Answer::JsonRpcError)).await;
    let toml = [
        FAST.to_owned(),
        backend("json", &json.url(), "unauthenticated", &probe_kind("mcp")),
        backend("sse", &sse.url(), "unauthenticated", &probe_kind("mcp")),
        backend("oauth", &oauth.url(), "upstream_inject", &probe_kind("mcp")),
        backend(
            "docs",
            &oauth.url(),
            "upstream_inject",
            &probe_kind("oauth_metadata"),
        ),
        backend("html", &html.url(), "unauthenticated", &probe_kind("mcp")),
        backend(
            "refusing",
            &refusing.url(),
            "unauthenticated",
            &probe_kind("mcp"),
        ),
        // Today's kind on the same server: `GET /` is refused with 405.
        backend("plain", &json.url(), "unauthenticated", ""),
    ]
    .concat();
    let gateway = start(&toml, &[]).await;
    for (name, status) in [
        ("json", HealthStatus::Healthy),
        ("sse", HealthStatus::Healthy),
        ("oauth", HealthStatus::Healthy),
        ("docs", HealthStatus::Healthy),
        ("html", HealthStatus::Unhealthy),
        ("refusing", HealthStatus::Unhealthy),
        ("plain", HealthStatus::Unhealthy),
    ] {
        wait_status(&gateway, name, status).await;
    }
    let snapshot = get(&url(&gateway, "/health/backends")).await.json();
    let reason = |name: &str| {
        snapshot["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .map(|b| b["reason"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(reason("json"), "ok");
    assert_eq!(reason("sse"), "ok");
    assert_eq!(reason("oauth"), "expected_challenge");
    assert_eq!(reason("docs"), "ok");
    assert_eq!(reason("html"), "not_mcp");
    assert_eq!(reason("refusing"), "jsonrpc_error");
    assert_eq!(reason("plain"), "unexpected_status");

    let metrics = get(&url(&gateway, "/metrics")).await.body;
    assert!(
        metrics.contains(
            r#"backend_health_reports_total{backend="html",outcome="success",reason="not_mcp"}"#
        ),
        "{metrics}"
    );
    gateway.shutdown(Duration::from_secs(1)).await;
    for server in [&json, &sse] {
        wait_until("every probe session deleted", || {
            let log = server.log();
            log.initializes > 0 && log.open.is_empty()
        })
        .await;
    }
}

#[tokio::test]
async fn oauth_discovery_goes_through_the_proxy() {
    use mcp_server::{Answer, Behaviour, McpServer};
    let server = McpServer::start(Behaviour::answering(Answer::Json).with_auth()).await;
    // A public URL that is not the listen address: everything the proxy writes names it.
    let toml = format!(
        "public_url = \"https://gw.example/base/\"\n{ONCE}{}",
        backend(
            "tools",
            &server.url(),
            "upstream_inject",
            &probe_kind("mcp")
        )
    );
    let gateway = start(&toml, &[]).await;

    // A client that lies in every header it could: none of it may show up.
    let lying = [
        ("host", "evil.example"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "gopher"),
        ("forwarded", "host=evil.example"),
    ];
    let mut request = Request::post(url(&gateway, "/tools/mcp"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
        )))
        .unwrap();
    for (name, value) in lying {
        request.headers_mut().insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let answer = send(request).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let challenges: Vec<&str> = answer
        .headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let internal = format!(
        "http://{}/.well-known/oauth-protected-resource/mcp",
        server.addr
    );
    let proxied = "https://gw.example/base/tools/.well-known/oauth-protected-resource/mcp";
    // Byte for byte the backend's challenge, but for the one value.
    assert_eq!(
        challenges,
        [server.challenge().replace(&internal, proxied)],
        "realm, scope, error and error_description are kept as they were"
    );
    assert!(!challenges[0].contains("evil") && !challenges[0].contains("gopher"));

    // The document the challenge points at, from the backend, naming the proxy.
    for path in [
        "/tools/.well-known/oauth-protected-resource/mcp",
        // Where RFC 9728 puts it for `https://gw.example/base/tools/mcp`.
        "/.well-known/oauth-protected-resource/tools/mcp",
    ] {
        let answer = get_with(&url(&gateway, path), &lying).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
        let document = answer.json();
        assert_eq!(
            document["resource"], "https://gw.example/base/tools/mcp",
            "{path}"
        );
        assert_eq!(
            document["authorization_servers"],
            serde_json::json!(["http://127.0.0.1:1/"]),
            "{path}: the authorization server is the backend's own"
        );
        assert_eq!(
            document["scopes_supported"],
            serde_json::json!(["tools:read", "tools:call"]),
            "{path}"
        );
        assert!(!answer.body.contains("evil"), "{path}: {}", answer.body);
    }
    // The backend saw the metadata requests at its own well-known path, and no header
    // the client sent.
    let fetched = server
        .log()
        .of(&Method::GET, "/.well-known/oauth-protected-resource/mcp");
    assert_eq!(fetched.len(), 2);
    for request in fetched {
        assert!(!request.headers.contains_key("forwarded"));
        assert!(!request.headers.contains_key("x-forwarded-host"));
    }
    // A path without a document there is the backend's 404, passed on.
    let missing = get(&url(
        &gateway,
        "/tools/.well-known/oauth-protected-resource/other",
    ))
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metadata_urls_on_other_hosts_pass_unchanged_and_bad_documents_are_502() {
    let challenge = r#"Bearer realm="x", resource_metadata="https://auth.example/prm/tools""#;
    let router = Router::new().fallback(any(move |request: Request<Body>| async move {
        match request.uri().path() {
            "/.well-known/oauth-protected-resource" => ok_json(&serde_json::json!({
                "resource": "https://somewhere.else/mcp"
            })),
            "/.well-known/oauth-protected-resource/api/broken" => {
                Response::new(Body::from("not json"))
            }
            _ => Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, challenge)
                .body(Body::empty())
                .unwrap(),
        }
    }));
    let server = Server::start(router).await;
    let toml = [
        ONCE.to_owned(),
        backend("far", &server.url(), "upstream_inject", ""),
        backend(
            "api",
            &format!("{}/api", server.url()),
            "upstream_inject",
            "",
        ),
    ]
    .concat();
    let gateway = start(&toml, &[]).await;
    let answer = get(&url(&gateway, "/far/mcp")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers[header::WWW_AUTHENTICATE], challenge);

    let mismatch = get(&url(&gateway, "/far/.well-known/oauth-protected-resource")).await;
    assert_eq!(mismatch.status, StatusCode::BAD_GATEWAY);
    assert_eq!(mismatch.json()["error"], "resource_mismatch");
    // The backend's base path is part of the resource: `/api` + `/broken`.
    let broken = get(&url(
        &gateway,
        "/api/.well-known/oauth-protected-resource/broken",
    ))
    .await;
    assert_eq!(broken.status, StatusCode::BAD_GATEWAY);
    assert_eq!(broken.json()["error"], "invalid_metadata");
}

#[tokio::test]
async fn a_backend_dying_mid_stream_is_reported_once_through_the_proxy() {
    use mcp_server::{Answer, Behaviour, McpServer};
    let server = McpServer::start(Behaviour::answering(Answer::DiesMidSse)).await;
    // Probes read the (public) metadata document: Healthy until traffic says otherwise.
    let probe = "[backends.probe]\npath = \"/.well-known/oauth-protected-resource/mcp\"\n";
    let toml = format!(
        "{ONCE}{}",
        backend("mcp", &server.url(), "unauthenticated", probe)
    );
    let gateway = start(&toml, &[]).await;
    wait_status(&gateway, "mcp", HealthStatus::Healthy).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = within(
        "the head of the event stream",
        client.request(
            Request::post(url(&gateway, "/mcp/mcp"))
                .body(Full::new(Bytes::from_static(br#"{"method":"initialize"}"#)))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let error = within("the stream's end", response.into_body().collect()).await;
    assert!(
        error.is_err(),
        "the client sees the stream cut, not a clean end"
    );

    // The probe, then the stream's head and its failing frame.
    wait_until("the failing frame reported", || {
        gateway.registry().snapshot().backends[0].checks == 3
    })
    .await;
    let health = gateway.registry().snapshot().backends.remove(0);
    assert_eq!(
        health.reason,
        Some(Reason::Transport(TransportKind::Closed))
    );
    assert_eq!(health.last_outcome, Some("transport"));
    assert_eq!((health.checks, health.failures), (3, 1), "one failure");
    // One failing call is a sample of traffic, not yet enough to move the status.
    assert_eq!(health.status, HealthStatus::Healthy);
    let metrics = get(&url(&gateway, "/metrics")).await.body;
    assert!(
        metrics.contains(
            r#"backend_health_reports_total{backend="mcp",outcome="transport",reason="closed"} 1"#
        ),
        "{metrics}"
    );
}

// === demo ===

/// The demo's backends and its proxy, probing every 50 ms.
async fn start_demo() -> (demo::DemoBackends, Gateway) {
    let backends = demo::start_backends().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = demo::config(
        &backends,
        listener.local_addr().unwrap(),
        Duration::from_millis(50),
    );
    let gateway = gateway::start(&config, listener).unwrap();
    (backends, gateway)
}

#[tokio::test]
async fn the_demo_s_catalog_keeps_answering_when_its_second_endpoint_stops() {
    let (backends, gateway) = start_demo().await;
    let [a, b] = backends
        .catalog
        .map(|addr| format!("catalog@http://{addr}"));
    wait_status(&gateway, &a, HealthStatus::Healthy).await;
    wait_status(&gateway, &b, HealthStatus::Healthy).await;
    let endpoint = |answer: &Answer| answer.json()["endpoint"].as_str().unwrap().to_owned();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let answer = get(&url(&gateway, "/catalog/")).await;
        assert_eq!(answer.status, StatusCode::OK);
        seen.insert(endpoint(&answer));
    }
    assert_eq!(seen.len(), 2, "both endpoints serve: {seen:?}");

    backends.catalog_b.abort();
    // The abort takes effect when its task is next polled: wait until the port refuses.
    let stopped = backends.catalog[1];
    within("the second endpoint stops", async {
        while tokio::net::TcpStream::connect(stopped).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for _ in 0..40 {
        let answer = get(&url(&gateway, "/catalog/")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(endpoint(&answer), "a");
    }
    wait_status(&gateway, &b, HealthStatus::Unhealthy).await;
    let table = demo::table(&gateway.registry().snapshot());
    assert!(
        table
            .lines()
            .any(|line| line.contains(&b) && line.contains("unhealthy")),
        "{table}"
    );
}

#[tokio::test]
async fn the_demo_shows_each_backend_as_it_is() {
    let (_backends, gateway) = start_demo().await;
    wait_status(&gateway, "search", HealthStatus::Healthy).await;
    wait_status(&gateway, "github", HealthStatus::Healthy).await;
    wait_status(&gateway, "billing", HealthStatus::Unhealthy).await;

    let table = demo::table(&gateway.registry().snapshot());
    let row = |name: &str| {
        table
            .lines()
            .find(|line| line.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{table}"))
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("search"),
        ["search", "unauthenticated", "healthy", "ok"]
    );
    assert_eq!(row("github")[..3], ["github", "upstream_inject", "healthy"]);
    assert_eq!(
        row("billing"),
        [
            "billing",
            "unauthenticated",
            "unhealthy",
            "connection_refused"
        ]
    );

    let answer = get_with(
        &url(&gateway, "/github/"),
        &[(
            "authorization",
            &format!("Bearer {}", demo::DEMO_USER_TOKEN),
        )],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let challenged = get(&url(&gateway, "/github/")).await;
    assert_eq!(challenged.status, StatusCode::UNAUTHORIZED);
    // OAuth discovery through the demo proxy: the challenge and the document name it.
    let public = url(&gateway, "/github");
    assert_eq!(
        challenged.headers[header::WWW_AUTHENTICATE],
        format!(
            r#"Bearer resource_metadata="{public}/.well-known/oauth-protected-resource", scope="mcp""#
        )
    );
    let document = get(&url(
        &gateway,
        "/github/.well-known/oauth-protected-resource",
    ))
    .await;
    assert_eq!(document.json()["resource"], public);
}

// === https backends ===

/// Answers with the HTTP version the request arrived in.
fn version_router() -> Router {
    Router::new().fallback(any(|request: Request<Body>| async move {
        format!("{:?}", request.version())
    }))
}

fn challenge_router() -> Router {
    Router::new().fallback(any(|| async {
        challenge(&Seen {
            method: Method::GET,
            uri: String::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        })
    }))
}

#[tokio::test]
async fn https_backends_through_the_proxy_with_a_ca_file() {
    use tls_support::Backend;
    let pki = tls_support::Pki::new();
    let ca = config::tests::TempFile::new("proxy-ca.pem", pki.ca_pem().as_bytes());
    let extra = format!("ca_file = '{}'\n", ca.path());
    let (valid, _) = tls_support::serve(&pki, Backend::Valid, version_router()).await;
    let (oauth, _) = tls_support::serve(&pki, Backend::Valid, challenge_router()).await;
    let mut toml = format!(
        "{ONCE}{}{}",
        backend(
            "valid",
            &format!("https://{valid}"),
            "unauthenticated",
            &extra
        ),
        backend(
            "oauth",
            &format!("https://{oauth}"),
            "upstream_inject",
            &extra
        ),
    );
    // (backend, what it does, its cause: the caller's 502 and `last_error` name it)
    let failing = [
        ("expired", Backend::Expired, TlsFailure::CertificateExpired),
        (
            "early",
            Backend::NotYetValid,
            TlsFailure::CertificateNotYetValid,
        ),
        ("renamed", Backend::OtherName, TlsFailure::NameMismatch),
        ("selfsigned", Backend::SelfSigned, TlsFailure::UnknownIssuer),
        (
            "mtls",
            Backend::ClientCertRequired,
            TlsFailure::ClientCertificateRequired,
        ),
        ("plain", Backend::PlainHttp, TlsFailure::NotTls),
    ];
    for (name, kind, _) in failing {
        let (addr, _) = tls_support::serve(&pki, kind, version_router()).await;
        toml.push_str(&backend(
            name,
            &format!("https://{addr}"),
            "unauthenticated",
            &extra,
        ));
    }
    let gateway = start(&toml, &[]).await;

    // HTTP/2 to the backend through ALPN, whatever the caller spoke.
    let answer = get(&url(&gateway, "/valid/")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, "HTTP/2.0");
    // A challenge over https reaches the caller and is judged as over http.
    let answer = get(&url(&gateway, "/oauth/mcp")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Bearer resource_metadata="));
    wait_status(&gateway, "valid", HealthStatus::Healthy).await;
    wait_status(&gateway, "oauth", HealthStatus::Healthy).await;

    for (name, _, cause) in failing {
        let answer = get(&url(&gateway, &format!("/{name}/x"))).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_GATEWAY,
            "{name}: {}",
            answer.body
        );
        let json = answer.json();
        assert_eq!(json["reason"], "tls", "{name}: {json}");
        assert_eq!(
            json["message"],
            format!("the TLS handshake with the backend failed: {cause}"),
            "{name}"
        );
        wait_status(&gateway, name, HealthStatus::Unhealthy).await;
    }

    let json = get(&url(&gateway, "/health/backends")).await.json();
    let backends: HashMap<&str, &serde_json::Value> = json["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap(), b))
        .collect();
    assert_eq!(backends["valid"]["reason"], "ok");
    assert_eq!(backends["oauth"]["reason"], "expected_challenge");
    for (name, _, cause) in failing {
        let health = backends[name];
        assert_eq!(health["status"], "unhealthy", "{name}: {health}");
        assert_eq!(health["reason"], "tls", "{name}: {health}");
        assert_eq!(health["last_outcome"], "transport", "{name}: {health}");
        assert_eq!(
            health["last_error"],
            format!("tls {}", cause.as_str()),
            "{name}: {health}"
        );
    }
    // No certificate bytes anywhere: not the CA's, not in any form.
    let body = get(&url(&gateway, "/health/backends")).await.body;
    let ca_base64: String = pki.ca_pem().lines().nth(1).unwrap().to_owned();
    assert!(!body.contains(&ca_base64), "{body}");
    gateway.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn without_a_ca_file_a_private_ca_is_an_unknown_issuer_and_http_is_unchanged() {
    let pki = tls_support::Pki::new();
    let (private, _) =
        tls_support::serve(&pki, tls_support::Backend::Valid, version_router()).await;
    let (plain, _) = recording(ok).await;
    let toml = format!(
        "{ONCE}{}{}",
        backend(
            "private",
            &format!("https://{private}"),
            "unauthenticated",
            ""
        ),
        backend("plain", &plain.url(), "unauthenticated", ""),
    );
    let gateway = start(&toml, &[]).await;
    // The built-in roots are Mozilla's: a CA made in this test is not among them.
    let answer = get(&url(&gateway, "/private/")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        answer.json()["message"],
        "the TLS handshake with the backend failed: certificate from an unknown issuer"
    );
    let answer = get(&url(&gateway, "/plain/")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "ok");
    wait_status(&gateway, "private", HealthStatus::Unhealthy).await;
    wait_status(&gateway, "plain", HealthStatus::Healthy).await;
    gateway.shutdown(Duration::from_secs(1)).await;
}

// === acting on health ===

/// Probes every 50 ms with the default thresholds: 3 Bad in a row to be Unhealthy, 2 Good
/// to come back.
const ENDPOINTS: &str = r#"
[health]
interval = "50ms"
timeout = "1s"
jitter = 0.0
"#;

/// A `[[backends]]` entry with several endpoints.
fn urls_backend(name: &str, urls: &[String], extra: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|url| format!("{url:?}")).collect();
    format!(
        "\n[[backends]]\nname = \"{name}\"\nurls = [{}]\nstrategy = \"unauthenticated\"\n{extra}\n",
        urls.join(", ")
    )
}

/// The sequential answers to `n` GETs of `path`.
async fn statuses(gateway: &Gateway, path: &str, n: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(get(&url(gateway, path)).await.status);
    }
    statuses
}

fn count_ok(statuses: &[StatusCode]) -> usize {
    statuses.iter().filter(|s| **s == StatusCode::OK).count()
}

#[tokio::test]
async fn one_of_two_endpoints_dies_under_traffic_and_comes_back() {
    let (a, seen_a) = recording(ok).await;
    let (b, seen_b) = recording(ok).await;
    let (b_addr, b_url) = (b.addr, b.url());
    let (a_name, b_name) = (format!("catalog@{}", a.url()), format!("catalog@{b_url}"));
    let toml = format!(
        "{ENDPOINTS}{}",
        urls_backend("catalog", &[a.url(), b.url()], PROBE)
    );
    let gateway = Arc::new(start(&toml, &[]).await);
    wait_status(&gateway, &a_name, HealthStatus::Healthy).await;
    wait_status(&gateway, &b_name, HealthStatus::Healthy).await;

    // Warm-up: both endpoints serve.
    assert_eq!(count_ok(&statuses(&gateway, "/catalog/", 40).await), 40);
    assert!(!seen_a.traffic().is_empty() && !seen_b.traffic().is_empty());

    // Steady sequential traffic while the second endpoint dies and is marked.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (gateway, stop, b_name) = (gateway.clone(), stop.clone(), b_name.clone());
        async move {
            // (answer, whether the dead endpoint was marked when the request was sent)
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let marked = gateway.registry().status(&b_name) == Some(HealthStatus::Unhealthy);
                answers.push((get(&url(&gateway, "/catalog/")).await.status, marked));
            }
            answers
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.stop().await;
    wait_status(&gateway, &b_name, HealthStatus::Unhealthy).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let answers = within("the traffic stops", traffic).await.unwrap();
    let before: Vec<StatusCode> = answers.iter().filter(|a| !a.1).map(|a| a.0).collect();
    let after: Vec<StatusCode> = answers.iter().filter(|a| a.1).map(|a| a.0).collect();
    eprintln!(
        "until marked: {} of {} answered 200; once marked: {} of {}",
        count_ok(&before),
        before.len(),
        count_ok(&after),
        after.len()
    );
    assert!(
        count_ok(&before) * 100 >= before.len() * 99,
        "until marked: {before:?}"
    );
    assert!(!after.is_empty());
    assert_eq!(count_ok(&after), after.len(), "once marked: {after:?}");

    // 200 sequential requests with one endpoint of two dead.
    let answers = statuses(&gateway, "/catalog/", 200).await;
    assert!(count_ok(&answers) >= 198, "{answers:?}");

    // The health endpoints show the endpoint under its backend.
    let health = get(&url(&gateway, "/health/backends")).await.json();
    let catalog = &health["backends"][0];
    assert_eq!(catalog["name"], "catalog");
    assert_eq!(catalog["status"], "degraded", "{health:#}");
    let endpoints = catalog["endpoints"].as_array().unwrap();
    assert_eq!(
        endpoints
            .iter()
            .map(|e| (
                e["url"].as_str().unwrap().to_owned(),
                e["status"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [(a.url(), "healthy"), (b_url, "unhealthy")]
    );
    assert_eq!(endpoints[1]["reason"], "connection_refused");
    let metrics = get(&url(&gateway, "/metrics")).await.body;
    for line in [
        format!(r#"backend_health_status{{backend="{a_name}",status="healthy"}} 1"#),
        format!(r#"backend_health_status{{backend="{b_name}",status="unhealthy"}} 1"#),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }

    // Back on its port: used again once probes find it healthy.
    let seen_back = backends::Recorder::default();
    let _back = Server::start_on(b_addr, backends::recording_router(seen_back.clone(), ok))
        .await
        .expect("the port is free again");
    wait_status(&gateway, &b_name, HealthStatus::Healthy).await;
    assert_eq!(count_ok(&statuses(&gateway, "/catalog/", 50).await), 50);
    assert!(
        !seen_back.traffic().is_empty(),
        "the endpoint that came back gets traffic again"
    );
    let health = get(&url(&gateway, "/health/backends")).await.json();
    assert_eq!(health["backends"][0]["status"], "healthy", "{health:#}");
}

#[tokio::test]
async fn every_endpoint_dead_fails_open_with_a_clear_502_said_once() {
    let (logs, _guard) = Logs::capture(tracing::Level::INFO);

    let dead = [closed_port(), closed_port()].map(|addr| format!("http://{addr}"));
    let gateway = start(
        &format!("{ENDPOINTS}{}", urls_backend("catalog", &dead, "")),
        &[],
    )
    .await;
    for url in &dead {
        wait_status(&gateway, &format!("catalog@{url}"), HealthStatus::Unhealthy).await;
    }
    for _ in 0..5 {
        let answer = get(&url(&gateway, "/catalog/x")).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
        assert_eq!(answer.json()["error"], "bad_gateway");
        assert_eq!(answer.json()["reason"], "connection_refused");
    }
    let health = get(&url(&gateway, "/health/backends")).await.json();
    assert_eq!(health["backends"][0]["status"], "unhealthy", "{health:#}");
    let logs = logs.text();
    assert_eq!(
        logs.matches("backend failing open").count(),
        1,
        "said once:\n{logs}"
    );
    gateway.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_bad_backend_with_one_url_gets_503_and_no_request() {
    fn failing(_: &Seen) -> Response {
        Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::empty())
            .unwrap()
    }
    let (server, seen) = recording(failing).await;
    for (fail_fast, status) in [
        ("", StatusCode::SERVICE_UNAVAILABLE),
        ("fail_fast = false\n", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let toml = format!(
            "{FAST}{fail_fast}{}",
            backend("broken", &server.url(), "unauthenticated", PROBE)
        );
        let gateway = start(&toml, &[]).await;
        wait_status(&gateway, "broken", HealthStatus::Unhealthy).await;
        let before = seen.traffic().len();
        let answer = get(&url(&gateway, "/broken/x")).await;
        assert_eq!(answer.status, status, "{fail_fast:?}: {}", answer.body);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(answer.json()["error"], "backend_unhealthy");
            assert_eq!(answer.json()["reason"], "unhealthy");
            assert_eq!(seen.traffic().len(), before, "nothing sent");
        } else {
            assert_eq!(seen.traffic().len(), before + 1);
        }
        gateway.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn oauth_discovery_goes_through_a_backend_with_several_urls() {
    use mcp_server::{Answer, Behaviour, McpServer};
    let a = McpServer::start(Behaviour::answering(Answer::Json).with_auth()).await;
    let b = McpServer::start(Behaviour::answering(Answer::Json).with_auth()).await;
    let toml = format!(
        "public_url = \"https://gw.example\"\n{ENDPOINTS}{}",
        urls_backend("tools", &[a.url(), b.url()], &probe_kind("mcp"))
            .replace("\"unauthenticated\"", "\"upstream_inject\"")
    );
    let gateway = start(&toml, &[]).await;
    for server in [&a, &b] {
        let endpoint = format!(
            "tools@{}",
            config::url_label(&server.url().parse().unwrap())
        );
        wait_status(&gateway, &endpoint, HealthStatus::Healthy).await;
    }

    // Whichever endpoint answered, its challenge names the proxy.
    for _ in 0..4 {
        let answer = send(
            Request::post(url(&gateway, "/tools/mcp"))
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        let challenge = answer.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            challenge.contains(
                r#"resource_metadata="https://gw.example/tools/.well-known/oauth-protected-resource/mcp""#
            ),
            "{challenge}"
        );
    }
    // The document comes from an endpoint's own origin, naming the proxy.
    let document = get(&url(
        &gateway,
        "/tools/.well-known/oauth-protected-resource/mcp",
    ))
    .await;
    assert_eq!(document.status, StatusCode::OK, "{}", document.body);
    assert_eq!(document.json()["resource"], "https://gw.example/tools/mcp");
}
