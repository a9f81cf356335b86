//! `oscarflow run`: the daemon. Runs every pipeline in the pipelines directory, and every
//! outbound fax line (`[[fax_outbox]]`) and SMS sender (`[[sms]]`) of the config file, until
//! SIGTERM or SIGINT, then stops intake, drains in-flight work within the grace period and exits 0.
//! Work still in flight when the grace period ends is abandoned safely: its transactions roll
//! back and its inputs stay where they are, to be re-delivered on the next start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::fail;
use crate::config::daemon::DaemonConfig;
use crate::config::load_all;
use crate::store::{redact_url, Store};
use crate::topology::{build, BuildOptions, RunningPipeline};

/// Arguments of `run`. Flags override the config file.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Daemon settings (`oscarflow.toml`). Without it: the embedded store and `pipelines/`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of pipeline files.
    #[arg(long)]
    pub pipelines: Option<PathBuf>,
    /// Database URL; default from the config file or the embedded SQLite store.
    #[arg(long, env = "OSCARFLOW_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// State directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// How long to drain after SIGTERM, e.g. `30s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub grace_period: Option<Duration>,
    /// The HTTP endpoint's address (`/healthz`, `/readyz`, `/metrics`), or `off`
    /// (default `127.0.0.1:9464`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Log as JSON (default: JSON unless stderr is a terminal).
    #[arg(long)]
    pub log_json: Option<bool>,
}

pub async fn run(a: RunArgs) -> i32 {
    let mut cfg = match &a.config {
        Some(p) => match DaemonConfig::load(p) {
            Ok(c) => c,
            Err(e) => return fail(e),
        },
        None => DaemonConfig::default(),
    };
    if let Some(p) = a.pipelines {
        cfg.pipelines_dir = p;
    }
    if let Some(s) = a.state_dir {
        cfg.state_dir = s;
    }
    if let Some(g) = a.grace_period {
        cfg.grace_period = g;
    }
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    // The endpoint's settings are checked, and the metrics recorder installed, before
    // anything records a metric.
    let http = if cfg.listen.trim().eq_ignore_ascii_case("off") {
        None
    } else {
        let addr: std::net::SocketAddr = match cfg.listen.trim().parse() {
            Ok(a) => a,
            Err(_) => {
                return fail(format!(
                    "listen: `{}` is not an address like 127.0.0.1:9464",
                    cfg.listen
                ))
            }
        };
        let token = match &cfg.http_token_env {
            Some(var) => match std::env::var(var) {
                Ok(t) => Some(t),
                Err(_) => {
                    return fail(format!(
                        "environment variable `{var}` (http_token_env) is not set"
                    ))
                }
            },
            None => None,
        };
        if let Err(e) = crate::http::check_exposure(&addr, token.as_deref()) {
            return fail(e);
        }
        let metrics = match crate::http::install_prometheus() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "No /metrics: another metrics recorder is installed.");
                None
            }
        };
        Some((addr, token, metrics))
    };
    let url = match a.database {
        Some(u) => u,
        None => match cfg.database_url() {
            Ok(u) => u,
            Err(e) => return fail(e),
        },
    };
    let (pipelines, diags) = load_all(std::slice::from_ref(&cfg.pipelines_dir));
    for d in &diags {
        tracing::error!(problem = %d, "Invalid pipeline file; it is not started.");
    }
    if pipelines.is_empty() && cfg.fax_outbox.is_empty() && cfg.sms.is_empty() {
        return fail(format!(
            "no valid pipeline in {}",
            cfg.pipelines_dir.display()
        ));
    }
    let mut stores: HashMap<String, Store> = HashMap::new();
    let mut running: Vec<RunningPipeline> = Vec::new();
    for p in &pipelines {
        let purl = p.database_url_override().unwrap_or_else(|| url.clone());
        let store = match stores.get(&purl) {
            Some(s) => s.clone(),
            None => match Store::open(&purl).await {
                Ok(s) => {
                    tracing::info!(database = %redact_url(&purl), "Database open.");
                    stores.insert(purl.clone(), s.clone());
                    s
                }
                Err(e) => return fail(e),
            },
        };
        match build(p, &store, BuildOptions::default()) {
            Ok(r) => {
                tracing::info!(pipeline = %p.name, file = %p.path.display(), "Pipeline started.");
                running.push(r);
            }
            Err(e) => return fail(e),
        }
    }

    let (outbox_stop, outbox_shutdown) = crate::topology::Shutdown::new();
    let mut outboxes = tokio::task::JoinSet::new();
    if !cfg.fax_outbox.is_empty() || !cfg.sms.is_empty() {
        let store = match stores.get(&url) {
            Some(s) => s.clone(),
            None => match Store::open(&url).await {
                Ok(s) => {
                    stores.insert(url.clone(), s.clone());
                    s
                }
                Err(e) => return fail(e),
            },
        };
        for oc in &cfg.fax_outbox {
            match crate::outbound::fax::FaxOutbox::new(oc.clone(), store.clone()) {
                Ok(o) => {
                    tracing::info!(outbox = %oc.name, "Fax outbox started.");
                    let sd = outbox_shutdown.clone();
                    outboxes.spawn(async move { o.run(sd).await });
                }
                Err(e) => return fail(e),
            }
        }
        for sc in &cfg.sms {
            match crate::outbound::sms::SmsOutbox::new(sc.clone(), store.clone()) {
                Ok(o) => {
                    tracing::info!(sms = %sc.name, "SMS sender started.");
                    let sd = outbox_shutdown.clone();
                    outboxes.spawn(async move { o.run(sd).await });
                }
                Err(e) => return fail(e),
            }
        }
    }

    if let Some((addr, token, metrics)) = http {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => return fail(format!("listen on {addr}: {e}")),
        };
        let bound = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(address = %bound, "HTTP endpoint listening (/healthz, /readyz, /metrics).");
        let state = std::sync::Arc::new(crate::http::HttpState {
            stores: stores.values().cloned().collect(),
            metrics,
            token,
        });
        tokio::spawn(crate::http::serve(listener, state, outbox_shutdown.clone()));
    }

    wait_for_signal().await;
    // A fax outbox finishes the fax it is sending (its claim stays valid) and stops.
    outbox_stop.trigger();
    tracing::info!(grace_period = ?cfg.grace_period, "Stopping: intake stopped, draining in-flight messages.");
    let deadline = tokio::time::Instant::now() + cfg.grace_period;
    let mut clean = true;
    for r in &running {
        r.stop_intake();
    }
    for r in &mut running {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !r.shutdown(left).await {
            clean = false;
            tracing::warn!(pipeline = %r.name, "Grace period over; unfinished messages stay for re-delivery.");
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if tokio::time::timeout(left, async {
        while outboxes.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        clean = false;
        outboxes.abort_all();
        tracing::warn!("Grace period over while a fax was being sent; its claim is resumed (looked up first) on the next start.");
    }
    for s in stores.values() {
        s.pool.close().await;
    }
    if clean {
        tracing::info!("Stopped cleanly.");
    }
    0
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
