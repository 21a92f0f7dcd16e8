//! Judgement of one exchange: the outgoing auth strategy, the verdict and its reason.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
    /// Whether credentials were sent.
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

/// Marks a request as a health probe. Insert it as a request extension; the
/// [`Prober`](crate) does this for every probe it sends.
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
    pub fn is_bad(self) -> bool {
        matches!(self, HealthStatus::Unhealthy | HealthStatus::Unauthenticated)
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
    /// No complete response.
    Transport(TransportKind),
}

impl Reason {
    /// The snake_case name (a transport reason is its kind: `connection_refused`).
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
    pub fn is_good(self) -> bool {
        self.status == HealthStatus::Healthy
    }

    /// `Degraded`.
    pub fn is_soft(self) -> bool {
        self.status == HealthStatus::Degraded
    }

    /// `Unhealthy` or `Unauthenticated`.
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
pub fn verdict(
    outcome: &Outcome,
    strategy: &AuthStrategy,
    credentials: Credentials,
    origin: Origin,
    latency: Duration,
    slow_threshold: Duration,
) -> Option<Verdict> {
    use HealthStatus::{Degraded, Healthy, Unauthenticated, Unhealthy};
    let v = match outcome {
        Outcome::Success(_) if latency > slow_threshold => Verdict::new(Degraded, Reason::Slow),
        Outcome::Success(_) => Verdict::new(Healthy, Reason::Ok),
        Outcome::Auth(AuthError::ProxyAuthenticationRequired { .. }) => {
            Verdict::new(Unhealthy, Reason::ProxyAuthRequired)
        }
        Outcome::Auth(auth) => match (strategy.owner(), credentials) {
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
