//! TLS on loopback for the tests: a certificate authority and certificates made in the
//! test (rcgen), and servers on 127.0.0.1 (tokio-rustls) that present them, or that fail
//! the handshake in one of the ways a real backend does.
//!
//! Shared by `tests/tls.rs` (the layer, hyper-rustls, reqwest) and `tests/proxy.rs` (the
//! example proxy). Nothing here resolves a name or leaves 127.0.0.1.

#![allow(dead_code)] // each user takes what it needs

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// The name every good certificate is for, besides `127.0.0.1`.
pub(crate) const NAME: &str = "backend.test";

/// The crypto every TLS config of the tests uses: rustls' `ring` provider.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs `ring` as the process default, for clients that read it (reqwest 0.13 with
/// `rustls-no-provider`). Idempotent.
pub(crate) fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What a test server presents, or how it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// A certificate from the test CA for `127.0.0.1` and [`NAME`], valid now.
    Valid,
    /// From the test CA, expired in 2021.
    Expired,
    /// From the test CA, valid from 2090.
    NotYetValid,
    /// From the test CA, for `other.test` only.
    OtherName,
    /// Self-signed, for `127.0.0.1` and [`NAME`], valid now.
    SelfSigned,
    /// A valid certificate, and a client certificate required that the client lacks.
    ClientCertRequired,
    /// No TLS at all: answers the ClientHello with an HTTP/1.1 400, as a plain-HTTP
    /// server on the port would.
    PlainHttp,
}

/// Every failing case, with the name tests print.
pub(crate) const FAILING: &[Backend] = &[
    Backend::Expired,
    Backend::NotYetValid,
    Backend::OtherName,
    Backend::SelfSigned,
    Backend::ClientCertRequired,
    Backend::PlainHttp,
];

/// A certificate authority made for one test.
pub(crate) struct Pki {
    ca: CertificateDer<'static>,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tower-health-classify test CA");
        let ca = params.self_signed(&key).unwrap();
        Pki {
            ca: ca.der().clone(),
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate (DER), for a client's roots.
    pub(crate) fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.clone()
    }

    /// The CA certificate as PEM, for a `ca_file`.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A root store holding the test CA alone.
    pub(crate) fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).unwrap();
        roots
    }

    /// The certificate chain and key `backend` presents (`PlainHttp` presents none; it
    /// gets a valid one that it never uses).
    pub(crate) fn identity(
        &self,
        backend: Backend,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let names: Vec<String> = match backend {
            Backend::OtherName => vec!["other.test".into()],
            _ => vec!["127.0.0.1".into(), NAME.into()],
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, NAME);
        match backend {
            Backend::Expired => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            Backend::NotYetValid => {
                params.not_before = rcgen::date_time_ymd(2090, 1, 1);
                params.not_after = rcgen::date_time_ymd(2091, 1, 1);
            }
            _ => {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2080, 1, 1);
            }
        }
        let key = KeyPair::generate().unwrap();
        let cert = if backend == Backend::SelfSigned {
            params.self_signed(&key).unwrap()
        } else {
            params.signed_by(&key, &self.issuer).unwrap()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    /// The server config of `backend`, offering HTTP/2 and HTTP/1.1 through ALPN.
    pub(crate) fn server_config(&self, backend: Backend) -> Arc<ServerConfig> {
        let (chain, key) = self.identity(backend);
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if backend == Backend::ClientCertRequired {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()), provider())
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// What a TLS server saw of its clients' handshakes.
#[derive(Debug, Default)]
pub(crate) struct Handshakes {
    /// The SNI of every completed handshake (`None`: the client sent none, as for an IP).
    pub(crate) server_names: Mutex<Vec<Option<String>>>,
}

/// A server for `backend` on a fresh loopback port, serving `router` over whatever
/// the handshake negotiated (HTTP/2 or HTTP/1.1).
pub(crate) async fn serve(
    pki: &Pki,
    backend: Backend,
    router: Router,
) -> (SocketAddr, Arc<Handshakes>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(Handshakes::default());
    if backend == Backend::PlainHttp {
        tokio::spawn(plain_http(listener));
        return (addr, handshakes);
    }
    let acceptor = TlsAcceptor::from(pki.server_config(backend));
    let seen = handshakes.clone();
    tokio::spawn(async move {
        // Owned by this task: when the test's runtime drops it, every connection goes.
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, router, seen) = (acceptor.clone(), router.clone(), seen.clone());
            connections.spawn(async move {
                // A failed handshake is the point of most servers here: drop it.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let name = stream.get_ref().1.server_name().map(str::to_owned);
                seen.server_names.lock().unwrap().push(name);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
                    .await;
            });
        }
    });
    (addr, handshakes)
}

/// Reads the ClientHello and answers as an HTTP server does to bytes that are not HTTP.
async fn plain_http(listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        connections.spawn(async move {
            let _ = stream.read(&mut [0u8; 2048]).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            let _ = stream.shutdown().await;
        });
    }
}
