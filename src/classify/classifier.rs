//! The `Classifier` trait and the default classification table.

use std::error::Error;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, StatusCode};

use super::challenge::parse_challenge_values;
use super::outcome::Outcome;
use crate::error::AuthError;

/// Turns what came back from a backend into an [`Outcome`].
///
/// Both methods have default implementations that apply this crate's tables, so a custom
/// classifier overrides only what it needs (say, a client library's own error type) and
/// delegates the rest to [`classify_response`] and [`classify_error`](super::classify_error).
///
/// # Example
///
/// ```
/// use std::error::Error;
/// use tower_health_classify::{classify_error, Classifier, LocalKind, Outcome};
///
/// /// A client library error that means "the request was never sent".
/// #[derive(Debug)]
/// struct NotSent;
/// impl std::fmt::Display for NotSent {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("request not sent")
///     }
/// }
/// impl Error for NotSent {}
///
/// #[derive(Clone, Debug)]
/// struct MyClassifier;
///
/// impl Classifier for MyClassifier {
///     fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
///         if error.is::<NotSent>() {
///             return Outcome::Local(LocalKind::Other);
///         }
///         classify_error(error)
///     }
/// }
///
/// assert_eq!(MyClassifier.classify_error(&NotSent), Outcome::Local(LocalKind::Other));
/// ```
pub trait Classifier {
    /// Classifies a response by its status and headers. Called once per response; the
    /// body is never read.
    fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        classify_response(status, headers)
    }

    /// Classifies an inner error (or a readiness error) by its source chain.
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        super::classify_error(error)
    }
}

/// This crate's classification tables, with nothing added.
///
/// # Example
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_health_classify::{Classifier, DefaultClassifier, Outcome};
///
/// let outcome = DefaultClassifier.classify_response(StatusCode::OK, &HeaderMap::new());
/// assert_eq!(outcome, Outcome::Success(StatusCode::OK));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl Classifier for DefaultClassifier {}

/// Classifies a response by its status and headers (the table in the crate docs).
///
/// Challenge headers are parsed only for 401, 403 (`WWW-Authenticate`) and 407
/// (`Proxy-Authenticate`); `Retry-After` only for 408 and 429. The credentials flag of an
/// [`AuthError`] is `false` here: the layer sets it from the request.
///
/// # Example
///
/// ```
/// use http::{header, HeaderMap, HeaderValue, StatusCode};
/// use std::time::Duration;
/// use tower_health_classify::{classify_response, Outcome};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
/// assert_eq!(
///     classify_response(StatusCode::TOO_MANY_REQUESTS, &headers),
///     Outcome::Throttled {
///         status: StatusCode::TOO_MANY_REQUESTS,
///         retry_after: Some(Duration::from_secs(120)),
///     },
/// );
/// ```
#[inline]
pub fn classify_response(status: StatusCode, headers: &HeaderMap) -> Outcome {
    match status.as_u16() {
        100..=399 => Outcome::Success(status),
        401 => Outcome::Auth(AuthError::Unauthorized {
            challenges: parse_challenge_values(headers.get_all(header::WWW_AUTHENTICATE)),
            credentials_sent: false,
            source: None,
        }),
        403 => Outcome::Auth(AuthError::Forbidden {
            challenges: parse_challenge_values(headers.get_all(header::WWW_AUTHENTICATE)),
            credentials_sent: false,
            source: None,
        }),
        407 => Outcome::Auth(AuthError::ProxyAuthenticationRequired {
            challenges: parse_challenge_values(headers.get_all(header::PROXY_AUTHENTICATE)),
            credentials_sent: false,
            source: None,
        }),
        408 | 429 => Outcome::Throttled {
            status,
            retry_after: retry_after(headers),
        },
        400..=499 => Outcome::ClientError(status),
        // 5xx, and the 600-999 codes `StatusCode` admits but no standard defines: a
        // backend that sends those is broken.
        _ => Outcome::ServerError(status),
    }
}

