//! Probe kinds that speak MCP (`check::McpCheck`, `check::OAuthMetadataCheck`), run by a
//! real `Prober` with a hyper-util client against MCP servers of the tests' own on
//! loopback (`tests/support/mcp_server.rs`): JSON and SSE answers, JSON-RPC errors, web
//! pages, OAuth challenges, RFC 9728 metadata, streams that die, stall or never answer.
//! Asserted: the verdict and reason of each, one report per probe, and that every session
//! a probe opens is deleted. Nothing leaves 127.0.0.1; waits are bounded (5 s), nothing
//! asserts on how long anything took.

#![cfg(all(feature = "mcp", feature = "hyper-util"))]

#[path = "support/mcp_server.rs"]
mod mcp_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_health_classify::check::{
    Judgement, McpCheck, OAuthMetadataCheck, ProbeAnswer, ProbeCheck,
};
use tower_health_classify::{
    AuthStrategy, HealthRegistry, HealthStatus, Policy, ProbeCall, Prober, Reason, TransportKind,
};

use crate::mcp_server::{Answer, Behaviour, McpServer, Metadata, PROTOCOL_VERSION};

/// Every wait gives up (and fails) after this long.
const PATIENCE: Duration = Duration::from_secs(5);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `GET /`, judged by its status.
    Http,
    Mcp,
    OAuthMetadata,
}

/// One verdict moves a status.
fn policy() -> Policy {
    let mut policy = Policy::default();
    policy.unhealthy_threshold = 1;
    policy.healthy_threshold = 1;
    policy.degraded_threshold = 1;
    policy
}

/// Probes `server` as backend `mcp` every 5 ms, `limit` probes at most.
fn probe(
    server: &McpServer,
    strategy: AuthStrategy,
    kind: Kind,
    timeout: Duration,
    limit: usize,
) -> (HealthRegistry, Prober) {
    let registry = HealthRegistry::new(policy());
    registry.register("mcp", strategy);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let endpoint: Uri = server.endpoint().parse().unwrap();
    let root: Uri = server.url().parse().unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let prober = Prober::builder(registry.clone())
        .interval(Duration::from_millis(5))
        .jitter(0.0)
        .timeout(timeout)
        .spawn_checked(move |_name: &str| {
            if made.fetch_add(1, Ordering::SeqCst) >= limit {
                return None;
            }
            let client = client.clone();
            Some(match kind {
                Kind::Http => {
                    let request = Request::get(root.clone()).body(Full::default()).unwrap();
                    ProbeCall::new(client, request)
                }
                Kind::Mcp => {
                    ProbeCall::new(client, McpCheck::request(endpoint.clone())).check(McpCheck)
                }
                Kind::OAuthMetadata => {
                    let check = OAuthMetadataCheck::new(endpoint.clone());
                    ProbeCall::new(client, check.request()).check(check)
                }
            })
        });
    (registry, prober)
}

