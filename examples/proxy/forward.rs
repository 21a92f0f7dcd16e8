//! Forwarding: one request from the caller to a backend and the answer back, streamed
//! both ways, with the connection's own headers removed and failures turned into small
//! JSON answers (502, 504).

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::uri::PathAndQuery;
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version,
};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use tower::timeout::Timeout;
use tower::util::{Either, MapResponse};
use tower::ServiceExt;
use tower_health_classify::body::{ClassifyBody, ResponseBody};
use tower_health_classify::{
    BackendError, BackendHandle, DefaultClassifier, HealthClassify, HealthGate, LocalKind,
};

use crate::auth::{BearerToken, OutgoingAuthService};
use crate::config::HOP_BY_HOP;
use crate::token::TokenError;

/// The HTTP client of the backends that trust the same roots, and of their token
/// endpoints (one connection pool per client: see [`client`]).
pub(crate) type Client = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Body>;

/// Below the classify layer: the timeout, the token, the client.
pub(crate) type Inner = Timeout<BearerToken<Client>>;

/// The classify layer over [`Inner`], judging streams too: a body that dies mid-stream
/// is reported against the backend.
pub(crate) type Classified = HealthClassify<Inner, BackendHandle, DefaultClassifier, ClassifyBody>;

/// The response of the classify layer: its body is watched.
pub(crate) type ClassifiedResponse =
    Response<ResponseBody<Incoming, BackendHandle, DefaultClassifier>>;

/// What a route sends a request through: outgoing auth, the classify layer, the timeout,
/// the token, the client (see `gateway` for why in this order), with the response body
/// made an axum `Body`. The right side, traffic without the classify layer, exists only
/// to measure the layer's cost end to end (`benches/e2e.sh`); its errors are typed the
/// same way, without a report.
pub(crate) type BackendService = OutgoingAuthService<
    Either<
        MapResponse<Classified, fn(ClassifiedResponse) -> Response<Body>>,
        MapResponse<Untyped<Inner>, fn(Response<Incoming>) -> Response<Body>>,
    >,
>;

/// The route's service: outgoing auth over `traffic`, the classify layer (or, for the
/// bench, none), answering with axum bodies.
pub(crate) fn backend_service(
    auth: crate::auth::OutgoingAuth,
    traffic: Either<Classified, Untyped<Inner>>,
) -> BackendService {
    let service = match traffic {
        Either::Left(classified) => Either::Left(MapResponse::new(
            classified,
            to_body as fn(ClassifiedResponse) -> Response<Body>,
        )),
        Either::Right(untyped) => Either::Right(MapResponse::new(
            untyped,
            to_body as fn(Response<Incoming>) -> Response<Body>,
        )),
    };
    tower::Layer::layer(&crate::auth::OutgoingAuthLayer::new(auth), service)
}

/// A response with its body streamed as an axum `Body`.
pub(crate) fn to_body<B>(response: Response<B>) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    response.map(Body::new)
}

/// What a route sends through: for one URL, the backend's stack behind the gate (without
/// it when `fail_fast = false`); for several, outgoing auth over the balanced endpoints
/// (`endpoints`).
#[derive(Clone)]
pub(crate) enum RouteService {
    // Boxed: a route is cloned per request, and this variant is four times the other.
    One(Box<Either<HealthGate<BackendService>, BackendService>>),
    Endpoints(OutgoingAuthService<crate::endpoints::Endpoints>),
}

impl RouteService {
    pub(crate) async fn send(self, request: Request<Body>) -> Result<Response<Body>, BackendError> {
        match self {
            RouteService::One(service) => service.oneshot(request).await,
            RouteService::Endpoints(service) => crate::endpoints::send(service, request).await,
        }
    }
}

/// One backend, as the router sees it.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    /// `http(s)://host:port` and the base path (`/` or `/api`); only `/` for a backend
    /// with several endpoints, each of which puts its own in front.
    pub(crate) base: Uri,
    /// The backend's URL, or each of its endpoints' (`discovery` matches them).
    pub(crate) urls: Arc<[Uri]>,
    /// `{public_url}/{name}`: where clients reach this backend through the proxy.
    pub(crate) public: Arc<str>,
    pub(crate) service: RouteService,
    /// Removed from responses: the header the gateway's credential travels in.
    pub(crate) credential_header: Option<HeaderName>,
    pub(crate) timeout: Duration,
}

