//! Heap allocations per request, counted by a global allocator.
//!
//! The success path with a registry handle must not allocate at all in steady state,
//! with judged streams too (a plain body read to its end); the 401 path allocates only
//! for the parsed challenge (and, in pass-through mode, the response extension that
//! carries it).

#![allow(unsafe_code)] // the counting allocator below; the crate itself forbids unsafe

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower::{service_fn, Layer, Service};
use tower_health_classify::{
    AuthStrategy, HealthClassifyLayer, HealthGateLayer, HealthRegistry, HealthStatus, Policy,
};

struct Counting;

thread_local! {
    // Per thread, so that tests running in parallel do not count each other.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Drives one request through a service whose futures are ready at once.
fn call<S: Service<Request<()>>>(
    service: &mut S,
    request: Request<()>,
) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(ready) = service.poll_ready(&mut cx) else {
        panic!("always ready")
    };
    ready?;
    let Poll::Ready(result) = pin!(service.call(request)).poll(&mut cx) else {
        panic!("ready at once")
    };
    result
}

/// Allocations per request over `n` requests, after `n` warm-up requests.
fn per_request<S: Service<Request<()>>>(
    service: &mut S,
    make: impl Fn() -> Request<()>,
    n: u64,
) -> u64 {
    for _ in 0..n {
        let _ = call(service, make());
    }
    let before = allocations();
    for _ in 0..n {
        let _ = call(service, make());
    }
    (allocations() - before) / n
}

fn ok(_req: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    ready(Ok(Response::new(())))
}

fn unauthorized(_req: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="mcp", scope="read", error="invalid_token""#),
    );
    ready(Ok(response))
}

#[test]
fn success_with_a_registry_handle_allocates_nothing() {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("api", AuthStrategy::TokenExchange);
    let mut service = HealthClassifyLayer::new(handle.clone()).layer(service_fn(ok));
    assert_eq!(per_request(&mut service, || Request::new(()), 1_000), 0);

    // With credentials and a probe marker too: detection reads, never copies.
    let mut service = HealthClassifyLayer::new(handle)
        .credential_header(http::HeaderName::from_static("x-api-key"))
        .layer(service_fn(ok));
    let allocations_with_headers = {
        let template = {
            let mut r = Request::new(());
            r.headers_mut()
                .insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
            r
        };
        // Building the request allocates (its header map); count that apart.
        let build = {
            let before = allocations();
            let _r = clone_request(&template);
            allocations() - before
        };
        per_request(&mut service, || clone_request(&template), 1_000) - build
    };
    assert_eq!(allocations_with_headers, 0);
    assert_eq!(registry.status("api").unwrap().as_str(), "healthy");
}

#[test]
fn a_gate_on_a_healthy_backend_allocates_nothing() {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("api", AuthStrategy::TokenExchange);
    let classified = HealthClassifyLayer::new(handle.clone()).layer(service_fn(ok));
    for not_ready_while_bad in [false, true] {
        let layer = HealthGateLayer::new(handle.clone());
        let layer = if not_ready_while_bad {
            layer.not_ready_while_bad()
        } else {
            layer
        };
        let mut service = layer.layer(classified.clone());
        assert_eq!(
            per_request(&mut service, || Request::new(()), 1_000),
            0,
            "not_ready_while_bad: {not_ready_while_bad}"
        );
    }
    assert_eq!(handle.status(), HealthStatus::Healthy);
}

fn ok_full(_req: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(
        b"{\"ok\":true}",
    )))))
}

/// Reads a body whose frames are ready at once to its end; the number of data frames.
fn drain<B: Body>(body: B) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut body = pin!(body);
    let mut frames = 0;
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(_))) => frames += 1,
            Poll::Ready(None) => return frames,
            Poll::Ready(Some(Err(_))) => panic!("the body fails"),
            Poll::Pending => panic!("ready at once"),
        }
    }
}

