//! Hostile input: property tests of the challenge parser, the text fallback and the
//! error-chain walk, and bounded work and memory on inputs built to hurt.
//!
//! Case counts are sized for CI (a few seconds in all); set `PROPTEST_CASES` to run more
//! (the fuzz README records a run with many more). Work is checked by counting, never by
//! timing: a global allocator counts this thread's allocations and their bytes, and an
//! input twice as long must not cost more than the capped result it keeps.

#![allow(unsafe_code)] // the counting allocator below; the crate itself forbids unsafe

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::{header, HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use proptest::sample::select;
use tower_health_classify::{
    classify_error, parse_challenges, text, Challenge, Classifier, DefaultClassifier, Outcome,
    TransportKind,
};

#[path = "support/chains.rs"]
mod chains;

use chains::{Leaf, Wrapper};

const MAX_CHALLENGES: usize = 16;
const MAX_PARAMS: usize = 32;
const MAX_HEADER_VALUES: usize = 64;

/// `cases`, unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// === counting allocator ===

struct Counting;

thread_local! {
    // Per thread, so that tests running in parallel do not count each other.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn grow(by: i64) {
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + by);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        grow(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        grow(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        grow(new_size as i64 - layout.size() as i64);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What one call cost on this thread: allocations (and reallocations), and the peak of
/// live heap bytes above where it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cost {
    allocations: u64,
    peak_bytes: i64,
}

fn cost<T>(f: impl FnOnce() -> T) -> (T, Cost) {
    let allocations = ALLOCATIONS.with(Cell::get);
    let live = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(live));
    let out = f();
    let cost = Cost {
        allocations: ALLOCATIONS.with(Cell::get) - allocations,
        peak_bytes: PEAK.with(Cell::get) - live,
    };
    (out, cost)
}

// === invariants every parse must keep ===

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn assert_invariants(challenges: &[Challenge]) {
    assert!(challenges.len() <= MAX_CHALLENGES, "{challenges:?}");
    for challenge in challenges {
        let scheme = challenge.scheme();
        assert!(
            !scheme.is_empty() && scheme.bytes().all(is_tchar),
            "{scheme:?}"
        );
        let params: Vec<(&str, &str)> = challenge.params().collect();
        assert!(params.len() <= MAX_PARAMS, "{challenge:?}");
        assert!(challenge.token68().is_none() || params.is_empty());
        for (i, (name, value)) in params.iter().enumerate() {
            assert!(!name.is_empty() && name.bytes().all(is_tchar), "{name:?}");
            assert_eq!(*name, name.to_ascii_lowercase());
            assert!(
                params[..i].iter().all(|(n, _)| n != name),
                "duplicate {name}"
            );
            assert_eq!(challenge.param(&name.to_ascii_uppercase()), Some(*value));
        }
        // Debug escapes what the backend sent: no raw control character reaches a log.
        assert!(!chains::has_control(&format!("{challenge:?}")));
    }
}

fn headers(values: &[HeaderValue]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(header::WWW_AUTHENTICATE, value.clone());
    }
    headers
}

/// Parses, checks the invariants, and checks what the classifier makes of the same
/// header values on 401, 403 and 407: the same challenges, and a `Display` with no raw
/// control character.
fn parse_and_check(values: &[HeaderValue]) -> Vec<Challenge> {
    let mut map = headers(values);
    let challenges = parse_challenges(&map);
    assert_invariants(&challenges);
    for value in values {
        map.append(header::PROXY_AUTHENTICATE, value.clone());
    }
    for status in [401, 403, 407] {
        let status = StatusCode::from_u16(status).unwrap();
        let outcome = DefaultClassifier.classify_response(status, &map);
        let Outcome::Auth(auth) = &outcome else {
            panic!("{status}: {outcome:?}");
        };
        assert_eq!(auth.challenges(), challenges.as_slice(), "{status}");
        let _ = (auth.scope(), auth.resource_metadata(), auth.bearer_error());
        for shown in [
            outcome.to_string(),
            auth.to_string(),
            format!("{outcome:?}"),
        ] {
            assert!(!chains::has_control(&shown), "{shown:?}");
        }
    }
    challenges
}

