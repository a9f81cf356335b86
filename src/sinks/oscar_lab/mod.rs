//! `oscar_lab`: commits [`LabFile`]s into OSCAR's tables through [`crate::oscar::import`].
//! Idempotent by the file's MD5 (OSCAR's `fileUploadCheck` and our own unique
//! `oscarflow_lab_import` key), so a re-delivered file writes nothing.
//!
//! **Group commit.** Under load the runner hands the sink several files at once (up to
//! `group_max_files` and `group_max_bytes`; a lone file at low load goes alone, so latency
//! does not grow) and they commit in one transaction ([`import_group`]): one durable commit
//! and one multi-row statement per table for the group instead of ~17 statements and a
//! commit per file. Each file is written exactly as it would be alone — its duplicate check
//! sees the files before it in the group, versions of one accession apply in order — and
//! its ack resolves only after the group's commit. A file with a data error is
//! dead-lettered alone and the group commits again without it; a data error of a statement
//! the files share splits the group until the culprit is alone; any other failure writes
//! the group's files one at a time, each with its own retries.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{GroupError, GroupLimit, Sink};
use crate::component::ProcessError;
use crate::envelope::Envelope;
use crate::lab_file::LabFile;
use crate::oscar::charset::{NarrowColumns, LAB_TABLES};
use crate::oscar::import::{import_file, import_group, ImportOptions, ImportOutcome};
use crate::oscar::info::ColumnWidths;
use crate::oscar::{resolve_flavour, Flavour, FlavourSetting};
use crate::store::Store;
use crate::telemetry::{Event, LabDetail, MetricName, Observers};

mod config;
pub use config::*;

/// What the sink reads of its target once: flavour, `hl7TextInfo` widths, `utf8mb3`
/// columns and the largest statement the server takes.
type Target = (Flavour, Arc<ColumnWidths>, Arc<NarrowColumns>, Option<u64>);

/// The sink.
pub struct OscarLab {
    store: Store,
    opts: ImportOptions,
    setting: FlavourSetting,
    /// The flavour, `hl7TextInfo` widths and `utf8mb3` columns of the target, read once on
    /// first use.
    target: tokio::sync::OnceCell<Target>,
    observers: Observers,
    id: Arc<str>,
    group: GroupLimit,
}

impl OscarLab {
    pub fn new(store: Store, cfg: &OscarLabConfig, id: Arc<str>, observers: Observers) -> Self {
        Self {
            store,
            opts: ImportOptions {
                service_name: cfg.service_name.clone(),
                upload_provider_no: cfg.upload_provider_no.clone(),
                flavour: Flavour::OpenO,
                on_overflow: cfg.on_overflow,
                widths: Arc::default(),
                narrow: Arc::default(),
                max_statement_bytes: None,
            },
            setting: cfg.oscar_flavour,
            target: tokio::sync::OnceCell::new(),
            observers,
            id,
            group: GroupLimit {
                files: cfg.group_max_files.max(1),
                bytes: cfg.group_max_bytes,
            },
        }
    }

    /// The import options with what is read of the target once (on first use).
    async fn options(&self) -> Result<ImportOptions, ProcessError> {
        let (flavour, widths, narrow, max_statement_bytes) = self
            .target
            .get_or_try_init(|| async {
                let f = resolve_flavour(self.setting, &self.store).await?;
                let read = self
                    .store
                    .char_widths("hl7TextInfo")
                    .await
                    .map_err(|e| ProcessError::transient(format!("reading hl7TextInfo widths: {e}")))?;
                let widths = ColumnWidths::from_schema(read);
                tracing::info!(component = %self.id, flavour = ?f, report_status_width = widths.of("report_status"), "OSCAR flavour in use.");
                // The duplicate check looks every new file's MD5 up in OSCAR's
                // fileUploadCheck, which OSCAR ships without an index on md5sum: a scan of
                // every file ever uploaded (5–9 ms per file at 48,000 rows here).
                if matches!(self.store.has_index_on("fileUploadCheck", "md5sum").await, Ok(false)) {
                    tracing::warn!(component = %self.id, "OSCAR's fileUploadCheck has no index on md5sum: every new lab file scans the whole table (OSCAR's own upload does the same). Suggested, once, by the database administrator: CREATE INDEX oscarflow_md5sum ON fileUploadCheck (md5sum); see the README, Operations.");
                }
                let narrow = self
                    .store
                    .narrow_text_columns(LAB_TABLES)
                    .await
                    .map_err(|e| ProcessError::transient(format!("reading column character sets: {e}")))?;
                if !narrow.is_empty() {
                    tracing::info!(component = %self.id, columns = narrow.len(), "OSCAR's text columns hold 3-byte UTF-8 at most (utf8mb3): 4-byte characters are replaced there, with a warning.");
                }
                let max_statement = self
                    .store
                    .max_statement_bytes()
                    .await
                    .map_err(|e| ProcessError::transient(format!("reading max_allowed_packet: {e}")))?;
                Ok::<_, ProcessError>((f, Arc::new(widths), Arc::new(NarrowColumns::from_schema(narrow)), max_statement))
            })
            .await?
            .clone();
        Ok(ImportOptions {
            flavour,
            widths,
            narrow,
            max_statement_bytes,
            ..self.opts.clone()
        })
    }

