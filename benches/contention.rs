//! Reports from two threads at once: into one backend handle (shared cache lines) and
//! into two different handles (nothing shared but the registry). Good verdicts on a
//! Healthy backend: the lock-free path.
//!
//! Run with `cargo bench --bench contention`. Criterion reports the time per report;
//! throughput in reports per second is its inverse times two (two threads).

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::StatusCode;
use tower_health_classify::{
    AuthStrategy, BackendHandle, ExchangeReport, HealthRegistry, Outcome, Policy,
};

/// One Good report, as the layer makes it (the strategy read from the handle included).
fn report(handle: &BackendHandle, outcome: &Outcome) {
    ExchangeReport::new(outcome)
        .latency(Duration::from_millis(1))
        .report(handle);
}

/// Runs `iters` reports on each of two threads, into `handles[0]` and `handles[1]`,
/// and returns the wall time of the slower thread divided over both threads' reports.
fn two_threads(handles: [&BackendHandle; 2], iters: u64) -> Duration {
    let barrier = Barrier::new(2);
    let outcome = Outcome::Success(StatusCode::OK);
    let elapsed = thread::scope(|scope| {
        let workers: Vec<_> = handles
            .iter()
            .map(|&handle| {
                let (barrier, outcome) = (&barrier, &outcome);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        report(black_box(handle), outcome);
                    }
                    start.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap()
    });
    elapsed / 2
}

fn contention(c: &mut Criterion) {
    let registry = HealthRegistry::new(Policy::default());
    let one = registry.register("one", AuthStrategy::TokenExchange);
    let other = registry.register("other", AuthStrategy::TokenExchange);
    // Make both Healthy, so that every report takes the lock-free path.
    report(&one, &Outcome::Success(StatusCode::OK));
    report(&other, &Outcome::Success(StatusCode::OK));

    let mut group = c.benchmark_group("two_threads");
    group.throughput(Throughput::Elements(1));
    group.bench_function("same_handle", |b| {
        b.iter_custom(|iters| two_threads([&one, &one], iters))
    });
    group.bench_function("different_handles", |b| {
        b.iter_custom(|iters| two_threads([&one, &other], iters))
    });
    group.finish();

    let mut group = c.benchmark_group("one_thread");
    group.throughput(Throughput::Elements(1));
    let outcome = Outcome::Success(StatusCode::OK);
    group.bench_function("report", |b| b.iter(|| report(black_box(&one), &outcome)));
    group.finish();
}

criterion_group!(benches, contention);
criterion_main!(benches);
