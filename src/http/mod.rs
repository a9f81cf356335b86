//! The daemon's HTTP endpoint for ops: `/healthz` (the process answers), `/readyz` (every
//! database reachable) and `/metrics` (Prometheus text, rendered by
//! `metrics-exporter-prometheus` from everything oscarflow records through `metrics`).
//!
//! Bound to loopback by default. On any other address a bearer token is required (read from
//! the environment variable `token_env` names); the daemon refuses to start without one.
//! Answers carry no PHI: states, counts and metric names only.
//!
//! **Requests that change state** (`POST /pipelines/<name>/pause|resume|poll`, and every
//! later one) need the bearer token also on loopback, unless `oscarflow.toml` says
//! `control_without_token = true` (loopback only). Whatever the token, they are refused when
//! their `Host` is not a loopback name or address (a DNS-rebinding page) or when they carry an
//! `Origin` other than their own `Host` (a cross-site form or `fetch` from a browser on the
//! clinic's machine). Tokens are compared in constant time.
//!
//! **Limits.** Idle connections cannot exhaust the process: the endpoint keeps at most
//! `http_max_connections` open and, at that cap, keeps accepting: the longest-idle
//! connection (no request in progress: silent since it connected, half-way through a request
//! head, or kept alive after an answer) gives way to the new one, so `/healthz` is answered
//! however many idle clients there are. When every connection has a request in progress
//! (open taps), a new connection is closed at once rather than left in the backlog. A
//! request head must arrive whole within `http_header_timeout` of connecting or of the
//! previous answer. Closings are counted in `oscarflow_listener_connections_closed_total`
//! (`listener="http"`, `reason`: `evicted_idle`, `over_capacity`, `header_timeout`). The
//! daemon raises its own open-file limit to the hard limit at start.

pub mod console;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::conn_limit::{Admission, BusyGuard, ClosedLog, Limits, Slots};
use crate::telemetry::tap::TapHub;
use crate::telemetry::{counter, gauge, MetricName};
use crate::topology::{Registry, Shutdown};

/// What the endpoint reports on.
pub struct HttpState {
    /// The running pipelines, and every database the daemon opened (`/readyz` pings them).
    pub registry: Arc<Registry>,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// `Authorization: Bearer <token>` required when there is one: any of these, each
    /// with the name the audit trail gives its holder.
    pub tokens: Tokens,
    /// State-changing requests allowed without a token (`control_without_token`; loopback
    /// only, checked at start).
    pub control_without_token: bool,
    /// Live events for `GET /tap/<pipeline>/<component>`.
    pub tap: Arc<TapHub>,
    /// Fires when the daemon stops (ends open taps).
    pub shutdown: Shutdown,
    /// Connections open at once (`http_max_connections`).
    pub max_connections: usize,
    /// A request head must arrive whole within this long (`http_header_timeout`).
    pub header_timeout: std::time::Duration,
    /// The console's sessions and chart samples.
    pub console: Arc<console::Console>,
    /// Re-drives open dead letters through their pipelines (the console's "re-drive"; the
    /// daemon gives `dlq retry`'s, which finds each pipeline in its pipelines directory).
    pub redrive: Option<Redrive>,
    /// Asks the daemon to start a pipeline again from its file (the console's "restart").
    pub restart: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// The alert notifiers' health: a failing one is a `/readyz` problem.
    pub alerts: Option<Arc<crate::alerts::NotifierHealth>>,
}

type Body = BoxBody<Bytes, Infallible>;

/// The endpoint's bearer tokens, each with its holder's name (`http_token_env`'s under
/// `http_token_name`, and `http_tokens`).
#[derive(Default, Clone)]
pub struct Tokens(Vec<(String, String)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only, never a token.
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Tokens {
    /// `(name, token)` pairs; empty tokens are dropped.
    pub fn new(pairs: Vec<(String, String)>) -> Tokens {
        Tokens(pairs.into_iter().filter(|(_, t)| !t.is_empty()).collect())
    }

    /// One token, named `operator`.
    pub fn single(token: Option<String>) -> Tokens {
        Tokens::new(
            token
                .map(|t| ("operator".to_string(), t))
                .into_iter()
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of the holder of `given`, compared with every token in constant time.
    pub fn who(&self, given: &str) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.0 {
            if same_secret(given.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// A token's name: 1 to 40 letters, digits, `.`, `_`, `-` or `@` (it goes into logs and
/// the audit trail).
pub fn token_name_ok(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// Re-drives dead letters (with their bytes) of one store: a line per dead letter.
pub type Redrive = Arc<
    dyn Fn(
            crate::store::Store,
            Vec<crate::dead_letter::StoredDeadLetter>,
        ) -> futures::future::BoxFuture<'static, Vec<crate::dead_letter::Redriven>>
        + Send
        + Sync,
>;

/// Installs the Prometheus recorder as the process's `metrics` recorder.
pub fn install_prometheus() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    // Durations are histograms (not summaries), so they aggregate across restarts.
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ])
        .map_err(|e| format!("metrics buckets: {e}"))?
        // Files per group commit.
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                crate::telemetry::MetricName::GroupCommitFiles
                    .as_str()
                    .to_string(),
            ),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )
        .map_err(|e| format!("metrics buckets: {e}"))?
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))
}

