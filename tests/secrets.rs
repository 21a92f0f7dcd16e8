//! Secrets: known secret strings pushed through every channel the crate touches, and
//! looked for in everything it produces.
//!
//! Two kinds of text are told apart:
//!
//! - **Ours** (credentials the gateway sends, and whatever else a request or a response
//!   body carries): request headers (`Authorization`, a configured `x-api-key`), a URI's
//!   userinfo and query, a token-exchange response body and its `set-cookie`, and the
//!   text of an inner error (a client library's message with a `user:password@` URL).
//!   None of it may appear in any log line (TRACE and up: `LogSink`, the registry's
//!   transitions and reminders, the prober, tower-http's `TraceLayer` with this crate's
//!   classifier), any transition, the snapshot (`Debug`, JSON), any metric label, or the
//!   `Display` of any error, outcome, report or failure class. The one place an inner
//!   error's own text stays is that error itself: kept as `source()` (and so in the
//!   `Debug` of the `BackendError` that wraps it, as every error wrapper shows its
//!   source), never copied.
//! - **The backend's** (challenge parameters): what a caller needs to act on a challenge.
//!   It may appear in the `Debug` of a parsed challenge, always escaped; never in a log
//!   line, a metric label or a snapshot (`last_error` is built from codes), and never
//!   with a raw control character anywhere.

#![cfg(feature = "registry")]

#[path = "support/logs.rs"]
mod logs;

use logs::Logs;

use std::error::Error as _;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_health_classify::{
    AuthStrategy, BackendError, HealthClassifyLayer, HealthRegistry, HealthReport, HealthSink,
    LogSink, Outcome, Policy,
};

/// Ours: must appear nowhere.
const AUTHORIZATION: &str = "Bearer SECRET-AUTHORIZATION-7f3a";
const API_KEY: &str = "SECRET-API-KEY-91c2";
const URI_PASSWORD: &str = "SECRET-URI-PASSWORD-5d0e";
const QUERY_TOKEN: &str = "SECRET-QUERY-TOKEN-88b1";
const EXCHANGED_TOKEN: &str = "SECRET-EXCHANGED-TOKEN-e4d9";
const COOKIE: &str = "SECRET-COOKIE-0a6c";
const INNER_PASSWORD: &str = "SECRET-INNER-PASSWORD-3b7f";

const OURS: &[&str] = &[
    "SECRET-AUTHORIZATION-7f3a",
    API_KEY,
    URI_PASSWORD,
    QUERY_TOKEN,
    EXCHANGED_TOKEN,
    COOKIE,
    INNER_PASSWORD,
];

/// The backend's: allowed only in `Debug` of parsed challenges.
const DESCRIPTION_TOKEN: &str = "SECRET-DESCRIPTION-TOKEN-c1f0";
const PARAM_TOKEN: &str = "SECRET-PARAM-TOKEN-27aa";

/// A description with control characters a header value can hold: a tab, and UTF-8
/// C1 controls (NEL, and CSI starting an ANSI colour sequence).
fn description() -> String {
    format!("token {DESCRIPTION_TOKEN}\tforged\u{85}line \u{9b}31mred")
}

fn x_api_key() -> HeaderName {
    HeaderName::from_static("x-api-key")
}

// === the backend ===

async fn backend(request: Request<()>) -> Result<Response<String>, BoxError> {
    let (status, challenge, body) = match request.uri().path() {
        "/ok" => (StatusCode::OK, None, String::new()),
        "/token" => (
            StatusCode::OK,
            None,
            format!(r#"{{"access_token":"{EXCHANGED_TOKEN}","token_type":"Bearer"}}"#),
        ),
        "/expired" => (
            StatusCode::UNAUTHORIZED,
            Some(format!(
                r#"Bearer error="invalid_token", error_description="{}""#,
                description()
            )),
            String::new(),
        ),
        "/scope" => (
            StatusCode::FORBIDDEN,
            Some(format!(
                r#"Bearer error="insufficient_scope", scope="admin", token_hint="{PARAM_TOKEN}""#
            )),
            String::new(),
        ),
        "/refused" => {
            // A client library that put the URL, userinfo and all, into its message.
            let message = format!(
                "error sending request for url (https://gateway:{INNER_PASSWORD}@backend.example/mcp?access_token={QUERY_TOKEN}): connection refused"
            );
            return Err(io::Error::other(message).into());
        }
        other => panic!("no route {other}"),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!("session={COOKIE}")).unwrap(),
    );
    if let Some(challenge) = challenge {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).unwrap(),
        );
    }
    Ok(response)
}

