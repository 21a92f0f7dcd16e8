//! Probes three loopback backends with the `Prober` (one healthy, one behind OAuth, one
//! closed port), prints each health transition as it happens, then the final snapshot
//! as JSON. Run it with `cargo run --example health`.
//!
//! It runs for about 5 seconds: probes every second (±10%), with a 2 s timeout. Every
//! backend listens on 127.0.0.1; nothing leaves this machine.

#![allow(clippy::print_stdout)] // printing is what this example is for

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower_health_classify::{AuthStrategy, HealthRegistry, Policy, Prober};

/// Serves every connection on `listener` with `respond`.
fn serve<F>(listener: TcpListener, respond: F)
where
    F: Fn() -> Response<Empty<Bytes>> + Clone + Send + Sync + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let respond = respond.clone();
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let response = respond();
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
}

async fn loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::main]
async fn main() {
    let (listener, search) = loopback().await;
    serve(listener, || {
        Response::builder()
            .status(StatusCode::OK)
            .body(Empty::new())
            .unwrap()
    });

    let (listener, github) = loopback().await;
    let challenge = format!(
        r#"Bearer resource_metadata="http://{github}/.well-known/oauth-protected-resource", scope="mcp""#
    );
    serve(listener, move || {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, challenge.as_str())
            .body(Empty::new())
            .unwrap()
    });

    let billing = closed_port();

    let registry = HealthRegistry::new(Policy::default());
    let mut transitions = registry.subscribe();
    let backends = [
        (
            "search",
            search,
            AuthStrategy::Unauthenticated,
            "answers 200",
        ),
        (
            "github",
            github,
            AuthStrategy::UpstreamInject,
            "answers 401 + Bearer challenge",
        ),
        (
            "billing",
            billing,
            AuthStrategy::TokenExchange,
            "nothing listens",
        ),
    ];
    let mut uris = HashMap::new();
    for (name, addr, strategy, what) in backends {
        println!("{name:<8} http://{addr}/  {:<16} {what}", strategy.name());
        registry.register(name, strategy);
        uris.insert(name.to_owned(), format!("http://{addr}/mcp"));
    }
    println!();

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let start = Instant::now();
    let prober = Prober::builder(registry.clone())
        .interval(Duration::from_secs(1))
        .jitter(0.1)
        .timeout(Duration::from_secs(2))
        .spawn(move |name: &str| {
            let request = Request::get(uris.get(name)?.as_str())
                .body(Empty::new())
                .ok()?;
            Some((client.clone(), request))
        });

    let run = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(run);
    loop {
        tokio::select! {
            _ = &mut run => break,
            Some(transition) = transitions.recv() => {
                println!("[{:>5.2} s] {transition}", start.elapsed().as_secs_f64());
            }
        }
    }
    prober.shutdown().await;

    println!();
    let snapshot = registry.snapshot();
    println!("{}", serde_json::to_string_pretty(&snapshot).unwrap());
}
