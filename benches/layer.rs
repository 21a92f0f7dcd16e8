//! Per-request cost of `HealthClassify` against the floor: the bare service, a trivial
//! layer, and tower-http's `TraceLayer`.
//!
//! Run with `cargo bench --bench layer`. Figures and how to read them: BENCHMARKS.md.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Empty;
use tower::util::MapResponseLayer;
use tower::{service_fn, Layer, Service};
use tower_health_classify::{
    parse_challenges, AuthStrategy, BackendHandle, HealthClassifyLayer, HealthGateLayer,
    HealthRegistry, HealthReport, HealthSink, Policy,
};
use tower_http::trace::TraceLayer;

/// Drives one request through a service whose futures are ready at once.
fn call<S>(service: &mut S) -> Result<S::Response, S::Error>
where
    S: Service<Request<Body>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Pending => unreachable!("the benched services are always ready"),
    }
    let future = pin!(service.call(Request::new(Body::new())));
    match future.poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => unreachable!("the benched futures are ready at once"),
    }
}

/// Polls a body whose frames are ready at once until it ends.
fn end_of_body<B: http_body::Body>(body: B) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut body = pin!(body);
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(None) => return true,
            _ => return false,
        }
    }
}

/// The response body tower-http's `TraceLayer` needs; empty, so nothing allocates.
type Body = Empty<Bytes>;

fn ok(_req: Request<Body>) -> Ready<Result<Response<Body>, Infallible>> {
    ready(Ok(Response::new(Body::new())))
}

fn challenge() -> Response<Body> {
    let mut response = Response::new(Body::new());
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer realm="mcp", scope="tools:read tools:call", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource""#,
        ),
    );
    response
}

/// A registry handle that does not ask for precise latencies.
#[derive(Clone)]
struct Coarse(BackendHandle);

impl HealthSink for Coarse {
    fn strategy(&self) -> AuthStrategy {
        self.0.strategy()
    }
    fn precise_latency(&self) -> bool {
        false
    }
    #[inline]
    fn report(&self, report: &HealthReport<'_>) {
        self.0.report(report)
    }
}

