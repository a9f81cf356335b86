//! `parse_siu`: raw bytes → one [`Appointment`] per scheduling message.
//!
//! Frames the input as `parse_hl7` does (multi-message files, batches, BOM, any line
//! ending), decodes and parses each message and builds the scheduling model
//! ([`crate::hl7::siu`]). Each message travels on its own — its own envelope, ordered by its
//! appointment's filler id downstream — so one refused message (a conflict, an unknown
//! patient) never holds back the others of its file. Every message that fails — not HL7,
//! over the size limit, not SIU or an event oscarflow does not apply (`unsupported_message`),
//! no filler id, start or length (`missing_segment`, `malformed`) — is rejected on its own
//! with its original bytes. Nothing here touches a database.

use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{Emitter, Stage};
use crate::appointment::Appointment;
use crate::component::ProcessError;
use crate::dead_letter::ReasonCode;
use crate::envelope::{Envelope, MessageId, Raw};
use crate::hl7::siu::{HealthNumberAt, SiuError, SiuMessage};
use crate::hl7::Message;
use crate::telemetry::Observers;

mod config;
pub use config::*;

/// The stage.
pub struct ParseSiu {
    cfg: ParseSiuConfig,
    hn: HealthNumberAt,
    id: Arc<str>,
    observers: Observers,
}

impl ParseSiu {
    pub fn new(cfg: ParseSiuConfig, id: Arc<str>, observers: Observers) -> Self {
        Self {
            hn: cfg.health_number_at().unwrap_or_default(),
            cfg,
            id,
            observers,
        }
    }

    /// Parses one input into appointments and rejections; pure and synchronous. Returns the
    /// number of messages found.
    pub fn parse(&self, input: &Envelope<Raw>, out: &mut Emitter<Appointment>) -> u32 {
        let limits = super::FrameLimits {
            max_input_bytes: self.cfg.max_input_bytes,
            max_message_bytes: self.cfg.max_message_bytes,
            fallback: self.cfg.encoding_fallback,
        };
        let (found, _, decoded) = super::frame_input(input, limits, out);
        let several = decoded.len() > 1;
        for d in &decoded {
            let f = &d.frame;
            let n = f.index + 1;
            let msg = match Message::parse_framed(&d.text) {
                Ok(m) => m,
                Err(e) => {
                    out.reject(
                        input,
                        Some(f.index),
                        f.raw.clone(),
                        ReasonCode::Malformed,
                        format!("message {n}: {e}"),
                    );
                    continue;
                }
            };
            let siu = match SiuMessage::from_message(&msg, &self.hn) {
                Ok(s) => s,
                Err(e) => {
                    let reason = match &e {
                        e if e.is_unsupported() => ReasonCode::UnsupportedMessage,
                        SiuError::MissingSegment(_) | SiuError::MissingFillerId(_) => {
                            ReasonCode::MissingSegment
                        }
                        _ => ReasonCode::Malformed,
                    };
                    out.reject(
                        input,
                        Some(f.index),
                        f.raw.clone(),
                        reason,
                        format!("message {n}: {e}"),
                    );
                    continue;
                }
            };
            let mut env = input.derive(Appointment {
                name: input.payload.name.clone(),
                index: f.index,
                sha256: hex::encode(Sha256::digest(&f.raw)),
                raw: f.raw.clone(),
                siu,
                matched: None,
            });
            if several {
                // Each message is its own envelope downstream (its own dead letter).
                env.id = MessageId::new();
            }
            out.outputs.push(env);
        }
        found
    }
}

#[async_trait]
impl Stage<Raw, Appointment> for ParseSiu {
    fn kind(&self) -> &'static str {
        "parse_siu"
    }

    async fn process(
        &self,
        input: &Envelope<Raw>,
        out: &mut Emitter<Appointment>,
    ) -> Result<(), ProcessError> {
        super::parse_observed(&self.observers, &self.id, input, || self.parse(input, out));
        Ok(())
    }
}

impl super::StageComponent for ParseSiuConfig {
    fn ports(&self) -> (crate::payload::PortType, crate::payload::PortType) {
        (
            crate::payload::PortType::Raw,
            crate::payload::PortType::Appointment,
        )
    }
    fn concurrency(&self) -> usize {
        self.concurrency
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn build(&self, cx: &crate::component::BuildContext) -> super::BuiltStage {
        super::BuiltStage::new::<Raw, Appointment>(Arc::new(ParseSiu::new(
            self.clone(),
            cx.id.clone(),
            cx.observers.clone(),
        )))
    }
}
