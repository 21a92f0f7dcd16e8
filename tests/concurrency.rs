//! The registry under concurrent reports: exact counts, removal while reports are in
//! flight, status flips that keep the invariants of DESIGN §6.2, and strategy changes
//! racing with reads.
//!
//! Why no loom: the registry's lock-free path is a handful of atomics next to a
//! `std::sync::Mutex`, and loom checks only code written against its own `loom::sync`
//! types, so it would need `cfg(loom)` swaps of every atomic and lock inside `src/`, plus
//! a model small enough to explore exhaustively. These tests instead drive the real code
//! from many threads with a sampler checking invariants while it runs, and assert exact
//! totals at the end, where any lost or doubled update shows.

#![cfg(feature = "registry")]

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_health_classify::{
    AuthStrategy, BackendHandle, CredentialOwner, Credentials, ExchangeReport, HealthClassifyLayer,
    HealthRegistry, HealthSink, HealthStatus, Origin, Outcome, Policy, Transition,
};

#[path = "support/rng.rs"]
mod rng;

use rng::Rng;

/// A report straight to the handle, as the layer makes it for a caller's request.
fn report(handle: &BackendHandle, outcome: &Outcome, credentials: Credentials) {
    report_from(handle, outcome, credentials, Origin::Traffic);
}

fn report_from(
    handle: &BackendHandle,
    outcome: &Outcome,
    credentials: Credentials,
    origin: Origin,
) {
    ExchangeReport::new(outcome)
        .credentials(credentials)
        .origin(origin)
        .latency(Duration::from_millis(1))
        .report(handle);
}

fn unauthorized() -> Outcome {
    // Judged with credentials sent under a gateway-owned strategy: Unauthenticated when
    // a probe gets it.
    let mut headers = http::HeaderMap::new();
    headers.insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
    tower_health_classify::classify_response(StatusCode::UNAUTHORIZED, &headers)
}

// === exact counts through the layer ===

/// What the inner service does on request `i` of a task, and whether it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    BadGateway,
    Throttled,
    Refused,
    Shed,
    Cancelled,
}

impl Answer {
    fn of(i: u64) -> Answer {
        match i % 20 {
            0..=11 => Answer::Ok,
            12 | 13 => Answer::BadGateway,
            14 | 15 => Answer::Throttled,
            16 | 17 => Answer::Refused,
            18 => Answer::Shed,
            _ => Answer::Cancelled,
        }
    }

    /// (counted, Bad)
    fn counts(self) -> (bool, bool) {
        match self {
            Answer::Ok | Answer::Throttled => (true, false),
            Answer::BadGateway | Answer::Refused => (true, true),
            Answer::Shed | Answer::Cancelled => (false, false),
        }
    }
}

