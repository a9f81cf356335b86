//! `OscarFaxQueueConfig`: the configuration of this component (serde, `deny_unknown_fields`,
//! a pure `validate`); the component is built from it (`SourceConfig::build`).

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration::deserialize_duration;
use crate::oscar::fax::is_fax_line;

/// `[sources.<id>] type = "oscar_fax_queue"`: OSCAR's outbound `faxes` rows `WAITING` on
/// one fax line.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OscarFaxQueueConfig {
    /// The queue's name: in the reference RingCentral keeps with each fax
    /// (`OSCAR fax <name>#<id>`), so every daemon sending this line must use the same one;
    /// and in logs and metrics.
    pub name: String,
    /// OSCAR's `faxes.faxline` of the rows to send (the clinic's fax number, digits).
    pub fax_line: String,
    #[serde(
        default = "default_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub poll_interval: Duration,
    /// Faxes claimed per round.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// A claim not refreshed for this long belongs to a process that stopped; it is taken
    /// over (and looked up in RingCentral before any send).
    #[serde(
        default = "crate::jobs::claim::defaults::claim_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub claim_timeout: Duration,
    /// How long after a send broke off in transit the fax is looked up in RingCentral
    /// before it may be sent again.
    #[serde(
        default = "crate::jobs::claim::defaults::settle",
        deserialize_with = "deserialize_duration"
    )]
    pub unknown_settle_after: Duration,
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_batch() -> u32 {
    20
}

impl OscarFaxQueueConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = Vec::new();
        if self.name.is_empty() || self.name.chars().count() > 40 {
            v.push(("name must be 1 to 40 characters".to_string(), None));
        }
        if !is_fax_line(&self.fax_line) {
            v.push((
                "fax_line must be 1 to 11 digits, as in faxes.faxline".to_string(),
                None,
            ));
        }
        if self.batch == 0 {
            v.push(("batch must be at least 1".to_string(), None));
        }
        if self.poll_interval < Duration::from_millis(100) {
            v.push(("poll_interval must be at least 100ms".to_string(), None));
        }
        if self.claim_timeout < Duration::from_secs(4) {
            v.push(("claim_timeout must be at least 4s".to_string(), None));
        }
        v
    }
}
