//! `HealthRegistry`: the backends, their state machines, and who is told of changes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use super::backend::{Backend, BackendHandle, Common};
use super::snapshot::{Snapshot, Summary};
use super::transition::Transitions;
use super::Policy;
use crate::verdict::{AuthStrategy, HealthStatus};

/// Per-backend health: a state machine per backend that logs transitions, not repeats.
///
/// [`register`](Self::register) a backend with its outgoing auth strategy and give the
/// returned [`BackendHandle`] to that backend's
/// [`HealthClassifyLayer`](crate::HealthClassifyLayer). Every report moves the backend's
/// state machine (see the crate docs for the table); every status change is logged once
/// (`WARN` into Unhealthy or Unauthenticated, `INFO` otherwise) and sent to
/// [`subscribe`](Self::subscribe)rs. While a backend stays Unhealthy or Unauthenticated,
/// a `WARN` reminder comes at most once per reminder interval (1 min, doubling up to
/// 1 h, by default); everything else is logged at `DEBUG`.
///
/// Cheap to clone: clones share the same backends.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_health_classify::{
///     AuthStrategy, HealthClassifyLayer, HealthRegistry, HealthStatus, Phase, Policy, Probe,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = HealthRegistry::new(Policy::default());
/// let mut transitions = registry.subscribe();
///
/// // An OAuth-protected backend; the gateway forwards each user's own token.
/// let github = registry.register("github", AuthStrategy::UpstreamInject);
/// let client = service_fn(|_req: Request<()>| async {
///     let challenge = r#"Bearer resource_metadata="https://github.example/.well-known/oauth-protected-resource""#;
///     Ok::<_, Infallible>(
///         Response::builder()
///             .status(StatusCode::UNAUTHORIZED)
///             .header("www-authenticate", challenge)
///             .body(())
///             .unwrap(),
///     )
/// });
/// let service = ServiceBuilder::new()
///     .layer(HealthClassifyLayer::new(github.clone()).pass_through_auth())
///     .service(client);
///
/// // A probe without credentials gets the challenge: the backend is up.
/// let mut probe = Request::new(());
/// probe.extensions_mut().insert(Probe);
/// let response = service.oneshot(probe).await.unwrap();
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
///
/// assert_eq!(registry.status("github"), Some(HealthStatus::Healthy));
/// let transition = transitions.recv().await.unwrap();
/// assert_eq!(transition.to, HealthStatus::Healthy);
/// assert_eq!(transition.reason.as_str(), "expected_challenge");
///
/// let snapshot = registry.snapshot();
/// assert_eq!(snapshot.phase, Phase::Ready);
/// assert_eq!(snapshot.backends[0].checks, 1);
///
/// // Users now need no token: from the next report on, a 401 means "no auth configured".
/// assert!(registry.set_strategy("github", AuthStrategy::Unauthenticated));
/// assert_eq!(github.status(), HealthStatus::Healthy, "history is not rewritten");
/// # }
/// ```
#[derive(Clone)]
pub struct HealthRegistry {
    common: Arc<Common>,
    backends: Arc<RwLock<BTreeMap<Arc<str>, Arc<Backend>>>>,
}

impl HealthRegistry {
    /// An empty registry judging with `policy`.
    pub fn new(policy: Policy) -> Self {
        HealthRegistry {
            common: Arc::new(Common::new(policy)),
            backends: Arc::default(),
        }
    }

    /// The policy this registry judges with.
    pub fn policy(&self) -> &Policy {
        &self.common.policy
    }

    /// Registers a backend (status `Unknown`) and returns the sink that reports to it.
    ///
    /// Registering a name that is already registered returns a handle to the same
    /// backend, with its state kept and its strategy set to `strategy`.
    pub fn register(&self, name: impl Into<Arc<str>>, strategy: AuthStrategy) -> BackendHandle {
        let name = name.into();
        let mut backends = self
            .backends
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(backend) = backends.get(&name) {
            backend.set_strategy(strategy);
            return BackendHandle {
                backend: backend.clone(),
            };
        }
        let backend = Arc::new(Backend::new(name.clone(), strategy, self.common.clone()));
        backends.insert(name, backend.clone());
        drop(backends);
        self.common.membership_changed();
        BackendHandle { backend }
    }

    /// Changes a backend's outgoing auth strategy. It takes effect on the next report and
    /// keeps the backend's status and counters. Returns `false` if no backend has that
    /// name.
    #[must_use = "false means no backend has that name"]
    pub fn set_strategy(&self, name: &str, strategy: AuthStrategy) -> bool {
        match self.get(name) {
            Some(backend) => {
                backend.set_strategy(strategy);
                true
            }
            None => false,
        }
    }

    /// Removes a backend. Reports its handles make afterwards are dropped; registering
    /// the name again starts afresh. Returns `false` if no backend has that name.
    pub fn remove(&self, name: &str) -> bool {
        let removed = {
            let mut backends = self
                .backends
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let removed = backends.remove(name);
            // Under the map's lock: a backend registered again under the same name must
            // not see this one's last words (its metrics, its status).
            if let Some(backend) = &removed {
                backend.remove();
            }
            removed.is_some()
        };
        if removed {
            self.common.membership_changed();
        }
        removed
    }

    /// A backend's status; `None` if no backend has that name.
    pub fn status(&self, name: &str) -> Option<HealthStatus> {
        self.get(name).map(|backend| backend.status())
    }

    /// A handle to a registered backend.
    pub fn handle(&self, name: &str) -> Option<BackendHandle> {
        self.get(name).map(|backend| BackendHandle { backend })
    }

    /// The names of the registered backends, sorted.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.read().keys().cloned().collect()
    }

    /// Every backend's health, sorted by name, with the summary and phase.
    pub fn snapshot(&self) -> Snapshot {
        let backends: Vec<_> = self.read().values().map(|b| b.health()).collect();
        let mut summary = Summary::default();
        for backend in &backends {
            summary.add(backend.status);
        }
        Snapshot {
            backends,
            summary,
            phase: summary.phase(),
        }
    }

    /// How many backends are in each status. Reads only atomics per backend.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for backend in self.read().values() {
            summary.add(backend.status());
        }
        summary
    }

    /// Every status change of every backend from now on.
    pub fn subscribe(&self) -> Transitions {
        Transitions::new(self.common.transitions.subscribe())
    }

    /// A handle to every registered backend, sorted by name.
    #[cfg(feature = "probe")]
    pub(crate) fn handles(&self) -> Vec<BackendHandle> {
        self.read()
            .values()
            .map(|backend| BackendHandle {
                backend: backend.clone(),
            })
            .collect()
    }

    /// Changes whenever a backend is added or removed (not when one is registered again
    /// or its strategy changes). Mark the value seen before reading the backends.
    #[cfg(feature = "probe")]
    pub(crate) fn membership(&self) -> tokio::sync::watch::Receiver<u64> {
        self.common.membership.subscribe()
    }

    fn get(&self, name: &str) -> Option<Arc<Backend>> {
        self.read().get(name).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Arc<str>, Arc<Backend>>> {
        self.backends.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        HealthRegistry::new(Policy::default())
    }
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthRegistry")
            .field("policy", &self.common.policy)
            .field("backends", &self.names())
            .finish()
    }
}
