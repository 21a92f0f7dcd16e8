//! `HealthDiscover`, `Endpoint` and `ConnectFailover`: which endpoints a balancer gets
//! as their health changes, fail-open, ejection after connect failures, and a refused
//! request sent once more to another endpoint. Time-based tests run on paused time.

#![cfg(feature = "balance")]

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_core::Stream;
use http::{Method, Request, Response, StatusCode};
use tokio_test::task;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
use tower::retry::Retry;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, BoxError, Service, ServiceExt};
use tower_health_classify::{
    AuthStrategy, BackendHandle, ConnectFailover, Endpoint, HealthDiscover, HealthRegistry,
    HealthStatus, Outcome, Policy, TransportKind,
};

#[path = "support/probes.rs"]
mod probes;

use probes::{make_healthy, make_unhealthy, probes};
use tracing::Level;

#[path = "support/logs.rs"]
mod logs;

use logs::Logs;

type Client = BoxCloneSyncService<Request<String>, Response<()>, BoxError>;

/// An endpoint's client: answers 200, or fails with `error` (`None`: answers).
fn client(calls: Arc<AtomicUsize>, error: Option<io::ErrorKind>) -> Client {
    BoxCloneSyncService::new(service_fn(move |_req: Request<String>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match error {
                Some(kind) => Err(BoxError::from(io::Error::from(kind))),
                None => Ok(Response::new(())),
            }
        }
    }))
}

struct Fixture {
    registry: HealthRegistry,
    handles: Vec<BackendHandle>,
    calls: Vec<Arc<AtomicUsize>>,
}

/// `n` endpoints of backend `search`, each answering as `errors` says.
fn fixture(errors: &[Option<io::ErrorKind>]) -> (Fixture, HealthDiscover<usize, Client>) {
    let registry = HealthRegistry::new(Policy::default());
    let mut discover = HealthDiscover::new("search");
    let mut handles = Vec::new();
    let mut calls = Vec::new();
    for (i, error) in errors.iter().enumerate() {
        let handle = registry.register(format!("search@{i}"), AuthStrategy::Unauthenticated);
        let count = Arc::new(AtomicUsize::new(0));
        discover = discover.endpoint(i, handle.clone(), client(count.clone(), *error));
        handles.push(handle);
        calls.push(count);
    }
    (
        Fixture {
            registry,
            handles,
            calls,
        },
        discover,
    )
}

/// What a change says, without the service.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Insert(usize),
    Remove(usize),
}

/// Every change the discover has now, and whether it then waits.
fn changes(
    polled: &mut task::Spawn<()>,
    discover: &mut HealthDiscover<usize, Client>,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    loop {
        match polled.enter(|cx, _| Pin::new(&mut *discover).poll_next(cx)) {
            Poll::Ready(Some(Ok(Change::Insert(key, _)))) => seen.push(Seen::Insert(key)),
            Poll::Ready(Some(Ok(Change::Remove(key)))) => seen.push(Seen::Remove(key)),
            Poll::Ready(None) => panic!("the discover never ends"),
            Poll::Pending => return seen,
        }
    }
}

#[tokio::test]
async fn endpoints_leave_while_bad_and_come_back_when_healthy() {
    let (fixture, mut discover) = fixture(&[None, None, None]);
    let mut polled = task::spawn(());
    assert_eq!(
        changes(&mut polled, &mut discover),
        [Seen::Insert(0), Seen::Insert(1), Seen::Insert(2)],
        "not Bad yet: every endpoint is in"
    );

    make_unhealthy(&fixture.handles[1]);
    assert!(polled.is_woken(), "a transition wakes the balancer");
    assert_eq!(changes(&mut polled, &mut discover), [Seen::Remove(1)]);

    // Unauthenticated is Bad too.
    probes(
        &fixture.handles[1],
        &tower_health_classify::classify_response(StatusCode::UNAUTHORIZED, &Default::default()),
        3,
    );
    assert_eq!(fixture.handles[1].status(), HealthStatus::Unauthenticated);
    assert_eq!(changes(&mut polled, &mut discover), []);

    make_healthy(&fixture.handles[1]);
    assert!(polled.is_woken());
    assert_eq!(changes(&mut polled, &mut discover), [Seen::Insert(1)]);
    assert!(!discover.is_failing_open());
}

