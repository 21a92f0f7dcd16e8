//! Typed errors: what the layer returns instead of a response or an opaque inner error.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use crate::classify::{BearerError, Challenge, Outcome};

/// A type-erased error, as tower uses.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// How a request failed to reach a backend or to get a complete response from it.
///
/// Built from the typed error chain (`std::io::ErrorKind`, `hyper::Error`, hyper-util
/// connect errors, timers), never from the error's text unless every typed check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Nothing listens at the backend's address.
    ConnectionRefused,
    /// The backend's host name could not be resolved.
    Dns,
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// The request or response took longer than a timeout.
    Timeout,
    /// The TLS handshake or the certificate check failed.
    Tls,
    /// The peer closed the connection before a full response arrived.
    Closed,
    /// The connection was reset, or the pipe broke while writing.
    Reset,
    /// The host or its network is unreachable.
    Unreachable,
    /// The backend answered with something that is not HTTP.
    Protocol,
    /// Any other transport failure.
    Other,
}

impl TransportKind {
    /// The snake_case name used in logs, verdict reasons and serialized forms.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::ConnectionRefused => "connection_refused",
            TransportKind::Dns => "dns",
            TransportKind::ConnectTimeout => "connect_timeout",
            TransportKind::Timeout => "timeout",
            TransportKind::Tls => "tls",
            TransportKind::Closed => "closed",
            TransportKind::Reset => "reset",
            TransportKind::Unreachable => "unreachable",
            TransportKind::Protocol => "protocol",
            TransportKind::Other => "other",
        }
    }

    /// Whether the failure happened before the request reached the backend, so that
    /// sending it again cannot repeat a side effect.
    #[inline]
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            TransportKind::ConnectionRefused | TransportKind::Dns | TransportKind::ConnectTimeout
        )
    }

    /// Whether a timer ended the exchange.
    #[inline]
    pub fn is_timeout(self) -> bool {
        matches!(self, TransportKind::ConnectTimeout | TransportKind::Timeout)
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a TLS handshake or certificate check failed: the cause behind
/// [`TransportKind::Tls`].
///
/// Read from `rustls::Error` in the error chain (feature `rustls`), else from the text of
/// a library that flattened its TLS error (OpenSSL's `certificate verify failed`,
/// rustls' `invalid peer certificate: ...`). Names the cause only: never a certificate,
/// a key or anything else the peer sent. The set is small and stable, so that it can be
/// stored as a code and counted; [`Other`](TlsFailure::Other) is what no rule names.
///
/// # Example
///
/// ```
/// use std::io;
/// use tower_health_classify::{BackendError, TlsFailure, TransportKind};
///
/// let flattened = io::Error::other("SSL certificate problem: certificate has expired");
/// let err = BackendError::from_error(flattened.into());
/// assert_eq!(err.transport_kind(), Some(TransportKind::Tls));
/// assert_eq!(err.tls_failure(), Some(TlsFailure::CertificateExpired));
/// assert_eq!(err.to_string(), "tls error: certificate expired");
/// assert_eq!(TlsFailure::CertificateExpired.as_str(), "certificate_expired");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The backend's certificate is past its `notAfter` date (or the clock is wrong).
    CertificateExpired,
    /// The backend's certificate is before its `notBefore` date (or the clock is wrong).
    CertificateNotYetValid,
    /// The certificate chain leads to no trusted root: a self-signed certificate, or one
    /// from a private CA the client was not given.
    UnknownIssuer,
    /// The certificate is valid, but not for the host name (or IP address) in the URL.
    NameMismatch,
    /// The certificate has been revoked.
    CertificateRevoked,
    /// The certificate was rejected for another reason: a bad signature or encoding, an
    /// unsupported algorithm, a purpose other than server authentication.
    BadCertificate,
    /// The backend requires a client certificate (mutual TLS) that the client did not
    /// present.
    ClientCertificateRequired,
    /// The peer did not answer in TLS: typically a plain-HTTP server behind an
    /// `https://` URL, or the wrong port.
    NotTls,
    /// The handshake failed otherwise: a fatal alert from the peer, no protocol version
    /// or cipher suite in common, a peer that broke the protocol.
    HandshakeFailure,
    /// A TLS failure none of the above describes.
    Other,
}

