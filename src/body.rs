//! Judged streams: the response body of [`HealthClassify`](crate::HealthClassify) when
//! the layer classifies bodies too
//! ([`classify_body`](crate::HealthClassifyLayer::classify_body)).
//!
//! A backend can answer `200` and die in the middle of the body: an MCP server's
//! `text/event-stream` cut off after the first event, a download reset halfway. The head
//! was fine, so the layer reported a success; with `classify_body` the body is watched
//! too, and the frame that fails is reported as the backend's failure.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::{Arc, Mutex};
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_health_classify::{
//!     sink_fn, AuthStrategy, HealthClassifyLayer, Outcome, Reason, TransportKind,
//! };
//! # use std::{io, pin::Pin, task::{Context, Poll}};
//! # use bytes::Bytes;
//! # use http_body::Frame;
//! # /// One event, then the connection is reset.
//! # struct CutOff(bool);
//! # impl http_body::Body for CutOff {
//! #     type Data = Bytes;
//! #     type Error = io::Error;
//! #     fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
//! #         let first = !std::mem::replace(&mut self.0, true);
//! #         Poll::Ready(Some(if first {
//! #             Ok(Frame::data(Bytes::from_static(b"data: {}\n\n")))
//! #         } else {
//! #             Err(io::ErrorKind::ConnectionReset.into())
//! #         }))
//! #     }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Answers 200, sends one event, then the connection is reset.
//! let backend = service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(Response::new(CutOff(false)))
//! });
//!
//! let reports = Arc::new(Mutex::new(Vec::new()));
//! let seen = reports.clone();
//! let sink = sink_fn(AuthStrategy::Unauthenticated, move |report| {
//!     seen.lock().unwrap().push((report.outcome.clone(), report.verdict.unwrap().reason));
//! });
//! let service = ServiceBuilder::new()
//!     .layer(HealthClassifyLayer::new(sink).classify_body())
//!     .service(backend);
//!
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! let error = response.into_body().collect().await.unwrap_err();
//! assert_eq!(error.transport_kind(), Some(TransportKind::Reset));
//!
//! // Once at the head, once at the failing frame.
//! let reset = TransportKind::Reset;
//! assert_eq!(
//!     *reports.lock().unwrap(),
//!     [
//!         (Outcome::Success(http::StatusCode::OK), Reason::Ok),
//!         (Outcome::Transport(reset), Reason::Transport(reset)),
//!     ]
//! );
//! # }
//! ```

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::classify::Classifier;
use crate::error::{BackendError, BoxError};
use crate::future::State;
use crate::sink::HealthSink;
use crate::verdict::Verdict;

/// The layer judges the response head only (the default): the body is returned as the
/// inner service produced it.
///
/// # Example
///
/// ```
/// use tower_health_classify::{body::HeadOnly, HealthClassifyLayer, DefaultClassifier};
///
/// let _layer: HealthClassifyLayer<(), DefaultClassifier, HeadOnly> = HealthClassifyLayer::new(());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadOnly;

/// The layer judges the response body too: a body that fails after the head is reported
/// once as the backend's failure. Set by
/// [`classify_body`](crate::HealthClassifyLayer::classify_body).
///
/// # Example
///
/// ```
/// use tower_health_classify::{body::ClassifyBody, HealthClassifyLayer, DefaultClassifier};
///
/// let _layer: HealthClassifyLayer<(), DefaultClassifier, ClassifyBody> =
///     HealthClassifyLayer::new(()).classify_body();
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassifyBody;

pin_project! {
    /// The response body when the layer classifies bodies
    /// ([`classify_body`](crate::HealthClassifyLayer::classify_body)).
    ///
    /// Frames pass through unchanged. The first error the inner body yields is classified
    /// like an inner service's error ([`classify_error`](crate::classify_error): reset,
    /// closed, timeout, ...), reported to the sink once as the backend's failure, and
    /// returned as the matching [`BackendError`] with the original error as its
    /// `source()`. A body that ends cleanly, or that the caller drops, reports nothing;
    /// neither does a failing body whose head was already reported Bad (a 503 that is
    /// then cut off is one failure, not two).
    ///
    /// # Example
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use http::{Request, Response};
    /// use tower::{service_fn, Layer, ServiceExt};
    /// use tower_health_classify::HealthClassifyLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let backend = service_fn(|_req: Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(bytes::Bytes::from("ok"))))
    /// });
    /// let service = HealthClassifyLayer::new(()).classify_body().layer(backend);
    /// let body = service.oneshot(Request::new(())).await.unwrap().into_body();
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
    /// # }
    /// ```
    pub struct ResponseBody<B, K, C>
    where
        K: HealthSink,
    {
        #[pin]
        inner: B,
        state: State<K, C>,
        // Whether a failing frame is still to be reported.
        armed: bool,
    }
}

impl<B, K: HealthSink, C> ResponseBody<B, K, C> {
    /// The body of a response whose head was reported with `verdict`.
    pub(crate) fn new(inner: B, state: State<K, C>, verdict: Option<Verdict>) -> Self {
        ResponseBody {
            inner,
            state,
            // A head already reported Bad is the call's one Bad report: a body failure
            // after it is the same failure, not a second one.
            armed: verdict.is_some_and(|verdict| !verdict.is_bad()),
        }
    }
}

impl<B, K, C> Body for ResponseBody<B, K, C>
where
    B: Body,
    B::Error: Into<BoxError>,
    K: HealthSink,
    C: Classifier,
{
    type Data = B::Data;
    type Error = BackendError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            None => Poll::Ready(None),
            Some(Err(error)) => {
                let error = error.into();
                let exchange = this.state.exchange();
                let error = if std::mem::take(this.armed) {
                    exchange.error(error)
                } else {
                    exchange.type_error(error)
                };
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B, K, C> std::fmt::Debug for ResponseBody<B, K, C>
where
    B: std::fmt::Debug,
    K: HealthSink,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}
