//! A backend with several URLs (`urls = [...]`): one endpoint per URL, each registered
//! and probed as a backend of its own (`name@url`), balanced with tower's p2c over those
//! that are not Bad ([`HealthDiscover`]), and a request that failed to connect sent once
//! more, to another endpoint ([`ConnectFailover`]).
//!
//! ```text
//! OutgoingAuthLayer → Retry (ConnectFailover) → Buffer → Balance (p2c, pending requests)
//!   → per endpoint: URI set to the endpoint → HealthClassifyLayer (the endpoint's handle)
//!   → Timeout → BearerTokenLayer → client
//! ```
//!
//! `Balance` is not `Clone`, so a `Buffer` (one task per backend) owns it. The request
//! body goes in a [`ReplayBody`], whose clones share one stream: `Retry` keeps a clone,
//! and a request that failed to connect was never read, so the clone sends it whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
use tower::retry::Retry;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};
use tower_health_classify::{BackendError, ConnectFailover, HealthDiscover};

use crate::forward;

/// One endpoint's stack, from the balancer down, types erased.
pub(crate) type EndpointService =
    BoxCloneSyncService<Request<ReplayBody>, Response<Body>, BackendError>;

type Balanced = Balance<
    PendingRequestsDiscover<HealthDiscover<Arc<str>, EndpointService>>,
    Request<ReplayBody>,
>;

/// Everything below outgoing auth for a backend with several endpoints.
pub(crate) type Endpoints = Retry<
    ConnectFailover,
    Buffer<Request<ReplayBody>, <Balanced as Service<Request<ReplayBody>>>::Future>,
>;

/// How many requests may wait for the balancer of one backend.
const QUEUE: usize = 1024;

/// The balancer over `discover`'s endpoints, with the failover in front. Spawns the
/// buffer's task: call it inside the runtime.
pub(crate) fn balanced(discover: HealthDiscover<Arc<str>, EndpointService>) -> Endpoints {
    let balance = Balance::new(PendingRequestsDiscover::new(
        discover,
        CompleteOnResponse::default(),
    ));
    Retry::new(ConnectFailover::new(), Buffer::new(balance, QUEUE))
}

/// The request as the endpoint at `base` must get it: the URI made absolute against
/// the endpoint's URL and base path, and the body handed to the client. The path came
/// from a valid URI, so joining cannot fail but on a bug; a URI left relative is then
/// refused by the client as `invalid_request`, a misconfiguration the registry warns of.
pub(crate) fn to_endpoint(base: &Uri, request: Request<ReplayBody>) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    // Protected resource metadata lives at the endpoint's origin, not under its base path.
    let uri = match parts.extensions.get::<crate::discovery::MetadataOf>() {
        Some(resource) => resource.uri(base),
        None => forward::upstream_uri(base, parts.uri.path(), parts.uri.query()).ok(),
    };
    if let Some(uri) = uri {
        parts.uri = uri;
    }
    Request::from_parts(parts, Body::new(body))
}

/// An error of the balanced stack as the proxy answers it: the endpoint's own
/// [`BackendError`] when there is one, else classified.
pub(crate) fn backend_error(error: BoxError) -> BackendError {
    match error.downcast::<BackendError>() {
        Ok(error) => *error,
        Err(error) => BackendError::from_error(error),
    }
}

/// A request body whose clones share one stream: the first clone polled takes it.
///
/// For a request sent again after it failed to connect, which never read its body: the
/// retry's clone then sends it whole. A clone polled after another one took the stream
/// fails rather than send a body cut short.
pub(crate) struct ReplayBody {
    shared: Arc<Mutex<Option<Body>>>,
    taken: Option<Body>,
}

impl ReplayBody {
    pub(crate) fn new(body: Body) -> Self {
        ReplayBody {
            shared: Arc::new(Mutex::new(Some(body))),
            taken: None,
        }
    }
}

impl Clone for ReplayBody {
    fn clone(&self) -> Self {
        ReplayBody {
            shared: self.shared.clone(),
            taken: None,
        }
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.taken.is_none() {
            let body = this
                .shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match body {
                Some(body) => this.taken = Some(body),
                None => {
                    return Poll::Ready(Some(Err(axum::Error::new(
                        "the request body was already sent",
                    ))))
                }
            }
        }
        let body = this.taken.as_mut().expect("taken above");
        Pin::new(body).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(body) => body.size_hint(),
            None => self
                .shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map_or_else(SizeHint::default, http_body::Body::size_hint),
        }
    }
}

/// Sends `request` through the balanced stack of a backend. Boxed, and built from named
/// futures only: the balancer's future holds a `fn` pointer over a boxed error, for
/// which the compiler cannot prove an `async fn` holding it `Send` (rust-lang/rust#102211).
pub(crate) fn send<S>(
    service: S,
    request: Request<Body>,
) -> Pin<Box<dyn Future<Output = Result<Response<Body>, BackendError>> + Send>>
where
    S: Service<Request<ReplayBody>, Response = Response<Body>, Error = BoxError> + Send + 'static,
    S::Future: Send,
{
    Box::pin(
        service
            .map_err(backend_error as fn(BoxError) -> BackendError)
            .oneshot(request.map(ReplayBody::new)),
    )
}