/// Checks the listen address and token: a non-loopback address needs a token.
pub fn check_exposure(addr: &SocketAddr, tokens: &Tokens) -> Result<(), String> {
    if !addr.ip().is_loopback() && tokens.is_empty() {
        return Err(format!(
            "the HTTP endpoint on {addr} is reachable from outside this machine: set `http_token_env` to a variable holding a bearer token, or listen on 127.0.0.1"
        ));
    }
    Ok(())
}

fn count_closed(log: &ClosedLog, why: &'static str) {
    counter(
        MetricName::ListenerConnectionsClosed,
        &[
            ("listener", "http".to_string()),
            ("reason", why.to_string()),
        ],
        1,
    );
    log.note(why);
}

/// Serves until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, mut shutdown: Shutdown) {
    let max = state.max_connections.max(1);
    // One peer in practice (loopback, or a scraper): the cap is overall.
    let slots = Slots::new(Limits {
        max_total: max,
        max_per_peer: max,
        slow_after: std::time::Duration::MAX,
    });
    let log = Arc::new(ClosedLog::new("http"));
    tokio::spawn(console::sample_backlog(state.clone()));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, typically: do not spin.
                tracing::warn!(error = %e, "HTTP accept failed.");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match slots.admit(peer.ip()) {
            Admission::Refused(why) => {
                drop(tcp);
                count_closed(&log, why.as_str());
                continue;
            }
            Admission::Admitted { slot, evicted } => {
                if let Some(why) = evicted {
                    count_closed(&log, why.as_str());
                }
                Arc::new(slot)
            }
        };
        let state = state.clone();
        let log = log.clone();
        tokio::spawn(async move {
            let in_service = slot.clone();
            let header_timeout = state.header_timeout;
            let svc = hyper::service::service_fn(move |req| {
                // Busy from the request head until its response body is dropped (written
                // whole, or the client went away): such a connection never gives way.
                let busy = in_service.busy();
                let state = state.clone();
                async move {
                    let r = if req.uri().path() == "/console"
                        || req.uri().path().starts_with("/console/")
                    {
                        console::handle(state.clone(), req).await
                    } else {
                        answer(&state, &req).await
                    };
                    Ok::<_, Infallible>(r.map(|body| Held { body, _busy: busy }.boxed()))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if r.is_err_and(|e| e.is_timeout()) {
                        count_closed(&log, "header_timeout");
                    }
                }
                _ = slot.evicted() => {
                    // Chosen while idle; should a request have started meanwhile, it is
                    // answered before the connection closes.
                    if slot.is_busy() {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
        });
    }
}

/// A response body that keeps its connection busy until it is dropped; sizes pass through
/// (a `Content-Length` stays one).
struct Held {
    body: Body,
    _busy: BusyGuard,
}

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// `a == b` in time that depends on the lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The host part of a `Host` header or an origin's authority (`[::1]:9464` → `::1`).
fn host_of(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    a.rsplit_once(':').map_or(a, |(h, _)| h)
}

/// Why a state-changing request is refused, if it is: a `Host` that is not this machine's
/// loopback, or an `Origin` other than the request's own host.
fn forged(req: &Request<Incoming>) -> Option<&'static str> {
    let host = header(req, hyper::header::HOST).unwrap_or_default();
    let local = matches!(host_of(host), "localhost" | "127.0.0.1" | "::1")
        || host_of(host)
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !local {
        return Some("the Host is not this machine's loopback address");
    }
    if let Some(origin) = header(req, hyper::header::ORIGIN) {
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        if authority.trim_end_matches('/') != host.trim() {
            return Some("the request comes from another site's page");
        }
    }
    None
}

async fn answer(state: &HttpState, req: &Request<Incoming>) -> Response<Body> {
    let given = header(req, hyper::header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
    let holder = given.and_then(|g| state.tokens.who(g)).map(str::to_string);
    let authorized = holder.is_some();
    if !state.tokens.is_empty() && !authorized {
        return text(StatusCode::UNAUTHORIZED, "unauthorized\n", "text/plain");
    }
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/pipelines/") {
        if req.method() != hyper::Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n", "text/plain");
        }
        if !authorized && !state.control_without_token {
            return json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "requests that change state need the bearer token (http_token_env), or control_without_token = true in oscarflow.toml on loopback"}),
            );
        }
        if let Some(why) = forged(req) {
            tracing::warn!(why, "Control request refused.");
            return json(StatusCode::FORBIDDEN, serde_json::json!({"error": why}));
        }
        return control(state, rest);
    }
    if req.method() != hyper::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n", "text/plain");
    }
    if let Some(rest) = path.strip_prefix("/tap/") {
        let who = Tapper {
            token: holder,
            claimed: header(
                req,
                hyper::header::HeaderName::from_static("x-oscarflow-user"),
            )
            .map(|u| u.chars().take(100).collect()),
        };
        return tap(state, rest, req.uri().query().unwrap_or(""), who).await;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" => readiness(state).await,
        "/pipelines" => json(StatusCode::OK, pipelines_json(state)),
        "/metrics" => match &state.metrics {
            Some(h) => {
                record_gauges(&state.registry);
                text(StatusCode::OK, h.render(), "text/plain; version=0.0.4")
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics recorder not installed\n",
                "text/plain",
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    text(status, format!("{body}\n"), "application/json")
}

fn pipelines_json(state: &HttpState) -> serde_json::Value {
    let pipelines: Vec<serde_json::Value> = state
        .registry
        .pipelines()
        .iter()
        .map(|p| p.to_json())
        .collect();
    let rejected: Vec<serde_json::Value> = state
        .registry
        .rejected()
        .into_iter()
        .map(|(f, why)| serde_json::json!({"file": f.display().to_string(), "problem": why}))
        .collect();
    let disabled: Vec<serde_json::Value> = state
        .registry
        .disabled()
        .into_iter()
        .map(|(f, name)| serde_json::json!({"name": name, "file": f.display().to_string()}))
        .collect();
    serde_json::json!({"pipelines": pipelines, "rejected": rejected, "disabled": disabled})
}

/// `GET /tap/<pipeline>/<component>[?bodies=1]`: one JSON line per event at that component,
/// until the client goes or the daemon stops.
/// Who opened a tap: the bearer token's holder, and the user the command line says runs
/// it (`X-Oscarflow-User`, the OS user of `oscarflow tap`; claimed, not proven).
pub struct Tapper {
    pub token: Option<String>,
    pub claimed: Option<String>,
}

impl Tapper {
    fn actor(&self) -> String {
        let token = match &self.token {
            Some(name) => format!("token {name}"),
            None => "no token (loopback)".to_string(),
        };
        match &self.claimed {
            Some(u) => format!("{token}, {u} (as the tap command says)"),
            None => token,
        }
    }
}

async fn tap(state: &HttpState, rest: &str, query: &str, who: Tapper) -> Response<Body> {
    let Some((pipeline, component)) = rest.split_once('/') else {
        return text(
            StatusCode::NOT_FOUND,
            "use /tap/<pipeline>/<component>\n",
            "text/plain",
        );
    };
    let Some(p) = state.registry.get(pipeline) else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such pipeline"}),
        );
    };
    if !p.components.iter().any(|c| c == component) {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such component", "components": p.components}),
        );
    }
    let bodies = query
        .split('&')
        .any(|kv| kv == "bodies=1" || kv == "bodies=true");
    if bodies && !crate::telemetry::bodies_logged() {
        return json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "bodies are only tapped while the daemon runs with --log-bodies"}),
        );
    }
    if bodies {
        // Message bodies are patient data: the tap is recorded before it opens, in the
        // pipeline's database, or refused.
        let recorded = match state.registry.store_of(pipeline) {
            Some(store) => {
                let mut r = crate::audit::read(
                    who.actor(),
                    format!("tap --bodies of {pipeline}/{component}: message bodies streamed"),
                );
                r.about.pipeline = Some(pipeline.to_string());
                crate::audit::record_read(&store, r).await.is_ok()
            }
            None => false,
        };
        if !recorded {
            tracing::warn!(
                pipeline,
                component,
                "Tap of bodies refused: it could not be recorded in the audit trail."
            );
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": "the tap of bodies could not be recorded in the audit trail; nothing was shown"}),
            );
        }
    }
    tracing::info!(pipeline, component, bodies, "Tap opened.");
    let rx = state.tap.subscribe();
    let filter: (Arc<str>, Arc<str>) = (Arc::from(pipeline), Arc::from(component));
    let stream = futures::stream::unfold(
        (rx, state.shutdown.clone(), filter),
        move |(mut rx, mut shutdown, filter)| async move {
            loop {
                let rec = tokio::select! {
                    _ = shutdown.wait() => return None,
                    r = rx.recv() => r,
                };
                let rec = match rec {
                    Ok(r) => r,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let line = format!(
                            "{}\n",
                            serde_json::json!({"event": "skipped", "records": n})
                        );
                        return Some((
                            Ok(hyper::body::Frame::data(Bytes::from(line))),
                            (rx, shutdown, filter),
                        ));
                    }
                    Err(_) => return None,
                };
                if rec.pipeline != filter.0 || rec.component != filter.1 {
                    continue;
                }
                if rec.body.is_some() && !bodies {
                    continue;
                }
                let mut j = rec.json.clone();
                if let (Some(b), serde_json::Value::Object(m)) = (&rec.body, &mut j) {
                    m.insert(
                        "body".into(),
                        String::from_utf8_lossy(b).into_owned().into(),
                    );
                }
                let line = format!("{j}\n");
                return Some((
                    Ok(hyper::body::Frame::data(Bytes::from(line))),
                    (rx, shutdown, filter),
                ));
            }
        },
    );
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    if let Ok(v) = "application/x-ndjson".parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// `POST /pipelines/<name>/pause|resume|poll`.
fn control(state: &HttpState, rest: &str) -> Response<Body> {
    let Some((name, action)) = rest.rsplit_once('/') else {
        return text(StatusCode::NOT_FOUND, "not found\n", "text/plain");
    };
    let Some(p) = state.registry.get(name) else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such pipeline"}),
        );
    };
    match action {
        "pause" => p.control.pause(),
        "resume" => p.control.resume(),
        "poll" => p.control.poll_now(),
        _ => {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "actions: pause, resume, poll"}),
            )
        }
    }
    tracing::info!(pipeline = %p.name, action, "Control request.");
    json(StatusCode::OK, p.to_json())
}

