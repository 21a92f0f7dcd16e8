//! The response future of [`HealthGate`](crate::HealthGate).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::error::BackendError;
use crate::verdict::HealthStatus;

pin_project! {
    /// The response future of [`HealthGate`](crate::HealthGate): the inner service's
    /// future, or [`BackendError::NotSent`] at once when the request was held back.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Sent {
            #[pin]
            inner: F,
        },
        NotSent {
            status: HealthStatus,
        },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn sent(inner: F) -> Self {
        ResponseFuture {
            kind: Kind::Sent { inner },
        }
    }

    pub(crate) fn not_sent(status: HealthStatus) -> Self {
        ResponseFuture {
            kind: Kind::NotSent { status },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<BackendError>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Sent { inner } => inner.poll(cx),
            KindProj::NotSent { status } => not_sent(*status),
        }
    }
}

/// Out of line, so that the common arm returns the inner future's output in place: built
/// inline, the two arms' outputs met in a temporary that was copied field by field (8
/// instructions a request, `benches/instructions.sh`).
#[cold]
#[inline(never)]
fn not_sent<T, E: From<BackendError>>(status: HealthStatus) -> Poll<Result<T, E>> {
    Poll::Ready(Err(E::from(BackendError::NotSent { status })))
}
