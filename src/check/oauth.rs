//! The `oauth_metadata` probe kind: can a client discover how to get a token for this
//! backend (RFC 9728 protected-resource metadata)?

use http::header::ACCEPT;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, StatusCode, Uri};
use serde_json::Value;

use super::hook::{Judgement, ProbeAnswer, ProbeCheck};
use crate::verdict::{HealthStatus, Reason, Verdict};

/// The well-known path of RFC 9728 §3.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The `oauth_metadata` probe kind: does the backend publish its OAuth 2.0 protected
/// resource metadata (RFC 9728), naming itself?
///
/// The probe is a `GET` of the metadata document for the resource (the backend's MCP
/// endpoint, say `http://mcp.internal:9001/mcp`) at the well-known URI RFC 9728 §3.1
/// builds: `/.well-known/oauth-protected-resource` inserted between the authority and
/// the path (`http://mcp.internal:9001/.well-known/oauth-protected-resource/mcp`). As
/// MCP's authorization spec orders, a `404` there is followed by the root document
/// (`/.well-known/oauth-protected-resource`).
///
/// | answer | verdict |
/// |---|---|
/// | `200`, a JSON object whose `resource` is the resource (scheme and host in any case; the root document may also name the origin) | the layer's: Healthy `ok` |
/// | `200`, a JSON object whose `resource` names another resource | Unhealthy `resource_mismatch` |
/// | `200` with anything else (not JSON, no string `resource`) | Unhealthy `invalid_metadata` |
/// | any other 1xx-3xx, 401, 403 | Unhealthy `unexpected_status`: the document is public, a challenge there breaks discovery |
/// | every other status | the verdict table (`unexpected_status`, `server_error`, `throttled`) |
///
/// # Example
///
/// ```
/// use tower_health_classify::check::OAuthMetadataCheck;
///
/// let check = OAuthMetadataCheck::new(http::Uri::from_static("http://127.0.0.1:9001/mcp"));
/// assert_eq!(
///     check.metadata_uri(),
///     "http://127.0.0.1:9001/.well-known/oauth-protected-resource/mcp"
/// );
/// let request: http::Request<String> = check.request();
/// assert_eq!(request.method(), http::Method::GET);
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
pub struct OAuthMetadataCheck {
    resource: Uri,
}

impl OAuthMetadataCheck {
    /// A check of the metadata of `resource`, the URL clients use (the MCP endpoint).
    pub fn new(resource: Uri) -> Self {
        OAuthMetadataCheck { resource }
    }

    /// The resource whose metadata is checked.
    pub fn resource(&self) -> &Uri {
        &self.resource
    }

    /// The resource's metadata URI (RFC 9728 §3.1): the well-known path inserted between
    /// the authority and the path (a path of `/` is dropped), the query kept.
    pub fn metadata_uri(&self) -> Uri {
        let path = self.resource.path().trim_end_matches('/');
        let path_and_query = match self.resource.query() {
            Some(query) => format!("{WELL_KNOWN}{path}?{query}"),
            None => format!("{WELL_KNOWN}{path}"),
        };
        self.with_path(&path_and_query)
    }

    /// The probe: `GET` of [`metadata_uri`](Self::metadata_uri), asking for JSON.
    pub fn request<B: Default>(&self) -> Request<B> {
        let mut request = Request::new(B::default());
        *request.uri_mut() = self.metadata_uri();
        request
            .headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("application/json"));
        request
    }

    /// The root metadata URI, when it differs from the resource's own.
    fn root_uri(&self) -> Option<Uri> {
        let root = self.with_path(WELL_KNOWN);
        (root != self.metadata_uri()).then_some(root)
    }

    fn with_path(&self, path_and_query: &str) -> Uri {
        let mut parts = self.resource.clone().into_parts();
        parts.path_and_query = Some(
            PathAndQuery::try_from(path_and_query)
                .expect("a valid path and query with a valid path prepended"),
        );
        Uri::from_parts(parts).expect("the resource's scheme and authority are kept")
    }

    /// Whether `resource`, from the document at `uri`, names the checked resource.
    fn names_the_resource(&self, resource: &str, uri: &Uri) -> bool {
        let Ok(named) = resource.parse::<Uri>() else {
            return false;
        };
        same_resource(&named, &self.resource)
            || (self.root_uri().as_ref() == Some(uri) && same_resource(&named, &self.origin()))
    }

    fn origin(&self) -> Uri {
        self.with_path("/")
    }
}

impl ProbeCheck for OAuthMetadataCheck {
    fn judge(&self, answer: &ProbeAnswer<'_>) -> Judgement {
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND if *answer.uri == self.metadata_uri() => {
                return match self.root_uri() {
                    Some(root) => Judgement::Retry(root),
                    None => Judgement::Keep,
                };
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return unhealthy(Reason::UnexpectedStatus)
            }
            status if status.as_u16() < 400 => return unhealthy(Reason::UnexpectedStatus),
            _ => return Judgement::Keep,
        }
        if !answer.complete {
            return Judgement::ReadBody;
        }
        let resource = serde_json::from_slice::<Value>(answer.body)
            .ok()
            .and_then(|document| Some(document.get("resource")?.as_str()?.to_owned()));
        match resource {
            None => unhealthy(Reason::InvalidMetadata),
            Some(resource) if self.names_the_resource(&resource, answer.uri) => Judgement::Keep,
            Some(_) => unhealthy(Reason::ResourceMismatch),
        }
    }
}

