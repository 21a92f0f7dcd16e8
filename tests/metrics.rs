//! The registry's metrics through the `metrics` facade: status gauges after transitions,
//! transition and report counters with their labels, the latency histogram, no secret in
//! any label, and no allocation on the Good-on-Healthy path.

#![cfg(feature = "metrics")]
// Only the counting allocator below: `GlobalAlloc` is an unsafe trait.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder};
use metrics::{SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::CompositeKey;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tower_health_classify::{
    metrics as names, AuthStrategy, BackendHandle, Credentials, ExchangeReport,
    HealthClassifyLayer, HealthRegistry, HealthStatus, Outcome,
};

// === snapshot reading ===

type Entry = (CompositeKey, Option<Unit>, Option<SharedString>, DebugValue);

struct Metrics(Vec<Entry>);

impl Metrics {
    /// The value of the series `name` whose labels are exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        self.0.iter().find_map(|(key, _, _, value)| {
            let key = key.key();
            let mut have: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            let mut want = labels.to_vec();
            have.sort_unstable();
            want.sort_unstable();
            (key.name() == name && have == want).then_some(value)
        })
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{name} {labels:?}: {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.get(name, labels) {
            Some(DebugValue::Gauge(v)) => v.into_inner(),
            other => panic!("{name} {labels:?}: {other:?}"),
        }
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.get(name, labels) {
            Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
            other => panic!("{name} {labels:?}: {other:?}"),
        }
    }

    /// The sum of every series named `name`.
    fn total(&self, name: &str) -> u64 {
        self.0
            .iter()
            .filter(|(key, _, _, _)| key.key().name() == name)
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => *n,
                other => panic!("{name}: {other:?}"),
            })
            .sum()
    }

    /// Every status gauge `backend` has, as (status, value), in the order of the
    /// statuses: a gauge exists once the backend has been in its status.
    fn statuses(&self, backend: &str) -> Vec<(&'static str, f64)> {
        [
            "unknown",
            "healthy",
            "degraded",
            "unhealthy",
            "unauthenticated",
        ]
        .into_iter()
        .filter_map(|status| {
            let labels = [("backend", backend), ("status", status)];
            self.get(names::STATUS, &labels)?;
            Some((status, self.gauge(names::STATUS, &labels)))
        })
        .collect()
    }

    /// How many series `backend` has.
    fn series_of(&self, backend: &str) -> usize {
        let of_backend = |key: &CompositeKey| {
            key.key()
                .labels()
                .any(|l| l.key() == "backend" && l.value() == backend)
        };
        self.0
            .iter()
            .filter(|(key, _, _, _)| of_backend(key))
            .count()
    }
}

/// Runs `f` with a fresh `DebuggingRecorder` as this thread's recorder, on a
/// current-thread runtime with paused time, and returns what it recorded. The recorder
/// is local to the thread, so tests running in parallel do not see each other's metrics.
fn recorded<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) -> Metrics {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(f())
    });
    Metrics(snapshotter.snapshot().into_vec())
}

// === a scripted backend ===

/// What the backend does next: answer with a status, or fail with an error.
#[derive(Clone, Copy, Debug)]
enum Step {
    Answer(StatusCode),
    Refuse,
    Shed,
}

/// A backend that takes 250 ms (of paused time) per call and follows `script`, behind a
/// `HealthClassifyLayer` reporting to `handle`. Every request carries a user's token.
async fn drive(handle: BackendHandle, script: &[Step]) {
    let steps = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
    let backend = service_fn(move |_req: Request<()>| {
        let step = steps.lock().unwrap().pop_front().expect("a step per call");
        async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match step {
                Step::Answer(status) => {
                    let mut response = Response::builder().status(status);
                    if status == StatusCode::UNAUTHORIZED {
                        response = response.header(
                            "www-authenticate",
                            r#"Bearer error="invalid_token", error_description="token sekrit-token expired""#,
                        );
                    }
                    Ok(response.body(()).unwrap())
                }
                Step::Refuse => {
                    Err::<_, BoxError>(io::Error::from(io::ErrorKind::ConnectionRefused).into())
                }
                Step::Shed => Err(tower::load_shed::error::Overloaded::new().into()),
            }
        }
    });
    let mut service = ServiceBuilder::new()
        .layer(HealthClassifyLayer::new(handle))
        .service(backend);
    for _ in script {
        // Probes: judged by counts in a row, so that a short script moves the status.
        let request = Request::builder()
            .header("authorization", "Bearer sekrit-token")
            .extension(tower_health_classify::Probe)
            .body(())
            .unwrap();
        // Errors are the point of some steps; the metrics are what is checked.
        let _ = service.ready().await.unwrap().call(request).await;
    }
}

