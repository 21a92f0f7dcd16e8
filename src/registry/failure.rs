//! The latest non-Good outcome of a backend, kept in one atomic word and described only
//! when a snapshot asks: a report stores 64 bits, allocates nothing and takes no lock,
//! and the description holds no text a backend or a request sent (no
//! `error_description`, no scheme or error code outside the known ones), so it can carry
//! neither a forged log line nor a token a backend echoed.

use http::StatusCode;

use super::machine::{outcome_code, outcome_from_code, reason_code, reason_from_code};
use crate::classify::{BearerError, Outcome};
use crate::error::TlsFailure;
use crate::verdict::Reason;

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

/// `Outcome` code (0: none) in bits 0-7, then the HTTP status in bits 8-23, the verdict's
/// reason code (a transport outcome's kind is its reason) in 24-31, the challenge scheme
/// in 32-35, the Bearer error in 36-39, whether credentials were sent in bit 40, the TLS
/// cause in 41-47, and `Retry-After` seconds plus one (0: none, saturated) in 48-63.
pub(crate) fn encode(outcome: &Outcome, reason: Reason, tls_failure: Option<TlsFailure>) -> u64 {
    let mut word = u64::from(outcome_code(outcome));
    if let Some(status) = outcome.status() {
        word |= u64::from(status.as_u16()) << 8;
    }
    word |= u64::from(reason_code(reason)) << 24;
    match outcome {
        Outcome::Transport(_) => {
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
    let reason = reason_from_code(((word >> 24) & 0xFF) as u8);
    let mut text = String::from(name);
    if name == "transport" {
        if let Some(cause) = tls_failure(word) {
            return Some(format!("tls {}", cause.as_str()));
        }
        text.push(' ');
        text.push_str(reason.map_or("other", Reason::as_str));
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
    // The reason, where the outcome does not already say it: a probe check's verdict on
    // a 200 (`jsonrpc_error`), who was refused on a 401, a slow success.
    match (name, reason) {
        (_, None) | ("server_error", Some(Reason::ServerError)) => {}
        ("throttled", Some(Reason::Throttled)) => {}
        (_, Some(reason)) => {
            text.push_str(" (");
            text.push_str(reason.as_str());
            text.push(')');
        }
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

    /// Each outcome with the reason its verdict had.
    #[test]
    fn descriptions_from_codes() {
        use Reason::{
            CredentialsRejected, ExpectedChallenge, InsufficientScope, JsonRpcError,
            NoAuthConfigured, ServerError, Slow, Throttled, Transport, UnexpectedStatus,
        };
        let refused = TransportKind::ConnectionRefused;
        let cases: Vec<(Outcome, Reason, &str)> = vec![
            (
                Outcome::ServerError(StatusCode::SERVICE_UNAVAILABLE),
                ServerError,
                "server_error 503",
            ),
            (
                Outcome::ClientError(StatusCode::NOT_FOUND),
                UnexpectedStatus,
                "client_error 404 (unexpected_status)",
            ),
            (
                Outcome::Success(StatusCode::OK),
                JsonRpcError,
                "success 200 (jsonrpc_error)",
            ),
            (Outcome::Success(StatusCode::OK), Slow, "success 200 (slow)"),
            (
                Outcome::Transport(refused),
                Transport(refused),
                "transport connection_refused",
            ),
            (
                Outcome::Transport(TransportKind::Other),
                Transport(TransportKind::Other),
                "transport other",
            ),
            (
                auth(401, r#"Bearer error="invalid_token""#, true),
                CredentialsRejected,
                "unauthorized 401 Bearer invalid_token [credentials sent] (credentials_rejected)",
            ),
            (
                auth(403, r#"bearer error="insufficient_scope", scope="x""#, true),
                InsufficientScope,
                "forbidden 403 Bearer insufficient_scope [credentials sent] (insufficient_scope)",
            ),
            (
                auth(401, r#"Basic realm="x""#, false),
                NoAuthConfigured,
                "unauthorized 401 Basic (no_auth_configured)",
            ),
            (
                auth(401, r#"Mystery error="made_up""#, false),
                ExpectedChallenge,
                "unauthorized 401 other scheme other error (expected_challenge)",
            ),
            (
                Outcome::Throttled {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    retry_after: Some(Duration::from_secs(7)),
                },
                Throttled,
                "throttled 429 (retry after 7s)",
            ),
            (
                Outcome::Throttled {
                    status: StatusCode::REQUEST_TIMEOUT,
                    retry_after: Some(Duration::MAX),
                },
                Throttled,
                "throttled 408 (retry after 65534s)",
            ),
        ];
        for (outcome, reason, want) in cases {
            assert_eq!(
                describe(encode(&outcome, reason, None)).as_deref(),
                Some(want),
                "{outcome:?}"
            );
        }
        assert_eq!(describe(0), None);
    }

    #[test]
    fn every_tls_cause_is_named() {
        let tls = Outcome::Transport(TransportKind::Tls);
        let reason = Reason::Transport(TransportKind::Tls);
        for cause in TLS_FAILURES {
            let word = encode(&tls, reason, Some(cause));
            assert_eq!(describe(word).unwrap(), format!("tls {}", cause.as_str()));
            assert_eq!(tls_failure(word), Some(cause));
        }
        assert_eq!(
            describe(encode(&tls, reason, None)).unwrap(),
            "transport tls"
        );
        assert_eq!(tls_failure(encode(&tls, reason, None)), None);
    }

    #[test]
    fn backend_text_never_reaches_the_description() {
        let outcome = auth(
            401,
            r#"Bearer error="token_abc123", error_description="your token sk-live-secret is bad""#,
            true,
        );
        let text = describe(encode(&outcome, Reason::CredentialsRejected, None)).unwrap();
        assert!(
            !text.contains("abc123") && !text.contains("sk-live"),
            "{text}"
        );
    }
}
