//! The `mcp` probe kind: `initialize` on the streamable HTTP transport, judged as an MCP
//! client would, and the session it opened closed.

use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use serde_json::Value;

use super::hook::{Cleanup, Judgement, ProbeAnswer, ProbeCheck};
use super::sse;
use crate::verdict::{HealthStatus, Reason, Verdict};

/// `Mcp-Session-Id`: the session a streamable HTTP server assigned.
const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`: the negotiated version, on every request after `initialize`.
const PROTOCOL_VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// The probe's `initialize` request: no capabilities, the crate as the client.
const INITIALIZE: &str = concat!(
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","#,
    r#""capabilities":{},"clientInfo":{"name":"tower-health-classify","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}}}"#
);

/// The `mcp` probe kind: is this an MCP server that answers?
///
/// The probe is an MCP `initialize` request on the streamable HTTP transport
/// ([`request`](Self::request)): `POST` to the MCP endpoint with
/// `Accept: application/json, text/event-stream` and `Content-Type: application/json`,
/// asking for protocol version `2025-11-25` ([`PROTOCOL_VERSION`](Self::PROTOCOL_VERSION)).
/// That is the newest revision with an `initialize` handshake: revision `2026-07-28`
/// replaced it with per-request metadata, and servers that speak both ("dual-era")
/// still answer it. The answer is read as JSON, or as server-sent events up to the first
/// JSON-RPC response (notifications and requests before it are skipped), at most 64 KiB
/// within the probe's timeout.
///
/// | answer | verdict |
/// |---|---|
/// | `200` with a JSON-RPC `result` holding `protocolVersion` and `serverInfo` | the layer's: Healthy `ok` (Degraded `slow` past the slow threshold) |
/// | `200` with a JSON-RPC `error` | Unhealthy `jsonrpc_error` |
/// | `200` with anything else (an HTML page, plain text, other JSON, an event stream without a response) | Unhealthy `not_mcp` |
/// | another 1xx, 2xx or 3xx (`202`, a redirect) | Unhealthy `unexpected_status` |
/// | 401, 403 and every other status | the verdict table: `expected_challenge` for a credential-less probe of a backend with an auth strategy, `unexpected_status` for a 405, `server_error`, ... |
///
/// A `GET /` is never sent, so a server that refuses it (405, 406) is still judged on
/// what it answers to `initialize`. When the answer carries an `Mcp-Session-Id`, the
/// probe closes that session with `DELETE` ([`cleanup`](ProbeCheck::cleanup), with the
/// negotiated `MCP-Protocol-Version`; a 405, a server that keeps sessions, is fine):
/// probes leave no session open. A server answering only the modern revision rejects
/// `initialize` (400 with an unsupported-version error): it is judged Unhealthy
/// `unexpected_status`.
///
/// # Example
///
/// ```
/// use tower_health_classify::check::McpCheck;
///
/// let request: http::Request<String> =
///     McpCheck::request(http::Uri::from_static("http://127.0.0.1:9001/mcp"));
/// assert_eq!(request.method(), http::Method::POST);
/// assert_eq!(request.headers()["accept"], "application/json, text/event-stream");
/// assert!(request.body().contains(r#""method":"initialize""#));
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
pub struct McpCheck;

impl McpCheck {
    /// The protocol version the probe asks for in `initialize`.
    pub const PROTOCOL_VERSION: &'static str = "2025-11-25";

    /// The `initialize` request to the MCP endpoint `endpoint`.
    pub fn request<B: From<&'static str>>(endpoint: Uri) -> Request<B> {
        let mut request = Request::new(B::from(INITIALIZE));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = endpoint;
        let headers = request.headers_mut();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request
    }
}

