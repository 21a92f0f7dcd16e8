//! `Prober`: periodic active probes of every backend of a registry, through the layer.

use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Buf;
use http::{header, HeaderName, Request, Response};
use http_body::Body;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::timeout::Timeout;
use tower_layer::Layer;
use tower_service::Service;

use crate::check::{Judgement, ProbeAnswer, ProbeCheck};
use crate::classify::{classify_error, tls_failure_of, Outcome};
use crate::clock;
use crate::error::{BoxError, TlsFailure, TransportKind};
use crate::layer::HealthClassifyLayer;
use crate::registry::{BackendHandle, HealthRegistry};
use crate::sink::{HealthReport, HealthSink};
use crate::verdict::{verdict, Credentials, Origin, Probe, Verdict};

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_JITTER: f64 = 0.1;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Probes every backend of a [`HealthRegistry`] in the background, through a
/// [`HealthClassifyLayer`] reporting to the backend's handle. Made by
/// [`Prober::builder`] and [`ProberBuilder::spawn`] (probes judged by their status) or
/// [`ProberBuilder::spawn_checked`] (probes judged by a [`ProbeCheck`], such as the MCP
/// kinds of [`check`](crate::check)).
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
///   dropped unread, unless a check reads them
///   ([`spawn_checked`](ProberBuilder::spawn_checked): one report per probe all the same,
///   and the timeout then bounds the body's reading too).
/// - Backends registered while the prober runs are probed at once; removed ones stop
///   being probed. The prober learns of both from the registry, without polling. A name
///   removed and registered again is a new backend: it is probed at once.
/// - [`shutdown`](Prober::shutdown) stops every task and waits for them to end. Probes in
///   flight are dropped: they report [`Outcome::Cancelled`](crate::Outcome::Cancelled)
///   (checked ones report nothing), which counts for nothing. A checked probe dropped
///   between its answer and its cleanup leaves what it opened (one MCP session) to the
///   server's own expiry. Dropping the `Prober` stops the tasks too, without waiting.
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

    /// Starts probing on the current tokio runtime, judging each probe by its status
    /// alone (the `http` probe kind).
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
        self.spawn_with(ByStatus(make))
    }

    /// Starts probing on the current tokio runtime, each probe judged by the
    /// [`ProbeCheck`] its [`ProbeCall`] carries (or by its status when it carries none):
    /// the probe kinds of [`check`](crate::check), such as `mcp` and `oauth_metadata`,
    /// or a kind of your own.
    ///
    /// As with [`spawn`](Self::spawn), `make` gives the service and the request for
    /// every probe. A checked probe then goes like this, within the probe
    /// [`timeout`](Self::timeout) from readiness to the last byte read:
    ///
    /// 1. The request goes through the classify layer, which classifies the head (or
    ///    the error) as usual.
    /// 2. The check judges the answer, reading up to its
    ///    [`body_limit`](ProbeCheck::body_limit) of the body as it asks; it may try
    ///    another URI once ([`Judgement::Retry`]).
    /// 3. One report goes to the backend's handle, origin `Probe`: the outcome the layer
    ///    classified, with the check's verdict (or the verdict table's, timed to the
    ///    moment the check decided). A body that fails while it is read is reported as
    ///    the transport failure it was, one that stalls past the timeout as `timeout`.
    /// 4. The check's [`cleanup`](ProbeCheck::cleanup), if any, goes out unreported
    ///    (closing the MCP session the probe opened), within a timeout of its own.
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn); a panic in a check ends the probing of that backend.
    ///
    /// # Example
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use tower::service_fn;
    /// use tower_health_classify::check::McpCheck;
    /// use tower_health_classify::{AuthStrategy, HealthRegistry, HealthStatus, ProbeCall, Prober};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = HealthRegistry::default();
    /// let mut transitions = registry.subscribe();
    /// registry.register("tools", AuthStrategy::Unauthenticated);
    ///
    /// let prober = Prober::builder(registry.clone()).spawn_checked(|_backend: &str| {
    ///     // Stands in for a client of an MCP server at http://tools.internal/mcp.
    ///     let server = service_fn(|_req: Request<String>| async {
    ///         let answer = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"tools","version":"1"}}}"#;
    ///         Ok::<_, Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from(answer))))
    ///     });
    ///     let request = McpCheck::request("http://tools.internal/mcp".parse().unwrap());
    ///     Some(ProbeCall::new(server, request).check(McpCheck))
    /// });
    ///
    /// let transition = transitions.recv().await.unwrap();
    /// assert_eq!(transition.to, HealthStatus::Healthy);
    /// prober.shutdown().await;
    /// # }
    /// ```
    pub fn spawn_checked<F, S, B, RB>(self, make: F) -> Prober
    where
        F: Fn(&str) -> Option<ProbeCall<S, B>> + Send + Sync + 'static,
        S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Body + Send + 'static,
        RB::Data: Send,
        RB::Error: Into<BoxError>,
    {
        self.spawn_with(Checked(make))
    }

    fn spawn_with<F: MakeProbe>(self, make: F) -> Prober {
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

impl<F: MakeProbe> Supervisor<F> {
    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
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
    fn reconcile(&mut self) {
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
async fn probe_backend<F: MakeProbe>(
    handle: BackendHandle,
    config: Arc<Config<F>>,
    mut jitter: Jitter,
) {
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

/// Sends one probe through the layer; one report, made by the layer or for it.
async fn probe_once<F: MakeProbe>(
    handle: &BackendHandle,
    layer: &HealthClassifyLayer<BackendHandle>,
    config: &Config<F>,
) {
    config.make.probe(handle, layer, config.timeout).await;
}

/// What a prober's `make` is: one of [`spawn`](ProberBuilder::spawn) (probes judged by
/// their status) or one of [`spawn_checked`](ProberBuilder::spawn_checked).
trait MakeProbe: Send + Sync + 'static {
    fn probe<'a>(
        &'a self,
        handle: &'a BackendHandle,
        layer: &'a HealthClassifyLayer<BackendHandle>,
        timeout: Duration,
    ) -> impl Future<Output = ()> + Send + 'a;
}

/// The `make` of [`spawn`](ProberBuilder::spawn).
struct ByStatus<F>(F);

impl<F, S, B, RB> MakeProbe for ByStatus<F>
where
    F: Fn(&str) -> Option<(S, Request<B>)> + Send + Sync + 'static,
    S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: Send + 'static,
{
    async fn probe(
        &self,
        handle: &BackendHandle,
        layer: &HealthClassifyLayer<BackendHandle>,
        timeout: Duration,
    ) {
        if let Some((service, request)) = (self.0)(handle.name()) {
            by_status(handle, layer, service, request, timeout).await;
        }
    }
}

/// The `make` of [`spawn_checked`](ProberBuilder::spawn_checked).
struct Checked<F>(F);

impl<F, S, B, RB> MakeProbe for Checked<F>
where
    F: Fn(&str) -> Option<ProbeCall<S, B>> + Send + Sync + 'static,
    S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: Body + Send + 'static,
    RB::Data: Send,
    RB::Error: Into<BoxError>,
{
    async fn probe(
        &self,
        handle: &BackendHandle,
        layer: &HealthClassifyLayer<BackendHandle>,
        timeout: Duration,
    ) {
        let Some(call) = (self.0)(handle.name()) else {
            return;
        };
        match call.check {
            None => by_status(handle, layer, call.service, call.request, timeout).await,
            Some(check) => {
                checked(handle, layer, call.service, call.request, check, timeout).await;
            }
        }
    }
}

/// A probe judged by its status: the layer reports whatever happened.
async fn by_status<S, B, RB>(
    handle: &BackendHandle,
    layer: &HealthClassifyLayer<BackendHandle>,
    service: S,
    mut request: Request<B>,
    timeout: Duration,
) where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    request.extensions_mut().insert(Probe);
    let mut service = layer.layer(Timeout::new(service, timeout));
    // `Timeout` bounds the call only; readiness gets the same bound here.
    match tokio::time::timeout(timeout, poll_fn(|cx| service.poll_ready(cx))).await {
        // Whatever came back was reported by the layer; the body is not wanted.
        Ok(Ok(())) => drop(service.call(request).await),
        // Classified and reported by the layer.
        Ok(Err(_)) => {}
        Err(_) => not_ready(handle),
    }
}

fn not_ready(handle: &BackendHandle) {
    tracing::debug!(
        target: "tower_health_classify",
        backend = %handle.name().escape_debug(),
        "probe service not ready within the timeout; probe skipped"
    );
}

/// A probe judged by `check`: through the layer (which reports to `capture`, not to the
/// backend), then the check, then one report to the backend, then the cleanup.
async fn checked<S, B, RB>(
    handle: &BackendHandle,
    layer: &HealthClassifyLayer<BackendHandle>,
    service: S,
    mut request: Request<B>,
    check: CheckOf<B>,
    timeout: Duration,
) where
    S: Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: Body,
    RB::Error: Into<BoxError>,
{
    // One deadline for everything up to the last byte read. It sits outside the layer:
    // a probe it ends is reported as the timeout it was, not as the cancellation the
    // layer saw.
    let deadline = Instant::now() + timeout;
    let capture = Capture::default();
    let mut service = layer.with_sink(capture.clone()).layer(service);
    request.extensions_mut().insert(Probe);
    let (parts, body) = request.into_parts();
    // For a retry and the cleanup: the probe's method, headers (its credentials) and
    // extensions.
    let template = parts.clone();
    let mut request = Request::from_parts(parts, body);
    let started = clock::now();
    let mut retried = false;
    'probe: loop {
        let uri = request.uri().clone();
        match tokio::time::timeout_at(deadline, poll_fn(|cx| service.poll_ready(cx))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return capture.forward(handle, started, Forward::AsCaptured),
            Err(_) => return not_ready(handle),
        }
        let response = match tokio::time::timeout_at(deadline, service.call(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => return capture.forward(handle, started, Forward::AsCaptured),
            Err(_) => return capture.forward(handle, started, Forward::TimedOut),
        };
        let (head, body) = response.into_parts();
        let mut body = pin!(body);
        let layer_verdict = capture.verdict(handle);
        let limit = check.check.body_limit();
        let mut read = Vec::new();
        let mut complete = false;
        let forward = loop {
            let answer = ProbeAnswer::new(&uri, head.status, &head.headers, layer_verdict)
                .with_body(&read, complete);
            match check.check.judge(&answer) {
                Judgement::ReadBody if !complete => {}
                Judgement::Verdict(verdict) => break Forward::Judged(Some(verdict)),
                Judgement::Retry(next) if !retried => {
                    retried = true;
                    let mut parts = template.clone();
                    parts.uri = next;
                    request = Request::from_parts(parts, (check.empty)());
                    continue 'probe;
                }
                // Keep, a body read to its end, a second retry.
                _ => break Forward::Judged(None),
            }
            let frame = poll_fn(|cx| body.as_mut().poll_frame(cx));
            match tokio::time::timeout_at(deadline, frame).await {
                Err(_) => break Forward::Failed(Outcome::Transport(TransportKind::Timeout), None),
                Ok(None) => complete = true,
                Ok(Some(Err(error))) => {
                    let error: BoxError = error.into();
                    let outcome = classify_error(&*error);
                    let tls = tls_failure_of(&outcome, &*error);
                    break Forward::Failed(outcome, tls);
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() && read.len() < limit {
                            let chunk = data.chunk();
                            let take = chunk.len().min(limit - read.len());
                            read.extend_from_slice(&chunk[..take]);
                            data.advance(take);
                        }
                        complete |= read.len() >= limit;
                    }
                }
            }
        };
        capture.forward(handle, started, forward);
        let answer = ProbeAnswer::new(&uri, head.status, &head.headers, layer_verdict)
            .with_body(&read, complete);
        if let Some(cleanup) = check.check.cleanup(&answer) {
            let mut parts = template;
            parts.method = cleanup.method;
            parts.uri = uri;
            // The cleanup has no body.
            parts.headers.remove(header::CONTENT_TYPE);
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.extend(cleanup.headers);
            let request = Request::from_parts(parts, (check.empty)());
            // Below the layer: a cleanup is not a probe and is not reported. On a task of
            // its own, so that stopping the prober now does not leave the session open.
            let inner = service.into_inner();
            tokio::spawn(clean_up(handle.clone(), inner, request, timeout));
        }
        return;
    }
}

