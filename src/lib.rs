//! Tower middleware that tells whether a backend is healthy, given how the gateway
//! authenticates to it.
//!
//! DOCS: being written.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod classify;
mod error;
pub mod future;
mod layer;
mod service;
mod sink;
mod verdict;

pub use crate::classify::{
    classify_error, classify_response, parse_challenges, text, BearerError, Challenge,
    Classifier, DefaultClassifier, Outcome,
};
pub use crate::error::{AuthError, BackendError, BoxError, LocalKind, TransportKind};
pub use crate::layer::HealthClassifyLayer;
pub use crate::service::HealthClassify;
pub use crate::sink::{sink_fn, HealthReport, HealthSink, LogSink, SinkFn};
pub use crate::verdict::{
    verdict, AuthStrategy, CredentialOwner, Credentials, HealthStatus, Origin, Probe, Reason,
    Verdict, DEFAULT_SLOW_THRESHOLD,
};