/// Bytes that `HeaderValue::from_bytes` accepts, weighted towards the grammar's
/// delimiters.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => select(b" \t,=\"\\/aZ09!~B".to_vec()),
        1 => any::<u8>(),
    ];
    proptest::collection::vec(byte, 0..160)
}

// === generated challenge lists ===

#[derive(Debug, Clone)]
enum Value {
    Token(String),
    /// The decoded text, and which of its bytes to send as a quoted-pair even where a
    /// plain byte would do (`"` and `\` always are).
    Quoted(String, u64),
}

impl Value {
    fn decoded(&self) -> &str {
        match self {
            Value::Token(text) | Value::Quoted(text, _) => text,
        }
    }

    fn render(&self, out: &mut Vec<u8>) {
        match self {
            Value::Token(token) => out.extend_from_slice(token.as_bytes()),
            Value::Quoted(text, escapes) => {
                out.push(b'"');
                for (i, &b) in text.as_bytes().iter().enumerate() {
                    if b == b'"' || b == b'\\' || escapes & (1 << (i % 64)) != 0 {
                        out.push(b'\\');
                    }
                    out.push(b);
                }
                out.push(b'"');
            }
        }
    }
}

#[derive(Debug, Clone)]
struct GenChallenge {
    scheme: String,
    token68: Option<String>,
    params: Vec<(String, Value)>,
    /// Picks the whitespace around this challenge's `=` signs and after its scheme.
    spacing: u64,
}

/// One list element: a challenge's head (scheme, and its token68 or first param), or one
/// more param of the challenge before it.
enum Element<'a> {
    Head(&'a GenChallenge),
    Param(&'a str, &'a Value, u64),
}

const SEPARATORS: &[&str] = &[",", ", ", " ,", " , ", ",\t", ", ,", ",, ", "\t,\t"];
const EQUALS: &[&str] = &["=", "=", "=", " =", "= ", " = ", "\t=\t"];
const AFTER_SCHEME: &[&str] = &[" ", " ", "  "];

fn render_param(out: &mut Vec<u8>, name: &str, value: &Value, spacing: u64) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(EQUALS[(spacing % EQUALS.len() as u64) as usize].as_bytes());
    value.render(out);
}

fn render_element(out: &mut Vec<u8>, element: &Element<'_>) {
    match element {
        Element::Head(challenge) => {
            out.extend_from_slice(challenge.scheme.as_bytes());
            let after = AFTER_SCHEME[(challenge.spacing % 3) as usize].as_bytes();
            if let Some(token68) = &challenge.token68 {
                out.extend_from_slice(after);
                out.extend_from_slice(token68.as_bytes());
            } else if let Some((name, value)) = challenge.params.first() {
                out.extend_from_slice(after);
                render_param(out, name, value, challenge.spacing >> 8);
            }
        }
        Element::Param(name, value, spacing) => render_param(out, name, value, *spacing),
    }
}

fn elements(list: &[GenChallenge]) -> Vec<Element<'_>> {
    let mut elements = Vec::new();
    for challenge in list {
        elements.push(Element::Head(challenge));
        for (i, (name, value)) in challenge.params.iter().enumerate().skip(1) {
            elements.push(Element::Param(name, value, challenge.spacing >> (i % 48)));
        }
    }
    elements
}

/// The list as header values: elements joined by separators, cut into a new value
/// wherever `cuts` has a bit set (RFC 9110 §5.3: several lines are one list).
fn render(list: &[GenChallenge], cuts: u64, separators: u64) -> Vec<Vec<u8>> {
    let mut values = vec![Vec::new()];
    for (i, element) in elements(list).iter().enumerate() {
        if i > 0 {
            if cuts & (1 << (i % 64)) != 0 {
                values.push(Vec::new());
            } else {
                let sep = SEPARATORS[((separators >> (i % 61)) % 8) as usize];
                values.last_mut().unwrap().extend_from_slice(sep.as_bytes());
            }
        }
        render_element(values.last_mut().unwrap(), element);
    }
    values
}

