//! `SftpConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use crate::config::duration::deserialize_duration;
use serde::Deserialize;
use serde_spanned::Spanned;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// What happens to a remote file after its messages are committed or dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RemoteAfter {
    /// Delete it from the server.
    #[default]
    Delete,
    /// Move it to `archive_dir` on the server.
    Move,
}

/// `[sources.<id>] type = "sftp"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Environment variable holding the user name.
    pub user_env: Spanned<String>,
    /// Private key file (OpenSSH or PEM format).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// Environment variable holding the private key's passphrase.
    #[serde(default)]
    pub private_key_passphrase_env: Option<Spanned<String>>,
    /// Environment variable holding a password (when no key is used).
    #[serde(default)]
    pub password_env: Option<Spanned<String>>,
    /// `known_hosts` file that pins the server's host key (required).
    pub known_hosts: PathBuf,
    /// Remote directory to read.
    pub remote_dir: String,
    /// Glob on the file name.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    #[serde(default)]
    pub after: RemoteAfter,
    /// Remote directory for `after = "move"`.
    #[serde(default)]
    pub archive_dir: Option<String>,
    /// Local directory for downloads.
    pub spool_dir: PathBuf,
    #[serde(default = "default_poll", deserialize_with = "deserialize_duration")]
    pub poll_interval: Duration,
    /// A file must be at least this old (by its remote modification time, which SFTP gives
    /// in whole seconds) to be taken — besides being unchanged across two listings.
    #[serde(default = "default_min_age", deserialize_with = "deserialize_duration")]
    pub min_age: Duration,
    /// How long a file whose import failed waits before it is offered again.
    #[serde(default = "default_retry", deserialize_with = "deserialize_duration")]
    pub retry_after: Duration,
    /// Upper bound of the reconnect backoff.
    #[serde(
        default = "default_max_backoff",
        deserialize_with = "deserialize_duration"
    )]
    pub max_backoff: Duration,
    /// Network timeout of each operation.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// A spooled file larger than this is not read into memory: it is dead-lettered from
    /// the spool (`too_large`) and released on the server. Default 64 MiB.
    #[serde(default = "crate::sources::oversize::default_max_input_bytes")]
    pub max_input_bytes: usize,
}

fn default_port() -> u16 {
    22
}
fn default_pattern() -> String {
    "*".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_min_age() -> Duration {
    Duration::from_secs(2)
}
fn default_retry() -> Duration {
    Duration::from_secs(300)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

impl SftpConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = Vec::new();
        if glob::Pattern::new(&self.pattern).is_err() {
            v.push((
                format!("pattern `{}` is not a valid glob", self.pattern),
                None,
            ));
        }
        if self.private_key.is_none() && self.password_env.is_none() {
            v.push(("set private_key or password_env".into(), None));
        }
        if self.after == RemoteAfter::Move && self.archive_dir.is_none() {
            v.push(("after = \"move\" needs archive_dir".into(), None));
        }
        if self.poll_interval.is_zero() {
            v.push(("poll_interval must be above zero".into(), None));
        }
        v
    }

    pub(crate) fn env_refs(&self) -> Vec<(&'static str, &Spanned<String>)> {
        let mut v = vec![("user_env", &self.user_env)];
        if let Some(p) = &self.password_env {
            v.push(("password_env", p));
        }
        if let Some(p) = &self.private_key_passphrase_env {
            v.push(("private_key_passphrase_env", p));
        }
        v
    }
}