impl TlsFailure {
    /// The snake_case name used in logs and serialized forms (`certificate_expired`).
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::CertificateExpired => "certificate_expired",
            TlsFailure::CertificateNotYetValid => "certificate_not_yet_valid",
            TlsFailure::UnknownIssuer => "unknown_issuer",
            TlsFailure::NameMismatch => "name_mismatch",
            TlsFailure::CertificateRevoked => "certificate_revoked",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::ClientCertificateRequired => "client_certificate_required",
            TlsFailure::NotTls => "not_tls",
            TlsFailure::HandshakeFailure => "handshake_failure",
            TlsFailure::Other => "other",
        }
    }

    /// What a person reads: `certificate expired`, `certificate not valid for the host
    /// name`.
    fn describe(self) -> &'static str {
        match self {
            TlsFailure::CertificateExpired => "certificate expired",
            TlsFailure::CertificateNotYetValid => "certificate not yet valid",
            TlsFailure::UnknownIssuer => "certificate from an unknown issuer",
            TlsFailure::NameMismatch => "certificate not valid for the host name",
            TlsFailure::CertificateRevoked => "certificate revoked",
            TlsFailure::BadCertificate => "bad certificate",
            TlsFailure::ClientCertificateRequired => "client certificate required",
            TlsFailure::NotTls => "the peer does not speak tls",
            TlsFailure::HandshakeFailure => "handshake failure",
            TlsFailure::Other => "unrecognised failure",
        }
    }

    /// The TLS failure an error's source chain holds, if it holds one.
    ///
    /// The chain is walked as [`classify_error`](crate::classify_error) walks it. The
    /// first entry that names a TLS failure decides: a [`BackendError`] this crate
    /// already made, or a `rustls::Error` (feature `rustls`). Without such an entry, the
    /// entries' text is read for the TLS phrases of the [`text`](crate::text) fallback.
    /// `None` when nothing in the chain is about TLS.
    ///
    /// # Example
    ///
    /// ```
    /// use std::io;
    /// use tower_health_classify::TlsFailure;
    ///
    /// let flattened = io::Error::other("error:0A000086:SSL routines::certificate verify failed");
    /// assert_eq!(TlsFailure::from_error(&flattened), Some(TlsFailure::BadCertificate));
    /// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    /// assert_eq!(TlsFailure::from_error(&refused), None);
    /// ```
    pub fn from_error(error: &(dyn Error + 'static)) -> Option<Self> {
        crate::classify::tls_failure(error)
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A failure on this side of the connection: never the backend's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LocalKind {
    /// A load shedder refused the request before it was sent.
    Overloaded,
    /// The request cannot be sent as built: a bad URI or an unsupported scheme. This is
    /// a gateway misconfiguration.
    InvalidRequest,
    /// A [`HealthGate`](crate::HealthGate) held the request back because the backend is
    /// Unhealthy or Unauthenticated ([`BackendError::NotSent`]): nothing was sent, so
    /// nothing counts against the backend.
    NotSent,
    /// Any other local failure.
    Other,
}

impl LocalKind {
    /// The snake_case name used in logs and serialized forms.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            LocalKind::Overloaded => "overloaded",
            LocalKind::InvalidRequest => "invalid_request",
            LocalKind::NotSent => "not_sent",
            LocalKind::Other => "other",
        }
    }
}

impl fmt::Display for LocalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The backend, or a proxy on the way, refused the request for want of valid credentials.
///
/// Each variant carries every challenge the response offered (parsed from
/// `WWW-Authenticate`, or `Proxy-Authenticate` for 407) and whether this request carried
/// credentials. When the failure was recognised in an inner error rather than in a
/// response (a client library that turned a 401 into an error), `challenges` is empty
/// and the original error is kept as `source`.
///
/// # Example
///
/// ```
/// use http::{header, HeaderMap, HeaderValue, StatusCode};
/// use tower_health_classify::{AuthError, BearerError, DefaultClassifier, Classifier, Outcome};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     header::WWW_AUTHENTICATE,
///     HeaderValue::from_static(r#"Bearer error="insufficient_scope", scope="repo""#),
/// );
/// let outcome = DefaultClassifier.classify_response(StatusCode::FORBIDDEN, &headers);
/// let Outcome::Auth(err) = outcome else { unreachable!() };
/// assert!(matches!(err, AuthError::Forbidden { .. }));
/// assert_eq!(err.bearer_error(), Some(BearerError::InsufficientScope));
/// assert_eq!(err.scope(), Some("repo"));
/// assert_eq!(err.to_string(), "backend answered 403 forbidden (Bearer insufficient_scope)");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum AuthError {
    /// 401: the backend wants (other) credentials.
    Unauthorized {
        /// Every challenge offered, in order (at most 16).
        challenges: Vec<Challenge>,
        /// Whether the request carried credentials.
        credentials_sent: bool,
        /// The inner error this was recognised in, if it did not come from a response.
        source: Option<Arc<dyn Error + Send + Sync + 'static>>,
    },
    /// 403: the credentials are valid but not sufficient.
    Forbidden {
        /// Every challenge offered, in order (at most 16).
        challenges: Vec<Challenge>,
        /// Whether the request carried credentials.
        credentials_sent: bool,
        /// The inner error this was recognised in, if it did not come from a response.
        source: Option<Arc<dyn Error + Send + Sync + 'static>>,
    },
    /// 407: a proxy between this client and the backend wants credentials.
    ProxyAuthenticationRequired {
        /// Every challenge offered in `Proxy-Authenticate`, in order (at most 16).
        challenges: Vec<Challenge>,
        /// Whether the request carried credentials.
        credentials_sent: bool,
        /// The inner error this was recognised in, if it did not come from a response.
        source: Option<Arc<dyn Error + Send + Sync + 'static>>,
    },
}

