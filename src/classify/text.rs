//! Text fallback: reads an error message when its type says nothing.
//!
//! This is a **last resort**. [`classify_error`](crate::classify_error) consults it only
//! when no entry of the error chain gave a typed signal (an `io::ErrorKind`, a
//! `hyper::Error` predicate, a timer's `Elapsed`, ...): that is, for errors from client
//! libraries that flattened their types into text. Text changes between library
//! versions, and a matcher that stops recognising a message fails silently, so prefer a
//! typed check whenever one exists.
//!
//! # Matching rules
//!
//! - A phrase matches case-insensitively (ASCII), except `EOF`, which must be upper case:
//!   a lower-case `eof` is too common inside ordinary words and identifiers.
//! - A phrase matches only as a whole: the character before it and the character after
//!   it must not be ASCII letters or digits (or must be the start or end of the message).
//!   So `error 4010 occurred` does not contain `401`, `backend401.example.com` does not
//!   contain `401`, and `timeouts` does not contain `timeout`. Anything else is a
//!   boundary: spaces, punctuation, `_` and `-` (`read_timeout` contains `timeout`), and
//!   non-ASCII characters.
//! - Spaces inside a phrase match exactly one space.
//! - No allocation, and the work is bounded by the message length times the (fixed,
//!   small) number of phrases.
//!
//! # Phrases
//!
//! | question | phrases |
//! |---|---|
//! | [`is_authentication_error`] | `authentication failed`, `authentication error`, `authorization required`, `401 unauthorized`, `unauthorized (401)`, `403 forbidden`, `http 401`, `http 403`, `status code 401`, `status code 403`, `status 401`, `status 403`, `request unauthenticated`, `request unauthorized`, `access denied`, `invalid_token`, `insufficient_scope` |
//! | [`is_timeout_error`] | `timeout`, `timed out`, `deadline exceeded` |
//! | [`is_tls_error`] | OpenSSL's, curl's, Go's, Java's and rustls' messages, each with the [`TlsFailure`] it names (the table below) |
//! | [`is_connection_error`] | `connection refused`, `connection reset`, `no route to host`, `network is unreachable`, `broken pipe`, `connection closed`, `EOF` |
//!
//! A bare `401` or a bare `unauthorized` is not enough: both occur in messages that are not
//! about authentication (a port, a count, a field name). Likewise a bare `tls` or `ssl`
//! (`tls_version=1.3`, `ssl.example.com`).
//!
//! TLS phrases, most specific first (when several match, the first of the table decides,
//! so OpenSSL's `certificate verify failed (certificate has expired)` is
//! `CertificateExpired`). rustls' variant names (`invalid peer certificate: UnknownIssuer`,
//! `received fatal alert: HandshakeFailure`) are matched as the single words they are.
//!
//! | [`TlsFailure`] | phrases |
//! |---|---|
//! | `CertificateExpired` | `certificate has expired`, `certificate expired`, `invalid peer certificate: Expired` |
//! | `CertificateNotYetValid` | `certificate is not yet valid`, `certificate not valid yet`, `invalid peer certificate: NotValidYet` |
//! | `UnknownIssuer` | `self signed certificate`, `self-signed certificate`, `unable to get local issuer certificate`, `unable to get issuer certificate`, `certificate signed by unknown authority`, `PKIX path building failed`, `unknown issuer`, `invalid peer certificate: UnknownIssuer` |
//! | `NameMismatch` | `hostname mismatch`, `certificate not valid for name`, `no alternative certificate subject name matches`, `invalid peer certificate: NotValidForName` |
//! | `CertificateRevoked` | `certificate revoked`, `certificate has been revoked`, `invalid peer certificate: Revoked` |
//! | `ClientCertificateRequired` | `alert certificate required`, `client certificate required`, `fatal alert: CertificateRequired` |
//! | `NotTls` | `wrong version number`, `first record does not look like a TLS handshake`, `corrupt message of type InvalidContentType` |
//! | `HandshakeFailure` | `handshake failure`, `fatal alert: HandshakeFailure`, `no shared cipher`, `no cipher suites in common`, `no protocols available`, `alert protocol version`, `alert unknown ca`, `alert bad certificate`, `received fatal alert`, `peer is incompatible`, `peer misbehaved`, `tls handshake`, `ssl handshake` |
//! | `BadCertificate` | `certificate verify failed`, `invalid peer certificate`, `SSL certificate problem` |
//! | `Other` | `tls error`, `ssl error`, `SSL routines` |
//!
//! # Example
//!
//! ```
//! use tower_health_classify::text;
//!
//! assert!(text::is_authentication_error("transport error: authorization required"));
//! assert!(!text::is_authentication_error("validation failed: field 'authorization' required"));
//! assert!(text::is_timeout_error("operation timed out"));
//! assert!(text::is_connection_error("unexpected EOF"));
//! assert!(!text::is_connection_error("unexpected eof"));
//! assert!(text::is_tls_error("SSL routines::certificate verify failed"));
//! assert!(!text::is_tls_error("tls_version=1.3 ok"));
//! ```

