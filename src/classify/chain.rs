//! Error-chain walk: what an inner error says about the exchange, read from its types.
//!
//! The walk starts at the outermost error and follows [`Error::source`], except that it
//! steps into [`io::Error::get_ref`] for an `io::Error`: `io::Error::source()` returns
//! the *source of* the error it wraps, so a plain walk skips the wrapped error itself (a
//! timer's `Elapsed`, a TLS error, a connector's error). Every entry is downcast to the
//! types this crate knows; each one that says something leaves a signal, and the
//! signals are weighed once the walk is over (see [`classify_error`]). Only a chain that
//! gave no signal at all is read as text, by the [`text`](super::text) fallback.

use std::error::Error;
use std::fmt;
use std::io;

use super::outcome::Outcome;
use super::text;
use crate::error::{AuthError, BackendError, LocalKind, TlsFailure, TransportKind};

/// Chain entries looked at. Real chains are a handful of entries deep; the bound keeps a
/// cyclic chain (a `source()` that returns itself) or an absurdly deep one from hanging
/// the request path.
const MAX_DEPTH: usize = 32;

/// Classifies an error by walking its source chain.
///
/// The chain is read from the outermost error inwards, through `source()` and through
/// [`io::Error::get_ref`] (which `source()` skips), for at most 32 entries. Each entry is
/// recognised by type:
///
/// | entry | signal |
/// |---|---|
/// | `io::Error` of kind `ConnectionRefused` | `ConnectionRefused` |
/// | `io::Error` of kind `ConnectionReset`, `BrokenPipe` | `Reset` |
/// | `io::Error` of kind `ConnectionAborted`, `UnexpectedEof`, `NotConnected` | `Closed` (`NotConnected` while connecting: `Unreachable`) |
/// | `io::Error` of kind `HostUnreachable`, `NetworkUnreachable`, `NetworkDown` | `Unreachable` |
/// | `io::Error` of kind `TimedOut`, `tower::timeout::error::Elapsed`, `tokio::time::error::Elapsed`, `hyper::Error::is_timeout` | a timer: `Timeout` (while connecting: `ConnectTimeout`) |
/// | `hyper::Error`: incomplete message, canceled, channel closed, body write aborted | `Closed` |
/// | `hyper::Error::is_parse` | `Protocol` |
/// | `hyper::Error::is_user` | `Local(InvalidRequest)`; `Local(Other)` for a failed request body stream or a dropped connection task |
/// | `rustls::Error` (feature `rustls`) | `Tls`, its cause read by [`TlsFailure::from_error`] |
/// | `tower::load_shed::error::Overloaded` | `Local(Overloaded)` |
/// | `http::Error`, `InvalidUri`, `InvalidUriParts`, `InvalidHeaderName`, `InvalidHeaderValue`, `InvalidMethod` | `Local(InvalidRequest)` |
/// | `hyper_util::client::legacy::Error::is_connect` (feature `hyper-util`) | the connect phase |
/// | an entry whose text is exactly `client error (Connect)` or `tcp connect error` | the connect phase |
/// | exactly `dns error` | `Dns` |
/// | exactly `client error (Canceled)`, `client error (ChannelClosed)` | `Closed` |
/// | exactly `client error (UserUnsupportedRequestMethod)`, `client error (UserUnsupportedVersion)`, `client error (UserAbsoluteUriRequired)`, `invalid URL, scheme is not http`, `invalid URL, scheme is missing`, `invalid URL, host is missing` | `Local(InvalidRequest)` |
/// | exactly `tcp open error`, `tcp set_nonblocking error`, `tcp bind local error`, `tcp bind interface error`, `tcp set_mark error` | `Local(Other)` |
/// | [`BackendError`], [`AuthError`] | its own outcome, as is |
///
/// The exact texts are the `Display` of hyper-util's legacy client errors and of its
/// private `ConnectError`, which has no public type to downcast to. They are compared in
/// full (never as substrings) and without allocating, and they apply with or without the
/// `hyper-util` feature: a client library built on another hyper-util version (reqwest,
/// say) yields the same texts, but types this crate cannot downcast to.
///
/// # Precedence
///
/// 1. An error this crate already classified ([`BackendError`], [`AuthError`]) keeps its
///    outcome: a stacked layer must not judge the same failure twice, differently.
/// 2. A `Local` signal anywhere wins: the request never left (or could not be built), so
///    whatever else the chain holds is a consequence, not the backend's fault.
/// 3. `Dns` wins over every transport signal: the `io::Error` under hyper-util's
///    `dns error` (timed out, refused by the resolver) describes the resolver, not the
///    backend.
/// 4. Otherwise the deepest (innermost) transport signal wins: it is the most specific
///    (`hyper::Error(Io)` over `io::Error(ConnectionReset)` is `Reset`). A timer is a
///    signal like the others, so a timer deep in the chain decides over a generic
///    wrapper above it, and a specific kind found *under* a timer decides over the
///    timer. A timer in the connect phase (hyper-util's `tcp connect error` wraps
///    `io::Error(TimedOut, Elapsed)`) is `ConnectTimeout`; any other timer, a plain
///    tower `Elapsed` included, is `Timeout`. `NotConnected` in the connect phase is
///    `Unreachable`: hyper-util reports "no address could be tried" that way.
/// 5. No signal: the [`text`](super::text) fallback reads every entry's `Display`.
///    An auth phrase gives `Auth` (`Unauthorized`, or `Forbidden` for the 403 phrases),
///    without challenges; then a timeout phrase gives `Timeout` (`ConnectTimeout` in the
///    connect phase); then a TLS phrase gives `Tls`; then a connection phrase gives its
///    kind. Across entries, the phrase listed first in its table decides, and among
///    equal phrases the outermost entry.
/// 6. Nothing at all: `Transport(Other)`.
///
/// # Example
///
/// ```
/// use std::io;
/// use tower_health_classify::{classify_error, LocalKind, Outcome, TransportKind};
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert_eq!(classify_error(&refused), Outcome::Transport(TransportKind::ConnectionRefused));
///
/// // A timer's `Elapsed` wrapped in an `io::Error`: `source()` alone would miss it.
/// let elapsed = io::Error::other(tower::timeout::error::Elapsed::new());
/// assert_eq!(classify_error(&elapsed), Outcome::Transport(TransportKind::Timeout));
///
/// let shed = tower::load_shed::error::Overloaded::new();
/// assert_eq!(classify_error(&shed), Outcome::Local(LocalKind::Overloaded));
///
/// // No typed signal: the text fallback reads the message.
/// let flattened = io::Error::other("transport error: authorization required");
/// assert!(matches!(classify_error(&flattened), Outcome::Auth(_)));
/// ```
pub fn classify_error(error: &(dyn Error + 'static)) -> Outcome {
    let mut signals = Signals::default();
    for entry in chain(error) {
        if let Some(outcome) = already_classified(entry) {
            return outcome;
        }
        signals.inspect(entry);
    }
    signals
        .decide()
        .unwrap_or_else(|| from_text(error, signals.connect_phase))
}

/// The chain from `error` inwards, bounded to [`MAX_DEPTH`] entries.
fn chain<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> + 'a {
    let mut next = Some(error);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.downcast_ref::<io::Error>() {
            // `source()` would skip the wrapped error and go straight to its source.
            Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
            None => current.source(),
        };
        Some(current)
    })
    .take(MAX_DEPTH)
}

