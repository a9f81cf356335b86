//! `RingCentralSmsConfig`: the configuration of this component (serde,
//! `deny_unknown_fields`, a pure `validate`); the component is built from it
//! (`SinkConfig::build`).

use std::ops::Range;

use serde::Deserialize;

use crate::ringcentral::phone::to_e164;
use crate::ringcentral::RcConfig;

/// `[sinks.<id>] type = "ringcentral_sms"`: sends the text messages of our outbox through
/// RingCentral.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RingCentralSmsConfig {
    /// The clinic's SMS-capable RingCentral number, the `from` of every message.
    pub from: String,
    /// Texts sent at once (RingCentral's Medium limit is per account; the client keeps to it).
    #[serde(default = "one")]
    pub concurrency: usize,
    /// The RingCentral connection (`[sinks.<id>.ringcentral]`).
    pub ringcentral: RcConfig,
}

fn one() -> usize {
    1
}

impl RingCentralSmsConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = self.ringcentral.diagnostics();
        if to_e164(&self.from).is_err() {
            v.push((
                "from must be the clinic's SMS number (North American)".into(),
                None,
            ));
        }
        if self.concurrency == 0 {
            v.push(("concurrency must be at least 1".into(), None));
        }
        v
    }
}
