//! RFC 9110 §11.6.1 challenge parser for `WWW-Authenticate` and `Proxy-Authenticate`.
//!
//! The backend controls every byte parsed here, so the parser is a single forward pass
//! over the raw header bytes: a cursor that never moves back to re-parse, and never
//! fails. Anything that does not fit the grammar is skipped up to the next list
//! separator and parsing goes on, so one bad element cannot hide the good ones after it.
//!
//! Grammar (RFC 9110 §11.6.1, §5.6):
//!
//! ```text
//! challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param = token BWS "=" BWS ( token / quoted-string )
//! token68    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
//! ```
//!
//! Commas separate both challenges and the auth-params of one challenge; an element
//! starts a new challenge when it is a token followed by a comma, the end, or
//! whitespace and then something other than `=`.
//!
//! Allocation: the list is one `Vec`, and each challenge one `String` holding all of its
//! decoded text, with the positions of up to five parameters stored inline (more spill to
//! a second, small `Vec`). Values are decoded straight into that `String`, so a typical
//! 401 with one challenge costs two allocations.

use std::fmt;
use std::ops::ControlFlow;

use http::{header, HeaderMap, HeaderValue};

/// Challenges kept in total, across every header value. Clients pick one scheme; a
/// legitimate server offers a handful, so anything past this is noise or an attack.
const MAX_CHALLENGES: usize = 16;

/// Parameters kept per challenge. Also bounds the duplicate-name check to a constant
/// number of comparisons per parameter, which keeps the whole parse linear.
const MAX_PARAMS: usize = 32;

/// Header values looked at. A response can repeat a header thousands of times; each
/// value is still parsed in linear time, but there is no reason to walk them all.
const MAX_HEADER_VALUES: usize = 64;

/// Parameters whose positions a challenge stores inline; the rest go to a `Vec`. Five
/// covers a full RFC 6750 / RFC 9728 Bearer challenge (`realm`, `scope`, `error`,
/// `error_description`, `resource_metadata`).
const INLINE_PARAMS: usize = 5;

/// The most text capacity reserved up front for one challenge. The rest of the header
/// value from the scheme on bounds the decoded text of a challenge that ends in it (for
/// ASCII, decoding only drops bytes), so a one-challenge value gets one exact-enough
/// allocation; the cap keeps a long value with many challenges from reserving its whole
/// length for each of them.
const TEXT_RESERVE_MAX: usize = 256;

/// One authentication challenge from `WWW-Authenticate` or `Proxy-Authenticate`.
///
/// A challenge carries either a `token68` (`Basic dXNlcjpwYXNz`) or a list of
/// parameters (`Bearer realm="api", error="invalid_token"`), never both.
///
/// ```
/// use http::{header, HeaderMap, HeaderValue};
/// use tower_health_classify::{parse_challenges, Challenge};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     header::WWW_AUTHENTICATE,
///     HeaderValue::from_static(r#"Basic realm="x", Bearer Realm="api", error="invalid_token""#),
/// );
/// let challenges: Vec<Challenge> = parse_challenges(&headers);
/// assert_eq!(challenges.len(), 2);
/// assert!(challenges[0].is_scheme("basic"));
/// assert_eq!(challenges[1].scheme(), "Bearer");
/// assert_eq!(challenges[1].realm(), Some("api"));
/// assert_eq!(challenges[1].error(), Some("invalid_token"));
/// ```
#[derive(Clone)]
pub struct Challenge {
    /// The scheme, then either the token68 or, for each parameter in order, its
    /// lowercased name directly followed by its decoded value. Nothing else: the text
    /// ends where the token68 or the last value ends.
    text: String,
    /// `text[..scheme_len]` is the scheme.
    scheme_len: u32,
    /// Whether `text[scheme_len..]` is a token68 (then there are no parameters).
    token68: bool,
    /// How many of `inline` are in use; `spill` is empty unless all of them are.
    inline_len: u8,
    /// Where the first parameters end. A parameter starts where the previous one ends,
    /// the first one at `scheme_len`.
    inline: [ParamEnd; INLINE_PARAMS],
    /// Where parameters after the first `INLINE_PARAMS` end.
    spill: Vec<ParamEnd>,
}

/// Where one parameter's name and value end in [`Challenge::text`]. Offsets are `u32` to
/// keep challenges small; a parameter that would end past 4 GiB is dropped.
#[derive(Clone, Copy, Default)]
struct ParamEnd {
    name: u32,
    value: u32,
}

/// A `u32` offset as an index. `usize` is at least 32 bits on every target `http` builds
/// for.
fn index(offset: u32) -> usize {
    offset as usize
}

impl Challenge {
    /// Opens a challenge for `scheme` (tchar bytes) with room for `capacity` bytes of
    /// text; `None` if the scheme is too long to index.
    fn start(scheme: &[u8], capacity: usize) -> Option<Self> {
        let scheme_len = u32::try_from(scheme.len()).ok()?;
        let mut text = String::with_capacity(capacity.max(scheme.len()));
        push_ascii(&mut text, scheme);
        Some(Challenge {
            text,
            scheme_len,
            token68: false,
            inline_len: 0,
            inline: [ParamEnd::default(); INLINE_PARAMS],
            spill: Vec::new(),
        })
    }

    /// Builds a challenge directly, for tests that need one without a header to parse.
    ///
    /// Parameter names are lowercased and later duplicates dropped, as the parser does.
    #[cfg(test)]
    pub(crate) fn new(scheme: &str, token68: Option<&str>, params: &[(&str, &str)]) -> Self {
        let mut challenge = Challenge::start(scheme.as_bytes(), 0).expect("a short scheme");
        if let Some(token68) = token68 {
            challenge.set_token68(token68.as_bytes());
        }
        for (name, value) in params {
            if challenge.accepts(name.as_bytes()) {
                challenge.add_param(name.as_bytes(), |text| {
                    text.push_str(value);
                    true
                });
            }
        }
        challenge
    }

