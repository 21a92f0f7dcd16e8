//! OAuth discovery through the proxy (RFC 9728, as MCP's authorization spec uses it).
//!
//! An MCP client that gets `401` looks for the `resource_metadata` parameter of the
//! challenge, fetches that document, and checks that its `resource` is the URL it used.
//! Behind a proxy, both would name the backend's internal URL: the client would be sent
//! to an address it cannot reach, and would refuse the document if it could. So:
//!
//! - On a `401` or `403` from a backend, every `resource_metadata` that points at the
//!   backend's own well-known URI (`{backend origin}/.well-known/oauth-protected-resource`
//!   plus a path under the backend's base path; for a backend with several URLs, under
//!   any of them) is rewritten to the proxy's:
//!   `{public_url}/{backend}/.well-known/oauth-protected-resource{path}`. Only that
//!   value changes; every other byte of the header (realm, scope, error,
//!   error_description, other challenges) is kept as the backend sent it. A URL on
//!   another host is left as it is: the proxy does not fetch arbitrary URLs.
//! - `GET {public_url}/{backend}/.well-known/oauth-protected-resource{path}` (and the
//!   RFC 9728 location `{public_url}/.well-known/oauth-protected-resource/{backend}{path}`)
//!   fetch the backend's document for `{path}` and serve it with `resource` rewritten to
//!   the URL the client uses, `{public_url}/{backend}{path}`. Everything else in the
//!   document is kept; `authorization_servers` still name the backend's own (clients
//!   talk to them directly).
//!
//! Every URL the proxy writes is built from the configured `public_url`, the backend's
//! name and what the backend said: never from `Host`, `X-Forwarded-*` or any other
//! header a client sent.

use std::ops::Range;

use axum::body::Body;
use http::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};

use crate::forward::{self, Route};

/// The well-known path of RFC 9728 §3.
pub(crate) const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The largest metadata document the proxy passes on.
const DOCUMENT_LIMIT: usize = 64 * 1024;

/// The resource path a request for the proxy's metadata route asks about: `rest` (what
/// follows `/{backend}`) without the well-known prefix, when it has it.
pub(crate) fn metadata_path(rest: &str) -> Option<&str> {
    let path = rest.strip_prefix(WELL_KNOWN)?;
    (path.is_empty() || path.starts_with('/')).then_some(path)
}

// === challenges ===

/// Rewrites the `resource_metadata` of every challenge in `headers` that points at the
/// route's backend, as the module docs say.
pub(crate) fn rewrite_challenges(headers: &mut HeaderMap, route: &Route) {
    if !headers.contains_key(WWW_AUTHENTICATE) {
        return;
    }
    let values: Vec<HeaderValue> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|value| rewrite_challenge(value, route).unwrap_or_else(|| value.clone()))
        .collect();
    headers.remove(WWW_AUTHENTICATE);
    for value in values {
        headers.append(WWW_AUTHENTICATE, value);
    }
}

/// One header value, rewritten; `None` when nothing in it changes.
fn rewrite_challenge(value: &HeaderValue, route: &Route) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let mut copied = 0;
    for (span, advertised) in resource_metadata_values(bytes) {
        let Some(proxied) = proxied_metadata_url(route, &advertised) else {
            continue;
        };
        out.extend_from_slice(&bytes[copied..span.start]);
        out.push(b'"');
        for b in proxied.bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
        copied = span.end;
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&bytes[copied..]);
    let mut rewritten = HeaderValue::from_bytes(&out).ok()?;
    rewritten.set_sensitive(value.is_sensitive());
    Some(rewritten)
}

/// The proxy's URL for a metadata URL a backend advertised, when it is the well-known
/// URI of a resource under one of the backend's URLs.
fn proxied_metadata_url(route: &Route, advertised: &str) -> Option<String> {
    let advertised: Uri = advertised.parse().ok()?;
    let resource = metadata_path(advertised.path())?;
    let path = resource_path(route, &advertised, resource)?;
    let query = advertised
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    Some(format!("{}{WELL_KNOWN}{path}{query}", route.public))
}