/// Removes the headers that belong to one connection: those the `Connection` header names,
/// then the fixed list (RFC 9110 §7.6.1, plus `Proxy-Connection` and the proxy-auth pair).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The backend URI for `rest` (what follows `/{backend}`, possibly empty) and `query`.
pub(crate) fn upstream_uri(
    base: &Uri,
    rest: &str,
    query: Option<&str>,
) -> Result<Uri, http::Error> {
    let prefix = base.path().trim_end_matches('/');
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match query {
        Some(query) => format!("{prefix}{rest}?{query}"),
        None => format!("{prefix}{rest}"),
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query)?);
    Ok(Uri::from_parts(parts)?)
}

/// Forwards `request`, whose path after `/{backend}` is `rest`, to `route`.
pub(crate) async fn forward(
    route: &Route,
    mut request: Request<Body>,
    rest: &str,
    peer: Option<SocketAddr>,
) -> Response<Body> {
    let uri = match upstream_uri(&route.base, rest, request.uri().query()) {
        Ok(uri) => uri,
        Err(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &route.name,
                None,
                "the request path cannot be forwarded",
            )
        }
    };
    // HTTP/2 callers send the host as the URI's authority, not as a header.
    let original_host = request.headers().get(header::HOST).cloned().or_else(|| {
        let authority = request.uri().authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    // The client sets Host from the backend's URI, as a reverse proxy should.
    headers.remove(header::HOST);
    if let Some(peer) = peer {
        append_forwarded_for(headers, peer);
    }
    if let Some(host) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    *request.uri_mut() = uri;
    // The caller may speak HTTP/2 to the proxy; the backend connection is HTTP/1.1, or
    // HTTP/2 when an https:// backend chose it through ALPN (the client sends the
    // request in whatever its connection speaks).
    *request.version_mut() = Version::HTTP_11;

    let method = request.method().clone();
    let result = route.service.clone().send(request).await;
    let response = match result {
        Ok(response) => response_to_caller(response, route),
        Err(error) => failure_response(route, &error),
    };
    tracing::debug!(
        backend = %route.name,
        %method,
        // The path only: a query may carry a token.
        path = rest,
        status = response.status().as_u16(),
        "proxied"
    );
    response
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let value = match headers
        .get(HeaderName::from_static("x-forwarded-for"))
        .and_then(|v| v.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
}

/// The backend's response, its body streamed as it arrives. A challenge's
/// `resource_metadata` is pointed at the proxy (`discovery`).
pub(crate) fn response_to_caller(response: Response<Body>, route: &Route) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    // An intermediary answers in its own HTTP version (RFC 9110 §2.5): an HTTP/1.0
    // backend's would make hyper answer an HTTP/1.1 caller in 1.0 and close the
    // connection. hyper still answers an HTTP/1.0 caller in 1.0, and HTTP/2 ignores it.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(name) = &route.credential_header {
        parts.headers.remove(name);
    }
    if matches!(
        parts.status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        crate::discovery::rewrite_challenges(&mut parts.headers, route);
    }
    Response::from_parts(parts, body)
}

/// 502 for a backend that could not be reached or answered garbage, 504 for one that took
/// too long, 503 for one the gate held the request back from (it is Bad), each with a
/// small JSON body. Never says more than the failure's kind: an
/// error's text may hold a backend's words.
pub(crate) fn failure_response(route: &Route, error: &BackendError) -> Response<Body> {
    if let Some(token) = find_token_error(error) {
        let status = if error.is_timeout() {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::BAD_GATEWAY
        };
        return error_response(
            status,
            "token_exchange_failed",
            &route.name,
            Some(token.reason()),
            "the proxy could not get an access token for this backend",
        );
    }
    match error {
        BackendError::NotSent { status } => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_unhealthy",
            &route.name,
            Some(status.as_str()),
            &format!("the backend is {status}: the request was not sent"),
        ),
        BackendError::Timeout { .. } => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            &route.name,
            Some("timeout"),
            &format!(
                "the backend did not answer within {}",
                humanize(route.timeout)
            ),
        ),
        BackendError::Local {
            kind: LocalKind::Overloaded,
            ..
        } => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &route.name,
            Some("overloaded"),
            "the proxy is overloaded",
        ),
        BackendError::Local { kind, .. } => error_response(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            &route.name,
            Some(kind.as_str()),
            "the request could not be sent to the backend",
        ),
        BackendError::Tls { failure, .. } => error_response(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            &route.name,
            Some("tls"),
            &format!("the TLS handshake with the backend failed: {failure}"),
        ),
        BackendError::Transport { kind, .. } => error_response(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            &route.name,
            Some(kind.as_str()),
            "the backend could not be reached or gave no valid answer",
        ),
        _ => error_response(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            &route.name,
            None,
            "the backend could not be reached or gave no valid answer",
        ),
    }
}