/// Sends a check's cleanup request; whatever happens is only logged.
async fn clean_up<S, B>(
    handle: BackendHandle,
    mut service: S,
    request: Request<B>,
    timeout: Duration,
) where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    let sent = tokio::time::timeout(timeout, async {
        poll_fn(|cx| service.poll_ready(cx)).await?;
        service.call(request).await
    })
    .await;
    let backend = handle.name().escape_debug();
    match sent {
        Ok(Ok(_)) => {
            tracing::debug!(target: "tower_health_classify", %backend, "probe cleanup sent")
        }
        Ok(Err(error)) => tracing::debug!(
            target: "tower_health_classify",
            %backend,
            outcome = classify_error(&*error.into()).as_str(),
            "probe cleanup failed"
        ),
        Err(_) => {
            tracing::debug!(target: "tower_health_classify", %backend, "probe cleanup timed out")
        }
    }
}

/// One probe of one backend, for [`spawn_checked`](ProberBuilder::spawn_checked): the
/// service to send it through, the request, and how to judge the answer.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::service_fn;
/// use tower_health_classify::check::OAuthMetadataCheck;
/// use tower_health_classify::ProbeCall;
///
/// let client = service_fn(|_req: Request<String>| async {
///     Ok::<_, Infallible>(Response::new(String::new()))
/// });
/// let check = OAuthMetadataCheck::new("http://127.0.0.1:9001/mcp".parse().unwrap());
/// let call = ProbeCall::new(client, check.request::<String>()).check(check);
/// # let _ = call;
/// ```
pub struct ProbeCall<S, B> {
    service: S,
    request: Request<B>,
    check: Option<CheckOf<B>>,
}

