//! `oscar_fax`: files an [`InboundDocument`] (a received fax) into OSCAR as its own
//! `FaxImporter` does, through [`crate::oscar::fax`]: the PDF in `DOCUMENT_DIR`, then
//! `document`, `ctl_document`, `queue_document_link`, `providerLabRouting` (unclaimed inbox)
//! and a `faxes` log row in one transaction. Idempotent by the RingCentral message id.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::Sink;
use crate::component::ProcessError;
use crate::document::InboundDocument;
use crate::envelope::Envelope;
use crate::oscar::fax::{import_fax, FaxImportOptions, FaxOutcome};
use crate::oscar::{resolve_flavour, Flavour};
use crate::store::Store;
use crate::telemetry::{Event, MetricName, Observers};

mod config;
pub use config::*;

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

impl super::SinkComponent for OscarFaxConfig {
    fn input_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::Document
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn build(
        &self,
        cx: &crate::component::BuildContext,
    ) -> Result<super::BuiltSink, crate::component::ProcessError> {
        Ok(super::BuiltSink::new::<crate::document::InboundDocument>(
            std::sync::Arc::new(OscarFax::new(
                cx.store.clone(),
                self,
                cx.id.clone(),
                cx.observers.clone(),
            )),
            super::SinkRun {
                concurrency: self.concurrency,
                order_by: crate::lab_file::OrderKey::None,
            },
        ))
    }
}
