//! Error-chain walk. PLACEHOLDER: being written now.

use std::error::Error;

use super::outcome::Outcome;
use crate::error::TransportKind;

/// Classifies an error by walking its source chain.
pub fn classify_error(error: &(dyn Error + 'static)) -> Outcome {
    let _ = error;
    Outcome::Transport(TransportKind::Other)
}
