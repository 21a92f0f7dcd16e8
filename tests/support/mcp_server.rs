//! An MCP server of the tests' own, on a loopback port: the streamable HTTP transport as
//! far as `initialize`, sessions and their `DELETE`, an OAuth challenge and RFC 9728
//! metadata go, with switches for the ways real servers answer and fail. It records
//! what it was sent and which sessions are open.

#![allow(dead_code)] // each test file uses part of it

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body::Frame;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What `POST /mcp` with an `initialize` gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `application/json`, the `initialize` result.
    Json,
    /// `text/event-stream`: a log notification, then the result, then the stream ends.
    Sse,
    /// `text/event-stream`: the result, then the stream stays open (as servers that
    /// keep a request's stream for later notifications do).
    SseHeldOpen,
    /// A JSON-RPC error.
    JsonRpcError,
    /// `200 text/html`, a web page.
    Html,
    /// `text/event-stream`: a notification, then the connection dies.
    DiesMidSse,
    /// `text/event-stream` of comments that never ends and never answers.
    EndlessSse,
    /// The head, then nothing.
    Stall,
}

/// What the RFC 9728 metadata endpoints answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Metadata {
    /// At `/.well-known/oauth-protected-resource/mcp`, naming `http://{addr}/mcp`.
    AtPath,
    /// Only at `/.well-known/oauth-protected-resource`, naming `http://{addr}/mcp`.
    AtRoot,
    /// At the path, naming another resource.
    WrongResource,
    /// At the path, not JSON.
    NotJson,
    /// Nowhere.
    Missing,
    /// At the path, behind a challenge.
    Challenged,
}

/// How the server behaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Behaviour {
    pub(crate) answer: Answer,
    /// Whether `initialize` opens a session (`Mcp-Session-Id`).
    pub(crate) sessions: bool,
    /// The answer to `DELETE` of an open session: 204, or 405 for a server that does not
    /// let clients end sessions (the session then stays open).
    pub(crate) delete: StatusCode,
    /// Whether `/mcp` wants `Authorization: Bearer good-token` (401 and a challenge
    /// otherwise).
    pub(crate) auth: bool,
    pub(crate) metadata: Metadata,
}

impl Behaviour {
    /// A well-behaved server answering `answer`, with sessions, no auth.
    pub(crate) fn answering(answer: Answer) -> Self {
        Behaviour {
            answer,
            sessions: true,
            delete: StatusCode::NO_CONTENT,
            auth: false,
            metadata: Metadata::AtPath,
        }
    }

    pub(crate) fn with_auth(mut self) -> Self {
        self.auth = true;
        self
    }

    pub(crate) fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    pub(crate) fn delete_refused(mut self) -> Self {
        self.delete = StatusCode::METHOD_NOT_ALLOWED;
        self
    }
}

/// One request as the server got it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// What the server saw.
#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) requests: Vec<Received>,
    /// Sessions opened and not deleted.
    pub(crate) open: BTreeSet<String>,
    pub(crate) initializes: usize,
    /// `DELETE`s of an open session.
    pub(crate) deletes: usize,
    next_session: u64,
}

impl Log {
    pub(crate) fn of(&self, method: &Method, path: &str) -> Vec<Received> {
        self.requests
            .iter()
            .filter(|r| r.method == *method && r.path == path)
            .cloned()
            .collect()
    }
}

pub(crate) struct McpServer {
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    behaviour: Behaviour,
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl McpServer {
    pub(crate) async fn start(behaviour: Behaviour) -> McpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = Shared {
            behaviour,
            addr,
            log: log.clone(),
        };
        let app = Router::new().fallback(serve).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        McpServer { addr, log, task }
    }

    /// The MCP endpoint.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap()
    }

    /// The challenge `/mcp` answers without a token.
    pub(crate) fn challenge(&self) -> String {
        challenge(self.addr)
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every parameter a proxy must keep byte for byte (a quoted quote included), and a
/// `resource_metadata` that points at this server.
fn challenge(addr: SocketAddr) -> String {
    format!(
        r#"Bearer realm="mcp tools", resource_metadata="http://{addr}/.well-known/oauth-protected-resource/mcp", scope="tools:read tools:call", error="invalid_token", error_description="The access token is missing \"or\" expired""#
    )
}

/// What the server negotiates, older than what the probe asks for.
pub(crate) const PROTOCOL_VERSION: &str = "2025-06-18";

fn result() -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"test-mcp","version":"0.0.1"}}}}}}"#
    )
}

fn event(data: &str) -> String {
    format!("event: message\ndata: {data}\n\n")
}

