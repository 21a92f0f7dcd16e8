//! Demo mode: backends on loopback (one healthy, one behind OAuth, one closed port, and
//! one with two endpoints, one of which stops 10 s in), the proxy in front of them, and
//! the health table printed each time it changes.

// Printing the table is what demo mode is for.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tower_health_classify::Snapshot;

use crate::config::{BackendConfig, Config, HealthConfig, ProbeConfig, ProbeKind, StrategyConfig};
use crate::gateway;

/// When the second endpoint of `catalog` stops.
const CATALOG_B_STOPS: Duration = Duration::from_secs(10);

/// The token the OAuth-protected demo backend accepts.
pub(crate) const DEMO_USER_TOKEN: &str = "demo-user-token";

/// Where the demo backends listen.
#[derive(Debug)]
pub(crate) struct DemoBackends {
    pub(crate) search: SocketAddr,
    pub(crate) github: SocketAddr,
    pub(crate) billing: SocketAddr,
    /// The two endpoints of `catalog`.
    pub(crate) catalog: [SocketAddr; 2],
    /// Stops the second endpoint of `catalog`, its connections included.
    pub(crate) catalog_b: AbortHandle,
}

/// Starts the healthy and the OAuth-protected backends and both endpoints of `catalog`,
/// and finds a closed port.
pub(crate) async fn start_backends() -> io::Result<DemoBackends> {
    let search = serve(Router::new().fallback(any(search))).await?;
    let github = {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(any(move |request: Request<Body>| async move {
            github(addr, &request)
        }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    };
    // Bound, then dropped: nothing listens there.
    let billing = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let catalog = |endpoint: &'static str| {
        Router::new().fallback(any(move || async move {
            json(
                StatusCode::OK,
                &serde_json::json!({ "backend": "catalog", "endpoint": endpoint }),
            )
        }))
    };
    let (catalog_a, _) = serve_stoppable(catalog("a")).await?;
    let (catalog_b, stop_b) = serve_stoppable(catalog("b")).await?;
    Ok(DemoBackends {
        search,
        github,
        billing,
        catalog: [catalog_a, catalog_b],
        catalog_b: stop_b,
    })
}

/// Serves `app` on a fresh loopback port; aborting the handle closes the listener and
/// every connection (`axum::serve` would leave open connections serving).
async fn serve_stoppable(app: Router) -> io::Result<(SocketAddr, AbortHandle)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // Owned by this task: aborting it drops the set, which aborts every connection.
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let service = TowerToHyperService::new(app.clone());
            connections.spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, task.abort_handle()))
}

