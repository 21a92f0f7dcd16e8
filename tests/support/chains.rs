//! Synthetic error chains for `classify_error`: built by hand, never by a network call.
//!
//! Shared by the property tests (`tests/hostile_input.rs`) and the fuzz targets
//! (`fuzz/fuzz_targets/classify_error.rs`), so that both drive the same entry point with
//! the same kinds of entries. A chain is a list of [`Wrapper`]s, outermost first, around
//! one [`Leaf`]; each wrapper is exactly one entry of the walk (an `io::Error` wraps its
//! inner error directly, so the walk's `get_ref` step reaches it).

#![allow(dead_code)] // each user takes what it needs

use std::error::Error;
use std::fmt;
use std::io;

use tower_health_classify::{BackendError, BoxError};

/// Every `io::ErrorKind` the walk maps, and a few it does not.
pub(crate) const IO_KINDS: &[io::ErrorKind] = &[
    io::ErrorKind::ConnectionRefused,
    io::ErrorKind::ConnectionReset,
    io::ErrorKind::BrokenPipe,
    io::ErrorKind::ConnectionAborted,
    io::ErrorKind::UnexpectedEof,
    io::ErrorKind::NotConnected,
    io::ErrorKind::TimedOut,
    io::ErrorKind::HostUnreachable,
    io::ErrorKind::NetworkUnreachable,
    io::ErrorKind::NetworkDown,
    io::ErrorKind::Other,
    io::ErrorKind::InvalidData,
    io::ErrorKind::PermissionDenied,
    io::ErrorKind::WouldBlock,
];

/// Messages that mean something to the walk or to the text fallback: the exact texts of
/// hyper-util's errors, the text fallback's phrases, and near misses of both.
pub(crate) const MESSAGES: &[&str] = &[
    "dns error",
    "tcp connect error",
    "client error (Connect)",
    "client error (Canceled)",
    "client error (ChannelClosed)",
    "client error (UserUnsupportedVersion)",
    "invalid URL, scheme is not http",
    "tcp open error",
    "error from user's Body stream",
    "dispatch task is gone",
    "transport error: authorization required",
    "HTTP 403: Forbidden",
    "401 Unauthorized",
    "unauthorized (401)",
    "Bearer error=\"invalid_token\"",
    "insufficient_scope",
    "access denied",
    "request timeout",
    "operation timed out",
    "DEADLINE EXCEEDED",
    "connection refused",
    "Connection reset by peer",
    "broken pipe",
    "no route to host",
    "network is unreachable",
    "connection closed before message completed",
    "unexpected EOF",
    "unexpected eof",
    "field 'authorization' required",
    "GET http://backend401.example.com failed",
    "error 4010 occurred",
    "401",
    "unauthorized",
    "3 timeouts configured",
    "dns errors",
    " dns error",
    "",
    "https://user:hunter2@backend.example/path?token=abc",
    "\u{1b}[31mred\u{1b}[0m\r\nforged: line",
    "caf\u{e9} \u{fffd} \u{10ffff}",
];

/// One entry around the rest of the chain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Wrapper {
    /// A plain error with this message.
    Message(String),
    /// `io::Error::new(kind, inner)`.
    Io(io::ErrorKind),
    /// `BackendError::from_error(inner)`: an error this crate already classified.
    Classified,
    /// `BackendError::Other` with [`CUSTOM`]: a custom classifier's outcome that is not
    /// an error's in the default table.
    Custom,
    /// An error whose `Display` fails after writing a little.
    FailingDisplay,
}

/// What [`Wrapper::Custom`] was classified as.
pub(crate) const CUSTOM: tower_health_classify::Outcome =
    tower_health_classify::Outcome::ServerError(http::StatusCode::BAD_GATEWAY);

/// The innermost entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leaf {
    /// A plain error with this message.
    Message(String),
    /// `io::Error::from(kind)`.
    Io(io::ErrorKind),
    /// `io::Error::new(kind, message)`.
    IoMessage(io::ErrorKind, String),
    /// `tower::timeout::error::Elapsed`.
    Elapsed,
    /// `tower::load_shed::error::Overloaded`.
    Overloaded,
    /// `http::uri::InvalidUri`.
    InvalidUri,
    /// `http::Error` from a request builder.
    Http,
    /// An error whose `source()` is itself: a cycle the walk must cut.
    Cycle(String),
}

/// A plain error: a message and, unless it is the leaf, the rest of the chain.
#[derive(Debug)]
struct Plain {
    message: String,
    source: Option<BoxError>,
}

impl fmt::Display for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Plain {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[derive(Debug)]
struct FailingDisplay(BoxError);

impl fmt::Display for FailingDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dns")?;
        Err(fmt::Error)
    }
}

impl Error for FailingDisplay {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

#[derive(Debug)]
struct Cycle(String);

impl fmt::Display for Cycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Cycle {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self)
    }
}

fn leaf(leaf: &Leaf) -> BoxError {
    match leaf {
        Leaf::Message(message) => Box::new(Plain {
            message: message.clone(),
            source: None,
        }),
        Leaf::Io(kind) => Box::new(io::Error::from(*kind)),
        Leaf::IoMessage(kind, message) => Box::new(io::Error::new(*kind, message.clone())),
        Leaf::Elapsed => Box::new(tower::timeout::error::Elapsed::new()),
        Leaf::Overloaded => Box::new(tower::load_shed::error::Overloaded::new()),
        Leaf::InvalidUri => Box::new("\0".parse::<http::Uri>().unwrap_err()),
        Leaf::Http => Box::new(http::Request::builder().uri("\0").body(()).unwrap_err()),
        Leaf::Cycle(message) => Box::new(Cycle(message.clone())),
    }
}

