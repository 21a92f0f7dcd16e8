//! `HealthGate`: fail fast while the backend is Bad, one trial per backoff interval, and
//! readiness for a balancer. Time-based tests run on paused time.

#![cfg(feature = "registry")]

use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_health_classify::{
    classify_response, AuthStrategy, BackendError, BackendHandle, HealthClassifyLayer,
    HealthGateLayer, HealthRegistry, HealthStatus, LocalKind, Outcome, Policy,
};

#[path = "support/probes.rs"]
mod probes;

use probes::{make_healthy, make_unhealthy, probes};

/// A client that counts the requests it gets, notes when, and answers 200 or refuses the
/// connection as `refuse` says.
#[derive(Clone, Default)]
struct Client {
    calls: Arc<AtomicUsize>,
    at: Arc<Mutex<Vec<Instant>>>,
    refuse: Arc<AtomicBool>,
}

impl Client {
    fn service(
        &self,
    ) -> impl Service<
        Request<()>,
        Response = Response<()>,
        Error = BoxError,
        Future = impl std::future::Future<Output = Result<Response<()>, BoxError>>
                     + Send
                     + Sync
                     + 'static,
    > + Clone
           + Send
           + Sync
           + 'static {
        let this = self.clone();
        service_fn(move |_request: Request<()>| {
            this.calls.fetch_add(1, Ordering::SeqCst);
            this.at.lock().unwrap().push(Instant::now());
            let refuse = this.refuse.load(Ordering::SeqCst);
            async move {
                if refuse {
                    Err(io::Error::from(io::ErrorKind::ConnectionRefused).into())
                } else {
                    Ok(Response::new(()))
                }
            }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The backend in each status, as its probes left it.
fn backend_in(status: HealthStatus) -> (HealthRegistry, BackendHandle) {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("search", AuthStrategy::Unauthenticated);
    let ok = Outcome::Success(StatusCode::OK);
    let throttled = classify_response(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new());
    let challenged = classify_response(StatusCode::UNAUTHORIZED, &HeaderMap::new());
    match status {
        HealthStatus::Unknown => {}
        HealthStatus::Healthy => probes(&handle, &ok, 1),
        HealthStatus::Degraded => probes(&handle, &throttled, 2),
        HealthStatus::Unhealthy => make_unhealthy(&handle),
        // 401 to a probe of a backend configured without auth: "no auth configured".
        HealthStatus::Unauthenticated => probes(&handle, &challenged, 3),
    }
    assert_eq!(handle.status(), status);
    (registry, handle)
}

#[tokio::test]
async fn requests_go_through_unless_the_backend_is_bad() {
    // (status, sent)
    let rows = [
        (HealthStatus::Unknown, true),
        (HealthStatus::Healthy, true),
        (HealthStatus::Degraded, true),
        (HealthStatus::Unhealthy, false),
        (HealthStatus::Unauthenticated, false),
    ];
    for (status, sent) in rows {
        let (_registry, handle) = backend_in(status);
        let client = Client::default();
        let service = ServiceBuilder::new()
            .layer(HealthGateLayer::new(handle.clone()))
            .layer(HealthClassifyLayer::new(handle.clone()))
            .service(client.service());
        let checks = handle.health().checks;
        let result = service.oneshot(Request::new(())).await;
        assert_eq!(client.calls(), usize::from(sent), "{status}");
        if sent {
            assert!(result.is_ok(), "{status}");
            assert_eq!(handle.health().checks, checks + 1, "{status}: reported");
        } else {
            let error = result.unwrap_err();
            assert!(error.is_not_sent(), "{status}: {error:?}");
            assert!(
                matches!(error, BackendError::NotSent { status: s } if s == status),
                "{status}: {error:?}"
            );
            assert_eq!(error.to_string(), format!("not sent: backend {status}"));
            assert_eq!(error.outcome(), Outcome::Local(LocalKind::NotSent));
            assert_eq!(handle.health().checks, checks, "{status}: nothing reported");
            assert_eq!(handle.status(), status);
        }
    }
}

/// Calls every `step` from now until `end`, each from a fresh clone; the times the
/// client was reached.
async fn call_until<S>(service: &S, client: &Client, step: Duration, end: Instant) -> Vec<Duration>
where
    S: Service<Request<()>> + Clone,
{
    let start = Instant::now();
    client.at.lock().unwrap().clear();
    while Instant::now() < end {
        let _ = service.clone().oneshot(Request::new(())).await;
        tokio::time::sleep(step).await;
    }
    let at = client.at.lock().unwrap();
    at.iter().map(|at| *at - start).collect()
}

#[tokio::test(start_paused = true)]
async fn trial_requests_follow_the_backoff() {
    let (_registry, handle) = backend_in(HealthStatus::Unhealthy);
    let client = Client::default();
    client.refuse.store(true, Ordering::SeqCst);
    let service = ServiceBuilder::new()
        .layer(
            HealthGateLayer::new(handle.clone())
                .trial_backoff(Duration::from_secs(1), Duration::from_secs(8)),
        )
        .layer(HealthClassifyLayer::new(handle.clone()))
        .service(client.service());
    let failures = handle.health().failures;

    // A call every 10 ms for a minute: 6,000 calls.
    let step = Duration::from_millis(10);
    let sent = call_until(
        &service,
        &client,
        step,
        Instant::now() + Duration::from_secs(60),
    )
    .await;
    // Nominal waits 1, 2, 4, 8, 8, ... s from the first call, each drawn from 80% to 100%.
    let nominal = [1u64, 2, 4, 8, 8, 8, 8, 8, 8, 8];
    let mut previous = Duration::ZERO;
    for (i, at) in sent.iter().enumerate() {
        let wait = *at - previous;
        let nominal = Duration::from_secs(nominal[i]);
        assert!(
            wait >= nominal.mul_f64(0.8) && wait <= nominal + step,
            "trial {i} came {wait:?} after the previous one (nominal {nominal:?}); all: {sent:?}"
        );
        previous = *at;
    }
    // 60 s hold at least 1 + 2 + 4 + 8 * 5 = 47 s of nominal waits, at most 60 / 0.8.
    assert!(
        (7..=10).contains(&sent.len()),
        "{} trials: {sent:?}",
        sent.len()
    );
    // Each trial was reported like any exchange; the held-back calls were not.
    assert_eq!(handle.health().failures, failures + sent.len() as u64);
    assert_eq!(handle.status(), HealthStatus::Unhealthy);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_never_send_a_burst_of_trials() {
    let (_registry, handle) = backend_in(HealthStatus::Unhealthy);
    let client = Client::default();
    let gate = HealthGateLayer::new(handle.clone())
        .trial_backoff(Duration::from_secs(1), Duration::from_secs(1));
    let service = gate.layer(client.service());
    // Arms the schedule.
    assert!(service.clone().oneshot(Request::new(())).await.is_err());
    for round in 1..=5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let calls: Vec<_> = (0..200)
            .map(|_| tokio::spawn(service.clone().oneshot(Request::new(()))))
            .collect();
        let mut sent = 0;
        for call in calls {
            if call.await.unwrap().is_ok() {
                sent += 1;
            }
        }
        assert_eq!(sent, 1, "round {round}: one trial among 200 callers");
        assert_eq!(client.calls(), round);
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_bad_spell_starts_the_schedule_over() {
    let (_registry, handle) = backend_in(HealthStatus::Unhealthy);
    let client = Client::default();
    let service = HealthGateLayer::new(handle.clone())
        .trial_backoff(Duration::from_secs(1), Duration::from_secs(60))
        .layer(client.service());
    let step = Duration::from_millis(10);
    // Trials at about 1, 3, 7, 15 s: the next wait is about 16 s.
    let sent = call_until(
        &service,
        &client,
        step,
        Instant::now() + Duration::from_secs(20),
    )
    .await;
    assert_eq!(sent.len(), 4, "{sent:?}");

    make_healthy(&handle);
    let before = client.calls();
    let _ = service.clone().oneshot(Request::new(())).await;
    assert_eq!(client.calls(), before + 1, "healthy: sent");

    make_unhealthy(&handle);
    let sent = call_until(
        &service,
        &client,
        step,
        Instant::now() + Duration::from_millis(1500),
    )
    .await;
    assert_eq!(
        sent.len(),
        1,
        "a trial about 1 s into the new spell: {sent:?}"
    );
    assert!(sent[0] >= Duration::from_millis(800) && sent[0] <= Duration::from_millis(1010));
}

#[tokio::test(start_paused = true)]
async fn a_trial_is_reported_and_probes_reopen_the_way() {
    let (registry, handle) = backend_in(HealthStatus::Unhealthy);
    let client = Client::default();
    let service = ServiceBuilder::new()
        .layer(HealthGateLayer::new(handle.clone()))
        .layer(HealthClassifyLayer::new(handle.clone()))
        .service(client.service());
    let mut transitions = registry.subscribe();
    let checks = handle.health().checks;
    assert!(service.clone().oneshot(Request::new(())).await.is_err());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        service.clone().oneshot(Request::new(())).await.is_ok(),
        "the trial"
    );
    assert_eq!(handle.health().checks, checks + 1, "the trial was reported");
    assert!(service.clone().oneshot(Request::new(())).await.is_err());

    // The prober finds the backend up again: every request goes through.
    make_healthy(&handle);
    assert_eq!(transitions.try_recv().unwrap().to, HealthStatus::Healthy);
    for _ in 0..10 {
        assert!(service.clone().oneshot(Request::new(())).await.is_ok());
    }
    assert_eq!(client.calls(), 11);
}

#[tokio::test(start_paused = true)]
async fn not_ready_while_bad_wakes_on_a_change_of_status() {
    let (_registry, handle) = backend_in(HealthStatus::Unhealthy);
    let client = Client::default();
    let mut service = HealthGateLayer::new(handle.clone())
        .trial_backoff(Duration::from_secs(60), Duration::from_secs(60))
        .not_ready_while_bad()
        .layer(client.service());
    let mut ready = tokio_test::task::spawn(());
    assert!(ready.enter(|cx, _| service.poll_ready(cx)).is_pending());
    assert!(!ready.is_woken());

    make_healthy(&handle);
    assert!(ready.is_woken(), "woken by the transition");
    assert!(ready.enter(|cx, _| service.poll_ready(cx)).is_ready());
    assert!(service.call(Request::new(())).await.is_ok());
    assert_eq!(client.calls(), 1);

    // Removal wakes too, and a removed backend holds nothing back.
    make_unhealthy(&handle);
    assert!(ready.enter(|cx, _| service.poll_ready(cx)).is_pending());
    assert!(_registry.remove("search"));
    assert!(ready.is_woken(), "woken by the removal");
    assert!(ready.enter(|cx, _| service.poll_ready(cx)).is_ready());
}

#[tokio::test(start_paused = true)]
async fn not_ready_while_bad_is_ready_once_per_trial() {
    let (_registry, handle) = backend_in(HealthStatus::Unhealthy);
    let client = Client::default();
    let mut service = HealthGateLayer::new(handle.clone())
        .trial_backoff(Duration::from_secs(1), Duration::from_secs(10))
        .not_ready_while_bad()
        .layer(client.service());
    let start = Instant::now();
    let mut trials = Vec::new();
    // Waits for readiness as a balancer does: only the gate's own wake-ups end it.
    while let Ok(ready) = tokio::time::timeout_at(
        start + Duration::from_secs(16),
        poll_fn(|cx| service.poll_ready(cx)),
    )
    .await
    {
        ready.unwrap();
        trials.push(Instant::now() - start);
        let _ = service.call(Request::new(())).await;
        // A call without waiting for readiness is held back.
        let held = service.call(Request::new(())).await.unwrap_err();
        let held = held.downcast_ref::<BackendError>();
        assert!(held.is_some_and(BackendError::is_not_sent), "{held:?}");
    }
    assert_eq!(client.calls(), trials.len(), "{trials:?}");
    // About 1, 3, 7, 15 s (80% to 100% of each nominal wait).
    assert_eq!(trials.len(), 4, "{trials:?}");
    for (at, (low, high)) in trials
        .iter()
        .zip([(0.8, 1.0), (2.4, 3.0), (5.6, 7.0), (12.0, 15.0)])
    {
        assert!(
            *at >= Duration::from_secs_f64(low) && *at <= Duration::from_secs_f64(high),
            "{trials:?}"
        );
    }
}

#[tokio::test]
async fn a_gate_inside_the_classify_layer_counts_nothing() {
    let (_registry, handle) = backend_in(HealthStatus::Unhealthy);
    let client = Client::default();
    let service = ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(handle.clone()))
        .map_err(BoxError::from)
        .layer(HealthGateLayer::new(handle.clone()))
        .map_err(BoxError::from)
        .service(client.service());
    let health = handle.health();
    let error = service.oneshot(Request::new(())).await.unwrap_err();
    assert!(
        matches!(
            error,
            BackendError::Local {
                kind: LocalKind::NotSent,
                ..
            }
        ),
        "{error:?}"
    );
    let after = handle.health();
    assert_eq!(
        (after.checks, after.failures),
        (health.checks, health.failures)
    );
    assert_eq!(client.calls(), 0);
}

#[tokio::test]
async fn a_boxed_inner_error_carries_not_sent() {
    let (_registry, handle) = backend_in(HealthStatus::Unhealthy);
    let client = Client::default();
    let service = ServiceBuilder::new()
        .layer(HealthGateLayer::new(handle))
        .timeout(Duration::from_secs(1))
        .service(client.service());
    let error: BoxError = service.oneshot(Request::new(())).await.unwrap_err();
    let error = error
        .downcast_ref::<BackendError>()
        .expect("a BackendError");
    assert!(error.is_not_sent());
}

#[test]
fn the_service_and_its_future_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    let (_registry, handle) = backend_in(HealthStatus::Healthy);
    let mut service = ServiceBuilder::new()
        .layer(HealthGateLayer::new(handle.clone()).not_ready_while_bad())
        .layer(HealthClassifyLayer::new(handle))
        .service(Client::default().service());
    send_sync(&service);
    let future = service.call(Request::new(()));
    send_sync(&future);
}

#[test]
#[should_panic(expected = "trial_backoff: initial (0ns) must be above zero")]
fn a_zero_trial_wait_is_refused() {
    let (_registry, handle) = backend_in(HealthStatus::Healthy);
    let _ = HealthGateLayer::new(handle).trial_backoff(Duration::ZERO, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_trial_claimed_before_the_backend_came_back_is_not_kept_for_later() {
    let (_registry, handle) = backend_in(HealthStatus::Unhealthy);
    let client = Client::default();
    let mut service = HealthGateLayer::new(handle.clone())
        .trial_backoff(Duration::from_secs(1), Duration::from_secs(1))
        .not_ready_while_bad()
        .layer(client.service());
    let mut task = tokio_test::task::spawn(());
    assert!(task.enter(|cx, _| service.poll_ready(cx)).is_pending());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        task.enter(|cx, _| service.poll_ready(cx)).is_ready(),
        "a trial"
    );

    // Back before the trial was sent, and down again: that trial is not the next call's.
    make_healthy(&handle);
    assert!(task.enter(|cx, _| service.poll_ready(cx)).is_ready());
    make_unhealthy(&handle);
    let held = service.call(Request::new(())).await.unwrap_err();
    assert!(
        held.downcast_ref::<BackendError>()
            .is_some_and(BackendError::is_not_sent),
        "{held:?}"
    );
    assert_eq!(client.calls(), 0);
}
