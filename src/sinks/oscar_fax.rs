//! `oscar_fax`: files an [`InboundDocument`] (a received fax) into OSCAR as its own
//! `FaxImporter` does, through [`crate::oscar::fax`]: the PDF in `DOCUMENT_DIR`, then
//! `document`, `ctl_document`, `queue_document_link`, `providerLabRouting` (unclaimed inbox)
//! and a `faxes` log row in one transaction. Idempotent by the RingCentral message id.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::Deserialize;

use super::Sink;
use crate::component::ProcessError;
use crate::document::InboundDocument;
use crate::envelope::Envelope;
use crate::oscar::fax::{import_fax, FaxImportOptions, FaxOutcome};
use crate::oscar::{resolve_flavour, Flavour, FlavourSetting};
use crate::store::Store;
use crate::telemetry::{Event, MetricName, Observers};

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

/// The sink.
pub struct OscarFax {
    store: Store,
    cfg: OscarFaxConfig,
    flavour: tokio::sync::OnceCell<Flavour>,
    observers: Observers,
    id: Arc<str>,
}

impl OscarFax {
    pub fn new(store: Store, cfg: &OscarFaxConfig, id: Arc<str>, observers: Observers) -> Self {
        Self {
            store,
            cfg: cfg.clone(),
            flavour: tokio::sync::OnceCell::new(),
            observers,
            id,
        }
    }
}

#[async_trait]
impl Sink<InboundDocument> for OscarFax {
    fn kind(&self) -> &'static str {
        "oscar_fax"
    }

    async fn write(&self, env: &Envelope<InboundDocument>) -> Result<(), ProcessError> {
        let started = Instant::now();
        let flavour = *self
            .flavour
            .get_or_try_init(|| async {
                let f = resolve_flavour(self.cfg.oscar_flavour, &self.store).await?;
                tracing::info!(component = %self.id, flavour = ?f, "OSCAR flavour in use.");
                Ok::<_, ProcessError>(f)
            })
            .await?;
        let opts = FaxImportOptions {
            document_dir: self.cfg.document_dir.clone(),
            queue_id: self.cfg.queue_id,
            fax_line: self.cfg.fax_line.clone(),
            flavour,
        };
        let outcome = import_fax(&self.store, &env.payload, &env.provenance, &opts).await?;
        crate::telemetry::histogram(
            MetricName::ImportDurationSeconds,
            &[("pipeline", env.provenance.pipeline.to_string())],
            started.elapsed().as_secs_f64(),
        );
        match outcome {
            FaxOutcome::Duplicate => self.observers.emit(Event::Duplicate {
                prov: &env.provenance,
                component: &self.id,
                messages: 1,
            }),
            FaxOutcome::Imported { document_no } => self.observers.emit(Event::Imported {
                prov: &env.provenance,
                component: &self.id,
                part: 0,
                lab_no: document_no,
                outcome: "unclaimed_document",
                lab: None,
            }),
        }
        Ok(())
    }
}
