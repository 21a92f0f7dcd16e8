//! TLS failures read from `rustls::Error` (feature `rustls`).
//!
//! rustls says exactly what went wrong, in types: the certificate error its verifier
//! returned, the alert the peer sent, the protocol feature the peer lacks. Only the
//! variant is looked at, never what it carries (names, times, algorithm identifiers).

use rustls::{AlertDescription, CertificateError, Error, InvalidMessage};

use crate::error::TlsFailure;

/// The cause a rustls error names.
pub(crate) fn from_rustls(error: &Error) -> TlsFailure {
    match error {
        Error::InvalidCertificate(certificate) => from_certificate(certificate),
        // TLS 1.3's answer to a client that presented no certificate where one is
        // required (RFC 8446 §4.4.2.4). TLS 1.2 stacks send `HandshakeFailure` instead,
        // which says no more than that.
        Error::AlertReceived(AlertDescription::CertificateRequired) => {
            TlsFailure::ClientCertificateRequired
        }
        Error::AlertReceived(_)
        | Error::PeerIncompatible(_)
        | Error::PeerMisbehaved(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::NoCertificatesPresented
        | Error::DecryptError
        | Error::NoApplicationProtocol
        | Error::InvalidEncryptedClientHello(_) => TlsFailure::HandshakeFailure,
        // The first bytes back were not a TLS record: an HTTP server answering the
        // ClientHello with `HTTP/1.1 400`, an SSH banner, ...
        Error::InvalidMessage(InvalidMessage::InvalidContentType)
        | Error::InvalidMessage(InvalidMessage::UnknownProtocolVersion) => TlsFailure::NotTls,
        Error::InvalidMessage(_) | Error::PeerSentOversizedRecord => TlsFailure::HandshakeFailure,
        _ => TlsFailure::Other,
    }
}

fn from_certificate(error: &CertificateError) -> TlsFailure {
    match error {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            TlsFailure::CertificateExpired
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            TlsFailure::CertificateNotYetValid
        }
        CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            TlsFailure::NameMismatch
        }
        CertificateError::Revoked => TlsFailure::CertificateRevoked,
        _ => TlsFailure::BadCertificate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{PeerIncompatible, PeerMisbehaved};

    #[test]
    fn every_cause_from_its_rustls_error() {
        let time = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            1_700_000_000,
        ));
        let cases: Vec<(&str, Error, TlsFailure)> = vec![
            (
                "expired",
                Error::InvalidCertificate(CertificateError::Expired),
                TlsFailure::CertificateExpired,
            ),
            (
                "expired, with the times",
                Error::InvalidCertificate(CertificateError::ExpiredContext {
                    time,
                    not_after: time,
                }),
                TlsFailure::CertificateExpired,
            ),
            (
                "not yet valid",
                Error::InvalidCertificate(CertificateError::NotValidYet),
                TlsFailure::CertificateNotYetValid,
            ),
            (
                "not yet valid, with the times",
                Error::InvalidCertificate(CertificateError::NotValidYetContext {
                    time,
                    not_before: time,
                }),
                TlsFailure::CertificateNotYetValid,
            ),
            (
                "unknown issuer (self-signed)",
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                TlsFailure::UnknownIssuer,
            ),
            (
                "another name",
                Error::InvalidCertificate(CertificateError::NotValidForName),
                TlsFailure::NameMismatch,
            ),
            (
                "another name, with the names",
                Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    expected: rustls::pki_types::ServerName::try_from("backend.test").unwrap(),
                    presented: vec!["other.test".into()],
                }),
                TlsFailure::NameMismatch,
            ),
            (
                "revoked",
                Error::InvalidCertificate(CertificateError::Revoked),
                TlsFailure::CertificateRevoked,
            ),
            (
                "bad signature",
                Error::InvalidCertificate(CertificateError::BadSignature),
                TlsFailure::BadCertificate,
            ),
            (
                "bad encoding",
                Error::InvalidCertificate(CertificateError::BadEncoding),
                TlsFailure::BadCertificate,
            ),
            (
                "wrong purpose",
                Error::InvalidCertificate(CertificateError::InvalidPurpose),
                TlsFailure::BadCertificate,
            ),
            (
                "client certificate required",
                Error::AlertReceived(AlertDescription::CertificateRequired),
                TlsFailure::ClientCertificateRequired,
            ),
            (
                "handshake failure alert",
                Error::AlertReceived(AlertDescription::HandshakeFailure),
                TlsFailure::HandshakeFailure,
            ),
            (
                "protocol version alert",
                Error::AlertReceived(AlertDescription::ProtocolVersion),
                TlsFailure::HandshakeFailure,
            ),
            (
                "no cipher suite in common",
                Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
                TlsFailure::HandshakeFailure,
            ),
            (
                "no TLS version in common",
                Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13),
                TlsFailure::HandshakeFailure,
            ),
            (
                "peer broke the protocol",
                Error::PeerMisbehaved(PeerMisbehaved::IllegalMiddleboxChangeCipherSpec),
                TlsFailure::HandshakeFailure,
            ),
            (
                "plain HTTP answered the ClientHello",
                Error::InvalidMessage(InvalidMessage::InvalidContentType),
                TlsFailure::NotTls,
            ),
            (
                "a record with no TLS version",
                Error::InvalidMessage(InvalidMessage::UnknownProtocolVersion),
                TlsFailure::NotTls,
            ),
            (
                "a corrupt handshake message",
                Error::InvalidMessage(InvalidMessage::MissingData("ServerHello")),
                TlsFailure::HandshakeFailure,
            ),
            ("no clock", Error::FailedToGetCurrentTime, TlsFailure::Other),
            (
                "catch-all",
                Error::General("unexpected".into()),
                TlsFailure::Other,
            ),
        ];
        for (name, error, want) in cases {
            assert_eq!(from_rustls(&error), want, "{name}: {error:?}");
        }
    }
}