use crate::error::{TlsFailure, TransportKind};

/// Auth phrases and the status each stands for. Phrases that name a status code come
/// first, so they decide over phrases that only name the failure (`request unauthorized:
/// status 403` is a 403).
const AUTH: &[(&str, u16)] = &[
    ("401 unauthorized", 401),
    ("unauthorized (401)", 401),
    ("403 forbidden", 403),
    ("http 401", 401),
    ("http 403", 403),
    ("status code 401", 401),
    ("status code 403", 403),
    ("status 401", 401),
    ("status 403", 403),
    ("authentication failed", 401),
    ("authentication error", 401),
    ("authorization required", 401),
    ("request unauthenticated", 401),
    ("request unauthorized", 401),
    ("invalid_token", 401),
    ("access denied", 403),
    ("insufficient_scope", 403),
];

const TIMEOUT: &[&str] = &["timeout", "timed out", "deadline exceeded"];

/// Connection phrases (matched case-insensitively) and the transport kind each names.
const CONNECTION: &[(&str, TransportKind)] = &[
    ("connection refused", TransportKind::ConnectionRefused),
    ("connection reset", TransportKind::Reset),
    ("broken pipe", TransportKind::Reset),
    ("no route to host", TransportKind::Unreachable),
    ("network is unreachable", TransportKind::Unreachable),
    ("connection closed", TransportKind::Closed),
];

/// Matched case-sensitively: see the module docs.
const EOF: &str = "EOF";

/// TLS phrases and the cause each names, most specific first: see the module docs.
const TLS: &[(&str, TlsFailure)] = &[
    ("certificate has expired", TlsFailure::CertificateExpired),
    ("certificate expired", TlsFailure::CertificateExpired),
    (
        "invalid peer certificate: expired",
        TlsFailure::CertificateExpired,
    ),
    (
        "certificate is not yet valid",
        TlsFailure::CertificateNotYetValid,
    ),
    (
        "certificate not valid yet",
        TlsFailure::CertificateNotYetValid,
    ),
    (
        "invalid peer certificate: notvalidyet",
        TlsFailure::CertificateNotYetValid,
    ),
    ("self signed certificate", TlsFailure::UnknownIssuer),
    ("self-signed certificate", TlsFailure::UnknownIssuer),
    (
        "unable to get local issuer certificate",
        TlsFailure::UnknownIssuer,
    ),
    (
        "unable to get issuer certificate",
        TlsFailure::UnknownIssuer,
    ),
    (
        "certificate signed by unknown authority",
        TlsFailure::UnknownIssuer,
    ),
    ("pkix path building failed", TlsFailure::UnknownIssuer),
    ("unknown issuer", TlsFailure::UnknownIssuer),
    (
        "invalid peer certificate: unknownissuer",
        TlsFailure::UnknownIssuer,
    ),
    ("hostname mismatch", TlsFailure::NameMismatch),
    ("certificate not valid for name", TlsFailure::NameMismatch),
    (
        "no alternative certificate subject name matches",
        TlsFailure::NameMismatch,
    ),
    (
        "invalid peer certificate: notvalidforname",
        TlsFailure::NameMismatch,
    ),
    ("certificate revoked", TlsFailure::CertificateRevoked),
    (
        "certificate has been revoked",
        TlsFailure::CertificateRevoked,
    ),
    (
        "invalid peer certificate: revoked",
        TlsFailure::CertificateRevoked,
    ),
    (
        "alert certificate required",
        TlsFailure::ClientCertificateRequired,
    ),
    (
        "client certificate required",
        TlsFailure::ClientCertificateRequired,
    ),
    (
        "fatal alert: certificaterequired",
        TlsFailure::ClientCertificateRequired,
    ),
    ("wrong version number", TlsFailure::NotTls),
    (
        "first record does not look like a tls handshake",
        TlsFailure::NotTls,
    ),
    (
        "corrupt message of type invalidcontenttype",
        TlsFailure::NotTls,
    ),
    ("handshake failure", TlsFailure::HandshakeFailure),
    (
        "fatal alert: handshakefailure",
        TlsFailure::HandshakeFailure,
    ),
    ("no shared cipher", TlsFailure::HandshakeFailure),
    ("no cipher suites in common", TlsFailure::HandshakeFailure),
    ("no protocols available", TlsFailure::HandshakeFailure),
    ("alert protocol version", TlsFailure::HandshakeFailure),
    ("alert unknown ca", TlsFailure::HandshakeFailure),
    ("alert bad certificate", TlsFailure::HandshakeFailure),
    ("received fatal alert", TlsFailure::HandshakeFailure),
    ("peer is incompatible", TlsFailure::HandshakeFailure),
    ("peer misbehaved", TlsFailure::HandshakeFailure),
    ("tls handshake", TlsFailure::HandshakeFailure),
    ("ssl handshake", TlsFailure::HandshakeFailure),
    ("certificate verify failed", TlsFailure::BadCertificate),
    ("invalid peer certificate", TlsFailure::BadCertificate),
    ("ssl certificate problem", TlsFailure::BadCertificate),
    ("tls error", TlsFailure::Other),
    ("ssl error", TlsFailure::Other),
    ("ssl routines", TlsFailure::Other),
];

