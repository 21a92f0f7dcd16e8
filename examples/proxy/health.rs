//! The proxy's own endpoints: `/healthz` for a load balancer, `/health/backends` for a
//! person or a dashboard, `/metrics` for Prometheus.
//!
//! A backend with several endpoints (`urls`) has each endpoint registered as a backend of
//! its own, named `name@url`: `/metrics` has its series under that name, the registry's
//! summary and phase count it, and `/health/backends` lists it by its URL under its
//! backend, next to the backend's aggregate status ([`aggregate`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tower_health_classify::{BackendHealth, HealthRegistry, HealthStatus};

/// What the endpoints read.
#[derive(Clone)]
pub(crate) struct HealthState {
    pub(crate) registry: HealthRegistry,
    pub(crate) metrics: PrometheusHandle,
    /// Every configured backend and its endpoints.
    pub(crate) layout: Arc<Vec<Backend>>,
}

/// A configured backend, as `/health/backends` shows it.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub(crate) name: String,
    /// Empty for a backend with one URL, which is registered under its own name.
    pub(crate) endpoints: Vec<Endpoint>,
}

/// One endpoint of a backend with several URLs.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// As configured, without the slash of an empty path.
    pub(crate) url: String,
    /// Its name in the registry: `backend@url`.
    pub(crate) name: String,
}

/// A backend's status from its endpoints': Unknown until one has a verdict; Healthy when
/// all are; the endpoints' own Bad status (Unauthenticated if all are, else Unhealthy)
/// when every one is Bad; else Degraded (some are Bad or Degraded, the rest serve).
pub(crate) fn aggregate(statuses: &[HealthStatus]) -> HealthStatus {
    if statuses.iter().all(|s| *s == HealthStatus::Unknown) {
        return HealthStatus::Unknown;
    }
    if statuses.iter().all(|s| s.is_bad()) {
        return if statuses.iter().all(|s| *s == HealthStatus::Unauthenticated) {
            HealthStatus::Unauthenticated
        } else {
            HealthStatus::Unhealthy
        };
    }
    if statuses
        .iter()
        .all(|s| matches!(s, HealthStatus::Healthy | HealthStatus::Unknown))
    {
        return HealthStatus::Healthy;
    }
    HealthStatus::Degraded
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

/// `GET /health/backends`: the registry's snapshot as JSON, each backend with several
/// endpoints shown as its aggregate status and its endpoints.
pub(crate) async fn backends(State(state): State<HealthState>) -> Response {
    let snapshot = state.registry.snapshot();
    let health = |name: &str| -> Option<&BackendHealth> {
        snapshot.backends.iter().find(|health| health.name == name)
    };
    let mut layout: Vec<&Backend> = state.layout.iter().collect();
    layout.sort_by(|a, b| a.name.cmp(&b.name));
    let backends: Vec<serde_json::Value> = layout
        .into_iter()
        .filter_map(|backend| {
            if backend.endpoints.is_empty() {
                return health(&backend.name).map(|health| serde_json::json!(health));
            }
            // Each endpoint with its own health: one the registry no longer has is left
            // out, never shown under another endpoint's URL.
            let endpoints: Vec<(&Endpoint, &BackendHealth)> = backend
                .endpoints
                .iter()
                .filter_map(|endpoint| Some((endpoint, health(&endpoint.name)?)))
                .collect();
            let statuses: Vec<HealthStatus> = endpoints.iter().map(|(_, h)| h.status).collect();
            let listed: Vec<serde_json::Value> = endpoints
                .iter()
                .map(|(endpoint, health)| {
                    let mut value = serde_json::json!(health);
                    value["url"] = endpoint.url.clone().into();
                    value
                })
                .collect();
            Some(serde_json::json!({
                "name": backend.name,
                "strategy": endpoints.first().map(|(_, h)| h.strategy.name()),
                "status": aggregate(&statuses),
                "endpoints": listed,
            }))
        })
        .collect();
    Json(serde_json::json!({
        "backends": backends,
        "summary": snapshot.summary,
        "phase": snapshot.phase,
    }))
    .into_response()
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

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Degraded, Healthy, Unauthenticated, Unhealthy, Unknown};

    #[test]
    fn the_aggregate_of_a_backend_s_endpoints() {
        // (what it shows, endpoints, aggregate)
        let rows: &[(&str, &[HealthStatus], HealthStatus)] = &[
            ("nothing judged yet", &[Unknown, Unknown], Unknown),
            ("all healthy", &[Healthy, Healthy], Healthy),
            ("healthy and not yet judged", &[Healthy, Unknown], Healthy),
            (
                "one of two down: the other serves",
                &[Healthy, Unhealthy],
                Degraded,
            ),
            ("one slow", &[Degraded, Healthy], Degraded),
            ("all down", &[Unhealthy, Unhealthy], Unhealthy),
            (
                "all bad, of both kinds",
                &[Unauthenticated, Unhealthy],
                Unhealthy,
            ),
            (
                "all refuse the gateway's credentials",
                &[Unauthenticated, Unauthenticated],
                Unauthenticated,
            ),
            ("down and not yet judged", &[Unhealthy, Unknown], Degraded),
        ];
        for (what, statuses, want) in rows {
            assert_eq!(aggregate(statuses), *want, "{what}");
        }
    }
}
