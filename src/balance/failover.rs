//! `ConnectFailover`: send a request that failed to connect once more, to another
//! endpoint.

use std::error::Error;
use std::future::{ready, Ready};

use http::Request;
use tower::retry::Policy;

use crate::classify::{classify_error, Outcome};
use crate::error::{BackendError, BoxError};

/// A [`tower::retry::Policy`] that sends a request once more when it failed to connect
/// (connection refused, DNS failure, connect timeout: [`TransportKind::is_connect`]),
/// whatever its method, since it never left; nothing else is retried, and never more than
/// once, at once.
///
/// Made for `Retry` outside a balancer fed by a [`HealthDiscover`](crate::HealthDiscover):
/// the endpoint that failed is out of the balancer before the retry reaches it, so the
/// second attempt goes to another endpoint. For retries of other failures, with backoff
/// and a budget, see `RetryPolicy` (feature `retry`).
///
/// The request is cloned before it is sent, so `B` must be `Clone` (see `RetryPolicy`
/// for bodies that are not); a body whose clones share one stream works too, since a
/// request that failed to connect was never read.
///
/// [`TransportKind::is_connect`]: crate::TransportKind::is_connect
///
/// # Example
///
/// ```
/// use std::io;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use http::{Method, Request, Response};
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_health_classify::ConnectFailover;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let calls = Arc::new(AtomicUsize::new(0));
/// let counted = calls.clone();
/// // The first attempt is refused, the second answered.
/// let endpoints = service_fn(move |_req: Request<String>| {
///     let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
///     async move {
///         if first {
///             Err::<Response<()>, BoxError>(io::Error::from(io::ErrorKind::ConnectionRefused).into())
///         } else {
///             Ok(Response::new(()))
///         }
///     }
/// });
/// let service = ServiceBuilder::new().retry(ConnectFailover::new()).service(endpoints);
/// let post = Request::builder().method(Method::POST).body(String::from("{}")).unwrap();
/// assert!(service.oneshot(post).await.is_ok());
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConnectFailover {
    retried: bool,
}

impl ConnectFailover {
    /// The policy, for one request (`Retry` clones it for each).
    pub fn new() -> Self {
        ConnectFailover::default()
    }

    fn once(&mut self, connect_failed: bool) -> Option<Ready<()>> {
        if self.retried || !connect_failed {
            return None;
        }
        self.retried = true;
        Some(ready(()))
    }
}

impl<B: Clone, R> Policy<Request<B>, R, BoxError> for ConnectFailover {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _request: &mut Request<B>,
        result: &mut Result<R, BoxError>,
    ) -> Option<Self::Future> {
        let connect_failed = result
            .as_ref()
            .err()
            .is_some_and(|error| failed_to_connect(&**error));
        self.once(connect_failed)
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        (!self.retried).then(|| request.clone())
    }
}

impl<B: Clone, R> Policy<Request<B>, R, BackendError> for ConnectFailover {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _request: &mut Request<B>,
        result: &mut Result<R, BackendError>,
    ) -> Option<Self::Future> {
        let connect_failed = result
            .as_ref()
            .err()
            .and_then(BackendError::transport_kind)
            .is_some_and(|kind| kind.is_connect());
        self.once(connect_failed)
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        (!self.retried).then(|| request.clone())
    }
}

/// Whether `error` classifies as a failure to connect (refused, DNS, connect timeout):
/// the request never left.
pub(super) fn failed_to_connect(error: &(dyn Error + 'static)) -> bool {
    matches!(classify_error(error), Outcome::Transport(kind) if kind.is_connect())
}
