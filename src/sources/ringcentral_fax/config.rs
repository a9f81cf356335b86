//! `RingCentralFaxConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use crate::config::duration::deserialize_duration;
use crate::ringcentral::RcConfig;
use serde::Deserialize;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

/// `[sources.<id>] type = "ringcentral_fax"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RingCentralFaxConfig {
    /// The RingCentral connection (`[sources.<id>.ringcentral]`).
    pub ringcentral: RcConfig,
    /// Where attachments are streamed before they are filed.
    pub spool_dir: PathBuf,
    #[serde(
        default = "default_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub poll_interval: Duration,
    /// How far back the very first poll looks (no watermark saved yet).
    #[serde(
        default = "default_lookback",
        deserialize_with = "deserialize_duration"
    )]
    pub initial_lookback: Duration,
    /// Each poll re-lists this much before the watermark (late-stored messages, clock skew).
    #[serde(default = "default_overlap", deserialize_with = "deserialize_duration")]
    pub overlap: Duration,
    /// Records per message-store page (1–1000).
    #[serde(default = "default_per_page")]
    pub per_page: u32,
    /// Faxes downloaded ahead of their commit.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Mark each filed fax read in RingCentral.
    #[serde(default = "yes")]
    pub mark_read: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_lookback() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_overlap() -> Duration {
    Duration::from_secs(3600)
}
fn default_per_page() -> u32 {
    100
}
fn default_in_flight() -> usize {
    8
}
fn yes() -> bool {
    true
}

impl RingCentralFaxConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = self.ringcentral.diagnostics();
        if self.poll_interval < Duration::from_secs(1) {
            v.push(("poll_interval must be at least 1s".into(), None));
        }
        if !(1..=1000).contains(&self.per_page) {
            v.push(("per_page must be 1 to 1000".into(), None));
        }
        if self.max_in_flight == 0 {
            v.push(("max_in_flight must be at least 1".into(), None));
        }
        if self.spool_dir.as_os_str().is_empty() {
            v.push(("spool_dir must be set".into(), None));
        }
        v
    }
}
