//! `RetryPolicy`: a [`tower::retry::Policy`] that decides from the [`Outcome`] of an
//! attempt, not from its status code alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::Policy;

use crate::classify::{classify_error, retry_after, Outcome};
use crate::error::{BackendError, BoxError, TransportKind};

/// Total attempts by default: the first one and two retries.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Long enough for the usual per-second and per-10-seconds rate-limit windows, short
/// enough that a request held for it still fits within a typical 30 s client timeout.
const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(10);

/// A [`tower::retry::Policy`] that retries what is safe and useful to retry, judged from
/// the [`Outcome`] of each attempt.
///
/// | what the attempt showed | retried |
/// |---|---|
/// | `Transport(ConnectionRefused)`, `Transport(Dns)`, `Transport(ConnectTimeout)` | any method: the request never reached the backend |
/// | `Transport(Closed)`, `Transport(Reset)`, `Transport(Timeout)` | idempotent methods only: the backend may have acted on it |
/// | 502, 504 | idempotent methods only |
/// | 503 | idempotent methods only; after `Retry-After` when it is sent and at most the [cap](RetryPolicy::retry_after_cap), never when above it |
/// | 429, 408 | idempotent methods only; after `Retry-After` as for 503, else with backoff |
/// | 401, 403, 407 (returned as [`BackendError::Auth`] or, in pass-through mode, as a response), other 4xx | never |
/// | other 5xx (500, 501, ...) | never: a broken handler fails the same way again |
/// | `Transport(Tls)`, `Transport(Unreachable)`, `Transport(Protocol)`, `Transport(Other)` | never: a certificate, a route or a peer that is not HTTP does not fix itself in 100 ms |
/// | `Local(..)` (load shed, invalid URI) | never: the fault is on this side |
/// | a plain success | never |
///
/// Idempotent methods are those [`Method::is_idempotent`] names: GET, HEAD, OPTIONS,
/// TRACE, PUT and DELETE (RFC 9110 §9.2.2). A 429 is retried for idempotent methods
/// only: RFC 6585 does not promise that a rate limiter rejected the request before it
/// was processed.
///
/// Every retry is bounded three ways: at most [`max_attempts`](RetryPolicy::max_attempts)
/// attempts in all (3 by default), a wait between attempts, and a shared retry budget.
/// The wait is the backend's `Retry-After` when it sent one on a 429, 408 or 503 (at most
/// [`retry_after_cap`](RetryPolicy::retry_after_cap), 10 s by default; a longer one gives
/// up at once and returns that response), else exponential backoff with full jitter: a
/// random delay in `[0, min(max, base * 2^(retry - 1))]`, 100 ms base and 5 s max by
/// default. The budget is a [`TpsBudget`]: every request deposits once, every retry
/// withdraws, and no retry is made when it is overdrawn, so a backend that is down gets
/// at most a fraction more traffic, not three times as much.
///
/// # Where it goes: outside [`HealthClassify`](crate::HealthClassify)
///
/// The recommended stack is `Retry -> HealthClassify -> Timeout -> client`:
///
/// - every attempt is classified and reported, so a backend that fails twice and then
///   answers is seen failing twice (with the layer outside `Retry`, only the final result
///   is reported and the failures that retries hid are lost);
/// - the policy reads the [`Outcome`] the layer put into the response extensions and the
///   typed [`BackendError`], so it never classifies again, and the two cannot disagree;
/// - the timeout bounds each attempt, not the whole retry sequence (put another
///   `Timeout` outside `Retry` to bound that).
///
/// The policy implements [`Policy`] for two error types:
///
/// - [`BackendError`], the layer's error, for the recommended stack;
/// - [`BoxError`], for stacks where a tower layer boxes errors between `Retry` and the
///   inner service (a `Timeout` outside `HealthClassify`), or where `HealthClassify` is
///   not inside `Retry` at all. A boxed [`BackendError`] keeps its outcome; any other
///   error is classified with [`classify_error`].
///
/// Responses are read only through their [`Outcome`] extension. A response without one
/// is taken as a success and not retried: that is what the layer means by leaving it
/// out, and a custom classifier that calls some 5xx a success is obeyed. So with
/// `HealthClassify` *outside* `Retry`, error responses are not retried (errors still
/// are).
///
/// # Bodies must be cloneable
///
/// `Retry` keeps a copy of each request to send again, so the policy is a [`Policy`] for
/// `Request<B>` only where `B: Clone`: a service whose request body is not `Clone` cannot
/// be wrapped in `Retry` with this policy at all. Streaming bodies (`hyper::body::Incoming`,
/// a boxed body) are not `Clone`: buffer them first (into `Bytes`, `Full<Bytes>`, a
/// `String`), or leave such routes without retries. Request extensions are cloned
/// with the request, so a [`Probe`](crate::Probe) or [`Credentials`](crate::Credentials)
/// marker holds for every attempt.
///
/// # Clones share the budget
///
/// `Retry` clones the policy for every request; the attempt count and the jitter state
/// belong to that clone, the budget is shared by all clones through an `Arc`. Build one
/// policy per backend and clone it: two calls to [`RetryPolicy::new`] make two budgets.
///
/// # Example
///
/// ```
/// use std::io;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use http::{Method, Request, Response};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_health_classify::{HealthClassifyLayer, RetryPolicy};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // Stands in for a client to a backend that is restarting: refused twice, then up.
/// let calls = Arc::new(AtomicUsize::new(0));
/// let client = service_fn({
///     let calls = calls.clone();
///     move |_req: Request<String>| {
///         let call = calls.fetch_add(1, Ordering::SeqCst);
///         async move {
///             if call < 2 {
///                 Err(io::Error::from(io::ErrorKind::ConnectionRefused))
///             } else {
///                 Ok(Response::new(String::from("up")))
///             }
///         }
///     }
/// });
///
/// let service = ServiceBuilder::new()
///     .retry(RetryPolicy::default())
///     .layer(HealthClassifyLayer::new(())) // a real gateway passes a registry handle
///     .timeout(Duration::from_secs(10))
///     .service(client);
///
/// // A POST: refused connections are retried for any method.
/// let request = Request::builder()
///     .method(Method::POST)
///     .uri("http://backend.internal/mcp")
///     .body(String::from(r#"{"jsonrpc":"2.0"}"#))
///     .unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.body(), "up");
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    jitter: bool,
    retry_after_cap: Duration,
    budget: Arc<TpsBudget>,
    /// Attempts finished in this request's session. `Retry` clones the policy per request
    /// and never calls `retry` on the original, so the original's count stays 0.
    attempts: u32,
    /// xorshift state, seeded on the first retry of a session (0: not seeded yet), so that
    /// clones made from one policy do not all draw the same delays.
    rng: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// A policy with the defaults: 3 attempts in all, backoff from 100 ms doubling up to
    /// 5 s with full jitter, `Retry-After` honoured up to 10 s, and a fresh
    /// [`TpsBudget`] (10 s window, 10 retries per second in reserve, retries for 20 % of
    /// requests on top).
    pub fn new() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            jitter: true,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            attempts: 0,
            rng: 0,
        }
    }

    /// At most `attempts` attempts per request, the first one included. `1` (or `0`,
    /// taken as `1`) turns retries off, and requests are then not even copied.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Exponential backoff: the `n`th retry waits up to `base * 2^(n - 1)`, never more
    /// than `max`. With jitter (the default) the wait is drawn uniformly from zero to that
    /// bound ("full jitter"), so that clients that failed together do not retry together.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Waits exactly the backoff bound instead of a random part of it. For tests that
    /// need exact timings, and for callers that add their own jitter.
    pub fn no_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The longest `Retry-After` (on a 429, 408 or 503) that is waited for. A backend
    /// that asks for a longer wait gets none: its response is returned at once, since
    /// holding the caller's request that long helps nobody.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
    }

    /// Draws retries from `budget`, shared with whatever else holds it (several backends'
    /// policies, say), instead of this policy's own.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tower::retry::budget::TpsBudget;
    /// use tower_health_classify::RetryPolicy;
    ///
    /// // Retries for at most 10 % of requests, with 1 per second in reserve.
    /// let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 1, 0.1));
    /// let policy = RetryPolicy::new().budget(budget);
    /// # let _ = policy;
    /// ```
    pub fn budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Decides on one finished attempt: `retry` is what made it worth another one (and the
    /// outcome it was read from, for the logs), `None` when nothing did.
    fn decide(
        &mut self,
        method: &Method,
        retry: Option<(Retryable, &Outcome)>,
    ) -> Option<RetryDelay> {
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts == 1 {
            // One deposit per request, whatever its result: the budget is a share of all
            // requests, not of the successful ones.
            self.budget.deposit();
        }
        let (retry, outcome) = retry?;
        if !retry.any_method && !method.is_idempotent() {
            return None;
        }
        if self.attempts >= self.max_attempts {
            tracing::debug!(attempts = self.attempts, %outcome, "not retrying: attempts exhausted");
            return None;
        }
        let delay = match retry.retry_after {
            Some(after) if after > self.retry_after_cap => {
                tracing::debug!(
                    retry_after = ?after,
                    cap = ?self.retry_after_cap,
                    %outcome,
                    "not retrying: Retry-After above the cap",
                );
                return None;
            }
            Some(after) => after,
            None => self.backoff_delay(),
        };
        if !self.budget.withdraw() {
            tracing::debug!(%outcome, "not retrying: retry budget exhausted");
            return None;
        }
        tracing::debug!(attempt = self.attempts + 1, ?delay, %outcome, "retrying");
        Some(RetryDelay {
            sleep: tokio::time::sleep(delay),
        })
    }

    /// The wait before the next attempt, after `self.attempts` attempts.
    fn backoff_delay(&mut self) -> Duration {
        let doublings = self.attempts.saturating_sub(1);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        let bound = self
            .backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max);
        if !self.jitter {
            return bound;
        }
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(crate::backoff::next_random(&mut self.rng) % nanos.saturating_add(1))
    }

    fn decide_response<R>(
        &mut self,
        method: &Method,
        response: &Response<R>,
    ) -> Option<RetryDelay> {
        // No extension: a plain success, which the layer leaves out.
        let outcome = response.extensions().get::<Outcome>();
        let mut retry = outcome.and_then(judge);
        if let Some((retry, Outcome::ServerError(StatusCode::SERVICE_UNAVAILABLE))) = &mut retry {
            retry.retry_after = retry_after(response.headers());
        }
        self.decide(method, retry)
    }

    fn clone_if_retrying<B: Clone>(&self, request: &Request<B>) -> Option<Request<B>> {
        (self.max_attempts > 1).then(|| request.clone())
    }
}

