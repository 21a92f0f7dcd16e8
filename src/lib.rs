//! Tower middleware that tells whether an HTTP backend is healthy, given how the gateway
//! authenticates to it.
//!
//! [`HealthClassifyLayer`] wraps any backend service (a hyper-util client, an axum proxy,
//! any `Service<http::Request<B>>`). It classifies every exchange on structure, not on
//! error text: the status code, the parsed `WWW-Authenticate` challenges (RFC 9110,
//! RFC 6750 Bearer errors, RFC 9728 `resource_metadata`) and the typed transport error
//! chain. It judges the exchange with the backend's outgoing [`AuthStrategy`] and whether
//! the request carried credentials, reports it to a [`HealthSink`], and returns 401/403/407
//! and transport failures as a typed [`BackendError`].
//!
//! The point: a background probe without user credentials that gets `401` and a Bearer
//! challenge from an OAuth-protected backend has proven the backend is up. It is
//! [`Healthy`](HealthStatus::Healthy) with reason `expected_challenge`, not a failure to
//! log every 30 seconds.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_health_classify::{
//!     sink_fn, AuthStrategy, BackendError, HealthClassifyLayer, HealthStatus, Reason,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Stands in for a hyper-util client talking to an OAuth-protected MCP server.
//! let client = service_fn(|_req: Request<String>| async {
//!     Ok::<_, Infallible>(
//!         Response::builder()
//!             .status(StatusCode::UNAUTHORIZED)
//!             .header(
//!                 "www-authenticate",
//!                 r#"Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource""#,
//!             )
//!             .body(String::new())
//!             .unwrap(),
//!     )
//! });
//!
//! // The gateway forwards each user's own token to this backend.
//! let sink = sink_fn(AuthStrategy::UpstreamInject, |report| {
//!     let verdict = report.verdict.unwrap();
//!     assert_eq!(verdict.status, HealthStatus::Healthy);
//!     assert_eq!(verdict.reason, Reason::ExpectedChallenge);
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(HealthClassifyLayer::new(sink))
//!     .timeout(Duration::from_secs(10))
//!     .service(client);
//!
//! // A probe without credentials.
//! match service.oneshot(Request::new(String::new())).await {
//!     Err(BackendError::Auth(auth)) => assert_eq!(
//!         auth.resource_metadata(),
//!         Some("https://mcp.example/.well-known/oauth-protected-resource"),
//!     ),
//!     other => panic!("expected an auth error, got {other:?}"),
//! }
//! # }
//! ```
//!
//! # What the layer returns
//!
//! - Typed mode (the default): 401, 403 and 407 become [`BackendError::Auth`]; inner errors
//!   become the matching [`BackendError`] variant with the original error as `source()`.
//!   Every other response is returned unchanged.
//! - [`pass_through_auth`](HealthClassifyLayer::pass_through_auth) (for proxies): 401, 403
//!   and 407 responses are returned unchanged so the challenge reaches the client; they
//!   are still classified and reported.
//! - In both modes, every [`Outcome`] other than a plain success is inserted into the
//!   response extensions, so outer layers can read it without classifying again. A plain
//!   success is not inserted, so that the success path does not allocate.
//! - Exactly one report per call that completes; a future dropped early reports
//!   [`Outcome::Cancelled`], which never counts against the backend. Readiness errors of
//!   the inner service are classified and reported like call errors.
//! - Judged streams ([`classify_body`](HealthClassifyLayer::classify_body), opt-in): the
//!   response body is watched too. A body that fails after the head (reset, closed, a
//!   timeout while streaming) is reported once more, at the poll of the failing frame, as
//!   the backend's failure, and its error comes back as a [`BackendError`]. So a call
//!   reports twice exactly when its head was reported with a verdict that was not Bad and
//!   its body then fails; a clean end, or a body the caller drops, adds nothing. The
//!   registry counts the second report like any other.
//! - A sink that panics is caught and logged at `ERROR`: it loses its report, never the
//!   request.
//!
//! # Cost and clock
//!
//! The layer reads the clock twice per request, so it reads a cheap one: on Linux and
//! Android `CLOCK_MONOTONIC_COARSE` (about 6 ns, resolution one kernel tick, 1 to
//! 10 ms), enough for a slow threshold counted in seconds. A sink that records
//! latencies asks for [`precise_latency`](HealthSink::precise_latency), and the layer
//! then reads `CLOCK_MONOTONIC` (about 29 ns, 1 µs or better): a registry handle does
//! with feature `metrics` (its latency histogram) or a slow threshold under one second,
//! [`LogSink`] always. Feature `precise-clock` reads tokio's clock for both (it follows
//! paused time in tests); other platforms always do. On the success path with a
//! registry handle the layer allocates nothing and takes no lock; BENCHMARKS.md has the
//! figures.
//!
//! # Classification
//!
//! | what came back | [`Outcome`] |
//! |---|---|
//! | 1xx, 2xx, 3xx | `Success(status)` |
//! | 401 | `Auth(Unauthorized)` with every challenge of every `WWW-Authenticate` value |
//! | 403 | `Auth(Forbidden)` (with challenges, e.g. Bearer `error="insufficient_scope"`) |
//! | 407 | `Auth(ProxyAuthenticationRequired)` from `Proxy-Authenticate` |
//! | 408, 429 | `Throttled { status, retry_after }` (`Retry-After` seconds or HTTP date) |
//! | other 4xx | `ClientError(status)` |
//! | 5xx | `ServerError(status)` |
//! | connect refused | `Transport(ConnectionRefused)` |
//! | name resolution failed | `Transport(Dns)` |
//! | timeout while connecting / any other timeout | `Transport(ConnectTimeout)` / `Transport(Timeout)` |
//! | TLS handshake or certificate failure | `Transport(Tls)`, with its [`TlsFailure`] |
//! | peer closed before a full response | `Transport(Closed)` |
//! | connection reset, broken pipe | `Transport(Reset)` |
//! | host or network unreachable | `Transport(Unreachable)` |
//! | unparsable response | `Transport(Protocol)` |
//! | the caller dropped the future before it finished | `Cancelled` |
//! | load shed, invalid URI or scheme | `Local(..)` |
//! | anything else | the [`text`] fallback, else `Transport(Other)` |
//!
//! Errors are classified by walking their `source()` chain, stepping into
//! `io::Error::get_ref()` too (see [`classify_error`]). A TLS failure also names its
//! cause, a [`TlsFailure`] (certificate expired, unknown issuer, name mismatch, ...):
//! read from `rustls::Error` with feature `rustls`, else from the text of a library that
//! flattened it. It is in [`BackendError::Tls`], in [`HealthReport::tls_failure`], in
//! [`LogSink`]'s lines and in a snapshot's `last_error` (`tls certificate_expired`). A
//! client that is not a tower service reports its exchanges with an [`ExchangeReport`].
//! Challenge parsing is bounded: at most 16 challenges per response and 32 parameters
//! per challenge are kept, and the work is linear in the header bytes.
//!
//! # Verdicts
//!
//! `credentials`: the request carried `Authorization`, a configured
//! [`credential_header`](HealthClassifyLayer::credential_header), or the
//! [`Credentials::Sent`] extension. `origin`: [`Origin::Probe`] when the request carries
//! the [`Probe`] extension.
//!
//! | Outcome | verdict (status, reason) |
//! |---|---|
//! | Success, latency <= `slow_threshold` | Healthy, `ok` |
//! | Success, latency > `slow_threshold` | Degraded, `slow` |
//! | 401/403 and strategy `Unauthenticated` | Unauthenticated, `no_auth_configured` |
//! | 401/403, strategy configured, no credentials sent | Healthy, `expected_challenge` |
//! | 401/403, credentials sent, owner `Gateway` | Unauthenticated, `credentials_rejected` (403 `insufficient_scope`: `insufficient_scope`) |
//! | 401/403, credentials sent, owner `User` | Healthy, `user_credentials_rejected` |
//! | 401/403 to a caller's request (origin Traffic) where a probe's would be Bad, above | Healthy, `request_denied`: the caller chose the path and the token; the registry asks for a probe, which decides |
//! | 407 | Unhealthy, `proxy_auth_required` |
//! | Throttled | Degraded, `throttled` |
//! | ClientError, origin Traffic | Healthy, `ok` |
//! | ClientError, origin Probe | Unhealthy, `unexpected_status` |
//! | ServerError | Unhealthy, `server_error` |
//! | Transport(kind) | Unhealthy, the kind (`connection_refused`, `timeout`, ...) |
//! | Cancelled, Local | no verdict |
//!
//! See [`verdict`], a pure function.
//!
//! # Probes that read the answer
//!
//! A probe judged by its status misjudges protocol servers: an MCP server answers
//! `GET /` with 405, or 200 with a JSON-RPC error. With
//! [`ProberBuilder::spawn_checked`], each probe may carry a [`check::ProbeCheck`], a hook
//! that sees the status, the headers and up to 64 KiB of the body and gives the verdict.
//! Feature `mcp` adds two kinds built on it: [`check::McpCheck`] (`initialize` on the
//! streamable HTTP transport, the session it opens closed again) and
//! [`check::OAuthMetadataCheck`] (RFC 9728 metadata naming the backend). A checked probe
//! is still one report, origin `Probe`; its new reasons are `jsonrpc_error`, `not_mcp`,
//! `invalid_metadata` and `resource_mismatch`. The table of kinds is in [`check`].
//!
//! # Health registry
//!
//! [`HealthRegistry`] turns verdicts into a status per backend. Good = Healthy verdict;
//! Soft = Degraded; Bad = Unhealthy or Unauthenticated. It weighs two kinds of evidence
//! differently ([`Policy`] holds the numbers; defaults in brackets):
//!
//! | evidence | what it is | judged by |
//! |---|---|---|
//! | probes | requests with the [`Probe`] extension ([`Prober`] sends them): built to succeed, carrying the gateway's own credentials | counts in a row: `unhealthy_threshold` (3) Bad in a row, `healthy_threshold` (2) Good to come back, `degraded_threshold` (2) non-Good to degrade (table below) |
//! | traffic | every other request: a sample of what callers ask for | rates over a sliding window of `traffic_window` (30 s), once it holds `traffic_min_requests` (20): Unhealthy from `traffic_unhealthy_rate` (0.5) Bad, Degraded from `traffic_degraded_rate` (0.2) non-Good, else Healthy; a window with no failure vouches at any volume; `traffic_min_requests` Bad in a row is Unhealthy at once |
//!
//! The status is the worse of what the two say:
//!
//! | probes say | traffic says | status |
//! |---|---|---|
//! | nothing yet | nothing (no requests, or too few with failures) | unchanged (Unknown at first) |
//! | a status | nothing | what probes say |
//! | nothing yet | a status | what traffic says |
//! | a status | a status | the worse: Healthy, then Degraded, then Unhealthy, then Unauthenticated |
//!
//! So a backend whose probes fail is Bad however well its traffic goes (a gateway key it
//! stopped accepting is found by the next probe), and one whose callers see failures is
//! Bad though its health endpoint answers. Why a window for traffic: callers fail at
//! random, and counts in a row flip on chance (at 10% random failures and 100 requests
//! a second, five in a row happen four times an hour); a rate over a window with a
//! minimum volume, as Envoy's failure-percentage outlier detection judges, holds steady,
//! and its counters cost one atomic increment per request where an EWMA needs a
//! compare-and-swap loop. The window is two buckets of `traffic_window`, the older
//! weighted by how much of it is still within the window.
//!
//! What probes say, by their counts in a row:
//!
//! | from | on | to |
//! |---|---|---|
//! | any | `unhealthy_threshold` (3) Bad verdicts in a row | the latest Bad verdict's status (it may switch between Unhealthy and Unauthenticated while Bad) |
//! | Unhealthy, Unauthenticated | `healthy_threshold` (2) Good verdicts in a row | Healthy |
//! | Unhealthy, Unauthenticated | a Soft verdict | unchanged: Soft never recovers a Bad backend |
//! | Unknown, Healthy, Degraded | `degraded_threshold` (2) non-Good verdicts in a row, below the unhealthy threshold | Degraded |
//! | Unknown, Healthy, Degraded | one Good verdict | Healthy |
//! | any | a report without verdict (Cancelled, Local) | unchanged, counters untouched |
//!
//! Hysteresis and quiet:
//!
//! - A change made by traffic waits `hold_time` (30 s) after the previous change, except
//!   into Unhealthy when every request fails, and out of Unknown. Changes made by probes
//!   do not wait: their counts already did.
//! - Each change is one [`Transition`], sent to subscribers and counted in metrics. It
//!   is logged once (`WARN` into Unhealthy or Unauthenticated, `INFO` otherwise), up to
//!   `log_budget` (3) lines per backend per `log_interval` (10 min); a backend that
//!   changes more often is flapping, and logs one summary line per interval ("backend
//!   health changed 14 times in the last 10 min, now degraded") until it calms down.
//! - While a backend stays Bad, a `WARN` reminder comes at most once per interval, 1 min
//!   doubling up to 1 h, whether it switches between Unhealthy and Unauthenticated or
//!   not: a backend down for 24 h under 30 s probes logs 29 `WARN` lines, not 2,880
//!   (`tests/registry.rs`).
//!
//! Measured on paused time through the layer (`tests/traffic.rs`): 10% random 5xx at
//! 100 requests a second for an hour is 1 transition and 1 log line (it was 6,820 of
//! each); every request failing is Unhealthy after 0.19 s with one `WARN`, and Healthy
//! again 45 s after the failures stop, without a prober.
//!
//! A report that moves only counters waits on no lock and allocates nothing: a Good
//! traffic verdict on a Healthy backend is one atomic increment, every other report a
//! few more atomics. Only a report that changes the status (or what probes say) takes
//! the backend's lock, and log lines are written after it is released.
//!
//! The registry as a whole has a [`Phase`] ([`Summary::phase`], [`Snapshot::phase`]),
//! what a gateway's own health endpoint answers a load balancer with:
//!
//! | phase | when | serving ([`Phase::is_serving`]) |
//! |---|---|---|
//! | `empty` | no backend registered | no |
//! | `pending` | no backend has a verdict yet | no |
//! | `ready` | every backend Healthy | yes |
//! | `degraded` | some backend not Healthy, and some Healthy or Degraded | yes |
//! | `failed` | no backend Healthy or Degraded, and some with a verdict | no |
//!
//! Every backend Degraded is `degraded`, not `failed`: a Degraded backend is slow,
//! throttled or failing now and then, but it answers. Taking the gateway out of a load
//! balancer for that turns a slowdown into an outage, and at once for every replica,
//! since they all see the same backends. `failed` means nothing behind the gateway can
//! serve a request.
//!
//! # Acting on health
//!
//! [`HealthGateLayer`] fails fast while a backend is Bad: calls return
//! [`BackendError::NotSent`] at once and nothing is sent, but for one trial request per
//! backoff interval; while the backend is not Bad it decides with one atomic load. The stack is
//! `HealthGate -> HealthClassify -> Timeout -> client`, the gate outside, so that a
//! request it holds back is never reported (see [`gate`]). For a backend with several
//! endpoints, [`HealthDiscover`] (feature `balance`) feeds tower's `Balance` the
//! endpoints that are not Bad and fails open when too many are, and [`ConnectFailover`]
//! sends a request that failed to connect to another one.
//!
//! # With axum
//!
//! The layer's error is [`BackendError`], not `Infallible`, and axum routes only
//! infallible services: put axum's [`HandleErrorLayer`] outermost to turn the error into
//! a response. Put `Timeout` inside the layer, so that a timeout reaches the handler as
//! [`BackendError::Timeout`] (and is reported as one) rather than as tower's `BoxError`.
//! Add [`pass_through_auth`](HealthClassifyLayer::pass_through_auth) to forward the
//! backend's 401 and its challenge to the client instead. `examples/axum.rs` runs both
//! modes and a handler that calls the layered client with `?`.
//!
//! [`HandleErrorLayer`]: https://docs.rs/axum/0.8/axum/error_handling/struct.HandleErrorLayer.html
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::error_handling::HandleErrorLayer;
//! use axum::extract::Request;
//! use axum::http::{header, StatusCode};
//! use axum::Router;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower::ServiceBuilder;
//! use tower_health_classify::{AuthStrategy, BackendError, HealthClassifyLayer, LogSink};
//!
//! // The body names the problem; a credential the client sent can never be in it.
//! async fn to_response(error: BackendError) -> (StatusCode, String) {
//!     match error {
//!         BackendError::Auth(auth) => (StatusCode::BAD_GATEWAY, auth.to_string()),
//!         error if error.is_timeout() => (StatusCode::GATEWAY_TIMEOUT, error.to_string()),
//!         error => (StatusCode::BAD_GATEWAY, error.to_string()),
//!     }
//! }
//!
//! // `/search/{rest}` goes to the backend's `/{rest}`.
//! fn to_backend(mut request: Request) -> Request {
//!     let path = request.uri().path_and_query().map_or("/", |path| path.as_str());
//!     let rest = path.strip_prefix("/search").unwrap_or(path);
//!     *request.uri_mut() = format!("http://127.0.0.1:8081{rest}").parse().unwrap();
//!     request.headers_mut().remove(header::HOST);
//!     request
//! }
//!
//! # #[tokio::main]
//! # async fn main() {
//! let client = Client::builder(TokioExecutor::new()).build_http::<axum::body::Body>();
//! let search = ServiceBuilder::new()
//!     .layer(HandleErrorLayer::new(to_response))
//!     .map_request(to_backend)
//!     .layer(HealthClassifyLayer::new(LogSink::new("search", AuthStrategy::TokenExchange)))
//!     .timeout(Duration::from_secs(10))
//!     .service(client);
//!
//! let app = Router::new().route_service("/search/{*rest}", search);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `registry` | yes | [`HealthRegistry`]: a state machine per backend that logs transitions, not repeats, with snapshots and a transition stream |
//! | `serde` | no | `Serialize` for [`Snapshot`] and the types it holds (snake_case JSON) |
//! | `precise-clock` | no | time exchanges with tokio's clock (about 28 ns a reading, nanosecond resolution, follows paused time) instead of the coarse monotonic clock (about 6 ns, 1 to 10 ms resolution) |
//! | `probe` | no | [`Prober`]: active probes of every registered backend on tokio tasks, at an interval with jitter and a per-probe timeout, judged by their status or by a [`check::ProbeCheck`] (implies `registry`) |
//! | `mcp` | no | the probe kinds that speak MCP: [`check::McpCheck`] and [`check::OAuthMetadataCheck`] (implies `probe`; adds `serde_json`) |
//! | `hyper-util` | no | recognises `hyper_util::client::legacy::Error` in error chains: connect-phase timeouts become `ConnectTimeout`, client misuse becomes `Local(InvalidRequest)` |
//! | `rustls` | no | recognises `rustls::Error` in error chains: `Transport(Tls)` with its [`TlsFailure`] (expired, not yet valid, unknown issuer, name mismatch, revoked, client certificate required, not TLS, handshake failure). Adds rustls alone, without a crypto provider |
//! | `retry` | no | `RetryPolicy`, a `tower::retry::Policy` that reads the layer's outcomes: connect failures retried for any method, dropped connections and 502/503/504 for idempotent ones, `Retry-After` honoured up to a cap, backoff with jitter and a retry budget |
//! | `metrics` | no | the registry's per-backend status gauge, transition and report counters and latency histogram, through the `metrics` facade (implies `registry`; see [`metrics`] and below) |
//! | `tower-http` | no | [`NotHealthyAsFailures`], a `tower_http::classify::MakeClassifier`: `TraceLayer`'s `on_failure` sees the exchanges this crate does not judge Healthy, not the expected challenges |
//! | `balance` | no | [`HealthDiscover`]: a `tower::discover::Discover` of a backend's endpoints that are not Bad, for tower's `Balance`, failing open when more than half are out; [`ConnectFailover`], which sends a request that failed to connect once more, to another endpoint (adds tower's `balance` and `retry`) |
//!
//! # Metrics
//!
//! With feature `metrics`, every backend of a [`HealthRegistry`] records, through the
//! [`metrics`](::metrics) facade (install the recorder before traffic starts):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `backend_health_status` | gauge, `1` for the current status and `0` for the others the backend has been in | `backend`, `status` |
//! | `backend_health_transitions_total` | counter | `backend`, `from`, `to` |
//! | `backend_health_reports_total` | counter | `backend`, `outcome`, `reason` |
//! | `backend_health_latency_seconds` | histogram | `backend` |
//!
//! Label values are the backend's registered name and this crate's fixed snake_case
//! names: never a header, an error message or anything else a request or a backend
//! controls. A series is created when the backend first uses it (a new backend has only
//! its `unknown` gauge), so alert on the status gauge rather than on a counter's first
//! increment; an exporter's idle timeout, with [`metrics::keep_alive`] before each
//! render, drops the series of removed backends.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "registry", feature = "retry"))]
mod backoff;
#[cfg(feature = "balance")]
mod balance;
pub mod body;
#[cfg(feature = "probe")]
pub mod check;
mod classify;
mod clock;
mod error;
pub mod future;
#[cfg(feature = "registry")]
pub mod gate;
mod layer;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "probe")]
mod probe;
#[cfg(feature = "registry")]
mod registry;
#[cfg(feature = "retry")]
mod retry;
mod service;
mod sink;
#[cfg(feature = "tower-http")]
mod trace;
mod verdict;