/// Whether `message` reads as an authentication or authorization failure (401 or 403).
///
/// A last resort for errors that lost their type: see the [module docs](self) for the
/// phrases and the matching rules.
///
/// # Example
///
/// ```
/// use tower_health_classify::text::is_authentication_error;
///
/// assert!(is_authentication_error("transport error: authorization required"));
/// assert!(is_authentication_error("HTTP 403: Forbidden"));
/// assert!(is_authentication_error("Bearer error=\"invalid_token\""));
///
/// // Not about authentication, or not clearly enough.
/// assert!(!is_authentication_error("validation failed: field 'authorization' required"));
/// assert!(!is_authentication_error("error 4010 occurred"));
/// assert!(!is_authentication_error("GET http://backend401.example.com failed"));
/// assert!(!is_authentication_error("unauthorized"));
/// ```
pub fn is_authentication_error(message: &str) -> bool {
    auth_status(message).is_some()
}

/// Whether `message` reads as a timeout (`timeout`, `timed out`, `deadline exceeded`).
///
/// A last resort for errors that lost their type: see the [module docs](self).
///
/// # Example
///
/// ```
/// use tower_health_classify::text::is_timeout_error;
///
/// assert!(is_timeout_error("request timeout"));
/// assert!(is_timeout_error("rpc error: DEADLINE EXCEEDED"));
/// assert!(!is_timeout_error("3 timeouts configured"));
/// ```
pub fn is_timeout_error(message: &str) -> bool {
    TIMEOUT
        .iter()
        .any(|phrase| contains_phrase(message, phrase, false))
}

/// Whether `message` reads as a failed or lost connection (refused, reset, unreachable,
/// closed, `EOF`).
///
/// A last resort for errors that lost their type: see the [module docs](self).
///
/// # Example
///
/// ```
/// use tower_health_classify::text::is_connection_error;
///
/// assert!(is_connection_error("dial tcp 10.0.0.7:443: Connection refused"));
/// assert!(is_connection_error("read: unexpected EOF"));
/// assert!(!is_connection_error("geofence updated"));
/// ```
pub fn is_connection_error(message: &str) -> bool {
    connection_kind(message).is_some()
}

/// Whether `message` reads as a failed TLS handshake or certificate check.
///
/// A last resort for errors that lost their type: see the [module docs](self) for the
/// phrases, the cause each names, and the matching rules.
///
/// # Example
///
/// ```
/// use tower_health_classify::text::is_tls_error;
///
/// assert!(is_tls_error("SSL certificate problem: self-signed certificate"));
/// assert!(is_tls_error("invalid peer certificate: UnknownIssuer"));
/// assert!(is_tls_error("net/http: TLS handshake timeout"));
///
/// assert!(!is_tls_error("tls_version=1.3 ok"));
/// assert!(!is_tls_error("GET https://ssl.example.com/ failed"));
/// assert!(!is_tls_error("certificate expires in 30 days"));
/// ```
pub fn is_tls_error(message: &str) -> bool {
    tls_failure(message).is_some()
}

