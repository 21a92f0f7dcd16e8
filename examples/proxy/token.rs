//! `token_exchange`: an access token from the OAuth 2.0 client-credentials grant
//! (RFC 6749 §4.4), cached until shortly before it expires, fetched once for every caller
//! waiting on it.
//!
//! A failed fetch is returned as a [`TokenError`] whose `source()` is already classified
//! for `tower-health-classify`: the token endpoint refusing the client carries an
//! [`AuthError`] (so the backend is judged `unauthenticated`, `credentials_rejected`: the
//! gateway's own credentials do not work), an unreachable endpoint carries the client's
//! connect error (`connection_refused`, ...), and an unusable answer is `protocol`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tower_health_classify::{parse_challenges, AuthError, BackendError, TransportKind};

use crate::config::{ClientAuth, Secret};
use crate::forward::Client;

/// Refresh this long before expiry at most (and 10% of the lifetime for short tokens).
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// The lifetime assumed when the server does not say (`expires_in` is only RECOMMENDED).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Callers arriving this soon after a failed fetch get its error instead of a new fetch,
/// so a down token endpoint is asked once a second, not once per request.
const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// A token response larger than this is not a token response.
const MAX_RESPONSE: usize = 64 * 1024;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Fetch = dyn Fn() -> BoxFuture<Result<Token, TokenError>> + Send + Sync;

/// A token as the endpoint issued it.
#[derive(Clone)]
pub(crate) struct Token {
    /// `Bearer <access_token>`, marked sensitive.
    pub(crate) authorization: HeaderValue,
    /// `expires_in`, if the server said.
    pub(crate) lifetime: Option<Duration>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("authorization", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// Why no token could be had. Never holds a credential or a token. Cheap to clone: the
/// callers that waited on one failed fetch all get it.
///
/// Its `source()` is a [`BackendError`] or an [`AuthError`] (not behind an `Arc`, so that
/// the classify layer's chain walk recognises it and keeps its outcome).
#[derive(Clone)]
pub(crate) struct TokenError(Arc<Failure>);

enum Failure {
    /// The endpoint refused the client (400/401/403, RFC 6749 §5.2).
    Rejected {
        status: StatusCode,
        /// The `error` code of the answer, kept only if it is a plain code.
        code: Option<String>,
        auth: AuthError,
    },
    /// The endpoint could not be reached, or failed (5xx).
    Unavailable(BackendError),
    /// The answer was not a usable token response.
    Invalid {
        reason: &'static str,
        error: BackendError,
    },
}

impl TokenError {
    /// A snake_case word for logs and error bodies.
    pub(crate) fn reason(&self) -> &'static str {
        match &*self.0 {
            Failure::Rejected { .. } => "credentials_rejected",
            Failure::Unavailable(error) => error
                .transport_kind()
                .map_or("unavailable", TransportKind::as_str),
            Failure::Invalid { .. } => "invalid_token_response",
        }
    }

    fn unavailable(error: BackendError) -> Self {
        TokenError(Arc::new(Failure::Unavailable(error)))
    }

    fn invalid(reason: &'static str) -> Self {
        TokenError(Arc::new(Failure::Invalid {
            reason,
            error: BackendError::Transport {
                kind: TransportKind::Protocol,
                source: reason.into(),
            },
        }))
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Failure::Rejected { status, code, .. } => {
                write!(
                    f,
                    "token endpoint refused the client credentials (HTTP {status}"
                )?;
                if let Some(code) = code {
                    write!(f, ", {code}")?;
                }
                f.write_str(")")
            }
            Failure::Unavailable(error) => write!(f, "token endpoint unavailable: {error}"),
            Failure::Invalid { reason, .. } => {
                write!(f, "token endpoint sent an unusable answer: {reason}")
            }
        }
    }
}

impl fmt::Debug for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TokenError")
            .field(&format_args!("{self}"))
            .finish()
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(match &*self.0 {
            Failure::Rejected { auth, .. } => auth,
            Failure::Unavailable(error) | Failure::Invalid { error, .. } => error,
        })
    }
}

/// A token source shared by every clone: one cache, one fetch in flight at most.
#[derive(Clone)]
pub(crate) struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    /// The backend, for logs.
    backend: Arc<str>,
    fetch: Box<Fetch>,
    cached: RwLock<Option<Cached>>,
    /// Held while fetching: later callers wait on it, then find the new token.
    refresh: Mutex<Refresh>,
}

