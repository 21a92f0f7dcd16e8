//! The latest non-Good outcome of a backend, kept in one atomic word and described only
//! when a snapshot asks: a report stores 64 bits, allocates nothing and takes no lock,
//! and the description holds no text a backend or a request sent (no
//! `error_description`, no scheme or error code outside the known ones), so it can carry
//! neither a forged log line nor a token a backend echoed.

use http::StatusCode;

use super::machine::{outcome_code, outcome_from_code, TRANSPORT_KINDS};
use crate::classify::{BearerError, Outcome};
use crate::error::TlsFailure;

/// Every TLS cause, in the order of their codes (0: none).
const TLS_FAILURES: [TlsFailure; 10] = [
    TlsFailure::CertificateExpired,
    TlsFailure::CertificateNotYetValid,
    TlsFailure::UnknownIssuer,
    TlsFailure::NameMismatch,
    TlsFailure::CertificateRevoked,
    TlsFailure::BadCertificate,
    TlsFailure::ClientCertificateRequired,
    TlsFailure::NotTls,
    TlsFailure::HandshakeFailure,
    TlsFailure::Other,
];

/// `Outcome` code (0: none) in bits 0-7, then the HTTP status in bits 8-23, the transport
/// kind in 24-31, the challenge scheme in 32-35, the Bearer error in 36-39, whether
/// credentials were sent in bit 40, the TLS cause in 41-47, and `Retry-After` seconds
/// plus one (0: none, saturated) in 48-63.
pub(crate) fn encode(outcome: &Outcome, tls_failure: Option<TlsFailure>) -> u64 {
    let mut word = u64::from(outcome_code(outcome));
    if let Some(status) = outcome.status() {
        word |= u64::from(status.as_u16()) << 8;
    }
    match outcome {
        Outcome::Transport(kind) => {
            let index = TRANSPORT_KINDS.iter().position(|k| k == kind).unwrap_or(0);
            word |= (index as u64) << 24;
            if let Some(cause) = tls_failure {
                let code = TLS_FAILURES
                    .iter()
                    .position(|c| *c == cause)
                    .map_or(0, |i| i + 1);
                word |= (code as u64) << 41;
            }
        }
        Outcome::Auth(auth) => {
            let scheme = auth.scheme().map_or(0, |scheme| {
                SCHEMES
                    .iter()
                    .position(|known| scheme.eq_ignore_ascii_case(known))
                    .map_or(SCHEMES.len() + 1, |i| i + 1)
            });
            let error = match auth.bearer_error() {
                None => 0,
                Some(BearerError::InvalidRequest) => 1,
                Some(BearerError::InvalidToken) => 2,
                Some(BearerError::InsufficientScope) => 3,
                Some(_) => 4,
            };
            word |= (scheme as u64) << 32 | error << 36;
            word |= u64::from(auth.credentials_sent()) << 40;
        }
        Outcome::Throttled {
            retry_after: Some(after),
            ..
        } => word |= after.as_secs().saturating_add(1).min(0xFFFF) << 48,
        _ => {}
    }
    word
}

/// The schemes named in a description; any other is "other".
const SCHEMES: [&str; 5] = ["Bearer", "Basic", "Digest", "DPoP", "Negotiate"];

const BEARER_ERRORS: [&str; 4] = [
    "invalid_request",
    "invalid_token",
    "insufficient_scope",
    "other error",
];

/// The TLS cause a stored word names, if any.
pub(crate) fn tls_failure(word: u64) -> Option<TlsFailure> {
    let code = ((word >> 41) & 0x7F) as usize;
    TLS_FAILURES.get(code.checked_sub(1)?).copied()
}