async fn answer(request: Request<Answer>) -> Result<Response<()>, BoxError> {
    let status = match *request.body() {
        Answer::Ok => StatusCode::OK,
        Answer::BadGateway => StatusCode::BAD_GATEWAY,
        Answer::Throttled => StatusCode::TOO_MANY_REQUESTS,
        Answer::Refused => return Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
        Answer::Shed => return Err(tower::load_shed::error::Overloaded::new().into()),
        Answer::Cancelled => {
            // Never answers: the caller drops the future, and the layer reports
            // `Cancelled`.
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_of_10_000_reports_end_with_exact_counts() {
    const TASKS: u64 = 8;
    const PER_TASK: u64 = 10_000;
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("busy", AuthStrategy::TokenExchange);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut service = HealthClassifyLayer::new(handle).layer(service_fn(answer));
                for i in 0..PER_TASK {
                    // Each task starts at a different point of the cycle.
                    let what = Answer::of(i + task * 7);
                    let call = service.ready().await.unwrap().call(Request::new(what));
                    if what == Answer::Cancelled {
                        let mut call = std::pin::pin!(call);
                        let polled = futures_poll_once(call.as_mut()).await;
                        assert!(polled.is_none(), "never answers");
                    } else {
                        let _ = call.await;
                    }
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (mut counted, mut bad) = (0, 0);
    for task in 0..TASKS {
        for i in 0..PER_TASK {
            let (c, b) = Answer::of(i + task * 7).counts();
            counted += u64::from(c);
            bad += u64::from(b);
        }
    }
    let health = handle.health();
    assert_eq!(health.checks, counted, "every counted report, once");
    assert_eq!(health.failures, bad, "every Bad report, once");
    assert_eq!(counted, TASKS * PER_TASK * 18 / 20);
}

/// Polls a future once; `Some` if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut future: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

// === removal while reports are in flight ===

#[test]
fn a_backend_removed_while_reports_are_in_flight_stays_removed() {
    const THREADS: u64 = 4;
    let registry = HealthRegistry::new(Policy::default());
    let mut transitions = registry.subscribe();
    let handle = registry.register("doomed", AuthStrategy::TokenExchange);
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (handle, sent, stop) = (handle.clone(), sent.clone(), stop.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                let ok = Outcome::Success(StatusCode::OK);
                let bad = Outcome::ServerError(StatusCode::BAD_GATEWAY);
                while !stop.load(Ordering::Relaxed) {
                    // Mostly Good (the lock-free path), with Bad ones that flip the
                    // status (the locked path, and transitions).
                    let outcome = if rng.next() % 8 == 0 { &bad } else { &ok };
                    report(&handle, outcome, Credentials::Sent);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let wait_for = |n: u64| {
        while sent.load(Ordering::Relaxed) < n {
            thread::yield_now();
        }
    };
    wait_for(20_000);
    assert!(registry.remove("doomed"));
    // Transitions are published under the backend's lock, which `remove` takes: every
    // transition made before the removal is in the channel now. (The oldest may have
    // been dropped for want of a reader: only what comes after matters here.)
    let at_removal = handle.health();
    let mut before = 0;
    while transitions.try_recv().is_some() {
        before += 1;
    }
    // Reports go on after the removal, then stop.
    wait_for(sent.load(Ordering::Relaxed) + 20_000);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }

    assert_eq!(registry.status("doomed"), None);
    assert!(registry.names().is_empty());
    assert!(registry.snapshot().backends.is_empty());
    assert!(handle.is_removed());
    assert_eq!(
        handle.status(),
        HealthStatus::Unknown,
        "removed reads as unknown"
    );
    assert!(
        transitions.try_recv().is_none(),
        "no transition after the removal"
    );
    // A removed backend reads as it was at its removal: reports still in flight then
    // change nothing visible.
    let after = handle.health();
    assert_eq!(after, at_removal, "nothing counted after the removal");
    assert!(before > 0, "the backend had moved before its removal");

    // The name starts afresh; the old handle stays detached.
    let again = registry.register("doomed", AuthStrategy::TokenExchange);
    assert_eq!(again.health().checks, 0);
    report(
        &handle,
        &Outcome::Success(StatusCode::OK),
        Credentials::Sent,
    );
    assert_eq!(again.health().checks, 0);
    assert_eq!(registry.status("doomed"), Some(HealthStatus::Unknown));
}

// === status flips under concurrent reports ===

/// What must hold of every transition whatever the interleaving (DESIGN §6.2 with the
/// default policy: 3 Bad to go Bad, 2 Good to recover, 2 non-Good to degrade).
fn check_transition(t: &Transition, policy: &Policy) {
    assert_ne!(t.from, t.to, "{t:?}");
    assert_ne!(
        t.to,
        HealthStatus::Unknown,
        "nothing goes back to Unknown: {t:?}"
    );
    let min = match t.to {
        HealthStatus::Unhealthy | HealthStatus::Unauthenticated => policy.unhealthy_threshold,
        HealthStatus::Healthy if t.from.is_bad() => policy.healthy_threshold,
        HealthStatus::Healthy => 1,
        HealthStatus::Degraded => policy.degraded_threshold,
        HealthStatus::Unknown => unreachable!(),
    };
    assert!(t.consecutive >= u64::from(min), "{t:?}");
    if t.from.is_bad() {
        assert!(
            t.to.is_bad() || t.to == HealthStatus::Healthy,
            "Soft never recovers a Bad backend: {t:?}"
        );
    }
}

#[test]
fn status_flips_under_concurrent_reports_keep_the_invariants() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 20_000;
    let policy = Policy::default();
    let registry = HealthRegistry::new(policy.clone());
    let mut transitions = registry.subscribe();
    let handle = registry.register("flappy", AuthStrategy::TokenExchange);
    let done = Arc::new(AtomicBool::new(false));

    // Reads transitions while the reports run, so that the channel (1,024 deep) is not
    // outrun; checks each one as it comes.
    let reader = {
        let done = done.clone();
        thread::spawn(move || {
            let mut seen: Vec<Transition> = Vec::new();
            let mut gaps = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                loop {
                    let missed = transitions.missed();
                    let Some(t) = transitions.try_recv() else {
                        break;
                    };
                    check_transition(&t, &policy);
                    // The published history is one unbroken path: each transition starts
                    // where the one before it ended, unless the reader fell behind and
                    // the channel dropped some in between (then `missed` grew).
                    match seen.last() {
                        _ if transitions.missed() != missed => gaps += 1,
                        None => assert_eq!(t.from, HealthStatus::Unknown, "{t:?}"),
                        Some(previous) => assert_eq!(previous.to, t.from, "{previous:?} {t:?}"),
                    }
                    seen.push(t);
                }
                if finished {
                    return (seen, transitions.missed(), gaps);
                }
                thread::yield_now();
            }
        })
    };

    // Checks snapshots while the reports run.
    let sampler = {
        let (handle, done) = (handle.clone(), done.clone());
        thread::spawn(move || {
            let (mut last_checks, mut last_failures, mut left_unknown, mut samples) =
                (0, 0, false, 0u64);
            while !done.load(Ordering::Acquire) {
                let health = handle.health();
                assert!(
                    health.consecutive_failures == 0 || health.consecutive_successes == 0,
                    "both runs at once: {health:?}"
                );
                assert!(health.failures <= health.checks, "{health:?}");
                assert!(health.checks >= last_checks, "checks went back: {health:?}");
                assert!(
                    health.failures >= last_failures,
                    "failures went back: {health:?}"
                );
                if health.status != HealthStatus::Unknown {
                    left_unknown = true;
                } else {
                    assert!(!left_unknown, "back to Unknown: {health:?}");
                }
                (last_checks, last_failures) = (health.checks, health.failures);
                samples += 1;
            }
            samples
        })
    };

    let start = Arc::new(Barrier::new(THREADS as usize));
    let reporters: Vec<_> = (0..THREADS)
        .map(|t| {
            let (handle, start) = (handle.clone(), start.clone());
            thread::spawn(move || {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (t + 1));
                let good = Outcome::Success(StatusCode::OK);
                let soft = Outcome::Throttled {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    retry_after: None,
                };
                let server_error = Outcome::ServerError(StatusCode::BAD_GATEWAY);
                let rejected = unauthorized();
                let (mut sent, mut bad_sent) = (0u64, 0u64);
                start.wait();
                while sent < PER_THREAD {
                    // Runs of one kind make flips likely in every direction.
                    let pick = rng.next() % 16;
                    let run = (1 + rng.next() % 4).min(PER_THREAD - sent);
                    for _ in 0..run {
                        let outcome = match pick {
                            0..=6 => &good,
                            7..=9 => &soft,
                            10..=12 => &server_error,
                            _ => &rejected,
                        };
                        if pick >= 10 {
                            bad_sent += 1;
                        }
                        // Probes: their counts in a row flip the status in every
                        // direction (traffic's window would hold it steady).
                        report_from(&handle, outcome, Credentials::Sent, Origin::Probe);
                        sent += 1;
                    }
                }
                bad_sent
            })
        })
        .collect();
    let bad_sent: u64 = reporters.into_iter().map(|r| r.join().unwrap()).sum();
    done.store(true, Ordering::Release);
    let samples = sampler.join().unwrap();
    let (seen, missed, gaps) = reader.join().unwrap();

    let health = handle.health();
    assert_eq!(
        health.checks,
        THREADS * PER_THREAD,
        "every report counted once"
    );
    assert_eq!(health.failures, bad_sent, "every Bad report counted once");
    assert!(health.consecutive_failures == 0 || health.consecutive_successes == 0);
    assert!(samples > 0);
    assert!(
        seen.len() > 10,
        "the status flipped: {} transitions",
        seen.len()
    );
    let statuses: std::collections::HashSet<_> = seen.iter().map(|t| t.to).collect();
    assert!(
        statuses.len() >= 3,
        "flips in several directions: {statuses:?}"
    );
    eprintln!(
        "{} transitions seen, {missed} missed in {gaps} gaps, {samples} samples",
        seen.len()
    );
    assert_eq!(missed == 0, gaps == 0);
    // The newest transitions are never the ones dropped: the last one seen is the last
    // one made, and it ends in the final status.
    assert_eq!(seen.last().unwrap().to, health.status);
}

// === strategy changes racing with reads ===

/// A strategy read while another thread changes it is the old one or the new one, never
/// a third (a report judged with a strategy nobody set would count a 401 as
/// `no_auth_configured`).
#[test]
fn a_strategy_read_during_a_change_is_the_old_or_the_new_one() {
    let registry = HealthRegistry::new(Policy::default());
    let custom = AuthStrategy::custom("mtls", CredentialOwner::Gateway);
    let handle = registry.register("api", custom.clone());
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (custom, done) = (custom.clone(), done.clone());
        thread::spawn(move || {
            for i in 0..50_000 {
                let next = if i % 2 == 0 {
                    AuthStrategy::TokenExchange
                } else {
                    custom.clone()
                };
                assert!(registry.set_strategy("api", next));
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut reads = 0u64;
    let mut judged_by_nobody = 0u64;
    while !done.load(Ordering::Acquire) {
        let strategy = handle.strategy();
        if strategy != custom && strategy != AuthStrategy::TokenExchange {
            judged_by_nobody += 1;
        }
        reads += 1;
    }
    writer.join().unwrap();
    assert!(reads > 0);
    assert_eq!(judged_by_nobody, 0, "of {reads} reads");
}

/// The same race seen through the layer: reports judged while the strategy flips never
/// carry the reason of a strategy nobody set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_during_strategy_changes_are_judged_by_a_set_strategy() {
    let registry = HealthRegistry::new(Policy::default());
    let custom = AuthStrategy::custom("mtls", CredentialOwner::Gateway);
    let handle = registry.register("api", custom.clone());
    let reasons = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let sink = (handle, {
        let reasons = reasons.clone();
        tower_health_classify::sink_fn(AuthStrategy::Unauthenticated, move |report| {
            if let Some(verdict) = report.verdict {
                reasons.lock().unwrap().insert(verdict.reason.as_str());
            }
        })
    });
    let done = Arc::new(AtomicBool::new(false));
    // The writer starts once the first report is in: on a loaded machine it could
    // otherwise finish before the first request, and no report would race it.
    let started = Arc::new(AtomicBool::new(false));
    let writer = {
        let (registry, custom, done) = (registry.clone(), custom.clone(), done.clone());
        let started = started.clone();
        thread::spawn(move || {
            while !started.load(Ordering::Acquire) {
                thread::yield_now();
            }
            for i in 0..20_000 {
                let next = if i % 2 == 0 {
                    AuthStrategy::TokenExchange
                } else {
                    custom.clone()
                };
                let _ = registry.set_strategy("api", next);
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut service = HealthClassifyLayer::new(sink).layer(service_fn(|_: Request<()>| async {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        Ok::<_, Infallible>(response)
    }));
    while !done.load(Ordering::Acquire) {
        // A probe: traffic's 401s are never held against the backend, whatever the
        // strategy, so only a probe's verdict tells the strategies apart.
        let mut request = Request::new(());
        request.extensions_mut().insert(Credentials::Sent);
        request
            .extensions_mut()
            .insert(tower_health_classify::Probe);
        let _ = service.ready().await.unwrap().call(request).await;
        started.store(true, Ordering::Release);
    }
    writer.join().unwrap();
    let reasons = reasons.lock().unwrap();
    assert!(reasons.contains("credentials_rejected"), "{reasons:?}");
    assert!(!reasons.contains("no_auth_configured"), "{reasons:?}");
}