/// What the parser must give back: the caps of DESIGN §4 applied to the generated list,
/// value by value (64 values read at most; nothing read after the value in which the
/// 16th challenge starts; a 17th challenge stops everything).
type Expected = (String, Option<String>, Vec<(String, String)>);

fn expected(list: &[GenChallenge], cuts: u64) -> Vec<Expected> {
    let mut out: Vec<Expected> = Vec::new();
    let mut value = 0;
    let add = |out: &mut Vec<Expected>, name: &str, v: &Value| {
        let Some((_, token68, params)) = out.last_mut() else {
            return;
        };
        let name = name.to_ascii_lowercase();
        if token68.is_none() && params.len() < MAX_PARAMS && params.iter().all(|(n, _)| *n != name)
        {
            params.push((name, v.decoded().to_owned()));
        }
    };
    for (i, element) in elements(list).iter().enumerate() {
        if i > 0 && cuts & (1 << (i % 64)) != 0 {
            value += 1;
            if out.len() >= MAX_CHALLENGES || value >= MAX_HEADER_VALUES {
                break;
            }
        }
        match element {
            Element::Head(challenge) => {
                if out.len() >= MAX_CHALLENGES {
                    break;
                }
                out.push((challenge.scheme.clone(), challenge.token68.clone(), vec![]));
                if challenge.token68.is_none() {
                    if let Some((name, v)) = challenge.params.first() {
                        add(&mut out, name, v);
                    }
                }
            }
            Element::Param(name, v, _) => add(&mut out, name, v),
        }
    }
    out
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}"
}

fn scheme() -> impl Strategy<Value = String> {
    prop_oneof![
        token(),
        select(vec!["Bearer", "Basic", "Digest", "Negotiate", "DPoP"]).prop_map(String::from),
    ]
}

fn param_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => token(),
        1 => select(vec![
            "realm", "Realm", "scope", "error", "ERROR", "error_description",
            "resource_metadata",
        ])
        .prop_map(String::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let char = prop_oneof![
        8 => (0x20u8..0x7f).prop_map(char::from),
        1 => Just('\t'),
        1 => select(vec!['"', '\\']),
        1 => select(vec!['\u{e9}', '\u{20ac}', '\u{1f600}', '\u{fffd}']),
    ];
    prop_oneof![
        token().prop_map(Value::Token),
        (proptest::collection::vec(char, 0..24), any::<u64>())
            .prop_map(|(chars, escapes)| Value::Quoted(chars.into_iter().collect(), escapes)),
    ]
}

fn challenge() -> impl Strategy<Value = GenChallenge> {
    let token68 = "[A-Za-z0-9._~+/-]{1,16}={0,2}";
    let params = prop_oneof![
        4 => proptest::collection::vec((param_name(), value()), 0..6),
        1 => proptest::collection::vec((param_name(), value()), 30..40),
    ];
    let body = prop_oneof![
        4 => params.prop_map(|params| (None, params)),
        1 => token68.prop_map(|t| (Some(t), vec![])),
    ];
    (scheme(), body, any::<u64>()).prop_map(|(scheme, (token68, params), spacing)| GenChallenge {
        scheme,
        token68,
        params,
        spacing,
    })
}

