//! `OscarFaxConfig`: the configuration of this component (serde, `deny_unknown_fields`, a pure
//! `validate`); the component is built from it (`SourceConfig::build` and its kin).

use crate::oscar::FlavourSetting;
use serde::Deserialize;
use std::path::PathBuf;

/// `[sinks.<id>] type = "oscar_fax"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OscarFaxConfig {
    /// OSCAR's `DOCUMENT_DIR` (`oscar.properties`), e.g.
    /// `/var/lib/OscarDocument/oscar/document/`. Must exist and be writable.
    pub document_dir: PathBuf,
    /// The document queue the faxes land in (`queue.id`; 1 is OSCAR's `default`).
    #[serde(default = "default_queue")]
    pub queue_id: i64,
    /// The receiving fax line, digits, for OSCAR's fax log (`faxes.faxline`).
    #[serde(default)]
    pub fax_line: Option<String>,
    /// `open_o`, `oscar19` or `auto` (the `document.report_media` column decides).
    #[serde(default)]
    pub oscar_flavour: FlavourSetting,
    /// Faxes filed in parallel.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_queue() -> i64 {
    1
}
fn default_concurrency() -> usize {
    2
}

impl OscarFaxConfig {
    pub fn validate(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        let mut v = Vec::new();
        if self.concurrency == 0 {
            v.push(("concurrency must be at least 1".to_string(), None));
        }
        if self.queue_id < 1 {
            v.push(("queue_id must be a queue id (1 or more)".to_string(), None));
        }
        if self.document_dir.as_os_str().is_empty() {
            v.push(("document_dir must be set".to_string(), None));
        }
        if let Some(line) = &self.fax_line {
            if !crate::oscar::fax::is_fax_line(line) {
                v.push(("fax_line must be 1 to 11 digits".to_string(), None));
            }
        }
        v
    }
}
