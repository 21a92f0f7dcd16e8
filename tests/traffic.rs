//! Live traffic through the layer (DESIGN §9.4), on paused time: quiet logs, a steady
//! status, and a status no caller can push around. Each test prints its figures.

#![cfg(feature = "registry")]

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use tokio::time::{advance, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_health_classify::{
    AuthStrategy, BackendHandle, Credentials, Evidence, HealthClassifyLayer, HealthRegistry,
    HealthStatus, Policy, Probe, Transitions,
};
use tracing::Level;

#[path = "support/logs.rs"]
mod logs;

use logs::Logs;

/// A backend that answers each request with the status its body names, with a Bearer
/// challenge on 401 and 403.
fn backend(request: Request<u16>) -> Ready<Result<Response<()>, Infallible>> {
    let status = StatusCode::from_u16(request.into_body()).unwrap();
    let mut response = Response::new(());
    *response.status_mut() = status;
    if matches!(status.as_u16(), 401 | 403) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            r#"Bearer error="insufficient_scope", scope="admin""#
                .parse()
                .unwrap(),
        );
    }
    ready(Ok(response))
}

type Backend = tower_health_classify::HealthClassify<
    tower::util::ServiceFn<fn(Request<u16>) -> Ready<Result<Response<()>, Infallible>>>,
    BackendHandle,
    tower_health_classify::DefaultClassifier,
>;

/// The layer in proxy mode around [`backend`], reporting to `handle`.
fn layered(handle: &BackendHandle) -> Backend {
    HealthClassifyLayer::new(handle.clone())
        .pass_through_auth()
        .layer(service_fn(backend as fn(_) -> _))
}

/// One exchange answered with `status`; the gateway's own credentials are sent with it
/// (as `header_injection` does for every request).
async fn send(service: &mut Backend, status: u16, probe: bool) {
    let mut request = Request::new(status);
    request.extensions_mut().insert(Credentials::Sent);
    if probe {
        request.extensions_mut().insert(Probe);
    }
    let _ = service.ready().await.unwrap().call(request).await;
}

#[path = "support/rng.rs"]
mod rng;

use rng::Rng;

/// Every transition made so far, the ones the channel dropped for want of a reader
/// counted too.
fn drain(transitions: &mut Transitions) -> (Vec<tower_health_classify::Transition>, u64) {
    let mut seen = Vec::new();
    while let Some(t) = transitions.try_recv() {
        seen.push(t);
    }
    (seen, transitions.missed())
}

/// Adds `status` to the statuses seen, once each, in the order first seen.
fn note(statuses: &mut Vec<HealthStatus>, status: HealthStatus) {
    if !statuses.contains(&status) {
        statuses.push(status);
    }
}

/// INFO, WARN and ERROR lines.
fn loud(logs: &Logs) -> usize {
    logs.count("INFO") + logs.count("WARN") + logs.count("ERROR")
}

#[tokio::test(start_paused = true)]
async fn ten_percent_random_server_errors_at_100_rps_for_an_hour_stay_steady_and_quiet() {
    let (logs, _guard) = Logs::capture(Level::INFO);
    let registry = HealthRegistry::new(Policy::default());
    let mut transitions = registry.subscribe();
    let handle = registry.register("api", AuthStrategy::HeaderInjection);
    let mut service = layered(&handle);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut statuses = Vec::new();
    let (mut sent, mut failed) = (0u64, 0u64);
    for i in 0..360_000u64 {
        let fails = rng.next() % 10 == 0;
        failed += u64::from(fails);
        send(&mut service, if fails { 503 } else { 200 }, false).await;
        sent += 1;
        if i >= 100 {
            note(&mut statuses, handle.status());
        }
        advance(Duration::from_millis(10)).await;
    }
    let (seen, missed) = drain(&mut transitions);
    let changes = seen.len() as u64 + missed;
    let lines = loud(&logs);
    let health = handle.health();
    eprintln!(
        "10% random 503 at 100 rps for 1 h ({failed} of {sent} failed): {changes} transitions, \
         {lines} INFO+ log lines, statuses after the first second {statuses:?}, window {} \
         requests / {} failures",
        health.window_requests, health.window_failures
    );
    assert!(changes <= 12, "{changes} transitions");
    assert!(lines <= 12, "{lines} lines:\n{}", logs.text());
    assert_eq!(statuses, [HealthStatus::Healthy], "steady");
    assert_eq!(health.checks, sent);
    assert_eq!(health.failures, failed);
    // The window holds 30 s of traffic: about 3,000 requests, a tenth of them failed.
    assert!(
        (2_500..=3_500).contains(&health.window_requests),
        "{health:?}"
    );
    assert!((200..=400).contains(&health.window_failures), "{health:?}");
}