/// The value spans (quotes included) and decoded values of the `resource_metadata`
/// auth-params in a challenge list (RFC 9110 §11.6.1). A scan, not a parse: schemes,
/// token68s and other parameters are stepped over, quoted strings (escapes included)
/// taken whole, so that the spans found are exactly the bytes to replace.
fn resource_metadata_values(value: &[u8]) -> Vec<(Range<usize>, String)> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let skip_ows = |mut i: usize| {
        while value.get(i).is_some_and(|b| *b == b' ' || *b == b'\t') {
            i += 1;
        }
        i
    };
    // The end of the quoted string starting at `start`, and its decoded text.
    let quoted = |start: usize| {
        let mut text = Vec::new();
        let mut i = start + 1;
        while let Some(&b) = value.get(i) {
            match b {
                b'"' => return (i + 1, text),
                b'\\' if i + 1 < value.len() => {
                    text.push(value[i + 1]);
                    i += 2;
                }
                _ => {
                    text.push(b);
                    i += 1;
                }
            }
        }
        (i, text)
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'"' {
            i = quoted(i).0;
            continue;
        }
        if !is_tchar(value[i]) {
            i += 1;
            continue;
        }
        let name_start = i;
        while value.get(i).copied().is_some_and(is_tchar) {
            i += 1;
        }
        let name = &value[name_start..i];
        let equals = skip_ows(i);
        if value.get(equals) != Some(&b'=') {
            continue;
        }
        let start = skip_ows(equals + 1);
        let (end, text) = match value.get(start) {
            Some(b'"') => quoted(start),
            Some(&b) if is_tchar(b) => {
                let mut end = start;
                while value.get(end).copied().is_some_and(is_tchar) {
                    end += 1;
                }
                (end, value[start..end].to_vec())
            }
            // A token68's padding (`abc==`), not a parameter.
            _ => {
                i = start;
                continue;
            }
        };
        if name.eq_ignore_ascii_case(b"resource_metadata") {
            if let Ok(text) = String::from_utf8(text) {
                found.push((start..end, text));
            }
        }
        i = end;
    }
    found
}

// === documents ===

/// `GET` of the proxy's metadata document for the route's resource `path` (what followed
/// the well-known prefix), fetched from the backend and rewritten.
pub(crate) async fn metadata(
    route: &Route,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return forward::error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &route.name,
            None,
            "protected resource metadata is read with GET",
        );
    }
    let resource = MetadataOf {
        path: path.to_owned(),
        query: query.map(str::to_owned),
    };
    // Relative for a backend with several URLs: each endpoint builds its own from
    // `resource` (`endpoints::to_endpoint`).
    let Some(uri) = resource.uri(&route.base) else {
        return forward::error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &route.name,
            None,
            "the metadata path cannot be forwarded",
        );
    };
    // A fresh request: nothing the client sent goes to the backend or into the document.
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = uri;
    request
        .headers_mut()
        .insert(ACCEPT, HeaderValue::from_static("application/json"));
    request.extensions_mut().insert(resource);
    let response = match route.service.clone().send(request).await {
        Ok(response) => response,
        Err(error) => return forward::failure_response(route, &error),
    };
    if response.status() != StatusCode::OK {
        return forward::response_to_caller(response, route);
    }
    let body = match Limited::new(response.into_body(), DOCUMENT_LIMIT)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return forward::error_response(
                StatusCode::BAD_GATEWAY,
                "invalid_metadata",
                &route.name,
                None,
                "the backend's metadata document could not be read (cut off, or over 64 KiB)",
            )
        }
    };
    let mut document: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(document @ serde_json::Value::Object(_)) => document,
        _ => {
            return forward::error_response(
                StatusCode::BAD_GATEWAY,
                "invalid_metadata",
                &route.name,
                None,
                "the backend's metadata is not a JSON object",
            )
        }
    };
    let resource = document
        .get("resource")
        .and_then(|resource| resource.as_str())
        .and_then(|resource| proxied_resource(route, resource));
    let Some(resource) = resource else {
        return forward::error_response(
            StatusCode::BAD_GATEWAY,
            "resource_mismatch",
            &route.name,
            None,
            "the backend's metadata names no resource of this backend",
        );
    };
    document["resource"] = resource.into();
    let mut response = Response::new(Body::from(document.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// On the proxy's request for a backend's metadata: the resource's path under the
/// backend's base path (`""` or starting with `/`) and its query. An endpoint of a
/// backend with several URLs builds its own URI from it.
#[derive(Clone, Debug)]
pub(crate) struct MetadataOf {
    path: String,
    query: Option<String>,
}

impl MetadataOf {
    /// The metadata URI of the resource under `base` (RFC 9728 §3.1 for
    /// `{base}{path}`): at the origin, the base path after the well-known prefix.
    pub(crate) fn uri(&self, base: &Uri) -> Option<Uri> {
        let prefix = base.path().trim_end_matches('/');
        let path = &self.path;
        let path_and_query = match &self.query {
            Some(query) => format!("{WELL_KNOWN}{prefix}{path}?{query}"),
            None => format!("{WELL_KNOWN}{prefix}{path}"),
        };
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
        Uri::from_parts(parts).ok()
    }
}

/// The URL a client uses for the backend's resource `resource`: `{public}{path}`, when
/// the resource is under one of the backend's URLs.
fn proxied_resource(route: &Route, resource: &str) -> Option<String> {
    let resource: Uri = resource.parse().ok()?;
    let path = resource_path(route, &resource, resource.path())?;
    let query = resource
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    Some(format!("{}{path}{query}", route.public))
}

/// `path`, a path on the origin of `uri`, without the base path of the backend's URL on
/// that origin (`""` or starting with `/`), when it is under it.
fn resource_path<'p>(route: &Route, uri: &Uri, path: &'p str) -> Option<&'p str> {
    route.urls.iter().find_map(|url| {
        if !same_origin(uri, url) {
            return None;
        }
        let rest = path.strip_prefix(url.path().trim_end_matches('/'))?;
        let rest = if rest == "/" { "" } else { rest };
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    })
}

