//! `oscarflow run`: the daemon. Runs every pipeline in the pipelines directory (outbound fax
//! lines and text messages among them), until
//! SIGTERM or SIGINT, then stops intake, drains in-flight work within the grace period and exits 0.
//! Work still in flight when the grace period ends is abandoned safely: its transactions roll
//! back and its inputs stay where they are, to be re-delivered on the next start.

use std::path::PathBuf;
use std::time::Duration;

use super::fail;
use crate::config::daemon::DaemonConfig;
use crate::topology::{BuildOptions, Supervisor};

/// Arguments of `run`. Flags override the config file.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Daemon settings (`oscarflow.toml`). Without it: the embedded store and `pipelines/`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of pipeline files.
    #[arg(long)]
    pub pipelines: Option<PathBuf>,
    /// Database URL; default from the config file or the embedded SQLite store. A password
    /// here is visible to every user of the machine: prefer --database-env or
    /// OSCARFLOW_DATABASE_URL.
    #[arg(long, env = "OSCARFLOW_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Read the database URL from this environment variable (keeps the password off the
    /// command line). Wins over OSCARFLOW_DATABASE_URL and the config file.
    #[arg(long, value_name = "VAR")]
    pub database_env: Option<String>,
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
    /// DEBUGGING ONLY: write message bodies (patient information) to the logs at debug
    /// level. Logged loudly when on.
    #[arg(long, env = "OSCARFLOW_LOG_BODIES")]
    pub log_bodies: bool,
}

pub async fn run(a: RunArgs) -> i32 {
    crate::telemetry::set_log_bodies(a.log_bodies);
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
    if let Some((_, problem)) = cfg.problems().into_iter().next() {
        return fail(problem);
    }
    // Idle clients must meet the listeners' caps, not the process's descriptor limit.
    match crate::conn_limit::raise_open_files_limit() {
        Ok((soft, hard)) => tracing::debug!(soft, hard, "Open-file limit."),
        Err(e) => tracing::warn!(error = %e, "Could not raise the open-file limit."),
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
                    return fail(if crate::secrets::is_variable_name(var) {
                        format!("environment variable `{var}` (http_token_env) is not set")
                    } else {
                        format!("http_token_env: {}", crate::secrets::unset(var))
                    })
                }
            },
            None => None,
        };
        let mut pairs: Vec<(String, String)> = token
            .map(|t| (cfg.http_token_name.clone(), t))
            .into_iter()
            .collect();
        for (name, var) in &cfg.http_tokens {
            match std::env::var(var) {
                Ok(t) => pairs.push((name.clone(), t)),
                Err(_) => {
                    return fail(format!(
                        "http_tokens.{name}: {}",
                        crate::secrets::unset(var)
                    ))
                }
            }
        }
        let token = crate::http::Tokens::new(pairs);
        if cfg.control_without_token && !addr.ip().is_loopback() {
            return fail(format!(
                "control_without_token is only allowed on loopback, not on {addr}"
            ));
        }
        if let Err(e) = crate::http::check_exposure(&addr, &token) {
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
    let url = match (&a.database_env, a.database) {
        (Some(var), _) => super::url_from_env(var),
        (None, Some(u)) => Ok(u),
        (None, None) => cfg.database_url(),
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let tap = crate::telemetry::tap::TapHub::new();
    // Alerts: notifiers set up (their secrets read) before anything runs.
    let alerts = match cfg.alerts.as_ref().map(crate::alerts::Alerts::new) {
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => return fail(e),
        None => None,
    };
    let mut observers = crate::telemetry::Observers::none().with(tap.clone());
    if let Some(a) = &alerts {
        observers = observers.with(a.observer());
    }
    let sup = Supervisor::new(
        cfg.pipelines_dir.clone(),
        url.clone(),
        cfg.grace_period,
        BuildOptions {
            observers,
            ..BuildOptions::default()
        },
    );
    // Relative paths in pipeline files mean the same under systemd (working directory
    // `/`) as in a terminal: they are under the state directory.
    let state_dir = super::absolute(&cfg.state_dir);
    let mut sup = sup
        .with_restart_backoff(crate::topology::RestartBackoff {
            initial: cfg.restart_backoff,
            max: cfg.restart_backoff_max,
        })
        .with_paths_relative_to(state_dir.clone());
    if let Err(e) = sup.reconcile().await {
        return fail(e);
    }
    if sup.running_count() == 0 {
        let disabled = sup.registry.disabled().len();
        return fail(if disabled > 0 {
            format!(
                "no pipeline to run in {}: {disabled} valid pipeline file(s) there say `enabled = false`",
                cfg.pipelines_dir.display()
            )
        } else {
            format!("no valid pipeline in {}", cfg.pipelines_dir.display())
        });
    }
    // Edits to the pipelines directory (and SIGHUP) reload the pipelines that changed.
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _watcher = watch_dir(&cfg.pipelines_dir, reload_tx.clone());

    // The console's "restart" of one pipeline.
    let (restart_tx, mut restart_rx) = tokio::sync::mpsc::unbounded_channel::<String>();

    // Ends open taps and the HTTP endpoint when the daemon stops.
    let (http_stop, http_shutdown) = crate::shutdown::Shutdown::new();

    let alert_health = alerts.as_ref().map(|a| a.health());
    if let Some(a) = alerts {
        a.spawn(
            crate::alerts::Context {
                registry: sup.registry.clone(),
                pipelines_dir: cfg.pipelines_dir.clone(),
                state_dir: state_dir.clone(),
                database_url: url.clone(),
                listen: cfg.listen.clone(),
            },
            http_shutdown.clone(),
        );
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
            metrics,
            tokens: token,
            control_without_token: cfg.control_without_token,
            registry: sup.registry.clone(),
            tap: tap.clone(),
            shutdown: http_shutdown.clone(),
            max_connections: cfg.http_max_connections,
            header_timeout: cfg.http_header_timeout,
            console: crate::http::console::Console::new(),
            redrive: Some(console_redrive(
                cfg.pipelines_dir.clone(),
                state_dir.clone(),
            )),
            restart: Some(restart_tx.clone()),
            alerts: alert_health,
        });
        tokio::spawn(crate::http::serve(listener, state, http_shutdown.clone()));
    }

    // The journal keeps `journal_retention`: pruned now and every hour.
    let mut prune_every = tokio::time::interval(Duration::from_secs(3600));
    let retention = cfg.journal_retention;

    let mut signals = Signals::new();
    loop {
        tokio::select! {
            s = signals.next() => match s {
                Signal::Stop => break,
                Signal::Reload => { let _ = reload_tx.send(()); }
            },
            _ = prune_every.tick() => {
                let stores = sup.stores();
                tokio::spawn(prune_journal(stores, retention));
            }
            Some(name) = restart_rx.recv() => {
                if sup.restart_on_reconcile(&name) {
                    tracing::info!(pipeline = %name, "Restarting the pipeline on request.");
                    if let Err(e) = sup.reconcile().await {
                        tracing::error!(error = %e, "Restarting the pipeline failed.");
                    }
                }
            }
            _ = sup.restart_wanted() => {
                let n = sup.restart_due().await;
                if n > 0 {
                    tracing::info!(restarted = n, running = sup.running_count(), "Pipelines started again after a fatal stop.");
                }
            }
            r = reload_rx.recv() => {
                if r.is_none() {
                    continue;
                }
                // Let a burst of events (an editor's write, rename, chmod) settle first.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while reload_rx.try_recv().is_ok() {}
                match sup.reconcile().await {
                    Ok(n) => tracing::info!(restarted = n, running = sup.running_count(), "Pipelines directory re-read."),
                    Err(e) => tracing::error!(error = %e, "Reloading the pipelines failed; running pipelines kept."),
                }
            }
        }
    }
    http_stop.trigger();
    tracing::info!(grace_period = ?cfg.grace_period, "Stopping: intake stopped, draining in-flight messages.");
    let deadline = tokio::time::Instant::now() + cfg.grace_period;
    let clean = sup.stop_all(deadline).await;
    for s in sup.stores() {
        s.pool.close().await;
    }
    if clean {
        tracing::info!("Stopped cleanly.");
    }
    0
}

