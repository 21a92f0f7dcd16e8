//! Probes that judge what the backend said, not only its status: the judging hook
//! ([`ProbeCheck`]) and the built-in kinds that speak MCP (feature `mcp`).
//!
//! A probe that reads only the status misjudges protocol servers: an MCP server answers
//! `GET /` with 405 or 406 (a false Unhealthy), answers 200 with a JSON-RPC error (a
//! false Healthy), or opens a session for every probe and never sees it closed. A
//! [`ProbeCheck`] sees the status, the headers and up to
//! [`body_limit`](ProbeCheck::body_limit) bytes of the body, and returns the verdict;
//! it may ask to read more of the body, to try another URI, or to close what the probe
//! opened. [`Prober`](crate::Prober)s run checks given to
//! [`ProberBuilder::spawn_checked`](crate::ProberBuilder::spawn_checked), through the
//! classify layer like any probe: one report per probe, origin `Probe`.
//!
//! | kind | sends | Healthy when | otherwise |
//! |---|---|---|---|
//! | `http` (no check) | the request you build | the status says so (the verdict table) | the verdict table |
//! | [`McpCheck`] | `POST` `initialize` (streamable HTTP, protocol `2025-11-25`), then `DELETE` of the session it opened | a JSON-RPC `result` with `protocolVersion` and `serverInfo`, as JSON or as the first answer of an SSE stream | `jsonrpc_error`, `not_mcp` (a 200 that is not MCP), `unexpected_status` (another 1xx-3xx); 401/403 by the verdict table (`expected_challenge`, ...) |
//! | [`OAuthMetadataCheck`] | `GET` of the RFC 9728 metadata (`/.well-known/oauth-protected-resource` + the resource's path, then the root one on 404) | `200` with a JSON object whose `resource` names the backend | `resource_mismatch`, `invalid_metadata`, `unexpected_status` (401, 403 and redirects included: the document must be public) |

mod hook;
#[cfg(feature = "mcp")]
mod mcp;
#[cfg(feature = "mcp")]
mod oauth;
#[cfg(feature = "mcp")]
mod sse;

pub use self::hook::{Cleanup, Judgement, ProbeAnswer, ProbeCheck, DEFAULT_BODY_LIMIT};
#[cfg(feature = "mcp")]
pub use self::mcp::McpCheck;
#[cfg(feature = "mcp")]
pub use self::oauth::OAuthMetadataCheck;
