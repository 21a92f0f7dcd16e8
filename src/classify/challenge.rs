//! RFC 9110 §11.6.1 challenge parser. PLACEHOLDER: being written now.

use http::{header, HeaderMap, HeaderValue};

/// One authentication challenge from `WWW-Authenticate` or `Proxy-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    scheme: String,
    token68: Option<String>,
    params: Vec<(String, String)>,
}

impl Challenge {
    /// The auth scheme as sent (`Bearer`, `Basic`, ...).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Whether the scheme is `scheme`, compared case-insensitively.
    pub fn is_scheme(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The token68 form of the challenge, if it used one instead of parameters.
    pub fn token68(&self) -> Option<&str> {
        self.token68.as_deref()
    }

    /// The value of parameter `name` (case-insensitive), unquoted and unescaped.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every parameter in order, names lowercased.
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Parses every challenge of every `WWW-Authenticate` value.
pub fn parse_challenges(headers: &HeaderMap) -> Vec<Challenge> {
    parse_challenge_values(headers.get_all(header::WWW_AUTHENTICATE))
}

pub(crate) fn parse_challenge_values<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Vec<Challenge> {
    let _ = values;
    Vec::new()
}