    /// The auth scheme as sent (`Bearer`, `Basic`, ...).
    pub fn scheme(&self) -> &str {
        &self.text[..index(self.scheme_len)]
    }

    /// Whether the scheme is `scheme`, compared case-insensitively.
    pub fn is_scheme(&self, scheme: &str) -> bool {
        self.scheme().eq_ignore_ascii_case(scheme)
    }

    /// The token68 form of the challenge, if it used one instead of parameters.
    pub fn token68(&self) -> Option<&str> {
        self.token68.then(|| &self.text[index(self.scheme_len)..])
    }

    /// The value of parameter `name` (case-insensitive), unquoted and unescaped.
    ///
    /// A name sent more than once keeps its first value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every parameter in order, names lowercased.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = index(self.scheme_len);
        self.param_ends().map(move |end| {
            let (name_end, value_end) = (index(end.name), index(end.value));
            let param = (&self.text[start..name_end], &self.text[name_end..value_end]);
            start = value_end;
            param
        })
    }

    /// The `realm` parameter.
    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    /// The RFC 6750 `scope` parameter.
    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// The RFC 6750 `error` parameter, as sent.
    pub fn error(&self) -> Option<&str> {
        self.param("error")
    }

    /// The RFC 6750 `error_description` parameter. Backend-controlled text: escape it
    /// before logging.
    pub fn error_description(&self) -> Option<&str> {
        self.param("error_description")
    }

    /// The RFC 9728 `resource_metadata` parameter (protected resource metadata URL).
    pub fn resource_metadata(&self) -> Option<&str> {
        self.param("resource_metadata")
    }

    fn param_ends(&self) -> impl Iterator<Item = ParamEnd> + '_ {
        self.inline[..usize::from(self.inline_len)]
            .iter()
            .chain(&self.spill)
            .copied()
    }

    fn param_count(&self) -> usize {
        usize::from(self.inline_len) + self.spill.len()
    }

    /// Makes the rest of the text, which must be empty, the token68 `token` (token68
    /// bytes, ASCII).
    fn set_token68(&mut self, token: &[u8]) {
        debug_assert_eq!(self.text.len(), index(self.scheme_len));
        push_ascii(&mut self.text, token);
        self.token68 = true;
    }

    /// Whether a parameter `name` would be kept: not after a token68, not past the cap,
    /// not a name already present (first wins).
    fn accepts(&self, name: &[u8]) -> bool {
        !self.token68
            && self.param_count() < MAX_PARAMS
            && !self
                .params()
                .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
    }

    /// Appends parameter `name` (tchar bytes, lowercased here) and a value that `value`
    /// decodes into the text. If `value` reports the element malformed, the text is cut
    /// back and nothing is kept. Returns whether the parameter was kept.
    fn add_param(&mut self, name: &[u8], value: impl FnOnce(&mut String) -> bool) -> bool {
        let start = self.text.len();
        push_ascii(&mut self.text, name);
        self.text[start..].make_ascii_lowercase();
        let name_end = self.text.len();
        if value(&mut self.text) {
            if let (Ok(name), Ok(value)) = (u32::try_from(name_end), u32::try_from(self.text.len()))
            {
                let end = ParamEnd { name, value };
                match self.inline.get_mut(usize::from(self.inline_len)) {
                    Some(slot) => {
                        *slot = end;
                        self.inline_len += 1;
                    }
                    None => self.spill.push(end),
                }
                return true;
            }
        }
        self.text.truncate(start);
        false
    }
}

/// Two challenges are equal when their scheme, token68 and parameters are, whatever
/// capacity their buffers have.
impl PartialEq for Challenge {
    fn eq(&self, other: &Self) -> bool {
        self.scheme() == other.scheme()
            && self.token68() == other.token68()
            && self.params().eq(other.params())
    }
}

impl Eq for Challenge {}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Params<'a>(&'a Challenge);
        impl fmt::Debug for Params<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list().entries(self.0.params()).finish()
            }
        }
        f.debug_struct("Challenge")
            .field("scheme", &self.scheme())
            .field("token68", &self.token68())
            .field("params", &Params(self))
            .finish()
    }
}

/// Parses every challenge of every `WWW-Authenticate` value.
///
/// Never fails: malformed parts are skipped. At most 16 challenges are kept, each with
/// at most 32 parameters, and at most 64 header values are read.
///
/// ```
/// use http::{header, HeaderMap, HeaderValue};
/// use tower_health_classify::parse_challenges;
///
/// let mut headers = HeaderMap::new();
/// headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Negotiate abc=="));
/// headers.append(
///     header::WWW_AUTHENTICATE,
///     HeaderValue::from_static(r#"Bearer realm="a \"quoted\" realm", scope="read, write""#),
/// );
/// let challenges = parse_challenges(&headers);
/// assert_eq!(challenges[0].token68(), Some("abc=="));
/// assert_eq!(challenges[1].realm(), Some(r#"a "quoted" realm"#));
/// assert_eq!(challenges[1].scope(), Some("read, write"));
/// ```
pub fn parse_challenges(headers: &HeaderMap) -> Vec<Challenge> {
    parse_challenge_values(headers.get_all(header::WWW_AUTHENTICATE))
}