/// Waits until the backend has `checks` counted reports.
async fn wait_checks(registry: &HealthRegistry, checks: u64) {
    let reached = tokio::time::timeout(PATIENCE, async {
        while registry.snapshot().backends[0].checks < checks {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "{checks} checks never came: {:#?}",
        registry.snapshot()
    );
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let reached = tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "never happened: {what}");
}

/// One server, how it is probed, and the status, reason and outcome kind it must get.
struct Case {
    name: &'static str,
    server: Behaviour,
    strategy: AuthStrategy,
    kind: Kind,
    timeout: Duration,
    want: (HealthStatus, Reason, &'static str),
}

#[tokio::test]
async fn each_server_gets_its_verdict() {
    use HealthStatus::{Healthy, Unauthenticated, Unhealthy};
    let second = Duration::from_secs(1);
    let short = Duration::from_millis(300);
    let plain = AuthStrategy::Unauthenticated;
    let cases = [
        Case {
            name: "a JSON initialize result",
            server: Behaviour::answering(Answer::Json),
            strategy: plain.clone(),
            kind: Kind::Mcp,
            timeout: second,
            want: (Healthy, Reason::Ok, "success"),
        },
        Case {
            name: "SSE: a notification, then the result",
            server: Behaviour::answering(Answer::Sse),
            strategy: plain.clone(),
            kind: Kind::Mcp,
            timeout: second,
            want: (Healthy, Reason::Ok, "success"),
        },
        Case {
            name: "SSE left open after the result: judged at the result",
            server: Behaviour::answering(Answer::SseHeldOpen),
            strategy: plain.clone(),
            kind: Kind::Mcp,
            timeout: second,
            want: (Healthy, Reason::Ok, "success"),
        },
        Case {
            name: "a JSON-RPC error",
            server: Behaviour::answering(Answer::JsonRpcError),
            strategy: plain.clone(),
            kind: Kind::Mcp,
            timeout: second,
            want: (Unhealthy, Reason::JsonRpcError, "success"),
        },
        Case {
            name: "a web page",
            server: Behaviour::answering(Answer::Html),
            strategy: plain.clone(),
            kind: Kind::Mcp,
            timeout: second,
            want: (Unhealthy, Reason::NotMcp, "success"),
        },
        Case {
            name: "a Bearer challenge to a credential-less probe of a user-token backend",
            server: Behaviour::answering(Answer::Json).with_auth(),
            strategy: AuthStrategy::UpstreamInject,
            kind: Kind::Mcp,
            timeout: second,
            want: (Healthy, Reason::ExpectedChallenge, "unauthorized"),
        },
        Case {
            name: "a Bearer challenge and no strategy",
            server: Behaviour::answering(Answer::Json).with_auth(),
            strategy: plain.clone(),
            kind: Kind::Mcp,
            timeout: second,
            want: (Unauthenticated, Reason::NoAuthConfigured, "unauthorized"),
        },
        Case {
            name: "a stream that dies before the result",
            server: Behaviour::answering(Answer::DiesMidSse),
            strategy: plain.clone(),
            kind: Kind::Mcp,
            timeout: second,
            want: (
                Unhealthy,
                Reason::Transport(TransportKind::Closed),
                "transport",
            ),
        },
        Case {
            name: "an endless stream without a result: the 64 KiB cap ends it",
            server: Behaviour::answering(Answer::EndlessSse),
            strategy: plain.clone(),
            kind: Kind::Mcp,
            timeout: second,
            want: (Unhealthy, Reason::NotMcp, "success"),
        },
        Case {
            name: "a stalled stream: the probe timeout ends it",
            server: Behaviour::answering(Answer::Stall),
            strategy: plain.clone(),
            kind: Kind::Mcp,
            timeout: short,
            want: (
                Unhealthy,
                Reason::Transport(TransportKind::Timeout),
                "transport",
            ),
        },
        Case {
            name: "the http kind's GET / on the same server: 405",
            server: Behaviour::answering(Answer::Json),
            strategy: plain.clone(),
            kind: Kind::Http,
            timeout: second,
            want: (Unhealthy, Reason::UnexpectedStatus, "client_error"),
        },
        Case {
            name: "metadata at the resource's path",
            server: Behaviour::answering(Answer::Json),
            strategy: plain.clone(),
            kind: Kind::OAuthMetadata,
            timeout: second,
            want: (Healthy, Reason::Ok, "success"),
        },
        Case {
            name: "metadata only at the root",
            server: Behaviour::answering(Answer::Json).with_metadata(Metadata::AtRoot),
            strategy: plain.clone(),
            kind: Kind::OAuthMetadata,
            timeout: second,
            want: (Healthy, Reason::Ok, "success"),
        },
        Case {
            name: "metadata naming another resource",
            server: Behaviour::answering(Answer::Json).with_metadata(Metadata::WrongResource),
            strategy: plain.clone(),
            kind: Kind::OAuthMetadata,
            timeout: second,
            want: (Unhealthy, Reason::ResourceMismatch, "success"),
        },
        Case {
            name: "metadata that is not JSON",
            server: Behaviour::answering(Answer::Json).with_metadata(Metadata::NotJson),
            strategy: plain.clone(),
            kind: Kind::OAuthMetadata,
            timeout: second,
            want: (Unhealthy, Reason::InvalidMetadata, "success"),
        },
        Case {
            name: "no metadata anywhere",
            server: Behaviour::answering(Answer::Json).with_metadata(Metadata::Missing),
            strategy: plain.clone(),
            kind: Kind::OAuthMetadata,
            timeout: second,
            want: (Unhealthy, Reason::UnexpectedStatus, "client_error"),
        },
        Case {
            name: "metadata behind a challenge",
            server: Behaviour::answering(Answer::Json).with_metadata(Metadata::Challenged),
            strategy: AuthStrategy::UpstreamInject,
            kind: Kind::OAuthMetadata,
            timeout: second,
            want: (Unhealthy, Reason::UnexpectedStatus, "unauthorized"),
        },
    ];
    for case in cases {
        let Case {
            name,
            server,
            strategy,
            kind,
            timeout,
            want: (status, reason, outcome),
        } = case;
        let server = McpServer::start(server).await;
        let (registry, prober) = probe(&server, strategy, kind, timeout, 1);
        wait_checks(&registry, 1).await;
        prober.shutdown().await;
        let health = registry.snapshot().backends.remove(0);
        assert_eq!(
            (health.status, health.reason, health.last_outcome),
            (status, Some(reason), Some(outcome)),
            "{name}: {health:#?}"
        );
        assert_eq!(health.checks, 1, "{name}: one report for one probe");
    }
}

#[tokio::test]
async fn a_hundred_probes_leave_no_session_open() {
    for answer in [Answer::Json, Answer::Sse, Answer::SseHeldOpen] {
        let server = McpServer::start(Behaviour::answering(answer)).await;
        let (registry, prober) = probe(
            &server,
            AuthStrategy::Unauthenticated,
            Kind::Mcp,
            Duration::from_secs(1),
            100,
        );
        wait_checks(&registry, 100).await;
        wait_until(&format!("{answer:?}: 100 sessions deleted"), || {
            server.log().deletes == 100
        })
        .await;
        prober.shutdown().await;
        let log = server.log();
        assert_eq!(log.initializes, 100, "{answer:?}");
        assert!(log.open.is_empty(), "{answer:?}: {:?} left open", log.open);
        let health = registry.snapshot().backends.remove(0);
        assert_eq!((health.checks, health.failures), (100, 0), "{answer:?}");
        assert_eq!(health.status, HealthStatus::Healthy, "{answer:?}");

        // What the spec asks of the requests.
        for initialize in log.of(&Method::POST, "/mcp") {
            let headers = &initialize.headers;
            assert_eq!(
                headers[header::ACCEPT],
                "application/json, text/event-stream"
            );
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            assert!(!headers.contains_key("mcp-session-id"));
        }
        let deletes = log.of(&Method::DELETE, "/mcp");
        assert_eq!(
            deletes.len(),
            100,
            "{answer:?}: no DELETE retried or repeated"
        );
        for delete in &deletes {
            assert!(delete.headers["mcp-session-id"]
                .to_str()
                .unwrap()
                .starts_with("session-"));
            assert_eq!(
                delete.headers["mcp-protocol-version"], PROTOCOL_VERSION,
                "the negotiated one"
            );
            assert!(delete.body.is_empty());
            assert!(!delete.headers.contains_key(header::CONTENT_TYPE));
        }
    }
}

#[tokio::test]
async fn a_server_that_refuses_delete_is_still_healthy() {
    let server = McpServer::start(Behaviour::answering(Answer::Json).delete_refused()).await;
    let (registry, prober) = probe(
        &server,
        AuthStrategy::Unauthenticated,
        Kind::Mcp,
        Duration::from_secs(1),
        3,
    );
    wait_checks(&registry, 3).await;
    wait_until("3 DELETEs sent", || {
        server.log().of(&Method::DELETE, "/mcp").len() == 3
    })
    .await;
    prober.shutdown().await;
    let health = registry.snapshot().backends.remove(0);
    assert_eq!(
        (health.status, health.reason),
        (HealthStatus::Healthy, Some(Reason::Ok))
    );
    assert_eq!(health.checks, 3);
    // Its sessions stay open: the server's choice, answered 405.
    assert_eq!(server.log().open.len(), 3);
}

#[tokio::test]
async fn the_root_metadata_fallback_is_one_probe_and_one_report() {
    let server =
        McpServer::start(Behaviour::answering(Answer::Json).with_metadata(Metadata::AtRoot)).await;
    let (registry, prober) = probe(
        &server,
        AuthStrategy::UpstreamInject,
        Kind::OAuthMetadata,
        Duration::from_secs(1),
        3,
    );
    wait_checks(&registry, 3).await;
    wait_until("3 root GETs", || {
        server
            .log()
            .of(&Method::GET, "/.well-known/oauth-protected-resource")
            .len()
            == 3
    })
    .await;
    prober.shutdown().await;
    let log = server.log();
    let at_path = log.of(&Method::GET, "/.well-known/oauth-protected-resource/mcp");
    assert_eq!(
        at_path.len(),
        3,
        "the resource's own path first, every time"
    );
    let health = registry.snapshot().backends.remove(0);
    assert_eq!(health.checks, 3, "one report per probe, not per request");
    assert_eq!(health.status, HealthStatus::Healthy);
}

/// A check of the tests' own, through the public hook: it always asks for another URI.
struct AlwaysRetry(Uri);

impl ProbeCheck for AlwaysRetry {
    fn judge(&self, _answer: &ProbeAnswer<'_>) -> Judgement {
        Judgement::Retry(self.0.clone())
    }
}

#[tokio::test]
async fn a_check_may_retry_once_per_probe() {
    let server =
        McpServer::start(Behaviour::answering(Answer::Json).with_metadata(Metadata::Missing)).await;
    let registry = HealthRegistry::new(policy());
    registry.register("mcp", AuthStrategy::Unauthenticated);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let first: Uri = format!(
        "http://{}/.well-known/oauth-protected-resource/a",
        server.addr
    )
    .parse()
    .unwrap();
    let next: Uri = format!(
        "http://{}/.well-known/oauth-protected-resource/b",
        server.addr
    )
    .parse()
    .unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let prober = Prober::builder(registry.clone())
        .interval(Duration::from_millis(5))
        .spawn_checked(move |_name: &str| {
            (made.fetch_add(1, Ordering::SeqCst) < 2).then(|| {
                let request = Request::get(first.clone()).body(Full::default()).unwrap();
                ProbeCall::new(client.clone(), request).check(AlwaysRetry(next.clone()))
            })
        });
    wait_checks(&registry, 2).await;
    prober.shutdown().await;
    let log = server.log();
    let gets = |path: &str| log.of(&Method::GET, path).len();
    assert_eq!(gets("/.well-known/oauth-protected-resource/a"), 2);
    assert_eq!(
        gets("/.well-known/oauth-protected-resource/b"),
        2,
        "once per probe"
    );
    let health = registry.snapshot().backends.remove(0);
    // The second `Retry` stands for `Keep`: the 404 of the retried request, by the table.
    assert_eq!(health.reason, Some(Reason::UnexpectedStatus));
    assert_eq!(health.checks, 2);
}
