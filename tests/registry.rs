//! The registry's state machine, fed through the layer, and what it logs.

#![cfg(feature = "registry")]

use std::convert::Infallible;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use tokio::time::advance;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_health_classify::{
    AuthStrategy, BackendHandle, Credentials, ExchangeReport, HealthClassifyLayer, HealthRegistry,
    HealthSink, HealthStatus, LocalKind, Origin, Outcome, Phase, Policy, Probe, TransportKind,
};

#[path = "support/logs.rs"]
mod logs;

use logs::Logs;

fn respond(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            r#"Bearer realm="mcp", scope="read""#.parse().unwrap(),
        );
    }
    response
}

/// Sends one probe with the given answer through a layer reporting to `handle`.
async fn probe(handle: &BackendHandle, status: StatusCode) {
    let backend =
        service_fn(move |_req: Request<()>| async move { Ok::<_, Infallible>(respond(status)) });
    let mut service = HealthClassifyLayer::new(handle.clone())
        .pass_through_auth()
        .layer(backend);
    let mut request = Request::new(());
    request.extensions_mut().insert(Probe);
    let _ = service.ready().await.unwrap().call(request).await;
}

/// Reports `outcome` directly, as a layer would, at the current (paused) time.
fn report(handle: &BackendHandle, outcome: &Outcome, credentials: Credentials) {
    ExchangeReport::new(outcome)
        .credentials(credentials)
        .origin(Origin::Probe)
        .latency(Duration::from_millis(5))
        .report(handle);
}

#[tokio::test(start_paused = true)]
async fn a_day_of_failures_every_30s_logs_a_few_dozen_warnings() {
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("flaky", AuthStrategy::Unauthenticated);
    for _ in 0..2_880 {
        probe(&handle, StatusCode::SERVICE_UNAVAILABLE).await;
        advance(Duration::from_secs(30)).await;
    }
    let warns = logs.count("WARN");
    eprintln!("WARN lines in 24 h of failures every 30 s: {warns}");
    assert!(warns <= 35, "{warns} WARN lines in 24 h");
    // One transition into Unhealthy, then reminders at 1, 2, 4, ... 32 min, then hourly.
    assert!(warns >= 25, "reminders keep coming: {warns}");
    assert_eq!(
        logs.count("INFO"),
        1,
        "Unknown -> Degraded once:\n{}",
        logs.text()
    );
    assert_eq!(handle.status(), HealthStatus::Unhealthy);
    assert_eq!(handle.health().failures, 2_880);
    let text = logs.text();
    assert!(text.contains("backend still unhealthy"), "{text}");
    assert!(
        text.contains("failures=2"),
        "the reminder counts failures: {text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_day_of_challenges_to_an_upstream_inject_backend_logs_no_warning() {
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("github", AuthStrategy::UpstreamInject);
    for _ in 0..2_880 {
        probe(&handle, StatusCode::UNAUTHORIZED).await;
        advance(Duration::from_secs(30)).await;
    }
    assert_eq!(logs.count("WARN"), 0, "{}", logs.text());
    assert_eq!(logs.count("INFO"), 1, "Unknown -> Healthy once");
    let health = handle.health();
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.reason.unwrap().as_str(), "expected_challenge");
    assert_eq!((health.checks, health.failures), (2_880, 0));
    assert_eq!(health.consecutive_successes, 2_880);
}

