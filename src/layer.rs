//! `HealthClassifyLayer`: configuration and the sink, applied to a service.

use std::marker::PhantomData;
use std::sync::Arc;

use http::HeaderName;
use tower_layer::Layer;

use crate::body::{ClassifyBody, HeadOnly};
use crate::classify::DefaultClassifier;
use crate::service::HealthClassify;
use crate::verdict::Origin;

/// Wraps a backend service in [`HealthClassify`]: classify every exchange, report it to
/// the sink, and turn auth failures and transport errors into typed [`BackendError`]s.
///
/// One layer per backend: the sink (a registry's `BackendHandle`, say) knows which
/// backend and which outgoing auth strategy it stands for. Cloning the layer clones the
/// sink, so clones report to the same place when the sink shares its state (an `Arc`, a
/// registry handle).
///
/// [`BackendError`]: crate::BackendError
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_health_classify::{sink_fn, AuthStrategy, BackendError, HealthClassifyLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let backend = service_fn(|_req: Request<()>| async {
///     let response = Response::builder()
///         .status(StatusCode::UNAUTHORIZED)
///         .header("www-authenticate", r#"Bearer scope="mcp""#)
///         .body(())
///         .unwrap();
///     Ok::<_, Infallible>(response)
/// });
///
/// let svc = ServiceBuilder::new()
///     .layer(
///         HealthClassifyLayer::new(sink_fn(AuthStrategy::UpstreamInject, |report| {
///             // A credential-less request to a backend whose users bring their own token:
///             // the challenge proves the backend is up.
///             assert!(report.verdict.unwrap().is_good());
///         }))
///         .credential_header(http::HeaderName::from_static("x-api-key")),
///     )
///     .service(backend);
///
/// let err = svc.oneshot(Request::new(())).await.unwrap_err();
/// assert!(err.is_auth());
/// assert_eq!(err.auth().unwrap().scope(), Some("mcp"));
/// # }
/// ```
#[derive(Debug)]
pub struct HealthClassifyLayer<K, C = DefaultClassifier, M = HeadOnly> {
    sink: K,
    classifier: C,
    credential_headers: Arc<[HeaderName]>,
    pass_through_auth: bool,
    /// Whose failure a readiness error is: a caller's, unless the prober built the layer.
    readiness_origin: Origin,
    mode: PhantomData<fn() -> M>,
}

// By hand: a derive would ask `M: Clone`.
impl<K: Clone, C: Clone, M> Clone for HealthClassifyLayer<K, C, M> {
    fn clone(&self) -> Self {
        HealthClassifyLayer {
            sink: self.sink.clone(),
            classifier: self.classifier.clone(),
            credential_headers: self.credential_headers.clone(),
            pass_through_auth: self.pass_through_auth,
            readiness_origin: self.readiness_origin,
            mode: PhantomData,
        }
    }
}

impl<K> HealthClassifyLayer<K> {
    /// A layer reporting to `sink`, with the default classifier, in typed mode, judging
    /// response heads only.
    pub fn new(sink: K) -> Self {
        HealthClassifyLayer {
            sink,
            classifier: DefaultClassifier,
            credential_headers: Arc::from([]),
            pass_through_auth: false,
            readiness_origin: Origin::Traffic,
            mode: PhantomData,
        }
    }
}

impl<K, C, M> HealthClassifyLayer<K, C, M> {
    /// Classifies with `classifier` instead of the default tables.
    pub fn classifier<C2>(self, classifier: C2) -> HealthClassifyLayer<K, C2, M> {
        HealthClassifyLayer {
            sink: self.sink,
            classifier,
            credential_headers: self.credential_headers,
            pass_through_auth: self.pass_through_auth,
            readiness_origin: self.readiness_origin,
            mode: PhantomData,
        }
    }

    /// The same configuration reporting to `sink`.
    #[cfg(feature = "probe")]
    pub(crate) fn with_sink<K2>(&self, sink: K2) -> HealthClassifyLayer<K2, C, M>
    where
        C: Clone,
    {
        HealthClassifyLayer {
            sink,
            classifier: self.classifier.clone(),
            credential_headers: self.credential_headers.clone(),
            pass_through_auth: self.pass_through_auth,
            readiness_origin: self.readiness_origin,
            mode: PhantomData,
        }
    }

    /// Judges response bodies too (judged streams): a body that fails after the head
    /// (reset, closed, a timeout while streaming) is reported once as the backend's
    /// failure, and its error is returned as a [`BackendError`](crate::BackendError). A
    /// clean end adds nothing. The response body becomes a
    /// [`ResponseBody`](crate::body::ResponseBody); see it for the exact rule.
    ///
    /// Such a call reports twice: once at the head, and once at the failing frame (unless
    /// the head was already reported Bad). Without this, a backend that dies in the middle
    /// of a long-lived event stream stays Healthy.
    pub fn classify_body(self) -> HealthClassifyLayer<K, C, ClassifyBody> {
        HealthClassifyLayer {
            sink: self.sink,
            classifier: self.classifier,
            credential_headers: self.credential_headers,
            pass_through_auth: self.pass_through_auth,
            readiness_origin: self.readiness_origin,
            mode: PhantomData,
        }
    }

    /// Counts `name` as a credential header, in addition to `Authorization` (which always
    /// counts): a request carrying it was sent with credentials. For API keys in custom
    /// headers such as `x-api-key`. Only the header's presence is looked at, never its
    /// value.
    pub fn credential_header(mut self, name: HeaderName) -> Self {
        self.credential_headers = crate::verdict::with_header(&self.credential_headers, name);
        self
    }

    /// Proxy mode: 401, 403 and 407 responses are returned unchanged (with their
    /// [`Outcome`](crate::Outcome) in the response extensions) instead of as
    /// [`BackendError::Auth`](crate::BackendError::Auth), so a proxy can forward the
    /// challenge to its client. They are still classified and reported.
    pub fn pass_through_auth(mut self) -> Self {
        self.pass_through_auth = true;
        self
    }

    /// For the prober's own layer: a readiness error of its service is the probe's
    /// failure (there is no request yet to carry the [`Probe`](crate::Probe) extension).
    #[cfg(feature = "probe")]
    pub(crate) fn for_probes(mut self) -> Self {
        self.readiness_origin = Origin::Probe;
        self
    }
}

impl<S, K: Clone, C: Clone, M> Layer<S> for HealthClassifyLayer<K, C, M> {
    type Service = HealthClassify<S, K, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        HealthClassify::new(
            inner,
            self.sink.clone(),
            self.classifier.clone(),
            self.credential_headers.clone(),
            self.pass_through_auth,
            self.readiness_origin,
        )
    }
}
