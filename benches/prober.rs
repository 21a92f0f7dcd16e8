//! Prober at scale: 10,000 registered backends behind an in-memory service.
//!
//! Prints the memory each registered backend takes (registry state, then with its
//! prober task) and the CPU time per probe, all in the prober's own process: the
//! request, the layer, the timeout, the in-memory answer, the report and the timer.
//! Time is tokio's paused clock, so ten rounds of probes take no wall time; the CPU
//! time is the process's own (`CLOCK_PROCESS_CPUTIME_ID`).
//!
//! Run with `cargo bench --bench prober`.

#![allow(unsafe_code)] // the counting allocator below; the crate itself forbids unsafe
#![allow(clippy::print_stdout)] // printing the figures is what this bench is for

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use tower::service_fn;
use tower_health_classify::{AuthStrategy, HealthRegistry, Policy, Prober};

struct Counting;

/// Bytes allocated and not yet freed, across all threads.
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

const BACKENDS: usize = 10_000;
const INTERVAL: Duration = Duration::from_secs(30);
const ROUNDS: u32 = 10;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let names: Vec<String> = (0..BACKENDS).map(|i| format!("backend-{i:05}")).collect();
        let before = LIVE.load(Ordering::Relaxed);
        let registry = HealthRegistry::new(Policy::default());
        for name in &names {
            registry.register(name.as_str(), AuthStrategy::UpstreamInject);
        }
        let registered = LIVE.load(Ordering::Relaxed);
        let per_backend = (registered - before) as f64 / BACKENDS as f64;

        let probes = Arc::new(AtomicU64::new(0));
        let counter = probes.clone();
        let prober =
            Prober::builder(registry.clone())
                .interval(INTERVAL)
                .spawn(move |_name: &str| {
                    let counter = counter.clone();
                    let backend = service_fn(move |_req: Request<()>| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        std::future::ready(Ok::<_, Infallible>(Response::new(())))
                    });
                    Some((backend, Request::new(())))
                });
        // The first round starts at once; let every task run it.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let with_tasks = LIVE.load(Ordering::Relaxed);
        let per_task = (with_tasks - registered) as f64 / BACKENDS as f64;

        let cpu_before = cpu_time();
        let probes_before = probes.load(Ordering::Relaxed);
        tokio::time::sleep(INTERVAL * ROUNDS).await;
        let cpu = cpu_time() - cpu_before;
        let done = probes.load(Ordering::Relaxed) - probes_before;
        prober.shutdown().await;

        let summary = registry.summary();
        assert_eq!(
            summary.healthy, BACKENDS,
            "every backend answered its probes"
        );
        println!("backends:                       {BACKENDS}");
        println!("memory per registered backend:  {per_backend:.0} bytes");
        println!("memory per backend's task:      {per_task:.0} bytes (after its first probe)");
        println!(
            "memory per backend, all in:     {:.0} bytes",
            per_backend + per_task
        );
        println!(
            "probes measured:                {done} ({ROUNDS} rounds at {INTERVAL:?}, paused time)"
        );
        println!(
            "CPU time per probe:             {:.2} µs",
            cpu.as_secs_f64() * 1e6 / done as f64
        );
    });
}