/// Parses every challenge of `values`, in order, with the same caps as
/// [`parse_challenges`].
///
/// Several field lines are, per RFC 9110 §5.3, the same as one line joined with commas,
/// so a value that starts with parameters continues the last challenge of the previous
/// value. Quoted strings do not span values: a well-formed line cannot end inside one.
pub(crate) fn parse_challenge_values<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Vec<Challenge> {
    let mut out = Vec::new();
    for value in values.into_iter().take(MAX_HEADER_VALUES) {
        let mut parser = Parser {
            bytes: value.as_bytes(),
            pos: 0,
        };
        if parser.list(&mut out).is_break() || out.len() >= MAX_CHALLENGES {
            break;
        }
    }
    out
}

/// `tchar` from RFC 9110 §5.6.2: the bytes a token (scheme or parameter name) is made of.
fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] as a table: one load per byte of every scheme, name and token value.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let symbols = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < symbols.len() {
        table[symbols[i] as usize] = true;
        i += 1;
    }
    table
};

/// The bytes of a token68 before its `=` padding.
fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

/// Token68 allows `/`, which a token does not; reading the union first lets one forward
/// read decide between the two without going back.
fn is_word_char(b: u8) -> bool {
    is_tchar(b) || b == b'/'
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Appends token bytes. Tokens are ASCII by construction, so this never loses anything
/// (other bytes would be read as Latin-1).
fn push_ascii(text: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(ascii) => text.push_str(ascii),
        Err(_) => text.extend(bytes.iter().map(|&b| char::from(b))),
    }
}

/// Lossy UTF-8 decoding of a value that arrives in pieces (the runs between escapes, and
/// each escaped byte), giving what `String::from_utf8_lossy` gives for the whole value:
/// a sequence cut by an escape still decodes, and each maximal invalid subpart becomes
/// one U+FFFD. Values may hold obs-text (0x80-0xFF): a UTF-8 realm survives and stray
/// bytes are replaced.
#[derive(Default)]
struct LossyUtf8 {
    /// The start of a multi-byte sequence waiting for its continuation bytes. It never
    /// holds a complete character, so at most three bytes.
    pending: [u8; 4],
    len: usize,
}

impl LossyUtf8 {
    fn push_bytes(&mut self, out: &mut String, bytes: &[u8]) {
        if self.len == 0 {
            if let Ok(valid) = std::str::from_utf8(bytes) {
                out.push_str(valid);
                return;
            }
        }
        for &b in bytes {
            self.push_byte(out, b);
        }
    }

    fn push_byte(&mut self, out: &mut String, b: u8) {
        if self.len == 0 && b.is_ascii() {
            out.push(char::from(b));
            return;
        }
        self.pending[self.len] = b;
        self.len += 1;
        while self.len > 0 {
            match std::str::from_utf8(&self.pending[..self.len]) {
                Ok(complete) => {
                    out.push_str(complete);
                    self.len = 0;
                }
                // Still a valid start: wait for more.
                Err(e) if e.error_len().is_none() => return,
                Err(e) => {
                    // `pending` held no complete character before `b`, so the invalid
                    // subpart starts at 0; what follows it is decoded afresh.
                    debug_assert_eq!(e.valid_up_to(), 0);
                    let bad = e.error_len().unwrap_or(self.len);
                    out.push(char::REPLACEMENT_CHARACTER);
                    self.pending.copy_within(bad..self.len, 0);
                    self.len -= bad;
                }
            }
        }
    }

    /// Ends the value: a sequence cut short is one invalid subpart.
    fn finish(&mut self, out: &mut String) {
        if self.len > 0 {
            out.push(char::REPLACEMENT_CHARACTER);
            self.len = 0;
        }
    }
}

