//! The configuration file (`--config FILE`, TOML), checked in full before anything starts.
//!
//! ```toml
//! listen = "127.0.0.1:8080"      # optional, this is the default
//! [health]                       # every key optional; the defaults are shown
//! interval = "30s"               # the prober's
//! timeout = "10s"
//! jitter = 0.1
//! unhealthy_threshold = 3        # probes: counts in a row
//! healthy_threshold = 2
//! degraded_threshold = 2
//! slow_threshold = "5s"
//! traffic_window = "30s"         # traffic: rates over a window ("0s": probes only)
//! traffic_min_requests = 20
//! traffic_unhealthy_rate = 0.5
//! traffic_degraded_rate = 0.2
//! hold_time = "30s"              # before traffic may change a status again
//! log_interval = "10m"           # log budget: log_budget lines per interval, then
//! log_budget = 3                 #   one summary line per interval
//! reminder_initial = "1m"        # while Bad, reminders doubling up to reminder_max
//! reminder_max = "1h"
//! fail_fast = true               # a Bad backend gets 503 without a request sent, but for
//!                                #   one trial per backoff (1 s doubling to 30 s)
//! [[backends]]
//! name = "github"                # the route: /github/...
//! url = "http://127.0.0.1:9001"  # http:// or https://; a base path is kept (http://host/api)
//! # or, for several endpoints of one backend (balanced, each probed on its own):
//! # urls = ["http://10.0.0.1:9001", "http://10.0.0.2:9001"]
//! strategy = "upstream_inject"   # unauthenticated | header_injection | token_exchange | upstream_inject
//! timeout = "30s"                # optional: how long a proxied request may wait for the response head
//! ca_file = "certs/private-ca.pem" # optional, https only: trust these CAs (PEM) instead of the built-in roots
//! # header_injection: header = "x-api-key", value_env = "GITHUB_KEY"
//! # token_exchange:   token_url = "http://...", client_id = "...", client_secret_env = "...",
//! #                   scope = "...", client_auth = "basic" (default) or "post"
//! [backends.probe]               # optional; default kind "http", GET /
//! kind = "mcp"                   # http | mcp | oauth_metadata
//! path = "/mcp"                  # the MCP endpoint (mcp), the resource (oauth_metadata)
//! headers = { "x-probe" = "1" }  # optional, any kind
//! # kind = "http" only:  method = "POST", body = '...'
//! ```
//!
//! `public_url` (top level, optional) is the URL clients reach the proxy at, default
//! `http://{listen}`: OAuth discovery through the proxy names it (`discovery.rs`).
//!
//! Secrets are never in the file: `value_env` and `client_secret_env` name environment
//! variables, read once at start.
//!
//! `https://` backends are checked against Mozilla's root certificates, compiled into the
//! proxy (webpki-roots), not against the system's store: the same trust on every machine
//! and in minimal containers that have no CA bundle. A backend with a private CA names
//! it in `ca_file`, a PEM bundle read at start (relative paths from the working
//! directory); only those certificates are then trusted for that backend, its token
//! endpoint included. A missing or unreadable file, or one with no usable certificate,
//! is a configuration error like any other. Every error names the key (`backends[1].strategy`) and,
//! where it is known, the line; it never quotes a line of the file, so a secret pasted
//! into it by mistake is not echoed to a log.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use serde::Deserialize;
use toml::Spanned;
use tower_health_classify::Policy;

/// Backend names the proxy's own routes take.
pub(crate) const RESERVED_NAMES: &[&str] = &["healthz", "health", "metrics", ".well-known"];

/// Request headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), plus
/// the proxy-auth pair, which is meant for this proxy, not for the backend.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Where environment variables come from: the process (`std::env::var`), or a map in tests.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The whole configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) listen: SocketAddr,
    /// The URL clients reach the proxy at, without a trailing slash.
    pub(crate) public_url: String,
    pub(crate) health: HealthConfig,
    pub(crate) backends: Vec<BackendConfig>,
}

/// The `[health]` table: the prober's schedule and the registry's policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthConfig {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) jitter: f64,
    pub(crate) policy: Policy,
    /// A backend with one URL that is Bad gets no traffic but trials (`HealthGate`).
    pub(crate) fail_fast: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            jitter: 0.1,
            policy: Policy::default(),
            fail_fast: true,
        }
    }
}

/// One `[[backends]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct BackendConfig {
    pub(crate) name: String,
    /// `http://host:port` plus an optional base path without a trailing slash: one
    /// (`url`), or one per endpoint (`urls`), never empty and without duplicates.
    pub(crate) urls: Vec<Uri>,
    pub(crate) strategy: StrategyConfig,
    pub(crate) probe: ProbeConfig,
    /// How long a proxied request waits for the response head (the body may stream on).
    pub(crate) timeout: Duration,
    /// The CAs trusted for this backend's `https://` connections, when not the built-in
    /// roots.
    pub(crate) ca: Option<CaFile>,
}

/// A `ca_file`, read and checked.
#[derive(Clone)]
pub(crate) struct CaFile {
    pub(crate) path: String,
    pub(crate) roots: Arc<RootCertStore>,
}

/// The path and how many CAs, never the certificates themselves.
impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("certificates", &self.roots.len())
            .finish()
    }
}

/// How the proxy authenticates to a backend, with the secrets read from the environment.
#[derive(Debug, Clone)]
pub(crate) enum StrategyConfig {
    Unauthenticated,
    UpstreamInject,
    HeaderInjection {
        header: HeaderName,
        value: Secret,
    },
    TokenExchange {
        token_url: Uri,
        client_id: String,
        client_secret: Secret,
        scope: Option<String>,
        client_auth: ClientAuth,
    },
}

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    /// `Authorization: Basic` (`client_secret_basic`), which every server must support.
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Post,
}

/// What a probe sends and how its answer is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    /// The configured request, judged by its status.
    Http,
    /// MCP `initialize` to the endpoint at `path`, its session closed again.
    Mcp,
    /// RFC 9728 metadata of the resource at `path`.
    OAuthMetadata,
}

impl ProbeKind {
    const NAMES: &'static [(&'static str, ProbeKind)] = &[
        ("http", ProbeKind::Http),
        ("mcp", ProbeKind::Mcp),
        ("oauth_metadata", ProbeKind::OAuthMetadata),
    ];
}

/// A `[backends.probe]` table.
#[derive(Debug, Clone)]
pub(crate) struct ProbeConfig {
    pub(crate) kind: ProbeKind,
    pub(crate) method: Method,
    /// Path and query, appended to the backend's base path.
    pub(crate) path: PathAndQuery,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            kind: ProbeKind::Http,
            method: Method::GET,
            path: PathAndQuery::from_static("/"),
            headers: HeaderMap::new(),
            body: String::new(),
        }
    }
}

/// A credential read from the environment. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Arc<str>);

