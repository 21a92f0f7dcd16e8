//! The proxy assembled: the registry, one service stack per backend, the prober, the
//! router, the server. [`start`] runs it on a listener; tests call it on an ephemeral
//! loopback port.
//!
//! # The stack of one backend
//!
//! ```text
//! caller ─► router ─► forward (hop-by-hop headers out, URI rewritten)
//!   ─► HealthGateLayer       while the backend is Bad: 503 at once, but for a trial per backoff
//!   ─► OutgoingAuthLayer     sets or strips credentials; marks Credentials::Sent for the gateway's own
//!   ─► HealthClassifyLayer   classifies and reports; pass-through, so 401/403 reach the caller;
//!                            judged streams, so a body that dies midway is reported too
//!   ─► Timeout               until the response head; the body then streams unbounded
//!   ─► BearerTokenLayer      token_exchange only: fetches (cached) and adds the token
//!   ─► hyper-util client     http://, or https:// through hyper-rustls (HTTP/2 by ALPN)
//! ```
//!
//! A backend with several URLs has one stack per endpoint below the balancer, and no gate
//! (it fails open instead): see `endpoints.rs`.
//!
//! Backends without a `ca_file` share one client (one connection pool, Mozilla's roots);
//! a backend with one gets its own client, trusting only that file's CAs, which its token
//! requests use too.
//!
//! Outgoing auth goes **outside** the classify layer: the layer decides "were credentials
//! sent?" when the request enters it, so it must see the request as the backend will
//! (the caller's `Authorization` already stripped for `unauthenticated`, the API key
//! already set for `header_injection`). Were it inside, a 401 to a stripped request would
//! be judged as if the caller's token had been sent. The token is the exception: getting
//! it may fail or take time, and such a failure must be reported against the backend and
//! bounded by the timeout like any other, so the token layer goes **inside**, and the
//! outer layer declares `Credentials::Sent` for it.
//!
//! Probes go through the same stack: the prober wraps what `make` returns in its own
//! classify layer and timeout, so `make` hands it `BearerToken<Client>` and a probe request
//! already prepared by the same `OutgoingAuth`, with the check of the probe's kind
//! (`mcp`, `oauth_metadata`; none for `http`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use http::{Request, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::util::Either;
use tower::{Layer, ServiceBuilder};
use tower_health_classify::check::{McpCheck, OAuthMetadataCheck};
use tower_health_classify::{
    HealthClassifyLayer, HealthDiscover, HealthGateLayer, HealthRegistry, Probe, ProbeCall, Prober,
    Transitions,
};

use crate::auth::{BearerToken, BearerTokenLayer, OutgoingAuth, OutgoingAuthLayer};
use crate::config::{self, Config, ProbeConfig, ProbeKind};
use crate::discovery;
use crate::endpoints::{self, EndpointService};
use crate::forward::{self, Client, Route, RouteService};
use crate::health::{self, HealthState};

/// A running proxy.
pub(crate) struct Gateway {
    addr: SocketAddr,
    registry: HealthRegistry,
    /// Subscribed before the first probe, so that no transition is missed.
    transitions: Option<Transitions>,
    prober: Prober,
    stop: oneshot::Sender<()>,
    server: JoinHandle<io::Result<()>>,
}

impl Gateway {
    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry holding every backend's health.
    /// Every transition since the gateway started; `None` once taken.
    pub(crate) fn take_transitions(&mut self) -> Option<Transitions> {
        self.transitions.take()
    }

    pub(crate) fn registry(&self) -> &HealthRegistry {
        &self.registry
    }

    /// Stops probing, stops accepting, and waits up to `grace` for requests in flight (an
    /// open event stream would otherwise hold the shutdown forever).
    pub(crate) async fn shutdown(self, grace: Duration) {
        self.prober.shutdown().await;
        let _ = self.stop.send(());
        let mut server = self.server;
        if tokio::time::timeout(grace, &mut server).await.is_err() {
            server.abort();
        }
    }
}

/// Everything a request handler needs.
#[derive(Clone)]
struct AppState {
    routes: Arc<HashMap<String, Route>>,
    health: HealthState,
}

impl axum::extract::FromRef<AppState> for HealthState {
    fn from_ref(state: &AppState) -> Self {
        state.health.clone()
    }
}