#[tokio::test]
async fn more_than_half_out_fails_open_and_says_so_once() {
    let (logs, _guard) = Logs::capture(Level::INFO);
    let (fixture, mut discover) = fixture(&[None, None, None, None]);
    let mut polled = task::spawn(());
    assert_eq!(changes(&mut polled, &mut discover).len(), 4);

    make_unhealthy(&fixture.handles[0]);
    make_unhealthy(&fixture.handles[1]);
    assert_eq!(
        changes(&mut polled, &mut discover),
        [Seen::Remove(0), Seen::Remove(1)],
        "two of four is not more than half"
    );
    make_unhealthy(&fixture.handles[2]);
    assert_eq!(
        changes(&mut polled, &mut discover),
        [Seen::Insert(0), Seen::Insert(1)],
        "three of four: every endpoint back in"
    );
    assert!(discover.is_failing_open());
    make_unhealthy(&fixture.handles[3]);
    // Still Bad: more failures, reminders, another look.
    probes(
        &fixture.handles[3],
        &Outcome::Transport(TransportKind::ConnectionRefused),
        10,
    );
    assert_eq!(changes(&mut polled, &mut discover), []);
    assert_eq!(
        logs.count_containing("backend failing open: 4 of 4 endpoints")
            + logs.count_containing("backend failing open: 3 of 4 endpoints"),
        1,
        "{}",
        logs.text()
    );

    make_healthy(&fixture.handles[0]);
    make_healthy(&fixture.handles[1]);
    assert_eq!(
        changes(&mut polled, &mut discover),
        [Seen::Remove(2), Seen::Remove(3)]
    );
    assert!(!discover.is_failing_open());
    assert_eq!(logs.count_containing("backend failing open"), 1);
    assert_eq!(logs.count_containing("backend no longer failing open"), 1);
    drop(fixture.registry);
}

#[tokio::test]
async fn a_single_endpoint_that_is_bad_stays_in() {
    let (fixture, mut discover) = fixture(&[None]);
    let mut polled = task::spawn(());
    assert_eq!(changes(&mut polled, &mut discover), [Seen::Insert(0)]);
    make_unhealthy(&fixture.handles[0]);
    assert_eq!(changes(&mut polled, &mut discover), []);
    assert!(discover.is_failing_open());
}

#[tokio::test]
async fn fail_open_above_one_never_fails_open() {
    let (fixture, discover) = fixture(&[None, None]);
    let mut discover = discover.fail_open_above(1.0);
    let mut polled = task::spawn(());
    assert_eq!(changes(&mut polled, &mut discover).len(), 2);
    make_unhealthy(&fixture.handles[0]);
    make_unhealthy(&fixture.handles[1]);
    assert_eq!(
        changes(&mut polled, &mut discover),
        [Seen::Remove(0), Seen::Remove(1)]
    );
    assert!(!discover.is_failing_open());
}

/// Sends one request through the endpoint the discover handed out.
async fn send_through(endpoint: &mut Endpoint<Client>) -> Result<Response<()>, BoxError> {
    endpoint
        .ready()
        .await?
        .call(Request::new(String::new()))
        .await
}

#[tokio::test(start_paused = true)]
async fn a_connect_failure_ejects_the_endpoint_for_a_doubling_while() {
    let registry = HealthRegistry::default();
    let handle = registry.register("search@0", AuthStrategy::Unauthenticated);
    let other = registry.register("search@1", AuthStrategy::Unauthenticated);
    let calls = Arc::new(AtomicUsize::new(0));
    let mut discover = HealthDiscover::new("search")
        .ejection(Duration::from_secs(1), Duration::from_secs(3))
        .endpoint(
            0,
            handle.clone(),
            client(calls.clone(), Some(io::ErrorKind::ConnectionRefused)),
        )
        .endpoint(1, other, client(calls.clone(), None));
    let mut polled = task::spawn(());
    let mut refused = None;
    loop {
        match polled.enter(|cx, _| Pin::new(&mut discover).poll_next(cx)) {
            Poll::Ready(Some(Ok(Change::Insert(0, endpoint)))) => refused = Some(endpoint),
            Poll::Ready(Some(Ok(_))) => {}
            _ => break,
        }
    }
    let mut refused = refused.expect("endpoint 0 inserted");

    // Ejected for 1 s, 2 s, then 3 s (the cap): back in after each.
    for wait in [1, 2, 3, 3] {
        assert!(send_through(&mut refused).await.is_err());
        assert!(polled.is_woken(), "the failure wakes the balancer");
        assert_eq!(changes(&mut polled, &mut discover), [Seen::Remove(0)]);
        tokio::time::sleep(Duration::from_millis(wait * 1000 - 10)).await;
        assert_eq!(changes(&mut polled, &mut discover), [], "still out");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(polled.is_woken(), "the ejection's end wakes the balancer");
        assert_eq!(
            changes(&mut polled, &mut discover),
            [Seen::Insert(0)],
            "{wait} s"
        );
    }
    // One registry verdict of Healthy out of Bad ends an ejection at once.
    assert!(send_through(&mut refused).await.is_err());
    assert_eq!(changes(&mut polled, &mut discover), [Seen::Remove(0)]);
    make_unhealthy(&handle);
    assert_eq!(changes(&mut polled, &mut discover), []);
    make_healthy(&handle);
    assert_eq!(changes(&mut polled, &mut discover), [Seen::Insert(0)]);
}