#[tokio::test(start_paused = true)]
async fn every_request_failing_is_unhealthy_within_a_second_with_one_warning_and_recovers() {
    let (logs, _guard) = Logs::capture(Level::INFO);
    let registry = HealthRegistry::new(Policy::default());
    let mut transitions = registry.subscribe();
    let handle = registry.register("api", AuthStrategy::Unauthenticated);
    let mut service = layered(&handle);
    // A minute of good traffic first: the window is full of successes.
    for _ in 0..6_000 {
        send(&mut service, 200, false).await;
        advance(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.status(), HealthStatus::Healthy);
    logs.clear();

    let outage = Instant::now();
    let mut unhealthy_after = None;
    for _ in 0..3_000 {
        send(&mut service, 502, false).await;
        if unhealthy_after.is_none() && handle.status() == HealthStatus::Unhealthy {
            unhealthy_after = Some(outage.elapsed());
        }
        advance(Duration::from_millis(10)).await;
    }
    let warnings = logs.count("WARN");
    let during = loud(&logs);

    let recovery = Instant::now();
    let mut healthy_after = None;
    for _ in 0..12_000 {
        send(&mut service, 200, false).await;
        if handle.status() == HealthStatus::Healthy {
            healthy_after = Some(recovery.elapsed());
            break;
        }
        advance(Duration::from_millis(10)).await;
    }
    let (seen, _) = drain(&mut transitions);
    let path: Vec<_> = seen.iter().map(|t| (t.from, t.to, t.evidence)).collect();
    eprintln!(
        "every request failing at 100 rps: Unhealthy after {unhealthy_after:?}, {warnings} \
         WARN ({during} INFO+) lines in 30 s of failures; Healthy {healthy_after:?} after \
         the failures stopped; transitions {path:?}"
    );
    let unhealthy_after = unhealthy_after.expect("went Unhealthy");
    assert!(
        unhealthy_after <= Duration::from_secs(1),
        "{unhealthy_after:?}"
    );
    assert_eq!(warnings, 1, "{}", logs.text());
    assert_eq!(during, 1, "{}", logs.text());
    let into_bad = seen
        .iter()
        .find(|t| t.to == HealthStatus::Unhealthy)
        .unwrap();
    assert_eq!(into_bad.evidence, Evidence::Traffic);
    assert_eq!(
        into_bad.from,
        HealthStatus::Healthy,
        "straight there, no Degraded first"
    );
    assert_eq!(into_bad.consecutive, 20, "20 failures in a row");
    let healthy_after = healthy_after.expect("recovered without a prober");
    assert!(
        healthy_after <= Duration::from_secs(60),
        "{healthy_after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn callers_asking_for_a_forbidden_path_never_move_a_backend_whose_probes_succeed() {
    // The seed case of DESIGN §9: `header_injection`, the gateway's key sent with every
    // request, ten callers' requests per probe interval to a path that answers 403.
    for strategy in [AuthStrategy::HeaderInjection, AuthStrategy::Unauthenticated] {
        let registry = HealthRegistry::new(Policy::default());
        let handle = registry.register("api", strategy.clone());
        let mut service = layered(&handle);
        let mut statuses = Vec::new();
        for _ in 0..120 {
            send(&mut service, 200, true).await;
            note(&mut statuses, handle.status());
            for _ in 0..10 {
                send(&mut service, 403, false).await;
                send(&mut service, 401, false).await;
                note(&mut statuses, handle.status());
                advance(Duration::from_secs(1)).await;
            }
            advance(Duration::from_secs(20)).await;
        }
        let health = handle.health();
        eprintln!(
            "{strategy}: 20 denied requests per 30 s probe interval for 1 h: statuses {statuses:?}, \
             {} failures counted, reason of the latest: {:?}",
            health.failures, health.reason
        );
        assert_eq!(statuses, [HealthStatus::Healthy], "{strategy}");
        assert_eq!(health.failures, 0, "{strategy}");
        assert_eq!(health.window_failures, 0, "{strategy}");
        assert_eq!(
            health.reason.unwrap().as_str(),
            "request_denied",
            "{strategy}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_gateway_key_the_backend_stops_accepting_is_found_by_the_probes() {
    let registry = HealthRegistry::new(Policy::default());
    let mut transitions = registry.subscribe();
    let handle = registry.register("api", AuthStrategy::HeaderInjection);
    let mut service = layered(&handle);
    // The key works, then the backend stops accepting it: every request gets 401, the
    // callers' and the probes' alike.
    let mut answer = 200;
    for round in 0..20 {
        if round == 5 {
            answer = 401;
        }
        send(&mut service, answer, true).await;
        for _ in 0..100 {
            send(&mut service, answer, false).await;
        }
        advance(Duration::from_secs(30)).await;
    }
    let (seen, _) = drain(&mut transitions);
    let last = seen.last().unwrap();
    eprintln!("key revoked: {last}");
    assert_eq!(handle.status(), HealthStatus::Unauthenticated);
    assert_eq!(last.to, HealthStatus::Unauthenticated);
    assert_eq!(last.evidence, Evidence::Probes);
    assert_eq!(last.reason.as_str(), "credentials_rejected");
    assert_eq!(last.consecutive, 3, "the third probe with the key rejected");
}

#[tokio::test(start_paused = true)]
async fn reminders_that_never_come_are_fine_and_zero_reminds_on_every_failure() {
    let mut never = Policy::default();
    never.reminder_initial = Duration::MAX;
    never.reminder_max = Duration::MAX;
    let mut always = Policy::default();
    always.reminder_initial = Duration::ZERO;
    always.reminder_max = Duration::ZERO;
    for (name, policy, reminders) in [("never", never, 0), ("every failure", always, 7)] {
        let (logs, _guard) = Logs::capture(Level::INFO);
        let registry = HealthRegistry::new(policy);
        let mut transitions = registry.subscribe();
        let handle = registry.register("api", AuthStrategy::Unauthenticated);
        let mut service = layered(&handle);
        // Ten failed probes: Degraded at the second, Unhealthy at the third, then seven
        // more failures while Unhealthy.
        for _ in 0..10 {
            send(&mut service, 503, true).await;
            advance(Duration::from_secs(30)).await;
        }
        let (seen, _) = drain(&mut transitions);
        let still = logs.count_containing("backend still unhealthy");
        eprintln!(
            "reminders {name}: {} transitions, {still} reminders",
            seen.len()
        );
        assert_eq!(seen.len(), 2, "{name}: transitions are still published");
        assert_eq!(logs.count_containing("backend health changed"), 2, "{name}");
        assert_eq!(still, reminders, "{name}:\n{}", logs.text());
        assert_eq!(handle.status(), HealthStatus::Unhealthy);
    }
}

#[tokio::test(start_paused = true)]
async fn a_flapping_backend_logs_a_summary_per_interval_and_subscribers_see_every_change() {
    let (logs, _guard) = Logs::capture(Level::INFO);
    let registry = HealthRegistry::new(Policy::default());
    let mut transitions = registry.subscribe();
    let handle = registry.register("api", AuthStrategy::Unauthenticated);
    let mut service = layered(&handle);
    let mut changes = 0;
    // An hour of one minute down, one minute up, at 10 requests a second.
    for minute in 0..60 {
        let status = if minute % 2 == 0 { 503 } else { 200 };
        for _ in 0..600 {
            send(&mut service, status, false).await;
            advance(Duration::from_millis(100)).await;
        }
        changes += drain(&mut transitions).0.len();
    }
    let lines = loud(&logs);
    let summaries = logs.count_containing("times in the last 10 min, now");
    eprintln!(
        "flapping for 1 h: {changes} transitions to subscribers, {lines} INFO+ log lines, \
         {summaries} of them summaries"
    );
    assert!(changes >= 40, "it flapped: {changes}");
    assert!(summaries >= 5, "{}", logs.text());
    assert!(lines <= 12, "{lines} lines:\n{}", logs.text());
}

#[tokio::test(start_paused = true)]
async fn switching_between_the_two_bad_statuses_does_not_restart_the_reminders() {
    let (logs, _guard) = Logs::capture(Level::INFO);
    let mut policy = Policy::default();
    policy.unhealthy_threshold = 1;
    let registry = HealthRegistry::new(policy);
    let handle = registry.register("api", AuthStrategy::HeaderInjection);
    let mut service = layered(&handle);
    // Two hours of probes every 30 s: ten minutes of 503, ten of 401 with the key, ...
    let mut statuses = Vec::new();
    for probe in 0..240 {
        let answer = if probe / 20 % 2 == 0 { 503 } else { 401 };
        send(&mut service, answer, true).await;
        note(&mut statuses, handle.status());
        advance(Duration::from_secs(30)).await;
    }
    let reminders = logs.count_containing("backend still");
    eprintln!(
        "2 h alternating Unhealthy/Unauthenticated: {reminders} reminders, statuses {statuses:?}"
    );
    assert_eq!(
        statuses,
        [HealthStatus::Unhealthy, HealthStatus::Unauthenticated]
    );
    // 1, 3, 7, 15, 31 and 63 minutes after going Bad; restarted at every switch it would
    // be three every ten minutes.
    assert_eq!(reminders, 6, "{}", logs.text());
    // The failures counted since going Bad go on across the switches too.
    let counts: Vec<u64> = logs
        .text()
        .lines()
        .filter(|l| l.contains("backend still"))
        .filter_map(|l| l.split("failures=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
    assert!(counts.last().is_some_and(|&n| n >= 120), "{counts:?}");
}