/// Cut points: mostly one value, sometimes many.
fn cuts() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 2 => any::<u64>(), 1 => Just(u64::MAX)]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn generated_challenge_lists_parse_back(
        list in proptest::collection::vec(challenge(), 1..20),
        cuts in cuts(),
        separators in any::<u64>(),
    ) {
        let raw = render(&list, cuts, separators);
        let values: Vec<HeaderValue> = raw
            .iter()
            .map(|v| HeaderValue::from_bytes(v).expect("a generated value is a valid header value"))
            .collect();
        let got = parse_and_check(&values);
        let got: Vec<Expected> = got
            .iter()
            .map(|c| {
                let params = c.params().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
                (c.scheme().to_owned(), c.token68().map(str::to_owned), params)
            })
            .collect();
        let shown: Vec<String> = raw.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        prop_assert_eq!(got, expected(&list, cuts), "{:#?}", shown);
    }

    #[test]
    fn arbitrary_header_values_never_panic(raw in proptest::collection::vec(header_bytes(), 0..4)) {
        let values: Vec<HeaderValue> =
            raw.iter().filter_map(|v| HeaderValue::from_bytes(v).ok()).collect();
        parse_and_check(&values);
    }

    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        // Every accepted value of one arbitrary byte string, split where a header value
        // cannot continue, as the fuzz target does.
        let values: Vec<HeaderValue> = raw
            .split(|&b| b == b'\n')
            .filter_map(|v| HeaderValue::from_bytes(v).ok())
            .collect();
        parse_and_check(&values);
    }
}

// === text fallback ===

const AUTH_PHRASES: &[&str] = &[
    "authentication failed",
    "authentication error",
    "authorization required",
    "401 unauthorized",
    "unauthorized (401)",
    "403 forbidden",
    "http 401",
    "http 403",
    "status code 401",
    "status code 403",
    "status 401",
    "status 403",
    "request unauthenticated",
    "request unauthorized",
    "access denied",
    "invalid_token",
    "insufficient_scope",
];
const TIMEOUT_PHRASES: &[&str] = &["timeout", "timed out", "deadline exceeded"];
const CONNECTION_PHRASES: &[&str] = &[
    "connection refused",
    "connection reset",
    "no route to host",
    "network is unreachable",
    "broken pipe",
    "connection closed",
];

type Matcher = fn(&str) -> bool;

/// Each phrase with the question that must recognise it.
fn phrases() -> Vec<(&'static str, Matcher)> {
    let auth = AUTH_PHRASES
        .iter()
        .map(|&p| (p, text::is_authentication_error as Matcher));
    let timeout = TIMEOUT_PHRASES
        .iter()
        .map(|&p| (p, text::is_timeout_error as Matcher));
    let connection = CONNECTION_PHRASES
        .iter()
        .map(|&p| (p, text::is_connection_error as Matcher));
    auth.chain(timeout).chain(connection).collect()
}

/// `text` with the ASCII case of each letter flipped where `mask` says.
fn recase(text: &str, mask: u64) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask & (1 << (i % 64)) != 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn text_fallback_never_panics_and_ignores_ascii_case(message in any::<String>()) {
        let auth = text::is_authentication_error(&message);
        let timeout = text::is_timeout_error(&message);
        let _ = text::is_connection_error(&message);
        for cased in [message.to_ascii_uppercase(), message.to_ascii_lowercase()] {
            prop_assert_eq!(text::is_authentication_error(&cased), auth);
            prop_assert_eq!(text::is_timeout_error(&cased), timeout);
        }
    }

    #[test]
    fn a_phrase_between_word_boundaries_matches_in_any_case(
        (phrase, matches) in select(phrases()),
        prefix in "[a-z0-9 ]{0,12}",
        suffix in "[a-z0-9 ]{0,12}",
        before in select(vec![" ", ": ", "(", "_", "-", "\u{e9}", "\"", "\n"]),
        after in select(vec![" ", ".", ")", "_", "-", "\u{e9}", "\"", "\r\n"]),
        mask in any::<u64>(),
    ) {
        let phrase = recase(phrase, mask);
        for message in [
            phrase.clone(),
            format!("{prefix}{before}{phrase}"),
            format!("{phrase}{after}{suffix}"),
            format!("{prefix}{before}{phrase}{after}{suffix}"),
        ] {
            prop_assert!(matches(&message), "{:?}", message);
        }
    }

    #[test]
    fn a_phrase_glued_to_letters_or_digits_does_not_match(
        (phrase, matches) in select(phrases()),
        before in "[a-zA-Z0-9]",
        after in "[a-zA-Z0-9]",
    ) {
        for message in [
            format!("{before}{phrase}{after}"),
            format!("{before}{phrase}"),
            format!("{phrase}{after}"),
        ] {
            prop_assert!(!matches(&message), "{:?}", message);
        }
    }

    #[test]
    fn eof_matches_in_upper_case_only(before in "[ :(]?", after in "[ .)]?") {
        let upper = format!("{before}EOF{after}");
        prop_assert!(text::is_connection_error(&upper), "{:?}", upper);
        for eof in ["eof", "Eof", "EoF", "eOF"] {
            let message = format!("{before}{eof}{after}");
            prop_assert!(!text::is_connection_error(&message), "{:?}", message);
        }
    }
}