fn per_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_request");

    let mut bare = service_fn(ok);
    group.bench_function("a_bare_service_fn", |b| {
        b.iter(|| black_box(call(&mut bare)))
    });

    let mut identity = MapResponseLayer::new(|r: Response<Body>| r).layer(service_fn(ok));
    group.bench_function("b_identity_map_response", |b| {
        b.iter(|| black_box(call(&mut identity)))
    });

    let mut noop = HealthClassifyLayer::new(()).layer(service_fn(ok));
    group.bench_function("c_health_classify_noop_sink", |b| {
        b.iter(|| black_box(call(&mut noop)))
    });

    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("bench", AuthStrategy::UpstreamInject);
    let mut registered = HealthClassifyLayer::new(handle.clone()).layer(service_fn(ok));
    group.bench_function("d_health_classify_registry_handle", |b| {
        b.iter(|| black_box(call(&mut registered)))
    });

    // (d) behind a gate on the same backend, Healthy: what the gate adds to a request.
    let mut gated = HealthGateLayer::new(handle.clone())
        .layer(HealthClassifyLayer::new(handle.clone()).layer(service_fn(ok)));
    group.bench_function("d4_health_gate_over_d", |b| {
        b.iter(|| black_box(call(&mut gated)))
    });
    let mut gated_readiness = HealthGateLayer::new(handle.clone())
        .not_ready_while_bad()
        .layer(HealthClassifyLayer::new(handle).layer(service_fn(ok)));
    group.bench_function("d5_health_gate_not_ready_while_bad_over_d", |b| {
        b.iter(|| black_box(call(&mut gated_readiness)))
    });

    // The same handle, made to read the coarse clock: what it costs without the latency
    // histogram of feature `metrics` (which these benches are built with).
    let registry = HealthRegistry::new(Policy::default());
    let coarse = Coarse(registry.register("coarse", AuthStrategy::UpstreamInject));
    let mut coarse = HealthClassifyLayer::new(coarse).layer(service_fn(ok));
    group.bench_function("d0_health_classify_registry_handle_coarse_clock", |b| {
        b.iter(|| black_box(call(&mut coarse)))
    });

    // (d) with judged streams: the body wrapped and read to its (empty) end.
    let handle = registry.register("streams", AuthStrategy::UpstreamInject);
    let mut judged = HealthClassifyLayer::new(handle)
        .classify_body()
        .layer(service_fn(ok));
    group.bench_function("d3_health_classify_registry_handle_classify_body", |b| {
        b.iter(|| {
            let response = call(&mut judged);
            black_box(response.map(|r| end_of_body(r.into_body())))
        })
    });

    // The same with a `&'static` handle: no reference count touched per request.
    let handle: &'static _ = Box::leak(Box::new(
        HealthRegistry::new(Policy::default()).register("leaked", AuthStrategy::UpstreamInject),
    ));
    let mut borrowed = HealthClassifyLayer::new(handle).layer(service_fn(ok));
    group.bench_function("d2_health_classify_static_handle", |b| {
        b.iter(|| black_box(call(&mut borrowed)))
    });

    let mut trace = TraceLayer::new_for_http().layer(service_fn(ok));
    group.bench_function("e_tower_http_trace_layer", |b| {
        b.iter(|| black_box(call(&mut trace)))
    });

    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("oauth", AuthStrategy::UpstreamInject);
    let mut unauthorized = HealthClassifyLayer::new(handle)
        .pass_through_auth()
        .layer(service_fn(|_req: Request<Body>| {
            ready(Ok::<_, Infallible>(challenge()))
        }));
    group.bench_function("f_401_bearer_challenge_pass_through", |b| {
        b.iter(|| black_box(call(&mut unauthorized)))
    });

    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("down", AuthStrategy::Unauthenticated);
    let mut refused = HealthClassifyLayer::new(handle).layer(service_fn(|_req: Request<Body>| {
        ready(Err::<Response<Body>, _>(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )))
    }));
    group.bench_function("g_connection_refused", |b| {
        b.iter(|| black_box(call(&mut refused).is_err()))
    });

    group.finish();
}

fn clocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    group.bench_function("std_instant_now", |b| b.iter(std::time::Instant::now));
    group.bench_function("tokio_instant_now", |b| b.iter(tokio::time::Instant::now));
    #[cfg(target_os = "linux")]
    {
        use rustix::time::{clock_gettime, ClockId};
        group.bench_function("clock_monotonic", |b| {
            b.iter(|| clock_gettime(ClockId::Monotonic))
        });
        group.bench_function("clock_monotonic_coarse", |b| {
            b.iter(|| clock_gettime(ClockId::MonotonicCoarse))
        });
    }
    group.finish();
}

fn parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_challenges");
    let typical = challenge().headers().clone();
    group.throughput(Throughput::Bytes(
        typical[header::WWW_AUTHENTICATE].len() as u64
    ));
    group.bench_function("typical_bearer", |b| {
        b.iter(|| black_box(parse_challenges(black_box(&typical))))
    });

    // The same challenge list repeated to a size, to show the cost is linear in bytes.
    for size in [1024usize, 4096, 8192] {
        let one = r#"Bearer realm="mcp", scope="tools:read", error="invalid_token", "#;
        let value: String = one.repeat(size / one.len() + 1)[..size].to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&value).unwrap(),
        );
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("repeated", size), &headers, |b, h| {
            b.iter(|| black_box(parse_challenges(black_box(h))))
        });
        let commas = HeaderValue::from_str(&",".repeat(size)).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::WWW_AUTHENTICATE, commas);
        group.bench_with_input(BenchmarkId::new("commas", size), &headers, |b, h| {
            b.iter(|| black_box(parse_challenges(black_box(h))))
        });
    }
    group.finish();
}

criterion_group!(benches, per_request, clocks, parser);
criterion_main!(benches);