/// An outcome this crate already decided, carried by its own error types.
fn already_classified(entry: &(dyn Error + 'static)) -> Option<Outcome> {
    if let Some(auth) = entry.downcast_ref::<AuthError>() {
        return Some(Outcome::Auth(auth.clone()));
    }
    entry
        .downcast_ref::<BackendError>()
        .map(BackendError::outcome)
}

/// What the transport entries of a chain said; resolved against the connect phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// A timer fired: `ConnectTimeout` in the connect phase, else `Timeout`.
    Timer,
    /// `io::ErrorKind::NotConnected`: `Unreachable` in the connect phase, else `Closed`.
    NotConnected,
    /// A kind that does not depend on the phase.
    Kind(TransportKind),
}

/// Everything the walk found.
#[derive(Debug, Default)]
struct Signals {
    /// The outermost local signal.
    local: Option<LocalKind>,
    dns: bool,
    connect_phase: bool,
    /// The deepest transport signal.
    transport: Option<Transport>,
}

impl Signals {
    fn inspect(&mut self, entry: &(dyn Error + 'static)) {
        if let Some(io) = entry.downcast_ref::<io::Error>() {
            self.transport(io_signal(io.kind()));
        } else if let Some(hyper) = entry.downcast_ref::<hyper::Error>() {
            self.hyper(hyper);
        } else if entry.is::<tower::timeout::error::Elapsed>()
            || entry.is::<tokio::time::error::Elapsed>()
        {
            self.transport(Some(Transport::Timer));
        } else if rustls_failure(entry).is_some() {
            self.transport(Some(Transport::Kind(TransportKind::Tls)));
        } else if entry.is::<tower::load_shed::error::Overloaded>() {
            self.local(LocalKind::Overloaded);
        } else if entry.is::<http::Error>()
            || entry.is::<http::uri::InvalidUri>()
            || entry.is::<http::uri::InvalidUriParts>()
            || entry.is::<http::header::InvalidHeaderName>()
            || entry.is::<http::header::InvalidHeaderValue>()
            || entry.is::<http::method::InvalidMethod>()
        {
            self.local(LocalKind::InvalidRequest);
        } else {
            #[cfg(feature = "hyper-util")]
            if let Some(client) = entry.downcast_ref::<hyper_util::client::legacy::Error>() {
                if client.is_connect() {
                    self.connect_phase = true;
                }
                // Its other kinds have no predicate: the exact texts below read them.
            }
            match exact_text(entry, CONNECTOR_TEXTS) {
                Some(Exact::Dns) => self.dns = true,
                Some(Exact::ConnectPhase) => self.connect_phase = true,
                Some(Exact::Local(kind)) => self.local(kind),
                Some(Exact::Closed) => self.transport(Some(Transport::Kind(TransportKind::Closed))),
                None => {}
            }
        }
    }

    fn hyper(&mut self, error: &hyper::Error) {
        // Body-write-aborted is also a user error: it must be checked before `is_user`.
        let signal = if error.is_timeout() {
            Transport::Timer
        } else if error.is_incomplete_message()
            || error.is_canceled()
            || error.is_closed()
            || error.is_body_write_aborted()
        {
            Transport::Kind(TransportKind::Closed)
        } else if error.is_parse() {
            Transport::Kind(TransportKind::Protocol)
        } else if error.is_user() {
            // hyper has no predicate for these two; its `Display` is a fixed description.
            let kind = match exact_text(error, HYPER_USER_TEXTS) {
                Some(Exact::Local(kind)) => kind,
                _ => LocalKind::InvalidRequest,
            };
            self.local(kind);
            return;
        } else {
            // `Io`, `Body`, `Http2`, ...: the entries under it say what happened.
            return;
        };
        self.transport(Some(signal));
    }

    fn local(&mut self, kind: LocalKind) {
        self.local.get_or_insert(kind);
    }

    fn transport(&mut self, signal: Option<Transport>) {
        // Entries come outermost first, so the last one written is the deepest.
        if signal.is_some() {
            self.transport = signal;
        }
    }

    /// The outcome the typed signals decide, if any did (precedence in [`classify_error`]).
    fn decide(&self) -> Option<Outcome> {
        if let Some(kind) = self.local {
            return Some(Outcome::Local(kind));
        }
        if self.dns {
            return Some(Outcome::Transport(TransportKind::Dns));
        }
        let kind = match self.transport? {
            Transport::Timer if self.connect_phase => TransportKind::ConnectTimeout,
            Transport::Timer => TransportKind::Timeout,
            Transport::NotConnected if self.connect_phase => TransportKind::Unreachable,
            Transport::NotConnected => TransportKind::Closed,
            Transport::Kind(kind) => kind,
        };
        Some(Outcome::Transport(kind))
    }
}

fn io_signal(kind: io::ErrorKind) -> Option<Transport> {
    use io::ErrorKind as K;
    let kind = match kind {
        K::TimedOut => return Some(Transport::Timer),
        K::NotConnected => return Some(Transport::NotConnected),
        K::ConnectionRefused => TransportKind::ConnectionRefused,
        K::ConnectionReset | K::BrokenPipe => TransportKind::Reset,
        K::ConnectionAborted | K::UnexpectedEof => TransportKind::Closed,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => TransportKind::Unreachable,
        // `Other` and the rest say nothing by themselves; a wrapped error may.
        _ => return None,
    };
    Some(Transport::Kind(kind))
}

/// What an entry with one of the exact texts means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exact {
    Dns,
    ConnectPhase,
    Closed,
    Local(LocalKind),
}

