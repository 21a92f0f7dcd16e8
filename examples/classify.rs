//! Sends requests through `HealthClassifyLayer` to a few local backends and prints what
//! each exchange was classified as and how it was judged.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example classify
//! ```
//!
//! Every backend listens on 127.0.0.1; nothing leaves this machine.

#![allow(clippy::print_stdout)] // printing is what this example is for

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_health_classify::{
    AuthStrategy, HealthClassifyLayer, HealthReport, HealthSink, Outcome, Verdict,
};

/// A sink that keeps the last report, so the example can print it next to the result.
struct LastReport {
    strategy: AuthStrategy,
    last: Mutex<Option<(Outcome, Option<Verdict>)>>,
}

impl HealthSink for LastReport {
    fn strategy(&self) -> AuthStrategy {
        self.strategy.clone()
    }

    fn report(&self, report: &HealthReport<'_>) {
        *self.last.lock().unwrap() = Some((report.outcome.clone(), report.verdict));
    }
}

/// Serves every connection with `respond`, on a fresh loopback port.
async fn backend(respond: fn() -> Response<Empty<Bytes>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                Ok::<_, Infallible>(respond())
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// A loopback port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    Response::builder().status(code).body(Empty::new()).unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ok = backend(|| status(StatusCode::OK)).await;
    let oauth = backend(|| {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(
                header::WWW_AUTHENTICATE,
                r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource", scope="mcp""#,
            )
            .body(Empty::new())
            .unwrap()
    })
    .await;
    let scoped = backend(|| {
        Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header(
                header::WWW_AUTHENTICATE,
                r#"Bearer error="insufficient_scope", scope="admin""#,
            )
            .body(Empty::new())
            .unwrap()
    })
    .await;
    let failing = backend(|| status(StatusCode::SERVICE_UNAVAILABLE)).await;
    let closed = closed_port();

    let cases: [(&str, SocketAddr, AuthStrategy, Option<&str>); 7] = [
        ("healthy backend", ok, AuthStrategy::Unauthenticated, None),
        (
            "OAuth backend, user tokens, probe without token",
            oauth,
            AuthStrategy::UpstreamInject,
            None,
        ),
        (
            "OAuth backend, no strategy configured",
            oauth,
            AuthStrategy::Unauthenticated,
            None,
        ),
        (
            "OAuth backend, user's token rejected",
            oauth,
            AuthStrategy::UpstreamInject,
            Some("Bearer user-token"),
        ),
        (
            "gateway key lacks a scope",
            scoped,
            AuthStrategy::HeaderInjection,
            Some("Bearer gateway-key"),
        ),
        (
            "backend answers 503",
            failing,
            AuthStrategy::Unauthenticated,
            None,
        ),
        ("nothing listens", closed, AuthStrategy::TokenExchange, None),
    ];

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    println!(
        "    {:<16} {:<40} {:<36} the caller gets",
        "strategy", "outcome", "verdict"
    );
    for (name, addr, strategy, authorization) in cases {
        let sink = Arc::new(LastReport {
            strategy: strategy.clone(),
            last: Mutex::new(None),
        });
        let mut service = ServiceBuilder::new()
            .layer(HealthClassifyLayer::new(sink.clone()))
            .service(client.clone());

        let mut request = Request::get(format!("http://{addr}/"))
            .body(Empty::new())
            .unwrap();
        if let Some(value) = authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, value.parse().unwrap());
        }
        let result = service
            .ready()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .call(request)
            .await;

        let (outcome, verdict) = sink
            .last
            .lock()
            .unwrap()
            .take()
            .expect("one report per call");
        let verdict = verdict.map_or_else(|| "not counted".to_owned(), |v| v.to_string());
        let returned = match result {
            Ok(response) => format!("Ok({})", response.status()),
            Err(err) => format!("Err({err})"),
        };
        println!("{name}");
        // Padding applies to strings, not to every `Display` impl: format first.
        let (strategy, outcome) = (strategy.to_string(), outcome.to_string());
        println!("    {strategy:<16} {outcome:<40} {verdict:<36} {returned}");
    }
}
