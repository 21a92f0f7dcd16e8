//! Backends for the proxy tests, every one on 127.0.0.1 with an ephemeral port.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// A server; stopping it closes its listener and every connection. (The test's runtime
/// stops the rest when the test ends.)
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `router` on a fresh loopback port.
    pub(crate) async fn start(router: Router) -> Server {
        Server::start_on("127.0.0.1:0".parse().unwrap(), router)
            .await
            .unwrap()
    }

    /// Serves `router` on `addr` (a port used before, to bring a backend back).
    pub(crate) async fn start_on(addr: SocketAddr, router: Router) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it drops the set, which aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let service = TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Server { addr, task })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and closes every connection; returns once they are closed.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// One request as a backend received it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: Method,
    pub(crate) uri: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Seen {
    /// Probes in these tests carry `x-probe`, set in their `[backends.probe]` table.
    pub(crate) fn is_probe(&self) -> bool {
        self.headers.contains_key("x-probe")
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Every request a recording backend received.
#[derive(Clone, Default)]
pub(crate) struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    pub(crate) fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    pub(crate) fn traffic(&self) -> Vec<Seen> {
        self.all().into_iter().filter(|s| !s.is_probe()).collect()
    }

    pub(crate) fn probes(&self) -> Vec<Seen> {
        self.all().into_iter().filter(Seen::is_probe).collect()
    }
}

/// A backend that records every request (body read in full) and answers with `respond`.
pub(crate) async fn recording<F>(respond: F) -> (Server, Recorder)
where
    F: Fn(&Seen) -> Response + Clone + Send + Sync + 'static,
{
    let recorder = Recorder::default();
    let router = recording_router(recorder.clone(), respond);
    (Server::start(router).await, recorder)
}

pub(crate) fn recording_router<F>(recorder: Recorder, respond: F) -> Router
where
    F: Fn(&Seen) -> Response + Clone + Send + Sync + 'static,
{
    Router::new().fallback(any(move |request: Request<Body>| {
        let (recorder, respond) = (recorder.clone(), respond.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let seen = Seen {
                method: parts.method,
                uri: parts.uri.to_string(),
                headers: parts.headers,
                body,
            };
            let response = respond(&seen);
            recorder.0.lock().unwrap().push(seen);
            response
        }
    }))
}

/// A loopback port with nothing listening on it.
pub(crate) fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Accepts connections and never answers; stops when the handle is aborted.
pub(crate) async fn silent() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// Answers every request with bytes that are not HTTP.
pub(crate) async fn garbage() -> (SocketAddr, JoinHandle<()>) {
    raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await
}

/// Answers every request with `reply`, then closes the connection.
pub(crate) async fn raw(reply: &'static [u8]) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(reply).await;
            });
        }
    });
    (addr, task)
}

/// A body fed chunk by chunk through a channel; it ends when the sender is dropped.
pub(crate) fn channel_body() -> (mpsc::Sender<Bytes>, ChannelBody) {
    let (sender, receiver) = mpsc::channel(1);
    (sender, ChannelBody { receiver })
}

pub(crate) struct ChannelBody {
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
