//! `Prober`: periodic active probes of every backend of a registry, through the layer.

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Request, Response};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::timeout::Timeout;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BoxError;
use crate::layer::HealthClassifyLayer;
use crate::registry::{BackendHandle, HealthRegistry};
use crate::verdict::Probe;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_JITTER: f64 = 0.1;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Probes every backend of a [`HealthRegistry`] in the background, through a
/// [`HealthClassifyLayer`] reporting to the backend's handle. Made by
/// [`Prober::builder`] and [`ProberBuilder::spawn`].
///
/// - Every backend is probed on its own tokio task, so backends are probed concurrently
///   and a slow backend delays no other. The first probe is sent at once, then one every
///   [`interval`](ProberBuilder::interval) (30 s by default), each wait drawn uniformly
///   from `interval × (1 ± jitter)` ([`jitter`](ProberBuilder::jitter) 0.1 by default) so
///   that probes of many backends spread out. The wait counts from the start of the
///   previous probe; a probe still running when the next is due delays it: a backend never
///   has two probes in flight.
/// - Each probe is the request that `make` returns for the backend, with the [`Probe`]
///   extension inserted (so a 4xx answer counts against the backend, see
///   [`Origin::Probe`](crate::Origin::Probe)), sent through
///   `HealthClassifyLayer::new(handle).pass_through_auth()` over
///   [`tower::timeout::Timeout`]. The timeout ([`timeout`](ProberBuilder::timeout), 10 s
///   by default) sits inside the layer, so a probe that takes too long is reported as
///   `Transport(Timeout)` and counts against the backend. The response and its body are
///   dropped unread.
/// - Backends registered while the prober runs are probed at once; removed ones stop
///   being probed. The prober learns of both from the registry, without polling. A name
///   removed and registered again is a new backend: it is probed at once.
/// - [`shutdown`](Prober::shutdown) stops every task and waits for them to end. Probes in
///   flight are dropped: they report [`Outcome::Cancelled`](crate::Outcome::Cancelled),
///   which counts for nothing. Dropping the `Prober` stops the tasks too, without waiting.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use http::{Request, Response, StatusCode};
/// use tower::service_fn;
/// use tower_health_classify::{AuthStrategy, HealthRegistry, HealthStatus, Policy, Prober};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = HealthRegistry::new(Policy::default());
/// let mut transitions = registry.subscribe();
/// registry.register("search", AuthStrategy::Unauthenticated);
///
/// let prober = Prober::builder(registry.clone())
///     .interval(Duration::from_secs(15))
///     .timeout(Duration::from_secs(5))
///     .spawn(|backend: &str| {
///         // Stands in for a shared HTTP client (clone it here) and the backend's URI.
///         let client = service_fn(|_req: Request<String>| async {
///             Ok::<_, Infallible>(Response::new(String::new()))
///         });
///         let request = Request::get(format!("http://{backend}.internal/health"))
///             .body(String::new())
///             .unwrap();
///         Some((client, request))
///     });
///
/// // The first probe goes out at once.
/// let transition = transitions.recv().await.unwrap();
/// assert_eq!(transition.to, HealthStatus::Healthy);
/// assert_eq!(registry.snapshot().backends[0].checks, 1);
///
/// prober.shutdown().await;
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
#[must_use = "dropping the prober stops the probes"]
pub struct Prober {
    registry: HealthRegistry,
    /// Dropped or sent: the supervisor stops every task and ends.
    stop: oneshot::Sender<()>,
    supervisor: JoinHandle<()>,
    interval: Duration,
    jitter: f64,
    timeout: Duration,
}

impl Prober {
    /// A builder for a prober of `registry`'s backends, with the defaults: every 30 s,
    /// jitter 0.1, timeout 10 s.
    pub fn builder(registry: HealthRegistry) -> ProberBuilder {
        ProberBuilder {
            registry,
            interval: DEFAULT_INTERVAL,
            jitter: DEFAULT_JITTER,
            timeout: DEFAULT_TIMEOUT,
            credential_headers: Vec::new(),
        }
    }

