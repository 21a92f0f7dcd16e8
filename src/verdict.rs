//! Judgement of one exchange: the outgoing auth strategy, the verdict and its reason.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderName, Request};

use crate::classify::{BearerError, Outcome};
use crate::error::{AuthError, TransportKind};

/// The latency above which a success counts as slow, unless the sink says otherwise.
pub const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_secs(5);

/// Who owns the credentials the gateway sends to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialOwner {
    /// The gateway's own key or exchanged token: if the backend rejects it, the gateway
    /// is misconfigured.
    Gateway,
    /// The end user's token, forwarded: if the backend rejects it, the user's token is
    /// bad and the backend is fine.
    User,
}

/// How the gateway authenticates to a backend. Decides whether a 401 is a fault.
///
/// # Example
///
/// ```
/// use tower_health_classify::{AuthStrategy, CredentialOwner};
///
/// assert_eq!(AuthStrategy::UpstreamInject.owner(), Some(CredentialOwner::User));
/// assert_eq!(AuthStrategy::Unauthenticated.owner(), None);
/// let mtls = AuthStrategy::custom("mtls_client_cert", CredentialOwner::Gateway);
/// assert_eq!(mtls.name(), "mtls_client_cert");
/// assert_eq!(AuthStrategy::TokenExchange.to_string(), "token_exchange");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthStrategy {
    /// The gateway sends no credentials.
    Unauthenticated,
    /// The gateway adds a static header (an API key), owned by the gateway.
    HeaderInjection,
    /// The gateway exchanges its client credentials for a token, owned by the gateway.
    TokenExchange,
    /// The gateway forwards the end user's token.
    UpstreamInject,
    /// Any other strategy, named, with the owner of its credentials.
    Custom {
        /// The strategy's name, used in logs and serialized forms.
        name: Arc<str>,
        /// Who owns the credentials it sends.
        owner: CredentialOwner,
    },
}

impl AuthStrategy {
    /// A custom strategy.
    pub fn custom(name: impl Into<Arc<str>>, owner: CredentialOwner) -> Self {
        AuthStrategy::Custom {
            name: name.into(),
            owner,
        }
    }

    /// Who owns the credentials this strategy sends; `None` when it sends none.
    #[inline]
    pub fn owner(&self) -> Option<CredentialOwner> {
        match self {
            AuthStrategy::Unauthenticated => None,
            AuthStrategy::HeaderInjection | AuthStrategy::TokenExchange => {
                Some(CredentialOwner::Gateway)
            }
            AuthStrategy::UpstreamInject => Some(CredentialOwner::User),
            AuthStrategy::Custom { owner, .. } => Some(*owner),
        }
    }

    /// The snake_case name (`upstream_inject`), or a custom strategy's own name.
    pub fn name(&self) -> &str {
        match self {
            AuthStrategy::Unauthenticated => "unauthenticated",
            AuthStrategy::HeaderInjection => "header_injection",
            AuthStrategy::TokenExchange => "token_exchange",
            AuthStrategy::UpstreamInject => "upstream_inject",
            AuthStrategy::Custom { name, .. } => name,
        }
    }
}

impl fmt::Display for AuthStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a request carried credentials.
///
/// The layer decides it from the request: the `Authorization` header, any header set with
/// [`HealthClassifyLayer::credential_header`](crate::HealthClassifyLayer::credential_header),
/// or this type inserted as a request extension with the value `Sent` (for credentials
/// added below the layer, such as a client certificate or an auth layer further in).
///
/// # Example
///
/// ```
/// use tower_health_classify::Credentials;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Credentials::Sent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Credentials {
    /// The request carried no credentials.
    #[default]
    NotSent,
    /// The request carried credentials.
    Sent,
}

impl Credentials {
    /// What `request` carried: `Authorization`, one of `credential_headers`, or this
    /// type as an extension with the value `Sent`. Only presence is looked at.
    #[inline]
    pub(crate) fn of<B>(request: &Request<B>, credential_headers: &[HeaderName]) -> Self {
        let headers = request.headers();
        // Probes and many internal calls carry no header at all: skip the hashing.
        let header_sent = !headers.is_empty()
            && (headers.contains_key(header::AUTHORIZATION)
                || credential_headers
                    .iter()
                    .any(|name| headers.contains_key(name)));
        if header_sent || request.extensions().get::<Credentials>() == Some(&Credentials::Sent) {
            Credentials::Sent
        } else {
            Credentials::NotSent
        }
    }

