//! The proxy's own endpoints: `/healthz` for a load balancer, `/health/backends` for a
//! person or a dashboard, `/metrics` for Prometheus.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tower_health_classify::HealthRegistry;

/// What the endpoints read.
#[derive(Clone)]
pub(crate) struct HealthState {
    pub(crate) registry: HealthRegistry,
    pub(crate) metrics: PrometheusHandle,
}

/// `GET /healthz`: 200 while the proxy can serve (phase `ready` or `degraded`), else 503
/// (`pending`: nothing probed yet; `failed`: no backend usable; `empty`).
pub(crate) async fn healthz(State(state): State<HealthState>) -> Response {
    let phase = state.registry.summary().phase();
    let status = if phase.is_serving() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(serde_json::json!({ "phase": phase.as_str() }))).into_response()
}

/// `GET /health/backends`: the registry's snapshot, as JSON.
pub(crate) async fn backends(State(state): State<HealthState>) -> Response {
    Json(state.registry.snapshot()).into_response()
}

/// `GET /metrics`: Prometheus text. Every registered backend's series are marked first,
/// so that the idle timeout drops only removed backends' series.
pub(crate) async fn metrics(State(state): State<HealthState>) -> Response {
    tower_health_classify::metrics::keep_alive();
    let mut response = Response::new(Body::from(state.metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// How long a series may go without an update before `/metrics` drops it: ten probe
/// intervals. Status gauges and counters of registered backends are marked at every
/// scrape and never reach it; a removed backend's series do. A latency histogram cannot
/// be marked without a value, and the prober gives each backend one every interval, so
/// a registered backend's histogram stays too.
pub(crate) fn idle_timeout(probe_interval: Duration) -> Duration {
    probe_interval.saturating_mul(10)
}

/// The process's Prometheus recorder, installed on first use with `idle_timeout` (a
/// later call's is ignored: there is one recorder per process). Call it before traffic
/// starts: a series is resolved with the recorder in effect when it is first used.
pub(crate) fn prometheus(idle_timeout: Duration) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::ALL, Some(idle_timeout))
                .set_buckets_for_metric(
                    Matcher::Full("backend_health_latency_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .expect("the bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    upkeep(handle.clone());
                    handle
                }
                Err(error) => {
                    // Another recorder owns the process (an embedding application's):
                    // /metrics then shows nothing of ours.
                    tracing::warn!(%error, "cannot install the Prometheus recorder");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Latency values wait in the recorder until they are folded into the histograms, which
/// a render does; a proxy nobody scrapes would hold every request's. Folded every five
/// seconds instead, for as long as the process (and its recorder) lives.
fn upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; values are folded at each scrape only");
    }
}