#[test]
fn the_text_fallback_allocates_nothing_on_a_megabyte() {
    // Near misses everywhere: every position starts a comparison and none matches.
    let message = "status 4010 timeouts connection refusedx ".repeat(25_000);
    let ((auth, timeout, connection), cost) = cost(|| {
        (
            text::is_authentication_error(&message),
            text::is_timeout_error(&message),
            text::is_connection_error(&message),
        )
    });
    assert_eq!((auth, timeout, connection), (false, false, false));
    assert_eq!(cost.allocations, 0, "{cost:?}");
}

// === error chains ===

fn io_kind() -> impl Strategy<Value = std::io::ErrorKind> {
    select(chains::IO_KINDS.to_vec())
}

fn message() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(chains::MESSAGES.to_vec()).prop_map(String::from),
        1 => any::<String>(),
    ]
}

fn wrapper() -> impl Strategy<Value = Wrapper> {
    prop_oneof![
        4 => message().prop_map(Wrapper::Message),
        3 => io_kind().prop_map(Wrapper::Io),
        1 => Just(Wrapper::Classified),
        1 => Just(Wrapper::Custom),
        1 => Just(Wrapper::FailingDisplay),
    ]
}

fn leaf() -> impl Strategy<Value = Leaf> {
    prop_oneof![
        message().prop_map(Leaf::Message),
        io_kind().prop_map(Leaf::Io),
        (io_kind(), message()).prop_map(|(kind, message)| Leaf::IoMessage(kind, message)),
        Just(Leaf::Elapsed),
        Just(Leaf::Overloaded),
        Just(Leaf::InvalidUri),
        Just(Leaf::Http),
        message().prop_map(Leaf::Cycle),
    ]
}

/// What an outcome says, without the identity of an error it may hold.
fn said(outcome: &Outcome) -> String {
    outcome.to_string()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn classify_error_on_random_chains(
        wrappers in proptest::collection::vec(wrapper(), 0..48),
        leaf in leaf(),
    ) {
        chains::check(&wrappers, &leaf);
    }

    #[test]
    fn classify_error_on_decoded_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        // The fuzz target's input format, on random bytes.
        let (wrappers, leaf) = chains::decode(&data);
        chains::check(&wrappers, &leaf);
    }

    #[test]
    fn entries_past_the_32nd_are_never_read(
        // No `Classified` in the head: building one classifies its own inner chain, from
        // its own position, 32 entries deep.
        head in proptest::collection::vec(
            wrapper().prop_filter("not classified", |w| *w != Wrapper::Classified),
            32,
        ),
        tail_a in proptest::collection::vec(wrapper(), 0..8),
        leaf_a in leaf(),
        tail_b in proptest::collection::vec(wrapper(), 0..8),
        leaf_b in leaf(),
    ) {
        let a = [head.clone(), tail_a].concat();
        let b = [head, tail_b].concat();
        prop_assert_eq!(said(&chains::check(&a, &leaf_a)), said(&chains::check(&b, &leaf_b)));
    }

    #[test]
    fn chains_with_nothing_to_recognise_are_transport_other(
        messages in proptest::collection::vec("[0-9 .,;:()#/-]{0,24}", 1..40),
        neutral in proptest::collection::vec(
            select(vec![std::io::ErrorKind::Other, std::io::ErrorKind::InvalidData]), 0..4),
    ) {
        // Digits and punctuation only: no phrase of the text fallback can be in them (a
        // bare `401` is not one), and no exact text either.
        let mut wrappers: Vec<Wrapper> =
            messages[1..].iter().cloned().map(Wrapper::Message).collect();
        wrappers.extend(neutral.into_iter().map(Wrapper::Io));
        let outcome = chains::check(&wrappers, &Leaf::Message(messages[0].clone()));
        prop_assert_eq!(outcome, Outcome::Transport(TransportKind::Other));
    }
}