impl Secret {
    pub(crate) fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A bad configuration: which key, on which line, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// The key's path (`backends[1].url`); `None` for a syntax error outside any key.
    pub(crate) key: Option<String>,
    /// 1-based.
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

// === the file as written ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    health: Option<RawHealth>,
    #[serde(default)]
    backends: Vec<Spanned<RawBackend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<Spanned<HumanDuration>>,
    timeout: Option<Spanned<HumanDuration>>,
    jitter: Option<Spanned<f64>>,
    unhealthy_threshold: Option<Spanned<u32>>,
    healthy_threshold: Option<Spanned<u32>>,
    degraded_threshold: Option<Spanned<u32>>,
    slow_threshold: Option<Spanned<HumanDuration>>,
    traffic_window: Option<Spanned<HumanDuration>>,
    traffic_min_requests: Option<Spanned<u32>>,
    traffic_unhealthy_rate: Option<Spanned<f64>>,
    traffic_degraded_rate: Option<Spanned<f64>>,
    hold_time: Option<Spanned<HumanDuration>>,
    log_interval: Option<Spanned<HumanDuration>>,
    log_budget: Option<Spanned<u32>>,
    reminder_initial: Option<Spanned<HumanDuration>>,
    reminder_max: Option<Spanned<HumanDuration>>,
    fail_fast: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Spanned<String>,
    url: Option<Spanned<String>>,
    urls: Option<Spanned<Vec<Spanned<String>>>>,
    strategy: Spanned<String>,
    timeout: Option<Spanned<HumanDuration>>,
    header: Option<Spanned<String>>,
    value_env: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret_env: Option<Spanned<String>>,
    scope: Option<Spanned<String>>,
    client_auth: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    probe: Option<RawProbe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    kind: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    body: Option<Spanned<String>>,
}

/// The keys of each strategy, beyond those every backend may have (`name`, `url`, `urls`,
/// `strategy`, `timeout`, `ca_file`, `probe`).
const STRATEGY_KEYS: &[(&str, &[&str])] = &[
    ("unauthenticated", &[]),
    ("upstream_inject", &[]),
    ("header_injection", &["header", "value_env"]),
    (
        "token_exchange",
        &[
            "token_url",
            "client_id",
            "client_secret_env",
            "scope",
            "client_auth",
        ],
    ),
];

// === parsing ===

/// Parses and checks a configuration file, reading its secrets through `env`.
pub(crate) fn parse(text: &str, env: Env<'_>) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    let at = Lines::new(text);

    let listen = match &raw.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(listen) => listen.get_ref().parse().map_err(|_| {
            at.error(
                "listen",
                listen,
                "expected an IP address and port, like \"127.0.0.1:8080\"",
            )
        })?,
    };
    let public_url = match &raw.public_url {
        None => format!("http://{listen}"),
        Some(url) => {
            public_url(url.get_ref()).map_err(|message| at.error("public_url", url, message))?
        }
    };
    let health = health(raw.health.as_ref(), &at)?;

    if raw.backends.is_empty() {
        return Err(ConfigError {
            key: Some("backends".into()),
            line: None,
            message: "at least one [[backends]] entry is required".into(),
        });
    }
    let mut names = HashSet::new();
    let mut backends = Vec::with_capacity(raw.backends.len());
    for (i, spanned) in raw.backends.iter().enumerate() {
        let key = format!("backends[{i}]");
        let backend = backend(&key, spanned, &at, env)?;
        if !names.insert(backend.name.clone()) {
            return Err(at.error(
                format!("{key}.name"),
                &spanned.get_ref().name,
                format!("duplicate backend name {:?}", backend.name),
            ));
        }
        backends.push(backend);
    }
    Ok(Config {
        listen,
        public_url,
        health,
        backends,
    })
}

/// An `http://` or `https://` URL with a host, and perhaps a path the proxy is mounted
/// under; no credentials, query or fragment. Returned without a trailing slash.
fn public_url(value: &str) -> Result<String, String> {
    let uri: Uri = value
        .parse()
        .map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("expected an http:// or https:// URL".into());
    }
    let authority = uri.authority().map(Authority::as_str).unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials in the URL are not allowed".into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if uri.query().is_some() || value.contains('#') {
        return Err("a public URL takes no query or fragment".into());
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn health(raw: Option<&RawHealth>, at: &Lines<'_>) -> Result<HealthConfig, ConfigError> {
    let mut health = HealthConfig::default();
    let Some(raw) = raw else {
        return Ok(health);
    };
    let positive =
        |key: &str, value: &Option<Spanned<HumanDuration>>, default: Duration| match value {
            None => Ok(default),
            Some(value) => {
                let duration = value.get_ref().0;
                if duration.is_zero() {
                    return Err(at.error(format!("health.{key}"), value, "must be above zero"));
                }
                Ok(duration)
            }
        };
    health.interval = positive("interval", &raw.interval, health.interval)?;
    health.timeout = positive("timeout", &raw.timeout, health.timeout)?;
    if let Some(jitter) = &raw.jitter {
        if !(0.0..=1.0).contains(jitter.get_ref()) {
            return Err(at.error("health.jitter", jitter, "must be between 0 and 1"));
        }
        health.jitter = *jitter.get_ref();
    }
    health.fail_fast = raw.fail_fast.unwrap_or(health.fail_fast);

    // The registry's policy: every key is checked by `Policy::validate`, which names the
    // field; the error is reported at that key's line.
    let policy = &mut health.policy;
    let duration = |value: &Option<Spanned<HumanDuration>>, default: Duration| {
        value.as_ref().map_or(default, |v| v.get_ref().0)
    };
    let copy = |value: &Option<Spanned<u32>>, default: u32| {
        value.as_ref().map_or(default, |v| *v.get_ref())
    };
    let rate = |value: &Option<Spanned<f64>>, default: f64| {
        value.as_ref().map_or(default, |v| *v.get_ref())
    };
    policy.slow_threshold = positive("slow_threshold", &raw.slow_threshold, policy.slow_threshold)?;
    policy.unhealthy_threshold = copy(&raw.unhealthy_threshold, policy.unhealthy_threshold);
    policy.healthy_threshold = copy(&raw.healthy_threshold, policy.healthy_threshold);
    policy.degraded_threshold = copy(&raw.degraded_threshold, policy.degraded_threshold);
    policy.traffic_window = duration(&raw.traffic_window, policy.traffic_window);
    policy.traffic_min_requests = copy(&raw.traffic_min_requests, policy.traffic_min_requests);
    policy.traffic_unhealthy_rate =
        rate(&raw.traffic_unhealthy_rate, policy.traffic_unhealthy_rate);
    policy.traffic_degraded_rate = rate(&raw.traffic_degraded_rate, policy.traffic_degraded_rate);
    policy.hold_time = duration(&raw.hold_time, policy.hold_time);
    policy.log_interval = duration(&raw.log_interval, policy.log_interval);
    policy.log_budget = copy(&raw.log_budget, policy.log_budget);
    policy.reminder_initial = duration(&raw.reminder_initial, policy.reminder_initial);
    policy.reminder_max = duration(&raw.reminder_max, policy.reminder_max);
    if let Err(error) = policy.validate() {
        let line = match error.field() {
            "unhealthy_threshold" => raw.unhealthy_threshold.as_ref().map(|v| at.line(v)),
            "healthy_threshold" => raw.healthy_threshold.as_ref().map(|v| at.line(v)),
            "degraded_threshold" => raw.degraded_threshold.as_ref().map(|v| at.line(v)),
            "traffic_min_requests" => raw.traffic_min_requests.as_ref().map(|v| at.line(v)),
            "traffic_unhealthy_rate" => raw.traffic_unhealthy_rate.as_ref().map(|v| at.line(v)),
            "traffic_degraded_rate" => raw.traffic_degraded_rate.as_ref().map(|v| at.line(v)),
            "reminder_max" => raw.reminder_max.as_ref().map(|v| at.line(v)),
            _ => None,
        };
        let message = error.to_string();
        let message = message
            .strip_prefix(error.field())
            .unwrap_or(&message)
            .trim_start();
        return Err(ConfigError {
            key: Some(format!("health.{}", error.field())),
            line,
            message: message.to_owned(),
        });
    }
    Ok(health)
}