fn request(path: &str, userinfo: bool) -> Request<()> {
    let authority = if userinfo {
        format!("gateway:{URI_PASSWORD}@backend.example")
    } else {
        "backend.example".to_owned()
    };
    // Probes: their rejected keys go Unauthenticated and reach the reminders too.
    Request::get(format!(
        "http://{authority}{path}?access_token={QUERY_TOKEN}"
    ))
    .header(header::AUTHORIZATION, AUTHORIZATION)
    .header(x_api_key(), API_KEY)
    .extension(tower_health_classify::Probe)
    .body(())
    .unwrap()
}

// === what the crate produced ===

/// Everything the crate produced, as text, by where it appeared.
#[derive(Debug, Default)]
struct Produced {
    /// Log lines, transitions, snapshot, metric labels, every `Display`.
    shown: Vec<(String, String)>,
    /// `Debug` of outcomes, reports, auth errors: the backend's challenge text may be
    /// here, escaped.
    debug: Vec<(String, String)>,
    /// `Debug` of `BackendError`s: their sources too.
    error_debug: Vec<(String, String)>,
    /// The snapshot's `last_error` values.
    last_errors: Vec<String>,
}

impl Produced {
    fn shown(&mut self, what: &str, text: impl Into<String>) {
        self.shown.push((what.to_owned(), text.into()));
    }

    fn debug(&mut self, what: &str, text: impl Into<String>) {
        self.debug.push((what.to_owned(), text.into()));
    }
}

/// Records the `Display` and `Debug` of every report, as a sink sees it.
#[derive(Default)]
struct Recorder(Mutex<Produced>);

impl HealthSink for Recorder {
    fn strategy(&self) -> AuthStrategy {
        AuthStrategy::HeaderInjection
    }

    fn report(&self, report: &HealthReport<'_>) {
        let mut produced = self.0.lock().unwrap();
        produced.shown("outcome", report.outcome.to_string());
        if let Some(verdict) = report.verdict {
            produced.shown("verdict", verdict.to_string());
        }
        produced.debug("report", format!("{report:?}"));
    }
}

/// Records what an exchange returned.
fn returned(produced: &mut Produced, result: &Result<Response<String>, BackendError>) {
    match result {
        Ok(response) => {
            if let Some(outcome) = response.extensions().get::<Outcome>() {
                produced.shown("extension outcome", outcome.to_string());
                produced.debug("extension outcome", format!("{outcome:?}"));
            }
        }
        Err(error) => {
            produced.shown("error", error.to_string());
            produced.shown("error outcome", error.outcome().to_string());
            if let Some(auth) = error.auth() {
                produced.shown("auth error", auth.to_string());
                produced.debug("auth error", format!("{auth:?}"));
            }
            produced
                .error_debug
                .push(("error".to_owned(), format!("{error:?}")));
        }
    }
}

// === the scenario ===