/// A check, and how to make the empty body of a retry or a cleanup.
struct CheckOf<B> {
    check: Box<dyn ProbeCheck>,
    empty: fn() -> B,
}

impl<S, B> ProbeCall<S, B> {
    /// A probe sending `request` through `service`, judged by its status alone (the
    /// `http` kind) unless a [`check`](Self::check) is added.
    pub fn new(service: S, request: Request<B>) -> Self {
        ProbeCall {
            service,
            request,
            check: None,
        }
    }

    /// Judged by `check` (a retry or a cleanup it asks for is sent with an empty body,
    /// hence `B: Default`).
    pub fn check(mut self, check: impl ProbeCheck) -> Self
    where
        B: Default,
    {
        self.check = Some(CheckOf {
            check: Box::new(check),
            empty: B::default,
        });
        self
    }
}

impl<S, B> fmt::Debug for ProbeCall<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path only: headers, userinfo and queries may carry credentials.
        f.debug_struct("ProbeCall")
            .field("method", self.request.method())
            .field("path", &self.request.uri().path())
            .field("checked", &self.check.is_some())
            .finish_non_exhaustive()
    }
}

/// The sink of a checked probe's layer: keeps the layer's report for the prober, which
/// reports once the check has decided.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Captured>>>);

struct Captured {
    outcome: Outcome,
    credentials: Credentials,
    origin: Origin,
    tls_failure: Option<TlsFailure>,
}