#[tokio::test(start_paused = true)]
async fn transitions_are_published_once_each() {
    let registry = HealthRegistry::new(Policy::default());
    let mut transitions = registry.subscribe();
    let handle = registry.register("api", AuthStrategy::HeaderInjection);
    let statuses = [
        StatusCode::OK,
        StatusCode::BAD_GATEWAY,
        StatusCode::BAD_GATEWAY,
        StatusCode::BAD_GATEWAY,
        StatusCode::BAD_GATEWAY,
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::OK,
    ];
    for status in statuses {
        probe(&handle, status).await;
        advance(Duration::from_secs(1)).await;
    }
    let mut seen = Vec::new();
    while let Some(t) = transitions.try_recv() {
        seen.push((t.from, t.to, t.reason.as_str(), t.consecutive));
    }
    use HealthStatus::{Degraded, Healthy, Unhealthy, Unknown};
    assert_eq!(
        seen,
        [
            (Unknown, Healthy, "ok", 1),
            (Healthy, Degraded, "server_error", 2),
            (Degraded, Unhealthy, "server_error", 3),
            (Unhealthy, Healthy, "ok", 2),
        ]
    );
    assert_eq!(transitions.missed(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_and_local_outcomes_touch_no_counter() {
    let (logs, _guard) = Logs::capture(tracing::Level::DEBUG);
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("api", AuthStrategy::Unauthenticated);
    report(
        &handle,
        &Outcome::Success(StatusCode::OK),
        Credentials::NotSent,
    );
    let before = handle.health();
    for _ in 0..10 {
        report(&handle, &Outcome::Cancelled, Credentials::NotSent);
        report(
            &handle,
            &Outcome::Local(LocalKind::Overloaded),
            Credentials::NotSent,
        );
        report(
            &handle,
            &Outcome::Local(LocalKind::InvalidRequest),
            Credentials::NotSent,
        );
    }
    assert_eq!(handle.health(), before);
    assert_eq!(
        logs.count("WARN"),
        1,
        "a misconfiguration is said once: {}",
        logs.text()
    );
}

#[tokio::test(start_paused = true)]
async fn a_strategy_change_applies_to_the_next_report_and_keeps_the_state() {
    let mut policy = Policy::default();
    policy.unhealthy_threshold = 1;
    let registry = HealthRegistry::new(policy);
    let handle = registry.register("mcp", AuthStrategy::Unauthenticated);
    probe(&handle, StatusCode::UNAUTHORIZED).await;
    assert_eq!(handle.status(), HealthStatus::Unauthenticated);
    assert_eq!(
        handle.health().reason.unwrap().as_str(),
        "no_auth_configured"
    );

    assert!(registry.set_strategy("mcp", AuthStrategy::UpstreamInject));
    assert_eq!(
        handle.status(),
        HealthStatus::Unauthenticated,
        "no history rewritten"
    );
    assert_eq!(handle.health().checks, 1);
    probe(&handle, StatusCode::UNAUTHORIZED).await;
    let health = handle.health();
    assert_eq!(health.reason.unwrap().as_str(), "expected_challenge");
    assert_eq!(health.consecutive_successes, 1);
    probe(&handle, StatusCode::UNAUTHORIZED).await;
    assert_eq!(handle.status(), HealthStatus::Healthy);
    assert!(!registry.set_strategy("nobody", AuthStrategy::TokenExchange));
}

#[tokio::test(start_paused = true)]
async fn a_removed_backends_late_reports_are_dropped() {
    let registry = HealthRegistry::new(Policy::default());
    let mut transitions = registry.subscribe();
    let handle = registry.register("gone", AuthStrategy::Unauthenticated);
    assert!(registry.remove("gone"));
    assert!(handle.is_removed());
    for _ in 0..5 {
        probe(&handle, StatusCode::INTERNAL_SERVER_ERROR).await;
    }
    assert_eq!(handle.health().checks, 0);
    assert_eq!(registry.status("gone"), None);
    assert!(transitions.try_recv().is_none());
    assert!(!registry.remove("gone"));

    let again = registry.register("gone", AuthStrategy::Unauthenticated);
    probe(&again, StatusCode::OK).await;
    assert_eq!(registry.status("gone"), Some(HealthStatus::Healthy));
    assert_eq!(handle.health().checks, 0, "the old handle stays detached");
}

#[tokio::test(start_paused = true)]
async fn registering_twice_shares_the_backend_and_updates_the_strategy() {
    let registry = HealthRegistry::new(Policy::default());
    let first = registry.register("api", AuthStrategy::Unauthenticated);
    probe(&first, StatusCode::OK).await;
    let second = registry.register("api", AuthStrategy::TokenExchange);
    assert_eq!(second.status(), HealthStatus::Healthy);
    assert_eq!(first.strategy(), AuthStrategy::TokenExchange);
    assert_eq!(registry.names().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn snapshot_summary_and_phase() {
    let registry = HealthRegistry::new(Policy::default());
    assert_eq!(registry.snapshot().phase, Phase::Empty);
    let ok = registry.register("b-ok", AuthStrategy::Unauthenticated);
    let down = registry.register("a-down", AuthStrategy::TokenExchange);
    assert_eq!(registry.snapshot().phase, Phase::Pending);
    probe(&ok, StatusCode::OK).await;
    for _ in 0..3 {
        report(
            &down,
            &Outcome::Transport(TransportKind::ConnectionRefused),
            Credentials::Sent,
        );
    }
    let snapshot = registry.snapshot();
    assert_eq!(snapshot.phase, Phase::Degraded);
    assert_eq!(
        (snapshot.summary.healthy, snapshot.summary.unhealthy),
        (1, 1)
    );
    assert_eq!(snapshot.summary, registry.summary());
    let names: Vec<_> = snapshot.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["a-down", "b-ok"], "sorted by name");
    let down = &snapshot.backends[0];
    assert_eq!(down.status, HealthStatus::Unhealthy);
    assert_eq!(down.consecutive_failures, 3);
    assert_eq!(down.last_outcome, Some("transport"));
    assert_eq!(
        down.last_error.as_deref(),
        Some("transport connection_refused")
    );
    assert!(down.last_checked.is_some());

    registry.remove("b-ok");
    assert_eq!(registry.snapshot().phase, Phase::Failed);
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn snapshot_serializes_to_snake_case_json() {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("github", AuthStrategy::UpstreamInject);
    probe(&handle, StatusCode::UNAUTHORIZED).await;
    let json = serde_json::to_value(registry.snapshot()).unwrap();
    let backend = &json["backends"][0];
    assert_eq!(backend["name"], "github");
    assert_eq!(backend["strategy"], "upstream_inject");
    assert_eq!(backend["status"], "healthy");
    assert_eq!(backend["reason"], "expected_challenge");
    assert_eq!(backend["consecutive_failures"], 0);
    assert_eq!(backend["consecutive_successes"], 1);
    assert_eq!(backend["checks"], 1);
    assert_eq!(backend["failures"], 0);
    assert_eq!(backend["last_outcome"], "unauthorized");
    assert!(
        backend["last_error"].is_null(),
        "a Good verdict is no error"
    );
    assert!(backend["since"].as_str().unwrap().ends_with('Z'));
    assert!(backend["last_checked"].as_str().unwrap().ends_with('Z'));
    assert_eq!(json["summary"]["healthy"], 1);
    assert_eq!(json["phase"], "ready");
}

#[test]
fn concurrent_reports_are_all_counted() {
    // Eight threads, each mostly Good with a Bad report every 97th: the lock-free path
    // and the locked one interleave on the same backend.
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("busy", AuthStrategy::TokenExchange);
    let per_thread = 10_000u64;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let outcome = if i % 97 == 96 {
                        Outcome::ServerError(StatusCode::BAD_GATEWAY)
                    } else {
                        Outcome::Success(StatusCode::OK)
                    };
                    ExchangeReport::new(&outcome)
                        .credentials(Credentials::Sent)
                        .latency(Duration::from_millis(1))
                        .report(&handle);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let health = handle.health();
    assert_eq!(health.checks, 8 * per_thread);
    assert_eq!(health.failures, 8 * (per_thread / 97));
    assert_eq!(
        health.status,
        HealthStatus::Healthy,
        "single failures never flip it"
    );
    assert!(health.consecutive_successes > 0 || health.consecutive_failures > 0);
}

#[tokio::test(start_paused = true)]
async fn a_transition_log_line_names_the_tls_cause() {
    let (logs, _guard) = Logs::capture(tracing::Level::INFO);
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("secure", AuthStrategy::Unauthenticated);
    let tls = Outcome::Transport(TransportKind::Tls);
    for _ in 0..3 {
        tower_health_classify::ExchangeReport::new(&tls)
            .origin(Origin::Probe)
            .tls_failure(Some(tower_health_classify::TlsFailure::CertificateExpired))
            .report(&handle);
    }
    assert_eq!(handle.status(), HealthStatus::Unhealthy);
    let text = logs.text();
    let warn = text.lines().find(|l| l.contains(" WARN ")).expect("{text}");
    assert!(warn.contains("reason=\"tls\""), "{warn}");
    assert!(
        warn.contains("tls_failure=\"certificate_expired\""),
        "{warn}"
    );
    assert_eq!(
        handle.health().last_error.as_deref(),
        Some("tls certificate_expired")
    );
}