/// Builds the chain: `wrappers[0]` is the outermost entry.
pub(crate) fn build(wrappers: &[Wrapper], innermost: &Leaf) -> BoxError {
    wrappers
        .iter()
        .rev()
        .fold(leaf(innermost), |inner, wrapper| match wrapper {
            Wrapper::Message(message) => Box::new(Plain {
                message: message.clone(),
                source: Some(inner),
            }),
            Wrapper::Io(kind) => Box::new(io::Error::new(*kind, inner)),
            Wrapper::Classified => Box::new(BackendError::from_error(inner)),
            Wrapper::Custom => Box::new(BackendError::Other {
                outcome: CUSTOM,
                source: inner,
            }),
            Wrapper::FailingDisplay => Box::new(FailingDisplay(inner)),
        })
}

/// A message from raw bytes: a known message when the selector says so, else the bytes
/// themselves (lossy UTF-8).
fn message(bytes: &mut Bytes<'_>) -> String {
    let selector = bytes.next();
    if selector & 1 == 0 {
        return MESSAGES[usize::from(selector / 2) % MESSAGES.len()].to_owned();
    }
    let len = usize::from(bytes.next() % 48);
    String::from_utf8_lossy(bytes.take(len)).into_owned()
}

/// A cursor that yields zeros once the input runs out, so that every input decodes.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// Decodes any bytes into a chain (at most 64 wrappers): the fuzz targets' input format,
/// also run on random bytes by the property tests.
pub(crate) fn decode(data: &[u8]) -> (Vec<Wrapper>, Leaf) {
    let mut bytes = Bytes(data);
    let depth = usize::from(bytes.next() % 65);
    let mut wrappers = Vec::with_capacity(depth);
    for _ in 0..depth {
        let tag = bytes.next();
        wrappers.push(match tag % 6 {
            0 | 1 => Wrapper::Message(message(&mut bytes)),
            2 => Wrapper::Io(IO_KINDS[usize::from(bytes.next()) % IO_KINDS.len()]),
            3 => Wrapper::Classified,
            4 => Wrapper::Custom,
            _ => Wrapper::FailingDisplay,
        });
    }
    let leaf = match bytes.next() % 8 {
        0 => Leaf::Message(message(&mut bytes)),
        1 => Leaf::Io(IO_KINDS[usize::from(bytes.next()) % IO_KINDS.len()]),
        2 => {
            let kind = IO_KINDS[usize::from(bytes.next()) % IO_KINDS.len()];
            Leaf::IoMessage(kind, message(&mut bytes))
        }
        3 => Leaf::Elapsed,
        4 => Leaf::Overloaded,
        5 => Leaf::InvalidUri,
        6 => Leaf::Http,
        _ => Leaf::Cycle(message(&mut bytes)),
    };
    (wrappers, leaf)
}

/// Whether `text` holds a raw control character (one that could forge a log line or drive
/// a terminal).
pub(crate) fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// Classifies the chain and checks what must hold for every chain; panics otherwise.
/// Returns the outcome.
///
/// - the walk is deterministic;
/// - an error's outcome is `Auth`, `Transport` or `Local`, never a response's, unless a
///   custom classifier filed one in the chain ([`Wrapper::Custom`]);
/// - `BackendError::from_error` files it under the same outcome;
/// - the `Display` of the outcome and of the `BackendError` holds no control character
///   and none of the chain's own text: it is one of the crate's fixed messages.
pub(crate) fn check(wrappers: &[Wrapper], innermost: &Leaf) -> tower_health_classify::Outcome {
    use tower_health_classify::{classify_error, Outcome};

    let error = build(wrappers, innermost);
    let outcome = classify_error(&*error);
    assert_eq!(classify_error(&*error), outcome, "deterministic");
    assert!(
        matches!(
            outcome,
            Outcome::Auth(_) | Outcome::Transport(_) | Outcome::Local(_)
        ) || (outcome == CUSTOM && wrappers.contains(&Wrapper::Custom)),
        "{outcome:?}"
    );
    let shown = outcome.to_string();
    assert!(!has_control(&shown), "{shown:?}");

    let backend = BackendError::from_error(error);
    let filed = backend.outcome();
    assert_eq!(filed.as_str(), outcome.as_str(), "{backend:?}");
    match (&filed, &outcome) {
        (Outcome::Transport(a), Outcome::Transport(b)) => assert_eq!(a, b),
        (Outcome::Local(a), Outcome::Local(b)) => assert_eq!(a, b),
        (Outcome::ServerError(a), Outcome::ServerError(b)) => assert_eq!(a, b),
        (Outcome::Auth(a), Outcome::Auth(b)) => {
            assert_eq!(a.status(), b.status());
            assert_eq!(a.challenges(), b.challenges());
        }
        _ => unreachable!("same kind"),
    }
    assert!(backend.source().is_some(), "the original error is kept");
    let text = backend.to_string();
    assert!(!has_control(&text), "{text:?}");
    let fixed = [
        "transport error: ",
        "request timed out",
        "local error: ",
        "backend error",
        "backend answered ",
    ];
    assert!(
        fixed.iter().any(|prefix| text.starts_with(prefix)),
        "not one of the crate's own messages: {text:?}"
    );
    // Whatever the chain said, none of it is copied into the error's own message: only
    // the crate's fixed words and, for `Auth`, a scheme and code (none here: an error
    // has no challenge).
    assert!(text.len() <= 64, "{text:?}");
    outcome
}
