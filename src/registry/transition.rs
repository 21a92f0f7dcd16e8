//! `Transition`: one change of a backend's status, and the stream of them.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::verdict::{HealthStatus, Reason};

/// One change of a backend's status.
///
/// # Example
///
/// ```
/// use tower_health_classify::{AuthStrategy, HealthRegistry, HealthStatus, Policy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = HealthRegistry::new(Policy::default());
/// let mut transitions = registry.subscribe();
/// let handle = registry.register("search", AuthStrategy::Unauthenticated);
/// # use tower_health_classify::{ExchangeReport, Outcome, Origin};
/// # let ok = Outcome::Success(http::StatusCode::OK);
/// # ExchangeReport::new(&ok).origin(Origin::Probe).report(&handle);
/// // ... one successful exchange through a layer reporting to `handle` ...
/// let transition = transitions.recv().await.unwrap();
/// assert_eq!(&*transition.backend, "search");
/// assert_eq!((transition.from, transition.to), (HealthStatus::Unknown, HealthStatus::Healthy));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The backend's name.
    pub backend: Arc<str>,
    /// The status before.
    pub from: HealthStatus,
    /// The status after.
    pub to: HealthStatus,
    /// The reason of the verdict that caused the change.
    pub reason: Reason,
    /// Which evidence made the change: probes or traffic.
    pub evidence: Evidence,
    /// How many verdicts led to it. Made by probes: the probe verdicts in a row (Bad ones
    /// into Unhealthy or Unauthenticated, Good ones into Healthy, non-Good ones into
    /// Degraded). Made by traffic: the Bad verdicts in a row when every request failed,
    /// else the requests of the window it was judged on.
    pub consecutive: u64,
    /// When the report that caused it was made.
    pub at: SystemTime,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} -> {} ({}, ",
            self.backend.escape_debug(),
            self.from,
            self.to,
            self.reason,
        )?;
        match self.evidence {
            Evidence::Probes => write!(f, "{} in a row)", self.consecutive),
            Evidence::Traffic if self.consecutive == 1 => f.write_str("traffic: 1 request)"),
            Evidence::Traffic => write!(f, "traffic: {} requests)", self.consecutive),
        }
    }
}

/// The kind of evidence behind a status change.
///
/// # Example
///
/// ```
/// use tower_health_classify::Evidence;
///
/// assert_eq!(Evidence::Traffic.as_str(), "traffic");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Evidence {
    /// Probes (requests with the [`Probe`](crate::Probe) extension), judged by counts in
    /// a row.
    Probes,
    /// Callers' requests, judged by failure rates over the traffic window.
    Traffic,
}

impl Evidence {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Probes => "probes",
            Evidence::Traffic => "traffic",
        }
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transitions of every backend of a registry, from the moment of
/// [`HealthRegistry::subscribe`](crate::HealthRegistry::subscribe) on.
///
/// Reports never wait for subscribers: a subscriber that falls more than 1,024
/// transitions behind misses the oldest ones, and [`missed`](Self::missed) counts them.
#[derive(Debug)]
pub struct Transitions {
    receiver: broadcast::Receiver<Transition>,
    missed: u64,
}

impl Transitions {
    pub(crate) fn new(receiver: broadcast::Receiver<Transition>) -> Self {
        Transitions {
            receiver,
            missed: 0,
        }
    }

    /// The next transition; `None` once the registry and every handle are gone.
    pub async fn recv(&mut self) -> Option<Transition> {
        loop {
            match self.receiver.recv().await {
                Ok(transition) => return Some(transition),
                Err(broadcast::error::RecvError::Lagged(n)) => self.missed += n,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next transition if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Transition> {
        loop {
            match self.receiver.try_recv() {
                Ok(transition) => return Some(transition),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.missed += n,
                Err(_) => return None,
            }
        }
    }

    /// How many transitions this subscriber missed by falling behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TransportKind;

    #[test]
    fn display_says_which_evidence_made_the_change() {
        let transition = |evidence, consecutive| Transition {
            backend: "api\n".into(),
            from: HealthStatus::Healthy,
            to: HealthStatus::Unhealthy,
            reason: Reason::Transport(TransportKind::Reset),
            evidence,
            consecutive,
            at: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(
            transition(Evidence::Probes, 3).to_string(),
            r"api\n: healthy -> unhealthy (reset, 3 in a row)"
        );
        assert_eq!(
            transition(Evidence::Traffic, 20).to_string(),
            r"api\n: healthy -> unhealthy (reset, traffic: 20 requests)"
        );
        assert_eq!(
            transition(Evidence::Traffic, 1).to_string(),
            r"api\n: healthy -> unhealthy (reset, traffic: 1 request)"
        );
    }
}
