//! Outgoing auth: how the proxy authenticates to each backend, as two tower layers.
//!
//! | strategy | the request the backend gets | on probes |
//! |---|---|---|
//! | `unauthenticated` | the caller's `Authorization` removed, so it never leaks to a backend | nothing |
//! | `upstream_inject` | the caller's `Authorization`, as sent | none |
//! | `header_injection` | the configured header, value from the environment | the same |
//! | `token_exchange` | `Authorization: Bearer` with a client-credentials token | the same |
//!
//! Only `upstream_inject` forwards the caller's `Authorization`: with every other strategy
//! it was meant for this proxy, not for the backend.
//!
//! [`OutgoingAuthLayer`] sits outside `HealthClassifyLayer`: it sets or strips headers
//! before the classify layer looks at the request, so the layer judges by exactly the
//! credentials the backend will see, and it marks the request [`Credentials::Sent`] when
//! the gateway sends its own credentials. [`BearerTokenLayer`] sits inside (under the
//! timeout): the token is fetched there, so a token endpoint that is down or refuses the
//! client fails the exchange through the classify layer, which reports it against the
//! backend (the backend cannot be used with the gateway's credentials) and which the
//! timeout bounds.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service};
use tower_health_classify::{AuthStrategy, BoxError, Credentials, Probe};

use crate::config::StrategyConfig;
use crate::forward::Client;
use crate::token::{Grant, TokenSource};

/// One backend's outgoing auth, with its secrets. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) enum OutgoingAuth {
    Unauthenticated,
    UpstreamInject,
    HeaderInjection {
        name: HeaderName,
        /// Marked sensitive.
        value: HeaderValue,
    },
    TokenExchange(TokenSource),
}

impl OutgoingAuth {
    /// The auth for `backend` as configured. Token requests go through `client`.
    pub(crate) fn new(
        backend: &str,
        strategy: &StrategyConfig,
        client: &Client,
        token_timeout: std::time::Duration,
    ) -> Self {
        match strategy {
            StrategyConfig::Unauthenticated => OutgoingAuth::Unauthenticated,
            StrategyConfig::UpstreamInject => OutgoingAuth::UpstreamInject,
            StrategyConfig::HeaderInjection { header, value } => {
                let mut value = HeaderValue::from_str(value.expose())
                    .expect("checked when the configuration was parsed");
                value.set_sensitive(true);
                OutgoingAuth::HeaderInjection {
                    name: header.clone(),
                    value,
                }
            }
            StrategyConfig::TokenExchange {
                token_url,
                client_id,
                client_secret,
                scope,
                client_auth,
            } => OutgoingAuth::TokenExchange(TokenSource::client_credentials(
                backend,
                client.clone(),
                Grant {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    scope: scope.clone(),
                    client_auth: *client_auth,
                    timeout: token_timeout,
                },
            )),
        }
    }

    /// The strategy the registry judges this backend with.
    pub(crate) fn strategy(&self) -> AuthStrategy {
        match self {
            OutgoingAuth::Unauthenticated => AuthStrategy::Unauthenticated,
            OutgoingAuth::UpstreamInject => AuthStrategy::UpstreamInject,
            OutgoingAuth::HeaderInjection { .. } => AuthStrategy::HeaderInjection,
            OutgoingAuth::TokenExchange(_) => AuthStrategy::TokenExchange,
        }
    }

    /// The header that carries the gateway's own credential, if any. A backend that
    /// echoes it back in a response must not hand it to the client: the proxy removes it.
    pub(crate) fn credential_header(&self) -> Option<&HeaderName> {
        match self {
            OutgoingAuth::HeaderInjection { name, .. } => Some(name),
            OutgoingAuth::TokenExchange(_) => Some(&header::AUTHORIZATION),
            OutgoingAuth::Unauthenticated | OutgoingAuth::UpstreamInject => None,
        }
    }

    /// The token source, for [`BearerTokenLayer`].
    pub(crate) fn token_source(&self) -> Option<TokenSource> {
        match self {
            OutgoingAuth::TokenExchange(source) => Some(source.clone()),
            _ => None,
        }
    }

    /// Sets the request's credentials for this strategy: everything but the token itself,
    /// which [`BearerToken`] adds further in. Reads the [`Probe`] extension.
    pub(crate) fn prepare<B>(&self, request: &mut Request<B>) {
        let probe = request.extensions().get::<Probe>().is_some();
        let headers = request.headers_mut();
        match self {
            OutgoingAuth::Unauthenticated => {
                headers.remove(header::AUTHORIZATION);
            }
            OutgoingAuth::UpstreamInject => {
                // A probe has no user; whatever a probe config set is not a user's token.
                if probe {
                    headers.remove(header::AUTHORIZATION);
                }
            }
            OutgoingAuth::HeaderInjection { name, value } => {
                headers.remove(header::AUTHORIZATION);
                headers.insert(name.clone(), value.clone());
                request.extensions_mut().insert(Credentials::Sent);
            }
            OutgoingAuth::TokenExchange(_) => {
                headers.remove(header::AUTHORIZATION);
                // Declared here, sent by `BearerToken`: the token either goes out with the
                // request or the request fails on its way to the backend.
                request.extensions_mut().insert(Credentials::Sent);
            }
        }
    }
}

// === OutgoingAuthLayer ===

/// Applies [`OutgoingAuth::prepare`] to every request. Goes outside the classify layer.
#[derive(Clone, Debug)]
pub(crate) struct OutgoingAuthLayer {
    auth: OutgoingAuth,
}

impl OutgoingAuthLayer {
    pub(crate) fn new(auth: OutgoingAuth) -> Self {
        OutgoingAuthLayer { auth }
    }
}

impl<S> Layer<S> for OutgoingAuthLayer {
    type Service = OutgoingAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OutgoingAuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// Made by [`OutgoingAuthLayer`].
#[derive(Clone, Debug)]
pub(crate) struct OutgoingAuthService<S> {
    inner: S,
    auth: OutgoingAuth,
}

impl<S, B> Service<Request<B>> for OutgoingAuthService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        self.auth.prepare(&mut request);
        self.inner.call(request)
    }
}

// === BearerTokenLayer ===

/// Adds `Authorization: Bearer <token>` from a [`TokenSource`]; passes requests through
/// unchanged when there is none (every strategy but `token_exchange`). Goes inside the
/// classify layer and the timeout.
#[derive(Clone, Debug)]
pub(crate) struct BearerTokenLayer {
    source: Option<TokenSource>,
}

impl BearerTokenLayer {
    pub(crate) fn new(source: Option<TokenSource>) -> Self {
        BearerTokenLayer { source }
    }
}

impl<S> Layer<S> for BearerTokenLayer {
    type Service = BearerToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerToken {
            inner,
            source: self.source.clone(),
        }
    }
}

/// Made by [`BearerTokenLayer`].
#[derive(Clone, Debug)]
pub(crate) struct BearerToken<S> {
    inner: S,
    source: Option<TokenSource>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for BearerToken<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<RB>, BoxError>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Some(source) = self.source.clone() else {
            let future = self.inner.call(request);
            return Box::pin(async move { future.await.map_err(Into::into) });
        };
        // The ready service is the one to call; its clone takes its place for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let authorization = source.authorization().await?;
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization.clone());
            let response = inner.call(request).await.map_err(Into::into)?;
            if response.status() == StatusCode::UNAUTHORIZED {
                source.reject(&authorization);
            }
            Ok(response)
        })
    }
}