// === impl Policy ===

/// For `Retry` directly outside [`HealthClassify`](crate::HealthClassify): responses are
/// read through their [`Outcome`] extension, errors through their
/// [`transport_kind`](BackendError::transport_kind) or, for [`BackendError::Other`], the
/// outcome a custom classifier gave them.
impl<B, R> Policy<Request<B>, Response<R>, BackendError> for RetryPolicy
where
    B: Clone,
{
    type Future = RetryDelay;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<R>, BackendError>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response) => self.decide_response(request.method(), response),
            Err(BackendError::Other { outcome, .. }) => {
                self.decide(request.method(), judge(outcome))
            }
            Err(error) => {
                // Of the others, only transport errors can be retried: no need for their
                // outcome (an auth outcome would clone its challenges).
                let outcome = error.transport_kind().map(Outcome::Transport);
                self.decide(request.method(), outcome.as_ref().and_then(judge))
            }
        }
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        self.clone_if_retrying(request)
    }
}

/// For `Retry` over a service whose errors are boxed: a boxed [`BackendError`] keeps its
/// outcome, any other error is classified with [`classify_error`].
impl<B, R> Policy<Request<B>, Response<R>, BoxError> for RetryPolicy
where
    B: Clone,
{
    type Future = RetryDelay;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<R>, BoxError>,
    ) -> Option<Self::Future> {
        match result {
            Ok(response) => self.decide_response(request.method(), response),
            Err(error) => {
                let outcome = classify_error(&**error);
                self.decide(request.method(), judge(&outcome))
            }
        }
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        self.clone_if_retrying(request)
    }
}

