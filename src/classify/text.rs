//! Text fallback. PLACEHOLDER: being written now.

/// Whether `message` reads as an authentication failure.
pub fn is_authentication_error(message: &str) -> bool {
    let _ = message;
    false
}

/// Whether `message` reads as a timeout.
pub fn is_timeout_error(message: &str) -> bool {
    let _ = message;
    false
}

/// Whether `message` reads as a connection failure.
pub fn is_connection_error(message: &str) -> bool {
    let _ = message;
    false
}
