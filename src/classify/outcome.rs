//! `Outcome`: what one exchange with a backend showed.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::error::{AuthError, LocalKind, TransportKind};

/// What one exchange with a backend showed: the fact, before any judgement.
///
/// Built by a [`Classifier`](crate::Classifier) from the response status and headers, or
/// from the inner error's typed source chain. See the crate docs for the full table.
///
/// # Example
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_health_classify::{Classifier, DefaultClassifier, Outcome};
///
/// let outcome = DefaultClassifier.classify_response(StatusCode::BAD_GATEWAY, &HeaderMap::new());
/// assert_eq!(outcome, Outcome::ServerError(StatusCode::BAD_GATEWAY));
/// assert_eq!(outcome.as_str(), "server_error");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// 1xx, 2xx or 3xx.
    Success(StatusCode),
    /// A 4xx other than 401, 403, 407, 408 and 429.
    ClientError(StatusCode),
    /// 401, 403 or 407, with the parsed challenges.
    Auth(AuthError),
    /// 408 or 429, with the `Retry-After` delay when the backend gave one.
    Throttled {
        /// 408 or 429.
        status: StatusCode,
        /// The `Retry-After` delay (seconds, or an HTTP date turned into a delay from now).
        retry_after: Option<Duration>,
    },
    /// 5xx.
    ServerError(StatusCode),
    /// No complete response: refused, reset, timed out, not HTTP, ...
    Transport(TransportKind),
    /// The caller dropped the response future before it finished.
    Cancelled,
    /// The request failed on this side: never the backend's fault.
    Local(LocalKind),
}

impl Outcome {
    /// Whether this is a plain success (1xx, 2xx, 3xx).
    #[inline]
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success(_))
    }

    /// The response status, when a response arrived.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Outcome::Success(status)
            | Outcome::ClientError(status)
            | Outcome::ServerError(status)
            | Outcome::Throttled { status, .. } => Some(*status),
            Outcome::Auth(auth) => Some(auth.status()),
            Outcome::Transport(_) | Outcome::Cancelled | Outcome::Local(_) => None,
        }
    }

    /// A short snake_case name, for logs and metric labels (bounded: never carries data).
    #[inline]
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success(_) => "success",
            Outcome::ClientError(_) => "client_error",
            Outcome::Auth(AuthError::Unauthorized { .. }) => "unauthorized",
            Outcome::Auth(AuthError::Forbidden { .. }) => "forbidden",
            Outcome::Auth(AuthError::ProxyAuthenticationRequired { .. }) => {
                "proxy_authentication_required"
            }
            Outcome::Throttled { .. } => "throttled",
            Outcome::ServerError(_) => "server_error",
            Outcome::Transport(_) => "transport",
            Outcome::Cancelled => "cancelled",
            Outcome::Local(_) => "local",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success(status)
            | Outcome::ClientError(status)
            | Outcome::ServerError(status) => write!(f, "{} {}", self.as_str(), status.as_u16()),
            Outcome::Auth(auth) => {
                write!(f, "{} {}", self.as_str(), auth.status().as_u16())?;
                if let Some(scheme) = auth.scheme() {
                    // Backend-controlled text: escaped so it cannot forge log lines.
                    write!(f, " {}", scheme.escape_debug())?;
                }
                if let Some(error) = auth.bearer_error() {
                    write!(f, " {error}")?;
                }
                Ok(())
            }
            Outcome::Throttled {
                status,
                retry_after: Some(after),
            } => write!(
                f,
                "throttled {} (retry after {}s)",
                status.as_u16(),
                after.as_secs()
            ),
            Outcome::Throttled { status, .. } => write!(f, "throttled {}", status.as_u16()),
            Outcome::Transport(kind) => write!(f, "transport {kind}"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::Local(kind) => write!(f, "local {kind}"),
        }
    }
}

/// The RFC 6750 `error` code of a Bearer challenge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BearerError {
    /// `invalid_request`: the request is malformed.
    InvalidRequest,
    /// `invalid_token`: the token is expired, revoked or malformed.
    InvalidToken,
    /// `insufficient_scope`: the token lacks a scope the resource needs.
    InsufficientScope,
    /// Any other code, as sent.
    Other(String),
}

impl BearerError {
    /// Reads an `error` parameter value. Codes are case-sensitive in RFC 6750; a code in
    /// another case is kept as [`BearerError::Other`].
    pub fn from_code(code: &str) -> Self {
        match code {
            "invalid_request" => BearerError::InvalidRequest,
            "invalid_token" => BearerError::InvalidToken,
            "insufficient_scope" => BearerError::InsufficientScope,
            other => BearerError::Other(other.to_owned()),
        }
    }

    /// The code as sent.
    #[inline]
    pub fn as_str(&self) -> &str {
        match self {
            BearerError::InvalidRequest => "invalid_request",
            BearerError::InvalidToken => "invalid_token",
            BearerError::InsufficientScope => "insufficient_scope",
            BearerError::Other(code) => code,
        }
    }
}

impl fmt::Display for BearerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_str().escape_debug(), f)
    }
}
