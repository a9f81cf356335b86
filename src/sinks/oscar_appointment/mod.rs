//! `oscar_appointment`: applies [`Appointment`]s (scheduling messages, HL7 SIU) to OSCAR's
//! appointment book through [`crate::oscar::appointment`]: S12 books, S13/S14 archive and
//! change, S15 cancels, S17 archives and deletes, S26 marks a no-show — each message in one
//! transaction with its journal and audit rows, idempotent by the message's SHA-256 and by
//! the filler id, versions of one appointment in order (the ordering key is the filler id).
//! A conflicting slot, an unmatched patient, an unknown provider or an appointment not booked
//! yet is a data error: the runner dead-letters the message with its bytes and reason, and an
//! MLLP source answers `AR` with that reason.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::Sink;
use crate::appointment::Appointment;
use crate::component::ProcessError;
use crate::envelope::Envelope;
use crate::oscar::appointment::{apply, BookOptions};
use crate::store::Store;
use crate::telemetry::{Event, MetricName, Observers};

mod config;
pub use config::*;

/// The sink.
pub struct OscarAppointment {
    store: Store,
    opts: BookOptions,
    observers: Observers,
    id: Arc<str>,
}

#[async_trait]
impl Sink<Appointment> for OscarAppointment {
    fn kind(&self) -> &'static str {
        "oscar_appointment"
    }

    async fn write(&self, env: &Envelope<Appointment>) -> Result<(), ProcessError> {
        let started = Instant::now();
        let applied = apply(&self.store, &env.payload, &env.provenance, &self.opts).await?;
        crate::telemetry::histogram(
            MetricName::ImportDurationSeconds,
            &[("pipeline", env.provenance.pipeline.to_string())],
            started.elapsed().as_secs_f64(),
        );
        self.observers.emit(Event::Appointment {
            prov: &env.provenance,
            component: &self.id,
            part: env.payload.index,
            appointment_no: applied.appointment_no,
            event: env.payload.siu.event.as_str(),
            outcome: applied.outcome,
            flagged: !applied.overlaps.is_empty(),
        });
        Ok(())
    }
}

impl super::SinkComponent for OscarAppointmentConfig {
    fn input_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::Appointment
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn build(
        &self,
        cx: &crate::component::BuildContext,
    ) -> Result<super::BuiltSink, crate::component::ProcessError> {
        Ok(super::BuiltSink::new::<Appointment>(
            Arc::new(OscarAppointment {
                store: cx.store.clone(),
                opts: self.options(),
                observers: cx.observers.clone(),
                id: cx.id.clone(),
            }),
            super::SinkRun {
                concurrency: self.concurrency,
                order_by: self.order_by,
            },
        ))
    }
}