async fn serve(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let received = Received {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body,
    };
    shared.log.lock().unwrap().requests.push(received.clone());
    let behaviour = shared.behaviour;
    match (parts.method.clone(), parts.uri.path()) {
        (Method::POST, "/mcp") => initialize(&shared, &received),
        (Method::DELETE, "/mcp") => {
            let mut log = shared.log.lock().unwrap();
            let session = parts
                .headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match session {
                Some(id) if log.open.contains(&id) => {
                    if behaviour.delete.is_success() {
                        log.open.remove(&id);
                        log.deletes += 1;
                    }
                    status(behaviour.delete)
                }
                // An unknown session, as the spec answers it.
                _ => status(StatusCode::NOT_FOUND),
            }
        }
        // Many MCP servers refuse a plain GET of the endpoint or of the root.
        (Method::GET, "/" | "/mcp") => status(StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, path) if path.starts_with("/.well-known/oauth-protected-resource") => {
            metadata(&shared, path)
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn initialize(shared: &Shared, received: &Received) -> Response {
    let behaviour = shared.behaviour;
    if behaviour.auth
        && received
            .headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            != Some(b"Bearer good-token")
    {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, challenge(shared.addr))
            .body(Body::empty())
            .unwrap();
    }
    let is_initialize = std::str::from_utf8(&received.body)
        .is_ok_and(|body| body.contains(r#""method":"initialize""#));
    if !is_initialize {
        return status(StatusCode::BAD_REQUEST);
    }
    let mut builder = Response::builder();
    {
        let mut log = shared.log.lock().unwrap();
        log.initializes += 1;
        if behaviour.sessions && behaviour.answer != Answer::JsonRpcError {
            log.next_session += 1;
            let id = format!("session-{:04}", log.next_session);
            log.open.insert(id.clone());
            builder = builder.header("mcp-session-id", id);
        }
    }
    let sse = |builder: http::response::Builder| {
        builder.header(header::CONTENT_TYPE, "text/event-stream")
    };
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"starting"}}"#;
    match behaviour.answer {
        Answer::Json => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(result()))
            .unwrap(),
        Answer::Sse => sse(builder)
            .body(Body::from(event(progress) + &event(&result())))
            .unwrap(),
        Answer::SseHeldOpen => sse(builder)
            .body(Body::new(Scripted::new(vec![Step::Data(event(&result())), Step::Hold])))
            .unwrap(),
        Answer::JsonRpcError => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Unsupported protocol version"}}"#,
            ))
            .unwrap(),
        Answer::Html => builder
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Body::from("<!doctype html><html><body>Welcome</body></html>"))
            .unwrap(),
        Answer::DiesMidSse => sse(builder)
            .body(Body::new(Scripted::new(vec![
                Step::Data(event(progress)),
                Step::Pause(std::time::Duration::from_millis(20)),
                Step::Die,
            ])))
            .unwrap(),
        Answer::EndlessSse => sse(builder)
            .body(Body::new(Scripted::endless(": keep-alive\n")))
            .unwrap(),
        Answer::Stall => sse(builder)
            .body(Body::new(Scripted::new(vec![Step::Hold])))
            .unwrap(),
    }
}

fn metadata(shared: &Shared, path: &str) -> Response {
    let at_path = path == "/.well-known/oauth-protected-resource/mcp";
    let at_root = path == "/.well-known/oauth-protected-resource";
    let resource = format!("http://{}/mcp", shared.addr);
    let document = |resource: &str| {
        format!(
            r#"{{"resource":"{resource}","authorization_servers":["http://127.0.0.1:1/"],"scopes_supported":["tools:read","tools:call"],"bearer_methods_supported":["header"]}}"#
        )
    };
    let json = |body: String| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    match shared.behaviour.metadata {
        Metadata::AtPath if at_path => json(document(&resource)),
        Metadata::AtRoot if at_root => json(document(&resource)),
        Metadata::WrongResource if at_path => json(document("http://other.example/mcp")),
        Metadata::NotJson if at_path => Response::new(Body::from("<html>metadata</html>")),
        Metadata::Challenged if at_path => Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Bearer")
            .body(Body::empty())
            .unwrap(),
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn status(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .unwrap()
}

enum Step {
    Data(String),
    /// A pause, so that what came before is flushed to the client.
    Pause(std::time::Duration),
    /// Pending forever: the connection stays open, nothing more comes.
    Hold,
    /// An error: hyper drops the connection in the middle of the chunked body.
    Die,
}

/// A response body that plays its steps.
struct Scripted {
    steps: std::collections::VecDeque<Step>,
    endless: Option<&'static str>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Scripted {
    fn new(steps: Vec<Step>) -> Self {
        Scripted {
            steps: steps.into(),
            endless: None,
            pause: None,
        }
    }

    fn endless(chunk: &'static str) -> Self {
        Scripted {
            steps: Default::default(),
            endless: Some(chunk),
            pause: None,
        }
    }
}

impl http_body::Body for Scripted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(chunk) = self.endless {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk.repeat(256))))));
        }
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        match self.steps.front() {
            None => Poll::Ready(None),
            Some(Step::Pause(duration)) => {
                let mut pause = Box::pin(tokio::time::sleep(*duration));
                self.steps.pop_front();
                let polled = pause.as_mut().poll(cx);
                debug_assert!(polled.is_pending());
                self.pause = Some(pause);
                Poll::Pending
            }
            Some(Step::Hold) => Poll::Pending,
            Some(Step::Die) => Poll::Ready(Some(Err(std::io::ErrorKind::ConnectionReset.into()))),
            Some(Step::Data(_)) => {
                let Some(Step::Data(data)) = self.steps.pop_front() else {
                    unreachable!()
                };
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))))
            }
        }
    }
}
