//! A bare hyper 1 HTTP/1 client connection (no hyper-util client) wrapped in
//! `HealthClassifyLayer` through `tower::service_fn`: `cargo run --example hyper`.
//!
//! It starts a backend on 127.0.0.1, opens one connection to it with
//! `hyper::client::conn::http1::handshake`, sends four requests through the layer (a
//! success, a Bearer challenge, one that the backend answers by dropping the connection,
//! and one more on the dead connection), prints what each returned and what the layer
//! reported, and exits. Nothing leaves this machine.

#![allow(clippy::print_stdout)] // printing is what this example is for

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_health_classify::{sink_fn, AuthStrategy, BackendError, HealthClassifyLayer};

const CHALLENGE: &str =
    r#"Bearer resource_metadata="http://127.0.0.1/.well-known/oauth-protected-resource""#;

/// A backend that serves one connection: `/hello` answers, `/private` wants a Bearer
/// token, and any other path makes it drop the connection without answering, as a
/// backend that crashes mid-request does.
async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let crash = Arc::new(Notify::new());
        let service = hyper::service::service_fn({
            let crash = crash.clone();
            move |request: Request<Incoming>| {
                let crash = crash.clone();
                async move {
                    let response = match request.uri().path() {
                        "/hello" => Response::new(Full::new(Bytes::from_static(b"hello"))),
                        "/private" => Response::builder()
                            .status(StatusCode::UNAUTHORIZED)
                            .header(header::WWW_AUTHENTICATE, CHALLENGE)
                            .body(Full::default())
                            .unwrap(),
                        _ => {
                            crash.notify_one();
                            std::future::pending().await
                        }
                    };
                    Ok::<_, Infallible>(response)
                }
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            _ = connection => {}
            // Dropping the connection future closes the socket with no response sent.
            () = crash.notified() => {}
        }
    });
    addr
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let backend = start_backend().await;

    // One HTTP/1 connection, driven by its own task: hyper's `Connection` future does
    // the reading and writing, `SendRequest` hands requests to it.
    let stream = TcpStream::connect(backend).await.unwrap();
    let (sender, connection) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);

    // `service_fn` needs a closure it can call again and again, each call owning what its
    // future uses. `http1::SendRequest` is not `Clone` (`http2::SendRequest` is: HTTP/2
    // multiplexes, HTTP/1 carries one exchange at a time), so callers share it behind an
    // async mutex. The lock is held only until the request is queued: `ready()` waits
    // until the connection is free (the previous response read to its end), and
    // `send_request` queues the request at once; the response is awaited unlocked.
    let sender = Arc::new(Mutex::new(sender));
    let connection = tower::service_fn(move |request: Request<Empty<Bytes>>| {
        let sender = sender.clone();
        async move {
            let response = {
                let mut sender = sender.lock().await;
                sender.ready().await?;
                sender.send_request(request)
            };
            response.await
        }
    });

    let mut service = ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(sink_fn(
            AuthStrategy::UpstreamInject,
            |report| {
                let verdict = report
                    .verdict
                    .map_or_else(|| "not counted".to_owned(), |v| v.to_string());
                println!("    reported  {} -> {verdict}", report.outcome);
            },
        )))
        .service(connection);

    let requests = [
        ("/hello", "a success"),
        ("/private", "a Bearer challenge, no token sent"),
        ("/crash", "the backend drops the connection mid-request"),
        ("/hello", "the same connection, now closed"),
    ];
    for (path, what) in requests {
        println!("GET {path}: {what}");
        let request = Request::get(path)
            .header(header::HOST, backend.to_string())
            .body(Empty::new())
            .unwrap();
        // `HealthClassify` is ready when `service_fn` is, that is always: readiness of
        // the connection is awaited inside the call, where the layer sees its errors.
        let result = service.ready().await.unwrap().call(request).await;
        match result {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                println!("    got       {status} {}", String::from_utf8_lossy(&body));
            }
            Err(error) => print_error(&error),
        }
    }
}

fn print_error(error: &BackendError) {
    match error {
        BackendError::Auth(auth) => println!(
            "    got       BackendError::Auth: {auth}, resource_metadata {:?}",
            auth.resource_metadata().unwrap_or_default(),
        ),
        BackendError::Transport { kind, source } => {
            println!("    got       BackendError::Transport {{ kind: {kind:?} }}: {error}");
            // The original error, typed: a caller can still ask hyper about it.
            if let Some(hyper) = source.downcast_ref::<hyper::Error>() {
                println!(
                    "              source: hyper::Error \"{hyper}\" (is_incomplete_message: {}, is_closed: {})",
                    hyper.is_incomplete_message(),
                    hyper.is_closed(),
                );
            }
        }
        other => println!(
            "    got       {other}: {:?}",
            other.source().map(ToString::to_string)
        ),
    }
}