/// Reads `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in
/// the past is a zero delay; anything unreadable is no delay at all.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate instead of failing on absurd lengths of digits.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{LocalKind, TransportKind};
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn status_table() {
        let none = HeaderMap::new();
        let cases: &[(u16, &str)] = &[
            (100, "success"),
            (101, "success"),
            (200, "success"),
            (204, "success"),
            (301, "success"),
            (304, "success"),
            (400, "client_error"),
            (401, "unauthorized"),
            (402, "client_error"),
            (403, "forbidden"),
            (404, "client_error"),
            (405, "client_error"),
            (407, "proxy_authentication_required"),
            (408, "throttled"),
            (409, "client_error"),
            (422, "client_error"),
            (429, "throttled"),
            (499, "client_error"),
            (500, "server_error"),
            (502, "server_error"),
            (503, "server_error"),
            (504, "server_error"),
            (599, "server_error"),
            (600, "server_error"),
            (999, "server_error"),
        ];
        for &(code, want) in cases {
            let status = StatusCode::from_u16(code).unwrap();
            let outcome = classify_response(status, &none);
            assert_eq!(outcome.as_str(), want, "status {code}");
            assert_eq!(outcome.status(), Some(status), "status {code}");
        }
    }

    #[test]
    fn auth_statuses_read_their_own_challenge_header() {
        let map = headers(&[
            (
                "www-authenticate",
                r#"Bearer realm="api", error="invalid_token""#,
            ),
            ("proxy-authenticate", r#"Basic realm="corp-proxy""#),
        ]);
        let Outcome::Auth(unauthorized) = classify_response(StatusCode::UNAUTHORIZED, &map) else {
            panic!("401 is auth");
        };
        assert_eq!(unauthorized.scheme(), Some("Bearer"));
        assert_eq!(unauthorized.realm(), Some("api"));
        let Outcome::Auth(proxy) =
            classify_response(StatusCode::PROXY_AUTHENTICATION_REQUIRED, &map)
        else {
            panic!("407 is auth");
        };
        assert_eq!(proxy.scheme(), Some("Basic"));
        assert_eq!(proxy.realm(), Some("corp-proxy"));
        assert!(!proxy.credentials_sent());
    }

    #[test]
    fn challenges_from_several_header_values_are_all_kept() {
        let map = headers(&[
            ("www-authenticate", r#"Basic realm="a""#),
            (
                "www-authenticate",
                r#"Bearer resource_metadata="https://rs.example/.well-known/oauth-protected-resource", scope="mcp""#,
            ),
        ]);
        let Outcome::Auth(auth) = classify_response(StatusCode::UNAUTHORIZED, &map) else {
            panic!("401 is auth");
        };
        assert_eq!(auth.challenges().len(), 2);
        assert_eq!(auth.scheme(), Some("Bearer"), "Bearer first");
        assert_eq!(
            auth.resource_metadata(),
            Some("https://rs.example/.well-known/oauth-protected-resource")
        );
        assert_eq!(auth.scope(), Some("mcp"));
    }

    #[test]
    fn retry_after_forms() {
        let secs = headers(&[("retry-after", "7")]);
        assert_eq!(retry_after(&secs), Some(Duration::from_secs(7)));
        let past = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(retry_after(&past), Some(Duration::ZERO));
        let later = SystemTime::now() + Duration::from_secs(3600);
        let mut future = HeaderMap::new();
        future.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let got = retry_after(&future).unwrap();
        assert!(
            got > Duration::from_secs(3500) && got <= Duration::from_secs(3600),
            "{got:?}"
        );
        for bad in ["", "soon", "-5", "1.5", "Sun, 99 Nov 1994 08:49:37 GMT"] {
            let map = headers(&[("retry-after", bad)]);
            assert_eq!(retry_after(&map), None, "{bad:?}");
        }
        let huge = headers(&[("retry-after", "99999999999999999999999")]);
        assert_eq!(retry_after(&huge), Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn custom_classifier_keeps_the_defaults_it_does_not_override() {
        struct OnlyErrors;
        impl Classifier for OnlyErrors {
            fn classify_error(&self, _: &(dyn Error + 'static)) -> Outcome {
                Outcome::Local(LocalKind::Overloaded)
            }
        }
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            OnlyErrors.classify_error(&io),
            Outcome::Local(LocalKind::Overloaded)
        );
        assert_eq!(
            DefaultClassifier.classify_error(&io),
            Outcome::Transport(TransportKind::ConnectionRefused)
        );
        assert_eq!(
            OnlyErrors.classify_response(StatusCode::OK, &HeaderMap::new()),
            Outcome::Success(StatusCode::OK)
        );
    }
}