    /// Whether credentials were sent.
    #[inline]
    pub fn is_sent(self) -> bool {
        self == Credentials::Sent
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Origin {
    /// A caller's request.
    #[default]
    Traffic,
    /// A health probe (the request carried the [`Probe`] extension).
    Probe,
}

impl Origin {
    /// `Probe` when `request` carries the [`Probe`] extension.
    #[inline]
    pub(crate) fn of<B>(request: &Request<B>) -> Self {
        if request.extensions().get::<Probe>().is_some() {
            Origin::Probe
        } else {
            Origin::Traffic
        }
    }
}

/// `names` with `name` added, once: the credential-header lists of the layers.
pub(crate) fn with_header(names: &Arc<[HeaderName]>, name: HeaderName) -> Arc<[HeaderName]> {
    if names.contains(&name) {
        return names.clone();
    }
    let mut names = names.to_vec();
    names.push(name);
    names.into()
}

/// Marks a request as a health probe. Insert it as a request extension; the
/// prober (feature `probe`) does this for every probe it sends.
///
/// A probe is built to succeed, so a 4xx answer to a probe means the backend is not what
/// the probe expects, while a 4xx answer to traffic is the caller's mistake.
///
/// # Example
///
/// ```
/// use tower_health_classify::Probe;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Probe);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Probe;

/// The health status of a backend, or the status one verdict points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HealthStatus {
    /// No verdict yet.
    #[default]
    Unknown,
    /// Answers as expected.
    Healthy,
    /// Answers, but slowly or throttled.
    Degraded,
    /// Does not answer properly.
    Unhealthy,
    /// Answers, but rejects the gateway's own credentials or demands some the gateway
    /// does not have.
    Unauthenticated,
}

impl HealthStatus {
    /// The snake_case name.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
            HealthStatus::Unauthenticated => "unauthenticated",
        }
    }

    /// Whether this is `Unhealthy` or `Unauthenticated`.
    #[inline]
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            HealthStatus::Unhealthy | HealthStatus::Unauthenticated
        )
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a verdict came out as it did (the reasons of the verdict table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A success within the slow threshold, or a client error on traffic.
    Ok,
    /// A success slower than the slow threshold.
    Slow,
    /// 401/403 and the gateway has no credentials for this backend.
    NoAuthConfigured,
    /// 401/403 to a request without credentials, where the gateway has a strategy: the
    /// backend's auth works.
    ExpectedChallenge,
    /// 401/403 rejecting the gateway's own credentials.
    CredentialsRejected,
    /// 403 `insufficient_scope` for the gateway's own credentials.
    InsufficientScope,
    /// 401/403 rejecting a user's forwarded token: the user's problem, not the backend's.
    UserCredentialsRejected,
    /// 407: a proxy on the path wants credentials.
    ProxyAuthRequired,
    /// 408 or 429.
    Throttled,
    /// A 4xx answer to a probe.
    UnexpectedStatus,
    /// A 5xx answer.
    ServerError,
    /// 401/403 to a caller's request that a probe would be judged Bad for. The caller
    /// chose the path, the method and (for forwarded tokens) the token, so the answer
    /// never counts against the backend; it asks for a probe, which decides.
    RequestDenied,
    /// A probe's answer was a JSON-RPC error: the MCP server refused `initialize`.
    JsonRpcError,
    /// A probe's `200` answer was not MCP: an HTML page, plain text, other JSON.
    NotMcp,
    /// A probe got no RFC 9728 metadata document: not JSON, or no `resource`.
    InvalidMetadata,
    /// A probe got RFC 9728 metadata naming another resource than the backend.
    ResourceMismatch,
    /// No complete response.
    Transport(TransportKind),
}