/// Set (to anything) to send traffic without `HealthClassifyLayer`; see `benches/e2e.sh`.
pub(crate) const WITHOUT_CLASSIFY_LAYER: &str = "PROXY_WITHOUT_CLASSIFY_LAYER";

/// Builds the proxy for `config` and serves it on `listener`. Probing starts at once.
pub(crate) fn start(config: &Config, listener: TcpListener) -> io::Result<Gateway> {
    let addr = listener.local_addr()?;
    // Before any traffic: a series is resolved when it is first used.
    let metrics = health::prometheus(health::idle_timeout(config.health.interval));
    let registry = HealthRegistry::new(config.health.policy.clone());
    // A connection that takes longer than a whole probe may is not worth waiting for.
    let shared = forward::client(config.health.timeout, None);

    // Only for `benches/e2e.sh`: traffic without the classify layer (probes keep it),
    // to measure what the layer costs a real proxy.
    let classify_traffic = std::env::var_os(WITHOUT_CLASSIFY_LAYER).is_none();
    let mut routes = HashMap::new();
    let mut probes = HashMap::new();
    let mut layout = Vec::new();
    for backend in &config.backends {
        let client = match &backend.ca {
            Some(ca) => forward::client(config.health.timeout, Some(&ca.roots)),
            None => shared.clone(),
        };
        let auth = OutgoingAuth::new(&backend.name, &backend.strategy, &client, backend.timeout);
        let inner = || {
            ServiceBuilder::new()
                .timeout(backend.timeout)
                .layer(BearerTokenLayer::new(auth.token_source()))
                .service(client.clone())
        };
        let probe = |url: &http::Uri| -> io::Result<ProbeTarget> {
            let uri =
                forward::upstream_uri(url, backend.probe.path.path(), backend.probe.path.query())
                    .map_err(io::Error::other)?;
            Ok(ProbeTarget {
                uri,
                probe: backend.probe.clone(),
                token: BearerTokenLayer::new(auth.token_source()),
                auth: auth.clone(),
                client: client.clone(),
            })
        };
        let (base, service, endpoints) = match backend.urls.as_slice() {
            [url] => {
                let handle = registry.register(backend.name.as_str(), auth.strategy());
                let traffic = if classify_traffic {
                    // Judged streams: an event stream that dies is the backend's failure.
                    Either::Left(
                        HealthClassifyLayer::new(handle.clone())
                            .pass_through_auth()
                            .classify_body()
                            .layer(inner()),
                    )
                } else {
                    Either::Right(forward::Untyped(inner()))
                };
                let service = forward::backend_service(auth.clone(), traffic);
                let service = if config.health.fail_fast {
                    Either::Left(HealthGateLayer::new(handle).layer(service))
                } else {
                    Either::Right(service)
                };
                probes.insert(backend.name.clone(), probe(url)?);
                (
                    url.clone(),
                    RouteService::One(Box::new(service)),
                    Vec::new(),
                )
            }
            urls => {
                let mut discover = HealthDiscover::new(backend.name.as_str());
                let mut endpoints = Vec::new();
                for url in urls {
                    let label = config::url_label(url);
                    let name = format!("{}@{label}", backend.name);
                    let handle = registry.register(name.as_str(), auth.strategy());
                    let base = url.clone();
                    let service = ServiceBuilder::new()
                        .map_request(move |request| endpoints::to_endpoint(&base, request))
                        .map_response(forward::to_body::<_>)
                        .layer(
                            HealthClassifyLayer::new(handle.clone())
                                .pass_through_auth()
                                .classify_body(),
                        )
                        .service(inner());
                    discover = discover.endpoint(
                        Arc::from(name.as_str()),
                        handle,
                        EndpointService::new(service),
                    );
                    probes.insert(name.clone(), probe(url)?);
                    endpoints.push(health::Endpoint { url: label, name });
                }
                let service =
                    OutgoingAuthLayer::new(auth.clone()).layer(endpoints::balanced(discover));
                (
                    http::Uri::from_static("/"),
                    RouteService::Endpoints(service),
                    endpoints,
                )
            }
        };
        routes.insert(
            backend.name.clone(),
            Route {
                name: backend.name.as_str().into(),
                base,
                urls: backend.urls.clone().into(),
                public: format!("{}/{}", config.public_url, backend.name).into(),
                service,
                credential_header: auth.credential_header().cloned(),
                timeout: backend.timeout,
            },
        );
        layout.push(health::Backend {
            name: backend.name.clone(),
            endpoints,
        });
    }

    let transitions = registry.subscribe();
    let prober = Prober::builder(registry.clone())
        .interval(config.health.interval)
        .jitter(config.health.jitter)
        .timeout(config.health.timeout)
        .spawn_checked(move |name: &str| probes.get(name).map(ProbeTarget::call));

    let state = AppState {
        routes: Arc::new(routes),
        health: HealthState {
            registry: registry.clone(),
            metrics,
            layout: Arc::new(layout),
        },
    };
    let app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/health/backends", get(health::backends))
        .route("/metrics", get(health::metrics))
        // Where RFC 9728 puts the metadata of `{public_url}/{backend}{path}`.
        .route(
            "/.well-known/oauth-protected-resource/{*rest}",
            any(root_metadata),
        )
        .route("/{backend}", any(proxy))
        .route("/{backend}/", any(proxy))
        .route("/{backend}/{*path}", any(proxy))
        .with_state(state);

    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Gateway {
        addr,
        registry,
        transitions: Some(transitions),
        prober,
        stop,
        server,
    })
}

