//! `oscarflow tap PIPELINE COMPONENT`: prints a live sample of the events at one component
//! of a running daemon, one JSON object per line (ids, provenance, sizes, outcomes). Bodies
//! only with `--bodies`, and only when the daemon runs with `--log-bodies`.

use std::io::Write;

use super::fail;

#[derive(clap::Args, Debug)]
pub struct TapArgs {
    /// Pipeline name (see `GET /pipelines`).
    pub pipeline: String,
    /// Component id in the pipeline file (a source, stage or sink).
    pub component: String,
    /// The daemon's HTTP endpoint. Default: the `--config` file's `listen`, else
    /// `http://127.0.0.1:9464`.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Environment variable holding the endpoint's bearer token (when it is not on loopback).
    /// Default: the `--config` file's `http_token_env`.
    #[arg(long)]
    pub token_env: Option<String>,
    /// The daemon's `oscarflow.toml`: its listen address and token variable.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Include message bodies (PHI; the daemon must run with --log-bodies).
    #[arg(long)]
    pub bodies: bool,
}

pub async fn run(mut a: TapArgs) -> i32 {
    if let Some(path) = &a.config {
        let cfg = match crate::config::daemon::DaemonConfig::load(path) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        if a.endpoint.is_none() && cfg.listen != "off" {
            a.endpoint = Some(format!("http://{}", cfg.listen));
        }
        if a.token_env.is_none() {
            a.token_env = cfg.http_token_env;
        }
    }
    let endpoint = a
        .endpoint
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9464".to_string());
    let url = format!(
        "{}/tap/{}/{}{}",
        endpoint.trim_end_matches('/'),
        a.pipeline,
        a.component,
        if a.bodies { "?bodies=1" } else { "" }
    );
    let client = reqwest::Client::new();
    // The daemon records a tap of bodies in its audit trail: under the token's holder, and
    // the OS user running this command (as this command says).
    let mut req = client
        .get(&url)
        .header("x-oscarflow-user", crate::audit::os_user());
    if let Some(var) = &a.token_env {
        match std::env::var(var) {
            Ok(t) => req = req.bearer_auth(t),
            Err(_) => return fail(crate::secrets::unset(var)),
        }
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return fail(format!(
                "cannot reach the daemon at {}: {}",
                endpoint,
                crate::sources::pull::describe_reqwest(&e)
            ))
        }
    };
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return fail(format!("{status}: {}", body.trim()));
    }
    let mut out = std::io::stdout().lock();
    let mut pending: Vec<u8> = Vec::new();
    let mut seen = 0u64;
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = tokio::signal::ctrl_c() => return 0,
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => return 0, // the daemon stopped
            Err(e) => {
                return fail(format!(
                    "tap ended: {}",
                    crate::sources::pull::describe_reqwest(&e)
                ))
            }
        };
        pending.extend_from_slice(&chunk);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            if out.write_all(&line).and_then(|_| out.flush()).is_err() {
                return 0; // stdout closed (piped into head)
            }
            seen += 1;
            if a.count.is_some_and(|n| seen >= n) {
                return 0;
            }
        }
    }
}
