//! The proxy's own endpoints: `/healthz` for a load balancer, `/health/backends` for a
//! person or a dashboard, `/metrics` for Prometheus.

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
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

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(State(state): State<HealthState>) -> Response {
    state.metrics.run_upkeep();
    let mut response = Response::new(Body::from(state.metrics.render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The process's Prometheus recorder, installed on first use. Call it before the first
/// backend is registered: a backend registered earlier records into nothing.
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("backend_health_latency_seconds".into()),
                    &[
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .expect("the bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
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