/// A phrase found in a message: what it names, and its place in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PhraseMatch<T> {
    /// The phrase's index in its table: when several messages match, the lowest decides.
    pub(crate) rank: usize,
    /// What the phrase names.
    pub(crate) value: T,
}

/// The status (401 or 403) the first auth phrase of the table found in `message` stands
/// for.
pub(crate) fn auth_status(message: &str) -> Option<PhraseMatch<u16>> {
    AUTH.iter()
        .enumerate()
        .find(|(_, (phrase, _))| contains_phrase(message, phrase, false))
        .map(|(rank, &(_, value))| PhraseMatch { rank, value })
}

/// The cause the first TLS phrase of the table found in `message` names.
pub(crate) fn tls_failure(message: &str) -> Option<PhraseMatch<TlsFailure>> {
    TLS.iter()
        .enumerate()
        .find(|(_, (phrase, _))| contains_phrase(message, phrase, false))
        .map(|(rank, &(_, value))| PhraseMatch { rank, value })
}

/// The transport kind the first connection phrase of the table found in `message` names.
pub(crate) fn connection_kind(message: &str) -> Option<PhraseMatch<TransportKind>> {
    CONNECTION
        .iter()
        .enumerate()
        .find(|(_, (phrase, _))| contains_phrase(message, phrase, false))
        .map(|(rank, &(_, value))| PhraseMatch { rank, value })
        .or_else(|| {
            contains_phrase(message, EOF, true).then_some(PhraseMatch {
                rank: CONNECTION.len(),
                value: TransportKind::Closed,
            })
        })
}

/// Whether `phrase` (ASCII) occurs in `haystack` on word boundaries.
///
/// Works on bytes: `phrase` is ASCII, so a window that equals it can only start and end
/// on character boundaries of `haystack`, and a non-ASCII byte is never alphanumeric.
fn contains_phrase(haystack: &str, phrase: &str, case_sensitive: bool) -> bool {
    let hay = haystack.as_bytes();
    let needle = phrase.as_bytes();
    if needle.is_empty() || needle.len() > hay.len() {
        return false;
    }
    let first = needle[0];
    (0..=hay.len() - needle.len()).any(|start| {
        let head = hay[start];
        // Cheap first-byte test before the window comparison.
        let head_equal = if case_sensitive {
            head == first
        } else {
            head.eq_ignore_ascii_case(&first)
        };
        if !head_equal || !is_boundary(hay, start.checked_sub(1)) {
            return false;
        }
        let end = start + needle.len();
        let window = &hay[start..end];
        let equal = if case_sensitive {
            window == needle
        } else {
            window.eq_ignore_ascii_case(needle)
        };
        equal && is_boundary(hay, Some(end))
    })
}

