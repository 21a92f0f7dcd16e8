//! `Endpoint`: one endpoint's service as a [`HealthDiscover`](crate::HealthDiscover)
//! hands it to the balancer; it tells the discover of connect failures.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll, Waker};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::failover::failed_to_connect;
use crate::error::BoxError;

/// Where a discover waits to be woken: shared by it and all its endpoints.
#[derive(Debug, Default)]
pub(crate) struct Wake(Mutex<Option<Waker>>);

impl Wake {
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn wake(&self) {
        let waker = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What one endpoint tells its discover.
#[derive(Debug)]
pub(crate) struct Signals {
    /// A request failed to connect since the discover last looked.
    pub(crate) connect_failed: AtomicBool,
    /// Ejections in a row, reset by an answered request: the discover's backoff step.
    pub(crate) strikes: AtomicU32,
    pub(crate) wake: Arc<Wake>,
}

impl Signals {
    pub(crate) fn new(wake: Arc<Wake>) -> Self {
        Signals {
            connect_failed: AtomicBool::new(false),
            strikes: AtomicU32::new(0),
            wake,
        }
    }
}

/// One endpoint of a [`HealthDiscover`](crate::HealthDiscover), as the balancer sees it:
/// the endpoint's service, whose errors are boxed, and which tells the discover when a
/// request failed to connect ([`TransportKind::is_connect`](crate::TransportKind::is_connect)),
/// so that the endpoint is out of the balancer before the request is sent again.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use std::future::poll_fn;
/// use std::pin::Pin;
/// use http::{Request, Response};
/// use tower::discover::{Change, Discover};
/// use tower::{service_fn, ServiceExt};
/// use tower_health_classify::{AuthStrategy, Endpoint, HealthDiscover, HealthRegistry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = HealthRegistry::default();
/// let url = "http://10.0.0.1:8080";
/// let handle = registry.register(format!("search@{url}"), AuthStrategy::Unauthenticated);
/// let client = service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
/// let mut discover = HealthDiscover::new("search").endpoint(url, handle, client);
///
/// // What the balancer gets first: the endpoint, which is not out.
/// let change = poll_fn(|cx| Pin::new(&mut discover).poll_discover(cx)).await;
/// let Some(Ok(Change::Insert(key, endpoint))) = change else {
///     panic!("the endpoint goes in");
/// };
/// assert_eq!(key, url);
/// let endpoint: Endpoint<_> = endpoint;
/// assert!(endpoint.oneshot(Request::new(())).await.is_ok());
/// # }
/// ```
pub struct Endpoint<S> {
    inner: S,
    signals: Arc<Signals>,
}

impl<S> Endpoint<S> {
    pub(crate) fn new(inner: S, signals: Arc<Signals>) -> Self {
        Endpoint { inner, signals }
    }

    /// The endpoint's service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The endpoint's service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The endpoint's service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Endpoint<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for Endpoint<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = EndpointFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        EndpointFuture {
            inner: self.inner.call(request),
            signals: self.signals.clone(),
        }
    }
}

pin_project! {
    /// The response future of an [`Endpoint`].
    pub struct EndpointFuture<F> {
        #[pin]
        inner: F,
        signals: Arc<Signals>,
    }
}

impl<F> fmt::Debug for EndpointFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for EndpointFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match ready!(this.inner.poll(cx)) {
            Ok(response) => {
                // A load first: the line stays shared while nothing was ejected.
                if this.signals.strikes.load(Ordering::Relaxed) != 0 {
                    this.signals.strikes.store(0, Ordering::Relaxed);
                }
                Poll::Ready(Ok(response))
            }
            Err(error) => {
                let error = error.into();
                if failed_to_connect(&*error) {
                    // Before the error reaches a retry: the discover ejects this endpoint
                    // when the balancer next polls it, which the retry's `poll_ready` does.
                    this.signals.connect_failed.store(true, Ordering::Release);
                    this.signals.wake.wake();
                }
                Poll::Ready(Err(error))
            }
        }
    }
}