/// What a backend's probe is made of.
struct ProbeTarget {
    uri: http::Uri,
    probe: ProbeConfig,
    auth: OutgoingAuth,
    token: BearerTokenLayer,
    client: Client,
}

impl ProbeTarget {
    /// The service and request `make` hands the prober, which adds its own classify layer
    /// and timeout around the service (the same stack as traffic), and the check of the
    /// probe's kind.
    fn call(&self) -> ProbeCall<BearerToken<Client>, Body> {
        let service = self.token.layer(self.client.clone());
        let prepared = |mut request: Request<Body>| {
            request.headers_mut().extend(self.probe.headers.clone());
            // The prober inserts it too, but only after `make`: `prepare` must see it now.
            request.extensions_mut().insert(Probe);
            self.auth.prepare(&mut request);
            request
        };
        match self.probe.kind {
            ProbeKind::Http => {
                let mut request = Request::new(Body::from(self.probe.body.clone()));
                *request.method_mut() = self.probe.method.clone();
                *request.uri_mut() = self.uri.clone();
                ProbeCall::new(service, prepared(request))
            }
            ProbeKind::Mcp => {
                ProbeCall::new(service, prepared(McpCheck::request(self.uri.clone())))
                    .check(McpCheck)
            }
            ProbeKind::OAuthMetadata => {
                let check = OAuthMetadataCheck::new(self.uri.clone());
                ProbeCall::new(service, prepared(check.request())).check(check)
            }
        }
    }
}

/// `/.well-known/oauth-protected-resource/{backend}{path}`: the metadata of
/// `{public_url}/{backend}{path}`, as at `/{backend}/.well-known/oauth-protected-resource{path}`.
async fn root_metadata(State(state): State<AppState>, request: Request<Body>) -> Response {
    let rest = request.uri().path()[discovery::WELL_KNOWN.len()..].trim_start_matches('/');
    let (name, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let Some(route) = state.routes.get(name) else {
        return unknown_backend(name);
    };
    discovery::metadata(route, request.method(), path, request.uri().query()).await
}

fn unknown_backend(name: &str) -> Response {
    forward::error_response(
        StatusCode::NOT_FOUND,
        "unknown_backend",
        name,
        None,
        "no backend has this name",
    )
}

/// `/{backend}`, `/{backend}/` and `/{backend}/{*path}`. The path is taken raw from the
/// URI, not from the decoded route parameters: a proxy forwards what it was sent.
async fn proxy(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response {
    let path = request.uri().path().trim_start_matches('/');
    let (name, rest) = match path.find('/') {
        Some(slash) => (&path[..slash], &path[slash..]),
        None => (path, ""),
    };
    let Some(route) = state.routes.get(name) else {
        return unknown_backend(name);
    };
    if let Some(path) = discovery::metadata_path(rest) {
        return discovery::metadata(route, request.method(), path, request.uri().query()).await;
    }
    let rest = rest.to_owned();
    forward::forward(route, request, &rest, Some(peer)).await
}