/// The gauges that are read, not counted: set from the running pipelines at each scrape.
fn record_gauges(registry: &Registry) {
    for p in registry.pipelines() {
        let l = [("pipeline", p.name.clone())];
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        gauge(MetricName::PipelineUp, &l, flag(p.is_running()));
        gauge(MetricName::PipelinePaused, &l, flag(p.control.is_paused()));
        gauge(
            MetricName::DatabaseOutage,
            &l,
            p.control.outage().map_or(0.0, |d| d.as_secs_f64()),
        );
        gauge(MetricName::InputsInFlight, &l, p.in_flight.current() as f64);
        if let Some(b) = &p.budget {
            gauge(MetricName::InputBytesInFlight, &l, b.in_use() as f64);
        }
        gauge(
            MetricName::OldestUnackedAge,
            &l,
            p.in_flight.oldest_age().as_secs_f64(),
        );
        for (component, n) in p.queued() {
            gauge(
                MetricName::EnvelopesQueued,
                &[
                    ("pipeline", p.name.clone()),
                    ("component", component.to_string()),
                ],
                n as f64,
            );
        }
    }
}

async fn readiness(state: &HttpState) -> Response<Body> {
    let problems = problems(state).await;
    let body = serde_json::json!({"ready": problems.is_empty(), "problems": problems});
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, format!("{body}\n"), "application/json")
}

