//! Classification: turn a response or an inner error into an [`Outcome`].
//!
//! Structure first: the status code, the parsed `WWW-Authenticate` challenges and the
//! typed error chain. The [`text`] fallback is only consulted for errors whose chain holds
//! no type this crate recognises.

mod chain;
mod challenge;
mod classifier;
mod outcome;
pub mod text;
#[cfg(feature = "rustls")]
mod tls;

pub use self::chain::classify_error;
#[cfg(feature = "tower-http")]
pub(crate) use self::chain::display_text;
pub(crate) use self::chain::{tls_failure, tls_failure_of};
pub use self::challenge::{parse_challenges, Challenge};
pub use self::classifier::{classify_response, Classifier, DefaultClassifier};
pub use self::outcome::{BearerError, Outcome};

#[cfg(feature = "retry")]
pub(crate) use self::classifier::retry_after;
