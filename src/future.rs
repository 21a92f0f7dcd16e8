//! The response future of [`HealthClassify`](crate::HealthClassify).

use std::future::Future;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Response;
use pin_project_lite::pin_project;

use crate::body::{ClassifyBody, HeadOnly, ResponseBody};
use crate::classify::{tls_failure_of, Classifier, Outcome};
use crate::clock::{self, Stamp};
use crate::error::{BackendError, BoxError, TlsFailure};
use crate::sink::{judge_and_report, Facts, HealthSink};
use crate::verdict::{Credentials, Origin, Verdict};

pin_project! {
    /// Response future of [`HealthClassify`](crate::HealthClassify).
    ///
    /// Reports exactly once: when the inner future completes, or with
    /// [`Outcome::Cancelled`] when this future is dropped before that.
    pub struct ResponseFuture<F, K, C, M = HeadOnly>
    where
        K: HealthSink,
    {
        #[pin]
        inner: F,
        // Taken when the report is made, so that it is made once.
        state: Option<State<K, C>>,
        mode: PhantomData<fn() -> M>,
    }

    impl<F, K, C, M> PinnedDrop for ResponseFuture<F, K, C, M>
    where
        K: HealthSink,
    {
        fn drop(this: Pin<&mut Self>) {
            if let Some(state) = this.project().state.take() {
                state.exchange().report(&Outcome::Cancelled, None);
            }
        }
    }
}

/// What the future needs once the inner future is done.
pub(crate) struct State<K, C> {
    sink: K,
    classifier: C,
    credentials: Credentials,
    origin: Origin,
    start: Stamp,
    /// The sink asked for precise latencies: the end is read from the same clock.
    precise: bool,
    pass_through_auth: bool,
}

impl<K, C> State<K, C> {
    #[inline]
    pub(crate) fn exchange(&self) -> Exchange<'_, K, C> {
        let ended = clock::read(self.precise);
        Exchange {
            sink: &self.sink,
            classifier: &self.classifier,
            credentials: Some(self.credentials),
            origin: self.origin,
            latency: ended.since(self.start),
            ended,
        }
    }
}

impl<F, K: HealthSink, C, M> ResponseFuture<F, K, C, M> {
    /// `start` is the clock reading before the inner call, and whether it came from the
    /// precise clock.
    #[inline]
    pub(crate) fn new(
        inner: F,
        sink: K,
        classifier: C,
        credentials: Credentials,
        origin: Origin,
        (start, precise): (Stamp, bool),
        pass_through_auth: bool,
    ) -> Self {
        ResponseFuture {
            inner,
            state: Some(State {
                sink,
                classifier,
                credentials,
                origin,
                start,
                precise,
                pass_through_auth,
            }),
            mode: PhantomData,
        }
    }
}

// One `Future` impl per body mode: see `service.rs` for why.

impl<F, K, C, R, E> Future for ResponseFuture<F, K, C, HeadOnly>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<BoxError>,
    K: HealthSink,
    C: Classifier,
{
    type Output = Result<Response<R>, BackendError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let state = this
            .state
            .take()
            .expect("ResponseFuture polled after completion");
        let exchange = state.exchange();
        Poll::Ready(match result {
            Ok(response) => exchange.response(response, state.pass_through_auth),
            Err(error) => Err(exchange.error(error.into())),
        })
    }
}

impl<F, K, C, R, E> Future for ResponseFuture<F, K, C, ClassifyBody>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Into<BoxError>,
    K: HealthSink,
    C: Classifier,
{
    type Output = Result<Response<ResponseBody<R, K, C>>, BackendError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let state = this
            .state
            .take()
            .expect("ResponseFuture polled after completion");
        let exchange = state.exchange();
        Poll::Ready(match result {
            Ok(response) => {
                let (response, verdict) =
                    exchange.judged_response(response, state.pass_through_auth);
                response
                    .map(|response| response.map(|body| ResponseBody::new(body, state, verdict)))
            }
            Err(error) => Err(exchange.error(error.into())),
        })
    }
}

/// One finished exchange, ready to be classified and reported. Shared by the response
/// future, by `poll_ready`, whose errors are reported the same way, and by the body of a
/// judged stream.
pub(crate) struct Exchange<'a, K, C> {
    pub(crate) sink: &'a K,
    pub(crate) classifier: &'a C,
    /// What the request carried; `None` for a readiness error, which has no request:
    /// then an auth error says for itself whether credentials were sent.
    pub(crate) credentials: Option<Credentials>,
    pub(crate) origin: Origin,
    pub(crate) latency: Duration,
    pub(crate) ended: Stamp,
}