async fn serve(app: Router) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Answers 200 with what it was asked; `/events` is a server-sent event stream.
async fn search(request: Request<Body>) -> Response {
    if request.uri().path() == "/events" {
        let (sender, body) = channel_body();
        tokio::spawn(async move {
            for tick in 1..=5 {
                let event = format!("event: tick\ndata: {{\"tick\":{tick}}}\n\n");
                if sender.send(Bytes::from(event)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(body)
            .expect("a valid response");
    }
    let body = serde_json::json!({
        "backend": "search",
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
    });
    json(StatusCode::OK, &body)
}

/// An MCP-style resource server: 401 with a Bearer challenge (RFC 9728) unless the
/// request carries the demo user's token, and its protected resource metadata.
fn github(addr: SocketAddr, request: &Request<Body>) -> Response {
    if request.uri().path() == "/.well-known/oauth-protected-resource" {
        let metadata = serde_json::json!({
            "resource": format!("http://{addr}/"),
            "authorization_servers": ["https://auth.example"],
            "scopes_supported": ["mcp"],
        });
        return json(StatusCode::OK, &metadata);
    }
    let sent = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if sent == Some(&format!("Bearer {DEMO_USER_TOKEN}")) {
        return json(
            StatusCode::OK,
            &serde_json::json!({ "backend": "github", "user": "demo" }),
        );
    }
    let mut challenge = format!(
        r#"Bearer resource_metadata="http://{addr}/.well-known/oauth-protected-resource", scope="mcp""#
    );
    if sent.is_some() {
        challenge.push_str(r#", error="invalid_token""#);
    }
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, challenge)
        .body(Body::empty())
        .expect("a valid response")
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

/// A response body fed chunk by chunk through a channel.
fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (sender, receiver) = mpsc::channel(1);
    (sender, Body::new(ChannelBody { receiver }))
}

struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// The demo's configuration: probes every `interval`, each given half of it.
pub(crate) fn config(backends: &DemoBackends, listen: SocketAddr, interval: Duration) -> Config {
    let backend = |name: &str, addrs: &[SocketAddr], strategy: StrategyConfig| BackendConfig {
        name: name.to_owned(),
        urls: addrs
            .iter()
            .map(|addr| format!("http://{addr}/").parse().expect("a valid URL"))
            .collect(),
        strategy,
        probe: ProbeConfig::default(),
        timeout: Duration::from_secs(10),
        ca: None,
    };
    // The OAuth backend is an MCP server: probed with `initialize`.
    let mut github = backend("github", &[backends.github], StrategyConfig::UpstreamInject);
    github.probe.kind = ProbeKind::Mcp;
    Config {
        listen,
        public_url: format!("http://{listen}"),
        health: HealthConfig {
            interval,
            timeout: interval / 2,
            ..HealthConfig::default()
        },
        backends: vec![
            backend(
                "search",
                &[backends.search],
                StrategyConfig::Unauthenticated,
            ),
            github,
            backend(
                "billing",
                &[backends.billing],
                StrategyConfig::Unauthenticated,
            ),
            backend(
                "catalog",
                &backends.catalog,
                StrategyConfig::Unauthenticated,
            ),
        ],
    }
}

/// The health table: one line per backend of the registry (an endpoint of `catalog` is
/// one, `catalog@http://...`).
pub(crate) fn table(snapshot: &Snapshot) -> String {
    let width = snapshot
        .backends
        .iter()
        .map(|backend| backend.name.len() + 2)
        .max()
        .unwrap_or(0)
        .max(9);
    let mut out = format!(
        "  {:<width$}{:<18}{:<17}{:<21}{:>7}  {}\n",
        "backend", "strategy", "status", "reason", "checks", "last error"
    );
    for backend in &snapshot.backends {
        let _ = writeln!(
            out,
            "  {:<width$}{:<18}{:<17}{:<21}{:>7}  {}",
            backend.name,
            backend.strategy.name(),
            backend.status.as_str(),
            backend.reason.map_or("-", |r| r.as_str()),
            backend.checks,
            backend.last_error.as_deref().unwrap_or("-"),
        );
    }
    out
}

/// 127.0.0.1:8080, or the next free port up to 8099, or any free port.
async fn listener() -> io::Result<TcpListener> {
    for port in 8080..8100 {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            return Ok(listener);
        }
    }
    TcpListener::bind("127.0.0.1:0").await
}

/// Runs the demo until `shutdown` completes (Ctrl-C).
pub(crate) async fn run(shutdown: impl std::future::Future<Output = ()>) -> io::Result<()> {
    let backends = start_backends().await?;
    let listener = listener().await?;
    let listen = listener.local_addr()?;
    let config = config(&backends, listen, Duration::from_secs(2));
    let mut gateway = gateway::start(&config, listener)?;
    let mut transitions = gateway
        .take_transitions()
        .expect("a new gateway has its transitions");
    let url = format!("http://{listen}");

    println!("tower-health-classify proxy demo: four backends on loopback, probed every 2 s\n");
    println!(
        "  search   http://{}  unauthenticated  answers 200 (and an event stream at /events)",
        backends.search
    );
    println!(
        "  github   http://{}  upstream_inject  answers 401 + Bearer challenge, 200 to \"Bearer {DEMO_USER_TOKEN}\"",
        backends.github
    );
    println!(
        "  billing  http://{}  unauthenticated  nothing listens",
        backends.billing
    );
    println!(
        "  catalog  http://{} and http://{}  unauthenticated  two endpoints; the second stops {} s in\n",
        backends.catalog[0],
        backends.catalog[1],
        CATALOG_B_STOPS.as_secs(),
    );
    println!("proxy on {url} (Ctrl-C to stop); try:");
    for line in [
        format!("curl -i '{url}/search/hello?q=1'"),
        format!("curl -N {url}/search/events"),
        format!("curl -i {url}/github/"),
        format!("curl {url}/github/.well-known/oauth-protected-resource"),
        format!("curl -i -H 'Authorization: Bearer {DEMO_USER_TOKEN}' {url}/github/"),
        format!("curl -i {url}/billing/"),
        format!("curl -i {url}/catalog/"),
        format!("curl -i {url}/healthz"),
        format!("curl {url}/health/backends"),
        format!("curl {url}/metrics"),
    ] {
        println!("  {line}");
    }
    println!();

    let start = Instant::now();
    tokio::pin!(shutdown);
    let stop_b = tokio::time::sleep(CATALOG_B_STOPS);
    tokio::pin!(stop_b);
    let mut b_stopped = false;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut stop_b, if !b_stopped => {
                b_stopped = true;
                backends.catalog_b.abort();
                println!(
                    "[{:>5.1} s] catalog's second endpoint (http://{}) stopped: requests to /catalog/ go to the first",
                    start.elapsed().as_secs_f64(),
                    backends.catalog[1],
                );
            }
            Some(first) = transitions.recv() => {
                // Probes of several backends land together: one table for all of them.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut changes = vec![first];
                while let Some(next) = transitions.try_recv() {
                    changes.push(next);
                }
                let snapshot = gateway.registry().snapshot();
                println!("[{:>5.1} s] phase {}", start.elapsed().as_secs_f64(), snapshot.phase);
                for change in &changes {
                    println!("  {change}");
                }
                println!("{}", table(&snapshot));
            }
        }
    }
    println!("stopping");
    gateway.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
