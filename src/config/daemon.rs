//! `oscarflow.toml`: the daemon's own settings ([`DaemonConfig`]).
//!
//! Command-line flags override the file; with no file and no flags the daemon runs on the
//! embedded SQLite store under `./var/`. Secrets never appear inline: the database URL may
//! be named by `database_url_env`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::deserialize_duration;

/// Settings of the daemon process.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Environment variable that holds the database URL (`mysql://…` for OSCAR's MariaDB,
    /// `sqlite://…`). Preferred over `database_url` because URLs carry passwords.
    pub database_url_env: Option<String>,
    /// A database URL without a password (e.g. a socket login); `database_url_env` wins.
    pub database_url: Option<String>,
    /// Directory of pipeline files.
    pub pipelines_dir: PathBuf,
    /// Directory for state: the embedded database, spool files.
    pub state_dir: PathBuf,
    /// How long a stopping daemon waits for in-flight messages before it gives up on them
    /// (they stay unacknowledged and are re-delivered on the next start).
    #[serde(deserialize_with = "deserialize_duration")]
    pub grace_period: Duration,
    /// The HTTP endpoint (`/healthz`, `/readyz`, `/metrics`): an address, or `off`.
    pub listen: String,
    /// Environment variable holding the bearer token the endpoint requires; needed when
    /// `listen` is not a loopback address.
    pub http_token_env: Option<String>,
    /// The name the audit trail gives whoever uses `http_token_env`'s token (default
    /// `operator`).
    pub http_token_name: String,
    /// More bearer tokens, one per person: `name = "ENV_VAR"` (the variable holds the
    /// token). Each works as `http_token_env`'s does; the audit trail names who revealed
    /// or tapped patient data by this name.
    pub http_tokens: std::collections::BTreeMap<String, String>,
    /// Allow the endpoint's state-changing requests (pause, resume, poll) without the bearer
    /// token. Only on loopback; off by default.
    pub control_without_token: bool,
    /// The endpoint's connection cap (default 256). At the cap the endpoint keeps
    /// accepting: the longest-idle connection (no request in progress) gives way to the new
    /// one; when every connection has a request in progress (open taps), the new one is
    /// closed at once. Keep it well under the process's open-file limit (`LimitNOFILE`).
    pub http_max_connections: usize,
    /// A connection must deliver a whole request head within this long of connecting, or of
    /// the previous answer on a kept-alive connection (default 10 s); it is closed otherwise.
    /// This is both the header-read timeout and the idle keep-alive limit.
    #[serde(deserialize_with = "deserialize_duration")]
    pub http_header_timeout: Duration,
    /// A pipeline stopped by a fatal error (a missing OSCAR table, an unusable folder) is
    /// started again by itself after this long (default 5 s), doubled at each stop that
    /// follows…
    #[serde(deserialize_with = "deserialize_duration")]
    pub restart_backoff: Duration,
    /// …up to this long (default 5 min). A pipeline that ran this long before it stopped
    /// starts again from `restart_backoff`.
    #[serde(deserialize_with = "deserialize_duration")]
    pub restart_backoff_max: Duration,
    /// How long the message journal keeps its rows (default 400 days, so that a year's
    /// questions can be answered); the daemon prunes older rows at start and every hour.
    #[serde(deserialize_with = "deserialize_duration")]
    pub journal_retention: Duration,
    /// `[alerts]`: rules and notifiers (e-mail, webhook, SMS); none without the table.
    pub alerts: Option<crate::alerts::AlertsConfig>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            database_url_env: None,
            database_url: None,
            pipelines_dir: PathBuf::from("pipelines"),
            state_dir: PathBuf::from("var"),
            grace_period: Duration::from_secs(30),
            listen: "127.0.0.1:9464".into(),
            http_token_env: None,
            http_token_name: "operator".into(),
            http_tokens: Default::default(),
            control_without_token: false,
            http_max_connections: 256,
            http_header_timeout: Duration::from_secs(10),
            restart_backoff: Duration::from_secs(5),
            restart_backoff_max: Duration::from_secs(300),
            journal_retention: Duration::from_secs(400 * 86_400),
            alerts: None,
        }
    }
}