#[cfg(feature = "balance")]
pub use crate::balance::{ConnectFailover, Endpoint, EndpointFuture, HealthDiscover};
pub use crate::classify::{
    classify_error, classify_response, parse_challenges, text, BearerError, Challenge, Classifier,
    DefaultClassifier, Outcome,
};
pub use crate::error::{AuthError, BackendError, BoxError, LocalKind, TlsFailure, TransportKind};
#[cfg(feature = "registry")]
pub use crate::gate::{HealthGate, HealthGateLayer};
pub use crate::layer::HealthClassifyLayer;
#[cfg(feature = "probe")]
pub use crate::probe::{ProbeCall, Prober, ProberBuilder};
#[cfg(feature = "registry")]
pub use crate::registry::{
    BackendHandle, BackendHealth, Evidence, HealthRegistry, Phase, Policy, PolicyError, Snapshot,
    Summary, Transition, Transitions,
};
#[cfg(feature = "retry")]
pub use crate::retry::{RetryDelay, RetryPolicy};
pub use crate::service::HealthClassify;
pub use crate::sink::{sink_fn, ExchangeReport, HealthReport, HealthSink, LogSink, SinkFn};
#[cfg(feature = "tower-http")]
pub use crate::trace::{ClassifyExchange, HealthFailure, NotHealthyAsFailures};
pub use crate::verdict::{
    verdict, AuthStrategy, CredentialOwner, Credentials, HealthStatus, Origin, Probe, Reason,
    Verdict, DEFAULT_SLOW_THRESHOLD,
};