impl ProbeCheck for McpCheck {
    fn judge(&self, answer: &ProbeAnswer<'_>) -> Judgement {
        let status = answer.status;
        if status != StatusCode::OK {
            return if status.is_informational() || status.is_success() || status.is_redirection() {
                unhealthy(Reason::UnexpectedStatus)
            } else {
                Judgement::Keep
            };
        }
        let message = if is_event_stream(answer) {
            match first_event_response(answer.body) {
                Some(message) => message,
                None if answer.complete => return unhealthy(Reason::NotMcp),
                None => return Judgement::ReadBody,
            }
        } else if !answer.complete {
            return Judgement::ReadBody;
        } else {
            match serde_json::from_slice::<Value>(answer.body) {
                // A batch answer to a single request is not expected, but not wrong.
                Ok(Value::Array(batch)) => match batch.into_iter().find(is_response) {
                    Some(message) => message,
                    None => return unhealthy(Reason::NotMcp),
                },
                Ok(message) if is_response(&message) => message,
                _ => return unhealthy(Reason::NotMcp),
            }
        };
        if message.get("error").is_some() {
            return unhealthy(Reason::JsonRpcError);
        }
        let result = message.get("result");
        let initialized = result.is_some_and(|result| {
            result.get("protocolVersion").is_some_and(Value::is_string)
                && result.get("serverInfo").is_some_and(Value::is_object)
        });
        if initialized {
            Judgement::Keep
        } else {
            unhealthy(Reason::NotMcp)
        }
    }

    fn cleanup(&self, answer: &ProbeAnswer<'_>) -> Option<Cleanup> {
        let session = answer.headers.get(SESSION_ID)?.clone();
        let mut cleanup = Cleanup::new(Method::DELETE).header(SESSION_ID, session);
        // The version the server chose; a request without the header is taken as
        // `2025-03-26`, which every server that assigns sessions accepts.
        if let Some(version) = negotiated_version(answer) {
            cleanup = cleanup.header(PROTOCOL_VERSION_HEADER, version);
        }
        Some(cleanup)
    }
}

fn unhealthy(reason: Reason) -> Judgement {
    Judgement::Verdict(Verdict::new(HealthStatus::Unhealthy, reason))
}