/// The console's re-drive: `dlq retry`'s, with the daemon's pipelines directory and state
/// directory.
fn console_redrive(
    pipelines: std::path::PathBuf,
    base: std::path::PathBuf,
) -> crate::http::Redrive {
    std::sync::Arc::new(move |store, targets| {
        let (pipelines, base) = (pipelines.clone(), base.clone());
        Box::pin(async move {
            super::dlq::redrive(&store, targets, &pipelines, Some(&base))
                .await
                .0
        })
    })
}

/// Deletes journal rows older than `retention` from every store the daemon writes.
async fn prune_journal(stores: Vec<crate::store::Store>, retention: Duration) {
    let cutoff = chrono::Local::now()
        - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(400));
    let before = cutoff.format("%Y-%m-%d %H:%M:%S").to_string();
    for s in stores {
        match crate::journal::prune(&s, &before).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(rows = n, before = %before, "Journal rows past journal_retention deleted.")
            }
            Err(e) => {
                tracing::warn!(error = %crate::error::describe_sqlx(&e), "Pruning the journal failed; trying again in an hour.")
            }
        }
    }
}

/// Watches `dir` for changes; each event sends a reload request. None (logged) when the
/// platform's watcher cannot start: SIGHUP still reloads.
fn watch_dir(
    dir: &std::path::Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut w = match notify::recommended_watcher(move |r: notify::Result<notify::Event>| {
        if r.is_ok() {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot watch the pipelines directory; reload with SIGHUP.");
            return None;
        }
    };
    if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, "Cannot watch the pipelines directory; reload with SIGHUP.");
        return None;
    }
    Some(w)
}

enum Signal {
    Stop,
    Reload,
}

/// SIGTERM/SIGINT (stop) and SIGHUP (reload), registered once at start so that a signal
/// arriving while a reload runs is not lost.
#[cfg(unix)]
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }
    async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        if self.term.is_none() && self.int.is_none() {
            let _ = tokio::signal::ctrl_c().await;
            return Signal::Stop;
        }
        tokio::select! {
            _ = recv(&mut self.term) => Signal::Stop,
            _ = recv(&mut self.int) => Signal::Stop,
            _ = recv(&mut self.hup) => Signal::Reload,
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> Self {
        Signals
    }
    async fn next(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}