/// Why an attempt is worth repeating, and on what terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retryable {
    /// The request never reached the backend, so repeating it repeats no side effect.
    any_method: bool,
    /// The backend said when to come back.
    retry_after: Option<Duration>,
}

/// [`retryable`], with the outcome kept for the logs.
fn judge(outcome: &Outcome) -> Option<(Retryable, &Outcome)> {
    retryable(outcome).map(|retry| (retry, outcome))
}

/// The rule table of [`RetryPolicy`]. `None`: never retried.
fn retryable(outcome: &Outcome) -> Option<Retryable> {
    let any_method = match outcome {
        Outcome::Transport(kind) if kind.is_connect() => true,
        Outcome::Transport(
            TransportKind::Closed | TransportKind::Reset | TransportKind::Timeout,
        ) => false,
        Outcome::ServerError(
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT,
        ) => false,
        Outcome::Throttled { retry_after, .. } => {
            return Some(Retryable {
                any_method: false,
                retry_after: *retry_after,
            })
        }
        _ => return None,
    };
    Some(Retryable {
        any_method,
        retry_after: None,
    })
}

// === impl RetryDelay ===

pin_project! {
    /// The wait before the next attempt, returned by [`RetryPolicy`]'s
    /// [`Policy::retry`]: a tokio timer, so paused test time drives it.
    ///
    /// # Example
    ///
    /// ```
    /// use std::io;
    /// use http::{Request, Response};
    /// use tower::retry::Policy;
    /// use tower_health_classify::{BackendError, RetryPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut policy = RetryPolicy::new();
    /// let mut request = Request::new(());
    /// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    /// let mut result: Result<Response<()>, _> = Err(BackendError::from_error(refused.into()));
    ///
    /// let delay = policy.retry(&mut request, &mut result).expect("a refused connection is retried");
    /// delay.await;
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct RetryDelay {
        #[pin]
        sleep: Sleep,
    }
}