/// hyper-util's legacy client: `client error ({kind:?})` for `legacy::Error`, and the
/// fixed messages of its private `ConnectError` (`client/legacy/connect/http.rs`).
const CONNECTOR_TEXTS: &[(&str, Exact)] = &[
    ("dns error", Exact::Dns),
    ("tcp connect error", Exact::ConnectPhase),
    ("client error (Connect)", Exact::ConnectPhase),
    ("client error (Canceled)", Exact::Closed),
    ("client error (ChannelClosed)", Exact::Closed),
    (
        "client error (UserUnsupportedRequestMethod)",
        Exact::Local(LocalKind::InvalidRequest),
    ),
    (
        "client error (UserUnsupportedVersion)",
        Exact::Local(LocalKind::InvalidRequest),
    ),
    (
        "client error (UserAbsoluteUriRequired)",
        Exact::Local(LocalKind::InvalidRequest),
    ),
    (
        "invalid URL, scheme is not http",
        Exact::Local(LocalKind::InvalidRequest),
    ),
    (
        "invalid URL, scheme is missing",
        Exact::Local(LocalKind::InvalidRequest),
    ),
    (
        "invalid URL, host is missing",
        Exact::Local(LocalKind::InvalidRequest),
    ),
    // Setting up the local socket failed (out of descriptors, a bad bind address): the
    // connection was never attempted.
    ("tcp open error", Exact::Local(LocalKind::Other)),
    ("tcp set_nonblocking error", Exact::Local(LocalKind::Other)),
    ("tcp bind local error", Exact::Local(LocalKind::Other)),
    ("tcp bind interface error", Exact::Local(LocalKind::Other)),
    ("tcp set_mark error", Exact::Local(LocalKind::Other)),
];

/// hyper user errors that are not a malformed request: the request body stream failed,
/// or the connection task was dropped (runtime shutdown). Never the backend's fault.
const HYPER_USER_TEXTS: &[(&str, Exact)] = &[
    (
        "error from user's Body stream",
        Exact::Local(LocalKind::Other),
    ),
    ("dispatch task is gone", Exact::Local(LocalKind::Other)),
];

/// The meaning of the text in `table` that `entry`'s `Display` equals exactly.
///
/// Formats into a comparer instead of a `String`: no allocation, and formatting stops as
/// soon as no text of the table can match any more, so a long message costs no more than
/// the longest text.
fn exact_text(entry: &dyn fmt::Display, table: &[(&str, Exact)]) -> Option<Exact> {
    debug_assert!(table.len() < 64, "one bit per text");
    let mut comparer = ExactComparer {
        table,
        alive: (1u64 << table.len()) - 1,
        written: 0,
    };
    if fmt::write(&mut comparer, format_args!("{entry}")).is_err() {
        return None;
    }
    table
        .iter()
        .enumerate()
        .find(|&(i, (text, _))| comparer.alive & (1 << i) != 0 && text.len() == comparer.written)
        .map(|(_, &(_, meaning))| meaning)
}

/// A `fmt::Write` that tracks which texts of its table the output so far is a prefix of.
struct ExactComparer<'t> {
    table: &'t [(&'t str, Exact)],
    /// Bit `i`: the output so far is a prefix of `table[i].0`.
    alive: u64,
    /// Bytes written so far.
    written: usize,
}