impl<K: HealthSink, C> Exchange<'_, K, C> {
    /// What the report of this exchange says besides its outcome, for
    /// [`report`](Self::report) and [`judged_report`](Self::judged_report) to send.
    #[inline]
    fn facts(&self, outcome: &Outcome, tls_failure: Option<TlsFailure>) -> Facts {
        let credentials = match (self.credentials, outcome) {
            (Some(credentials), _) => credentials,
            (None, Outcome::Auth(auth)) if auth.credentials_sent() => Credentials::Sent,
            (None, _) => Credentials::NotSent,
        };
        Facts {
            credentials,
            origin: self.origin,
            latency: self.latency,
            tls_failure,
            ended: Some(self.ended),
        }
    }

    /// Reports to the sink. A sink that panics loses its report, never the caller's
    /// response: the panic is caught and logged at ERROR. (A panic in a drop that runs
    /// while another panic unwinds would abort the process.)
    #[inline]
    fn report(&self, outcome: &Outcome, tls_failure: Option<TlsFailure>) {
        let reported = panic::catch_unwind(AssertUnwindSafe(|| {
            judge_and_report(self.sink, outcome, self.facts(outcome, tls_failure));
        }));
        if reported.is_err() {
            sink_panicked(outcome);
        }
    }

    /// [`report`](Self::report), returning the verdict reported (`None` if the sink
    /// panicked). Apart from it because a value leaving the unwind guard cost the
    /// default path, which never needs it, about 30 instructions.
    fn judged_report(&self, outcome: &Outcome) -> Option<Verdict> {
        let reported = panic::catch_unwind(AssertUnwindSafe(|| {
            judge_and_report(self.sink, outcome, self.facts(outcome, None))
        }));
        reported.unwrap_or_else(|_| {
            sink_panicked(outcome);
            None
        })
    }

    /// Marks an auth error as sent with credentials when the request carried them. An
    /// error that says so itself (from an auth layer further in) keeps saying so.
    #[inline]
    fn mark_credentials(&self, outcome: &mut Outcome) {
        if let (Outcome::Auth(auth), Some(Credentials::Sent)) = (outcome, self.credentials) {
            auth.set_credentials_sent(true);
        }
    }

    /// Marks the outcome's auth error with the request's credentials flag, reports it.
    #[inline]
    fn classify_and_report(
        &self,
        mut outcome: Outcome,
        tls_failure: Option<TlsFailure>,
    ) -> Outcome {
        self.mark_credentials(&mut outcome);
        self.report(&outcome, tls_failure);
        outcome
    }
}

#[cold]
fn sink_panicked(outcome: &Outcome) {
    tracing::error!(
        target: "tower_health_classify",
        outcome = outcome.as_str(),
        "health sink panicked; this report is lost"
    );
}

impl<K: HealthSink, C: Classifier> Exchange<'_, K, C> {
    #[inline]
    fn response<R>(
        &self,
        mut response: Response<R>,
        pass_through_auth: bool,
    ) -> Result<Response<R>, BackendError> {
        let outcome = self.classify_and_report(
            self.classifier
                .classify_response(response.status(), response.headers()),
            None,
        );
        match outcome {
            // Not inserted: the first insert into empty extensions allocates.
            Outcome::Success(_) => Ok(response),
            Outcome::Auth(auth) if !pass_through_auth => Err(BackendError::Auth(auth)),
            outcome => {
                response.extensions_mut().insert(outcome);
                Ok(response)
            }
        }
    }

    /// [`response`](Self::response), and the verdict the head was reported with (for a
    /// judged stream). Apart from it for the reason given at `judged_report`; the match
    /// at its end is written out in both, as one shared function (even
    /// `#[inline(always)]`) cost the default path 14 instructions and this one 32
    /// (`benches/instructions.sh`).
    fn judged_response<R>(
        &self,
        mut response: Response<R>,
        pass_through_auth: bool,
    ) -> (Result<Response<R>, BackendError>, Option<Verdict>) {
        let mut outcome = self
            .classifier
            .classify_response(response.status(), response.headers());
        self.mark_credentials(&mut outcome);
        let verdict = self.judged_report(&outcome);
        let response = match outcome {
            Outcome::Success(_) => Ok(response),
            Outcome::Auth(auth) if !pass_through_auth => Err(BackendError::Auth(auth)),
            outcome => {
                response.extensions_mut().insert(outcome);
                Ok(response)
            }
        };
        (response, verdict)
    }

    #[inline]
    pub(crate) fn error(&self, error: BoxError) -> BackendError {
        let outcome = self.classifier.classify_error(&*error);
        // Read only on this path: the cause costs nothing to an exchange that succeeded.
        let tls_failure = tls_failure_of(&outcome, &*error);
        let outcome = self.classify_and_report(outcome, tls_failure);
        BackendError::from_outcome(outcome, tls_failure, error)
    }

    /// Types an inner error as [`error`](Self::error) does, without a report.
    pub(crate) fn type_error(&self, error: BoxError) -> BackendError {
        let mut outcome = self.classifier.classify_error(&*error);
        let tls_failure = tls_failure_of(&outcome, &*error);
        self.mark_credentials(&mut outcome);
        BackendError::from_outcome(outcome, tls_failure, error)
    }
}