    /// Probes backend `name` now instead of at its next turn: at once, or a tenth of the
    /// interval after its previous probe began if that is later. Requests made while a
    /// probe is running or due come to one probe. Returns `false` if the registry has no
    /// backend of that name.
    ///
    /// The registry asks for this by itself when a caller's request gets a 401 or 403
    /// that a probe would be judged Bad for (reason `request_denied`, at most once a
    /// second per backend): the caller's answer never counts against the backend, and
    /// the probe, which carries the gateway's own credentials, decides.
    pub fn probe_now(&self, name: &str) -> bool {
        match self.registry.handle(name) {
            Some(handle) => {
                handle.backend.probe_now.notify_one();
                true
            }
            None => false,
        }
    }

    /// Stops probing and waits until every probe task has ended. Probes in flight are
    /// dropped and report [`Outcome::Cancelled`](crate::Outcome::Cancelled): no verdict,
    /// no counter moves.
    pub async fn shutdown(self) {
        let Prober {
            stop, supervisor, ..
        } = self;
        // An error means the supervisor is already gone; either way it is stopping.
        let _ = stop.send(());
        // The supervisor only ends by stopping its tasks; a panic in one of those was
        // already reported by the panic hook, and is no reason to fail a shutdown.
        let _ = supervisor.await;
    }
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prober")
            .field("interval", &self.interval)
            .field("jitter", &self.jitter)
            .field("timeout", &self.timeout)
            .field("running", &!self.supervisor.is_finished())
            .finish()
    }
}

/// Configures and spawns a [`Prober`]. Made by [`Prober::builder`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_health_classify::{HealthRegistry, Prober};
///
/// let builder = Prober::builder(HealthRegistry::default())
///     .interval(Duration::from_secs(60))
///     .jitter(0.2)
///     .timeout(Duration::from_secs(5))
///     .credential_header(http::HeaderName::from_static("x-api-key"));
/// # let _ = builder;
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
#[derive(Debug, Clone)]
pub struct ProberBuilder {
    registry: HealthRegistry,
    interval: Duration,
    jitter: f64,
    timeout: Duration,
    credential_headers: Vec<HeaderName>,
}

impl ProberBuilder {
    /// How often each backend is probed, on average (default 30 s).
    ///
    /// # Panics
    ///
    /// If `interval` is zero.
    pub fn interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "the probe interval must be non-zero");
        self.interval = interval;
        self
    }

    /// How far each wait may stray from the interval, as a fraction of it: each wait is
    /// drawn uniformly from `interval × [1 − jitter, 1 + jitter]` (default 0.1; taken
    /// into `[0, 1]`, NaN as 0). 0 probes at exactly the interval.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// How long one probe may take, from the call to the response head (default 10 s).
    /// A probe that takes longer is reported as `Transport(Timeout)`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Counts `name` as a credential header on probes, as
    /// [`HealthClassifyLayer::credential_header`] does: a probe that carries it was sent
    /// with credentials. `Authorization` always counts.
    pub fn credential_header(mut self, name: HeaderName) -> Self {
        if !self.credential_headers.contains(&name) {
            self.credential_headers.push(name);
        }
        self
    }

    /// Starts probing on the current tokio runtime.
    ///
    /// `make` is called for every probe with the backend's name, and returns the service
    /// to send the probe through (unlayered: the prober adds the timeout and the
    /// classify layer) and the probe request; `None` skips that backend this time. It is
    /// called from every backend's task, hence `Fn + Send + Sync`: clone a shared client
    /// in it. A service that is not ready within the timeout is skipped too: nothing was
    /// sent, so nothing is reported.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime. A panic in `make` or in the service ends the
    /// probing of that backend only (the panic hook reports it as usual).
    pub fn spawn<F, S, B, RB>(self, make: F) -> Prober
    where
        F: Fn(&str) -> Option<(S, Request<B>)> + Send + Sync + 'static,
        S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        let config = Arc::new(Config {
            make,
            interval: self.interval,
            jitter: self.jitter,
            timeout: self.timeout,
            credential_headers: self.credential_headers,
        });
        let supervisor = Supervisor {
            registry: self.registry.clone(),
            config,
            tasks: HashMap::new(),
        };
        Prober {
            registry: self.registry,
            stop,
            supervisor: tokio::spawn(supervisor.run(stopped)),
            interval: self.interval,
            jitter: self.jitter,
            timeout: self.timeout,
        }
    }
}

/// What every backend task of one prober shares.
struct Config<F> {
    make: F,
    interval: Duration,
    jitter: f64,
    timeout: Duration,
    credential_headers: Vec<HeaderName>,
}

