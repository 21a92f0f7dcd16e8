//! `classify_error` and `BackendError::from_error` on synthetic chains decoded from the
//! input (up to 64 wrappers: messages, `io::Error`s, the crate's own errors, a failing
//! `Display`; a leaf that may be a timer, a load shedder, an `http` error or a cycle).
//! The decoder and the checks are shared with the property tests:
//! `tests/support/chains.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/chains.rs"]
mod chains;

fuzz_target!(|data: &[u8]| {
    let (wrappers, leaf) = chains::decode(data);
    chains::check(&wrappers, &leaf);
});