    /// Reports what one file's import did (after its commit).
    fn report(&self, env: &Envelope<LabFile>, outcome: ImportOutcome) {
        match outcome {
            ImportOutcome::Duplicate => self.observers.emit(Event::Duplicate {
                prov: &env.provenance,
                component: &self.id,
                messages: env.payload.messages.len() as u32,
            }),
            ImportOutcome::Imported { labs } => {
                for l in labs {
                    self.observers.emit(Event::Imported {
                        prov: &env.provenance,
                        component: &self.id,
                        part: l.part,
                        lab_no: l.lab_no,
                        outcome: l.matched.label(),
                        lab: Some(LabDetail {
                            lab_type: l.lab_type.as_str(),
                            matched: l.matched.demographic_no().is_some(),
                            candidates: l.matched.candidates(),
                        }),
                    });
                }
            }
        }
    }

    fn observe_duration(&self, env: &Envelope<LabFile>, started: Instant) {
        crate::telemetry::histogram(
            MetricName::ImportDurationSeconds,
            &[("pipeline", env.provenance.pipeline.to_string())],
            started.elapsed().as_secs_f64(),
        );
    }
}

#[async_trait]
impl Sink<LabFile> for OscarLab {
    fn kind(&self) -> &'static str {
        "oscar_lab"
    }

    async fn write(&self, env: &Envelope<LabFile>) -> Result<(), ProcessError> {
        let started = Instant::now();
        let opts = self.options().await?;
        let outcome = import_file(&self.store, &env.payload, &env.provenance, &opts).await?;
        self.observe_duration(env, started);
        self.report(env, outcome);
        Ok(())
    }

    fn group_limit(&self) -> GroupLimit {
        self.group
    }

    async fn write_group(&self, envs: &[&Envelope<LabFile>]) -> Result<(), GroupError> {
        let started = Instant::now();
        let opts = self
            .options()
            .await
            .map_err(|error| GroupError { index: None, error })?;
        let files: Vec<_> = envs.iter().map(|e| (&e.payload, &*e.provenance)).collect();
        let outcomes = import_group(&self.store, &files, &opts)
            .await
            .map_err(|(index, error)| GroupError { index, error })?;
        crate::telemetry::histogram(
            MetricName::GroupCommitFiles,
            &[("pipeline", envs[0].provenance.pipeline.to_string())],
            envs.len() as f64,
        );
        for (env, outcome) in envs.iter().zip(outcomes) {
            self.observe_duration(env, started);
            self.report(env, outcome);
        }
        Ok(())
    }
}

impl super::SinkComponent for OscarLabConfig {
    fn input_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::LabFile
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        let mut v = Vec::new();
        if self.concurrency == 0 {
            v.push(("concurrency must be at least 1".to_string(), None));
        }
        if self.service_name.is_empty() || self.service_name.chars().count() > 100 {
            v.push(("service_name must be 1 to 100 characters".to_string(), None));
        }
        v
    }
    fn build(
        &self,
        cx: &crate::component::BuildContext,
    ) -> Result<super::BuiltSink, crate::component::ProcessError> {
        Ok(super::BuiltSink::new::<crate::lab_file::LabFile>(
            std::sync::Arc::new(OscarLab::new(
                cx.store.clone(),
                self,
                cx.id.clone(),
                cx.observers.clone(),
            )),
            super::SinkRun {
                concurrency: self.concurrency,
                order_by: self.order_by,
            },
        ))
    }
}