/// Drives every channel on paused time: the registry goes Unauthenticated (a WARN
/// transition), is reminded of it (a WARN reminder), meets a 403, a refused connection,
/// a token exchange, and recovers (INFO); a pass-through backend and the prober run
/// alongside.
async fn scenario() -> Produced {
    let mut produced = Produced::default();
    let registry = HealthRegistry::new(Policy::default());
    let mut transitions = registry.subscribe();
    let recorder = Arc::new(Recorder::default());

    // Typed mode, gateway-owned credentials: a rejected key is Unauthenticated.
    let handle = registry.register("injected", AuthStrategy::HeaderInjection);
    let sink = (
        handle.clone(),
        (
            LogSink::new("injected", AuthStrategy::HeaderInjection),
            recorder.clone(),
        ),
    );
    let mut typed = HealthClassifyLayer::new(sink)
        .credential_header(x_api_key())
        .layer(service_fn(backend));

    // Pass-through mode, the user's own token: challenges come back as responses.
    let forwarded = registry.register("forwarded", AuthStrategy::UpstreamInject);
    let mut passing = HealthClassifyLayer::new((
        forwarded,
        LogSink::new("forwarded", AuthStrategy::UpstreamInject),
    ))
    .credential_header(x_api_key())
    .pass_through_auth()
    .layer(service_fn(backend));

    let script: &[(&str, Duration)] = &[
        ("/expired", Duration::from_secs(1)),
        ("/expired", Duration::from_secs(1)),
        ("/expired", Duration::from_secs(61)),
        ("/expired", Duration::from_secs(1)), // the reminder
        ("/scope", Duration::from_secs(1)),
        ("/refused", Duration::from_secs(1)),
        ("/refused", Duration::from_secs(1)),
        ("/refused", Duration::from_secs(1)),
        ("/token", Duration::from_secs(1)),
        ("/ok", Duration::from_secs(1)),
        ("/scope", Duration::from_secs(1)),
    ];
    for (i, &(path, then)) in script.iter().enumerate() {
        let userinfo = i % 2 == 0;
        let result = typed
            .ready()
            .await
            .unwrap()
            .call(request(path, userinfo))
            .await;
        returned(&mut produced, &result);
        let result = passing
            .ready()
            .await
            .unwrap()
            .call(request(path, userinfo))
            .await;
        returned(&mut produced, &result);
        let snapshot = registry.snapshot();
        produced.shown("snapshot", format!("{snapshot:?}"));
        #[cfg(feature = "serde")]
        produced.shown("snapshot json", serde_json::to_string(&snapshot).unwrap());
        for backend in &snapshot.backends {
            produced.last_errors.extend(backend.last_error.clone());
        }
        tokio::time::advance(then).await;
    }

    #[cfg(feature = "probe")]
    {
        let prober = tower_health_classify::Prober::builder(registry.clone())
            .interval(Duration::from_secs(5))
            .credential_header(x_api_key())
            .spawn(|name: &str| {
                let path = if name == "injected" {
                    "/expired"
                } else {
                    "/refused"
                };
                Some((service_fn(backend), request(path, true)))
            });
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(5)).await;
            tokio::task::yield_now().await;
        }
        prober.shutdown().await;
    }

    #[cfg(feature = "tower-http")]
    {
        use tower_health_classify::NotHealthyAsFailures;
        use tower_http::trace::TraceLayer;
        let handle = registry.register("traced", AuthStrategy::HeaderInjection);
        let classifier = NotHealthyAsFailures::new(handle.clone()).credential_header(x_api_key());
        let mut traced = tower::ServiceBuilder::new()
            .layer(TraceLayer::new(classifier))
            .layer(HealthClassifyLayer::new(handle).credential_header(x_api_key()))
            .service(service_fn(|request: Request<String>| {
                backend(request.map(drop))
            }));
        // No userinfo here: tower-http's default span records the URI as it is, which
        // is tower-http's choice to configure (`make_span_with`), not this crate's.
        for path in ["/expired", "/scope", "/refused", "/token", "/ok"] {
            // tower-http wants a request body that is a `Body`.
            let mut request = request(path, false).map(|()| String::new());
            *request.uri_mut() = format!("http://backend.example{path}").parse().unwrap();
            let result = traced.ready().await.unwrap().call(request).await;
            if let Err(error) = &result {
                produced.shown("traced error", error.to_string());
            }
        }
    }

    while let Some(transition) = transitions.try_recv() {
        produced.shown("transition", transition.to_string());
        produced.shown("transition debug", format!("{transition:?}"));
    }
    let mut from_sink = std::mem::take(&mut *recorder.0.lock().unwrap());
    produced.shown.append(&mut from_sink.shown);
    produced.debug.append(&mut from_sink.debug);
    produced
}

fn has_control(text: &str) -> bool {
    // A log line ends in a newline; inside it, nothing of the sort.
    text.trim_end_matches('\n').chars().any(char::is_control)
}