/// A forward-only cursor over one header value.
///
/// Every method either consumes bytes or returns without looking back; nothing ever
/// moves `pos` backwards, so the total work per value is linear in its length.
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Consumes the longest run of bytes matching `pred` and returns it.
    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        let len = rest.iter().position(|&b| !pred(b)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    /// Skips optional whitespace; returns whether there was any.
    fn skip_ows(&mut self) -> bool {
        !self.take_while(is_ows).is_empty()
    }

    /// Skips trailing whitespace and reports whether the list element ends here.
    fn at_element_end(&mut self) -> bool {
        self.skip_ows();
        matches!(self.peek(), None | Some(b','))
    }

    /// Skips the rest of a malformed element, up to (not past) the next comma that is
    /// not inside a quoted string, or the end.
    fn skip_element(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b',' => return,
                b'"' => {
                    self.pos += 1;
                    self.quoted_string(None);
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Reads a quoted string whose opening quote is already consumed, unescaping and
    /// decoding into `out` if given. An unterminated string ends at the end of the
    /// value, and a trailing lone `\` is dropped.
    fn quoted_string(&mut self, mut out: Option<&mut String>) {
        let mut utf8 = LossyUtf8::default();
        loop {
            let run = self.take_while(|b| b != b'"' && b != b'\\');
            if let Some(out) = out.as_deref_mut() {
                utf8.push_bytes(out, run);
            }
            let Some(b) = self.peek() else { break };
            self.pos += 1;
            if b == b'"' {
                break;
            }
            // A backslash: the next byte, whatever it is, stands for itself.
            let Some(escaped) = self.peek() else { break };
            self.pos += 1;
            if let Some(out) = out.as_deref_mut() {
                utf8.push_byte(out, escaped);
            }
        }
        if let Some(out) = out {
            utf8.finish(out);
        }
    }

    /// Reads `token / quoted-string`, decoding it into `out` if given; `false` if
    /// neither starts here.
    fn param_value(&mut self, out: Option<&mut String>) -> bool {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                self.quoted_string(out);
                true
            }
            Some(b) if is_tchar(b) => {
                let token = self.take_while(is_tchar);
                if let Some(out) = out {
                    push_ascii(out, token);
                }
                true
            }
            _ => false,
        }
    }

    /// Parses the whole comma-separated list, appending to `out`.
    ///
    /// Breaks once a challenge starts while `out` is already full: nothing after it, in
    /// this value or later ones, could be kept.
    fn list(&mut self, out: &mut Vec<Challenge>) -> ControlFlow<()> {
        loop {
            // RFC 9110 §5.6.1: recipients accept empty list elements.
            self.take_while(|b| is_ows(b) || b == b',');
            let Some(first) = self.peek() else {
                return ControlFlow::Continue(());
            };
            if !is_tchar(first) {
                self.skip_element();
                continue;
            }
            // Everything from here on: an upper bound on this challenge's text.
            let rest = self.bytes.len() - self.pos;
            let token = self.take_while(is_tchar);
            let had_ows = self.skip_ows();
            match self.peek() {
                None | Some(b',') => start_challenge(out, token, rest)?,
                Some(b'=') => {
                    self.pos += 1;
                    self.skip_ows();
                    self.param_rest(out, token);
                }
                Some(_) if had_ows => {
                    start_challenge(out, token, rest)?;
                    self.challenge_rest(out);
                }
                // A token glued to something that is neither `=` nor whitespace.
                Some(_) => self.skip_element(),
            }
        }
    }

    /// Parses the value of parameter `name`, the `=` and BWS already consumed, and adds
    /// it to the current challenge if the element is well-formed and the challenge
    /// takes it (see [`Challenge::accepts`]). A kept value is decoded straight into the
    /// challenge's text; any other is only skipped over.
    fn param_rest(&mut self, out: &mut [Challenge], name: &[u8]) {
        let well_formed = match out.last_mut().filter(|c| c.accepts(name)) {
            Some(challenge) => challenge.add_param(name, |text| {
                self.param_value(Some(text)) && self.at_element_end()
            }),
            None => self.param_value(None) && self.at_element_end(),
        };
        if !well_formed {
            self.skip_element();
        }
    }

    /// Parses what follows `auth-scheme 1*SP`: a token68 or the first auth-param. A
    /// malformed remainder is dropped but the challenge itself is kept.
    fn challenge_rest(&mut self, out: &mut [Challenge]) {
        let start = self.pos;
        let word = self.take_while(is_word_char);
        let padding = self.take_while(|b| b == b'=').len();
        let end = self.pos;
        if self.at_element_end() {
            // `abc`, `abc==`, and even `realm=` are token68 by the grammar when nothing
            // follows them in the element.
            if !word.is_empty() && word.iter().all(|&b| is_token68_char(b)) {
                if let Some(challenge) = out.last_mut() {
                    challenge.set_token68(&self.bytes[start..end]);
                }
            }
            return;
        }
        if word.is_empty() || !word.iter().all(|&b| is_tchar(b)) {
            self.skip_element();
            return;
        }
        match padding {
            0 if self.peek() == Some(b'=') => {
                self.pos += 1;
            }
            1 => {}
            _ => {
                self.skip_element();
                return;
            }
        }
        self.skip_ows();
        self.param_rest(out, word);
    }
}