impl AuthError {
    /// The HTTP status this error stands for: 401, 403 or 407.
    pub fn status(&self) -> http::StatusCode {
        match self {
            AuthError::Unauthorized { .. } => http::StatusCode::UNAUTHORIZED,
            AuthError::Forbidden { .. } => http::StatusCode::FORBIDDEN,
            AuthError::ProxyAuthenticationRequired { .. } => {
                http::StatusCode::PROXY_AUTHENTICATION_REQUIRED
            }
        }
    }

    /// Every challenge the response offered.
    pub fn challenges(&self) -> &[Challenge] {
        match self {
            AuthError::Unauthorized { challenges, .. }
            | AuthError::Forbidden { challenges, .. }
            | AuthError::ProxyAuthenticationRequired { challenges, .. } => challenges,
        }
    }

    /// Whether the request carried credentials.
    pub fn credentials_sent(&self) -> bool {
        match self {
            AuthError::Unauthorized {
                credentials_sent, ..
            }
            | AuthError::Forbidden {
                credentials_sent, ..
            }
            | AuthError::ProxyAuthenticationRequired {
                credentials_sent, ..
            } => *credentials_sent,
        }
    }

    pub(crate) fn set_credentials_sent(&mut self, sent: bool) {
        match self {
            AuthError::Unauthorized {
                credentials_sent, ..
            }
            | AuthError::Forbidden {
                credentials_sent, ..
            }
            | AuthError::ProxyAuthenticationRequired {
                credentials_sent, ..
            } => *credentials_sent = sent,
        }
    }

    fn set_source(&mut self, cause: Arc<dyn Error + Send + Sync + 'static>) {
        match self {
            AuthError::Unauthorized { source, .. }
            | AuthError::Forbidden { source, .. }
            | AuthError::ProxyAuthenticationRequired { source, .. } => *source = Some(cause),
        }
    }

    /// The same error without the inner error it was recognised in.
    fn without_source(&self) -> Self {
        let mut auth = self.clone();
        match &mut auth {
            AuthError::Unauthorized { source, .. }
            | AuthError::Forbidden { source, .. }
            | AuthError::ProxyAuthenticationRequired { source, .. } => *source = None,
        }
        auth
    }

