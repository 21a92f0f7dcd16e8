//! The prober on paused time, against `Service` mocks: schedule, jitter, concurrency,
//! timeouts, membership changes and shutdown.

#![cfg(feature = "probe")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderName, Request, Response, StatusCode};
use tokio::time::{sleep, sleep_until, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_health_classify::{
    AuthStrategy, HealthClassifyLayer, HealthRegistry, HealthStatus, Policy, Probe, Prober, Reason,
    TransportKind,
};

const SECOND: Duration = Duration::from_secs(1);

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<()>, Infallible>> + Send>>;
type Answer = Arc<dyn Fn(Arc<str>, Recorder) -> BoxFuture + Send + Sync>;
/// Backend names and when something happened to them.
type Events = Arc<Mutex<Vec<(Arc<str>, Duration)>>>;

/// What the mock backends saw, in paused time since the test began.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    calls: Events,
    done: Events,
    without_probe_extension: Arc<AtomicUsize>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            start: Instant::now(),
            calls: Arc::default(),
            done: Arc::default(),
            without_probe_extension: Arc::default(),
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn times(list: &Events, name: &str) -> Vec<Duration> {
        let list = list.lock().unwrap();
        list.iter()
            .filter(|(n, _)| &**n == name)
            .map(|(_, t)| *t)
            .collect()
    }

    /// When probes of `name` reached its backend.
    fn calls(&self, name: &str) -> Vec<Duration> {
        Self::times(&self.calls, name)
    }

    /// When the backend `name` finished answering.
    fn done(&self, name: &str) -> Vec<Duration> {
        Self::times(&self.done, name)
    }
}

/// A backend: records every call, checks the `Probe` extension, answers with `answer`.
#[derive(Clone)]
struct Mock {
    name: Arc<str>,
    recorder: Recorder,
    answer: Answer,
}

impl Service<Request<()>> for Mock {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> BoxFuture {
        if request.extensions().get::<Probe>().is_none() {
            self.recorder
                .without_probe_extension
                .fetch_add(1, Ordering::SeqCst);
        }
        let now = self.recorder.now();
        self.recorder
            .calls
            .lock()
            .unwrap()
            .push((self.name.clone(), now));
        (self.answer)(self.name.clone(), self.recorder.clone())
    }
}

/// A `make` that sends a plain probe to a `Mock` answering with `answer`.
fn make(
    recorder: &Recorder,
    answer: Answer,
) -> impl Fn(&str) -> Option<(Mock, Request<()>)> + Send + Sync + 'static {
    let recorder = recorder.clone();
    move |name: &str| {
        let mock = Mock {
            name: name.into(),
            recorder: recorder.clone(),
            answer: answer.clone(),
        };
        Some((mock, Request::new(())))
    }
}

fn respond(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            r#"Bearer scope="mcp""#.parse().unwrap(),
        );
    }
    response
}

fn answer_status(status: StatusCode) -> Answer {
    Arc::new(move |_, _| Box::pin(async move { Ok(respond(status)) }))
}

/// Answers 200 after `delay`, and records when it did.
fn answer_after(delay: Duration) -> Answer {
    Arc::new(move |name, recorder| {
        Box::pin(async move {
            sleep(delay).await;
            let now = recorder.now();
            recorder.done.lock().unwrap().push((name, now));
            Ok(respond(StatusCode::OK))
        })
    })
}

fn answer_never() -> Answer {
    Arc::new(|_, _| Box::pin(std::future::pending()))
}

fn registry_with(names: &[&str]) -> HealthRegistry {
    let registry = HealthRegistry::new(Policy::default());
    for name in names {
        registry.register(*name, AuthStrategy::Unauthenticated);
    }
    registry
}

fn secs(times: &[u64]) -> Vec<Duration> {
    times.iter().map(|t| Duration::from_secs(*t)).collect()
}

/// Sleeps until `at` after the recorder's start: every probe due by then has happened.
async fn until(recorder: &Recorder, at: Duration) {
    sleep_until(recorder.start + at).await;
}