fn backend(
    key: &str,
    spanned: &Spanned<RawBackend>,
    at: &Lines<'_>,
    env: Env<'_>,
) -> Result<BackendConfig, ConfigError> {
    let raw = spanned.get_ref();
    let name = raw.name.get_ref();
    check_name(name).map_err(|message| at.error(format!("{key}.name"), &raw.name, message))?;
    let urls = backend_urls(key, spanned, at)?;

    let strategy_name = raw.strategy.get_ref().as_str();
    let Some((_, allowed)) = STRATEGY_KEYS.iter().find(|(s, _)| *s == strategy_name) else {
        return Err(at.error(
            format!("{key}.strategy"),
            &raw.strategy,
            format!(
                "unknown strategy {strategy_name:?}; expected one of unauthenticated, \
                 header_injection, token_exchange, upstream_inject"
            ),
        ));
    };
    // A key of another strategy is a mistake that would otherwise be silently ignored.
    let present = [
        ("header", raw.header.as_ref()),
        ("value_env", raw.value_env.as_ref()),
        ("token_url", raw.token_url.as_ref()),
        ("client_id", raw.client_id.as_ref()),
        ("client_secret_env", raw.client_secret_env.as_ref()),
        ("scope", raw.scope.as_ref()),
        ("client_auth", raw.client_auth.as_ref()),
    ];
    for (name, value) in present {
        if let (Some(value), false) = (value, allowed.contains(&name)) {
            return Err(at.error(
                format!("{key}.{name}"),
                value,
                format!("not a key of strategy {strategy_name:?}"),
            ));
        }
    }
    let required = |name: &str, value: Option<&Spanned<String>>| {
        value.cloned().ok_or_else(|| ConfigError {
            key: Some(format!("{key}.{name}")),
            line: Some(at.line(spanned)),
            message: format!("required by strategy {strategy_name:?}"),
        })
    };

    let strategy = match strategy_name {
        "unauthenticated" => StrategyConfig::Unauthenticated,
        "upstream_inject" => StrategyConfig::UpstreamInject,
        "header_injection" => {
            let header = required("header", raw.header.as_ref())?;
            let value_env = required("value_env", raw.value_env.as_ref())?;
            let name = header_name(header.get_ref())
                .map_err(|message| at.error(format!("{key}.header"), &header, message))?;
            let value_key = format!("{key}.value_env");
            let value = secret(env, &value_key, &value_env, at)?;
            if HeaderValue::from_str(value.expose()).is_err() {
                return Err(at.error(
                    value_key,
                    &value_env,
                    format!(
                        "environment variable {} does not hold a valid header value",
                        value_env.get_ref()
                    ),
                ));
            }
            StrategyConfig::HeaderInjection {
                header: name,
                value,
            }
        }
        "token_exchange" => {
            let token_url = required("token_url", raw.token_url.as_ref())?;
            let client_id = required("client_id", raw.client_id.as_ref())?;
            let secret_env = required("client_secret_env", raw.client_secret_env.as_ref())?;
            let token_url_key = format!("{key}.token_url");
            let token_url = http_url(token_url.get_ref())
                .map_err(|message| at.error(token_url_key, &token_url, message))?;
            if client_id.get_ref().is_empty() {
                return Err(at.error(format!("{key}.client_id"), &client_id, "is empty"));
            }
            let client_secret = secret(env, &format!("{key}.client_secret_env"), &secret_env, at)?;
            let client_auth = match raw.client_auth.as_ref() {
                None => ClientAuth::Basic,
                Some(value) => match value.get_ref().as_str() {
                    "basic" => ClientAuth::Basic,
                    "post" => ClientAuth::Post,
                    other => {
                        return Err(at.error(
                            format!("{key}.client_auth"),
                            value,
                            format!(
                                "unknown client_auth {other:?}; expected \"basic\" or \"post\""
                            ),
                        ))
                    }
                },
            };
            StrategyConfig::TokenExchange {
                token_url,
                client_id: client_id.into_inner(),
                client_secret,
                scope: raw.scope.as_ref().map(|s| s.get_ref().clone()),
                client_auth,
            }
        }
        _ => unreachable!("checked against STRATEGY_KEYS above"),
    };

    let timeout = match &raw.timeout {
        None => Duration::from_secs(30),
        Some(value) => {
            let timeout = value.get_ref().0;
            if timeout.is_zero() {
                return Err(at.error(format!("{key}.timeout"), value, "must be above zero"));
            }
            timeout
        }
    };
    let probe = match &raw.probe {
        None => ProbeConfig::default(),
        Some(probe) => probe_config(&format!("{key}.probe"), probe, at)?,
    };
    let ca = match &raw.ca_file {
        None => None,
        Some(path) => {
            let ca_key = format!("{key}.ca_file");
            let token_url = match &strategy {
                StrategyConfig::TokenExchange { token_url, .. } => Some(token_url),
                _ => None,
            };
            let https = |uri: &Uri| uri.scheme() == Some(&Scheme::HTTPS);
            if !urls.iter().any(https) && !token_url.is_some_and(https) {
                return Err(at.error(
                    ca_key,
                    path,
                    "only used for https:// connections, and this backend makes none",
                ));
            }
            let roots =
                ca_file(path.get_ref()).map_err(|message| at.error(ca_key, path, message))?;
            Some(CaFile {
                path: path.get_ref().clone(),
                roots: Arc::new(roots),
            })
        }
    };
    Ok(BackendConfig {
        name: name.clone(),
        urls,
        strategy,
        probe,
        timeout,
        ca,
    })
}