impl Reason {
    /// The snake_case name (a transport reason is its kind: `connection_refused`).
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Slow => "slow",
            Reason::NoAuthConfigured => "no_auth_configured",
            Reason::ExpectedChallenge => "expected_challenge",
            Reason::CredentialsRejected => "credentials_rejected",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::UserCredentialsRejected => "user_credentials_rejected",
            Reason::ProxyAuthRequired => "proxy_auth_required",
            Reason::Throttled => "throttled",
            Reason::UnexpectedStatus => "unexpected_status",
            Reason::ServerError => "server_error",
            Reason::RequestDenied => "request_denied",
            Reason::JsonRpcError => "jsonrpc_error",
            Reason::NotMcp => "not_mcp",
            Reason::InvalidMetadata => "invalid_metadata",
            Reason::ResourceMismatch => "resource_mismatch",
            Reason::Transport(kind) => kind.as_str(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The judgement of one report: the status it points to and why.
///
/// Good = `Healthy`; Soft = `Degraded`; Bad = `Unhealthy` or `Unauthenticated`.
///
/// # Example
///
/// ```
/// use tower_health_classify::{HealthStatus, Reason, Verdict};
///
/// let verdict = Verdict::new(HealthStatus::Healthy, Reason::ExpectedChallenge);
/// assert!(verdict.is_good());
/// assert_eq!(verdict.to_string(), "healthy (expected_challenge)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// The status this report points to.
    pub status: HealthStatus,
    /// Why.
    pub reason: Reason,
}

impl Verdict {
    /// A verdict.
    pub const fn new(status: HealthStatus, reason: Reason) -> Self {
        Verdict { status, reason }
    }

    /// `Healthy`.
    #[inline]
    pub fn is_good(self) -> bool {
        self.status == HealthStatus::Healthy
    }

    /// `Degraded`.
    #[inline]
    pub fn is_soft(self) -> bool {
        self.status == HealthStatus::Degraded
    }

    /// `Unhealthy` or `Unauthenticated`.
    #[inline]
    pub fn is_bad(self) -> bool {
        self.status.is_bad()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.status, self.reason)
    }
}

/// Judges one exchange: the verdict table of the crate docs, as a pure function.
///
/// Returns `None` for [`Outcome::Cancelled`] and [`Outcome::Local`]: neither says
/// anything about the backend, so neither may count for or against it.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tower_health_classify::{
///     classify_response, verdict, AuthStrategy, Credentials, HealthStatus, Origin, Reason,
///     DEFAULT_SLOW_THRESHOLD,
/// };
///
/// // A credential-less probe of a backend whose users bring their own token.
/// let outcome = classify_response(http::StatusCode::UNAUTHORIZED, &HeaderMap::new());
/// let v = verdict(
///     &outcome,
///     &AuthStrategy::UpstreamInject,
///     Credentials::NotSent,
///     Origin::Probe,
///     Duration::from_millis(12),
///     DEFAULT_SLOW_THRESHOLD,
/// )
/// .unwrap();
/// assert_eq!((v.status, v.reason), (HealthStatus::Healthy, Reason::ExpectedChallenge));
/// ```
#[inline]
pub fn verdict(
    outcome: &Outcome,
    strategy: &AuthStrategy,
    credentials: Credentials,
    origin: Origin,
    latency: Duration,
    slow_threshold: Duration,
) -> Option<Verdict> {
    use HealthStatus::{Degraded, Healthy, Unhealthy};
    let v = match outcome {
        Outcome::Success(_) if latency > slow_threshold => Verdict::new(Degraded, Reason::Slow),
        Outcome::Success(_) => Verdict::new(Healthy, Reason::Ok),
        Outcome::Auth(AuthError::ProxyAuthenticationRequired { .. }) => {
            Verdict::new(Unhealthy, Reason::ProxyAuthRequired)
        }
        Outcome::Auth(auth) => match auth_verdict(auth, strategy, credentials) {
            // What a caller controls never counts against the backend (DESIGN §9.3).
            v if v.is_bad() && origin == Origin::Traffic => {
                Verdict::new(Healthy, Reason::RequestDenied)
            }
            v => v,
        },
        Outcome::Throttled { .. } => Verdict::new(Degraded, Reason::Throttled),
        Outcome::ClientError(_) => match origin {
            Origin::Traffic => Verdict::new(Healthy, Reason::Ok),
            Origin::Probe => Verdict::new(Unhealthy, Reason::UnexpectedStatus),
        },
        Outcome::ServerError(_) => Verdict::new(Unhealthy, Reason::ServerError),
        Outcome::Transport(kind) => Verdict::new(Unhealthy, Reason::Transport(*kind)),
        Outcome::Cancelled | Outcome::Local(_) => return None,
    };
    Some(v)
}