#[tokio::test(start_paused = true)]
async fn the_first_probe_goes_out_at_once_then_one_per_interval() {
    let recorder = Recorder::new();
    let registry = registry_with(&["a"]);
    let prober = Prober::builder(registry)
        .jitter(0.0)
        .spawn(make(&recorder, answer_status(StatusCode::OK)));

    until(&recorder, Duration::from_millis(1)).await;
    assert_eq!(recorder.calls("a"), secs(&[0]), "before any time passed");

    until(&recorder, Duration::from_secs(125)).await;
    assert_eq!(recorder.calls("a"), secs(&[0, 30, 60, 90, 120]));
    prober.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn with_the_default_jitter_every_gap_is_within_ten_percent_of_the_interval() {
    let recorder = Recorder::new();
    let registry = registry_with(&["a"]);
    let prober = Prober::builder(registry).spawn(make(&recorder, answer_status(StatusCode::OK)));

    until(&recorder, Duration::from_secs(60 * 33)).await;
    prober.shutdown().await;
    let calls = recorder.calls("a");
    assert_eq!(calls[0], Duration::ZERO);
    assert!(calls.len() >= 61, "{} probes", calls.len());
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            (27 * SECOND..=33 * SECOND).contains(gap),
            "gap {gap:?} out of 30 s ± 10%"
        );
    }
    let (min, max) = (gaps.iter().min().unwrap(), gaps.iter().max().unwrap());
    assert!(
        *min < Duration::from_millis(29_500) && *max > Duration::from_millis(30_500),
        "the waits are spread: {min:?}..{max:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn every_probe_carries_the_probe_extension_so_a_404_counts_against_the_backend() {
    let recorder = Recorder::new();
    let registry = registry_with(&["a"]);
    let prober = Prober::builder(registry.clone())
        .jitter(0.0)
        .spawn(make(&recorder, answer_status(StatusCode::NOT_FOUND)));

    until(&recorder, Duration::from_secs(31)).await;
    assert_eq!(registry.status("a"), Some(HealthStatus::Degraded));
    until(&recorder, Duration::from_secs(61)).await;
    prober.shutdown().await;

    assert_eq!(recorder.calls("a").len(), 3);
    assert_eq!(recorder.without_probe_extension.load(Ordering::SeqCst), 0);
    let health = registry.handle("a").unwrap().health();
    assert_eq!(health.status, HealthStatus::Unhealthy);
    assert_eq!(health.reason, Some(Reason::UnexpectedStatus));
    assert_eq!(health.last_outcome, Some("client_error"));
    assert_eq!((health.checks, health.failures), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn backends_are_probed_concurrently() {
    let recorder = Recorder::new();
    let registry = registry_with(&["a", "b"]);
    let prober = Prober::builder(registry.clone())
        .jitter(0.0)
        .spawn(make(&recorder, answer_after(5 * SECOND)));

    until(&recorder, 6 * SECOND).await;
    assert_eq!(recorder.done("a"), secs(&[5]));
    assert_eq!(recorder.done("b"), secs(&[5]), "not after a's probe");
    assert_eq!(registry.summary().healthy, 2);
    prober.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_longer_than_the_interval_delays_the_next_and_never_overlaps() {
    let recorder = Recorder::new();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    let answer: Answer = {
        let (in_flight, most_in_flight) = (in_flight.clone(), most_in_flight.clone());
        Arc::new(move |_, _| {
            let (in_flight, most_in_flight) = (in_flight.clone(), most_in_flight.clone());
            Box::pin(async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most_in_flight.fetch_max(now, Ordering::SeqCst);
                sleep(45 * SECOND).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(respond(StatusCode::OK))
            })
        })
    };
    let prober = Prober::builder(registry_with(&["a"]))
        .jitter(0.0)
        .timeout(60 * SECOND)
        .spawn(make(&recorder, answer));

    until(&recorder, 200 * SECOND).await;
    prober.shutdown().await;
    assert_eq!(recorder.calls("a"), secs(&[0, 45, 90, 135, 180]));
    assert_eq!(most_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_times_out_is_a_transport_timeout_not_a_cancellation() {
    let recorder = Recorder::new();
    let registry = registry_with(&["a"]);
    let prober = Prober::builder(registry.clone())
        .jitter(0.0)
        .spawn(make(&recorder, answer_never()));
    let handle = registry.handle("a").unwrap();

    until(&recorder, 9 * SECOND).await;
    assert_eq!(handle.health().checks, 0, "still waiting for the answer");

    until(&recorder, 10 * SECOND + Duration::from_millis(1)).await;
    let health = handle.health();
    assert_eq!(health.checks, 1);
    assert_eq!(health.last_outcome, Some("transport"));
    assert_eq!(
        health.reason,
        Some(Reason::Transport(TransportKind::Timeout))
    );

    // Probes at 0, 30 and 60 s; the third times out at 70 s.
    until(&recorder, 71 * SECOND).await;
    prober.shutdown().await;
    assert_eq!(handle.status(), HealthStatus::Unhealthy);
    assert_eq!(handle.health().failures, 3);
}

#[tokio::test(start_paused = true)]
async fn a_backend_registered_later_is_probed_at_once_and_a_removed_one_no_more() {
    let recorder = Recorder::new();
    let registry = registry_with(&["a"]);
    let prober = Prober::builder(registry.clone())
        .jitter(0.0)
        .spawn(make(&recorder, answer_status(StatusCode::OK)));

    until(&recorder, 10 * SECOND).await;
    registry.register("b", AuthStrategy::Unauthenticated);
    until(&recorder, 10 * SECOND + Duration::from_millis(1)).await;
    assert_eq!(recorder.calls("b"), secs(&[10]));

    until(&recorder, 40 * SECOND).await;
    assert!(registry.remove("a"));
    until(&recorder, 200 * SECOND).await;
    assert_eq!(recorder.calls("a"), secs(&[0, 30]));
    assert_eq!(recorder.calls("b"), secs(&[10, 40, 70, 100, 130, 160, 190]));
    prober.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_name_removed_and_registered_again_is_a_new_backend_probed_at_once() {
    let recorder = Recorder::new();
    let registry = registry_with(&["a"]);
    let prober = Prober::builder(registry.clone())
        .jitter(0.0)
        .spawn(make(&recorder, answer_status(StatusCode::OK)));

    until(&recorder, 10 * SECOND).await;
    // Without a yield in between: the prober sees one change and a different backend.
    assert!(registry.remove("a"));
    registry.register("a", AuthStrategy::Unauthenticated);
    until(&recorder, 45 * SECOND).await;
    prober.shutdown().await;

    assert_eq!(recorder.calls("a"), secs(&[0, 10, 40]));
    assert_eq!(registry.handle("a").unwrap().health().checks, 2);
}

/// Answers after 5 s; sets `dropped` if the future is dropped before that.
fn answer_slowly_noting_drops(dropped: &Arc<AtomicBool>) -> Answer {
    struct OnDrop {
        dropped: Arc<AtomicBool>,
        answered: bool,
    }
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if !self.answered {
                self.dropped.store(true, Ordering::SeqCst);
            }
        }
    }
    let dropped = dropped.clone();
    Arc::new(move |_, _| {
        let guard = OnDrop {
            dropped: dropped.clone(),
            answered: false,
        };
        Box::pin(async move {
            // Moves the whole guard in: naming only a field would capture only that field.
            let mut guard = guard;
            sleep(5 * SECOND).await;
            guard.answered = true;
            Ok(respond(StatusCode::OK))
        })
    })
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_the_probe_in_flight_which_counts_for_nothing() {
    let recorder = Recorder::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let registry = registry_with(&["a"]);
    let prober = Prober::builder(registry.clone())
        .spawn(make(&recorder, answer_slowly_noting_drops(&dropped)));

    until(&recorder, SECOND).await;
    assert_eq!(recorder.calls("a").len(), 1);
    assert!(!dropped.load(Ordering::SeqCst), "the probe is in flight");
    prober.shutdown().await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the probe was dropped by then"
    );

    let health = registry.handle("a").unwrap().health();
    assert_eq!(health.status, HealthStatus::Unknown);
    assert_eq!((health.checks, health.last_checked), (0, None));
    assert_eq!(health.last_outcome, None);

    until(&recorder, 300 * SECOND).await;
    assert_eq!(recorder.calls("a").len(), 1, "no probe after shutdown");
    assert!(recorder.done("a").is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_prober_stops_its_probes_too() {
    let recorder = Recorder::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let registry = registry_with(&["a"]);
    let prober = Prober::builder(registry.clone())
        .spawn(make(&recorder, answer_slowly_noting_drops(&dropped)));

    until(&recorder, SECOND).await;
    assert!(!dropped.load(Ordering::SeqCst), "the probe is in flight");
    drop(prober);
    until(&recorder, 300 * SECOND).await;
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(recorder.calls("a").len(), 1);
    assert_eq!(registry.handle("a").unwrap().health().checks, 0);
}

#[tokio::test(start_paused = true)]
async fn make_returning_none_skips_that_backend_that_round() {
    let recorder = Recorder::new();
    let registry = registry_with(&["a", "b"]);
    let asked = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let inner = make(&recorder, answer_status(StatusCode::OK));
    let prober = Prober::builder(registry.clone()).jitter(0.0).spawn({
        let asked = asked.clone();
        move |name: &str| {
            let mut asked = asked.lock().unwrap();
            let round = asked.entry(name.to_owned()).or_default();
            *round += 1;
            // "b" has no probe to send in its first round.
            if name == "b" && *round == 1 {
                return None;
            }
            inner(name)
        }
    });

    until(&recorder, SECOND).await;
    assert_eq!(registry.handle("b").unwrap().health().checks, 0);
    until(&recorder, 61 * SECOND).await;
    prober.shutdown().await;

    assert_eq!(recorder.calls("a"), secs(&[0, 30, 60]));
    assert_eq!(
        recorder.calls("b"),
        secs(&[30, 60]),
        "skipped once, not stopped"
    );
    assert_eq!(asked.lock().unwrap()["b"], 3);
    assert_eq!(registry.handle("b").unwrap().health().checks, 2);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_backends_are_each_probed_once_in_the_first_round() {
    let recorder = Recorder::new();
    let names: Vec<String> = (0..1_000).map(|i| format!("backend-{i:04}")).collect();
    let registry = HealthRegistry::new(Policy::default());
    for name in &names {
        registry.register(name.as_str(), AuthStrategy::Unauthenticated);
    }
    let prober =
        Prober::builder(registry.clone()).spawn(make(&recorder, answer_status(StatusCode::OK)));

    until(&recorder, Duration::from_millis(1)).await;
    assert_eq!(registry.summary().healthy, 1_000);
    // The earliest second round is at 27 s.
    until(&recorder, 26 * SECOND).await;
    prober.shutdown().await;

    let mut per_backend = HashMap::<Arc<str>, usize>::new();
    for (name, at) in recorder.calls.lock().unwrap().iter() {
        assert_eq!(*at, Duration::ZERO);
        *per_backend.entry(name.clone()).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 1_000);
    assert!(per_backend.values().all(|n| *n == 1));
}

#[tokio::test(start_paused = true)]
async fn configured_credential_headers_count_as_credentials_on_probes() {
    let api_key = HeaderName::from_static("x-api-key");
    let mut reasons = Vec::new();
    for configured in [false, true] {
        let recorder = Recorder::new();
        let registry = HealthRegistry::new(Policy::default());
        registry.register("a", AuthStrategy::HeaderInjection);
        let inner = make(&recorder, answer_status(StatusCode::UNAUTHORIZED));
        let header = api_key.clone();
        let make = move |name: &str| {
            let (mock, mut request) = inner(name)?;
            request
                .headers_mut()
                .insert(header.clone(), "gateway-key".parse().unwrap());
            Some((mock, request))
        };
        let mut builder = Prober::builder(registry.clone());
        if configured {
            builder = builder.credential_header(api_key.clone());
        }
        let prober = builder.spawn(make);
        until(&recorder, SECOND).await;
        prober.shutdown().await;
        reasons.push(registry.handle("a").unwrap().health().reason);
    }
    assert_eq!(
        reasons,
        [
            Some(Reason::ExpectedChallenge),
            Some(Reason::CredentialsRejected)
        ]
    );
}

/// A service that never becomes ready.
#[derive(Clone)]
struct NeverReady;

impl Service<Request<()>> for NeverReady {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Pending
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        unreachable!("never ready")
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_never_ready_skips_the_probe_without_a_report_and_probing_goes_on() {
    let registry = registry_with(&["a"]);
    let asked = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let prober = Prober::builder(registry.clone()).jitter(0.0).spawn({
        let asked = asked.clone();
        move |_name: &str| {
            asked.fetch_add(1, Ordering::SeqCst);
            Some((NeverReady, Request::new(())))
        }
    });
    sleep_until(start + 61 * SECOND).await;
    prober.shutdown().await;
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert_eq!(registry.handle("a").unwrap().health().checks, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_of_an_empty_registry_and_debug() {
    let prober = Prober::builder(HealthRegistry::default())
        .interval(10 * SECOND)
        .spawn(|_: &str| None::<(NeverReady, Request<()>)>);
    let debug = format!("{prober:?}");
    assert!(debug.contains("interval: 10s"), "{debug}");
    assert!(debug.contains("timeout: 10s"), "{debug}");
    prober.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_only_after_the_probe_in_flight_is_dropped() {
    /// Records, when the probe is dropped, whether `shutdown` had already returned. The
    /// drop gives a `shutdown` that does not wait 100 ms of real time to return, so that
    /// such a bug fails this test every time rather than by luck of scheduling; a correct
    /// `shutdown` cannot return before the drop ends. (Paused time cannot show this: on a
    /// current-thread runtime an aborted task is always dropped before the waiter runs.)
    struct OnDrop {
        returned: Arc<AtomicBool>,
        dropped_after_return: Arc<Mutex<Option<bool>>>,
    }
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let deadline = std::time::Instant::now() + Duration::from_millis(100);
            while !self.returned.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            *self.dropped_after_return.lock().unwrap() = Some(self.returned.load(Ordering::SeqCst));
        }
    }
    let returned = Arc::new(AtomicBool::new(false));
    let dropped_after_return = Arc::new(Mutex::new(None));
    let called = Arc::new(tokio::sync::Notify::new());
    let answer: Answer = {
        let (returned, dropped_after_return, called) = (
            returned.clone(),
            dropped_after_return.clone(),
            called.clone(),
        );
        Arc::new(move |_, _| {
            let guard = OnDrop {
                returned: returned.clone(),
                dropped_after_return: dropped_after_return.clone(),
            };
            called.notify_one();
            Box::pin(async move {
                let _guard = guard;
                std::future::pending().await
            })
        })
    };
    let recorder = Recorder::new();
    let prober = Prober::builder(registry_with(&["a"])).spawn(make(&recorder, answer));
    called.notified().await;
    prober.shutdown().await;
    returned.store(true, Ordering::SeqCst);
    assert_eq!(*dropped_after_return.lock().unwrap(), Some(false));
}

/// A caller's 403 where a probe's would be Bad asks for a probe: it comes at once (here
/// 10 s into a 30 s interval), and the schedule goes on from there.
#[tokio::test(start_paused = true)]
async fn a_denied_callers_request_brings_the_next_probe_forward() {
    let recorder = Recorder::new();
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("api", AuthStrategy::HeaderInjection);
    let prober = Prober::builder(registry.clone())
        .jitter(0.0)
        .spawn(make(&recorder, answer_status(StatusCode::OK)));
    until(&recorder, Duration::from_secs(10)).await;

    let forbidden = service_fn(|_req: Request<()>| async {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::FORBIDDEN;
        Ok::<_, Infallible>(response)
    });
    let mut traffic = HealthClassifyLayer::new(handle.clone())
        .pass_through_auth()
        .layer(forbidden);
    // The gateway's key goes with every request: a probe's 403 would be Bad.
    for _ in 0..5 {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(tower_health_classify::Credentials::Sent);
        let _ = traffic.ready().await.unwrap().call(request).await;
    }
    until(&recorder, Duration::from_secs(41)).await;
    // Five denied requests ask once: one early probe, then every 30 s from it.
    assert_eq!(recorder.calls("api"), secs(&[0, 10, 40]));
    assert_eq!(handle.status(), HealthStatus::Healthy, "the probes decide");
    assert_eq!(
        handle.health().reason,
        Some(Reason::Ok),
        "the latest verdict is the probe's"
    );

    // Asked by hand a second after a probe: it waits for a tenth of the interval.
    assert!(prober.probe_now("api"));
    assert!(!prober.probe_now("nobody"));
    until(&recorder, Duration::from_secs(45)).await;
    assert_eq!(recorder.calls("api"), secs(&[0, 10, 40, 43]));
    prober.shutdown().await;
}

/// A service that fails while getting ready with the auth error an auth layer gives when
/// the gateway's own token is refused.
#[derive(Clone)]
struct RefusedWhileReady;

impl Service<Request<()>> for RefusedWhileReady {
    type Response = Response<()>;
    type Error = tower_health_classify::BackendError;
    type Future = std::future::Ready<Result<Response<()>, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::WWW_AUTHENTICATE,
            "Bearer error=\"invalid_token\"".parse().unwrap(),
        );
        let tower_health_classify::Outcome::Auth(auth) =
            tower_health_classify::classify_response(StatusCode::UNAUTHORIZED, &headers)
        else {
            unreachable!()
        };
        let sent = tower_health_classify::AuthError::Unauthorized {
            challenges: auth.challenges().to_vec(),
            credentials_sent: true,
            source: None,
        };
        Poll::Ready(Err(tower_health_classify::BackendError::Auth(sent)))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        unreachable!("never ready")
    }
}

/// A readiness error of the probe's service is the probe's failure, judged with what the
/// error knows: the gateway's credentials were sent and refused.
#[tokio::test(start_paused = true)]
async fn a_token_refused_while_getting_ready_is_the_probes_rejected_credentials() {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("api", AuthStrategy::TokenExchange);
    let prober = Prober::builder(registry.clone())
        .jitter(0.0)
        .spawn(|_: &str| Some((RefusedWhileReady, Request::new(()))));
    sleep(Duration::from_secs(65)).await;
    let health = handle.health();
    assert_eq!(health.status, HealthStatus::Unauthenticated, "{health:?}");
    assert_eq!(health.reason, Some(Reason::CredentialsRejected));
    assert_eq!(
        health.evidence,
        Some(tower_health_classify::Evidence::Probes)
    );
    prober.shutdown().await;
}
