//! `HealthDiscover`: a backend's endpoints, in the balancer while they are not Bad.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::time::{Instant, Sleep};
use tower::discover::Change;

use super::endpoint::{Endpoint, Signals, Wake};
use crate::registry::BackendHandle;
use crate::verdict::HealthStatus;

/// By default a backend fails open when more than half of its endpoints are out.
const DEFAULT_FAIL_OPEN_ABOVE: f64 = 0.5;
const DEFAULT_EJECTION_INITIAL: Duration = Duration::from_secs(1);
const DEFAULT_EJECTION_MAX: Duration = Duration::from_secs(30);

type Changed = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// One endpoint and what the discover knows of it.
struct Member<K, S> {
    key: K,
    handle: BackendHandle,
    service: S,
    signals: Arc<Signals>,
    /// The endpoint's next change of status.
    changed: Changed,
    /// Out of the balancer until then, after a connect failure.
    ejected_until: Option<Instant>,
    /// Its status when the discover last looked.
    status: HealthStatus,
    /// Whether the balancer has it.
    inserted: bool,
}

impl<K, S> Member<K, S> {
    fn is_out(&self) -> bool {
        self.status.is_bad() || self.ejected_until.is_some()
    }
}

/// A [`tower::discover::Discover`] over the endpoints of one backend that follows their
/// health: the balancer it feeds (tower's `Balance`, p2c) gets the endpoints that are
/// not out, and gets them all back when too many are.
///
/// Each endpoint is registered in the [`HealthRegistry`](crate::HealthRegistry) as a
/// backend of its own (its own handle, its own probes: name it after its backend, as in
/// `search@http://10.0.0.1:8080`, so that snapshots and metrics show it under it). An
/// endpoint is **out** while its status is Unhealthy or Unauthenticated, and for a
/// while after a request to it failed to connect (refused, DNS, connect timeout: the
/// request never left): 1 s after the first such failure, doubling up to 30 s while they
/// go on (an answered request resets it; [`ejection`](Self::ejection) changes it), and
/// until the registry sees it come back if it is Bad. A change of the registry's
/// status out of Bad ends an ejection at once.
///
/// When more than [`fail_open_above`](Self::fail_open_above) of the endpoints (50% by
/// default) are out, the backend **fails open**: every endpoint is in the balancer, as
/// Envoy's panic threshold does, because sending to endpoints that may be down beats
/// sending to none (and a backend whose every endpoint is out has nothing else). That is
/// logged once at `WARN` when it begins and once at `INFO` when it ends.
///
/// The endpoints the balancer gets are [`Endpoint`]s wrapping the services given here:
/// they note connect failures for the discover. Wrap the discover in tower's
/// `PendingRequestsDiscover` (or `PeakEwmaDiscover`) for the load `Balance` needs. To send
/// a request that failed to connect to another endpoint, put `Retry` with a
/// [`ConnectFailover`](crate::ConnectFailover) outside the balancer (with a `Buffer`
/// between, as `Balance` is not `Clone`): the failed endpoint is ejected before the
/// retry's `poll_ready` reaches the balancer, so the retry goes elsewhere.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::balance::p2c::Balance;
/// use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_health_classify::{AuthStrategy, HealthClassifyLayer, HealthDiscover, HealthRegistry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = HealthRegistry::default();
/// let mut discover = HealthDiscover::new("search");
/// for url in ["http://10.0.0.1:8080", "http://10.0.0.2:8080"] {
///     let handle = registry.register(format!("search@{url}"), AuthStrategy::Unauthenticated);
///     // Stands in for a client sending to `url`.
///     let client = service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
///     discover = discover.endpoint(url, handle.clone(), HealthClassifyLayer::new(handle).layer(client));
/// }
/// let balance = Balance::new(PendingRequestsDiscover::new(discover, CompleteOnResponse::default()));
/// assert!(balance.oneshot(Request::new(())).await.is_ok());
/// # }
/// ```
pub struct HealthDiscover<K, S> {
    backend: Arc<str>,
    members: Vec<Member<K, S>>,
    fail_open_above: f64,
    ejection: (Duration, Duration),
    failing_open: bool,
    wake: Arc<Wake>,
    /// The earliest end of an ejection; made at the first ejection, inside the runtime
    /// (the discover itself may be built outside one).
    timer: Option<Pin<Box<Sleep>>>,
    changes: VecDeque<Change<K, Endpoint<S>>>,
}

impl<K, S> HealthDiscover<K, S> {
    /// The endpoints of `backend` (the name logs use), none yet.
    pub fn new(backend: impl Into<Arc<str>>) -> Self {
        HealthDiscover {
            backend: backend.into(),
            members: Vec::new(),
            fail_open_above: DEFAULT_FAIL_OPEN_ABOVE,
            ejection: (DEFAULT_EJECTION_INITIAL, DEFAULT_EJECTION_MAX),
            failing_open: false,
            wake: Arc::default(),
            timer: None,
            changes: VecDeque::new(),
        }
    }

    /// One more endpoint: `key` names it to the balancer, `handle` is its backend in the
    /// registry (what reports its exchanges and probes), and `service` sends to it
    /// (cloned into the balancer each time the endpoint goes in).
    pub fn endpoint(mut self, key: K, handle: BackendHandle, service: S) -> Self {
        let changed = Box::pin(handle.changed());
        self.members.push(Member {
            key,
            status: HealthStatus::Unknown,
            changed,
            handle,
            service,
            signals: Arc::new(Signals::new(self.wake.clone())),
            ejected_until: None,
            inserted: false,
        });
        self
    }