/// Why the daemon is not ready (empty when it is): `/readyz` and the console's banner.
async fn problems(state: &HttpState) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, s) in state.registry.stores().iter().enumerate() {
        let ping = tokio::time::timeout(std::time::Duration::from_secs(2), s.ping()).await;
        if !matches!(ping, Ok(Ok(()))) {
            problems.push(format!("database {i} unreachable"));
        }
    }
    let pipelines = state.registry.pipelines();
    for p in &pipelines {
        problems.extend(p.problems());
    }
    // A pipeline file that never ran (invalid since the start) is a pipeline not running.
    for (file, _) in state.registry.rejected() {
        if !pipelines.iter().any(|p| p.file == file) {
            problems.push(format!(
                "pipeline file {} is invalid and not running",
                file.display()
            ));
        }
    }
    if let Some(a) = &state.alerts {
        problems.extend(a.problems());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_and_length_only() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cret", b"s3creT"));
        assert!(!same_secret(b"s3cret", b"s3cre"));
        assert_eq!(host_of("[::1]:9464"), "::1");
        assert_eq!(host_of("localhost:9464"), "localhost");
        assert_eq!(host_of("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn an_endpoint_off_loopback_needs_a_token() {
        let local: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        assert!(check_exposure(&local, &Tokens::single(None)).is_ok());
        assert!(check_exposure(&public, &Tokens::single(None)).is_err());
        assert!(check_exposure(&public, &Tokens::single(Some(String::new()))).is_err());
        assert!(check_exposure(&public, &Tokens::single(Some("t0ken".into()))).is_ok());
        let named = Tokens::new(vec![
            ("alice".into(), "a-secret".into()),
            ("bob".into(), "b-secret".into()),
        ]);
        assert_eq!(named.who("b-secret"), Some("bob"));
        assert_eq!(named.who("a-secret"), Some("alice"));
        assert_eq!(named.who("a-secre"), None);
        assert!(format!("{named:?}").contains("alice") && !format!("{named:?}").contains("secret"));
    }
}
