//! The text fallback over arbitrary messages (lossy UTF-8 of the input).
//!
//! Checks that it never panics and that ASCII case never changes an auth or timeout
//! answer (those phrases match case-insensitively; only `EOF`, a connection phrase, is
//! case-sensitive).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_health_classify::text;

fuzz_target!(|data: &[u8]| {
    let message = String::from_utf8_lossy(data);
    let auth = text::is_authentication_error(&message);
    let timeout = text::is_timeout_error(&message);
    let _ = text::is_connection_error(&message);
    for cased in [message.to_ascii_uppercase(), message.to_ascii_lowercase()] {
        assert_eq!(text::is_authentication_error(&cased), auth, "{message:?}");
        assert_eq!(text::is_timeout_error(&cased), timeout, "{message:?}");
    }
});