impl fmt::Write for ExactComparer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.written + s.len();
        for (i, (text, _)) in self.table.iter().enumerate() {
            if text.as_bytes().get(self.written..end) != Some(s.as_bytes()) {
                self.alive &= !(1 << i);
            }
        }
        self.written = end;
        if self.alive == 0 {
            // Stop formatting: nothing can match any more.
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// Why a TLS handshake failed, when `outcome` says one did: the cause found in the
/// chain, else [`TlsFailure::Other`]. `None` for every other outcome.
pub(crate) fn tls_failure_of(
    outcome: &Outcome,
    error: &(dyn Error + 'static),
) -> Option<TlsFailure> {
    matches!(outcome, Outcome::Transport(TransportKind::Tls))
        .then(|| tls_failure(error).unwrap_or(TlsFailure::Other))
}

/// The TLS failure `error`'s chain names: see [`TlsFailure::from_error`].
pub(crate) fn tls_failure(error: &(dyn Error + 'static)) -> Option<TlsFailure> {
    for entry in chain(error) {
        if entry.is::<AuthError>() {
            return None;
        }
        if let Some(backend) = entry.downcast_ref::<BackendError>() {
            return backend.tls_failure();
        }
        if let Some(failure) = rustls_failure(entry) {
            return Some(failure);
        }
    }
    messages(error)
        .iter()
        .filter_map(|message| text::tls_failure(message))
        .min_by_key(|found| found.rank)
        .map(|found| found.value)
}

#[cfg(feature = "rustls")]
fn rustls_failure(entry: &(dyn Error + 'static)) -> Option<TlsFailure> {
    entry
        .downcast_ref::<rustls::Error>()
        .map(super::tls::from_rustls)
}

#[cfg(not(feature = "rustls"))]
fn rustls_failure(_: &(dyn Error + 'static)) -> Option<TlsFailure> {
    None
}

/// Every entry's `Display`, for the text fallback.
fn messages(error: &(dyn Error + 'static)) -> Vec<String> {
    // One allocation per entry, and only on this path.
    chain(error).map(display_text).collect()
}

/// What `value`'s `Display` writes, up to a failure. Not `to_string()`: it panics when a
/// `Display` impl fails, and a foreign error's `Display` is not ours to trust.
pub(crate) fn display_text<T: fmt::Display + ?Sized>(value: &T) -> String {
    let mut text = String::new();
    let _ = fmt::write(&mut text, format_args!("{value}"));
    text
}

/// The last resort: no entry gave a typed signal, so read their messages.
fn from_text(error: &(dyn Error + 'static), connect_phase: bool) -> Outcome {
    let messages = messages(error);
    if let Some(found) = messages
        .iter()
        .filter_map(|message| text::auth_status(message))
        .min_by_key(|found| found.rank)
    {
        let (challenges, credentials_sent, source) = (Vec::new(), false, None);
        return Outcome::Auth(if found.value == 403 {
            AuthError::Forbidden {
                challenges,
                credentials_sent,
                source,
            }
        } else {
            AuthError::Unauthorized {
                challenges,
                credentials_sent,
                source,
            }
        });
    }
    if messages
        .iter()
        .any(|message| text::is_timeout_error(message))
    {
        return Outcome::Transport(if connect_phase {
            TransportKind::ConnectTimeout
        } else {
            TransportKind::Timeout
        });
    }
    if messages
        .iter()
        .any(|message| text::tls_failure(message).is_some())
    {
        return Outcome::Transport(TransportKind::Tls);
    }
    let kind = messages
        .iter()
        .filter_map(|message| text::connection_kind(message))
        .min_by_key(|found| found.rank)
        .map_or(TransportKind::Other, |found| found.value);
    Outcome::Transport(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type BoxError = Box<dyn Error + Send + Sync>;

    /// A hand-built chain entry: a message and an optional source.
    #[derive(Debug)]
    struct Wrap {
        msg: String,
        source: Option<BoxError>,
    }

    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.msg)
        }
    }

    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn leaf(msg: &str) -> Wrap {
        Wrap {
            msg: msg.to_owned(),
            source: None,
        }
    }

    fn wrap(msg: &str, source: impl Into<BoxError>) -> Wrap {
        Wrap {
            msg: msg.to_owned(),
            source: Some(source.into()),
        }
    }

    fn io(kind: io::ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    fn transport(kind: TransportKind) -> Outcome {
        Outcome::Transport(kind)
    }

    fn elapsed() -> tower::timeout::error::Elapsed {
        tower::timeout::error::Elapsed::new()
    }

    fn unauthorized() -> Outcome {
        Outcome::Auth(AuthError::Unauthorized {
            challenges: vec![],
            credentials_sent: false,
            source: None,
        })
    }

    fn forbidden() -> Outcome {
        Outcome::Auth(AuthError::Forbidden {
            challenges: vec![],
            credentials_sent: false,
            source: None,
        })
    }

    fn check(cases: Vec<(&str, BoxError, Outcome)>) {
        for (name, error, want) in cases {
            assert_eq!(classify_error(&*error), want, "{name}: {error:?}");
        }
    }

    #[test]
    fn io_kinds() {
        use io::ErrorKind as K;
        let cases: &[(io::ErrorKind, TransportKind)] = &[
            (K::ConnectionRefused, TransportKind::ConnectionRefused),
            (K::ConnectionReset, TransportKind::Reset),
            (K::BrokenPipe, TransportKind::Reset),
            (K::ConnectionAborted, TransportKind::Closed),
            (K::UnexpectedEof, TransportKind::Closed),
            (K::NotConnected, TransportKind::Closed),
            (K::TimedOut, TransportKind::Timeout),
            (K::HostUnreachable, TransportKind::Unreachable),
            (K::NetworkUnreachable, TransportKind::Unreachable),
            (K::NetworkDown, TransportKind::Unreachable),
        ];
        for &(kind, want) in cases {
            assert_eq!(classify_error(&io(kind)), transport(want), "{kind:?}");
            // The same kind under a wrapper that says nothing.
            let wrapped = wrap("request failed", io(kind));
            assert_eq!(
                classify_error(&wrapped),
                transport(want),
                "wrapped {kind:?}"
            );
        }
        // Kinds with no transport meaning, and no telling text.
        for kind in [K::Other, K::InvalidData, K::PermissionDenied, K::WouldBlock] {
            assert_eq!(
                classify_error(&io::Error::new(kind, "boom")),
                transport(TransportKind::Other),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn timers_and_io_errors_around_them() {
        check(vec![
            (
                "tower elapsed",
                elapsed().into(),
                transport(TransportKind::Timeout),
            ),
            (
                "tower elapsed in io TimedOut",
                io::Error::new(io::ErrorKind::TimedOut, elapsed()).into(),
                transport(TransportKind::Timeout),
            ),
            (
                "tower elapsed in io Other: only get_ref reaches it",
                io::Error::other(elapsed()).into(),
                transport(TransportKind::Timeout),
            ),
            (
                "tower elapsed in io Other under a wrapper",
                wrap("call failed", io::Error::other(elapsed())).into(),
                transport(TransportKind::Timeout),
            ),
            (
                "a specific kind under a timer wins",
                io::Error::new(io::ErrorKind::TimedOut, io(io::ErrorKind::ConnectionReset)).into(),
                transport(TransportKind::Reset),
            ),
            (
                "a timer under a generic kind wins",
                io::Error::other(io(io::ErrorKind::TimedOut)).into(),
                transport(TransportKind::Timeout),
            ),
        ]);
    }

    #[test]
    fn io_source_skips_the_wrapped_error_but_the_walk_does_not() {
        let err = io::Error::other(elapsed());
        assert!(
            err.source().is_none(),
            "the premise: source() skips the wrapped error"
        );
        assert_eq!(classify_error(&err), transport(TransportKind::Timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_elapsed_is_a_timeout() {
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(classify_error(&elapsed), transport(TransportKind::Timeout));
        let in_io = io::Error::new(io::ErrorKind::TimedOut, elapsed);
        assert_eq!(classify_error(&in_io), transport(TransportKind::Timeout));
        let connecting = wrap("client error (Connect)", wrap("tcp connect error", in_io));
        assert_eq!(
            classify_error(&connecting),
            transport(TransportKind::ConnectTimeout)
        );
    }

    #[test]
    fn local_failures() {
        let invalid_uri = "http://[::1".parse::<http::Uri>().unwrap_err();
        let invalid_parts = {
            // A scheme without an authority.
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            http::Uri::from_parts(parts).map(drop).unwrap_err()
        };
        let invalid_header = http::HeaderValue::from_bytes(b"\n").unwrap_err();
        let invalid_method = http::Method::from_bytes(b"GE T").unwrap_err();
        let http_error = http::Request::builder()
            .uri("http://[::1")
            .body(())
            .unwrap_err();
        let invalid = Outcome::Local(LocalKind::InvalidRequest);
        check(vec![
            (
                "load shed",
                tower::load_shed::error::Overloaded::new().into(),
                Outcome::Local(LocalKind::Overloaded),
            ),
            ("invalid uri", invalid_uri.into(), invalid.clone()),
            ("invalid uri parts", invalid_parts.into(), invalid.clone()),
            (
                "invalid header value",
                invalid_header.into(),
                invalid.clone(),
            ),
            ("invalid method", invalid_method.into(), invalid.clone()),
            ("http::Error", http_error.into(), invalid.clone()),
            (
                "local wins over a transport signal under it",
                wrap(
                    "shed",
                    io::Error::other(wrap(
                        "x",
                        io::Error::other(tower::load_shed::error::Overloaded::new()),
                    )),
                )
                .into(),
                Outcome::Local(LocalKind::Overloaded),
            ),
            (
                "local wins over a transport signal above it",
                io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "http://[::1".parse::<http::Uri>().unwrap_err(),
                )
                .into(),
                invalid,
            ),
            (
                "local wins over an auth text",
                wrap(
                    "authorization required",
                    tower::load_shed::error::Overloaded::new(),
                )
                .into(),
                Outcome::Local(LocalKind::Overloaded),
            ),
        ]);
    }

    #[test]
    fn text_fallback_when_no_type_says_anything() {
        check(vec![
            (
                "the motivating flattened 401",
                wrap("transport error", leaf("authorization required")).into(),
                unauthorized(),
            ),
            (
                "flattened in one message",
                leaf("transport error: authorization required").into(),
                unauthorized(),
            ),
            (
                "a required authorization field is not auth",
                leaf("validation failed: field 'authorization' required").into(),
                transport(TransportKind::Other),
            ),
            (
                "403 phrase",
                wrap("call failed", leaf("HTTP 403")).into(),
                forbidden(),
            ),
            (
                "a status phrase decides over a failure phrase in another entry",
                wrap("access denied", leaf("status 401")).into(),
                unauthorized(),
            ),
            (
                "auth text inside an io::Error of no telling kind",
                io::Error::other("authentication failed").into(),
                unauthorized(),
            ),
            (
                "auth before timeout",
                wrap("request timed out", leaf("401 Unauthorized")).into(),
                unauthorized(),
            ),
            (
                "timeout text",
                leaf("rpc error: deadline exceeded").into(),
                transport(TransportKind::Timeout),
            ),
            (
                "timeout text in the connect phase",
                wrap("tcp connect error", leaf("operation timed out")).into(),
                transport(TransportKind::ConnectTimeout),
            ),
            (
                "timeout before connection",
                leaf("connection refused, then timed out").into(),
                transport(TransportKind::Timeout),
            ),
            (
                "connection text",
                wrap("send failed", leaf("Connection reset by peer")).into(),
                transport(TransportKind::Reset),
            ),
            (
                "refused decides over EOF in another entry",
                wrap("unexpected EOF", leaf("connection refused")).into(),
                transport(TransportKind::ConnectionRefused),
            ),
            (
                "EOF",
                leaf("unexpected EOF").into(),
                transport(TransportKind::Closed),
            ),
            (
                "lower-case eof",
                leaf("unexpected eof").into(),
                transport(TransportKind::Other),
            ),
            (
                "nothing",
                leaf("something broke").into(),
                transport(TransportKind::Other),
            ),
        ]);
    }

    #[test]
    fn a_typed_signal_decides_over_text() {
        check(vec![
            (
                "typed refused under an auth phrase",
                wrap(
                    "authorization required",
                    io(io::ErrorKind::ConnectionRefused),
                )
                .into(),
                transport(TransportKind::ConnectionRefused),
            ),
            (
                "typed timer under a refused phrase",
                wrap("connection refused", elapsed()).into(),
                transport(TransportKind::Timeout),
            ),
        ]);
    }

    #[test]
    fn deepest_transport_signal_wins() {
        check(vec![
            (
                "reset under closed",
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    io(io::ErrorKind::ConnectionReset),
                )
                .into(),
                transport(TransportKind::Reset),
            ),
            (
                "closed under reset",
                io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    io(io::ErrorKind::UnexpectedEof),
                )
                .into(),
                transport(TransportKind::Closed),
            ),
            (
                "a signal-less io::Error deeper keeps the signal above",
                io::Error::new(io::ErrorKind::ConnectionReset, io(io::ErrorKind::Other)).into(),
                transport(TransportKind::Reset),
            ),
        ]);
    }

    #[test]
    fn hyper_util_connector_texts() {
        let dns = || {
            wrap(
                "client error (Connect)",
                wrap("dns error", io(io::ErrorKind::TimedOut)),
            )
        };
        let invalid = Outcome::Local(LocalKind::InvalidRequest);
        check(vec![
            (
                "dns over the io error under it",
                dns().into(),
                transport(TransportKind::Dns),
            ),
            (
                "dns with no cause",
                wrap("client error (Connect)", leaf("dns error")).into(),
                transport(TransportKind::Dns),
            ),
            (
                "dns is matched exactly, not as a substring",
                leaf("dns errors are fun").into(),
                transport(TransportKind::Other),
            ),
            (
                "dns is matched exactly, case included",
                leaf("DNS error").into(),
                transport(TransportKind::Other),
            ),
            (
                "connect timeout as hyper-util builds it",
                wrap(
                    "client error (Connect)",
                    wrap(
                        "tcp connect error",
                        io::Error::new(io::ErrorKind::TimedOut, elapsed()),
                    ),
                )
                .into(),
                transport(TransportKind::ConnectTimeout),
            ),
            (
                "tcp connect error alone marks the connect phase",
                wrap("tcp connect error", io(io::ErrorKind::TimedOut)).into(),
                transport(TransportKind::ConnectTimeout),
            ),
            (
                "no address could be tried",
                wrap(
                    "client error (Connect)",
                    wrap(
                        "tcp connect error",
                        io::Error::new(io::ErrorKind::NotConnected, "Network unreachable"),
                    ),
                )
                .into(),
                transport(TransportKind::Unreachable),
            ),
            (
                "refused while connecting",
                wrap(
                    "client error (Connect)",
                    wrap("tcp connect error", io(io::ErrorKind::ConnectionRefused)),
                )
                .into(),
                transport(TransportKind::ConnectionRefused),
            ),
            (
                "a timer outside the connect phase",
                wrap("client error (SendRequest)", io(io::ErrorKind::TimedOut)).into(),
                transport(TransportKind::Timeout),
            ),
            (
                "https with the plain connector",
                wrap(
                    "client error (Connect)",
                    leaf("invalid URL, scheme is not http"),
                )
                .into(),
                invalid.clone(),
            ),
            (
                "missing scheme",
                leaf("invalid URL, scheme is missing").into(),
                invalid.clone(),
            ),
            (
                "missing host",
                leaf("invalid URL, host is missing").into(),
                invalid.clone(),
            ),
            (
                "unsupported method",
                leaf("client error (UserUnsupportedRequestMethod)").into(),
                invalid.clone(),
            ),
            (
                "unsupported version",
                leaf("client error (UserUnsupportedVersion)").into(),
                invalid.clone(),
            ),
            (
                "absolute uri required",
                leaf("client error (UserAbsoluteUriRequired)").into(),
                invalid,
            ),
            (
                "canceled",
                leaf("client error (Canceled)").into(),
                transport(TransportKind::Closed),
            ),
            (
                "channel closed",
                leaf("client error (ChannelClosed)").into(),
                transport(TransportKind::Closed),
            ),
            (
                "local socket setup",
                wrap(
                    "client error (Connect)",
                    wrap("tcp open error", io::Error::other("too many open files")),
                )
                .into(),
                Outcome::Local(LocalKind::Other),
            ),
        ]);
    }

    #[test]
    fn exact_text_compares_whole_messages() {
        assert_eq!(exact_text(&"dns error", CONNECTOR_TEXTS), Some(Exact::Dns));
        assert_eq!(exact_text(&"dns erro", CONNECTOR_TEXTS), None);
        assert_eq!(exact_text(&"dns error!", CONNECTOR_TEXTS), None);
        assert_eq!(exact_text(&"", CONNECTOR_TEXTS), None);
        // Written in pieces, as `Display` impls do.
        struct Pieces;
        impl fmt::Display for Pieces {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "client error ({:?})", Kind::Connect)
            }
        }
        #[derive(Debug)]
        enum Kind {
            Connect,
        }
        assert_eq!(
            exact_text(&Pieces, CONNECTOR_TEXTS),
            Some(Exact::ConnectPhase)
        );
        // A long message stops formatting early instead of running to the end.
        let long = "d".repeat(1 << 20);
        assert_eq!(exact_text(&long, CONNECTOR_TEXTS), None);
    }

    /// `(outcome, cause)` as the layer reports them.
    fn judged(error: &(dyn Error + 'static)) -> (Outcome, Option<TlsFailure>) {
        let outcome = classify_error(error);
        let cause = tls_failure_of(&outcome, error);
        (outcome, cause)
    }

    #[test]
    fn flattened_tls_errors_are_tls_with_the_cause_their_text_names() {
        let tls = transport(TransportKind::Tls);
        let cases: Vec<(&str, BoxError, Outcome, Option<TlsFailure>)> = vec![
            (
                "OpenSSL expired, under hyper-util's connect entries",
                wrap(
                    "client error (Connect)",
                    io::Error::other(
                        "error:0A000086:SSL routines:tls_post_process_server_certificate:\
                         certificate verify failed:../ssl/statem/statem_clnt.c:1889: \
                         (certificate has expired)",
                    ),
                )
                .into(),
                tls.clone(),
                Some(TlsFailure::CertificateExpired),
            ),
            (
                "curl self-signed",
                leaf("SSL certificate problem: self-signed certificate").into(),
                tls.clone(),
                Some(TlsFailure::UnknownIssuer),
            ),
            (
                "rustls Display, flattened",
                leaf("invalid peer certificate: UnknownIssuer").into(),
                tls.clone(),
                Some(TlsFailure::UnknownIssuer),
            ),
            (
                "a generic phrase: cause other",
                wrap("request failed", leaf("tls error")).into(),
                tls.clone(),
                Some(TlsFailure::Other),
            ),
            (
                "the most specific phrase of any entry decides",
                wrap(
                    "certificate verify failed",
                    leaf("hostname mismatch, certificate is not valid for 'backend.test'"),
                )
                .into(),
                tls.clone(),
                Some(TlsFailure::NameMismatch),
            ),
            (
                "a timeout phrase decides over a TLS phrase",
                leaf("net/http: TLS handshake timeout").into(),
                transport(TransportKind::Timeout),
                None,
            ),
            (
                "a TLS phrase decides over a connection phrase",
                leaf("ssl handshake: connection reset by peer").into(),
                tls,
                Some(TlsFailure::HandshakeFailure),
            ),
            (
                "a typed signal decides over a TLS phrase",
                wrap("tls handshake eof", io(io::ErrorKind::UnexpectedEof)).into(),
                transport(TransportKind::Closed),
                None,
            ),
            (
                "tls in a key is not a TLS failure",
                leaf("tls_version=1.3 ok, then the backend hung up").into(),
                transport(TransportKind::Other),
                None,
            ),
            (
                "a host name holding ssl is not a TLS failure",
                leaf("GET https://ssl.example.com/handshake failed").into(),
                transport(TransportKind::Other),
                None,
            ),
        ];
        for (name, error, outcome, cause) in cases {
            assert_eq!(judged(&*error), (outcome, cause), "{name}: {error:?}");
        }
    }

    #[test]
    fn a_tls_outcome_with_no_cause_found_is_other_and_only_tls_carries_one() {
        /// A custom classifier's own TLS error type, whose text names nothing.
        #[derive(Debug)]
        struct Opaque;
        impl fmt::Display for Opaque {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("E_0x2f")
            }
        }
        impl Error for Opaque {}
        let tls = transport(TransportKind::Tls);
        assert_eq!(tls_failure_of(&tls, &Opaque), Some(TlsFailure::Other));
        // A cause in the chain, but the outcome is not TLS: no cause reported.
        let expired = leaf("certificate has expired");
        assert_eq!(
            tls_failure_of(&transport(TransportKind::Reset), &expired),
            None
        );
        assert_eq!(tls_failure(&expired), Some(TlsFailure::CertificateExpired));
        assert_eq!(tls_failure(&io(io::ErrorKind::ConnectionRefused)), None);
    }

    #[test]
    fn a_backend_error_in_the_chain_keeps_its_cause() {
        let inner = BackendError::Tls {
            failure: TlsFailure::NameMismatch,
            source: Box::new(leaf("certificate has expired")),
        };
        let outer = wrap("retry gave up", inner);
        assert_eq!(
            judged(&outer),
            (
                transport(TransportKind::Tls),
                Some(TlsFailure::NameMismatch)
            )
        );
        // A non-TLS error this crate made says no TLS cause, whatever is under it.
        let reset = BackendError::Transport {
            kind: TransportKind::Reset,
            source: Box::new(leaf("certificate has expired")),
        };
        assert_eq!(tls_failure(&reset), None);
        let auth = AuthError::Unauthorized {
            challenges: vec![],
            credentials_sent: false,
            source: None,
        };
        assert_eq!(tls_failure(&auth), None);
    }

    /// The chains hyper-util, hyper-rustls and tokio-rustls build, by hand.
    #[cfg(feature = "rustls")]
    mod rustls_chains {
        use super::*;
        use rustls::{AlertDescription, CertificateError, InvalidMessage};

        /// tokio-rustls wraps the rustls error in `io::Error(InvalidData)`; hyper-rustls
        /// wraps that in `io::Error(Other)`; hyper-util in its connect error.
        fn connect_chain(error: rustls::Error) -> BoxError {
            Box::new(wrap(
                "client error (Connect)",
                io::Error::other(io::Error::new(io::ErrorKind::InvalidData, error)),
            ))
        }

        #[test]
        fn rustls_errors_are_tls_with_their_cause() {
            let tls = transport(TransportKind::Tls);
            let cases: Vec<(&str, BoxError, Option<TlsFailure>)> = vec![
                (
                    "expired, in the connect phase",
                    connect_chain(rustls::Error::InvalidCertificate(CertificateError::Expired)),
                    Some(TlsFailure::CertificateExpired),
                ),
                (
                    "self-signed, in the connect phase",
                    connect_chain(rustls::Error::InvalidCertificate(
                        CertificateError::UnknownIssuer,
                    )),
                    Some(TlsFailure::UnknownIssuer),
                ),
                (
                    "plain HTTP answered the ClientHello",
                    connect_chain(rustls::Error::InvalidMessage(
                        InvalidMessage::InvalidContentType,
                    )),
                    Some(TlsFailure::NotTls),
                ),
                (
                    "client certificate required, after the connect phase",
                    Box::new(wrap(
                        "client error (SendRequest)",
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                        ),
                    )),
                    Some(TlsFailure::ClientCertificateRequired),
                ),
                (
                    "the bare rustls error",
                    Box::new(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName,
                    )),
                    Some(TlsFailure::NameMismatch),
                ),
            ];
            for (name, error, cause) in cases {
                assert_eq!(judged(&*error), (tls.clone(), cause), "{name}: {error:?}");
            }
        }

        #[test]
        fn the_typed_cause_decides_over_text_and_a_local_signal_over_tls() {
            // The outer text says "expired"; the rustls error says otherwise.
            let error = wrap(
                "certificate has expired",
                io::Error::other(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
            );
            assert_eq!(
                judged(&error),
                (
                    transport(TransportKind::Tls),
                    Some(TlsFailure::UnknownIssuer)
                )
            );
            // The request could not be sent as built: whatever is under that is no
            // backend's TLS failure.
            let local = wrap(
                "invalid URL, scheme is missing",
                io::Error::other(rustls::Error::DecryptError),
            );
            assert_eq!(
                judged(&local),
                (Outcome::Local(LocalKind::InvalidRequest), None)
            );
        }

        #[test]
        fn backend_error_names_the_cause() {
            let err = BackendError::from_error(connect_chain(rustls::Error::InvalidCertificate(
                CertificateError::Expired,
            )));
            assert!(err.is_transport());
            assert_eq!(err.transport_kind(), Some(TransportKind::Tls));
            assert_eq!(err.tls_failure(), Some(TlsFailure::CertificateExpired));
            assert_eq!(err.outcome(), transport(TransportKind::Tls));
            assert_eq!(err.to_string(), "tls error: certificate expired");
            // The original error is kept, for a caller that wants rustls' own words.
            let inner = err.source().unwrap();
            assert!(chain(inner).any(|e| e.is::<rustls::Error>()));
        }
    }

    #[test]
    fn errors_this_crate_classified_keep_their_outcome() {
        let auth = AuthError::Forbidden {
            challenges: vec![],
            credentials_sent: true,
            source: None,
        };
        let backend = BackendError::Auth(auth.clone());
        assert_eq!(classify_error(&backend), Outcome::Auth(auth.clone()));
        assert_eq!(
            classify_error(&wrap("retry gave up", BackendError::Auth(auth.clone()))),
            Outcome::Auth(auth)
        );
        let tls = BackendError::Transport {
            kind: TransportKind::Tls,
            source: Box::new(leaf("handshake failure")),
        };
        assert_eq!(classify_error(&tls), transport(TransportKind::Tls));
        // A custom classifier's outcome, whatever the error it read it in says.
        let custom = Outcome::ServerError(http::StatusCode::BAD_GATEWAY);
        let other = BackendError::Other {
            outcome: custom.clone(),
            source: Box::new(io(io::ErrorKind::ConnectionReset)),
        };
        assert_eq!(classify_error(&other), custom);
    }

    #[test]
    fn a_deep_chain_is_cut_at_the_bound() {
        fn chain_with_refused_at(depth: usize) -> BoxError {
            let mut error: BoxError = Box::new(io(io::ErrorKind::ConnectionRefused));
            for _ in 0..depth {
                error = Box::new(wrap("layer", error));
            }
            error
        }
        let within = chain_with_refused_at(MAX_DEPTH - 1);
        assert_eq!(
            classify_error(&*within),
            transport(TransportKind::ConnectionRefused)
        );
        let beyond = chain_with_refused_at(MAX_DEPTH);
        assert_eq!(classify_error(&*beyond), transport(TransportKind::Other));
        let deep = chain_with_refused_at(1000);
        assert_eq!(classify_error(&*deep), transport(TransportKind::Other));
    }

    #[test]
    fn a_failing_display_does_not_panic() {
        #[derive(Debug)]
        struct Broken;
        impl fmt::Display for Broken {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("authorization required")?;
                Err(fmt::Error)
            }
        }
        impl Error for Broken {}
        // What was written before the failure is still read.
        assert_eq!(classify_error(&Broken), unauthorized());
        assert_eq!(
            classify_error(&wrap("dns error", Broken)),
            transport(TransportKind::Dns)
        );
    }

    #[test]
    fn a_cyclic_chain_ends() {
        #[derive(Debug)]
        struct Cycle;
        impl fmt::Display for Cycle {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("round and round")
            }
        }
        impl Error for Cycle {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(self)
            }
        }
        assert_eq!(chain(&Cycle).count(), MAX_DEPTH);
        assert_eq!(classify_error(&Cycle), transport(TransportKind::Other));
    }

    /// Real hyper and hyper-util errors, on loopback only.
    mod real {
        use super::*;
        use std::net::SocketAddr;

        use bytes::Bytes;
        use http_body_util::Empty;
        use hyper_util::client::legacy::connect::dns::Name;
        use hyper_util::client::legacy::connect::HttpConnector;
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;

        /// Sends `GET uri` through a legacy client and returns the error.
        async fn get_err<C>(connector: C, uri: &str) -> hyper_util::client::legacy::Error
        where
            C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
        {
            let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
            client
                .get(uri.parse().unwrap())
                .await
                .expect_err("the request must fail")
        }

        /// Whether an entry of the chain is an `E` for which `pred` holds.
        fn has<E: Error + 'static>(
            error: &(dyn Error + 'static),
            pred: impl Fn(&E) -> bool,
        ) -> bool {
            chain(error).any(|e| e.downcast_ref::<E>().is_some_and(&pred))
        }

        fn texts(error: &(dyn Error + 'static)) -> Vec<String> {
            chain(error).map(ToString::to_string).collect()
        }

        /// A connector whose resolver fails without touching DNS.
        fn failing_resolver(
            kind: io::ErrorKind,
        ) -> HttpConnector<
            impl tower::Service<
                    Name,
                    Response = std::vec::IntoIter<SocketAddr>,
                    Error = io::Error,
                    Future = impl Send,
                > + Clone,
        > {
            HttpConnector::new_with_resolver(tower::service_fn(move |_: Name| async move {
                Err::<std::vec::IntoIter<SocketAddr>, _>(io::Error::new(kind, "no such host"))
            }))
        }

        #[tokio::test]
        async fn dns_error_from_a_real_legacy_client() {
            for kind in [
                io::ErrorKind::Other,
                io::ErrorKind::TimedOut,
                io::ErrorKind::ConnectionRefused,
            ] {
                let err = get_err(failing_resolver(kind), "http://backend.invalid/").await;
                assert!(err.is_connect(), "{err:?}");
                // Pins hyper-util's text: the only way to recognise a resolver failure.
                assert!(
                    texts(&err).iter().any(|t| t == "dns error"),
                    "{:?}",
                    texts(&err)
                );
                assert_eq!(
                    classify_error(&err),
                    transport(TransportKind::Dns),
                    "{kind:?}"
                );
            }
        }

        #[tokio::test]
        async fn refused_from_a_real_legacy_client() {
            let port = {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            };
            let err = get_err(HttpConnector::new(), &format!("http://127.0.0.1:{port}/")).await;
            assert!(err.is_connect(), "{err:?}");
            assert!(
                texts(&err).iter().any(|t| t == "tcp connect error"),
                "{:?}",
                texts(&err)
            );
            assert_eq!(
                classify_error(&err),
                transport(TransportKind::ConnectionRefused)
            );
        }

        #[tokio::test]
        async fn https_through_the_plain_connector_is_a_local_misconfiguration() {
            let err = get_err(HttpConnector::new(), "https://127.0.0.1:1/").await;
            assert_eq!(
                classify_error(&err),
                Outcome::Local(LocalKind::InvalidRequest)
            );
        }

        /// A SYN to a listener whose accept queue is full is dropped on Linux, so the
        /// connect hangs until the connect timeout fires; paused time fires it at once.
        #[cfg(target_os = "linux")]
        #[tokio::test(start_paused = true)]
        async fn connect_timeout_from_a_real_legacy_client() {
            use socket2::{Domain, Socket, Type};
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            socket
                .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
                .unwrap();
            socket.listen(0).unwrap();
            let addr = socket.local_addr().unwrap().as_socket().unwrap();
            // Fill the accept queue (never accepted) until a connect is no longer answered.
            let mut queued = Vec::new();
            while let Ok(stream) =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100))
            {
                queued.push(stream);
                assert!(queued.len() < 16, "the accept queue never fills");
            }
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(Duration::from_secs(5)));
            let err = get_err(connector, &format!("http://{addr}/")).await;
            assert!(err.is_connect(), "{err:?}");
            assert!(
                has::<tokio::time::error::Elapsed>(&err, |_| true),
                "{err:?}"
            );
            assert_eq!(
                classify_error(&err),
                transport(TransportKind::ConnectTimeout),
                "{err:?}"
            );
        }

        /// Serves one connection with `respond` and returns the address.
        async fn serve_once<F, Fut>(respond: F) -> SocketAddr
        where
            F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
            Fut: std::future::Future<Output = ()> + Send,
        {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                // Read the request head before misbehaving.
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                respond(stream).await;
            });
            addr
        }

        #[tokio::test]
        async fn closed_before_a_response() {
            let addr = serve_once(|stream| async move { drop(stream) }).await;
            let err = get_err(HttpConnector::new(), &format!("http://{addr}/")).await;
            assert!(has(&err, hyper::Error::is_incomplete_message), "{err:?}");
            assert_eq!(
                classify_error(&err),
                transport(TransportKind::Closed),
                "{err:?}"
            );
        }

        #[tokio::test]
        async fn reset_before_a_response() {
            let addr = serve_once(|stream| async move {
                // Linger 0: close with an RST instead of a FIN.
                socket2::SockRef::from(&stream)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(stream);
            })
            .await;
            let err = get_err(HttpConnector::new(), &format!("http://{addr}/")).await;
            let reset = |e: &io::Error| e.kind() == io::ErrorKind::ConnectionReset;
            assert!(has(&err, reset), "{err:?}");
            assert_eq!(
                classify_error(&err),
                transport(TransportKind::Reset),
                "{err:?}"
            );
        }

        #[tokio::test]
        async fn garbage_instead_of_http() {
            let addr = serve_once(|mut stream| async move {
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
                let _ = stream.shutdown().await;
            })
            .await;
            let err = get_err(HttpConnector::new(), &format!("http://{addr}/")).await;
            assert!(has(&err, hyper::Error::is_parse), "{err:?}");
            assert_eq!(
                classify_error(&err),
                transport(TransportKind::Protocol),
                "{err:?}"
            );
        }

        /// A request body whose stream fails at once, as a proxied body does when the
        /// downstream client goes away.
        struct FailingBody;

        impl hyper::body::Body for FailingBody {
            type Data = Bytes;
            type Error = io::Error;

            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
                std::task::Poll::Ready(Some(Err(io::Error::other("downstream went away"))))
            }
        }

        #[tokio::test]
        async fn a_failed_request_body_is_local() {
            // Hold the connection open until the client gives up on it.
            let addr = serve_once(|mut stream| async move {
                let _ = stream.read(&mut [0u8; 1]).await;
            })
            .await;
            let client =
                Client::builder(TokioExecutor::new()).build::<_, FailingBody>(HttpConnector::new());
            let request = http::Request::post(format!("http://{addr}/"))
                .body(FailingBody)
                .unwrap();
            let err = client.request(request).await.expect_err("the body fails");
            assert!(has(&err, hyper::Error::is_user), "{err:?}");
            assert_eq!(
                classify_error(&err),
                Outcome::Local(LocalKind::Other),
                "{err:?}"
            );
        }
    }
}
