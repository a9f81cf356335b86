//! `parse_hl7`: raw bytes → [`LabFile`].
//!
//! Frames the input (multi-message files, batches, XML wrappers, BOM, any line ending),
//! decodes each message (UTF-8, else the configured single-byte fallback or MSH-18's
//! Latin-1), parses it and builds the lab model. Every message that fails — empty input, not
//! HL7, stray text, a bad MSH, a missing PID/OBR (truncated), over the size limit, a message
//! type this pipeline does not import — is rejected **on its own** with its original bytes;
//! the file's other messages go on. Nothing here touches a database.

use std::sync::Arc;

use async_trait::async_trait;
use md5::{Digest, Md5};

use super::{Emitter, Stage};
use crate::component::ProcessError;
use crate::dead_letter::ReasonCode;
use crate::envelope::{Envelope, Raw};
use crate::hl7::framing::Container;
use crate::hl7::lab::LabMessage;
use crate::hl7::text::{self};
use crate::hl7::Message;
use crate::lab_file::{LabEntry, LabFile};
use crate::telemetry::Observers;

mod config;
pub use config::*;

/// The stage.
pub struct ParseHl7 {
    cfg: ParseHl7Config,
    id: Arc<str>,
    observers: Observers,
}

impl ParseHl7 {
    pub fn new(cfg: ParseHl7Config, id: Arc<str>, observers: Observers) -> Self {
        Self { cfg, id, observers }
    }

    /// Parses one input into a lab file and rejections; pure and synchronous.
    pub fn parse(&self, input: &Envelope<Raw>, out: &mut Emitter<LabFile>) -> u32 {
        let raw = &input.payload.bytes;
        let limits = super::FrameLimits {
            max_input_bytes: self.cfg.max_input_bytes,
            max_message_bytes: self.cfg.max_message_bytes,
            fallback: self.cfg.encoding_fallback,
        };
        let (found, container, decoded) = super::frame_input(input, limits, out);
        let mut entries = Vec::with_capacity(decoded.len());
        for d in &decoded {
            let f = &d.frame;
            let msh18 = &d.msh18;
            let msg = match Message::parse_framed(&d.text) {
                Ok(m) => m,
                Err(e) => {
                    out.reject(
                        input,
                        Some(f.index),
                        f.raw.clone(),
                        ReasonCode::Malformed,
                        format!("message {}: {e}", f.index + 1),
                    );
                    continue;
                }
            };
            let msg_type = msg.get("MSH-9.1").trim().to_ascii_uppercase();
            if !self.cfg.message_types.is_empty()
                && !self
                    .cfg
                    .message_types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(&msg_type))
            {
                out.reject(
                    input,
                    Some(f.index),
                    f.raw.clone(),
                    ReasonCode::UnsupportedMessage,
                    format!(
                        "message {}: MSH-9.1 `{}` is not imported by this pipeline",
                        f.index + 1,
                        sanitize_code(&msg_type)
                    ),
                );
                continue;
            }
            let lab = match LabMessage::from_message_typed(
                &msg,
                self.cfg.lab_type,
                input.payload.lab_type,
            ) {
                Ok(l) => l,
                Err(e) => {
                    out.reject(
                        input,
                        Some(f.index),
                        f.raw.clone(),
                        ReasonCode::MissingSegment,
                        format!("message {}: {e}", f.index + 1),
                    );
                    continue;
                }
            };
            // What OSCAR stores: XML content verbatim (as its PATHL7 handler does), pipe files
            // with CRLF after every segment (as Utilities.separateMessages does).
            let stored_text = match container {
                Container::Xml => {
                    text::decode(&f.raw, self.cfg.encoding_fallback, msh18.as_deref())
                        .0
                        .into_owned()
                }
                Container::Plain | Container::Batch => text::decode(
                    &f.joined(b"\r\n"),
                    self.cfg.encoding_fallback,
                    msh18.as_deref(),
                )
                .0
                .into_owned(),
            };
            entries.push(LabEntry {
                index: f.index,
                raw: f.raw.clone(),
                stored_text,
                encoding: d.encoding,
                segment_count: msg.segment_count(),
                lab,
                matched: None,
            });
        }
        if !entries.is_empty() {
            let md5 = hex::encode(Md5::digest(raw));
            out.emit(
                input,
                LabFile {
                    name: input.payload.name.clone(),
                    raw: raw.clone(),
                    md5,
                    container,
                    messages_found: found,
                    messages: entries,
                },
            );
        }
        found
    }
}

/// A message type code for an error text: letters, digits and `_` only, at most 8.
fn sanitize_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(8)
        .collect()
}

#[async_trait]
impl Stage<Raw, LabFile> for ParseHl7 {
    fn kind(&self) -> &'static str {
        "parse_hl7"
    }

    async fn process(
        &self,
        input: &Envelope<Raw>,
        out: &mut Emitter<LabFile>,
    ) -> Result<(), ProcessError> {
        super::parse_observed(&self.observers, &self.id, input, || self.parse(input, out));
        Ok(())
    }
}

impl super::StageComponent for ParseHl7Config {
    fn ports(&self) -> (crate::payload::PortType, crate::payload::PortType) {
        (
            crate::payload::PortType::Raw,
            crate::payload::PortType::LabFile,
        )
    }
    fn concurrency(&self) -> usize {
        self.concurrency
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        if self.max_message_bytes == 0 || self.max_input_bytes == 0 {
            vec![("size limits must be at least 1 byte".to_string(), None)]
        } else {
            Vec::new()
        }
    }
    fn fixed_lab_type(&self) -> Option<crate::hl7::lab::LabType> {
        self.lab_type
    }
    fn build(&self, cx: &crate::component::BuildContext) -> super::BuiltStage {
        super::BuiltStage::new::<crate::envelope::Raw, crate::lab_file::LabFile>(
            std::sync::Arc::new(ParseHl7::new(
                self.clone(),
                cx.id.clone(),
                cx.observers.clone(),
            )),
        )
    }
}