#[tokio::test]
async fn errors_other_than_connect_failures_eject_nothing() {
    let (fixture, mut discover) = fixture(&[Some(io::ErrorKind::ConnectionReset), None]);
    let mut polled = task::spawn(());
    let mut endpoint = None;
    loop {
        match polled.enter(|cx, _| Pin::new(&mut discover).poll_next(cx)) {
            Poll::Ready(Some(Ok(Change::Insert(0, e)))) => endpoint = Some(e),
            Poll::Ready(Some(Ok(_))) => {}
            _ => break,
        }
    }
    let error = send_through(&mut endpoint.unwrap()).await.unwrap_err();
    assert_eq!(
        tower_health_classify::classify_error(&*error),
        Outcome::Transport(TransportKind::Reset)
    );
    assert_eq!(changes(&mut polled, &mut discover), []);
    drop(fixture);
}

type Balanced = Retry<
    ConnectFailover,
    Buffer<Request<String>, <Balance<PendingRequestsDiscover<HealthDiscover<usize, Client>>, Request<String>> as Service<Request<String>>>::Future>,
>;

/// `Retry(ConnectFailover) -> Buffer -> Balance (p2c) -> endpoints`.
fn balanced(discover: HealthDiscover<usize, Client>) -> Balanced {
    let balance = Balance::new(PendingRequestsDiscover::new(
        discover,
        CompleteOnResponse::default(),
    ));
    Retry::new(ConnectFailover::new(), Buffer::new(balance, 64))
}

#[tokio::test]
async fn a_refused_request_goes_once_more_to_another_endpoint() {
    let (fixture, discover) = fixture(&[Some(io::ErrorKind::ConnectionRefused), None]);
    let service = balanced(discover);
    for i in 0..200 {
        // POSTs too: a request that failed to connect never left.
        let request = Request::builder()
            .method(if i % 2 == 0 {
                Method::GET
            } else {
                Method::POST
            })
            .body(format!("request {i}"))
            .unwrap();
        let response = service.clone().oneshot(request).await;
        assert!(response.is_ok(), "request {i}: {response:?}");
    }
    // The refusing endpoint was tried once, then stayed out (ejected for 1 s).
    assert_eq!(fixture.calls[0].load(Ordering::SeqCst), 1);
    assert_eq!(fixture.calls[1].load(Ordering::SeqCst), 200);
}

#[tokio::test]
async fn other_failures_are_not_sent_again() {
    let (fixture, discover) = fixture(&[Some(io::ErrorKind::ConnectionReset)]);
    let service = balanced(discover);
    let error = service
        .oneshot(Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(
        tower_health_classify::classify_error(&*error),
        Outcome::Transport(TransportKind::Reset)
    );
    assert_eq!(fixture.calls[0].load(Ordering::SeqCst), 1, "sent once");
}

#[tokio::test]
async fn every_endpoint_refusing_fails_after_one_more_attempt() {
    let (logs, _guard) = Logs::capture(Level::INFO);
    let refused = Some(io::ErrorKind::ConnectionRefused);
    let (fixture, discover) = fixture(&[refused, refused]);
    let service = balanced(discover);
    for _ in 0..5 {
        let error = service
            .clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap_err();
        assert_eq!(
            tower_health_classify::classify_error(&*error),
            Outcome::Transport(TransportKind::ConnectionRefused)
        );
    }
    let calls: usize = fixture.calls.iter().map(|c| c.load(Ordering::SeqCst)).sum();
    assert_eq!(calls, 10, "two attempts per request");
    assert_eq!(
        logs.count_containing("backend failing open"),
        1,
        "{}",
        logs.text()
    );
}

#[test]
fn a_discover_can_be_built_outside_a_runtime() {
    let (fixture, discover) = fixture(&[None, None]);
    let discover = discover
        .fail_open_above(0.75)
        .ejection(Duration::from_millis(10), Duration::from_secs(1));
    assert!(!discover.is_failing_open());
    assert_eq!(fixture.handles.len(), 2);
}
