//! Instructions per request on the layer's hot paths, for callgrind to count: exact and
//! repeatable where criterion's nanoseconds on a shared machine are not.
//!
//! Run with `bash benches/instructions.sh` (it builds this with rustix's libc backend,
//! which valgrind can run, and prints the counts). By itself, `instructions MODE N` sends
//! N requests through the layer in MODE (`head`, `body`, `gate`) and exits.
//!
//! The script builds it once per mode, with `--cfg instructions_mode` and
//! `--cfg instructions_mode="MODE"`, so that each binary holds that mode alone. Two modes
//! built together share the layer's types: its `call` and `poll` then have two callers,
//! LLVM stops inlining them into the loop, and `head` counts about 55 instructions more
//! with no change to the crate (641 alone, 694 beside `gate`, at `93f0e71`). Built
//! without the cfg (`cargo bench`), every mode is there.

// A one-mode build leaves the other modes' imports unused.
#![cfg_attr(instructions_mode, allow(unused_imports))]

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
#[cfg(any(not(instructions_mode), instructions_mode = "head"))]
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
#[cfg(any(not(instructions_mode), instructions_mode = "body"))]
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
#[cfg(any(not(instructions_mode), instructions_mode = "gate"))]
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
        #[cfg(any(not(instructions_mode), instructions_mode = "head"))]
        "head" => head(n),
        #[cfg(any(not(instructions_mode), instructions_mode = "body"))]
        "body" => body(n),
        #[cfg(any(not(instructions_mode), instructions_mode = "gate"))]
        "gate" => gate(n),
        other => panic!("mode {other:?} is not in this build; the modes are head, body and gate"),
    }
}