/// What fetching remembers between fetches.
#[derive(Default)]
struct Refresh {
    /// The latest failure, shared with the callers that come soon after it.
    failure: Option<(Instant, TokenError)>,
    /// Whether the failure was logged at WARN: once per run of failures.
    warned: bool,
}

#[derive(Clone)]
struct Cached {
    authorization: HeaderValue,
    refresh_at: Instant,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A source that gets its tokens with `fetch`.
    pub(crate) fn new<F, Fut>(backend: impl Into<Arc<str>>, fetch: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
    {
        TokenSource {
            inner: Arc::new(Inner {
                backend: backend.into(),
                fetch: Box::new(move || Box::pin(fetch())),
                cached: RwLock::new(None),
                refresh: Mutex::new(Refresh::default()),
            }),
        }
    }

    /// The client-credentials grant against `token_url`, through `client`.
    pub(crate) fn client_credentials(backend: &str, client: Client, grant: Grant) -> Self {
        let grant = Arc::new(grant);
        TokenSource::new(backend, move || {
            let (client, grant) = (client.clone(), grant.clone());
            async move { grant.fetch(&client).await }
        })
    }

    /// The `Authorization` value to send: the cached token, or a new one.
    pub(crate) async fn authorization(&self) -> Result<HeaderValue, TokenError> {
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        let mut refresh = self.inner.refresh.lock().await;
        // Whoever held the lock before may have fetched it.
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        if let Some((at, error)) = &refresh.failure {
            if at.elapsed() < FAILURE_HOLD {
                return Err(error.clone());
            }
        }
        let started = Instant::now();
        match (self.inner.fetch)().await {
            Ok(token) => {
                let lifetime = token.lifetime.unwrap_or(DEFAULT_LIFETIME);
                let margin = REFRESH_MARGIN.min(lifetime / 10);
                let refresh_at = started + lifetime.saturating_sub(margin);
                *self.write() = Some(Cached {
                    authorization: token.authorization.clone(),
                    refresh_at,
                });
                refresh.failure = None;
                if std::mem::take(&mut refresh.warned) {
                    tracing::info!(backend = %self.inner.backend, "token endpoint answers again");
                }
                tracing::debug!(
                    backend = %self.inner.backend,
                    expires_in = ?token.lifetime,
                    "fetched an access token"
                );
                Ok(token.authorization)
            }
            Err(error) => {
                // Once per run of failures; the registry reports the backend's state.
                if !std::mem::replace(&mut refresh.warned, true) {
                    tracing::warn!(backend = %self.inner.backend, %error, "token fetch failed");
                } else {
                    tracing::debug!(backend = %self.inner.backend, %error, "token fetch failed");
                }
                refresh.failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Forgets `rejected` if it is still the cached token: the backend refused it (revoked,
    /// rotated keys), so the next request fetches a new one instead of failing until expiry.
    pub(crate) fn reject(&self, rejected: &HeaderValue) {
        let mut cached = self.write();
        if cached
            .as_ref()
            .is_some_and(|c| c.authorization == *rejected)
        {
            *cached = None;
        }
    }

    fn fresh(&self) -> Option<HeaderValue> {
        let cached = self
            .inner
            .cached
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        cached
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.authorization.clone())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<Cached>> {
        self.inner
            .cached
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the client-credentials request needs.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) token_url: Uri,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
    pub(crate) scope: Option<String>,
    pub(crate) client_auth: ClientAuth,
    /// Bounds the whole exchange, body included.
    pub(crate) timeout: Duration,
}

impl Grant {
    async fn fetch(&self, client: &Client) -> Result<Token, TokenError> {
        let request = self.request();
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|error| TokenError::unavailable(BackendError::from_error(error.into())))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|error| TokenError::unavailable(BackendError::from_error(error)))?
                .to_bytes();
            token_from_response(parts.status, &parts.headers, &body)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(elapsed) => Err(TokenError::unavailable(BackendError::from_error(
                elapsed.into(),
            ))),
        }
    }

    fn request(&self) -> Request<Body> {
        let mut form = String::from("grant_type=client_credentials");
        let mut add = |name: &str, value: &str| {
            form.push('&');
            form.push_str(name);
            form.push('=');
            form.push_str(&form_encode(value));
        };
        if let Some(scope) = &self.scope {
            add("scope", scope);
        }
        let mut request = Request::new(Body::empty());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.token_url.clone();
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        match self.client_auth {
            ClientAuth::Basic => {
                // RFC 6749 §2.3.1: each part form-encoded, then joined and base64-encoded.
                let pair = format!(
                    "{}:{}",
                    form_encode(&self.client_id),
                    form_encode(self.client_secret.expose())
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
                    .expect("base64 is a valid header value");
                value.set_sensitive(true);
                headers.insert(header::AUTHORIZATION, value);
            }
            ClientAuth::Post => {
                add("client_id", &self.client_id);
                add("client_secret", self.client_secret.expose());
            }
        }
        *request.body_mut() = Body::from(form);
        request
    }
}

/// `application/x-www-form-urlencoded` for one value: everything but `A-Z a-z 0-9 * - . _`
/// percent-encoded (a space as `%20`, which every decoder reads as a space).
fn form_encode(value: &str) -> String {
    const FORM: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'*')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    utf8_percent_encode(value, FORM).to_string()
}

/// Reads a token endpoint's answer (RFC 6749 §5.1 and §5.2).
pub(crate) fn token_from_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Token, TokenError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if matches!(
        status,
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        let code = json
            .as_ref()
            .and_then(|json| json.get("error")?.as_str())
            // Logged: keep it only if it is a plain code, as RFC 6749 defines them.
            .filter(|code| {
                code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .map(str::to_owned);
        return Err(TokenError(Arc::new(Failure::Rejected {
            status,
            code,
            auth: AuthError::Unauthorized {
                challenges: parse_challenges(headers),
                credentials_sent: true,
                source: None,
            },
        })));
    }
    if !status.is_success() {
        let error = std::io::Error::other(format!("token endpoint answered {status}"));
        return Err(TokenError::unavailable(BackendError::Transport {
            // A 5xx is the endpoint failing; anything else unexpected is not OAuth.
            kind: if status.is_server_error() {
                TransportKind::Other
            } else {
                TransportKind::Protocol
            },
            source: error.into(),
        }));
    }
    let json = json.ok_or_else(|| TokenError::invalid("not JSON"))?;
    let access_token = json
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| TokenError::invalid("no access_token"))?;
    if let Some(kind) = json.get("token_type").and_then(serde_json::Value::as_str) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::invalid("token_type is not Bearer"));
        }
    }
    // Some servers send the number as a string.
    let lifetime = match json.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .map(Duration::from_secs);
    let mut authorization = HeaderValue::try_from(format!("Bearer {access_token}"))
        .map_err(|_| TokenError::invalid("access_token is not a valid header value"))?;
    authorization.set_sensitive(true);
    Ok(Token {
        authorization,
        lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_health_classify::{classify_error, Outcome};

    fn ok_token(value: &str, lifetime: Option<u64>) -> Token {
        let mut authorization = HeaderValue::try_from(format!("Bearer {value}")).unwrap();
        authorization.set_sensitive(true);
        Token {
            authorization,
            lifetime: lifetime.map(Duration::from_secs),
        }
    }

    /// A source whose fetch counts, waits `delay` (paused time), and hands out `t1`, `t2`...
    fn counting(delay: Duration, lifetime: Option<u64>) -> (TokenSource, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let source = TokenSource::new("test", move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(delay).await;
                Ok(ok_token(&format!("t{n}"), lifetime))
            }
        });
        (source, fetches)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch_and_reuse_the_token() {
        let (source, fetches) = counting(Duration::from_millis(200), Some(3600));
        let mut waiting = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let source = source.clone();
            waiting.spawn(async move { source.authorization().await.unwrap() });
        }
        while let Some(value) = waiting.join_next().await {
            assert_eq!(value.unwrap(), "Bearer t1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_secs(3000)).await;
        assert_eq!(source.authorization().await.unwrap(), "Bearer t1");
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "still fresh");
    }

    #[tokio::test(start_paused = true)]
    async fn refreshed_thirty_seconds_before_expiry() {
        let (source, fetches) = counting(Duration::ZERO, Some(3600));
        assert_eq!(source.authorization().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(3569)).await;
        assert_eq!(source.authorization().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(source.authorization().await.unwrap(), "Bearer t2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn short_tokens_are_refreshed_ten_percent_early_and_missing_lifetimes_assume_a_minute() {
        let (source, _) = counting(Duration::ZERO, Some(100));
        assert_eq!(source.authorization().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(89)).await;
        assert_eq!(source.authorization().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(source.authorization().await.unwrap(), "Bearer t2");

        let (source, _) = counting(Duration::ZERO, None);
        assert_eq!(source.authorization().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(53)).await;
        assert_eq!(source.authorization().await.unwrap(), "Bearer t1");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(source.authorization().await.unwrap(), "Bearer t2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_token_is_dropped_from_the_cache() {
        let (source, fetches) = counting(Duration::ZERO, Some(3600));
        let first = source.authorization().await.unwrap();
        source.reject(&HeaderValue::from_static("Bearer someone-else"));
        assert_eq!(source.authorization().await.unwrap(), first);
        source.reject(&first);
        assert_eq!(source.authorization().await.unwrap(), "Bearer t2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_shared_for_a_second_then_retried() {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let source = TokenSource::new("test", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Err(TokenError::invalid("not JSON")) }
        });
        assert!(source.authorization().await.is_err());
        assert!(source.authorization().await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(FAILURE_HOLD).await;
        assert!(source.authorization().await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_dropped_mid_fetch_leaves_the_next_one_to_fetch() {
        let (source, fetches) = counting(Duration::from_secs(5), Some(3600));
        let dropped = tokio::time::timeout(Duration::from_secs(1), source.authorization()).await;
        assert!(dropped.is_err());
        assert_eq!(source.authorization().await.unwrap(), "Bearer t2");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn token_responses() {
        let headers = HeaderMap::new();
        let read = |status: u16, body: &str| {
            token_from_response(
                StatusCode::from_u16(status).unwrap(),
                &headers,
                &Bytes::copy_from_slice(body.as_bytes()),
            )
        };
        let token = read(
            200,
            r#"{"access_token":"abc","token_type":"bearer","expires_in":3600}"#,
        )
        .unwrap();
        assert_eq!(token.authorization, "Bearer abc");
        assert!(token.authorization.is_sensitive());
        assert_eq!(token.lifetime, Some(Duration::from_secs(3600)));
        let token = read(200, r#"{"access_token":"abc","expires_in":"60"}"#).unwrap();
        assert_eq!(token.lifetime, Some(Duration::from_secs(60)));
        assert!(!format!("{token:?}").contains("abc"));

        let cases: &[(u16, &str, &str)] = &[
            (200, "not json", "invalid_token_response"),
            (200, r#"{"token_type":"Bearer"}"#, "invalid_token_response"),
            (
                200,
                r#"{"access_token":"a","token_type":"mac"}"#,
                "invalid_token_response",
            ),
            (200, r#"{"access_token":"a\nb"}"#, "invalid_token_response"),
            (400, r#"{"error":"invalid_client"}"#, "credentials_rejected"),
            (401, "", "credentials_rejected"),
            (503, "", "other"),
        ];
        for (status, body, reason) in cases {
            let error = read(*status, body).unwrap_err();
            assert_eq!(error.reason(), *reason, "{status} {body}");
        }
    }

    /// The classify layer reads the error's chain: what each failure will be judged as.
    #[test]
    fn token_errors_classify_as_the_backend_failure_they_cause() {
        let headers = HeaderMap::new();
        let rejected = token_from_response(
            StatusCode::BAD_REQUEST,
            &headers,
            &Bytes::from_static(br#"{"error":"invalid_client","error_description":"x"}"#),
        )
        .unwrap_err();
        assert!(rejected
            .to_string()
            .ends_with("(HTTP 400 Bad Request, invalid_client)"));
        assert!(matches!(classify_error(&rejected), Outcome::Auth(_)));

        let invalid = TokenError::invalid("not JSON");
        assert_eq!(
            classify_error(&invalid),
            Outcome::Transport(TransportKind::Protocol)
        );

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let unavailable = TokenError::unavailable(BackendError::from_error(refused.into()));
        assert_eq!(
            classify_error(&unavailable),
            Outcome::Transport(TransportKind::ConnectionRefused)
        );
        assert_eq!(unavailable.reason(), "connection_refused");
    }

    #[test]
    fn form_encoding_and_basic_credentials() {
        assert_eq!(form_encode("a b+c/d:é*-._"), "a%20b%2Bc%2Fd%3A%C3%A9*-._");
        let grant = Grant {
            token_url: "http://127.0.0.1:1/token".parse().unwrap(),
            client_id: "gw:1".into(),
            client_secret: Secret::new("p@ss word"),
            scope: Some("read write".into()),
            client_auth: ClientAuth::Basic,
            timeout: Duration::from_secs(1),
        };
        let request = grant.request();
        let basic = request.headers()[header::AUTHORIZATION].clone();
        assert!(basic.is_sensitive());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.to_str().unwrap().strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"gw%3A1:p%40ss%20word");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(
            request.headers()[header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
    }
}