fn is_event_stream(answer: &ProbeAnswer<'_>) -> bool {
    answer
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// A JSON-RPC response: an object with a `result` or an `error` and no `method` (which
/// a request or a notification from the server would have).
fn is_response(message: &Value) -> bool {
    message.is_object()
        && message.get("method").is_none()
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// The first JSON-RPC response among the complete events of an SSE body: what comes
/// before it (notifications, requests from the server, data that is not JSON) is skipped.
fn first_event_response(body: &[u8]) -> Option<Value> {
    sse::messages(body)
        .iter()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(is_response)
}

/// The `protocolVersion` of the answer's `initialize` result, as a header value.
fn negotiated_version(answer: &ProbeAnswer<'_>) -> Option<HeaderValue> {
    let message = if is_event_stream(answer) {
        first_event_response(answer.body)?
    } else {
        serde_json::from_slice::<Value>(answer.body).ok()?
    };
    let version = message.get("result")?.get("protocolVersion")?.as_str()?;
    HeaderValue::from_str(version).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    const OK: Option<Verdict> = Some(Verdict::new(HealthStatus::Healthy, Reason::Ok));
    const RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"s","version":"1"}}}"#;

    fn judge(status: u16, content_type: &str, body: &str, complete: bool) -> Judgement {
        let uri = Uri::from_static("http://127.0.0.1:1/mcp");
        let mut headers = HeaderMap::new();
        if !content_type.is_empty() {
            headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
        }
        let answer = ProbeAnswer::new(&uri, StatusCode::from_u16(status).unwrap(), &headers, OK)
            .with_body(body.as_bytes(), complete);
        McpCheck.judge(&answer)
    }

    #[test]
    fn answers_to_initialize() {
        let sse = |data: &str| format!("event: message\ndata: {data}\n\n");
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        let error = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#;
        let not_mcp = unhealthy(Reason::NotMcp);
        let cases: Vec<(&str, u16, &str, String, bool, Judgement)> = vec![
            (
                "a JSON result is the layer's verdict",
                200,
                "application/json",
                RESULT.into(),
                true,
                Judgement::Keep,
            ),
            (
                "a JSON body is read to its end first",
                200,
                "application/json",
                RESULT[..20].into(),
                false,
                Judgement::ReadBody,
            ),
            (
                "no content type: JSON is tried",
                200,
                "",
                RESULT.into(),
                true,
                Judgement::Keep,
            ),
            (
                "the first SSE response is judged at once",
                200,
                "text/event-stream",
                sse(RESULT),
                false,
                Judgement::Keep,
            ),
            (
                "SSE with parameters in the content type",
                200,
                "text/event-stream; charset=utf-8",
                sse(RESULT),
                false,
                Judgement::Keep,
            ),
            (
                "notifications before the response are skipped",
                200,
                "text/event-stream",
                sse(progress) + &sse(RESULT),
                false,
                Judgement::Keep,
            ),
            (
                "an SSE stream still without a response reads on",
                200,
                "text/event-stream",
                sse(progress),
                false,
                Judgement::ReadBody,
            ),
            (
                "an SSE stream that ended without a response is not MCP",
                200,
                "text/event-stream",
                sse(progress),
                true,
                not_mcp.clone(),
            ),
            (
                "a JSON-RPC error",
                200,
                "application/json",
                error.into(),
                true,
                unhealthy(Reason::JsonRpcError),
            ),
            (
                "a JSON-RPC error over SSE",
                200,
                "text/event-stream",
                sse(error),
                false,
                unhealthy(Reason::JsonRpcError),
            ),
            (
                "an HTML page",
                200,
                "text/html",
                "<!doctype html><html></html>".into(),
                true,
                not_mcp.clone(),
            ),
            (
                "plain text",
                200,
                "text/plain",
                "OK".into(),
                true,
                not_mcp.clone(),
            ),
            (
                "other JSON",
                200,
                "application/json",
                r#"{"status":"up"}"#.into(),
                true,
                not_mcp.clone(),
            ),
            (
                "a result that is not an initialize result",
                200,
                "application/json",
                r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into(),
                true,
                not_mcp.clone(),
            ),
            (
                "a body cut at the limit",
                200,
                "application/json",
                RESULT[..30].into(),
                true,
                not_mcp,
            ),
            (
                "a batch holding the response",
                200,
                "application/json",
                format!("[{RESULT}]"),
                true,
                Judgement::Keep,
            ),
            (
                "202 to a request",
                202,
                "",
                String::new(),
                true,
                unhealthy(Reason::UnexpectedStatus),
            ),
            (
                "a redirect",
                307,
                "",
                String::new(),
                true,
                unhealthy(Reason::UnexpectedStatus),
            ),
            (
                "401 is the verdict table's",
                401,
                "",
                String::new(),
                false,
                Judgement::Keep,
            ),
            (
                "405 is the verdict table's",
                405,
                "",
                String::new(),
                false,
                Judgement::Keep,
            ),
            (
                "503 is the verdict table's",
                503,
                "",
                String::new(),
                false,
                Judgement::Keep,
            ),
        ];
        for (name, status, content_type, body, complete, want) in cases {
            assert_eq!(judge(status, content_type, &body, complete), want, "{name}");
        }
    }

    #[test]
    fn a_session_is_closed_with_the_negotiated_version() {
        let uri = Uri::from_static("http://127.0.0.1:1/mcp");
        let mut headers = HeaderMap::new();
        headers.insert(SESSION_ID, HeaderValue::from_static("s-1"));
        let answer =
            ProbeAnswer::new(&uri, StatusCode::OK, &headers, OK).with_body(RESULT.as_bytes(), true);
        let cleanup = McpCheck.cleanup(&answer).expect("a session to close");
        assert_eq!(cleanup.method, Method::DELETE);
        assert_eq!(cleanup.headers[SESSION_ID], "s-1");
        assert_eq!(cleanup.headers[PROTOCOL_VERSION_HEADER], "2025-06-18");

        // No result to read the version from: the header is left out.
        let failed = answer.with_body(b"<html>", true);
        let cleanup = McpCheck.cleanup(&failed).expect("a session to close");
        assert!(!cleanup.headers.contains_key(PROTOCOL_VERSION_HEADER));

        let no_session = HeaderMap::new();
        let answer = ProbeAnswer::new(&uri, StatusCode::OK, &no_session, OK);
        assert_eq!(McpCheck.cleanup(&answer), None);
    }

    #[test]
    fn the_request_is_an_initialize_of_the_asked_version() {
        let request: Request<String> = McpCheck::request(Uri::from_static("http://h/mcp"));
        let body: Value = serde_json::from_str(request.body()).unwrap();
        assert_eq!(body["method"], "initialize");
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(
            body["params"]["protocolVersion"],
            McpCheck::PROTOCOL_VERSION
        );
        assert_eq!(
            body["params"]["clientInfo"]["name"],
            "tower-health-classify"
        );
        assert_eq!(request.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(request.uri(), "http://h/mcp");
    }
}
