//! A reverse proxy with health checks that know how it authenticates to each backend.
//!
//! ```text
//! cargo run --example proxy                          # demo
//! cargo run --example proxy -- --config proxy.toml
//! ```
//!
//! With no argument it starts four demo backends on 127.0.0.1 (a healthy one, one behind
//! OAuth answering 401 with a Bearer challenge, a closed port, one with two endpoints of
//! which the second stops 10 s in), proxies them on
//! 127.0.0.1:8080 (or the next free port), probes them every 2 s and prints the health
//! table each time it changes. Nothing leaves this machine. With `--config FILE` it runs
//! the proxy that file describes (see `config.rs` for the format; a bad file exits with
//! code 2 and names the key and line).
//!
//! - Backends are `http://` or `https://` URLs. HTTPS is checked against Mozilla's roots
//!   compiled in, or against a backend's own `ca_file`; HTTP/2 through ALPN when the
//!   backend offers it (see `forward::client`).
//! - `/{backend}/{*path}` (and `/{backend}`, `/{backend}/`) goes to that backend's URL plus
//!   the path and query, bodies streamed both ways, connection headers removed. 401 and 403
//!   reach the caller with their `WWW-Authenticate`, its `resource_metadata` pointed at
//!   the proxy, which serves that document (see `discovery.rs`); a backend that cannot be
//!   reached gives 502, one too slow 504, one that is Unhealthy or Unauthenticated 503
//!   without a request sent (but for a trial now and then; `fail_fast = false` turns that
//!   off), an unknown name 404, each with a small JSON body. A stream that dies midway is
//!   reported against the backend (judged streams).
//! - Probes of kind `http`, `mcp` or `oauth_metadata` (`[backends.probe] kind`).
//! - `urls = [...]` instead of `url`: one endpoint per URL, balanced over those that are
//!   not Bad, failing open when more than half are (see `endpoints.rs`).
//! - `/healthz` answers 200 while the registry's phase is `ready` or `degraded`, else 503;
//!   `/health/backends` the registry's snapshot as JSON; `/metrics` Prometheus text.
//! - Outgoing auth per backend: `unauthenticated`, `upstream_inject`, `header_injection`,
//!   `token_exchange` (see `auth.rs`). Secrets come only from environment variables and are
//!   never logged.
//!
//! # Files
//!
//! | file | concern |
//! |---|---|
//! | `config.rs` | the TOML file, checked in full before anything starts |
//! | `auth.rs` | outgoing auth layers, one behaviour per strategy |
//! | `token.rs` | the OAuth client-credentials grant, cached, one fetch at a time |
//! | `forward.rs` | one request to a backend and back; error answers |
//! | `discovery.rs` | OAuth discovery through the proxy: challenges and metadata that name the proxy |
//! | `endpoints.rs` | a backend with several URLs: balancer, failover, replayable body |
//! | `health.rs` | `/healthz`, `/health/backends`, `/metrics` |
//! | `gateway.rs` | everything assembled: the stack of each backend, the prober, the router |
//! | `demo.rs` | demo backends and the health table |
//!
//! # The stack of each backend, and why in this order
//!
//! `HealthGateLayer` → `OutgoingAuthLayer` → `HealthClassifyLayer` (pass-through) →
//! `Timeout` → `BearerTokenLayer` → hyper-util client (for several URLs, the balancer
//! sits between outgoing auth and one classify layer per endpoint). The auth layer is
//! outside the classify layer so that the classify layer sees the credentials the
//! backend will get (the caller's `Authorization` stripped, the API key set) when it
//! decides whether credentials were sent; for `token_exchange` it declares
//! `Credentials::Sent` and the token itself is added inside, so that a token endpoint
//! that is down, slow or refuses the client is classified, reported against the backend
//! and bounded by the timeout like any other failure. Probes go through the same layers.
//! Details in `gateway.rs`.

// Printing the listen address and the demo's table is what this example is for.
#![allow(clippy::print_stdout)]

mod auth;
mod config;
mod demo;
mod discovery;
mod endpoints;
mod forward;
mod gateway;
mod health;
mod token;

use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: proxy [--config FILE]\n\
    \n  (no argument)   demo mode: loopback backends, proxied on 127.0.0.1:8080\
    \n  --config FILE   run the proxy FILE describes (TOML)";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Demo,
    Config(String),
    Help,
}

fn parse_args(args: &[String]) -> Result<Mode, String> {
    match args {
        [] => Ok(Mode::Demo),
        [flag] if flag == "-h" || flag == "--help" => Ok(Mode::Help),
        [flag, path] if flag == "--config" => Ok(Mode::Config(path.clone())),
        [flag] if flag == "--config" => Err("--config needs a file".into()),
        [flag] if flag.starts_with("--config=") => {
            Ok(Mode::Config(flag["--config=".len()..].to_owned()))
        }
        _ => Err(format!("unexpected arguments: {}", args.join(" "))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match parse_args(&args) {
        Ok(mode) => mode,
        Err(message) => {
            eprintln!("proxy: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if mode == Mode::Help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }

    // The demo's table is the point; the registry's WARN on a backend going down shows
    // that it is logged once. A configured proxy logs its transitions at INFO.
    let default_filter = match mode {
        Mode::Demo => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("proxy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match mode {
            Mode::Config(path) => run_config(&path).await,
            _ => match demo::run(shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("proxy: {error}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

async fn run_config(path: &str) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("proxy: cannot read {path}: {error}");
            return ExitCode::from(2);
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let config = match config::parse(&text, &env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("proxy: {path}: {error}");
            return ExitCode::from(2);
        }
    };
    if config.listen.ip().is_unspecified()
        && config.public_url == format!("http://{}", config.listen)
    {
        // Clients cannot use `0.0.0.0`: discovery would send them nowhere.
        tracing::warn!(
            public_url = %config.public_url,
            "listening on every address without public_url: OAuth discovery will name this address; set public_url"
        );
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("proxy: cannot listen on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let gateway = match gateway::start(&config, listener) {
        Ok(gateway) => gateway,
        Err(error) => {
            eprintln!("proxy: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "proxy on http://{} with {} backends; /healthz, /health/backends, /metrics",
        gateway.addr(),
        config.backends.len()
    );
    shutdown_signal().await;
    gateway.shutdown(Duration::from_secs(5)).await;
    ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM (what a service manager or Kubernetes sends).
async fn shutdown_signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            if let Err(error) = result {
                eprintln!("proxy: cannot wait for Ctrl-C: {error}");
                std::future::pending::<()>().await;
            }
        }
        () = terminate => {}
    }
}