impl DaemonConfig {
    /// Reads `path`. Errors carry the file name and TOML position, never values.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if let Some(r) = super::legacy::retired_tables(&text).first() {
            let (line, col) = super::diagnostics::line_col(&text, r.offset);
            return Err(format!("{}:{line}:{col}: {}", path.display(), r.message()));
        }
        toml_edit::de::from_str(&text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|s| super::diagnostics::line_col(&text, s.start))
                .unwrap_or((1, 1));
            format!("{}:{line}:{col}: {}", path.display(), e.message())
        })
    }

    /// Settings out of range: `(key, problem)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if self.http_max_connections == 0 {
            v.push((
                "http_max_connections",
                "http_max_connections must be at least 1".to_string(),
            ));
        }
        if self.restart_backoff.is_zero() {
            v.push((
                "restart_backoff",
                "restart_backoff must be above zero".to_string(),
            ));
        }
        if self.restart_backoff_max < self.restart_backoff {
            v.push((
                "restart_backoff_max",
                "restart_backoff_max must not be below restart_backoff".to_string(),
            ));
        }
        if self.journal_retention < Duration::from_secs(86_400) {
            v.push((
                "journal_retention",
                "journal_retention must be at least 1 day".to_string(),
            ));
        }
        for name in std::iter::once(&self.http_token_name).chain(self.http_tokens.keys()) {
            if !crate::http::token_name_ok(name) {
                v.push((
                    "http_tokens",
                    "a token's name must be 1 to 40 letters, digits, `.`, `_`, `-` or `@`"
                        .to_string(),
                ));
            }
        }
        if self.http_tokens.contains_key(&self.http_token_name) {
            v.push((
                "http_tokens",
                "a token in http_tokens has the name http_token_name gives http_token_env's"
                    .to_string(),
            ));
        }
        if self.http_header_timeout.is_zero() {
            v.push((
                "http_header_timeout",
                "http_header_timeout must be above zero".to_string(),
            ));
        }
        v
    }

    /// The database URL to use: the environment variable, the inline URL, or the embedded
    /// SQLite file under the state directory.
    pub fn database_url(&self) -> Result<String, String> {
        if let Some(var) = &self.database_url_env {
            return std::env::var(var).map_err(|_| {
                if crate::secrets::is_variable_name(var) {
                    format!("environment variable `{var}` (database_url_env) is not set")
                } else {
                    format!("database_url_env: {}", crate::secrets::unset(var))
                }
            });
        }
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        Ok(crate::store::default_sqlite_url(&self.state_dir))
    }
}

/// 1-based position of the first line that sets `key` (`key =`), else of the file start.
fn key_position(text: &str, key: &str) -> (usize, usize) {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return super::diagnostics::line_col(text, offset + (line.len() - t.len()));
        }
        offset += line.len();
    }
    (1, 1)
}

