//! The `oscarflow` command line: `replay`, `check`, `run`, `tap`, `dlq`, `inspect`, `audit`.
//!
//! Every command that opens the database takes `--database-env VAR` (the URL is read from
//! that environment variable), `OSCARFLOW_DATABASE_URL`, or `--database URL`; without one it
//! uses the embedded SQLite store under `./var/` (or `--state-dir`). A password given with
//! `--database` on the command line is readable by every user of the machine
//! (`/proc/PID/cmdline`, `ps`): it works, with a warning on stderr. Exit codes: 0 success,
//! 1 a problem the user must fix (bad config, fatal error), 2 messages left undelivered.

mod audit;
mod check;
pub(crate) mod dlq;
mod inspect;
mod replay;
pub mod report;
mod run;
mod tap;

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

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
    /// SQLite store in the state directory. A password here is visible to every user of the
    /// machine: prefer --database-env or OSCARFLOW_DATABASE_URL.
    #[arg(long, env = "OSCARFLOW_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Read the database URL from this environment variable (keeps the password off the
    /// command line). Wins over OSCARFLOW_DATABASE_URL.
    #[arg(long, value_name = "VAR")]
    pub database_env: Option<String>,
    /// State directory (embedded database). Default: the `--config` file's, else `var`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The daemon's `oscarflow.toml`: use its database and state directory, so that an
    /// operator on the server sees the daemon's own dead letters.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl DbArgs {
    /// The database to open: `--database-env`'s variable, else `--database` (or
    /// `OSCARFLOW_DATABASE_URL`), else the `--config` file's, else the embedded store in the
    /// state directory.
    pub fn url(&self) -> Result<String, String> {
        if let Some(var) = &self.database_env {
            return url_from_env(var);
        }
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
    /// Read and verify the audit trail (every OSCAR row written, every read of patient data).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// The database URL held by the environment variable `var` (`--database-env`).
pub(crate) fn url_from_env(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(u) if !u.trim().is_empty() => Ok(u.trim().to_string()),
        _ if crate::secrets::is_variable_name(var) => Err(format!(
            "--database-env: environment variable `{var}` is not set"
        )),
        _ => Err(format!("--database-env: {}", crate::secrets::unset(var))),
    }
}

/// Whether a database URL carries a password (`scheme://user:password@…`).
pub(crate) fn url_has_password(url: &str) -> bool {
    let Some(s) = url.find("://") else {
        return false;
    };
    let rest = &url[s + 3..];
    rest.rfind('@').is_some_and(|at| rest[..at].contains(':'))
}

/// The subcommand's own matches (the innermost one: `dlq list` → `list`).
fn innermost(m: &ArgMatches) -> &ArgMatches {
    match m.subcommand() {
        Some((_, sub)) => innermost(sub),
        None => m,
    }
}

/// Checks `--database`/`--database-env` as typed: both at once is an error; a password in
/// `--database` on the command line (not from `OSCARFLOW_DATABASE_URL`) is a warning on
/// stderr, which names the URL only up to its user.
fn check_database_flags(matches: &ArgMatches) -> Result<(), String> {
    let m = innermost(matches);
    let has = |id: &str| m.ids().any(|i| i.as_str() == id);
    let from_command_line =
        has("database") && m.value_source("database") == Some(ValueSource::CommandLine);
    if !from_command_line {
        return Ok(());
    }
    if has("database_env") {
        return Err("give either --database or --database-env, not both".into());
    }
    if let Some(url) = m.get_one::<String>("database") {
        if url_has_password(url) {
            eprintln!(
                "warning: --database {} carries a password on the command line, where every user of this machine can read it (ps, /proc/PID/cmdline); put the URL in an environment variable and pass --database-env VAR, or set OSCARFLOW_DATABASE_URL",
                crate::store::redact_url(url)
            );
        }
    }
    Ok(())
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let matches = Cli::command().get_matches();
    if let Err(e) = check_database_flags(&matches) {
        return fail(e);
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let json_logs = match &cli.command {
        Command::Run(a) => a.log_json,
        _ => None,
    };
    let level = crate::telemetry::default_log_level(
        matches!(cli.command, Command::Replay(_)),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    crate::telemetry::init_logging(json_logs, level);
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
            Command::Inspect(a) => inspect::run(a).await,
            Command::Audit(c) => audit::run(c).await,
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

/// `p` made absolute against the working directory at start (the state directory, which
/// relative paths in pipeline files are under).
pub(crate) fn absolute(p: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_database_url_is_recognised_and_a_user_alone_is_not() {
        assert!(url_has_password("mysql://oscar:pw@db/oscar"));
        assert!(url_has_password("mysql://oscar:p@ss@db/oscar"));
        assert!(!url_has_password("mysql://oscar@db/oscar"));
        assert!(!url_has_password("mysql://db/oscar"));
        assert!(!url_has_password("sqlite://var/oscarflow.db"));
        assert!(!url_has_password("not a url"));
    }
}