/// Keeps one probe task per registered backend.
struct Supervisor<F> {
    registry: HealthRegistry,
    config: Arc<Config<F>>,
    tasks: HashMap<Arc<str>, BackendTask>,
}

/// A backend's probe task; aborted when dropped, so that no path (a removal, the
/// supervisor's own abort) leaves it running.
struct BackendTask {
    backend: BackendHandle,
    join: JoinHandle<()>,
}

impl Drop for BackendTask {
    fn drop(&mut self) {
        self.join.abort();
    }
}

impl<F> Supervisor<F> {
    async fn run<S, B, RB>(mut self, mut stopped: oneshot::Receiver<()>)
    where
        F: Fn(&str) -> Option<(S, Request<B>)> + Send + Sync + 'static,
        S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Send + 'static,
    {
        let mut membership = self.registry.membership();
        loop {
            // Seen before the backends are read: a change made after the read wakes us.
            let _ = membership.borrow_and_update();
            self.reconcile();
            tokio::select! {
                biased;
                // A send or a dropped `Prober`: stop either way.
                _ = &mut stopped => break,
                changed = membership.changed() => {
                    if changed.is_err() {
                        // Cannot happen while we hold the registry; wait for the stop.
                        let _ = (&mut stopped).await;
                        break;
                    }
                }
            }
        }
        for task in self.tasks.values() {
            task.join.abort();
        }
        for task in self.tasks.values_mut() {
            // Ends once the task's future, and the probe it was running, is dropped.
            let _ = (&mut task.join).await;
        }
    }

    /// Starts a task for every new backend and stops the tasks of removed ones.
    fn reconcile<S, B, RB>(&mut self)
    where
        F: Fn(&str) -> Option<(S, Request<B>)> + Send + Sync + 'static,
        S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Send + 'static,
    {
        let mut previous = std::mem::take(&mut self.tasks);
        for handle in self.registry.handles() {
            let name = handle.backend.name.clone();
            let task = match previous.remove(&name) {
                // The same backend, not one removed and registered again under its name.
                Some(task) if Arc::ptr_eq(&task.backend.backend, &handle.backend) => task,
                _ => {
                    tracing::debug!(
                        target: "tower_health_classify",
                        backend = %name.escape_debug(),
                        "probing backend"
                    );
                    let jitter = Jitter::new(&name, self.config.jitter);
                    BackendTask {
                        backend: handle.clone(),
                        join: tokio::spawn(probe_backend(handle, self.config.clone(), jitter)),
                    }
                }
            };
            self.tasks.insert(name, task);
        }
        for name in previous.keys() {
            tracing::debug!(
                target: "tower_health_classify",
                backend = %name.escape_debug(),
                "backend removed, no longer probed"
            );
        }
        // Dropping `previous` aborts the tasks of removed backends.
    }
}

/// Probes one backend until its task is aborted or the backend is removed.
async fn probe_backend<F, S, B, RB>(
    handle: BackendHandle,
    config: Arc<Config<F>>,
    mut jitter: Jitter,
) where
    F: Fn(&str) -> Option<(S, Request<B>)>,
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    let layer = config.credential_headers.iter().cloned().fold(
        HealthClassifyLayer::new(handle.clone())
            .pass_through_auth()
            .for_probes(),
        HealthClassifyLayer::credential_header,
    );
    loop {
        if handle.is_removed() {
            return;
        }
        let started = Instant::now();
        // Boxed: the probe's state (request, layered futures, timers) lives only while
        // the probe runs, so a sleeping backend's task holds little more than its timer.
        Box::pin(probe_once(&handle, &layer, &config)).await;
        let wait = jitter.next(config.interval);
        tokio::select! {
            () = tokio::time::sleep(wait.saturating_sub(started.elapsed())) => {}
            // Asked for a probe now: sent at once, but never sooner than a tenth of the
            // interval after this probe began.
            () = handle.backend.probe_now.notified() => {
                let earliest = started.checked_add(config.interval / 10).unwrap_or(started);
                tokio::time::sleep_until(earliest).await;
            }
        }
    }
}

