//! `FolderConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use crate::config::duration::deserialize_duration;
use serde::Deserialize;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// How the folder is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FolderMode {
    /// Watch the folder until shutdown (the daemon).
    #[default]
    Watch,
    /// Scan once and end (replay).
    Once,
}

/// What happens to a file after its messages are committed or dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AfterCommit {
    /// Move it to `processed_dir`.
    #[default]
    Move,
    /// Delete it.
    Delete,
    /// Leave it (replays of fixtures; the sink's duplicate check keeps re-reads harmless).
    Keep,
}

/// `[sources.<id>] type = "folder"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    /// The directory to read.
    pub path: PathBuf,
    /// Glob on the file name (`*.hl7`, `*.{hl7,xml}` is not supported: use `*`).
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// Descend into subdirectories.
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub mode: FolderMode,
    #[serde(default)]
    pub after: AfterCommit,
    /// Where `after = "move"` puts files; default `<path>/processed`.
    #[serde(default)]
    pub processed_dir: Option<PathBuf>,
    /// A file is complete when unchanged for this long.
    #[serde(default = "default_min_age", deserialize_with = "deserialize_duration")]
    pub min_age: Duration,
    /// Rescan interval in `watch` mode.
    #[serde(default = "default_poll", deserialize_with = "deserialize_duration")]
    pub poll_interval: Duration,
    /// How long a file whose import failed waits before it is offered again.
    #[serde(
        default = "default_retry_after",
        deserialize_with = "deserialize_duration"
    )]
    pub retry_after: Duration,
    /// A file larger than this is not read into memory: it is dead-lettered from disk
    /// (`too_large`) and released. Default 64 MiB.
    #[serde(default = "crate::sources::oversize::default_max_input_bytes")]
    pub max_input_bytes: usize,
}

fn default_pattern() -> String {
    "*".into()
}
fn default_min_age() -> Duration {
    Duration::from_secs(2)
}
fn default_poll() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_after() -> Duration {
    Duration::from_secs(30)
}

impl FolderConfig {
    /// A one-shot scan that keeps files (what `replay` uses).
    pub fn replay(path: PathBuf) -> Self {
        FolderConfig {
            path,
            pattern: "*".into(),
            recursive: true,
            mode: FolderMode::Once,
            after: AfterCommit::Keep,
            processed_dir: None,
            min_age: Duration::ZERO,
            poll_interval: default_poll(),
            retry_after: default_retry_after(),
            max_input_bytes: crate::sources::oversize::DEFAULT_MAX_INPUT_BYTES,
        }
    }

    pub fn processed_dir(&self) -> PathBuf {
        self.processed_dir
            .clone()
            .unwrap_or_else(|| self.path.join("processed"))
    }

    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = Vec::new();
        if glob::Pattern::new(&self.pattern).is_err() {
            v.push((
                format!("pattern `{}` is not a valid glob", self.pattern),
                None,
            ));
        }
        if self.poll_interval.is_zero() {
            v.push(("poll_interval must be above zero".to_string(), None));
        }
        if self.max_input_bytes == 0 {
            v.push(("max_input_bytes must be above zero".to_string(), None));
        }
        if self.after == AfterCommit::Move
            && self.processed_dir().starts_with(&self.path)
            && self.recursive
        {
            // allowed: the processed dir is skipped during scans
        }
        v
    }
}