/// A 401 or 403 as a probe's answer: judged by who owns the credentials and whether the
/// request carried them.
#[inline]
fn auth_verdict(auth: &AuthError, strategy: &AuthStrategy, credentials: Credentials) -> Verdict {
    use HealthStatus::{Healthy, Unauthenticated};
    match (strategy.owner(), credentials) {
        (None, _) => Verdict::new(Unauthenticated, Reason::NoAuthConfigured),
        (Some(_), Credentials::NotSent) => Verdict::new(Healthy, Reason::ExpectedChallenge),
        (Some(CredentialOwner::User), Credentials::Sent) => {
            Verdict::new(Healthy, Reason::UserCredentialsRejected)
        }
        (Some(CredentialOwner::Gateway), Credentials::Sent) => {
            let scope = matches!(auth, AuthError::Forbidden { .. })
                && auth.bearer_error() == Some(BearerError::InsufficientScope);
            let reason = if scope {
                Reason::InsufficientScope
            } else {
                Reason::CredentialsRejected
            };
            Verdict::new(Unauthenticated, reason)
        }
    }
}

/// Serialized as their snake_case names (`upstream_inject`, `healthy`, `expected_challenge`,
/// `connection_refused`), or a custom strategy's own name.
#[cfg(feature = "serde")]
mod serialize {
    use super::{AuthStrategy, CredentialOwner, HealthStatus, Reason, Verdict};
    use crate::error::{LocalKind, TransportKind};

