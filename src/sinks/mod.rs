//! Sinks: where envelopes are committed.
//!
//! A [`Sink<T>`] writes one envelope durably and returns; the sink runner
//! ([`crate::topology::run::run_sink`]) resolves the envelope's ack **only after** `write`
//! returned `Ok` (the commit happened), retries transient errors with backoff, and
//! dead-letters data errors and spent retries with the payload's original bytes. `write` must
//! be idempotent: a re-delivered input (after a crash before the source released it) must not
//! create a second row. Kinds: `oscar_lab` (lab files), `oscar_fax` (received faxes).

pub mod oscar_fax;
pub mod oscar_lab;

use std::ops::Range;

use async_trait::async_trait;

use crate::component::ProcessError;
use crate::config::{unknown_type, ComponentKind, PortType, RawComponent};
use crate::envelope::Envelope;

pub use oscar_fax::OscarFaxConfig;
pub use oscar_lab::OscarLabConfig;

/// A durable, idempotent writer. See the module docs for the contract.
#[async_trait]
pub trait Sink<T: Send + Sync + 'static>: Send + Sync {
    /// The component type name (`oscar_lab`).
    fn kind(&self) -> &'static str;

    /// Commits one envelope. `Ok` means durable.
    async fn write(&self, env: &Envelope<T>) -> Result<(), ProcessError>;
}

/// The closed set of sink configurations.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    OscarLab(OscarLabConfig),
    OscarFax(OscarFaxConfig),
}

impl SinkConfig {
    pub const TYPES: &'static [&'static str] = &["oscar_lab", "oscar_fax"];

    pub fn from_table(
        raw: RawComponent,
        section: &'static str,
    ) -> Result<Self, (String, Option<Range<usize>>)> {
        match raw.type_name.get_ref().as_str() {
            "oscar_lab" => raw.parse().map(SinkConfig::OscarLab),
            "oscar_fax" => raw.parse().map(SinkConfig::OscarFax),
            _ => Err(unknown_type(
                section.trim_end_matches('s'),
                &raw.type_name,
                Self::TYPES,
            )),
        }
    }
}

impl ComponentKind for SinkConfig {
    fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::OscarLab(_) => "oscar_lab",
            SinkConfig::OscarFax(_) => "oscar_fax",
        }
    }
    fn input_port(&self) -> Option<PortType> {
        Some(match self {
            SinkConfig::OscarLab(_) => PortType::LabFile,
            SinkConfig::OscarFax(_) => PortType::Document,
        })
    }
    fn output_port(&self) -> Option<PortType> {
        None
    }
    fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        match self {
            SinkConfig::OscarLab(c) => {
                let mut v = Vec::new();
                if c.concurrency == 0 {
                    v.push(("concurrency must be at least 1".to_string(), None));
                }
                if c.service_name.is_empty() || c.service_name.chars().count() > 100 {
                    v.push(("service_name must be 1 to 100 characters".to_string(), None));
                }
                v
            }
            SinkConfig::OscarFax(c) => c.validate(),
        }
    }
}