#[test]
fn a_cyclic_chain_is_cut_and_still_classified() {
    for (message, want) in [
        ("operation timed out", TransportKind::Timeout),
        ("connection refused", TransportKind::ConnectionRefused),
        ("nothing to see", TransportKind::Other),
    ] {
        let outcome = chains::check(&[], &Leaf::Cycle(message.to_owned()));
        assert_eq!(outcome, Outcome::Transport(want), "{message}");
    }
    let error = chains::build(
        &[Wrapper::Io(std::io::ErrorKind::Other)],
        &Leaf::Cycle("x".into()),
    );
    assert_eq!(
        classify_error(&*error),
        Outcome::Transport(TransportKind::Other)
    );
}

// === bounded work and memory ===

/// Hostile inputs, each as a function of a size `n`: the same pattern, `n` times.
fn hostile(n: usize) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let params: String = (0..n).map(|i| format!("p{i}=\"v{i}\", ")).collect();
    vec![
        ("commas", vec![b",".repeat(n)]),
        (
            "commas_then_bearer",
            vec![[b",".repeat(n), b"Bearer".to_vec()].concat()],
        ),
        ("equals", vec![b"=".repeat(n)]),
        ("quotes", vec![b"\"".repeat(n)]),
        ("backslashes", vec![b"\\".repeat(n)]),
        ("unterminated_param_quotes", vec![b"a=\"".repeat(n)]),
        ("bare_schemes", vec![b"S, ".repeat(n)]),
        ("schemes_with_params", vec![b"S a=b, ".repeat(n)]),
        ("many_params", vec![format!("Bearer {params}").into_bytes()]),
        (
            "many_params_after_token68",
            vec![format!("Basic abc==, {params}").into_bytes()],
        ),
        (
            "duplicate_params",
            vec![[b"Bearer ".to_vec(), b"realm=a, ".repeat(n)].concat()],
        ),
        (
            "escaped_quotes_in_dropped_params",
            vec![[
                b"Bearer x=\"\\\"\", ".to_vec(),
                b"x=\"\\\"\\\\\", ".repeat(n),
            ]
            .concat()],
        ),
        (
            "many_values",
            (0..n / 100)
                .map(|i| format!("S{i} realm=r").into_bytes())
                .collect(),
        ),
        (
            "many_values_of_commas",
            (0..n / 100).map(|_| b",".repeat(100)).collect(),
        ),
    ]
}

/// Inputs whose one kept value grows with the input: an unterminated quoted string, a
/// long token68, a deep run of escapes. Their memory may grow, but only linearly.
fn hostile_growing(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "unterminated_realm",
            [b"Bearer realm=\"".to_vec(), b"a".repeat(n)].concat(),
        ),
        (
            "long_token68",
            [b"Negotiate ".to_vec(), b"A".repeat(n), b"==".to_vec()].concat(),
        ),
        (
            "deep_backslashes",
            [
                b"Bearer realm=\"".to_vec(),
                b"\\\\".repeat(n / 2),
                b"\"".to_vec(),
            ]
            .concat(),
        ),
        (
            "escaped_everything",
            [
                b"Bearer realm=\"".to_vec(),
                b"\\a".repeat(n / 2),
                b"\"".to_vec(),
            ]
            .concat(),
        ),
    ]
}