    macro_rules! as_str {
        ($($ty:ty => $f:expr),* $(,)?) => {$(
            impl serde::Serialize for $ty {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    let f: fn(&$ty) -> &str = $f;
                    s.serialize_str(f(self))
                }
            }
        )*};
    }

    as_str! {
        AuthStrategy => AuthStrategy::name,
        HealthStatus => |s| s.as_str(),
        Reason => |r| r.as_str(),
        TransportKind => |k| k.as_str(),
        LocalKind => |k| k.as_str(),
        CredentialOwner => |o| match o {
            CredentialOwner::Gateway => "gateway",
            CredentialOwner::User => "user",
        },
    }

    impl serde::Serialize for Verdict {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut v = s.serialize_struct("Verdict", 2)?;
            v.serialize_field("status", &self.status)?;
            v.serialize_field("reason", &self.reason)?;
            v.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{classify_error, classify_response};
    use crate::error::LocalKind;
    use http::{header, HeaderMap, HeaderValue, StatusCode};
    use HealthStatus::{Degraded, Healthy, Unauthenticated, Unhealthy};

    const SLOW: Duration = DEFAULT_SLOW_THRESHOLD;
    const FAST: Duration = Duration::from_millis(20);

    fn strategies() -> [AuthStrategy; 6] {
        [
            AuthStrategy::Unauthenticated,
            AuthStrategy::HeaderInjection,
            AuthStrategy::TokenExchange,
            AuthStrategy::UpstreamInject,
            AuthStrategy::custom("mtls", CredentialOwner::Gateway),
            AuthStrategy::custom("session_cookie", CredentialOwner::User),
        ]
    }

    fn response(status: u16, challenge: Option<&'static str>) -> Outcome {
        let mut headers = HeaderMap::new();
        if let Some(value) = challenge {
            let name = if status == 407 {
                header::PROXY_AUTHENTICATE
            } else {
                header::WWW_AUTHENTICATE
            };
            headers.insert(name, HeaderValue::from_static(value));
        }
        classify_response(StatusCode::from_u16(status).unwrap(), &headers)
    }

    type Expected = Option<(HealthStatus, Reason)>;

    /// One row per line of the verdict table; one expected verdict per strategy, in the
    /// order of [`strategies`]: unauthenticated, header_injection, token_exchange,
    /// upstream_inject, custom gateway-owned, custom user-owned.
    struct Row {
        name: &'static str,
        outcome: Outcome,
        credentials: Credentials,
        origin: Origin,
        latency: Duration,
        expected: [Expected; 6],
    }

    fn all(status: HealthStatus, reason: Reason) -> [Expected; 6] {
        [Some((status, reason)); 6]
    }

    fn rows() -> Vec<Row> {
        use Credentials::{NotSent, Sent};
        let bearer_invalid = Some(r#"Bearer error="invalid_token""#);
        let bearer_scope = Some(r#"Bearer error="insufficient_scope", scope="admin""#);
        let no_auth = Some((Unauthenticated, Reason::NoAuthConfigured));
        let expected = Some((Healthy, Reason::ExpectedChallenge));
        let rejected = Some((Unauthenticated, Reason::CredentialsRejected));
        let user = Some((Healthy, Reason::UserCredentialsRejected));
        let scope = Some((Unauthenticated, Reason::InsufficientScope));
        let denied = Some((Healthy, Reason::RequestDenied));
        vec![
            Row {
                name: "success within the slow threshold is healthy",
                outcome: response(200, None),
                credentials: NotSent,
                origin: Origin::Traffic,
                latency: FAST,
                expected: all(Healthy, Reason::Ok),
            },
            Row {
                name: "success exactly at the slow threshold is still healthy",
                outcome: response(204, None),
                credentials: Sent,
                origin: Origin::Probe,
                latency: SLOW,
                expected: all(Healthy, Reason::Ok),
            },
            Row {
                name: "success slower than the threshold is degraded",
                outcome: response(200, None),
                credentials: NotSent,
                origin: Origin::Probe,
                latency: SLOW + Duration::from_millis(1),
                expected: all(Degraded, Reason::Slow),
            },
            Row {
                name: "401 without credentials: expected unless no strategy",
                outcome: response(401, bearer_invalid),
                credentials: NotSent,
                origin: Origin::Probe,
                latency: FAST,
                expected: [no_auth, expected, expected, expected, expected, expected],
            },
            Row {
                name: "403 without credentials: expected unless no strategy",
                outcome: response(403, None),
                credentials: NotSent,
                origin: Origin::Probe,
                latency: FAST,
                expected: [no_auth, expected, expected, expected, expected, expected],
            },
            Row {
                name: "401 with credentials: gateway's rejected, user's the user's problem",
                outcome: response(401, bearer_invalid),
                credentials: Sent,
                origin: Origin::Probe,
                latency: FAST,
                expected: [no_auth, rejected, rejected, user, rejected, user],
            },
            Row {
                name: "403 insufficient_scope with the gateway's credentials names the scope",
                outcome: response(403, bearer_scope),
                credentials: Sent,
                origin: Origin::Probe,
                latency: FAST,
                expected: [no_auth, scope, scope, user, scope, user],
            },
            Row {
                name: "401 insufficient_scope is not a scope problem (only 403 is)",
                outcome: response(401, bearer_scope),
                credentials: Sent,
                origin: Origin::Probe,
                latency: FAST,
                expected: [no_auth, rejected, rejected, user, rejected, user],
            },
            Row {
                name:
                    "401 on traffic with the gateway's credentials is the caller's request, not Bad",
                outcome: response(401, bearer_invalid),
                credentials: Sent,
                origin: Origin::Traffic,
                latency: FAST,
                expected: [denied, denied, denied, user, denied, user],
            },
            Row {
                name: "403 insufficient_scope on traffic never counts against the backend",
                outcome: response(403, bearer_scope),
                credentials: Sent,
                origin: Origin::Traffic,
                latency: FAST,
                expected: [denied, denied, denied, user, denied, user],
            },
            Row {
                name: "401 on traffic without credentials: expected, or denied without a strategy",
                outcome: response(401, None),
                credentials: NotSent,
                origin: Origin::Traffic,
                latency: FAST,
                expected: [denied, expected, expected, expected, expected, expected],
            },
            Row {
                name: "407 blames the proxy whatever the strategy or credentials",
                outcome: response(407, Some(r#"Basic realm="corp""#)),
                credentials: Sent,
                origin: Origin::Probe,
                latency: FAST,
                expected: all(Unhealthy, Reason::ProxyAuthRequired),
            },
            Row {
                name: "407 without credentials blames the proxy too",
                outcome: response(407, None),
                credentials: NotSent,
                origin: Origin::Traffic,
                latency: FAST,
                expected: all(Unhealthy, Reason::ProxyAuthRequired),
            },
            Row {
                name: "429 is throttled",
                outcome: response(429, None),
                credentials: NotSent,
                origin: Origin::Traffic,
                latency: FAST,
                expected: all(Degraded, Reason::Throttled),
            },
            Row {
                name: "408 is throttled",
                outcome: response(408, None),
                credentials: Sent,
                origin: Origin::Probe,
                latency: FAST,
                expected: all(Degraded, Reason::Throttled),
            },
            Row {
                name: "4xx on traffic is the caller's mistake",
                outcome: response(404, None),
                credentials: NotSent,
                origin: Origin::Traffic,
                latency: FAST,
                expected: all(Healthy, Reason::Ok),
            },
            Row {
                name: "4xx on a probe is unexpected",
                outcome: response(404, None),
                credentials: NotSent,
                origin: Origin::Probe,
                latency: FAST,
                expected: all(Unhealthy, Reason::UnexpectedStatus),
            },
            Row {
                name: "5xx is a server error",
                outcome: response(503, None),
                credentials: NotSent,
                origin: Origin::Traffic,
                latency: FAST,
                expected: all(Unhealthy, Reason::ServerError),
            },
            Row {
                name: "refused is unhealthy with the kind as reason",
                outcome: Outcome::Transport(TransportKind::ConnectionRefused),
                credentials: NotSent,
                origin: Origin::Probe,
                latency: FAST,
                expected: all(
                    Unhealthy,
                    Reason::Transport(TransportKind::ConnectionRefused),
                ),
            },
            Row {
                name: "a timeout is unhealthy even when slow",
                outcome: Outcome::Transport(TransportKind::Timeout),
                credentials: Sent,
                origin: Origin::Traffic,
                latency: SLOW * 2,
                expected: all(Unhealthy, Reason::Transport(TransportKind::Timeout)),
            },
            Row {
                name: "cancelled never counts",
                outcome: Outcome::Cancelled,
                credentials: Sent,
                origin: Origin::Probe,
                latency: SLOW * 2,
                expected: [None; 6],
            },
            Row {
                name: "local failures never count",
                outcome: Outcome::Local(LocalKind::InvalidRequest),
                credentials: NotSent,
                origin: Origin::Probe,
                latency: FAST,
                expected: [None; 6],
            },
        ]
    }

    #[test]
    fn verdict_table_for_every_strategy() {
        for row in rows() {
            for (strategy, want) in strategies().iter().zip(row.expected) {
                let got = verdict(
                    &row.outcome,
                    strategy,
                    row.credentials,
                    row.origin,
                    row.latency,
                    SLOW,
                )
                .map(|v| (v.status, v.reason));
                assert_eq!(got, want, "{} (strategy {strategy})", row.name);
            }
        }
    }

    /// An error from a client library that turned a 401 into text, as the motivating
    /// gateway's MCP client did.
    #[derive(Debug)]
    struct Flattened(&'static str);

    impl fmt::Display for Flattened {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Flattened {}

    #[test]
    fn flattened_authorization_required_is_judged_by_strategy() {
        let outcome = classify_error(&Flattened("transport error: authorization required"));
        assert!(matches!(outcome, Outcome::Auth(_)), "{outcome:?}");
        let judge = |strategy: &AuthStrategy| {
            verdict(
                &outcome,
                strategy,
                Credentials::NotSent,
                Origin::Probe,
                FAST,
                SLOW,
            )
            .map(|v| (v.status, v.reason))
        };
        for strategy in [
            AuthStrategy::UpstreamInject,
            AuthStrategy::TokenExchange,
            AuthStrategy::HeaderInjection,
        ] {
            assert_eq!(
                judge(&strategy),
                Some((Healthy, Reason::ExpectedChallenge)),
                "{strategy}"
            );
        }
        assert_eq!(
            judge(&AuthStrategy::Unauthenticated),
            Some((Unauthenticated, Reason::NoAuthConfigured))
        );
    }

    #[test]
    fn a_required_authorization_field_is_not_an_auth_error() {
        let outcome = classify_error(&Flattened(
            "validation failed: field 'authorization' required",
        ));
        assert!(!matches!(outcome, Outcome::Auth(_)), "{outcome:?}");
        let v = verdict(
            &outcome,
            &AuthStrategy::UpstreamInject,
            Credentials::NotSent,
            Origin::Probe,
            FAST,
            SLOW,
        )
        .unwrap();
        assert!(v.is_bad(), "{v}");
    }

    #[test]
    fn names_are_snake_case() {
        let strategies = strategies();
        let names: Vec<&str> = strategies.iter().map(AuthStrategy::name).collect();
        assert_eq!(
            names,
            [
                "unauthenticated",
                "header_injection",
                "token_exchange",
                "upstream_inject",
                "mtls",
                "session_cookie"
            ]
        );
        assert_eq!(
            Reason::Transport(TransportKind::ConnectTimeout).as_str(),
            "connect_timeout"
        );
        assert_eq!(HealthStatus::Unauthenticated.to_string(), "unauthenticated");
        let probe_reasons = [
            Reason::JsonRpcError,
            Reason::NotMcp,
            Reason::InvalidMetadata,
            Reason::ResourceMismatch,
        ]
        .map(Reason::as_str);
        assert_eq!(
            probe_reasons,
            [
                "jsonrpc_error",
                "not_mcp",
                "invalid_metadata",
                "resource_mismatch"
            ]
        );
    }
}