fn unhealthy(reason: Reason) -> Judgement {
    Judgement::Verdict(Verdict::new(HealthStatus::Unhealthy, reason))
}

/// RFC 9728 §3.3 asks for the identical URL; scheme and host are compared without case
/// (as MCP's authorization spec asks), and an empty path is `/`.
fn same_resource(a: &Uri, b: &Uri) -> bool {
    let scheme = |uri: &Uri| uri.scheme_str().map(str::to_ascii_lowercase);
    let host = |uri: &Uri| uri.host().map(str::to_ascii_lowercase);
    scheme(a) == scheme(b)
        && host(a) == host(b)
        && a.port_u16() == b.port_u16()
        && a.path_and_query().map(PathAndQuery::as_str).unwrap_or("/")
            == b.path_and_query().map(PathAndQuery::as_str).unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn check(resource: &'static str) -> OAuthMetadataCheck {
        OAuthMetadataCheck::new(Uri::from_static(resource))
    }

    #[test]
    fn metadata_uris_follow_rfc_9728() {
        let cases = [
            (
                "http://h:1/mcp",
                "http://h:1/.well-known/oauth-protected-resource/mcp",
            ),
            (
                "http://h:1/a/mcp/",
                "http://h:1/.well-known/oauth-protected-resource/a/mcp",
            ),
            (
                "http://h:1/",
                "http://h:1/.well-known/oauth-protected-resource",
            ),
            (
                "http://h:1",
                "http://h:1/.well-known/oauth-protected-resource",
            ),
            (
                "http://h/r?x=1",
                "http://h/.well-known/oauth-protected-resource/r?x=1",
            ),
        ];
        for (resource, want) in cases {
            assert_eq!(check(resource).metadata_uri(), want, "{resource}");
        }
        assert_eq!(
            check("http://h:1/mcp").root_uri().unwrap(),
            "http://h:1/.well-known/oauth-protected-resource"
        );
        assert_eq!(check("http://h:1/").root_uri(), None);
    }

    #[test]
    fn answers_to_the_metadata_request() {
        let ok = Some(Verdict::new(HealthStatus::Healthy, Reason::Ok));
        let at_path = Uri::from_static("http://h:1/.well-known/oauth-protected-resource/mcp");
        let at_root = Uri::from_static("http://h:1/.well-known/oauth-protected-resource");
        let doc = |resource: &str| {
            format!(r#"{{"resource":"{resource}","authorization_servers":["http://as"]}}"#)
        };
        let cases: Vec<(&str, &Uri, u16, String, bool, Judgement)> = vec![
            (
                "the resource itself",
                &at_path,
                200,
                doc("http://h:1/mcp"),
                true,
                Judgement::Keep,
            ),
            (
                "scheme and host in another case",
                &at_path,
                200,
                doc("HTTP://H:1/mcp"),
                true,
                Judgement::Keep,
            ),
            (
                "the body is read first",
                &at_path,
                200,
                doc("http://h:1/mcp"),
                false,
                Judgement::ReadBody,
            ),
            (
                "another path",
                &at_path,
                200,
                doc("http://h:1/other"),
                true,
                unhealthy(Reason::ResourceMismatch),
            ),
            (
                "another port",
                &at_path,
                200,
                doc("http://h:2/mcp"),
                true,
                unhealthy(Reason::ResourceMismatch),
            ),
            (
                "the origin, at the path document",
                &at_path,
                200,
                doc("http://h:1"),
                true,
                unhealthy(Reason::ResourceMismatch),
            ),
            (
                "the origin, at the root document",
                &at_root,
                200,
                doc("http://h:1"),
                true,
                Judgement::Keep,
            ),
            (
                "the resource, at the root document",
                &at_root,
                200,
                doc("http://h:1/mcp"),
                true,
                Judgement::Keep,
            ),
            (
                "not JSON",
                &at_path,
                200,
                "<html>".into(),
                true,
                unhealthy(Reason::InvalidMetadata),
            ),
            (
                "no resource",
                &at_path,
                200,
                r#"{"authorization_servers":[]}"#.into(),
                true,
                unhealthy(Reason::InvalidMetadata),
            ),
            (
                "a resource that is not a string",
                &at_path,
                200,
                r#"{"resource":1}"#.into(),
                true,
                unhealthy(Reason::InvalidMetadata),
            ),
            (
                "404 at the path: the root next",
                &at_path,
                404,
                String::new(),
                false,
                Judgement::Retry(at_root.clone()),
            ),
            (
                "404 at the root: the verdict table",
                &at_root,
                404,
                String::new(),
                false,
                Judgement::Keep,
            ),
            (
                "a challenge breaks discovery",
                &at_path,
                401,
                String::new(),
                false,
                unhealthy(Reason::UnexpectedStatus),
            ),
            (
                "403 too",
                &at_path,
                403,
                String::new(),
                false,
                unhealthy(Reason::UnexpectedStatus),
            ),
            (
                "a redirect is not followed",
                &at_path,
                302,
                String::new(),
                false,
                unhealthy(Reason::UnexpectedStatus),
            ),
            (
                "503 is the verdict table's",
                &at_path,
                503,
                String::new(),
                false,
                Judgement::Keep,
            ),
        ];
        let headers = HeaderMap::new();
        for (name, uri, status, body, complete, want) in cases {
            let answer = ProbeAnswer::new(uri, StatusCode::from_u16(status).unwrap(), &headers, ok)
                .with_body(body.as_bytes(), complete);
            assert_eq!(check("http://h:1/mcp").judge(&answer), want, "{name}");
        }
    }
}
