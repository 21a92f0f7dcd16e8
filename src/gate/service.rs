//! `HealthGate`: the service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Sleep;
use tower_service::Service;

use super::future::ResponseFuture;
use super::trials::Trials;
use crate::error::BackendError;
use crate::registry::BackendHandle;
use crate::verdict::HealthStatus;

/// Sends requests while the backend is not Bad; while it is Unhealthy or
/// Unauthenticated, sends one trial request per backoff interval and fails the others
/// at once. Made by [`HealthGateLayer`](crate::HealthGateLayer).
///
/// While the backend is not Bad, the gate decides with one atomic load (the status);
/// with its service and future around the inner ones, it adds 15 to 23 instructions to a
/// request (BENCHMARKS.md).
///
/// # Errors
///
/// The service's error is the inner service's, which must be convertible from
/// [`BackendError`] (`BackendError` itself, or tower's `BoxError`). A request held back
/// is [`BackendError::NotSent`] with the status that held it: nothing was sent, so
/// there is nothing to report, and a [`HealthClassify`](crate::HealthClassify) outside
/// the gate classifies it as [`LocalKind::NotSent`](crate::LocalKind::NotSent), which
/// never counts against the backend. Every other error is the inner service's, as is.
///
/// # Example
///
/// ```
/// use http::{Request, Response};
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_health_classify::{
///     AuthStrategy, BackendError, HealthGate, HealthGateLayer, HealthRegistry,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = HealthRegistry::default();
/// let search = registry.register("search", AuthStrategy::Unauthenticated);
/// let client = service_fn(|_req: Request<()>| async { Ok::<_, BackendError>(Response::new(())) });
/// let gate: HealthGate<_> = HealthGateLayer::new(search).layer(client);
/// // Unknown is not Bad: the request is sent.
/// assert!(gate.oneshot(Request::new(())).await.is_ok());
/// # }
/// ```
pub struct HealthGate<S> {
    inner: S,
    handle: BackendHandle,
    trials: Arc<Trials>,
    not_ready_while_bad: bool,
    /// `not_ready_while_bad` only: `poll_ready` claimed a trial for the next call.
    trial: bool,
    /// `not_ready_while_bad` only: what `poll_ready` waits on while the backend is Bad.
    wait: Option<Pin<Box<Wait>>>,
}

impl<S> HealthGate<S> {
    pub(crate) fn new(
        inner: S,
        handle: BackendHandle,
        trials: Arc<Trials>,
        not_ready_while_bad: bool,
    ) -> Self {
        HealthGate {
            inner,
            handle,
            trials,
            not_ready_while_bad,
            trial: false,
            wait: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// A clone shares the trial schedule, not a trial claimed by this service's
/// `poll_ready`.
impl<S: Clone> Clone for HealthGate<S> {
    fn clone(&self) -> Self {
        HealthGate::new(
            self.inner.clone(),
            self.handle.clone(),
            self.trials.clone(),
            self.not_ready_while_bad,
        )
    }
}

impl<S: fmt::Debug> fmt::Debug for HealthGate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthGate")
            .field("inner", &self.inner)
            .field("backend", &self.handle.name())
            .field("not_ready_while_bad", &self.not_ready_while_bad)
            .field("trial", &self.trial)
            .finish()
    }
}

impl<S> HealthGate<S> {
    /// `not_ready_while_bad`: ready when the backend is not Bad or a trial is claimed,
    /// else registered to wake at the next change of status or the next trial.
    fn poll_gate<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req>,
    {
        loop {
            if !self.handle.status().is_bad() {
                // A trial claimed while it was Bad is not the next call's any more.
                self.trial = false;
                self.wait = None;
                return self.inner.poll_ready(cx);
            }
            if self.trial {
                return self.inner.poll_ready(cx);
            }
            if self.trials.try_claim(&self.handle) {
                self.trial = true;
                continue;
            }
            let fresh = self.wait.is_none();
            let wait = self
                .wait
                .get_or_insert_with(|| Box::pin(Wait::new(&self.handle)));
            wait.as_mut().reset(self.trials.next_at());
            if wait.as_mut().poll(cx).is_ready() {
                self.wait = None;
                continue;
            }
            // A change between the status read above and the first poll, which is when
            // the wait began to listen, would be missed: look once more.
            if fresh && !self.handle.status().is_bad() {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// The backend looked Bad: `Ok` to send anyway (a trial, or it is not Bad any more),
    /// else the status that holds the request back. Takes no request, so that the call's
    /// one path to the inner service moves the request once.
    #[cold]
    fn admit_while_bad(&mut self) -> Result<(), HealthStatus> {
        let status = self.handle.status();
        let trial = if self.not_ready_while_bad {
            std::mem::take(&mut self.trial)
        } else {
            self.trials.try_claim(&self.handle)
        };
        if trial || !status.is_bad() {
            return Ok(());
        }
        tracing::debug!(
            target: "tower_health_classify",
            backend = %self.handle.name().escape_debug(),
            status = status.as_str(),
            "request not sent: backend is bad"
        );
        Err(status)
    }
}

impl<S, Req> Service<Req> for HealthGate<S>
where
    S: Service<Req>,
    S::Error: From<BackendError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.not_ready_while_bad {
            return self.poll_gate(cx);
        }
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        // A trial is claimed only while the backend is Bad, and `poll_ready` drops it once
        // the backend is not: this one load decides the common case.
        if self.handle.status().is_bad() {
            if let Err(status) = self.admit_while_bad() {
                return ResponseFuture::not_sent(status);
            }
        }
        ResponseFuture::sent(self.inner.call(request))
    }
}

pin_project_lite::pin_project! {
    /// The next change of a backend's status, or the next trial, whichever comes first.
    struct Wait {
        changed: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
        #[pin]
        trial: Sleep,
        trial_armed: bool,
    }
}

impl Wait {
    fn new(handle: &BackendHandle) -> Self {
        Wait {
            changed: Box::pin(handle.changed()),
            trial: tokio::time::sleep_until(tokio::time::Instant::now()),
            trial_armed: false,
        }
    }

    fn reset(self: Pin<&mut Self>, trial: Option<tokio::time::Instant>) {
        let this = self.project();
        *this.trial_armed = trial.is_some();
        if let Some(at) = trial {
            if this.trial.deadline() != at {
                this.trial.reset(at);
            }
        }
    }
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.changed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if *this.trial_armed {
            return this.trial.poll(cx);
        }
        Poll::Pending
    }
}
