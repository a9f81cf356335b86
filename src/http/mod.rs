//! The daemon's HTTP endpoint for ops: `/healthz` (the process answers), `/readyz` (every
//! database reachable) and `/metrics` (Prometheus text, rendered by
//! `metrics-exporter-prometheus` from everything oscarflow records through `metrics`).
//!
//! Bound to loopback by default. On any other address a bearer token is required (read from
//! the environment variable `token_env` names); the daemon refuses to start without one.
//! Answers carry no PHI: states, counts and metric names only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::store::Store;
use crate::topology::Shutdown;

/// What the endpoint reports on.
pub struct HttpState {
    /// The databases the daemon writes to (pinged by `/readyz`).
    pub stores: Vec<Store>,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// `Authorization: Bearer <token>` required when set.
    pub token: Option<String>,
}

/// Installs the Prometheus recorder as the process's `metrics` recorder.
pub fn install_prometheus() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics recorder: {e}"))
}

/// Checks the listen address and token: a non-loopback address needs a token.
pub fn check_exposure(addr: &SocketAddr, token: Option<&str>) -> Result<(), String> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(format!(
            "the HTTP endpoint on {addr} is reachable from outside this machine: set `http_token_env` to a variable holding a bearer token, or listen on 127.0.0.1"
        ));
    }
    Ok(())
}

/// Serves until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, mut shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            a = listener.accept() => a,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>, content_type: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(state: &HttpState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(token) = state.token.as_deref() {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token) {
            return text(StatusCode::UNAUTHORIZED, "unauthorized\n", "text/plain");
        }
    }
    if req.method() != hyper::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n", "text/plain");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" => readiness(state).await,
        "/metrics" => match &state.metrics {
            Some(h) => text(StatusCode::OK, h.render(), "text/plain; version=0.0.4"),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics recorder not installed\n",
                "text/plain",
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

async fn readiness(state: &HttpState) -> Response<Full<Bytes>> {
    let mut problems = Vec::new();
    for (i, s) in state.stores.iter().enumerate() {
        let ping = tokio::time::timeout(std::time::Duration::from_secs(5), s.ping()).await;
        if !matches!(ping, Ok(Ok(()))) {
            problems.push(format!("database {i} unreachable"));
        }
    }
    let body = serde_json::json!({"ready": problems.is_empty(), "problems": problems});
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, format!("{body}\n"), "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_off_loopback_needs_a_token() {
        let local: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        assert!(check_exposure(&local, None).is_ok());
        assert!(check_exposure(&public, None).is_err());
        assert!(check_exposure(&public, Some("")).is_err());
        assert!(check_exposure(&public, Some("t0ken")).is_ok());
    }
}