impl Future for RetryDelay {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn transport(kind: TransportKind) -> Outcome {
        Outcome::Transport(kind)
    }

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    /// A 503 a custom classifier read in an error is retried as the response would be:
    /// for idempotent methods only.
    #[tokio::test]
    async fn a_custom_classifiers_server_error_is_retried_like_the_response() {
        for (method, retried) in [(Method::GET, true), (Method::POST, false)] {
            let mut request = Request::builder().method(&method).body(()).unwrap();
            let mut result: Result<Response<()>, BackendError> = Err(BackendError::Other {
                outcome: Outcome::ServerError(StatusCode::SERVICE_UNAVAILABLE),
                source: "backend said 503".into(),
            });
            let retry = Policy::retry(&mut RetryPolicy::new(), &mut request, &mut result);
            assert_eq!(retry.is_some(), retried, "{method}");
        }
    }

    #[test]
    fn rule_table() {
        let any = Some(Retryable {
            any_method: true,
            retry_after: None,
        });
        let idempotent = Some(Retryable {
            any_method: false,
            retry_after: None,
        });
        let after = |secs| {
            Some(Retryable {
                any_method: false,
                retry_after: Some(Duration::from_secs(secs)),
            })
        };
        let cases = [
            (
                "refused: any method",
                transport(TransportKind::ConnectionRefused),
                any,
            ),
            ("dns: any method", transport(TransportKind::Dns), any),
            (
                "connect timeout: any method",
                transport(TransportKind::ConnectTimeout),
                any,
            ),
            (
                "closed: idempotent only",
                transport(TransportKind::Closed),
                idempotent,
            ),
            (
                "reset: idempotent only",
                transport(TransportKind::Reset),
                idempotent,
            ),
            (
                "timeout: idempotent only",
                transport(TransportKind::Timeout),
                idempotent,
            ),
            ("tls: never", transport(TransportKind::Tls), None),
            (
                "unreachable: never",
                transport(TransportKind::Unreachable),
                None,
            ),
            ("protocol: never", transport(TransportKind::Protocol), None),
            (
                "other transport: never",
                transport(TransportKind::Other),
                None,
            ),
            (
                "502: idempotent only",
                Outcome::ServerError(status(502)),
                idempotent,
            ),
            (
                "503: idempotent only",
                Outcome::ServerError(status(503)),
                idempotent,
            ),
            (
                "504: idempotent only",
                Outcome::ServerError(status(504)),
                idempotent,
            ),
            ("500: never", Outcome::ServerError(status(500)), None),
            ("501: never", Outcome::ServerError(status(501)), None),
            (
                "429 without Retry-After: idempotent only, backoff",
                Outcome::Throttled {
                    status: status(429),
                    retry_after: None,
                },
                idempotent,
            ),
            (
                "429 with Retry-After: idempotent only, that wait",
                Outcome::Throttled {
                    status: status(429),
                    retry_after: Some(Duration::from_secs(7)),
                },
                after(7),
            ),
            (
                "408: like 429",
                Outcome::Throttled {
                    status: status(408),
                    retry_after: None,
                },
                idempotent,
            ),
            ("404: never", Outcome::ClientError(status(404)), None),
            ("success: never", Outcome::Success(status(200)), None),
            (
                "local: never",
                Outcome::Local(crate::error::LocalKind::Overloaded),
                None,
            ),
            ("cancelled: never", Outcome::Cancelled, None),
        ];
        for (name, outcome, expected) in cases {
            assert_eq!(retryable(&outcome), expected, "{name}");
        }
    }