/// Whether the byte at `at` (none: before the start; past the end: after it) is not an
/// ASCII letter or digit.
fn is_boundary(hay: &[u8], at: Option<usize>) -> bool {
    at.and_then(|i| hay.get(i))
        .is_none_or(|b| !b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(s: &str) -> String {
        s.to_ascii_uppercase()
    }

    /// Alternates the case of each letter: `aUtHoRiZaTiOn`.
    fn mixed(s: &str) -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect()
    }

    /// Every form a phrase must be recognised in: alone, inside a sentence, upper and
    /// mixed case, and next to punctuation.
    fn forms(phrase: &str) -> Vec<String> {
        vec![
            phrase.to_owned(),
            format!("transport error: {phrase}"),
            format!("request failed ({phrase}) after 3 attempts"),
            format!("{phrase}: see logs"),
            upper(&format!("transport error: {phrase}")),
            mixed(&format!("upstream said {phrase}.")),
        ]
    }

    #[test]
    fn every_auth_phrase_matches_in_every_form_with_its_status() {
        let cases: &[(&str, u16)] = &[
            ("authentication failed", 401),
            ("authentication error", 401),
            ("authorization required", 401),
            ("401 unauthorized", 401),
            ("unauthorized (401)", 401),
            ("403 forbidden", 403),
            ("http 401", 401),
            ("http 403", 403),
            ("status code 401", 401),
            ("status code 403", 403),
            ("status 401", 401),
            ("status 403", 403),
            ("request unauthenticated", 401),
            ("request unauthorized", 401),
            ("access denied", 403),
            ("invalid_token", 401),
            ("insufficient_scope", 403),
        ];
        assert_eq!(
            cases.len(),
            AUTH.len(),
            "every phrase of the table is tested"
        );
        for &(phrase, status) in cases {
            for message in forms(phrase) {
                assert!(is_authentication_error(&message), "{message:?}");
                assert_eq!(
                    auth_status(&message).map(|m| m.value),
                    Some(status),
                    "{message:?}"
                );
                assert!(!is_connection_error(&message), "{message:?}");
            }
        }
    }

    #[test]
    fn messages_that_are_not_auth() {
        let cases: &[(&str, &str)] = &[
            (
                "a required field named authorization",
                "validation failed: field 'authorization' required",
            ),
            (
                "digits in a host name",
                "GET http://backend401.example.com failed",
            ),
            ("host name alone", "http://backend401.example.com"),
            ("not found", "404 not found"),
            ("server error", "500 internal server error"),
            ("401 inside a longer number", "error 4010 occurred"),
            ("403 inside a longer number", "status 4030"),
            ("http followed by a longer number", "http 4011"),
            ("refused", "connection refused"),
            ("request timeout", "request timeout"),
            ("bare 401", "401"),
            ("bare 401 in a sentence", "retrying 401 times"),
            ("bare unauthorized", "unauthorized"),
            ("bare unauthorized in a sentence", "Unauthorized"),
            ("phrase glued to a word", "xauthentication failed"),
            ("phrase glued to a digit", "authentication failed2"),
            ("status after letters", "http4011"),
            ("status code with a different separator", "status_code 401"),
            ("empty", ""),
        ];
        for &(name, message) in cases {
            assert!(!is_authentication_error(message), "{name}: {message:?}");
            assert_eq!(auth_status(message), None, "{name}: {message:?}");
        }
    }

    #[test]
    fn a_status_code_phrase_decides_over_a_failure_phrase() {
        let cases: &[(&str, u16)] = &[
            ("request unauthorized: status 403", 403),
            ("access denied (401 Unauthorized)", 401),
            ("authentication failed: HTTP 403", 403),
            ("access denied", 403),
        ];
        for &(message, status) in cases {
            assert_eq!(
                auth_status(message).map(|m| m.value),
                Some(status),
                "{message:?}"
            );
        }
    }

    #[test]
    fn timeout_phrases() {
        for phrase in ["timeout", "timed out", "deadline exceeded"] {
            for message in forms(phrase) {
                assert!(is_timeout_error(&message), "{message:?}");
            }
        }
        let negatives: &[(&str, &str)] = &[
            ("a plural is another word", "3 timeouts configured"),
            ("glued to a word", "mytimeout"),
            ("timed without out", "timed output"),
            ("deadline alone", "deadline missed"),
            ("refused", "connection refused"),
            ("empty", ""),
        ];
        for &(name, message) in negatives {
            assert!(!is_timeout_error(message), "{name}: {message:?}");
        }
        // `_` and `-` are boundaries.
        assert!(is_timeout_error("read_timeout exceeded"));
        assert!(is_timeout_error("connect-timeout"));
    }

    #[test]
    fn connection_phrases_name_their_kind() {
        let cases: &[(&str, TransportKind)] = &[
            ("connection refused", TransportKind::ConnectionRefused),
            ("connection reset", TransportKind::Reset),
            ("no route to host", TransportKind::Unreachable),
            ("network is unreachable", TransportKind::Unreachable),
            ("broken pipe", TransportKind::Reset),
            ("connection closed", TransportKind::Closed),
        ];
        assert_eq!(
            cases.len(),
            CONNECTION.len(),
            "every phrase of the table is tested"
        );
        for &(phrase, kind) in cases {
            for message in forms(phrase) {
                assert!(is_connection_error(&message), "{message:?}");
                assert_eq!(
                    connection_kind(&message).map(|m| m.value),
                    Some(kind),
                    "{message:?}"
                );
                assert!(!is_authentication_error(&message), "{message:?}");
            }
        }
        assert_eq!(
            connection_kind("connection reset by peer (os error 104)").map(|m| m.value),
            Some(TransportKind::Reset)
        );
    }

    #[test]
    fn every_tls_phrase_matches_in_every_form_with_its_cause() {
        use TlsFailure as F;
        let cases: &[(&str, TlsFailure)] = &[
            ("certificate has expired", F::CertificateExpired),
            ("certificate expired", F::CertificateExpired),
            ("invalid peer certificate: Expired", F::CertificateExpired),
            ("certificate is not yet valid", F::CertificateNotYetValid),
            ("certificate not valid yet", F::CertificateNotYetValid),
            (
                "invalid peer certificate: NotValidYet",
                F::CertificateNotYetValid,
            ),
            ("self signed certificate", F::UnknownIssuer),
            ("self-signed certificate", F::UnknownIssuer),
            ("unable to get local issuer certificate", F::UnknownIssuer),
            ("unable to get issuer certificate", F::UnknownIssuer),
            ("certificate signed by unknown authority", F::UnknownIssuer),
            ("PKIX path building failed", F::UnknownIssuer),
            ("unknown issuer", F::UnknownIssuer),
            ("invalid peer certificate: UnknownIssuer", F::UnknownIssuer),
            ("hostname mismatch", F::NameMismatch),
            ("certificate not valid for name", F::NameMismatch),
            (
                "no alternative certificate subject name matches",
                F::NameMismatch,
            ),
            ("invalid peer certificate: NotValidForName", F::NameMismatch),
            ("certificate revoked", F::CertificateRevoked),
            ("certificate has been revoked", F::CertificateRevoked),
            ("invalid peer certificate: Revoked", F::CertificateRevoked),
            ("alert certificate required", F::ClientCertificateRequired),
            ("client certificate required", F::ClientCertificateRequired),
            (
                "fatal alert: CertificateRequired",
                F::ClientCertificateRequired,
            ),
            ("wrong version number", F::NotTls),
            ("first record does not look like a TLS handshake", F::NotTls),
            ("corrupt message of type InvalidContentType", F::NotTls),
            ("handshake failure", F::HandshakeFailure),
            ("fatal alert: HandshakeFailure", F::HandshakeFailure),
            ("no shared cipher", F::HandshakeFailure),
            ("no cipher suites in common", F::HandshakeFailure),
            ("no protocols available", F::HandshakeFailure),
            ("alert protocol version", F::HandshakeFailure),
            ("alert unknown ca", F::HandshakeFailure),
            ("alert bad certificate", F::HandshakeFailure),
            ("received fatal alert", F::HandshakeFailure),
            ("peer is incompatible", F::HandshakeFailure),
            ("peer misbehaved", F::HandshakeFailure),
            ("tls handshake", F::HandshakeFailure),
            ("ssl handshake", F::HandshakeFailure),
            ("certificate verify failed", F::BadCertificate),
            ("invalid peer certificate", F::BadCertificate),
            ("SSL certificate problem", F::BadCertificate),
            ("tls error", F::Other),
            ("ssl error", F::Other),
            ("SSL routines", F::Other),
        ];
        assert_eq!(
            cases.len(),
            TLS.len(),
            "every phrase of the table is tested"
        );
        for &(phrase, cause) in cases {
            for message in forms(phrase) {
                assert!(is_tls_error(&message), "{message:?}");
                assert_eq!(
                    tls_failure(&message).map(|m| m.value),
                    Some(cause),
                    "{message:?}"
                );
                assert!(!is_authentication_error(&message), "{message:?}");
            }
        }
    }

    #[test]
    fn real_tls_messages_name_their_cause() {
        use TlsFailure as F;
        let cases: &[(&str, &str, TlsFailure)] = &[
            (
                "OpenSSL 3, expired",
                "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:ssl/statem/statem_clnt.c:2091: (certificate has expired)",
                F::CertificateExpired,
            ),
            (
                "OpenSSL 3, self-signed",
                "error:0A000086:SSL routines::certificate verify failed: (self-signed certificate)",
                F::UnknownIssuer,
            ),
            (
                "OpenSSL 1.1, private CA",
                "error:1416F086:SSL routines:tls_process_server_certificate:certificate verify failed: unable to get local issuer certificate",
                F::UnknownIssuer,
            ),
            (
                "OpenSSL, plain HTTP on the port",
                "error:0A00010B:SSL routines:ssl3_get_record:wrong version number",
                F::NotTls,
            ),
            (
                "OpenSSL, mTLS",
                "error:0A00045C:SSL routines::tlsv13 alert certificate required",
                F::ClientCertificateRequired,
            ),
            (
                "Python",
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, certificate is not valid for 'backend.test'. (_ssl.c:1006)",
                F::NameMismatch,
            ),
            (
                "curl",
                "SSL certificate problem: certificate is not yet valid",
                F::CertificateNotYetValid,
            ),
            (
                "rustls 0.23, expired with times",
                "invalid peer certificate: certificate expired: verification time 1700000000 (UNIX), but certificate is not valid after 1600000000 (100000000 seconds ago)",
                F::CertificateExpired,
            ),
            (
                "rustls 0.23, another name",
                "invalid peer certificate: certificate not valid for name \"backend.test\"; certificate is only valid for IpAddress(127.0.0.1)",
                F::NameMismatch,
            ),
            (
                "rustls, alert",
                "received fatal alert: CertificateRequired",
                F::ClientCertificateRequired,
            ),
            (
                "rustls, plain HTTP",
                "received corrupt message of type InvalidContentType",
                F::NotTls,
            ),
            (
                "Go",
                "Get \"https://127.0.0.1:8443\": x509: certificate signed by unknown authority",
                F::UnknownIssuer,
            ),
            (
                "Java",
                "sun.security.validator.ValidatorException: PKIX path building failed",
                F::UnknownIssuer,
            ),
        ];
        for &(name, message, cause) in cases {
            assert_eq!(
                tls_failure(message).map(|m| m.value),
                Some(cause),
                "{name}: {message:?}"
            );
        }
    }

    #[test]
    fn messages_that_are_not_tls() {
        let cases: &[(&str, &str)] = &[
            ("tls in a key", "tls_version=1.3 ok"),
            ("tls alone", "using tls"),
            ("ssl alone", "ssl"),
            (
                "a host name holding ssl",
                "GET https://ssl.example.com/ failed",
            ),
            (
                "a host name holding tls",
                "connect to tls-handshake.example.com",
            ),
            ("ssl glued to handshake", "sslhandshake"),
            ("a plural", "tls handshakes completed: 12"),
            ("underscores are not spaces", "ssl_error_log rotated"),
            (
                "a certificate that expires",
                "certificate expires in 30 days",
            ),
            ("a verified certificate", "certificate verified"),
            ("a field named certificate", "field 'certificate' required"),
            ("a phrase glued to a word", "xcertificate has expired"),
            ("a phrase glued to a digit", "tls error2"),
            ("another handshake", "websocket handshake failed"),
            ("refused", "connection refused"),
            ("empty", ""),
        ];
        for &(name, message) in cases {
            assert!(!is_tls_error(message), "{name}: {message:?}");
        }
    }

    #[test]
    fn eof_is_case_sensitive_and_a_whole_word() {
        let cases: &[(&str, Option<TransportKind>)] = &[
            ("EOF", Some(TransportKind::Closed)),
            ("unexpected EOF", Some(TransportKind::Closed)),
            ("read tcp: EOF.", Some(TransportKind::Closed)),
            ("unexpected-EOF", Some(TransportKind::Closed)),
            ("eof", None),
            ("unexpected eof", None),
            ("Eof", None),
            ("EOFError", None),
            ("GEOF", None),
            ("geofence", None),
        ];
        for &(message, want) in cases {
            assert_eq!(
                connection_kind(message).map(|m| m.value),
                want,
                "{message:?}"
            );
            assert_eq!(is_connection_error(message), want.is_some(), "{message:?}");
        }
    }

    #[test]
    fn non_ascii_text_is_scanned_safely() {
        // Multi-byte characters around and inside the message: no panic, and a
        // non-ASCII neighbour is a boundary.
        assert!(is_authentication_error("échec: authorization required ✓"));
        assert!(is_authentication_error("→authorization required←"));
        assert!(!is_authentication_error("authorizätion required"));
        assert!(is_timeout_error("zeitüberschreitung (timeout)"));
        assert!(!is_connection_error("ΕOF")); // Greek capital epsilon, not E
    }

    #[test]
    fn phrase_at_both_ends_of_the_message() {
        assert!(contains_phrase("timeout", "timeout", false));
        assert!(contains_phrase("x timeout", "timeout", false));
        assert!(contains_phrase("timeout x", "timeout", false));
        assert!(!contains_phrase("timeou", "timeout", false));
        assert!(!contains_phrase("", "timeout", false));
    }

    #[test]
    fn long_messages_finish() {
        // Near-misses everywhere: every window starts like a phrase and fails late.
        let message = "authentication faile ".repeat(10_000);
        assert!(!is_authentication_error(&message));
        let hit = format!("{message}authentication failed");
        assert!(is_authentication_error(&hit));
    }
}
