//! The `oscarflow` command line: `replay`, `check`, `run`, `tap`, `dlq`, `inspect`.
//!
//! Every command takes `--database URL` (or `OSCARFLOW_DATABASE_URL`); without one it uses
//! the embedded SQLite store under `./var/` (or `--state-dir`). Exit codes: 0 success, 1 a
//! problem the user must fix (bad config, fatal error), 2 messages left undelivered.

mod check;
mod dlq;
mod inspect;
mod replay;
pub mod report;
mod run;
mod tap;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The lab pipeline `replay` uses when no `--pipeline` is given: parse, match, import.
pub const DEFAULT_LAB_PIPELINE: &str = r#"
[pipeline]
name = "lab_replay"
channel_capacity = 16

[sources.files]
type = "folder"
path = "."
mode = "once"
after = "keep"

[stages.parse]
type = "parse_hl7"
inputs = ["files"]

[stages.match]
type = "match_patient"
inputs = ["parse"]

[sinks.oscar]
type = "oscar_lab"
inputs = ["match"]
"#;

#[derive(Parser, Debug)]
#[command(
    name = "oscarflow",
    version,
    about = "Lab results and faxes into OSCAR EMR, with nothing lost."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by commands that open the database.
#[derive(clap::Args, Debug, Clone)]
pub struct DbArgs {
    /// Database URL (mysql://… for OSCAR's MariaDB, sqlite://…). Default: the embedded
    /// SQLite store in the state directory.
    #[arg(long, env = "OSCARFLOW_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// State directory (embedded database). Default: the `--config` file's, else `var`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The daemon's `oscarflow.toml`: use its database and state directory, so that an
    /// operator on the server sees the daemon's own dead letters.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl DbArgs {
    /// The database to open: `--database` (or `OSCARFLOW_DATABASE_URL`), else the
    /// `--config` file's, else the embedded store in the state directory.
    pub fn url(&self) -> Result<String, String> {
        if let Some(d) = &self.database {
            return Ok(d.clone());
        }
        match self.daemon_config()? {
            Some(cfg) => cfg.database_url(),
            None => Ok(crate::store::default_sqlite_url(
                self.state_dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new("var")),
            )),
        }
    }

    /// The `--config` file, with `--state-dir` applied over it.
    pub fn daemon_config(&self) -> Result<Option<crate::config::daemon::DaemonConfig>, String> {
        let Some(path) = &self.config else {
            return Ok(None);
        };
        let mut cfg = crate::config::daemon::DaemonConfig::load(path)?;
        if let Some(s) = &self.state_dir {
            cfg.state_dir = s.clone();
        }
        Ok(Some(cfg))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run files or directories through a lab pipeline once and print a report.
    Replay(replay::ReplayArgs),
    /// Load and validate pipeline files without I/O; print every problem as file:line:col.
    Check(check::CheckArgs),
    /// Run every pipeline in the pipelines directory until SIGTERM/SIGINT.
    Run(run::RunArgs),
    /// Show the messages of an HL7 file (type, control id, segments, lab model) or one field.
    Inspect(inspect::InspectArgs),
    /// Print a live sample of the events at one component of the running daemon.
    Tap(tap::TapArgs),
    /// List, show, re-drive and purge dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let json_logs = match &cli.command {
        Command::Run(a) => a.log_json,
        _ => None,
    };
    crate::telemetry::init_logging(json_logs);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            Command::Replay(a) => replay::run(a).await,
            Command::Check(a) => check::run(a),
            Command::Run(a) => run::run(a).await,
            Command::Dlq(c) => dlq::run(c).await,
            Command::Inspect(a) => inspect::run(a),
            Command::Tap(a) => tap::run(a).await,
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

/// Prints an error chain on stderr; returns the exit code 1.
pub(crate) fn fail(e: impl std::fmt::Display) -> i32 {
    eprintln!("error: {e}");
    1
}