const OK: Step = Step::Answer(StatusCode::OK);
const UNAVAILABLE: Step = Step::Answer(StatusCode::SERVICE_UNAVAILABLE);
const UNAUTHORIZED: Step = Step::Answer(StatusCode::UNAUTHORIZED);

#[test]
fn a_backend_going_down_and_back_is_counted_with_bounded_labels() {
    let metrics = recorded(|| async {
        let registry = HealthRegistry::default();
        let github = registry.register("github", AuthStrategy::UpstreamInject);
        drive(
            github,
            &[
                OK,           // unknown -> healthy
                OK,           // the lock-free path
                UNAUTHORIZED, // the user's token: still healthy, lock-free path
                UNAVAILABLE,  // one failure: still healthy
                UNAVAILABLE,  // healthy -> degraded
                Step::Refuse, // third failure in a row: degraded -> unhealthy
                OK,           // one success does not recover it
                OK,           // healthy again
                Step::Shed,   // local: no verdict, counted nowhere
            ],
        )
        .await;
        assert_eq!(registry.status("github"), Some(HealthStatus::Healthy));
    });

    assert_eq!(
        metrics.statuses("github"),
        [
            ("unknown", 0.0),
            ("healthy", 1.0),
            ("degraded", 0.0),
            ("unhealthy", 0.0),
        ],
        "never unauthenticated: no gauge for it"
    );

    let transition = |from, to| {
        metrics.counter(
            names::TRANSITIONS,
            &[("backend", "github"), ("from", from), ("to", to)],
        )
    };
    assert_eq!(transition("unknown", "healthy"), 1);
    assert_eq!(transition("healthy", "degraded"), 1);
    assert_eq!(transition("degraded", "unhealthy"), 1);
    assert_eq!(transition("unhealthy", "healthy"), 1);
    let never = [
        ("backend", "github"),
        ("from", "healthy"),
        ("to", "unhealthy"),
    ];
    assert_eq!(
        metrics.get(names::TRANSITIONS, &never),
        None,
        "a transition that never happened has no series"
    );
    assert_eq!(metrics.total(names::TRANSITIONS), 4);

    let reports = |outcome, reason| {
        metrics.counter(
            names::REPORTS,
            &[
                ("backend", "github"),
                ("outcome", outcome),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(reports("success", "ok"), 4);
    assert_eq!(reports("unauthorized", "user_credentials_rejected"), 1);
    assert_eq!(reports("server_error", "server_error"), 2);
    assert_eq!(reports("transport", "connection_refused"), 1);
    let timeout = [
        ("backend", "github"),
        ("outcome", "transport"),
        ("reason", "timeout"),
    ];
    assert_eq!(metrics.get(names::REPORTS, &timeout), None);
    assert_eq!(
        metrics.total(names::REPORTS),
        8,
        "the shed request is not counted"
    );

    let latency = metrics.histogram(names::LATENCY, &[("backend", "github")]);
    if cfg!(feature = "precise-clock") {
        assert_eq!(
            latency, [0.25; 8],
            "one value per counted report, in seconds"
        );
    } else {
        // Paused time moves tokio's clock only; the coarse default clock sees the real
        // time these in-memory calls took, at most a kernel tick or two.
        assert_eq!(latency.len(), 8, "one value per counted report");
        assert!(latency.iter().all(|s| *s < 0.05), "{latency:?}");
    }

    // Labels: the backend's name and this crate's fixed names, nothing from a request
    // or a backend.
    for (key, _, _, _) in &metrics.0 {
        for label in key.key().labels() {
            assert!(
                !label.value().contains("sekrit") && !label.key().contains("sekrit"),
                "{key:?}"
            );
            let allowed: &[&str] = match label.key() {
                "backend" => &["github"],
                "status" | "from" | "to" => &[
                    "unknown",
                    "healthy",
                    "degraded",
                    "unhealthy",
                    "unauthenticated",
                ],
                "outcome" | "reason" => &[label.value()],
                other => panic!("unexpected label {other}"),
            };
            assert!(allowed.contains(&label.value()), "{key:?}");
            assert!(
                label
                    .value()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{key:?}"
            );
        }
    }
}

#[test]
fn rejected_gateway_credentials_end_in_unauthenticated() {
    let metrics = recorded(|| async {
        let registry = HealthRegistry::default();
        let api = registry.register("api", AuthStrategy::HeaderInjection);
        drive(api, &[UNAUTHORIZED, UNAUTHORIZED, UNAUTHORIZED]).await;
    });
    assert_eq!(
        metrics.statuses("api"),
        [
            ("unknown", 0.0),
            ("degraded", 0.0),
            ("unauthenticated", 1.0)
        ]
    );
    let transitions = [("unknown", "degraded"), ("degraded", "unauthenticated")];
    for (from, to) in transitions {
        let labels = [("backend", "api"), ("from", from), ("to", to)];
        assert_eq!(
            metrics.counter(names::TRANSITIONS, &labels),
            1,
            "{from} -> {to}"
        );
    }
    let labels = [
        ("backend", "api"),
        ("outcome", "unauthorized"),
        ("reason", "credentials_rejected"),
    ];
    assert_eq!(metrics.counter(names::REPORTS, &labels), 3);
}

#[test]
fn a_registered_backend_has_one_series_and_a_removed_one_counts_nowhere() {
    let metrics = recorded(|| async {
        let registry = HealthRegistry::default();
        registry.register("idle", AuthStrategy::Unauthenticated);
        let gone = registry.register("gone", AuthStrategy::Unauthenticated);
        drive(gone, &[OK]).await;
        assert!(registry.remove("gone"));
    });
    assert_eq!(metrics.statuses("idle"), [("unknown", 1.0)]);
    assert_eq!(metrics.series_of("idle"), 1, "nothing else before a report");
    assert_eq!(
        metrics.statuses("gone"),
        [("unknown", 0.0), ("healthy", 0.0)]
    );
    let labels = [
        ("backend", "gone"),
        ("outcome", "success"),
        ("reason", "ok"),
    ];
    assert_eq!(
        metrics.counter(names::REPORTS, &labels),
        1,
        "counters are kept"
    );
}

#[test]
fn a_probed_healthy_backend_has_five_series() {
    let metrics = recorded(|| async {
        let registry = HealthRegistry::default();
        let probed = registry.register("probed", AuthStrategy::Unauthenticated);
        drive(probed, &[OK; 20]).await;
    });
    let names: Vec<&str> = metrics
        .0
        .iter()
        .map(|(k, _, _, _)| k.key().name())
        .collect();
    assert_eq!(metrics.series_of("probed"), 5, "{names:?}");
    assert_eq!(
        metrics.statuses("probed"),
        [("unknown", 0.0), ("healthy", 1.0)]
    );
}

#[test]
fn metrics_are_described_with_units() {
    let metrics = recorded(|| async {
        let registry = HealthRegistry::default();
        drive(registry.register("a", AuthStrategy::Unauthenticated), &[OK]).await;
    });
    let latency = metrics
        .0
        .iter()
        .find(|(key, _, _, _)| key.key().name() == names::LATENCY)
        .unwrap();
    assert_eq!(latency.1, Some(Unit::Seconds));
    assert!(latency.2.is_some());
}

/// Series are resolved when first used: a backend registered before the recorder was
/// installed misses only its `unknown` gauge.
#[test]
fn a_backend_registered_before_the_recorder_records_from_its_first_report() {
    let registry = HealthRegistry::default();
    let early = registry.register("early", AuthStrategy::Unauthenticated);
    let metrics = recorded(|| async move { drive(early, &[OK, OK]).await });
    assert_eq!(metrics.statuses("early"), [("healthy", 1.0)]);
    let labels = [
        ("backend", "early"),
        ("outcome", "success"),
        ("reason", "ok"),
    ];
    assert_eq!(metrics.counter(names::REPORTS, &labels), 2);
}

// === the Good-on-Healthy path allocates nothing ===

/// Counts this thread's allocations, so that tests running in parallel do not interfere.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// A recorder whose handles are plain atomics: recording through them never allocates,
/// so any allocation measured below is the registry's own.
#[derive(Debug, Default)]
struct AtomicRecorder {
    histogram_values: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountValues(Arc<AtomicU64>);

impl HistogramFn for CountValues {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Recorder for AtomicRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(AtomicU64::new(0)))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(AtomicU64::new(0)))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(CountValues(self.histogram_values.clone())))
    }
}

#[test]
fn good_reports_on_a_healthy_backend_allocate_nothing() {
    let recorder = AtomicRecorder::default();
    let values = recorder.histogram_values.clone();
    metrics::with_local_recorder(&recorder, || {
        let registry = HealthRegistry::default();
        let handle = registry.register("hot", AuthStrategy::UpstreamInject);
        let success = Outcome::Success(StatusCode::OK);
        let report = |handle: &BackendHandle| {
            ExchangeReport::new(&success)
                .credentials(Credentials::Sent)
                .latency(Duration::from_millis(3))
                .report(handle);
        };
        // Unknown -> Healthy takes the locked path (and logs); not measured.
        report(&handle);
        assert_eq!(handle.status(), HealthStatus::Healthy);

        let before = allocations();
        for _ in 0..1000 {
            report(&handle);
        }
        assert_eq!(allocations() - before, 0, "allocations on the hot path");
    });
    assert_eq!(
        values.load(std::sync::atomic::Ordering::Relaxed),
        1001,
        "every report reached the histogram"
    );
}