fn probe_config(key: &str, raw: &RawProbe, at: &Lines<'_>) -> Result<ProbeConfig, ConfigError> {
    let mut probe = ProbeConfig::default();
    if let Some(kind) = &raw.kind {
        let name = kind.get_ref().as_str();
        probe.kind = match ProbeKind::NAMES.iter().find(|(known, _)| *known == name) {
            Some((_, kind)) => *kind,
            None => {
                return Err(at.error(
                    format!("{key}.kind"),
                    kind,
                    format!(
                        "unknown probe kind {name:?}; expected one of http, mcp, oauth_metadata"
                    ),
                ))
            }
        };
    }
    if probe.kind != ProbeKind::Http {
        // The kind builds its own request: a method or a body would be silently ignored.
        let kind = raw.kind.as_ref().map_or("", |kind| kind.get_ref().as_str());
        let given = [("method", raw.method.as_ref()), ("body", raw.body.as_ref())];
        for (name, value) in given {
            if let Some(value) = value {
                return Err(at.error(
                    format!("{key}.{name}"),
                    value,
                    format!("not a key of probe kind {kind:?} (only of \"http\")"),
                ));
            }
        }
    }
    if let Some(method) = &raw.method {
        probe.method = Method::from_bytes(method.get_ref().as_bytes())
            .map_err(|_| at.error(format!("{key}.method"), method, "not an HTTP method"))?;
    }
    if let Some(path) = &raw.path {
        let value = path.get_ref();
        probe.path = match value.parse::<PathAndQuery>() {
            Ok(parsed) if value.starts_with('/') => parsed,
            _ => {
                return Err(at.error(
                    format!("{key}.path"),
                    path,
                    "expected a path starting with '/', like \"/health\"",
                ))
            }
        };
    }
    for (name, value) in &raw.headers {
        let header_key = format!("{key}.headers.{name}");
        let parsed = header_name(name).map_err(|message| at.error(&header_key, value, message))?;
        let parsed_value = HeaderValue::from_str(value.get_ref())
            .map_err(|_| at.error(&header_key, value, "not a valid header value"))?;
        probe.headers.append(parsed, parsed_value);
    }
    probe.body = raw
        .body
        .as_ref()
        .map(|body| body.get_ref().clone())
        .unwrap_or_default();
    Ok(probe)
}

/// A backend name is one URL path segment that needs no escaping, and not a route of
/// the proxy's own.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a usable path segment"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
    {
        return Err(format!(
            "{name:?} contains {bad:?}; use letters, digits, '-', '_', '.' and '~'"
        ));
    }
    if RESERVED_NAMES
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
    {
        return Err(format!(
            "{name:?} is reserved for the proxy's own endpoints (healthz, health, metrics, .well-known)"
        ));
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host; userinfo, query and fragment refused.
fn http_url(value: &str) -> Result<Uri, String> {
    let uri: Uri = value
        .parse()
        .map_err(|e| format!("not a valid URL ({e})"))?;
    match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => {}
        _ => return Err("expected an http:// or https:// URL".into()),
    }
    let authority = uri.authority().map(Authority::as_str).unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials in the URL are not allowed; use a strategy".into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(uri)
}

/// `url`, or every URL of `urls`, checked: exactly one of the two keys, at least one URL,
/// none twice.
fn backend_urls(
    key: &str,
    spanned: &Spanned<RawBackend>,
    at: &Lines<'_>,
) -> Result<Vec<Uri>, ConfigError> {
    let raw = spanned.get_ref();
    match (&raw.url, &raw.urls) {
        (Some(_), Some(urls)) => Err(at.error(
            format!("{key}.urls"),
            urls,
            "give either url (one endpoint) or urls (several), not both",
        )),
        (None, None) => Err(ConfigError {
            key: Some(format!("{key}.url")),
            line: Some(at.line(spanned)),
            message: "is required (or urls, for a backend with several endpoints)".into(),
        }),
        (Some(url), None) => backend_url(url.get_ref())
            .map(|uri| vec![uri])
            .map_err(|message| at.error(format!("{key}.url"), url, message)),
        (None, Some(urls)) => {
            if urls.get_ref().is_empty() {
                return Err(at.error(
                    format!("{key}.urls"),
                    urls,
                    "is empty; give at least one URL",
                ));
            }
            let mut parsed: Vec<Uri> = Vec::with_capacity(urls.get_ref().len());
            for (i, url) in urls.get_ref().iter().enumerate() {
                let url_key = format!("{key}.urls[{i}]");
                let uri = backend_url(url.get_ref())
                    .map_err(|message| at.error(&url_key, url, message))?;
                if parsed.contains(&uri) {
                    return Err(at.error(url_key, url, format!("{uri} is listed twice")));
                }
                parsed.push(uri);
            }
            Ok(parsed)
        }
    }
}

/// How an endpoint's URL is shown: as configured, without the slash of an empty path.
pub(crate) fn url_label(url: &Uri) -> String {
    let text = url.to_string();
    match text.strip_suffix('/') {
        Some(trimmed) if url.path() == "/" => trimmed.to_owned(),
        _ => text,
    }
}

/// A backend's base URL: scheme, authority and path prefix, without a trailing slash.
fn backend_url(value: &str) -> Result<Uri, String> {
    let uri = http_url(value)?;
    if uri.query().is_some() {
        return Err("a backend URL takes no query".into());
    }
    let path = uri.path().trim_end_matches('/').to_owned();
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(if path.is_empty() { "/" } else { &path })
            .map_err(|e| e.to_string())?,
    );
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// Reads a PEM bundle of CA certificates. Errors name the file and what is wrong, never
/// a line of it: a key pasted into the wrong file must not reach a log.
fn ca_file(path: &str) -> Result<RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|_| format!("{path:?} is not valid PEM"))?;
        roots.add(cert).map_err(|_| {
            format!(
                "certificate number {} in {path:?} is not a usable CA certificate",
                i + 1
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!(
            "no certificate in {path:?}: expected PEM blocks starting with \
             -----BEGIN CERTIFICATE-----"
        ));
    }
    Ok(roots)
}

fn header_name(value: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(value.as_bytes())
        .map_err(|_| format!("{value:?} is not a valid header name"))?;
    if HOP_BY_HOP.contains(&name.as_str()) || name == http::header::HOST {
        return Err(format!(
            "{value:?} is a connection header the proxy removes"
        ));
    }
    Ok(name)
}

/// Reads the environment variable that `var` names. The error names the variable, never
/// a value.
fn secret(
    env: Env<'_>,
    key: &str,
    var: &Spanned<String>,
    at: &Lines<'_>,
) -> Result<Secret, ConfigError> {
    match env(var.get_ref()) {
        Some(value) if !value.is_empty() => Ok(Secret::new(value)),
        Some(_) => Err(at.error(
            key,
            var,
            format!("environment variable {} is empty", var.get_ref()),
        )),
        None => Err(at.error(
            key,
            var,
            format!(
                "environment variable {} is not set (secrets come only from the environment)",
                var.get_ref()
            ),
        )),
    }
}

/// A duration as written in the file, parsed by `humantime`: `"500ms"`, `"30s"`, `"2m"`,
/// `"1h"`, and sums like `"1m30s"` or `"1h 30m"`. A bad one fails the deserialization,
/// and [`toml_error`] names its key and line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HumanDuration(Duration);

