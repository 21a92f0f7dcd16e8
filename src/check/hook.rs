//! The judging hook of probes: what a check sees, and what it may answer.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use crate::verdict::Verdict;

/// How much of a probe's body a check reads unless it says otherwise: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Judges the answer to a probe from its status, headers and (bounded) body: the hook
/// behind every probe kind that reads more than the status. Implement it to probe a
/// protocol of your own; [`McpCheck`](crate::check::McpCheck) and
/// [`OAuthMetadataCheck`](crate::check::OAuthMetadataCheck) are built on it.
///
/// The prober sends the probe through the classify layer, which classifies the head and
/// judges it as always ([`ProbeAnswer::verdict`]); then it calls
/// [`judge`](Self::judge) with the head, and again every time more of the body arrived
/// for as long as `judge` answers [`Judgement::ReadBody`], up to
/// [`body_limit`](Self::body_limit) bytes and the probe's timeout. What `judge` decides
/// is reported, once, to the backend's handle. A body that fails or stalls while it is
/// read is the backend's transport failure (`closed`, `reset`, `timeout`, ...), whatever
/// the check would have said.
///
/// # Example
///
/// ```
/// use tower_health_classify::check::{Judgement, ProbeAnswer, ProbeCheck};
/// use tower_health_classify::{HealthStatus, Reason, Verdict};
///
/// /// Healthy only if the backend's health page says `ok`.
/// struct SaysOk;
///
/// impl ProbeCheck for SaysOk {
///     fn judge(&self, answer: &ProbeAnswer<'_>) -> Judgement {
///         if answer.status != http::StatusCode::OK {
///             return Judgement::Keep; // the verdict table decides
///         }
///         if !answer.complete {
///             return Judgement::ReadBody;
///         }
///         if answer.body.trim_ascii() == b"ok" {
///             Judgement::Keep
///         } else {
///             Judgement::Verdict(Verdict::new(HealthStatus::Unhealthy, Reason::UnexpectedStatus))
///         }
///     }
///
///     fn body_limit(&self) -> usize {
///         16
///     }
/// }
///
/// let headers = http::HeaderMap::new();
/// let uri = http::Uri::from_static("http://127.0.0.1:9001/health");
/// let head = ProbeAnswer::new(&uri, http::StatusCode::OK, &headers, None);
/// assert_eq!(SaysOk.judge(&head), Judgement::ReadBody);
/// assert_eq!(SaysOk.judge(&head.with_body(b"ok\n", true)), Judgement::Keep);
/// ```
pub trait ProbeCheck: Send + Sync + 'static {
    /// The judgement of `answer`: keep the layer's verdict, give another, read (more of)
    /// the body first, or try another URI.
    fn judge(&self, answer: &ProbeAnswer<'_>) -> Judgement;

    /// A request to send once the probe was judged, to close what it opened (an MCP
    /// session): sent to the URI of the judged answer with the probe's headers (its
    /// credentials) and the cleanup's own, an empty body, within the probe timeout. It is
    /// neither judged nor reported, and its answer is dropped (a failure is logged at
    /// DEBUG). Called with the last answer seen, also when the body failed. None by
    /// default.
    fn cleanup(&self, answer: &ProbeAnswer<'_>) -> Option<Cleanup> {
        let _ = answer;
        None
    }

    /// At most how many body bytes [`judge`](Self::judge) sees; more is not read
    /// ([`DEFAULT_BODY_LIMIT`] by default).
    fn body_limit(&self) -> usize {
        DEFAULT_BODY_LIMIT
    }
}

impl<T: ProbeCheck + ?Sized> ProbeCheck for Arc<T> {
    fn judge(&self, answer: &ProbeAnswer<'_>) -> Judgement {
        (**self).judge(answer)
    }

    fn cleanup(&self, answer: &ProbeAnswer<'_>) -> Option<Cleanup> {
        (**self).cleanup(answer)
    }

    fn body_limit(&self) -> usize {
        (**self).body_limit()
    }
}

impl<T: ProbeCheck + ?Sized> ProbeCheck for Box<T> {
    fn judge(&self, answer: &ProbeAnswer<'_>) -> Judgement {
        (**self).judge(answer)
    }

    fn cleanup(&self, answer: &ProbeAnswer<'_>) -> Option<Cleanup> {
        (**self).cleanup(answer)
    }

    fn body_limit(&self) -> usize {
        (**self).body_limit()
    }
}