#[test]
fn secrets_never_leak() {
    let (logs, _guard) = Logs::capture(tracing::Level::TRACE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();

    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let snapshotter = recorder.snapshotter();
    #[cfg(feature = "metrics")]
    let mut produced = metrics::with_local_recorder(&recorder, || runtime.block_on(scenario()));
    #[cfg(not(feature = "metrics"))]
    let mut produced = runtime.block_on(scenario());

    #[cfg(feature = "metrics")]
    {
        let mut series = 0;
        for (key, _, _, _) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            series += 1;
            for label in key.labels() {
                produced.shown("metric label", format!("{}={}", label.key(), label.value()));
            }
            produced.shown("metric name", key.name().to_owned());
        }
        assert!(series > 0, "the recorder saw the registry");
    }

    let text = logs.text();
    for line in text.lines() {
        produced.shown("log", line);
    }

    // The scenario reached every channel it meant to.
    for needle in [
        "backend exchange classified",   // LogSink
        "backend health changed",        // transitions
        "backend still unauthenticated", // reminders
    ] {
        assert!(text.contains(needle), "no {needle:?} in the logs:\n{text}");
    }
    #[cfg(feature = "tower-http")]
    assert!(
        text.contains("response failed"),
        "TraceLayer's on_failure:\n{text}"
    );
    assert!(produced.shown.iter().any(|(w, _)| w == "transition"));
    assert!(produced.shown.iter().any(|(w, _)| w == "error"));
    // `last_error` is built from codes alone: a token a backend echoes in its
    // `error_description` never reaches the snapshot.
    assert!(!produced.last_errors.is_empty());
    assert!(
        produced
            .last_errors
            .iter()
            .all(|e| !e.contains(DESCRIPTION_TOKEN)),
        "the backend's description reached last_error: {:?}",
        produced.last_errors
    );
    assert!(
        produced.debug.iter().any(|(_, d)| d.contains(PARAM_TOKEN)),
        "the backend's parameters stay readable in Debug"
    );

    // Ours: nowhere, whatever the form.
    let everything = produced
        .shown
        .iter()
        .chain(&produced.debug)
        .map(|(what, text)| (what.as_str(), text.as_str()))
        .chain(
            produced
                .last_errors
                .iter()
                .map(|e| ("last_error", e.as_str())),
        );
    for (what, text) in everything {
        for secret in OURS {
            assert!(!text.contains(secret), "{secret} in {what}: {text}");
        }
    }
    // The backend's: never shown (logs, transitions, snapshot, labels, Display), and
    // never raw control characters.
    for (what, text) in &produced.shown {
        assert!(
            !text.contains(PARAM_TOKEN),
            "{PARAM_TOKEN} in {what}: {text}"
        );
        assert!(
            !text.contains(DESCRIPTION_TOKEN),
            "{DESCRIPTION_TOKEN} in {what}: {text}"
        );
        assert!(
            !has_control(text),
            "a raw control character in {what}: {text:?}"
        );
    }
    for (what, text) in &produced.debug {
        assert!(
            !has_control(text),
            "a raw control character in {what}: {text:?}"
        );
    }
    for last_error in &produced.last_errors {
        assert!(!has_control(last_error), "{last_error:?}");
    }

    // The inner error's own text is kept, as its source, and nowhere else: the wrapper's
    // `Debug` shows the source as it is (as any error wrapper's does); its `Display`
    // does not (asserted above with every `Display`).
    let with_source: Vec<_> = produced
        .error_debug
        .iter()
        .filter(|(_, d)| d.contains(INNER_PASSWORD))
        .collect();
    assert!(!with_source.is_empty(), "the refused exchange's error");
    for (_, debug) in &produced.error_debug {
        for secret in [
            AUTHORIZATION,
            API_KEY,
            URI_PASSWORD,
            EXCHANGED_TOKEN,
            COOKIE,
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }
}

/// The inner error stays reachable as `source()`, unchanged: a caller can still read it
/// (and decide what to log), the crate never copies it.
#[tokio::test]
async fn an_inner_errors_text_is_kept_only_as_its_source() {
    let mut service = HealthClassifyLayer::new(()).layer(service_fn(backend));
    let error = service
        .ready()
        .await
        .unwrap()
        .call(request("/refused", true))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "transport error: connection_refused");
    let source = error.source().expect("kept");
    assert!(source.to_string().contains(INNER_PASSWORD));
    assert!(source.is::<io::Error>());
}