fn same_origin(a: &Uri, b: &Uri) -> bool {
    let scheme = |uri: &Uri| uri.scheme_str().map(str::to_ascii_lowercase);
    let host = |uri: &Uri| uri.host().map(str::to_ascii_lowercase);
    let port = |uri: &Uri| {
        uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            _ => Some(80),
        })
    };
    scheme(a) == scheme(b) && host(a) == host(b) && port(a) == port(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_metadata_values_are_found_exactly() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "quoted, among other parameters",
                r#"Bearer realm="a", resource_metadata="http://b/x", scope="s""#,
                &[r#""http://b/x""#],
            ),
            // `:` ends a token: an unquoted URL is malformed, and only `http` is found.
            (
                "an unquoted URL",
                "Bearer resource_metadata=http://b/x",
                &["http"],
            ),
            (
                "a bare token value",
                "Bearer resource_metadata=abc, scope=s",
                &["abc"],
            ),
            (
                "any case, spaces around =",
                r#"Bearer Resource_Metadata = "u""#,
                &[r#""u""#],
            ),
            (
                "in a quoted string it is text",
                r#"Bearer error_description="resource_metadata=\"x\"", resource_metadata="y""#,
                &[r#""y""#],
            ),
            (
                "escaped quotes inside the value",
                r#"Bearer resource_metadata="a\"b""#,
                &[r#""a\"b""#],
            ),
            (
                "a token68 is not a parameter",
                "Basic cmVzb3VyY2U=, Bearer resource_metadata=\"u\"",
                &[r#""u""#],
            ),
            (
                "two challenges, two values",
                r#"Bearer resource_metadata="a", DPoP resource_metadata="b""#,
                &[r#""a""#, r#""b""#],
            ),
            (
                "an unterminated quote",
                r#"Bearer resource_metadata="abc"#,
                &[r#""abc"#],
            ),
            ("none", r#"Bearer realm="a""#, &[]),
        ];
        for (name, value, want) in cases {
            let spans: Vec<&str> = resource_metadata_values(value.as_bytes())
                .into_iter()
                .map(|(span, _)| &value[span])
                .collect();
            assert_eq!(spans, *want, "{name}");
        }
        let decoded = resource_metadata_values(br#"Bearer resource_metadata="a\"b""#);
        assert_eq!(decoded[0].1, r#"a"b"#);
    }

    #[test]
    fn metadata_paths_of_the_route() {
        assert_eq!(
            metadata_path("/.well-known/oauth-protected-resource/mcp"),
            Some("/mcp")
        );
        assert_eq!(
            metadata_path("/.well-known/oauth-protected-resource"),
            Some("")
        );
        assert_eq!(
            metadata_path("/.well-known/oauth-protected-resourcex"),
            None
        );
        assert_eq!(metadata_path("/mcp"), None);
    }
}