/// What a [`ProbeCheck`] sees of the answer to a probe.
///
/// # Example
///
/// ```
/// use tower_health_classify::check::ProbeAnswer;
/// use tower_health_classify::{HealthStatus, Reason, Verdict};
///
/// let uri = http::Uri::from_static("http://127.0.0.1:9001/mcp");
/// let headers = http::HeaderMap::new();
/// let ok = Verdict::new(HealthStatus::Healthy, Reason::Ok);
/// let answer = ProbeAnswer::new(&uri, http::StatusCode::OK, &headers, Some(ok))
///     .with_body(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, true);
/// assert!(answer.complete);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ProbeAnswer<'a> {
    /// The URI the probe was sent to (a [`Judgement::Retry`] changes it).
    pub uri: &'a Uri,
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: &'a HeaderMap,
    /// The body read so far: empty on the first call, at most
    /// [`body_limit`](ProbeCheck::body_limit) bytes.
    pub body: &'a [u8],
    /// Nothing more will come: the body ended, or reached the limit.
    pub complete: bool,
    /// The layer's verdict on the status and headers alone (what
    /// [`Judgement::Keep`] reports); `None` only for a classifier's `Local` outcome.
    pub verdict: Option<Verdict>,
}

impl<'a> ProbeAnswer<'a> {
    /// The head of an answer from `uri`: no body read yet.
    pub fn new(
        uri: &'a Uri,
        status: StatusCode,
        headers: &'a HeaderMap,
        verdict: Option<Verdict>,
    ) -> Self {
        ProbeAnswer {
            uri,
            status,
            headers,
            body: &[],
            complete: false,
            verdict,
        }
    }

    /// The same answer with `body` read, `complete` when nothing more will come.
    pub fn with_body(self, body: &'a [u8], complete: bool) -> Self {
        ProbeAnswer {
            body,
            complete,
            ..self
        }
    }
}

/// What a [`ProbeCheck`] decided about an answer.
///
/// # Example
///
/// ```
/// use tower_health_classify::check::{Judgement, ProbeAnswer};
/// use tower_health_classify::{HealthStatus, Reason, Verdict};
///
/// // The whole body first; then `ok`, or Unhealthy.
/// fn judge(answer: &ProbeAnswer<'_>) -> Judgement {
///     match (answer.complete, answer.body) {
///         (false, _) => Judgement::ReadBody,
///         (true, b"ok") => Judgement::Keep,
///         (true, _) => Judgement::Verdict(Verdict::new(
///             HealthStatus::Unhealthy,
///             Reason::UnexpectedStatus,
///         )),
///     }
/// }
///
/// let uri = http::Uri::from_static("http://127.0.0.1:9001/health");
/// let headers = http::HeaderMap::new();
/// let head = ProbeAnswer::new(&uri, http::StatusCode::OK, &headers, None);
/// assert_eq!(judge(&head), Judgement::ReadBody);
/// assert_eq!(judge(&head.with_body(b"ok", true)), Judgement::Keep);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Judgement {
    /// The layer's verdict on the status and headers stands.
    Keep,
    /// This verdict instead.
    Verdict(Verdict),
    /// Read (more of) the body, then judge again. Once the body is
    /// [`complete`](ProbeAnswer::complete), this counts as [`Keep`](Self::Keep).
    ReadBody,
    /// This answer is not the one to judge: send the probe (its method and headers, an
    /// empty body) to this URI instead and judge that answer. Once per probe; a second
    /// `Retry` counts as [`Keep`](Self::Keep).
    Retry(Uri),
}

/// A request that closes what a probe opened; see [`ProbeCheck::cleanup`].
///
/// # Example
///
/// ```
/// use tower_health_classify::check::Cleanup;
///
/// let cleanup = Cleanup::new(http::Method::DELETE)
///     .header(http::HeaderName::from_static("mcp-session-id"), http::HeaderValue::from_static("1868a90c"));
/// assert_eq!(cleanup.method, http::Method::DELETE);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cleanup {
    /// The method, `DELETE` say.
    pub method: Method,
    /// Headers set on top of the probe's own.
    pub headers: HeaderMap,
}

impl Cleanup {
    /// A cleanup request with `method`.
    pub fn new(method: Method) -> Self {
        Cleanup {
            method,
            headers: HeaderMap::new(),
        }
    }

    /// With header `name` set to `value`.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

// A session id is a bearer capability for the session: never shown.
impl fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cleanup")
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}