fn parse_raw(raw: &[Vec<u8>]) -> (Vec<Challenge>, Cost) {
    let values: Vec<HeaderValue> = raw
        .iter()
        .map(|v| HeaderValue::from_bytes(v).unwrap())
        .collect();
    let map = headers(&values);
    cost(|| parse_challenges(&map))
}

#[test]
fn hostile_inputs_keep_at_most_16_challenges_of_32_params() {
    for (name, raw) in hostile(10_000) {
        let (challenges, _) = parse_raw(&raw);
        assert_invariants(&challenges);
        match name {
            "many_params" => {
                assert_eq!(challenges.len(), 1);
                assert_eq!(challenges[0].params().count(), MAX_PARAMS);
            }
            "bare_schemes" | "schemes_with_params" | "many_values" => {
                assert_eq!(challenges.len(), MAX_CHALLENGES, "{name}")
            }
            "duplicate_params" => assert_eq!(challenges[0].params().count(), 1),
            _ => {}
        }
    }
}

/// Twice the input costs the same: the parser keeps a capped result and allocates for
/// nothing else, whatever it skips. A parser that buffered what it skips, or kept more
/// than the caps, would allocate more for the longer input.
#[test]
fn twice_the_input_costs_no_more_than_the_capped_result() {
    for ((name, small), (_, large)) in hostile(10_000).into_iter().zip(hostile(20_000)) {
        let (small_result, small_cost) = parse_raw(&small);
        let (large_result, large_cost) = parse_raw(&large);
        assert_eq!(
            small_result, large_result,
            "{name}: the kept result is capped"
        );
        assert_eq!(small_cost, large_cost, "{name}");
        // Two allocations per kept challenge (its text, and its params past the fifth),
        // plus the list growing by doubling: a few dozen at most.
        assert!(
            small_cost.allocations <= 2 * 16 + 8,
            "{name}: {small_cost:?}"
        );
        assert!(small_cost.peak_bytes <= 64 * 1024, "{name}: {small_cost:?}");
    }
    // Nothing kept, nothing allocated.
    for name in [
        "commas",
        "equals",
        "quotes",
        "backslashes",
        "many_values_of_commas",
    ] {
        let raw = hostile(20_000)
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1;
        assert_eq!(parse_raw(&raw).1.allocations, 0, "{name}");
    }
}

/// A kept value as long as the input costs memory in proportion, and a number of
/// allocations that does not grow with it (reserved once, grown by doubling at most).
#[test]
fn a_value_as_long_as_the_input_costs_linear_memory() {
    for ((name, small), (_, large)) in hostile_growing(100_000)
        .into_iter()
        .zip(hostile_growing(200_000))
    {
        let (small_result, small_cost) = parse_raw(std::slice::from_ref(&small));
        let (large_result, large_cost) = parse_raw(std::slice::from_ref(&large));
        assert_invariants(&small_result);
        assert_invariants(&large_result);
        assert_eq!(small_result.len(), 1, "{name}");
        for (raw, cost) in [(&small, small_cost), (&large, large_cost)] {
            assert!(
                cost.peak_bytes <= 2 * raw.len() as i64 + 4096,
                "{name}: {cost:?} for {} bytes",
                raw.len()
            );
        }
        assert!(
            large_cost.allocations <= small_cost.allocations + 2,
            "{name}: {small_cost:?} -> {large_cost:?}"
        );
    }
}

/// Inputs that make a backtracking or rescanning parser quadratic, repeated a million
/// times (1 MiB of commas, 16 MiB of parameters, ...): quadratic work would take hours
/// at this size, so completion is the assertion (no clock is read).
#[test]
fn a_million_repetitions_of_each_hostile_pattern_complete() {
    for (name, raw) in hostile(1 << 20) {
        let (challenges, _) = parse_raw(&raw);
        assert_invariants(&challenges);
        if name == "many_params" {
            // A million parameters, the first 32 kept.
            assert_eq!(challenges[0].params().count(), MAX_PARAMS);
        }
    }
}
