//! Stages: typed transformations between a source and a sink.
//!
//! A [`Stage<I, O>`] turns one input envelope into any number of output envelopes and
//! rejections, collected in an [`Emitter`]. It never acknowledges anything itself: the
//! stage runner ([`crate::topology::run::run_stage`]) dead-letters the rejections, forwards
//! the outputs (each carrying a derived ack token) and retries the whole call on a transient
//! error. Kinds: `parse_hl7` (raw bytes → [`crate::lab_file::LabFile`]) and `match_patient`.

pub mod match_patient;
pub mod parse_hl7;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::ack::AckToken;
use crate::component::{BuildContext, ProcessError};
use crate::config::{unknown_type, ComponentKind, PortType, RawComponent};
use crate::dead_letter::ReasonCode;
use crate::envelope::{Envelope, MessageId, Provenance, Raw};
use crate::lab_file::LabFile;
use crate::payload::{Erased, Payload};

pub use match_patient::MatchPatientConfig;
pub use parse_hl7::ParseHl7Config;

/// A message a stage refused, with the bytes to keep.
#[derive(Debug)]
pub struct Reject {
    pub id: MessageId,
    pub provenance: Arc<Provenance>,
    pub part: Option<u32>,
    pub raw: Bytes,
    pub reason: ReasonCode,
    pub detail: String,
    pub ack: AckToken,
}

/// What one `process` call produced.
#[derive(Debug)]
pub struct Emitter<O> {
    pub outputs: Vec<Envelope<O>>,
    pub rejects: Vec<Reject>,
}

impl<O> Default for Emitter<O> {
    fn default() -> Self {
        Self {
            outputs: Vec::new(),
            rejects: Vec::new(),
        }
    }
}

impl<O> Emitter<O> {
    /// Emits `payload` as an output derived from `input`.
    pub fn emit<I>(&mut self, input: &Envelope<I>, payload: O) {
        self.outputs.push(input.derive(payload));
    }

    /// Rejects a part of `input` (one message of a file, or the whole input with `part`
    /// `None`), keeping `raw` for the dead-letter store.
    pub fn reject<I>(
        &mut self,
        input: &Envelope<I>,
        part: Option<u32>,
        raw: Bytes,
        reason: ReasonCode,
        detail: impl Into<String>,
    ) {
        self.rejects.push(Reject {
            id: MessageId::new(),
            provenance: input.provenance.clone(),
            part,
            raw,
            reason,
            detail: detail.into(),
            ack: input.ack.derive(),
        });
    }
}

/// A typed transformation. See the module docs for the contract.
#[async_trait]
pub trait Stage<I: Send + Sync + 'static, O: Send + 'static>: Send + Sync {
    /// The component type name (`parse_hl7`).
    fn kind(&self) -> &'static str;

    /// Processes one envelope. Must be idempotent: after a transient error the runner calls
    /// it again with the same input and a fresh emitter.
    async fn process(&self, input: &Envelope<I>, out: &mut Emitter<O>) -> Result<(), ProcessError>;
}

/// A running stage, its payload types erased (see [`crate::payload`]).
pub struct BuiltStage(Erased);

impl BuiltStage {
    pub fn new<I: Payload, O: Payload>(stage: Arc<dyn Stage<I, O>>) -> Self {
        BuiltStage(Erased::new(Some(I::PORT), Some(O::PORT), stage))
    }
    /// The payloads it consumes and produces.
    pub fn ports(&self) -> (Option<PortType>, Option<PortType>) {
        (self.0.input, self.0.output)
    }
    /// The stage as `I → O`; `None` when its payloads are others.
    pub fn typed<I: Payload, O: Payload>(self) -> Option<Arc<dyn Stage<I, O>>> {
        self.0.take::<Arc<dyn Stage<I, O>>>()
    }
}

/// The closed set of stage configurations.
#[derive(Debug, Clone)]
pub enum StageConfig {
    ParseHl7(ParseHl7Config),
    MatchPatient(MatchPatientConfig),
}

impl StageConfig {
    /// Builds the running stage.
    pub fn build(&self, cx: &BuildContext) -> BuiltStage {
        match self {
            StageConfig::ParseHl7(c) => BuiltStage::new::<Raw, LabFile>(Arc::new(
                parse_hl7::ParseHl7::new(c.clone(), cx.id.clone(), cx.observers.clone()),
            )),
            StageConfig::MatchPatient(c) => BuiltStage::new::<LabFile, LabFile>(Arc::new(
                match_patient::MatchPatient::new(cx.store.clone(), c),
            )),
        }
    }

    pub const TYPES: &'static [&'static str] = &["parse_hl7", "match_patient"];

    pub fn from_table(
        raw: RawComponent,
        section: &'static str,
    ) -> Result<Self, (String, Option<Range<usize>>)> {
        match raw.type_name.get_ref().as_str() {
            "parse_hl7" => raw.parse().map(StageConfig::ParseHl7),
            "match_patient" => raw.parse().map(StageConfig::MatchPatient),
            _ => Err(unknown_type(
                section.trim_end_matches('s'),
                &raw.type_name,
                Self::TYPES,
            )),
        }
    }

    /// Parallel calls of this stage (order of outputs is preserved).
    pub fn concurrency(&self) -> usize {
        match self {
            StageConfig::ParseHl7(c) => c.concurrency,
            StageConfig::MatchPatient(c) => c.concurrency,
        }
    }
}

impl ComponentKind for StageConfig {
    fn type_name(&self) -> &'static str {
        match self {
            StageConfig::ParseHl7(_) => "parse_hl7",
            StageConfig::MatchPatient(_) => "match_patient",
        }
    }
    fn input_port(&self) -> Option<PortType> {
        Some(match self {
            StageConfig::ParseHl7(_) => PortType::Raw,
            StageConfig::MatchPatient(_) => PortType::LabFile,
        })
    }
    fn output_port(&self) -> Option<PortType> {
        Some(PortType::LabFile)
    }
    fn lab_type(&self) -> Option<crate::hl7::lab::LabType> {
        match self {
            StageConfig::ParseHl7(c) => c.lab_type,
            StageConfig::MatchPatient(_) => None,
        }
    }
    fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = Vec::new();
        if self.concurrency() == 0 {
            v.push(("concurrency must be at least 1".to_string(), None));
        }
        if let StageConfig::ParseHl7(c) = self {
            if c.max_message_bytes == 0 || c.max_input_bytes == 0 {
                v.push(("size limits must be at least 1 byte".to_string(), None));
            }
        }
        v
    }
}
