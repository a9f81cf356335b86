//! `RingCentralFaxSinkConfig`: the configuration of this component (serde,
//! `deny_unknown_fields`, a pure `validate`); the component is built from it
//! (`SinkConfig::build`).

use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;

use crate::ringcentral::RcConfig;

/// `[sinks.<id>] type = "ringcentral_fax"`: sends OSCAR's outbound faxes through RingCentral.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RingCentralFaxSinkConfig {
    /// OSCAR's `DOCUMENT_DIR`, where `faxes.filename` is looked up.
    pub document_dir: PathBuf,
    /// RingCentral cover page (0 = none: OSCAR's documents carry their own).
    #[serde(default)]
    pub cover_index: u32,
    /// Faxes sent at once (RingCentral's Heavy limit is per account; the client keeps to it).
    #[serde(default = "one")]
    pub concurrency: usize,
    /// The RingCentral connection (`[sinks.<id>.ringcentral]`).
    pub ringcentral: RcConfig,
}

fn one() -> usize {
    1
}

impl RingCentralFaxSinkConfig {
    pub(crate) fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = self.ringcentral.diagnostics();
        if self.concurrency == 0 {
            v.push(("concurrency must be at least 1".into(), None));
        }
        if self.document_dir.as_os_str().is_empty() {
            v.push(("document_dir must be set".into(), None));
        }
        v
    }
}