    fn cause(&self) -> Option<&Arc<dyn Error + Send + Sync + 'static>> {
        match self {
            AuthError::Unauthorized { source, .. }
            | AuthError::Forbidden { source, .. }
            | AuthError::ProxyAuthenticationRequired { source, .. } => source.as_ref(),
        }
    }

    /// The challenge the accessors read: the first Bearer challenge, else the first one.
    fn primary(&self) -> Option<&Challenge> {
        let challenges = self.challenges();
        challenges
            .iter()
            .find(|c| c.is_scheme("bearer"))
            .or_else(|| challenges.first())
    }

    /// Looks a parameter up in the Bearer challenge first, then in every other one.
    fn param(&self, name: &str) -> Option<&str> {
        self.primary().and_then(|c| c.param(name)).or_else(|| {
            self.challenges()
                .iter()
                .find_map(|challenge| challenge.param(name))
        })
    }

    /// The scheme of the first Bearer challenge, else of the first challenge.
    pub fn scheme(&self) -> Option<&str> {
        self.primary().map(Challenge::scheme)
    }

    /// The RFC 9728 `resource_metadata` URL, where the client learns how to get a token.
    pub fn resource_metadata(&self) -> Option<&str> {
        self.param("resource_metadata")
    }

    /// The RFC 6750 `scope` parameter, as sent.
    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// The RFC 6750 `realm` parameter, as sent.
    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    /// The RFC 6750 `error_description` parameter, as sent. Backend-controlled text:
    /// escape it before logging (its `Debug` form does).
    pub fn error_description(&self) -> Option<&str> {
        self.param("error_description")
    }

    /// The RFC 6750 `error` code of the Bearer challenge.
    pub fn bearer_error(&self) -> Option<BearerError> {
        self.param("error").map(BearerError::from_code)
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            AuthError::Unauthorized { .. } => "401 unauthorized",
            AuthError::Forbidden { .. } => "403 forbidden",
            AuthError::ProxyAuthenticationRequired { .. } => "407 proxy authentication required",
        };
        write!(f, "backend answered {what}")?;
        if let Some(scheme) = self.scheme() {
            // Backend-controlled text: escaped so it cannot forge log lines.
            write!(f, " ({}", scheme.escape_debug())?;
            if let Some(error) = self.bearer_error() {
                write!(f, " {}", error.as_str().escape_debug())?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Debug for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            AuthError::Unauthorized { .. } => "Unauthorized",
            AuthError::Forbidden { .. } => "Forbidden",
            AuthError::ProxyAuthenticationRequired { .. } => "ProxyAuthenticationRequired",
        };
        f.debug_struct(name)
            .field("challenges", &self.challenges())
            .field("credentials_sent", &self.credentials_sent())
            .field("source", &self.cause())
            .finish()
    }
}

/// Two auth errors are equal when they say the same: same status, same challenges, same
/// `credentials_sent`, and either no source or the very same one.
impl PartialEq for AuthError {
    fn eq(&self, other: &Self) -> bool {
        let same_source = match (self.cause(), other.cause()) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.status() == other.status()
            && self.challenges() == other.challenges()
            && self.credentials_sent() == other.credentials_sent()
            && same_source
    }
}

impl Error for AuthError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause().map(|e| &**e as &(dyn Error + 'static))
    }
}

/// The error [`HealthClassify`](crate::HealthClassify) returns.
///
/// The original error is always kept as [`source()`](Error::source), never flattened to
/// text, so callers can still downcast to `hyper::Error` or `std::io::Error`.
///
/// # Example
///
/// ```
/// use std::io;
/// use tower_health_classify::{BackendError, TransportKind};
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// let err = BackendError::from_error(refused.into());
/// assert!(err.is_transport());
/// assert_eq!(err.transport_kind(), Some(TransportKind::ConnectionRefused));
/// assert!(std::error::Error::source(&err).unwrap().is::<io::Error>());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend (or a proxy) answered 401, 403 or 407.
    #[error(transparent)]
    Auth(AuthError),
    /// The request did not get a complete response from the backend.
    #[error("transport error: {kind}")]
    Transport {
        /// What went wrong.
        kind: TransportKind,
        /// The original error.
        #[source]
        source: BoxError,
    },
    /// The TLS handshake or the certificate check failed
    /// ([`TransportKind::Tls`]), for the reason `failure` names.
    #[error("tls error{}", TlsCause(*failure))]
    Tls {
        /// Why.
        failure: TlsFailure,
        /// The original error (an `io::Error` wrapping a `rustls::Error`, ...).
        #[source]
        source: BoxError,
    },
    /// A timeout fired before the response arrived.
    #[error("request timed out")]
    Timeout {
        /// The original error (a timer's `Elapsed`, an `io::Error` of kind `TimedOut`, ...).
        #[source]
        source: BoxError,
    },
    /// The request failed on this side: it was shed, or could not be sent as built.
    #[error("local error: {kind}")]
    Local {
        /// What went wrong.
        kind: LocalKind,
        /// The original error.
        #[source]
        source: BoxError,
    },
    /// A [`HealthGate`](crate::HealthGate) did not send the request: the backend is
    /// Unhealthy or Unauthenticated and no trial request was due. Its outcome is
    /// [`Outcome::Local`]`(`[`LocalKind::NotSent`]`)`, which never counts against the
    /// backend.
    #[error("not sent: backend {status}")]
    NotSent {
        /// The backend's status when the request was held back.
        status: crate::verdict::HealthStatus,
    },
    /// An error a custom [`Classifier`](crate::Classifier) classified as an outcome none
    /// of the variants above stands for (a 5xx or a 429 it read in a client library's
    /// error, say).
    #[error("backend error: {outcome}")]
    Other {
        /// The outcome the classifier chose, as reported to the sink.
        outcome: Outcome,
        /// The original error.
        #[source]
        source: BoxError,
    },
}