/// Sends one probe through the layer; whatever happened was reported by the layer.
async fn probe_once<F, S, B, RB>(
    handle: &BackendHandle,
    layer: &HealthClassifyLayer<BackendHandle>,
    config: &Config<F>,
) where
    F: Fn(&str) -> Option<(S, Request<B>)>,
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    let Some((service, mut request)) = (config.make)(handle.name()) else {
        return;
    };
    request.extensions_mut().insert(Probe);
    let mut service = layer.layer(Timeout::new(service, config.timeout));
    // `Timeout` bounds the call only; readiness gets the same bound here.
    match tokio::time::timeout(config.timeout, poll_fn(|cx| service.poll_ready(cx))).await {
        // Whatever came back was reported by the layer; the body is not wanted.
        Ok(Ok(())) => drop(service.call(request).await),
        // Classified and reported by the layer.
        Ok(Err(_)) => {}
        Err(_) => tracing::debug!(
            target: "tower_health_classify",
            backend = %handle.name().escape_debug(),
            "probe service not ready within the timeout; probe skipped"
        ),
    }
}

/// Draws waits uniformly from `interval × [1 − fraction, 1 + fraction)` with xorshift64*:
/// spreading probes out needs no cryptographic randomness, nor a dependency.
struct Jitter {
    state: u64,
    fraction: f64,
}

impl Jitter {
    fn new(name: &str, fraction: f64) -> Self {
        // Two backends with the same name (one removed and registered again, or in two
        // registries) still get different sequences.
        static SEEDS: AtomicU64 = AtomicU64::new(0);
        let mut hasher = DefaultHasher::new();
        name.hash(&mut hasher);
        SEEDS.fetch_add(1, Ordering::Relaxed).hash(&mut hasher);
        Jitter {
            // xorshift never leaves 0.
            state: hasher.finish() | 1,
            fraction,
        }
    }

    fn next(&mut self, interval: Duration) -> Duration {
        if self.fraction == 0.0 {
            return interval;
        }
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        // The top 53 bits of the scrambled output, as a float in [0, 1).
        let unit = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        let factor = 1.0 - self.fraction + 2.0 * self.fraction * unit;
        Duration::try_from_secs_f64(interval.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let interval = Duration::from_secs(30);
        for fraction in [0.1, 0.5, 1.0] {
            let mut jitter = Jitter::new("search", fraction);
            let waits: Vec<f64> = (0..10_000)
                .map(|_| jitter.next(interval).as_secs_f64())
                .collect();
            let (lo, hi) = (30.0 * (1.0 - fraction), 30.0 * (1.0 + fraction));
            assert!(waits.iter().all(|w| (lo..=hi).contains(w)), "{fraction}");
            let min = waits.iter().copied().fold(f64::MAX, f64::min);
            let max = waits.iter().copied().fold(f64::MIN, f64::max);
            let span = hi - lo;
            assert!(
                min < lo + span * 0.01 && max > hi - span * 0.01,
                "{min} {max}"
            );
            let mean = waits.iter().sum::<f64>() / waits.len() as f64;
            assert!((mean - 30.0).abs() < span * 0.02, "mean {mean}");
        }
    }

    #[test]
    fn zero_jitter_is_the_exact_interval_and_huge_intervals_saturate() {
        let mut exact = Jitter::new("a", 0.0);
        assert_eq!(exact.next(Duration::from_secs(30)), Duration::from_secs(30));
        let mut wide = Jitter::new("a", 1.0);
        for _ in 0..100 {
            let _ = wide.next(Duration::MAX);
        }
    }

    #[test]
    fn same_name_gets_different_sequences() {
        let mut a = Jitter::new("same", 0.1);
        let mut b = Jitter::new("same", 0.1);
        let interval = Duration::from_secs(30);
        let a: Vec<_> = (0..4).map(|_| a.next(interval)).collect();
        let b: Vec<_> = (0..4).map(|_| b.next(interval)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn builder_clamps_jitter_and_keeps_headers_unique() {
        let name = HeaderName::from_static("x-api-key");
        let builder = Prober::builder(HealthRegistry::default())
            .jitter(3.0)
            .credential_header(name.clone())
            .credential_header(name);
        assert_eq!(builder.jitter, 1.0);
        assert_eq!(builder.credential_headers.len(), 1);
        assert_eq!(builder.clone().jitter(-1.0).jitter, 0.0);
        assert_eq!(builder.jitter(f64::NAN).jitter, 0.0);
    }

    #[test]
    #[should_panic(expected = "non-zero")]
    fn zero_interval_panics() {
        let _ = Prober::builder(HealthRegistry::default()).interval(Duration::ZERO);
    }
}