/// Opens a new challenge, or breaks if the cap is already reached. `rest` is the length
/// of the header value from the scheme on.
fn start_challenge(out: &mut Vec<Challenge>, scheme: &[u8], rest: usize) -> ControlFlow<()> {
    if out.len() >= MAX_CHALLENGES {
        return ControlFlow::Break(());
    }
    // A scheme longer than 4 GiB cannot be indexed: stop there.
    let Some(challenge) = Challenge::start(scheme, rest.min(TEXT_RESERVE_MAX)) else {
        return ControlFlow::Break(());
    };
    if out.capacity() == 0 {
        // Most responses carry one challenge; a second one grows the list to four.
        out.reserve_exact(1);
    }
    out.push(challenge);
    ControlFlow::Continue(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(raw: &[&[u8]]) -> Vec<HeaderValue> {
        raw.iter()
            .map(|bytes| {
                HeaderValue::from_bytes(bytes).expect("test input is a valid header value")
            })
            .collect()
    }

    fn parse(raw: &[&[u8]]) -> Vec<Challenge> {
        parse_challenge_values(&values(raw))
    }

    fn c(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge::new(scheme, None, params)
    }

    fn t68(scheme: &str, token68: &str) -> Challenge {
        Challenge::new(scheme, Some(token68), &[])
    }

    /// Case name (what it asserts), header values, expected challenges.
    type Case = (&'static str, &'static [&'static [u8]], Vec<Challenge>);

    /// Structural guarantees that must hold whatever the input.
    fn assert_invariants(input: &[u8], challenges: &[Challenge]) {
        assert!(challenges.len() <= MAX_CHALLENGES, "{input:?}");
        for challenge in challenges {
            let scheme = challenge.scheme();
            assert!(!scheme.is_empty(), "{input:?}");
            assert!(scheme.bytes().all(is_tchar), "{input:?}");
            let params: Vec<(&str, &str)> = challenge.params().collect();
            assert!(params.len() <= MAX_PARAMS, "{input:?}");
            assert!(
                challenge.token68().is_none() || params.is_empty(),
                "{input:?}"
            );
            for (i, (name, _)) in params.iter().enumerate() {
                assert!(!name.is_empty() && name.bytes().all(is_tchar), "{input:?}");
                assert_eq!(*name, name.to_ascii_lowercase(), "{input:?}");
                assert!(
                    params[..i].iter().all(|(n, _)| n != name),
                    "duplicate {name} in {input:?}"
                );
            }
            // The representation: the text holds exactly the scheme, then the token68 or
            // each name and value, with nothing left over from dropped parameters.
            let parts = params.iter().map(|(n, v)| n.len() + v.len());
            let expected =
                scheme.len() + challenge.token68().map_or(0, str::len) + parts.sum::<usize>();
            assert_eq!(challenge.text.len(), expected, "{input:?}");
            assert!(
                challenge.spill.is_empty() || usize::from(challenge.inline_len) == INLINE_PARAMS
            );
        }
    }

    #[test]
    fn table_of_header_values_parses_as_expected() {
        let cases: &[Case] = &[
            (
                "bearer_with_several_mixed_case_params",
                &[br#"Bearer Realm="api", SCOPE="read write", Error=invalid_token, error_DESCRIPTION="The token expired", Resource_Metadata="https://rs.example/.well-known/oauth-protected-resource""#],
                vec![c(
                    "Bearer",
                    &[
                        ("realm", "api"),
                        ("scope", "read write"),
                        ("error", "invalid_token"),
                        ("error_description", "The token expired"),
                        (
                            "resource_metadata",
                            "https://rs.example/.well-known/oauth-protected-resource",
                        ),
                    ],
                )],
            ),
            (
                "several_challenges_in_one_value",
                &[br#"Basic realm="x", Bearer realm="y", error="invalid_token""#],
                vec![
                    c("Basic", &[("realm", "x")]),
                    c("Bearer", &[("realm", "y"), ("error", "invalid_token")]),
                ],
            ),
            (
                "several_header_values_concatenate_in_order",
                &[br#"Basic realm="a""#, b"Negotiate", br#"Bearer scope="mcp""#],
                vec![
                    c("Basic", &[("realm", "a")]),
                    c("Negotiate", &[]),
                    c("Bearer", &[("scope", "mcp")]),
                ],
            ),
            (
                "bare_schemes_without_params",
                &[b"Negotiate, NTLM,Basic"],
                vec![c("Negotiate", &[]), c("NTLM", &[]), c("Basic", &[])],
            ),
            (
                "scheme_may_use_any_tchar",
                &[b"X-My.Scheme!#$%&'*+^_`|~ realm=a"],
                vec![c("X-My.Scheme!#$%&'*+^_`|~", &[("realm", "a")])],
            ),
            (
                "quoted_string_unescapes_quotes_and_backslashes",
                &[br#"Bearer realm="a \"b\" c\\d", error_description="\x\y""#],
                vec![c(
                    "Bearer",
                    &[("realm", r#"a "b" c\d"#), ("error_description", "xy")],
                )],
            ),
            (
                "commas_and_equals_inside_quotes_do_not_split",
                &[br#"Bearer scope="read, write", realm="a=b, Basic c", Basic realm="z""#],
                vec![
                    c("Bearer", &[("scope", "read, write"), ("realm", "a=b, Basic c")]),
                    c("Basic", &[("realm", "z")]),
                ],
            ),
            (
                "empty_quoted_string_is_an_empty_value",
                &[br#"Bearer realm="", scope=x"#],
                vec![c("Bearer", &[("realm", ""), ("scope", "x")])],
            ),
            (
                "token68_without_padding",
                &[b"Basic dXNlcjpwYXNz"],
                vec![t68("Basic", "dXNlcjpwYXNz")],
            ),
            (
                "token68_with_padding",
                &[b"Negotiate abc=="],
                vec![t68("Negotiate", "abc==")],
            ),
            (
                "token68_with_single_pad_and_every_allowed_char",
                &[b"Foo aZ09-._~+/=  , Bar"],
                vec![t68("Foo", "aZ09-._~+/="), c("Bar", &[])],
            ),
            (
                "token68_then_another_challenge",
                &[b"Negotiate abc==, Bearer realm=x"],
                vec![t68("Negotiate", "abc=="), c("Bearer", &[("realm", "x")])],
            ),
            (
                "params_after_token68_are_dropped",
                &[b"Basic abc==, realm=x, Bearer"],
                vec![t68("Basic", "abc=="), c("Bearer", &[])],
            ),
            (
                "name_equals_value_is_a_param_not_token68",
                &[b"Foo abc=def"],
                vec![c("Foo", &[("abc", "def")])],
            ),
            (
                "name_equals_then_end_is_token68_by_the_grammar",
                &[b"Foo realm="],
                vec![t68("Foo", "realm=")],
            ),
            (
                "case_insensitive_names_stored_lowercase_scheme_as_sent",
                &[b"bEaReR ReAlM=a, SCOPE=b"],
                vec![c("bEaReR", &[("realm", "a"), ("scope", "b")])],
            ),
            (
                "bws_around_equals",
                &[b"Bearer realm = \"x\" , scope\t=\ty ,error =z"],
                vec![c("Bearer", &[("realm", "x"), ("scope", "y"), ("error", "z")])],
            ),
            (
                "empty_list_elements_are_skipped",
                &[br#", ,Bearer realm="a",, ,scope=b, ,,Basic,,"#],
                vec![c("Bearer", &[("realm", "a"), ("scope", "b")]), c("Basic", &[])],
            ),
            (
                "garbage_between_challenges_is_skipped",
                &[br#"Bearer realm="a", garbage=, , "x", Basic realm="b""#],
                vec![c("Bearer", &[("realm", "a")]), c("Basic", &[("realm", "b")])],
            ),
            ("only_equals_signs", &[b"====="], vec![]),
            ("only_quotes", &[br#"""""#], vec![]),
            (
                "dangling_param_name_after_commas",
                &[b"Bearer ,,,, realm="],
                vec![c("Bearer", &[])],
            ),
            ("lone_backslash", &[br"\"], vec![]),
            (
                "backslash_at_end_of_quoted_value_is_dropped",
                &[br#"Bearer realm="abc\"#],
                vec![c("Bearer", &[("realm", "abc")])],
            ),
            (
                "unterminated_quote_runs_to_end_of_value",
                &[br#"Bearer error=invalid_token, realm="abc, scope=x"#],
                vec![c(
                    "Bearer",
                    &[("error", "invalid_token"), ("realm", "abc, scope=x")],
                )],
            ),
            (
                "unterminated_quote_does_not_span_header_values",
                &[br#"Bearer realm="abc"#, b"Basic"],
                vec![c("Bearer", &[("realm", "abc")]), c("Basic", &[])],
            ),
            (
                "junk_after_a_value_drops_only_that_param",
                &[br#"Bearer realm="a"junk, scope=b x, error=e"#],
                vec![c("Bearer", &[("error", "e")])],
            ),
            (
                "double_equals_param_is_dropped",
                &[b"Bearer realm==x, scope=s"],
                vec![c("Bearer", &[("scope", "s")])],
            ),
            (
                "malformed_first_param_keeps_the_scheme",
                &[br#"Foo "x", realm=a, Bar b!c, Baz abc==x, Qux a/b=c"#],
                vec![
                    c("Foo", &[("realm", "a")]),
                    c("Bar", &[]),
                    c("Baz", &[]),
                    c("Qux", &[]),
                ],
            ),
            (
                "token_glued_to_garbage_is_skipped",
                &[br#"Bearer realm=a, scope"x", Basic/x, Basic"#],
                vec![c("Bearer", &[("realm", "a")]), c("Basic", &[])],
            ),
            (
                "token_space_equals_is_a_bws_param_not_a_scheme",
                &[b"Bearer realm=a, Basic ==x, scope=s"],
                vec![c("Bearer", &[("realm", "a"), ("scope", "s")])],
            ),
            (
                "slash_is_not_allowed_in_param_names",
                &[b"Bearer a/b=c, d=e"],
                vec![c("Bearer", &[("d", "e")])],
            ),
            (
                "params_before_any_challenge_are_dropped",
                &[b"realm=x, Bearer scope=y"],
                vec![c("Bearer", &[("scope", "y")])],
            ),
            (
                "params_in_a_later_value_continue_the_last_challenge",
                &[b"Bearer realm=a", b"error=invalid_token"],
                vec![c("Bearer", &[("realm", "a"), ("error", "invalid_token")])],
            ),
            (
                "duplicate_param_names_keep_the_first",
                &[b"Bearer realm=first, REALM=second, scope=s, Realm=third"],
                vec![c("Bearer", &[("realm", "first"), ("scope", "s")])],
            ),
            (
                "obs_text_in_quoted_value_is_decoded_lossily",
                &[b"Bearer realm=\"caf\xc3\xa9\", error_description=\"\xff\xfe\""],
                vec![c(
                    "Bearer",
                    &[("realm", "caf\u{e9}"), ("error_description", "\u{fffd}\u{fffd}")],
                )],
            ),
            (
                "obs_text_outside_quotes_is_skipped",
                &[b"\x80\xff, Bearer \xc3\xa9, realm=\x90x, Basic"],
                vec![c("Bearer", &[]), c("Basic", &[])],
            ),
            ("empty_value", &[b""], vec![]),
            ("only_whitespace", &[b" \t "], vec![]),
        ];
        for (name, raw, want) in cases {
            let got = parse(raw);
            assert_eq!(&got, want, "case {name}");
            for input in raw.iter() {
                assert_invariants(input, &got);
            }
        }
    }

    #[test]
    fn accessors_read_the_first_matching_param() {
        let got = parse(&[
            br#"Bearer REALM="api", Scope="mcp", error="insufficient_scope", Error_Description="need \"mcp\"", resource_metadata="https://rs.example/m", realm=other"#,
        ]);
        let [bearer] = got.as_slice() else {
            panic!("one challenge: {got:?}");
        };
        assert_eq!(bearer.scheme(), "Bearer");
        assert!(bearer.is_scheme("BEARER"));
        assert!(!bearer.is_scheme("Basic"));
        assert_eq!(bearer.token68(), None);
        assert_eq!(bearer.realm(), Some("api"));
        assert_eq!(bearer.scope(), Some("mcp"));
        assert_eq!(bearer.error(), Some("insufficient_scope"));
        assert_eq!(bearer.error_description(), Some(r#"need "mcp""#));
        assert_eq!(bearer.resource_metadata(), Some("https://rs.example/m"));
        assert_eq!(bearer.param("ERROR"), Some("insufficient_scope"));
        assert_eq!(bearer.param("missing"), None);
        let names: Vec<&str> = bearer.params().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "realm",
                "scope",
                "error",
                "error_description",
                "resource_metadata"
            ]
        );
    }

    #[test]
    fn parse_challenges_reads_www_authenticate_only() {
        let mut headers = HeaderMap::new();
        headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        headers.append(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Digest"),
        );
        assert_eq!(
            parse_challenges(&headers),
            [c("Bearer", &[]), c("Basic", &[])]
        );
        assert!(parse_challenges(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn at_most_16_challenges_from_100_in_one_value() {
        let raw: Vec<String> = (0..100).map(|i| format!("S{i} realm=r{i}")).collect();
        let got = parse(&[raw.join(", ").as_bytes()]);
        assert_eq!(got.len(), MAX_CHALLENGES);
        for (i, challenge) in got.iter().enumerate() {
            assert_eq!(challenge.scheme(), format!("S{i}"));
            assert_eq!(challenge.realm(), Some(format!("r{i}").as_str()));
        }
    }

    #[test]
    fn the_16th_challenge_keeps_its_params() {
        let mut raw: Vec<String> = (0..15).map(|i| format!("S{i}")).collect();
        raw.push("Last realm=a, scope=b".to_owned());
        raw.push("Dropped realm=c".to_owned());
        let got = parse(&[raw.join(", ").as_bytes()]);
        assert_eq!(got.len(), MAX_CHALLENGES);
        assert_eq!(got[15], c("Last", &[("realm", "a"), ("scope", "b")]));
    }

    #[test]
    fn at_most_16_challenges_across_100_header_values() {
        let raw: Vec<String> = (0..100).map(|i| format!("S{i}")).collect();
        let raw: Vec<&[u8]> = raw.iter().map(|s| s.as_bytes()).collect();
        let got = parse(&raw);
        let schemes: Vec<&str> = got.iter().map(Challenge::scheme).collect();
        let want: Vec<String> = (0..16).map(|i| format!("S{i}")).collect();
        assert_eq!(schemes, want);
    }

    #[test]
    fn values_after_the_cap_are_not_read() {
        let raw: Vec<String> = (0..16).map(|i| format!("S{i}")).collect();
        let got = parse(&[raw.join(",").as_bytes(), b"error=late"]);
        assert_eq!(got.len(), MAX_CHALLENGES);
        assert_eq!(got[15], c("S15", &[]), "no params from a later value");
    }

    #[test]
    fn at_most_64_header_values_are_read() {
        let mut raw: Vec<&[u8]> = vec![b","; MAX_HEADER_VALUES];
        raw.push(b"Bearer");
        assert!(parse(&raw).is_empty());
        raw.remove(0);
        assert_eq!(parse(&raw), [c("Bearer", &[])]);
    }

    #[test]
    fn at_most_32_params_from_10000() {
        let params: Vec<String> = (0..10_000).map(|i| format!("p{i}=\"v{i}\"")).collect();
        let raw = format!("Bearer {}, Basic realm=b", params.join(", "));
        let got = parse(&[raw.as_bytes()]);
        assert_eq!(got.len(), 2);
        let kept: Vec<(&str, &str)> = got[0].params().collect();
        assert_eq!(kept.len(), MAX_PARAMS);
        for (i, (name, value)) in kept.into_iter().enumerate() {
            assert_eq!(name, format!("p{i}"));
            assert_eq!(value, format!("v{i}"));
        }
        assert_eq!(got[1], c("Basic", &[("realm", "b")]));
    }

    #[test]
    fn duplicates_do_not_use_up_the_param_cap() {
        let mut raw = String::from("Bearer ");
        for _ in 0..1_000 {
            raw.push_str("realm=a, ");
        }
        raw.push_str("scope=s");
        let got = parse(&[raw.as_bytes()]);
        assert_eq!(got, [c("Bearer", &[("realm", "a"), ("scope", "s")])]);
    }

    #[test]
    fn eight_kib_of_commas() {
        let commas = vec![b','; 8 * 1024];
        assert!(parse(&[&commas]).is_empty());
        let mut then_bearer = commas.clone();
        then_bearer.extend_from_slice(b"Bearer realm=a");
        then_bearer.extend_from_slice(&commas);
        assert_eq!(parse(&[&then_bearer]), [c("Bearer", &[("realm", "a")])]);
    }

    /// Inputs that make a backtracking or rescanning parser quadratic. Only completion is
    /// asserted (no clocks): a quadratic pass over these would take minutes, not
    /// milliseconds.
    #[test]
    fn pathological_large_inputs_complete() {
        let big = 256 * 1024;
        let inputs: Vec<Vec<u8>> = vec![
            b"\"".repeat(big),
            b"\\".repeat(big),
            b"=".repeat(big),
            b"a ".repeat(big / 2),
            b"a=".repeat(big / 2),
            b"Bearer a".repeat(big / 8),
            [b"Bearer ".as_slice(), &b"x=\"\\\"".repeat(big / 5)].concat(),
            [b"Foo ".as_slice(), &b"a".repeat(big), b"==".as_slice()].concat(),
            [b"Bearer ".as_slice(), &b"a=b, ".repeat(big / 5)].concat(),
        ];
        for input in &inputs {
            let got = parse(&[input]);
            assert_invariants(input, &got);
        }
        let long_token68 = &inputs[7];
        assert_eq!(
            parse(&[long_token68])[0].token68().map(str::len),
            Some(big + 2)
        );
    }

    /// Every string of up to four bytes over an alphabet of the grammar's delimiters
    /// must parse without panicking and respect the structural invariants.
    #[test]
    fn exhaustive_short_inputs_never_panic() {
        const ALPHABET: &[u8] = b" \t,=\"\\aB/!\x80";
        let mut input = Vec::new();
        for len in 0..=4u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                input.clear();
                for _ in 0..len {
                    input.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                let got = parse(&[&input]);
                assert_invariants(&input, &got);
            }
        }
    }

    /// Longer pseudo-random inputs (fixed seed, reproducible) over the same alphabet,
    /// split into several header values.
    #[test]
    fn random_inputs_never_panic() {
        const ALPHABET: &[u8] = b" \t,,==\"\\aaBz09/!~\x80\xff";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3_000 {
            let count = 1 + next() % 3;
            let raw: Vec<Vec<u8>> = (0..count)
                .map(|_| {
                    let len = next() % 96;
                    (0..len)
                        .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                        .collect()
                })
                .collect();
            let refs: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
            let got = parse(&refs);
            for input in &raw {
                assert_invariants(input, &got);
            }
        }
    }

    #[test]
    fn every_byte_value_alone_and_in_a_quoted_string() {
        for b in 0..=u8::MAX {
            let Ok(alone) = HeaderValue::from_bytes(&[b]) else {
                continue;
            };
            assert_invariants(&[b], &parse_challenge_values([&alone]));
            // The two bytes a quoted string cannot hold bare are sent escaped.
            let escaped: &[u8] = if b == b'"' || b == b'\\' {
                &[b'\\', b]
            } else {
                &[b]
            };
            let quoted = [b"Bearer realm=\"".as_slice(), escaped, b"\""].concat();
            let want = if b.is_ascii() {
                char::from(b).to_string()
            } else {
                "\u{fffd}".to_owned()
            };
            assert_eq!(
                parse(&[&quoted]),
                [c("Bearer", &[("realm", &want)])],
                "byte {b:#x}"
            );
        }
    }

    /// The decoder fed in pieces (runs and single bytes, as the quoted-string reader
    /// feeds it) must give what `String::from_utf8_lossy` gives for the whole.
    #[test]
    fn lossy_utf8_in_pieces_matches_from_utf8_lossy() {
        const BYTES: &[u8] = &[
            b'a', 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xa9, 0xbf, 0xc0, 0xc2, 0xc3, 0xdf, 0xe0,
            0xe2, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff,
        ];
        let decode = |bytes: &[u8], cuts: u32| {
            // Bit i of `cuts` set: byte i arrives alone, as an escaped byte does.
            let mut out = String::new();
            let mut utf8 = LossyUtf8::default();
            let mut run_start = 0;
            for (i, &b) in bytes.iter().enumerate() {
                if cuts & (1 << i) != 0 {
                    utf8.push_bytes(&mut out, &bytes[run_start..i]);
                    utf8.push_byte(&mut out, b);
                    run_start = i + 1;
                }
            }
            utf8.push_bytes(&mut out, &bytes[run_start..]);
            utf8.finish(&mut out);
            out
        };
        let mut bytes = Vec::new();
        for len in 0..=4u32 {
            for mut n in 0..BYTES.len().pow(len) {
                bytes.clear();
                for _ in 0..len {
                    bytes.push(BYTES[n % BYTES.len()]);
                    n /= BYTES.len();
                }
                let want = String::from_utf8_lossy(&bytes);
                for cuts in 0..(1 << len) {
                    assert_eq!(decode(&bytes, cuts), want, "{bytes:x?} cut {cuts:b}");
                }
            }
        }
    }

    /// Quoted values against the obvious decoding (unescape the whole value, then
    /// `from_utf8_lossy`), with escapes inside multi-byte sequences.
    #[test]
    fn quoted_values_decode_like_unescape_then_lossy() {
        fn reference(quoted: &[u8]) -> String {
            let mut raw = Vec::new();
            let mut bytes = quoted.iter();
            while let Some(&b) = bytes.next() {
                match b {
                    b'"' => break,
                    b'\\' => match bytes.next() {
                        Some(&escaped) => raw.push(escaped),
                        None => break,
                    },
                    _ => raw.push(b),
                }
            }
            String::from_utf8_lossy(&raw).into_owned()
        }
        assert_eq!(
            parse(&[b"Bearer realm=\"caf\xc3\\\xa9\", error=\"\\\xe2\x82\xac\xe2\\\x82\""]),
            [c(
                "Bearer",
                &[("realm", "caf\u{e9}"), ("error", "\u{20ac}\u{fffd}")]
            )]
        );
        const ALPHABET: &[u8] = b"a\\\\\x80\xa9\xbf\xc3\xe2\xf0\xff \"";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = next() % 12;
            let quoted: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let header = [b"Bearer realm=\"".as_slice(), &quoted].concat();
            let got = parse(&[&header]);
            let want = reference(&quoted);
            // Anything after the closing quote must be the end of the element for the
            // parameter to be kept; only compare when it was.
            if let Some(realm) = got.first().and_then(Challenge::realm) {
                assert_eq!(realm, want, "{header:x?}");
            }
            assert_invariants(&header, &got);
        }
    }

    #[test]
    fn debug_shows_scheme_token68_and_params() {
        assert_eq!(
            format!("{:?}", c("Bearer", &[("realm", "a \"b\""), ("scope", "s")])),
            r#"Challenge { scheme: "Bearer", token68: None, params: [("realm", "a \"b\""), ("scope", "s")] }"#
        );
        assert_eq!(
            format!("{:?}", t68("Basic", "abc==")),
            r#"Challenge { scheme: "Basic", token68: Some("abc=="), params: [] }"#
        );
    }

    #[test]
    fn equality_is_by_content_and_clones_are_equal() {
        fn send_sync<T: Send + Sync + Clone + Eq + std::fmt::Debug>() {}
        send_sync::<Challenge>();
        let params: Vec<(String, String)> = (0..10)
            .map(|i| (format!("p{i}"), format!("v{i}")))
            .collect();
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let raw = "Bearer p0=v0, p1=v1, p2=v2, p3=v3, p4=v4, p5=v5, p6=v6, p7=v7, p8=v8, p9=v9";
        let parsed = parse(&[raw.as_bytes()]);
        assert_eq!(parsed, [c("Bearer", &params)]);
        assert_eq!(parsed[0].clone(), parsed[0]);
        assert_eq!(parsed[0].param("P7"), Some("v7"));
        assert_ne!(parsed[0], c("Bearer", &params[..9]));
        assert_ne!(c("Bearer", &[("ab", "c")]), c("Bearer", &[("a", "bc")]));
        assert_ne!(c("Bearer", &[]), t68("Bearer", "x"));
        assert_ne!(c("bearer", &[]), c("Bearer", &[]));
    }

    #[test]
    fn the_tchar_table_is_rfc_9110_tchar() {
        for b in 0..=u8::MAX {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "byte {b:#x}");
        }
    }
}