const DURATION_EXPECTED: &str = "expected a duration like \"500ms\", \"30s\", \"2m\" or \"1h\"";

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&DURATION_EXPECTED["expected ".len()..])
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(text)
                    .map(HumanDuration)
                    .map_err(|error| E::custom(format!("{text:?}: {error}; {DURATION_EXPECTED}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

// === error positions ===

/// Turns byte offsets into line numbers, and builds errors at a value.
struct Lines<'a> {
    text: &'a str,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines { text }
    }

    fn line<T>(&self, value: &Spanned<T>) -> usize {
        line_of(self.text, value.span().start)
    }

    fn error<T>(
        &self,
        key: impl Into<String>,
        value: &Spanned<T>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            key: Some(key.into()),
            line: Some(self.line(value)),
            message: message.into(),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A parser error, with its key rebuilt from the position: the toml crate names keys
/// without array indices and shows the offending line, which this error must not do.
fn toml_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().to_owned();
    let Some(span) = error.span() else {
        return ConfigError {
            key: None,
            line: None,
            message,
        };
    };
    let line = line_of(text, span.start);
    let (table, key) = key_at(text, line);
    let path = |field: &str| -> String {
        match &table {
            Some(table) => format!("{table}.{field}"),
            None => field.to_owned(),
        }
    };
    // serde names the field in these two messages; the position is the table's or the key's.
    if let Some(field) = field_in(&message, "missing field `") {
        return ConfigError {
            key: Some(path(field)),
            line: Some(line),
            message: "is required".into(),
        };
    }
    if let Some(field) = field_in(&message, "unknown field `") {
        let mut message = format!("unknown key{}", message_tail(&message));
        if ["secret", "token", "password", "key"]
            .iter()
            .any(|word| field.contains(word))
        {
            message.push_str(
                "; secrets come only from environment variables (value_env, client_secret_env)",
            );
        }
        return ConfigError {
            key: Some(path(field)),
            line: Some(line),
            message,
        };
    }
    ConfigError {
        key: key.map(|key| path(&key)).or(table),
        line: Some(line),
        message,
    }
}

fn field_in<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

/// What follows the field name: `, expected one of ...`.
fn message_tail(message: &str) -> &str {
    message.splitn(3, '`').nth(2).unwrap_or_default()
}

/// The table path (`backends[1].probe`) in force on `line` (1-based), and the key that
/// line assigns, if any.
fn key_at(text: &str, line: usize) -> (Option<String>, Option<String>) {
    let mut table: Option<String> = None;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (number, content) in text.lines().enumerate() {
        let content = content.trim();
        if let Some(header) = content.strip_prefix("[[") {
            let name = header
                .split("]]")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let count = counts.entry(name.clone()).or_insert(0);
            *count += 1;
            table = Some(format!("{name}[{}]", *count - 1));
        } else if let Some(header) = content.strip_prefix('[') {
            let name = header.split(']').next().unwrap_or_default().trim();
            // `[backends.probe]` belongs to the latest `[[backends]]`.
            let indexed = counts
                .iter()
                .filter(|(array, _)| name.starts_with(&format!("{array}.")))
                .max_by_key(|(array, _)| array.len())
                .map(|(array, count)| format!("{array}[{}]{}", count - 1, &name[array.len()..]));
            table = Some(indexed.unwrap_or_else(|| name.to_owned()));
        }
        if number + 1 == line {
            let key = (!content.starts_with('['))
                .then(|| content.split_once('='))
                .flatten()
                .map(|(key, _)| key.trim().trim_matches(['"', '\'']).to_owned())
                .filter(|key| !key.is_empty());
            return (table, key);
        }
    }
    (table, None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| vars.get(name).cloned()
    }

    fn parse_err(text: &str) -> ConfigError {
        parse(text, &env(&[("KEY", "k-123"), ("SECRET", "s-456")]))
            .expect_err("the configuration must be refused")
    }

    const MINIMAL: &str = r#"
[[backends]]
name = "search"
url = "http://127.0.0.1:9001"
strategy = "unauthenticated"
"#;

    #[test]
    fn durations_are_read_by_humantime() {
        // (as written, what it is; None: refused, naming the key and line)
        let cases: &[(&str, Option<Duration>)] = &[
            ("30s", Some(Duration::from_secs(30))),
            ("500ms", Some(Duration::from_millis(500))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h", Some(Duration::from_secs(3600))),
            ("1m30s", Some(Duration::from_secs(90))),
            ("1h 30m", Some(Duration::from_secs(5400))),
            ("10sec", Some(Duration::from_secs(10))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("0s", Some(Duration::ZERO)),
            ("30", None),
            ("s", None),
            ("", None),
            ("-1s", None),
            ("10 parsecs", None),
        ];
        for (text, want) in cases {
            let file = format!("[health]\nhold_time = {text:?}\n{MINIMAL}");
            match (parse(&file, &env(&[])), want) {
                (Ok(config), Some(want)) => {
                    assert_eq!(config.health.policy.hold_time, *want, "{text:?}")
                }
                (Err(error), None) => {
                    assert_eq!(error.key.as_deref(), Some("health.hold_time"), "{text:?}");
                    assert_eq!(error.line, Some(2), "{text:?}");
                    assert!(error.message.contains("expected a duration"), "{error}");
                }
                (result, _) => panic!("{text:?}: {result:?}"),
            }
        }
    }

    #[test]
    fn urls_make_one_endpoint_each_and_url_one() {
        let file = r#"
[[backends]]
name = "search"
urls = ["http://127.0.0.1:9001", "http://127.0.0.1:9002/api/"]
strategy = "unauthenticated"
[[backends]]
name = "one"
url = "http://127.0.0.1:9003"
strategy = "unauthenticated"
"#;
        let config = parse(file, &env(&[])).unwrap();
        let labels: Vec<Vec<String>> = config
            .backends
            .iter()
            .map(|backend| backend.urls.iter().map(url_label).collect())
            .collect();
        assert_eq!(
            labels,
            [
                vec!["http://127.0.0.1:9001", "http://127.0.0.1:9002/api"],
                vec!["http://127.0.0.1:9003"],
            ]
        );
    }

    #[test]
    fn the_issue_example_parses_with_every_strategy() {
        let text = r#"
listen = "127.0.0.1:8181"
[health]
interval = "30s"
timeout = "10s"
jitter = 0.1
unhealthy_threshold = 3
healthy_threshold = 2
degraded_threshold = 2
slow_threshold = "5s"

[[backends]]
name = "github"
url = "http://127.0.0.1:9001"
strategy = "upstream_inject"
[backends.probe]
method = "POST"
path = "/mcp"
headers = { "content-type" = "application/json" }
body = '{"jsonrpc":"2.0","id":1,"method":"ping"}'

[[backends]]
name = "search"
url = "http://127.0.0.1:9002/api/"
strategy = "header_injection"
header = "x-api-key"
value_env = "KEY"
timeout = "2s"

[[backends]]
name = "billing"
url = "http://127.0.0.1:9003"
strategy = "token_exchange"
token_url = "http://127.0.0.1:9004/oauth/token"
client_id = "gateway"
client_secret_env = "SECRET"
scope = "billing:read"
client_auth = "post"

[[backends]]
name = "open"
url = "http://[::1]:9005"
strategy = "unauthenticated"
"#;
        let config = parse(text, &env(&[("KEY", "k-123"), ("SECRET", "s-456")])).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8181".parse().unwrap());
        assert_eq!(config.health, HealthConfig::default());
        let [github, search, billing, open] = &config.backends[..] else {
            panic!("four backends");
        };
        assert_eq!(github.probe.method, Method::POST);
        assert_eq!(github.probe.path.as_str(), "/mcp");
        assert_eq!(github.probe.headers["content-type"], "application/json");
        assert!(github.probe.body.contains("ping"));
        assert!(matches!(github.strategy, StrategyConfig::UpstreamInject));
        assert_eq!(search.urls, ["http://127.0.0.1:9002/api"]);
        assert_eq!(search.timeout, Duration::from_secs(2));
        assert_eq!(search.probe.method, Method::GET);
        match &search.strategy {
            StrategyConfig::HeaderInjection { header, value } => {
                assert_eq!(header, "x-api-key");
                assert_eq!(value.expose(), "k-123");
            }
            other => panic!("{other:?}"),
        }
        match &billing.strategy {
            StrategyConfig::TokenExchange {
                token_url,
                client_id,
                client_secret,
                scope,
                client_auth,
            } => {
                assert_eq!(token_url, "http://127.0.0.1:9004/oauth/token");
                assert_eq!(client_id, "gateway");
                assert_eq!(client_secret.expose(), "s-456");
                assert_eq!(scope.as_deref(), Some("billing:read"));
                assert_eq!(*client_auth, ClientAuth::Post);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(open.urls, ["http://[::1]:9005/"]);
        assert_eq!(open.timeout, Duration::from_secs(30));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = parse(MINIMAL, &env(&[])).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.health, HealthConfig::default());
        assert_eq!(config.health.policy, Policy::default());
        assert_eq!(config.backends[0].probe.path.as_str(), "/");
    }

    #[test]
    fn probe_kinds_and_the_public_url() {
        let text = format!(
            "public_url = \"https://gw.example/mcp-gateway/\"\n{MINIMAL}[backends.probe]\nkind = \"mcp\"\npath = \"/mcp\"\nheaders = {{ \"x-probe\" = \"1\" }}\n\n[[backends]]\nname = \"docs\"\nurl = \"http://127.0.0.1:9002\"\nstrategy = \"upstream_inject\"\n[backends.probe]\nkind = \"oauth_metadata\"\npath = \"/mcp\"\n"
        );
        let config = parse(&text, &env(&[])).unwrap();
        assert_eq!(config.public_url, "https://gw.example/mcp-gateway");
        let [search, docs] = &config.backends[..] else {
            panic!("two backends");
        };
        assert_eq!(search.probe.kind, ProbeKind::Mcp);
        assert_eq!(search.probe.path.as_str(), "/mcp");
        assert_eq!(search.probe.headers["x-probe"], "1");
        assert_eq!(docs.probe.kind, ProbeKind::OAuthMetadata);

        let defaults = parse(MINIMAL, &env(&[])).unwrap();
        assert_eq!(defaults.public_url, "http://127.0.0.1:8080");
        assert_eq!(defaults.backends[0].probe.kind, ProbeKind::Http);
        let v6 = parse(&format!("listen = \"[::1]:9000\"\n{MINIMAL}"), &env(&[])).unwrap();
        assert_eq!(v6.public_url, "http://[::1]:9000");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let text = format!("{MINIMAL}\n[[backends]]\nname = \"k\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"header_injection\"\nheader = \"x-api-key\"\nvalue_env = \"KEY\"\n");
        let config = parse(&text, &env(&[("KEY", "k-123")])).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("k-123"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    /// One bad file per row: the key and line the error must name, and a word of its message.
    #[test]
    fn every_policy_key_reaches_the_registry() {
        let text = r#"
[health]
unhealthy_threshold = 4
healthy_threshold = 3
degraded_threshold = 5
slow_threshold = "2s"
traffic_window = "1m"
traffic_min_requests = 50
traffic_unhealthy_rate = 0.8
traffic_degraded_rate = 0.3
hold_time = "0s"
log_interval = "5m"
log_budget = 1
reminder_initial = "30s"
reminder_max = "2h"
[[backends]]
name = "a"
url = "http://127.0.0.1:1"
strategy = "unauthenticated"
"#;
        let policy = parse(text, &env(&[])).unwrap().health.policy;
        let mut want = Policy::default();
        want.unhealthy_threshold = 4;
        want.healthy_threshold = 3;
        want.degraded_threshold = 5;
        want.slow_threshold = Duration::from_secs(2);
        want.traffic_window = Duration::from_secs(60);
        want.traffic_min_requests = 50;
        want.traffic_unhealthy_rate = 0.8;
        want.traffic_degraded_rate = 0.3;
        want.hold_time = Duration::ZERO;
        want.log_interval = Duration::from_secs(300);
        want.log_budget = 1;
        want.reminder_initial = Duration::from_secs(30);
        want.reminder_max = Duration::from_secs(7200);
        assert_eq!(policy, want);
    }

    #[test]
    fn bad_files_name_the_key_and_line() {
        let backend = |extra: &str| {
            format!(
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"unauthenticated\"\n{extra}"
            )
        };
        // (what is wrong, the file, the key named, the line named, a word of the message)
        type Case = (
            &'static str,
            String,
            Option<&'static str>,
            Option<usize>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("syntax error", "listen = \n".into(), Some("listen"), Some(1), "quoted"),
            (
                "listen not an address",
                format!("listen = \"localhost\"\n{}", backend("")),
                Some("listen"),
                Some(1),
                "IP address",
            ),
            (
                "a duration without a unit",
                format!("[health]\ninterval = \"30\"\n{}", backend("")),
                Some("health.interval"),
                Some(2),
                "time unit needed",
            ),
            (
                "a duration as a number",
                format!("[health]\n\ntimeout = 30\n{}", backend("")),
                Some("health.timeout"),
                Some(3),
                "invalid type",
            ),
            (
                "a zero interval",
                format!("[health]\ninterval = \"0s\"\n{}", backend("")),
                Some("health.interval"),
                Some(2),
                "above zero",
            ),
            (
                "jitter out of range",
                format!("[health]\njitter = 1.5\n{}", backend("")),
                Some("health.jitter"),
                Some(2),
                "between 0 and 1",
            ),
            (
                "a zero threshold",
                format!("[health]\nhealthy_threshold = 0\n{}", backend("")),
                Some("health.healthy_threshold"),
                Some(2),
                "between 1 and",
            ),
            (
                "a traffic rate out of range",
                format!("[health]\n\ntraffic_unhealthy_rate = 1.5\n{}", backend("")),
                Some("health.traffic_unhealthy_rate"),
                Some(3),
                "at most 1",
            ),
            (
                "a degraded rate above the unhealthy rate",
                format!(
                    "[health]\ntraffic_unhealthy_rate = 0.3\ntraffic_degraded_rate = 0.4\n{}",
                    backend("")
                ),
                Some("health.traffic_degraded_rate"),
                Some(3),
                "not be above traffic_unhealthy_rate",
            ),
            (
                "reminders that shrink",
                format!("[health]\nreminder_max = \"1s\"\n{}", backend("")),
                Some("health.reminder_max"),
                Some(2),
                "shorter than reminder_initial",
            ),
            (
                "a negative threshold",
                format!("[health]\nunhealthy_threshold = -1\n{}", backend("")),
                Some("health.unhealthy_threshold"),
                Some(2),
                "invalid value",
            ),
            (
                "an unknown key in [health]",
                format!("[health]\nintervall = \"1s\"\n{}", backend("")),
                Some("health.intervall"),
                Some(2),
                "unknown key",
            ),
            ("no backend", "listen = \"127.0.0.1:1\"\n".into(), Some("backends"), None, "at least one"),
            (
                "a missing url, in the second backend",
                format!("{}[[backends]]\nname = \"b\"\nstrategy = \"unauthenticated\"\n", backend("")),
                Some("backends[1].url"),
                Some(5),
                "required",
            ),
            (
                "url and urls both",
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nurls = [\"http://127.0.0.1:2\"]\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].urls"),
                Some(4),
                "not both",
            ),
            (
                "urls empty",
                "[[backends]]\nname = \"a\"\nurls = []\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].urls"),
                Some(3),
                "at least one",
            ),
            (
                "a bad URL among urls, on its own line",
                "[[backends]]\nname = \"a\"\nurls = [\n  \"http://127.0.0.1:1\",\n  \"ftp://127.0.0.1:2\",\n]\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].urls[1]"),
                Some(5),
                "http:// or https://",
            ),
            (
                "a URL listed twice",
                "[[backends]]\nname = \"a\"\nurls = [\"http://127.0.0.1:1/\", \"http://127.0.0.1:1\"]\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].urls[1]"),
                Some(3),
                "listed twice",
            ),
            (
                "an unknown strategy",
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"oauth\"\n".into(),
                Some("backends[0].strategy"),
                Some(4),
                "unknown strategy \"oauth\"",
            ),
            (
                "a reserved name",
                "[[backends]]\nname = \"metrics\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].name"),
                Some(2),
                "reserved",
            ),
            (
                "a reserved name in other case",
                "[[backends]]\nname = \"Healthz\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].name"),
                Some(2),
                "reserved",
            ),
            (
                "a name with a slash",
                "[[backends]]\nname = \"a/b\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].name"),
                Some(2),
                "contains '/'",
            ),
            (
                "a duplicate name",
                format!("{}{}", backend(""), backend("")),
                Some("backends[1].name"),
                Some(6),
                "duplicate",
            ),
            (
                "a url of another scheme",
                "[[backends]]\nname = \"a\"\nurl = \"ftp://127.0.0.1:1\"\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].url"),
                Some(3),
                "http:// or https://",
            ),
            (
                "a url with credentials",
                "[[backends]]\nname = \"a\"\nurl = \"http://u:p@127.0.0.1:1\"\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].url"),
                Some(3),
                "credentials",
            ),
            (
                "not a url",
                "[[backends]]\nname = \"a\"\nurl = \"127.0.0.1 9001\"\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].url"),
                Some(3),
                "not a valid URL",
            ),
            (
                "a key of another strategy",
                backend("header = \"x-api-key\"\n"),
                Some("backends[0].header"),
                Some(5),
                "not a key of strategy \"unauthenticated\"",
            ),
            (
                "header_injection without value_env",
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"header_injection\"\nheader = \"x-api-key\"\n".into(),
                Some("backends[0].value_env"),
                Some(1),
                "required by strategy \"header_injection\"",
            ),
            (
                "an unset environment variable",
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"header_injection\"\nheader = \"x-api-key\"\nvalue_env = \"NOT_SET\"\n".into(),
                Some("backends[0].value_env"),
                Some(6),
                "NOT_SET is not set",
            ),
            (
                "a hop-by-hop injected header",
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"header_injection\"\nheader = \"connection\"\nvalue_env = \"KEY\"\n".into(),
                Some("backends[0].header"),
                Some(5),
                "connection header",
            ),
            (
                "token_exchange without token_url",
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"token_exchange\"\nclient_id = \"c\"\nclient_secret_env = \"SECRET\"\n".into(),
                Some("backends[0].token_url"),
                Some(1),
                "required",
            ),
            (
                "a bad client_auth",
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"token_exchange\"\ntoken_url = \"http://127.0.0.1:2/token\"\nclient_id = \"c\"\nclient_secret_env = \"SECRET\"\nclient_auth = \"jwt\"\n".into(),
                Some("backends[0].client_auth"),
                Some(8),
                "\"basic\" or \"post\"",
            ),
            (
                "a secret written into the file",
                "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"token_exchange\"\nclient_secret = \"hunter2\"\n".into(),
                Some("backends[0].client_secret"),
                Some(5),
                "environment variables",
            ),
            (
                "a probe path without a slash",
                backend("[backends.probe]\npath = \"health\"\n"),
                Some("backends[0].probe.path"),
                Some(6),
                "starting with '/'",
            ),
            (
                "a bad probe method",
                backend("[backends.probe]\nmethod = \"GE T\"\n"),
                Some("backends[0].probe.method"),
                Some(6),
                "HTTP method",
            ),
            (
                "a probe header that is not a string",
                backend("[backends.probe]\nheaders = { accept = 1 }\n"),
                Some("backends[0].probe.headers"),
                Some(6),
                "invalid type",
            ),
            (
                "an unknown key in a probe table",
                backend("[backends.probe]\nmethods = \"GET\"\n"),
                Some("backends[0].probe.methods"),
                Some(6),
                "unknown key",
            ),
            (
                "an unknown probe kind",
                backend("[backends.probe]\nkind = \"grpc\"\n"),
                Some("backends[0].probe.kind"),
                Some(6),
                "unknown probe kind \"grpc\"; expected one of http, mcp, oauth_metadata",
            ),
            (
                "a probe kind that is not a string",
                backend("[backends.probe]\nkind = 1\n"),
                Some("backends[0].probe.kind"),
                Some(6),
                "invalid type",
            ),
            (
                "a method for the mcp kind, which sends initialize",
                backend("[backends.probe]\nkind = \"mcp\"\nmethod = \"GET\"\n"),
                Some("backends[0].probe.method"),
                Some(7),
                "not a key of probe kind \"mcp\"",
            ),
            (
                "a body for the oauth_metadata kind",
                backend("[backends.probe]\nkind = \"oauth_metadata\"\n\nbody = \"{}\"\n"),
                Some("backends[0].probe.body"),
                Some(8),
                "not a key of probe kind \"oauth_metadata\"",
            ),
            (
                "a public URL of another scheme",
                format!("public_url = \"ftp://gw.example\"\n{}", backend("")),
                Some("public_url"),
                Some(1),
                "http:// or https://",
            ),
            (
                "a public URL with a query",
                format!("public_url = \"https://gw.example/?x=1\"\n{}", backend("")),
                Some("public_url"),
                Some(1),
                "no query",
            ),
            (
                "a public URL with credentials",
                format!("\npublic_url = \"https://u:p@gw.example\"\n{}", backend("")),
                Some("public_url"),
                Some(2),
                "credentials",
            ),
            (
                "a backend named like the discovery route",
                "[[backends]]\nname = \".well-known\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"unauthenticated\"\n".into(),
                Some("backends[0].name"),
                Some(2),
                "reserved",
            ),
            (
                "a backend timeout of zero",
                backend("timeout = \"0ms\"\n"),
                Some("backends[0].timeout"),
                Some(5),
                "above zero",
            ),
        ];
        for (case, text, key, line, message) in cases {
            let error = parse_err(&text);
            assert_eq!(error.key.as_deref(), key, "{case}: {error}");
            assert_eq!(error.line, line, "{case}: {error}");
            assert!(
                error.message.contains(message),
                "{case}: {error:?} should say {message:?}"
            );
        }
    }

    /// A file in the temporary directory, removed when dropped. `name` must be unique
    /// among the tests of one run (they share a process). Also used by `tests/proxy.rs`.
    pub(crate) struct TempFile(std::path::PathBuf);

    impl TempFile {
        pub(crate) fn new(name: &str, contents: &[u8]) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "tower-health-classify-{}-{name}",
                std::process::id()
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        pub(crate) fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn https_backend(url: &str, ca_file: &str) -> String {
        format!(
            "[[backends]]\nname = \"a\"\nurl = \"{url}\"\nstrategy = \"unauthenticated\"\nca_file = '{ca_file}'\n"
        )
    }

    #[test]
    fn https_backends_with_and_without_a_ca_file() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        // Two CAs and a comment line, as bundles are written.
        let bundle = TempFile::new(
            "bundle.pem",
            format!("# private CA\n{}{}", ca.pem(), ca.pem()).as_bytes(),
        );
        let config = parse(
            &format!(
                "{}{}",
                https_backend("https://127.0.0.1:9443/api", bundle.path()),
                "[[backends]]\nname = \"b\"\nurl = \"https://backend.test\"\nstrategy = \"unauthenticated\"\n"
            ),
            &env(&[]),
        )
        .unwrap();
        let [a, b] = &config.backends[..] else {
            panic!("two backends");
        };
        assert_eq!(a.urls, ["https://127.0.0.1:9443/api"]);
        let ca_file = a.ca.as_ref().unwrap();
        assert_eq!(ca_file.path, bundle.path());
        assert_eq!(ca_file.roots.len(), 2);
        // Its Debug names the file, never a certificate's bytes.
        let debug = format!("{ca_file:?}");
        assert!(debug.contains("certificates: 2"), "{debug}");
        assert!(!debug.contains("48, 130"), "{debug}");
        assert!(b.ca.is_none(), "no ca_file: the built-in roots");

        // A token endpoint over https may use the backend's CA too.
        let text = format!(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"token_exchange\"\ntoken_url = \"https://127.0.0.1:2/token\"\nclient_id = \"c\"\nclient_secret_env = \"SECRET\"\nca_file = '{}'\n",
            bundle.path()
        );
        let config = parse(&text, &env(&[("SECRET", "s-456")])).unwrap();
        assert!(config.backends[0].ca.is_some());
    }

    #[test]
    fn a_bad_ca_file_names_the_key_and_line() {
        let key = rcgen::KeyPair::generate().unwrap();
        let key_pem = key.serialize_pem();
        let only_a_key = TempFile::new("key.pem", key_pem.as_bytes());
        let not_pem = TempFile::new("not.pem", b"hello, I am not a certificate\n");
        let broken = TempFile::new(
            "broken.pem",
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let unterminated = TempFile::new(
            "unterminated.pem",
            b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n",
        );
        let missing = std::env::temp_dir().join("tower-health-classify-no-such-file.pem");
        let missing = missing.to_str().unwrap();
        let dir = std::env::temp_dir();
        let dir = dir.to_str().unwrap();
        let cases: &[(&str, String, &str)] = &[
            (
                "a missing file",
                https_backend("https://127.0.0.1:1", missing),
                "cannot read",
            ),
            (
                "a directory",
                https_backend("https://127.0.0.1:1", dir),
                "cannot read",
            ),
            (
                "only a private key",
                https_backend("https://127.0.0.1:1", only_a_key.path()),
                "no certificate in",
            ),
            (
                "not PEM at all",
                https_backend("https://127.0.0.1:1", not_pem.path()),
                "no certificate in",
            ),
            (
                "a certificate block that is not a certificate",
                https_backend("https://127.0.0.1:1", broken.path()),
                "not a usable CA certificate",
            ),
            (
                "a block without its end",
                https_backend("https://127.0.0.1:1", unterminated.path()),
                "not valid PEM",
            ),
            (
                "an http backend",
                https_backend("http://127.0.0.1:1", only_a_key.path()),
                "only used for https://",
            ),
        ];
        for (case, text, message) in cases {
            let error = parse_err(text);
            assert_eq!(
                error.key.as_deref(),
                Some("backends[0].ca_file"),
                "{case}: {error}"
            );
            assert_eq!(error.line, Some(5), "{case}: {error}");
            assert!(error.message.contains(message), "{case}: {error}");
            // The file is named; nothing of its contents is shown.
            assert!(
                !error.to_string().contains("PRIVATE KEY"),
                "{case}: {error}"
            );
            assert!(
                !error.to_string().contains(&key_pem[40..80]),
                "{case}: {error}"
            );
        }
    }

    #[test]
    fn errors_never_quote_a_secret_from_the_file_or_the_environment() {
        let text = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"unauthenticated\"\nclient_secret = \"hunter2\"\n";
        let shown = parse_err(text).to_string();
        assert!(!shown.contains("hunter2"), "{shown}");

        // An environment value that cannot be a header value: named, not shown.
        let text = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"header_injection\"\nheader = \"x-api-key\"\nvalue_env = \"KEY\"\n";
        let error = parse(text, &env(&[("KEY", "bad\nvalue-789")])).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("backends[0].value_env"));
        assert!(!error.to_string().contains("value-789"), "{error}");
    }

    #[test]
    fn display_puts_line_then_key() {
        let error = parse_err(
            "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nstrategy = \"oauth\"\n",
        );
        assert!(
            error
                .to_string()
                .starts_with("line 4: backends[0].strategy: unknown strategy"),
            "{error}"
        );
    }
}