fn find_token_error(error: &BackendError) -> Option<&TokenError> {
    let mut next = error.source();
    while let Some(current) = next {
        if let Some(token) = current.downcast_ref::<TokenError>() {
            return Some(token);
        }
        next = current.source();
    }
    None
}

/// A JSON error answer of the proxy's own.
pub(crate) fn error_response(
    status: StatusCode,
    error: &str,
    backend: &str,
    reason: Option<&str>,
    message: &str,
) -> Response<Body> {
    let mut body = serde_json::json!({ "error": error, "backend": backend, "message": message });
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `30s`, `1500ms`.
fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// A client for `http://` and `https://` URLs.
///
/// `https://`: rustls (on `ring`), trusting `roots` (a backend's `ca_file`), or else
/// Mozilla's roots compiled in (webpki-roots), so that trust is the same on every
/// machine and in containers without a CA bundle; the system store is not read. The
/// server name sent (SNI) and checked is the URL's host (an IP address is checked, never
/// sent). HTTP/2 when the backend offers it through ALPN, else HTTP/1.1. `http://` is
/// plain HTTP/1.1, as before.
pub(crate) fn client(connect_timeout: Duration, roots: Option<&Arc<RootCertStore>>) -> Client {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    // The TLS connector takes the https:// URLs and hands the http:// ones through.
    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match roots {
        Some(roots) => builder.with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        ),
        None => builder
            .with_provider_and_webpki_roots(provider)
            .expect("ring supports TLS 1.2 and 1.3"),
    };
    let connector = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Private"),
            ("connection", "x-other"),
            ("x-private", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic cHJveHk6cHJveHk="),
            ("proxy-authenticate", "Basic realm=\"proxy\""),
            ("authorization", "Bearer user"),
            ("content-type", "text/plain"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn upstream_uris_keep_the_base_path_the_rest_and_the_query() {
        let base: Uri = "http://127.0.0.1:9001/api".parse().unwrap();
        let root: Uri = "http://127.0.0.1:9001/".parse().unwrap();
        let cases: &[(&Uri, &str, Option<&str>, &str)] = &[
            (&base, "", None, "http://127.0.0.1:9001/api/"),
            (&base, "/", None, "http://127.0.0.1:9001/api/"),
            (
                &base,
                "/a/b",
                Some("x=1&y=%20"),
                "http://127.0.0.1:9001/api/a/b?x=1&y=%20",
            ),
            (&root, "", None, "http://127.0.0.1:9001/"),
            (&root, "/a%2Fb/", Some(""), "http://127.0.0.1:9001/a%2Fb/?"),
        ];
        for (base, rest, query, want) in cases {
            assert_eq!(
                upstream_uri(base, rest, *query).unwrap(),
                *want,
                "{rest} {query:?}"
            );
        }
    }

    #[test]
    fn durations_in_messages() {
        assert_eq!(humanize(Duration::from_secs(30)), "30s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1500ms");
    }
}

/// Traffic without the classify layer, for `benches/e2e.sh` only: errors are typed as the
/// layer would type them, and nothing is reported.
#[derive(Clone)]
pub(crate) struct Untyped<S>(pub(crate) S);

impl<S, R> tower::Service<R> for Untyped<S>
where
    S: tower::Service<R>,
    S::Error: Into<tower::BoxError>,
{
    type Response = S::Response;
    type Error = BackendError;
    type Future = UntypedFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BackendError>> {
        self.0
            .poll_ready(cx)
            .map_err(|e| BackendError::from_error(e.into()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        UntypedFuture {
            inner: self.0.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Untyped`].
    pub(crate) struct UntypedFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> std::future::Future for UntypedFuture<F>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<tower::BoxError>,
{
    type Output = Result<T, BackendError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map_err(|e| BackendError::from_error(e.into()))
    }
}