/// What the prober reports for a checked probe.
enum Forward {
    /// The layer's report as it was (an inner error).
    AsCaptured,
    /// The layer's outcome with the check's verdict, or the verdict table's.
    Judged(Option<Verdict>),
    /// Another outcome: the body failed or stalled.
    Failed(Outcome, Option<TlsFailure>),
    /// The deadline ended the exchange before the head.
    TimedOut,
}

impl Capture {
    fn take(&self) -> Option<Captured> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// The verdict table's verdict on the captured head.
    fn verdict(&self, handle: &BackendHandle) -> Option<Verdict> {
        let captured = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let captured = captured.as_ref()?;
        verdict(
            &captured.outcome,
            &handle.strategy(),
            captured.credentials,
            captured.origin,
            Duration::ZERO,
            handle.slow_threshold(),
        )
    }

    /// The one report of the probe, to the backend's handle.
    fn forward(&self, handle: &BackendHandle, started: clock::Stamp, forward: Forward) {
        let Some(captured) = self.take() else {
            // The layer reports every exchange it saw; nothing to forward otherwise.
            return;
        };
        let (outcome, tls_failure, judged) = match forward {
            Forward::AsCaptured => (captured.outcome, captured.tls_failure, None),
            Forward::Judged(judged) => (captured.outcome, captured.tls_failure, judged),
            Forward::Failed(outcome, tls) => (outcome, tls, None),
            Forward::TimedOut => (Outcome::Transport(TransportKind::Timeout), None, None),
        };
        let ended = clock::now();
        let latency = ended.since(started);
        let strategy = handle.strategy();
        let table = verdict(
            &outcome,
            &strategy,
            captured.credentials,
            captured.origin,
            latency,
            handle.slow_threshold(),
        );
        handle.report(&HealthReport {
            outcome: &outcome,
            verdict: judged.or(table),
            strategy: &strategy,
            credentials: captured.credentials,
            origin: captured.origin,
            latency,
            tls_failure,
            ended: Some(ended),
        });
    }
}

impl HealthSink for Capture {
    fn strategy(&self) -> crate::verdict::AuthStrategy {
        // Only the verdict of the captured report would use it, and that is judged
        // again when it is forwarded.
        crate::verdict::AuthStrategy::Unauthenticated
    }

    fn report(&self, report: &HealthReport<'_>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Captured {
            outcome: report.outcome.clone(),
            credentials: report.credentials,
            origin: report.origin,
            tls_failure: report.tls_failure,
        });
    }
}

/// Draws waits uniformly from `interval × [1 − fraction, 1 + fraction)` with xorshift64*
/// ([`backoff`](crate::backoff)), seeded from the backend's name.
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
            // Not 0, which would be seeded at random instead.
            state: hasher.finish() | 1,
            fraction,
        }
    }

    fn next(&mut self, interval: Duration) -> Duration {
        if self.fraction == 0.0 {
            return interval;
        }
        let unit = crate::backoff::unit(&mut self.state);
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
