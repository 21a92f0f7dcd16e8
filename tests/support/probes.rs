//! Moving a backend's status by hand: probe verdicts reported to its handle.

use http::StatusCode;
use tower_health_classify::{
    BackendHandle, ExchangeReport, HealthStatus, Origin, Outcome, TransportKind,
};

/// Reports `n` probes that showed `outcome`.
pub(crate) fn probes(handle: &BackendHandle, outcome: &Outcome, n: usize) {
    for _ in 0..n {
        ExchangeReport::new(outcome)
            .origin(Origin::Probe)
            .report(handle);
    }
}

/// Three refused probes: Unhealthy under the default policy.
pub(crate) fn make_unhealthy(handle: &BackendHandle) {
    probes(
        handle,
        &Outcome::Transport(TransportKind::ConnectionRefused),
        3,
    );
    assert_eq!(handle.status(), HealthStatus::Unhealthy);
}

/// Two good probes: Healthy again under the default policy.
pub(crate) fn make_healthy(handle: &BackendHandle) {
    probes(handle, &Outcome::Success(StatusCode::OK), 2);
    assert_eq!(handle.status(), HealthStatus::Healthy);
}