#[test]
fn success_with_judged_streams_and_a_plain_body_allocates_nothing() {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("api", AuthStrategy::TokenExchange);
    let mut service = HealthClassifyLayer::new(handle)
        .pass_through_auth()
        .classify_body()
        .layer(service_fn(ok_full));
    let mut exchange = || {
        let response = call(&mut service, Request::new(())).unwrap();
        assert_eq!(drain(response.into_body()), 1);
    };
    for _ in 0..1_000 {
        exchange();
    }
    let before = allocations();
    for _ in 0..1_000 {
        exchange();
    }
    assert_eq!(allocations() - before, 0, "over 1,000 calls");
    let health = registry.snapshot().backends.remove(0);
    assert_eq!(
        (health.checks, health.failures),
        (2_000, 0),
        "one report a call"
    );
}

fn clone_request(template: &Request<()>) -> Request<()> {
    let mut request = Request::new(());
    *request.headers_mut() = template.headers().clone();
    request
}

#[test]
fn the_401_path_allocates_only_for_the_challenge_and_the_extension() {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("oauth", AuthStrategy::UpstreamInject);

    let mut typed = HealthClassifyLayer::new(handle.clone()).layer(service_fn(unauthorized));
    let response_build = {
        let before = allocations();
        drop(unauthorized(Request::new(())));
        allocations() - before
    };
    let typed_per_request = per_request(&mut typed, || Request::new(()), 200) - response_build;

    let mut passing = HealthClassifyLayer::new(handle)
        .pass_through_auth()
        .layer(service_fn(unauthorized));
    let passing_per_request = per_request(&mut passing, || Request::new(()), 200) - response_build;

    // The parsed challenge, `Bearer realm="mcp", scope="read", error="invalid_token"`:
    // 1. the challenge list (`Vec<Challenge>`, reserved for one challenge);
    // 2. the challenge's text, `Bearerrealmmcpscopereaderrorinvalid_token`, reserved once
    //    from the value's length, every value decoded straight into it.
    // The three parameters' positions are stored inline in the challenge (up to five are).
    let challenge = 1 + 1;
    assert_eq!(typed_per_request, challenge, "typed mode");
    // Pass-through mode moves the outcome into the response extensions, which were empty:
    // the boxed map, its hash table on the first insert, and the boxed entry.
    let extension = 1 + 1 + 1;
    assert_eq!(
        passing_per_request,
        challenge + extension,
        "pass-through mode"
    );
    assert_eq!(registry.status("oauth").unwrap().as_str(), "healthy");
}

fn unavailable(_req: Request<()>) -> Ready<Result<Response<()>, std::io::Error>> {
    ready(Err(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )))
}

fn probe() -> Request<()> {
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(tower_health_classify::Probe);
    request
}

/// During an outage every report is a failure, and none may allocate (once the error
/// itself is built): the registry keeps the last error as a code, not as a string.
#[test]
fn failures_on_an_unhealthy_backend_allocate_nothing_in_the_registry() {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("down", AuthStrategy::Unauthenticated);
    let mut bare = HealthClassifyLayer::new(()).layer(service_fn(unavailable));
    let mut registered = HealthClassifyLayer::new(handle).layer(service_fn(unavailable));
    for make in [Request::new as fn(()) -> Request<()>, |()| probe()] {
        let floor = per_request(&mut bare, || make(()), 200);
        let with_registry = per_request(&mut registered, || make(()), 200);
        assert_eq!(
            with_registry, floor,
            "the registry adds nothing to the error's own"
        );
    }
    assert_eq!(registry.status("down").unwrap().as_str(), "unhealthy");
}

/// A Degraded backend's Good traffic leaves the hot path (it is judged against what
/// probes and the window say), and still allocates nothing.
#[test]
fn successes_on_a_degraded_backend_allocate_nothing() {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("slowish", AuthStrategy::Unauthenticated);
    let mut failing = HealthClassifyLayer::new(handle.clone()).layer(service_fn(unavailable));
    for _ in 0..2 {
        let _ = call(&mut failing, probe());
    }
    let mut service = HealthClassifyLayer::new(handle).layer(service_fn(ok));
    assert_eq!(per_request(&mut service, || Request::new(()), 1_000), 0);
    // Probes made it Degraded; traffic that succeeds cannot overrule them.
    assert_eq!(registry.status("slowish").unwrap().as_str(), "degraded");
}