impl BackendError {
    /// Classifies an inner error with the default classifier and wraps it.
    pub fn from_error(error: BoxError) -> Self {
        let outcome = crate::classify::classify_error(&*error);
        let tls = crate::classify::tls_failure_of(&outcome, &*error);
        Self::from_outcome(outcome, tls, error)
    }

    /// Wraps an inner error under the outcome it was classified as; `tls` is the cause
    /// of a `Transport(Tls)` outcome.
    pub(crate) fn from_outcome(
        outcome: Outcome,
        tls: Option<TlsFailure>,
        source: BoxError,
    ) -> Self {
        match outcome {
            Outcome::Transport(TransportKind::Tls) => BackendError::Tls {
                failure: tls.unwrap_or(TlsFailure::Other),
                source,
            },
            Outcome::Auth(mut auth) => {
                auth.set_source(Arc::from(source));
                BackendError::Auth(auth)
            }
            Outcome::Transport(kind)
                if kind.is_timeout() && kind != TransportKind::ConnectTimeout =>
            {
                BackendError::Timeout { source }
            }
            Outcome::Transport(kind) => BackendError::Transport { kind, source },
            Outcome::Local(kind) => BackendError::Local { kind, source },
            outcome => BackendError::Other { outcome, source },
        }
    }

    /// Whether the backend or a proxy refused the credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, BackendError::Auth(_))
    }

    /// Whether the request did not get a complete response (timeouts included).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            BackendError::Transport { .. }
                | BackendError::Tls { .. }
                | BackendError::Timeout { .. }
        )
    }

    /// Whether a timer ended the exchange, while connecting or later.
    #[inline]
    pub fn is_timeout(&self) -> bool {
        self.transport_kind().is_some_and(TransportKind::is_timeout)
    }

    /// The transport failure, if this is one.
    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self {
            BackendError::Transport { kind, .. } => Some(*kind),
            BackendError::Tls { .. } => Some(TransportKind::Tls),
            BackendError::Timeout { .. } => Some(TransportKind::Timeout),
            _ => None,
        }
    }

    /// Why the TLS handshake or certificate check failed: `Some` exactly when
    /// [`transport_kind`](Self::transport_kind) is `Some(TransportKind::Tls)`
    /// ([`TlsFailure::Other`] when no cause was recognised).
    pub fn tls_failure(&self) -> Option<TlsFailure> {
        match self {
            BackendError::Tls { failure, .. } => Some(*failure),
            BackendError::Transport {
                kind: TransportKind::Tls,
                ..
            }
            | BackendError::Other {
                outcome: Outcome::Transport(TransportKind::Tls),
                ..
            } => Some(TlsFailure::Other),
            _ => None,
        }
    }

    /// Whether a [`HealthGate`](crate::HealthGate) held the request back
    /// ([`BackendError::NotSent`]): nothing was sent.
    #[inline]
    pub fn is_not_sent(&self) -> bool {
        matches!(self, BackendError::NotSent { .. })
    }

    /// The auth failure, if this is one.
    pub fn auth(&self) -> Option<&AuthError> {
        match self {
            BackendError::Auth(auth) => Some(auth),
            _ => None,
        }
    }

    /// The outcome this error stands for, as it was reported to the sink: the same
    /// outcome, whichever classifier chose it.
    pub fn outcome(&self) -> Outcome {
        match self {
            // The sink got the auth error before the inner error was attached as its
            // source (a report never carries an inner error: its text may hold secrets).
            BackendError::Auth(auth) => Outcome::Auth(auth.without_source()),
            BackendError::Transport { kind, .. } => Outcome::Transport(*kind),
            BackendError::Tls { .. } => Outcome::Transport(TransportKind::Tls),
            BackendError::Timeout { .. } => Outcome::Transport(TransportKind::Timeout),
            BackendError::Local { kind, .. } => Outcome::Local(*kind),
            BackendError::NotSent { .. } => Outcome::Local(LocalKind::NotSent),
            BackendError::Other { outcome, .. } => outcome.clone(),
        }
    }
}

/// `: certificate expired` after `tls error`, nothing for a cause no rule names.
struct TlsCause(TlsFailure);

impl fmt::Display for TlsCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            TlsFailure::Other => Ok(()),
            failure => write!(f, ": {failure}"),
        }
    }
}
