//! `HealthGateLayer`: the backend's handle, the trial schedule, and what to do while Bad.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::service::HealthGate;
use super::trials::{Trials, DEFAULT_INITIAL, DEFAULT_MAX};
use crate::registry::BackendHandle;

/// Wraps a backend's service in a [`HealthGate`]: while the backend is Unhealthy or
/// Unauthenticated, requests are not sent but for one trial request per backoff interval.
///
/// Build one layer per backend and clone it (or the services it makes): clones share the
/// trial schedule, so that the backend gets one trial per interval from all of them. Two
/// layers built for the same backend keep two schedules.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_health_classify::{
///     AuthStrategy, BackendError, ExchangeReport, HealthClassifyLayer, HealthGateLayer,
///     HealthRegistry, HealthStatus, Origin, Outcome, TransportKind,
/// };
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let registry = HealthRegistry::default();
/// let search = registry.register("search", AuthStrategy::Unauthenticated);
/// let client = service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
/// let service = ServiceBuilder::new()
///     .layer(HealthGateLayer::new(search.clone()).trial_backoff(Duration::from_secs(2), Duration::from_secs(60)))
///     .layer(HealthClassifyLayer::new(search.clone()))
///     .service(client);
///
/// // Three failed probes: the backend is Unhealthy.
/// let refused = Outcome::Transport(TransportKind::ConnectionRefused);
/// for _ in 0..3 {
///     ExchangeReport::new(&refused).origin(Origin::Probe).report(&search);
/// }
/// assert_eq!(search.status(), HealthStatus::Unhealthy);
///
/// let err = service.clone().oneshot(Request::new(())).await.unwrap_err();
/// assert!(err.is_not_sent());
/// assert_eq!(err.to_string(), "not sent: backend unhealthy");
///
/// // Two seconds on, one trial request goes through; the next call is held back again.
/// tokio::time::sleep(Duration::from_secs(2)).await;
/// assert!(service.clone().oneshot(Request::new(())).await.is_ok());
/// assert!(service.oneshot(Request::new(())).await.unwrap_err().is_not_sent());
/// # }
/// ```
#[derive(Clone)]
pub struct HealthGateLayer {
    handle: BackendHandle,
    trials: Arc<Trials>,
    not_ready_while_bad: bool,
}

impl HealthGateLayer {
    /// A gate on the backend `handle` reports to, failing fast while it is Bad, with a
    /// first trial request 1 s into a Bad spell and the wait doubling up to 30 s.
    pub fn new(handle: BackendHandle) -> Self {
        HealthGateLayer {
            handle,
            trials: Arc::new(Trials::new(DEFAULT_INITIAL, DEFAULT_MAX)),
            not_ready_while_bad: false,
        }
    }

    /// The trial schedule: the wait before the first trial of a Bad spell is `initial`,
    /// it doubles after each trial up to `max`, and each wait is drawn from 80% to 100%
    /// of that (so that gates that saw the backend fail together do not try together).
    ///
    /// # Panics
    ///
    /// When `initial` is zero or above `max`: a zero wait would send every request.
    pub fn trial_backoff(mut self, initial: Duration, max: Duration) -> Self {
        assert!(
            !initial.is_zero() && initial <= max,
            "trial_backoff: initial ({initial:?}) must be above zero and at most max ({max:?})"
        );
        self.trials = Arc::new(Trials::new(initial, max));
        self
    }

    /// While the backend is Bad, `poll_ready` is `Pending` instead of calls failing: for
    /// a gate under a balancer (`tower::balance`), which then skips this endpoint. The
    /// task is woken when the backend's status changes and when a trial is due; the
    /// trial is the next call. A call made without waiting for readiness still fails
    /// fast. The trial timer is tokio's: poll the service inside a tokio runtime with
    /// time enabled, as a balancer on tokio does.
    pub fn not_ready_while_bad(mut self) -> Self {
        self.not_ready_while_bad = true;
        self
    }
}

impl<S> Layer<S> for HealthGateLayer {
    type Service = HealthGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HealthGate::new(
            inner,
            self.handle.clone(),
            self.trials.clone(),
            self.not_ready_while_bad,
        )
    }
}

impl fmt::Debug for HealthGateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthGateLayer")
            .field("backend", &self.handle.name())
            .field("trial_initial", &self.trials.initial())
            .field("trial_max", &self.trials.max())
            .field("not_ready_while_bad", &self.not_ready_while_bad)
            .finish()
    }
}