impl DaemonConfig {
    /// `oscarflow check` of a daemon config file: parse, then every setting that the daemon
    /// would refuse at start — unset secret variables, an endpoint off loopback without a
    /// token, invalid outbound workers, two workers on one fax line — each at its position.
    pub fn check(path: &Path) -> Vec<super::Diagnostic> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return vec![super::Diagnostic {
                    path: path.to_path_buf(),
                    line: 1,
                    col: 1,
                    message: format!("error: cannot read: {e}"),
                }]
            }
        };
        let retired = super::legacy::retired_tables(&text);
        if !retired.is_empty() {
            return retired
                .iter()
                .map(|r| {
                    let (line, col) = super::diagnostics::line_col(&text, r.offset);
                    super::Diagnostic {
                        path: path.to_path_buf(),
                        line,
                        col,
                        message: format!("error: {}", r.message()),
                    }
                })
                .collect();
        }
        let cfg: DaemonConfig = match toml_edit::de::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                let (line, col) = e
                    .span()
                    .map(|s| super::diagnostics::line_col(&text, s.start))
                    .unwrap_or((1, 1));
                return vec![super::Diagnostic {
                    path: path.to_path_buf(),
                    line,
                    col,
                    message: format!("error: {}", e.message()),
                }];
            }
        };
        let mut out = Vec::new();
        let mut err = |(line, col): (usize, usize), message: String| {
            out.push(super::Diagnostic {
                path: path.to_path_buf(),
                line,
                col,
                message: format!("error: {message}"),
            })
        };
        let unset = |var: &str| std::env::var_os(var).is_none();
        for (key, var) in [
            ("database_url_env", &cfg.database_url_env),
            ("http_token_env", &cfg.http_token_env),
        ] {
            if let Some(v) = var.as_deref().filter(|v| unset(v)) {
                err(
                    key_position(&text, key),
                    format!("{key}: {}", crate::secrets::unset(v)),
                );
            }
        }
        for (name, var) in &cfg.http_tokens {
            if unset(var) {
                err(
                    key_position(&text, "http_tokens"),
                    format!("http_tokens.{name}: {}", crate::secrets::unset(var)),
                );
            }
        }
        for (key, problem) in cfg.problems() {
            err(key_position(&text, key), problem);
        }
        if let Some(a) = &cfg.alerts {
            for (key, var) in a.env_refs().iter().filter(|(_, v)| unset(v)) {
                err(
                    key_position(&text, key),
                    format!("alerts: {key}: {}", crate::secrets::unset(var)),
                );
            }
            for (key, problem) in a.problems() {
                err(key_position(&text, key), problem);
            }
        }
        if cfg.listen != "off" {
            match cfg.listen.parse::<std::net::SocketAddr>() {
                Err(_) => err(
                    key_position(&text, "listen"),
                    "listen: not an address (`127.0.0.1:9464`) nor `off`".into(),
                ),
                Ok(a)
                    if !a.ip().is_loopback()
                        && cfg.http_token_env.is_none()
                        && cfg.http_tokens.is_empty() =>
                {
                    err(
                    key_position(&text, "listen"),
                    "listen: off loopback the endpoint needs a bearer token: set http_token_env"
                        .into(),
                    )
                }
                Ok(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_config_reads_every_field_and_rejects_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("oscarflow.toml");
        std::fs::write(
            &p,
            "database_url_env = \"OSCARFLOW_TEST_DB_URL_FOR_CONFIG\"\npipelines_dir = \"/etc/oscarflow/pipelines\"\nstate_dir = \"/var/lib/oscarflow\"\ngrace_period = \"45s\"\n",
        )
        .unwrap();
        let c = DaemonConfig::load(&p).unwrap();
        assert_eq!(c.grace_period, Duration::from_secs(45));
        assert_eq!(c.pipelines_dir, PathBuf::from("/etc/oscarflow/pipelines"));
        assert!(c
            .database_url()
            .unwrap_err()
            .contains("OSCARFLOW_TEST_DB_URL_FOR_CONFIG"));
        std::fs::write(&p, "state_dir = \"x\"\ncolour = 1\n").unwrap();
        let e = DaemonConfig::load(&p).unwrap_err();
        assert!(e.contains(":2:1:") && e.contains("colour"), "{e}");
    }

    #[test]
    fn endpoint_limits_have_defaults_and_zero_is_refused_at_its_line() {
        let d = DaemonConfig::default();
        assert_eq!(d.http_max_connections, 256);
        assert_eq!(d.http_header_timeout, Duration::from_secs(10));
        assert!(d.problems().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("oscarflow.toml");
        std::fs::write(
            &p,
            "state_dir = \"x\"\nhttp_max_connections = 0\nhttp_header_timeout = \"0s\"\n",
        )
        .unwrap();
        let c = DaemonConfig::load(&p).unwrap();
        assert_eq!(c.problems().len(), 2);
        let diags = DaemonConfig::check(&p);
        assert!(
            diags
                .iter()
                .any(|d| d.line == 2 && d.message.contains("http_max_connections")),
            "{diags:?}"
        );
        assert!(
            diags
                .iter()
                .any(|d| d.line == 3 && d.message.contains("http_header_timeout")),
            "{diags:?}"
        );
    }

    #[test]
    fn without_a_url_the_embedded_store_is_used() {
        let c = DaemonConfig::default();
        assert_eq!(c.database_url().unwrap(), "sqlite://var/oscarflow.db");
    }
}