    #[test]
    fn auth_outcomes_are_never_retried() {
        let unauthorized =
            crate::classify::classify_response(StatusCode::UNAUTHORIZED, &HeaderMap::new());
        assert!(matches!(unauthorized, Outcome::Auth(_)));
        assert_eq!(retryable(&unauthorized), None);
    }

    #[test]
    fn retry_after_of_a_503_is_read_in_both_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            http::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&headers),
            Some(Duration::ZERO),
            "a past date: now"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_max_without_jitter() {
        let mut policy = RetryPolicy::new()
            .backoff(Duration::from_millis(100), Duration::from_millis(350))
            .no_jitter();
        let mut delays = Vec::new();
        for attempts in 1..=5 {
            policy.attempts = attempts;
            delays.push(policy.backoff_delay().as_millis());
        }
        assert_eq!(delays, [100, 200, 350, 350, 350]);
    }

    #[test]
    fn backoff_does_not_overflow_after_many_attempts() {
        let mut policy = RetryPolicy::new().no_jitter();
        for attempts in [31, 32, 33, 1_000, u32::MAX] {
            policy.attempts = attempts;
            assert_eq!(policy.backoff_delay(), DEFAULT_BACKOFF_MAX, "{attempts}");
        }
    }

    #[test]
    fn jitter_stays_within_the_bound_and_varies() {
        let mut policy = RetryPolicy::new();
        policy.attempts = 3; // bound: 400 ms
        let delays: Vec<Duration> = (0..1_000).map(|_| policy.backoff_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(200))
            .count();
        assert!(
            (350..650).contains(&low),
            "about half below the middle: {low}"
        );
    }

    #[test]
    fn sessions_cloned_from_one_policy_draw_different_delays() {
        let policy = RetryPolicy::new();
        let draw = |mut session: RetryPolicy| {
            session.attempts = 1;
            (0..4).map(|_| session.backoff_delay()).collect::<Vec<_>>()
        };
        assert_ne!(draw(policy.clone()), draw(policy));
    }

    #[test]
    fn max_attempts_below_one_is_one() {
        let policy = RetryPolicy::new().max_attempts(0);
        assert_eq!(policy.max_attempts, 1);
        assert!(policy.clone_if_retrying(&Request::new(())).is_none());
    }

    #[test]
    fn policy_and_delay_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<RetryPolicy>();
        send::<RetryDelay>();
    }
}
