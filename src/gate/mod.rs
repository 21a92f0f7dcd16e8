//! Acting on health: a gate that fails fast while its backend is Bad, and lets one trial
//! request through per backoff interval.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_health_classify::{
//!     AuthStrategy, HealthClassifyLayer, HealthGateLayer, HealthRegistry,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = HealthRegistry::default();
//! let search = registry.register("search", AuthStrategy::Unauthenticated);
//! let client = service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
//!
//! // Gate -> HealthClassify -> Timeout -> client
//! let service = ServiceBuilder::new()
//!     .layer(HealthGateLayer::new(search.clone()))
//!     .layer(HealthClassifyLayer::new(search))
//!     .timeout(Duration::from_secs(10))
//!     .service(client);
//! assert!(service.oneshot(Request::new(())).await.is_ok());
//! # }
//! ```
//!
//! # Where it goes: outside the classify layer
//!
//! `HealthGate -> HealthClassify -> Timeout -> client`. A request the gate holds back
//! never reaches the classify layer, so it is not reported at all: nothing was sent,
//! and the backend's counters and traffic window see only real exchanges. A trial
//! request goes through the classify layer like any other, so its result is reported
//! (as traffic) and helps decide whether the backend is still Bad. With the gate inside
//! the classify layer instead, a held-back request would reach it as
//! [`BackendError::NotSent`](crate::BackendError::NotSent), classified
//! `Local(NotSent)`: no verdict, nothing counted, but each one a report.
//!
//! # Under a balancer: not ready instead of failing
//!
//! [`not_ready_while_bad`](HealthGateLayer::not_ready_while_bad) turns a Bad backend
//! into a service that is not ready, the pattern linkerd's balancer relies on: tower's
//! `Balance` (p2c) only sends to endpoints whose `poll_ready` is ready, so it routes
//! around a Bad endpoint without knowing about health. The gate wakes the balancer's
//! task when the endpoint's status changes and when a trial is due; it is then ready
//! for one call, the trial. When every endpoint is Bad, though, such a balancer is not
//! ready at all and callers wait: put a timeout in front, or use
//! [`HealthDiscover`](crate::HealthDiscover) (feature `balance`), which removes Bad
//! endpoints from the balancer and puts them all back (fails open) when too many are
//! Bad.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::balance::p2c::Balance;
//! use tower::discover::ServiceList;
//! use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_health_classify::{AuthStrategy, HealthClassifyLayer, HealthGateLayer, HealthRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = HealthRegistry::default();
//! let endpoints = ["search@10.0.0.1", "search@10.0.0.2"].map(|name| {
//!     let handle = registry.register(name, AuthStrategy::Unauthenticated);
//!     let client = service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
//!     let classified = HealthClassifyLayer::new(handle.clone()).layer(client);
//!     HealthGateLayer::new(handle).not_ready_while_bad().layer(classified)
//! });
//! let discover = PendingRequestsDiscover::new(ServiceList::new(endpoints), CompleteOnResponse::default());
//! let balance = Balance::new(discover);
//! assert!(balance.oneshot(Request::new(())).await.is_ok());
//! # }
//! ```

mod future;
mod layer;
mod service;
mod trials;

pub use self::future::ResponseFuture;
pub use self::layer::HealthGateLayer;
pub use self::service::HealthGate;