/// What a snapshot shows for a stored word (`None` for 0): `server_error 503`,
/// `unauthorized 401 Bearer invalid_token [credentials sent]`, `tls certificate_expired`.
pub(crate) fn describe(word: u64) -> Option<String> {
    let name = outcome_from_code((word & 0xFF) as u8)?;
    let status = StatusCode::from_u16(((word >> 8) & 0xFFFF) as u16).ok();
    let mut text = String::from(name);
    if name == "transport" {
        let kind = TRANSPORT_KINDS[((word >> 24) & 0xFF) as usize % TRANSPORT_KINDS.len()];
        if let Some(cause) = tls_failure(word) {
            return Some(format!("tls {}", cause.as_str()));
        }
        text.push(' ');
        text.push_str(kind.as_str());
        return Some(text);
    }
    if let Some(status) = status {
        text.push(' ');
        text.push_str(status.as_str());
    }
    let scheme = ((word >> 32) & 0xF) as usize;
    if scheme > 0 {
        text.push(' ');
        text.push_str(SCHEMES.get(scheme - 1).copied().unwrap_or("other scheme"));
    }
    let error = ((word >> 36) & 0xF) as usize;
    if error > 0 {
        text.push(' ');
        text.push_str(BEARER_ERRORS[(error - 1).min(BEARER_ERRORS.len() - 1)]);
    }
    if word >> 40 & 1 == 1 {
        text.push_str(" [credentials sent]");
    }
    let retry_after = word >> 48;
    if retry_after > 0 {
        text.push_str(&format!(" (retry after {}s)", retry_after - 1));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::classify_response;
    use crate::error::TransportKind;
    use http::{header, HeaderMap, HeaderValue};
    use std::time::Duration;

    fn auth(status: u16, challenge: &'static str, sent: bool) -> Outcome {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        let mut outcome = classify_response(StatusCode::from_u16(status).unwrap(), &headers);
        if let Outcome::Auth(auth) = &mut outcome {
            auth.set_credentials_sent(sent);
        }
        outcome
    }

    #[test]
    fn descriptions_from_codes() {
        let cases: Vec<(Outcome, &str)> = vec![
            (
                Outcome::ServerError(StatusCode::SERVICE_UNAVAILABLE),
                "server_error 503",
            ),
            (
                Outcome::ClientError(StatusCode::NOT_FOUND),
                "client_error 404",
            ),
            (Outcome::Success(StatusCode::OK), "success 200"),
            (
                Outcome::Transport(TransportKind::ConnectionRefused),
                "transport connection_refused",
            ),
            (Outcome::Transport(TransportKind::Other), "transport other"),
            (
                auth(401, r#"Bearer error="invalid_token""#, true),
                "unauthorized 401 Bearer invalid_token [credentials sent]",
            ),
            (
                auth(
                    403,
                    r#"bearer error="insufficient_scope", scope="x""#,
                    false,
                ),
                "forbidden 403 Bearer insufficient_scope",
            ),
            (
                auth(401, r#"Basic realm="x""#, false),
                "unauthorized 401 Basic",
            ),
            (
                auth(401, r#"Mystery error="made_up""#, false),
                "unauthorized 401 other scheme other error",
            ),
            (
                Outcome::Throttled {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    retry_after: Some(Duration::from_secs(7)),
                },
                "throttled 429 (retry after 7s)",
            ),
            (
                Outcome::Throttled {
                    status: StatusCode::REQUEST_TIMEOUT,
                    retry_after: Some(Duration::MAX),
                },
                "throttled 408 (retry after 65534s)",
            ),
        ];
        for (outcome, want) in cases {
            assert_eq!(
                describe(encode(&outcome, None)).as_deref(),
                Some(want),
                "{outcome:?}"
            );
        }
        assert_eq!(describe(0), None);
    }

    #[test]
    fn every_tls_cause_is_named() {
        let tls = Outcome::Transport(TransportKind::Tls);
        for cause in TLS_FAILURES {
            let word = encode(&tls, Some(cause));
            assert_eq!(describe(word).unwrap(), format!("tls {}", cause.as_str()));
            assert_eq!(tls_failure(word), Some(cause));
        }
        assert_eq!(describe(encode(&tls, None)).unwrap(), "transport tls");
        assert_eq!(tls_failure(encode(&tls, None)), None);
    }

    #[test]
    fn backend_text_never_reaches_the_description() {
        let outcome = auth(
            401,
            r#"Bearer error="token_abc123", error_description="your token sk-live-secret is bad""#,
            true,
        );
        let text = describe(encode(&outcome, None)).unwrap();
        assert!(
            !text.contains("abc123") && !text.contains("sk-live"),
            "{text}"
        );
    }
}
