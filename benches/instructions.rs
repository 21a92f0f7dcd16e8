//! Instructions per request on the layer's hot paths, for callgrind to count: exact and
//! repeatable where criterion's nanoseconds on a shared machine are not.
//!
//! Run with `bash benches/instructions.sh` (it builds this with rustix's libc backend,
//! which valgrind can run, and prints the counts). By itself, `instructions MODE N` sends
//! N requests through the layer in MODE (`head`, `body`, `gate`) and exits.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Empty;
use tower::{service_fn, Layer, Service};
use tower_health_classify::{
    AuthStrategy, HealthClassifyLayer, HealthGateLayer, HealthRegistry, Policy,
};

fn ok(_req: Request<()>) -> Ready<Result<Response<Empty<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Empty::new())))
}

fn call<S: Service<Request<()>>>(service: &mut S) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(())) = service.poll_ready(&mut cx) else {
        unreachable!("always ready")
    };
    match pin!(service.call(Request::new(()))).poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => unreachable!("ready at once"),
    }
}

/// (d) of `benches/layer.rs`: a registry handle, the head judged.
#[inline(never)]
fn head(n: u64) {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("bench", AuthStrategy::UpstreamInject);
    let mut service = HealthClassifyLayer::new(handle).layer(service_fn(ok));
    for _ in 0..n {
        let _ = black_box(call(&mut service));
    }
}

/// (d3): the same with judged streams, the (empty) body read to its end.
#[inline(never)]
fn body(n: u64) {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("bench", AuthStrategy::UpstreamInject);
    let mut service = HealthClassifyLayer::new(handle)
        .classify_body()
        .layer(service_fn(ok));
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        let response = call(&mut service).unwrap();
        let mut body = pin!(response.into_body());
        let _ = black_box(body.as_mut().poll_frame(&mut cx).is_ready());
    }
}

/// (d4): (d) behind a gate on the same backend, Healthy.
#[inline(never)]
fn gate(n: u64) {
    let registry = HealthRegistry::new(Policy::default());
    let handle = registry.register("bench", AuthStrategy::UpstreamInject);
    let mut service = HealthGateLayer::new(handle.clone())
        .layer(HealthClassifyLayer::new(handle).layer(service_fn(ok)));
    for _ in 0..n {
        let _ = black_box(call(&mut service));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(n)) = (args.next(), args.next()) else {
        // `cargo bench` runs every bench target with `--bench`: nothing to do here.
        return;
    };
    let n: u64 = n.parse().expect("N is a number");
    match mode.as_str() {
        "head" => head(n),
        "body" => body(n),
        "gate" => gate(n),
        other => panic!("unknown mode {other:?}; expected head, body or gate"),
    }
}
