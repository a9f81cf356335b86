//! `oscarflow check PATH...`: parse + validate pipeline files and the daemon's config file,
//! no I/O besides reading them. A file whose name starts with `oscarflow.toml` (the daemon's
//! `oscarflow.toml`, its `.example`) is read as the daemon's settings, every other `*.toml`
//! as a pipeline; `--config FILE` names the daemon's file explicitly. Inputs consumed by two
//! sources are reported across all the files given. Certificates the pipelines name (the
//! Excelleris client identity, CA files) that expire within `certificate_warning` (30 days)
//! are warned of, without failing the check.

use std::path::{Path, PathBuf};

/// Arguments of `check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Pipeline files or directories (their *.toml files), and `oscarflow.toml` files.
    #[arg(required_unless_present = "config")]
    pub paths: Vec<PathBuf>,
    /// The daemon's `oscarflow.toml`, checked as well.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Certificates of `pipelines` (and of the daemon's database URL, when it can be read)
/// expiring within the daemon's `certificate_warning`.
fn certificate_warnings(
    pipelines: &[crate::config::PipelineConfig],
    daemon: Option<&PathBuf>,
) -> Vec<String> {
    let cfg = daemon.and_then(|d| crate::config::daemon::DaemonConfig::load(d).ok());
    let warn = cfg
        .as_ref()
        .and_then(|c| c.alerts.as_ref())
        .map_or(crate::alerts::config::DEFAULT_CERTIFICATE_WARNING, |a| {
            a.certificate_warning
        });
    let mut urls: Vec<String> = cfg
        .and_then(|c| c.database_url().ok())
        .into_iter()
        .collect();
    urls.extend(pipelines.iter().filter_map(|p| p.database_url_override()));
    let files = crate::alerts::certs::configured(pipelines, &urls);
    crate::alerts::certs::warnings(&files, warn.as_secs())
}

/// Whether `path` names a daemon config file (`oscarflow.toml`, `oscarflow.toml.example`).
fn is_daemon_config(path: &Path) -> bool {
    path.is_file()
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("oscarflow.toml"))
}

pub fn run(a: CheckArgs) -> i32 {
    let (daemon, pipelines): (Vec<PathBuf>, Vec<PathBuf>) =
        a.paths.iter().cloned().partition(|p| is_daemon_config(p));
    let daemon: Vec<PathBuf> = a.config.iter().cloned().chain(daemon).collect();
    let mut diags = Vec::new();
    for d in &daemon {
        diags.extend(crate::config::daemon::DaemonConfig::check(d));
    }
    let (ok, pipeline_diags) = if pipelines.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        // With the daemon's config file, relative paths resolve as the daemon resolves
        // them: against its state directory. Without one, against the working directory.
        let base = daemon
            .first()
            .and_then(|d| crate::config::daemon::DaemonConfig::load(d).ok())
            .map(|c| super::absolute(&c.state_dir));
        crate::config::load_all_in(&pipelines, base.as_deref())
    };
    diags.extend(pipeline_diags);
    for d in &diags {
        println!("{d}");
    }
    // Warnings only: certificates expiring within `[alerts] certificate_warning` (30 days).
    for w in certificate_warnings(&ok, daemon.first()) {
        println!("{w}");
    }
    if diags.is_empty() {
        for p in ok.iter().filter(|p| !p.settings.enabled) {
            println!(
                "{}: pipeline `{}` is switched off (enabled = false): the daemon will not start it",
                p.path.display(),
                p.name
            );
        }
        if daemon.is_empty() {
            println!("{} pipeline file(s) OK", ok.len());
        } else {
            println!(
                "{} pipeline file(s) and {} daemon config file(s) OK",
                ok.len(),
                daemon.len()
            );
        }
        0
    } else {
        println!("{} problem(s) found", diags.len());
        1
    }
}
