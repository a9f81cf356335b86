//! `match_patient`: finds each lab's patient with OSCAR's predicates
//! ([`crate::oscar::matching`]) and records the outcome in the [`LabFile`] — or, with
//! `payload = "appointment"`, the patient of a scheduling message in its [`Appointment`],
//! by exactly the same rules (health number required, never a name-only match). Read-only;
//! a database error is transient (the runner retries the whole input).

use async_trait::async_trait;

use super::{Emitter, Stage};
use crate::appointment::Appointment;
use crate::component::ProcessError;
use crate::envelope::Envelope;
use crate::lab_file::LabFile;
use crate::oscar::matching::{match_patient, MatchSettings};
use crate::store::Store;

mod config;
pub use config::*;

/// The stage.
pub struct MatchPatient {
    store: Store,
    settings: MatchSettings,
}

impl MatchPatient {
    pub fn new(store: Store, cfg: &MatchPatientConfig) -> Self {
        Self {
            store,
            settings: MatchSettings {
                nomatch_names: cfg.nomatch_names,
                relax_sex_for_non_binary: cfg.relax_sex_for_non_binary,
            },
        }
    }
}

impl MatchPatient {
    async fn connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, ProcessError> {
        self.store
            .pool
            .acquire()
            .await
            .map_err(|e| ProcessError::from_sqlx("patient match", &e))
    }

    /// One patient's chart, by OSCAR's predicates.
    async fn find(
        &self,
        conn: &mut sqlx::AnyConnection,
        patient: &crate::hl7::lab::Patient,
    ) -> Result<crate::oscar::matching::MatchOutcome, ProcessError> {
        match_patient(conn, patient, &self.settings)
            .await
            .map_err(|e| ProcessError::from_sqlx("patient match", &e))
    }
}

#[async_trait]
impl Stage<LabFile, LabFile> for MatchPatient {
    fn kind(&self) -> &'static str {
        "match_patient"
    }

    async fn process(
        &self,
        input: &Envelope<LabFile>,
        out: &mut Emitter<LabFile>,
    ) -> Result<(), ProcessError> {
        let mut conn = self.connection().await?;
        let mut file = input.payload.clone();
        for entry in &mut file.messages {
            entry.matched = Some(self.find(&mut conn, &entry.lab.patient).await?);
        }
        out.emit(input, file);
        Ok(())
    }
}

#[async_trait]
impl Stage<Appointment, Appointment> for MatchPatient {
    fn kind(&self) -> &'static str {
        "match_patient"
    }

    async fn process(
        &self,
        input: &Envelope<Appointment>,
        out: &mut Emitter<Appointment>,
    ) -> Result<(), ProcessError> {
        let mut conn = self.connection().await?;
        let mut appt = input.payload.clone();
        appt.matched = Some(self.find(&mut conn, &appt.siu.patient).await?);
        out.emit(input, appt);
        Ok(())
    }
}

impl super::StageComponent for MatchPatientConfig {
    fn ports(&self) -> (crate::payload::PortType, crate::payload::PortType) {
        let p = match self.payload {
            MatchPayload::LabFile => crate::payload::PortType::LabFile,
            MatchPayload::Appointment => crate::payload::PortType::Appointment,
        };
        (p, p)
    }
    fn concurrency(&self) -> usize {
        self.concurrency
    }
    fn build(&self, cx: &crate::component::BuildContext) -> super::BuiltStage {
        let stage = std::sync::Arc::new(MatchPatient::new(cx.store.clone(), self));
        match self.payload {
            MatchPayload::LabFile => super::BuiltStage::new::<LabFile, LabFile>(stage),
            MatchPayload::Appointment => super::BuiltStage::new::<Appointment, Appointment>(stage),
        }
    }
}