    /// Fail open when more than `fraction` of the endpoints are out (0.5 by default);
    /// 1.0 never fails open (and a backend whose every endpoint is out then has none in
    /// the balancer, whose callers wait), 0.0 always does (health is then ignored).
    ///
    /// # Panics
    ///
    /// When `fraction` is not between 0 and 1.
    pub fn fail_open_above(mut self, fraction: f64) -> Self {
        assert!(
            (0.0..=1.0).contains(&fraction),
            "fail_open_above: {fraction} is not between 0 and 1"
        );
        self.fail_open_above = fraction;
        self
    }

    /// How long an endpoint stays out after a connect failure: `initial` after the
    /// first, doubling with each further one up to `max` (1 s and 30 s by default).
    ///
    /// # Panics
    ///
    /// When `initial` is above `max`.
    pub fn ejection(mut self, initial: Duration, max: Duration) -> Self {
        assert!(
            initial <= max,
            "ejection: initial ({initial:?}) is above max ({max:?})"
        );
        self.ejection = (initial, max);
        self
    }

    /// Whether the backend fails open now (as of the balancer's latest poll).
    pub fn is_failing_open(&self) -> bool {
        self.failing_open
    }
}

impl<K, S> HealthDiscover<K, S>
where
    K: Clone,
    S: Clone,
{
    /// Looks at every endpoint and queues the changes the balancer needs.
    fn update(&mut self, cx: &mut Context<'_>) {
        let now = Instant::now();
        // Listening before reading the statuses: a change in between wakes this task.
        for member in &mut self.members {
            while member.changed.as_mut().poll(cx).is_ready() {
                member.changed = Box::pin(member.handle.changed());
            }
        }
        self.wake.register(cx.waker());
        let (initial, max) = self.ejection;
        let mut next_end: Option<Instant> = None;
        for member in &mut self.members {
            let status = member.handle.status();
            if member.status.is_bad() && !status.is_bad() {
                // The registry saw it come back: that outweighs a failure seen here.
                member.ejected_until = None;
                member.signals.strikes.store(0, Ordering::Relaxed);
            }
            member.status = status;
            if member.signals.connect_failed.swap(false, Ordering::AcqRel) {
                let strikes = member.signals.strikes.fetch_add(1, Ordering::Relaxed);
                let wait = crate::backoff::doubled(initial, strikes, max);
                member.ejected_until = Some(now + wait);
                tracing::debug!(
                    target: "tower_health_classify",
                    backend = %member.handle.name().escape_debug(),
                    ejected_for_ms = wait.as_millis() as u64,
                    "endpoint ejected after a connect failure"
                );
            }
            if member.ejected_until.is_some_and(|until| now >= until) {
                member.ejected_until = None;
            }
            if let Some(until) = member.ejected_until {
                next_end = Some(next_end.map_or(until, |end| end.min(until)));
            }
        }

        let total = self.members.len();
        let out = self.members.iter().filter(|m| m.is_out()).count();
        let failing_open = out > 0 && out as f64 > self.fail_open_above * total as f64;
        if failing_open != self.failing_open {
            self.failing_open = failing_open;
            if failing_open {
                tracing::warn!(
                    target: "tower_health_classify",
                    backend = %self.backend.escape_debug(),
                    out,
                    endpoints = total,
                    "backend failing open: {out} of {total} endpoints are unhealthy or unreachable; sending to all of them"
                );
            } else {
                tracing::info!(
                    target: "tower_health_classify",
                    backend = %self.backend.escape_debug(),
                    out,
                    endpoints = total,
                    "backend no longer failing open: {out} of {total} endpoints out"
                );
            }
        }
        for member in &mut self.members {
            let wanted = failing_open || !member.is_out();
            if wanted == member.inserted {
                continue;
            }
            member.inserted = wanted;
            self.changes.push_back(if wanted {
                Change::Insert(
                    member.key.clone(),
                    Endpoint::new(member.service.clone(), member.signals.clone()),
                )
            } else {
                Change::Remove(member.key.clone())
            });
        }

        if let Some(end) = next_end {
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(end)));
            if timer.deadline() != end {
                timer.as_mut().reset(end);
            }
            // Registers the wake-up; an end already passed is seen on the next poll.
            if timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }
}

impl<K, S> Stream for HealthDiscover<K, S>
where
    K: Clone,
    S: Clone,
{
    type Item = Result<Change<K, Endpoint<S>>, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.changes.is_empty() {
            this.update(cx);
        }
        match this.changes.pop_front() {
            Some(change) => Poll::Ready(Some(Ok(change))),
            None => Poll::Pending,
        }
    }
}

impl<K, S> Unpin for HealthDiscover<K, S> {}

impl<K: fmt::Debug, S> fmt::Debug for HealthDiscover<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthDiscover")
            .field("backend", &self.backend)
            .field(
                "endpoints",
                &self
                    .members
                    .iter()
                    .map(|m| (&m.key, m.status, m.ejected_until.is_some(), m.inserted))
                    .collect::<Vec<_>>(),
            )
            .field("fail_open_above", &self.fail_open_above)
            .field("failing_open", &self.failing_open)
            .finish()
    }
}
