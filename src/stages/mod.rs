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
use crate::component::ComponentKind;
use crate::component::{BuildContext, ProcessError};
use crate::dead_letter::ReasonCode;
use crate::envelope::{Envelope, MessageId, Provenance};
use crate::payload::PortType;
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

/// What every stage type's configuration answers (implemented in its folder).
pub trait StageComponent: Send + Sync {
    /// The payloads it consumes and produces.
    fn ports(&self) -> (PortType, PortType);
    /// Parallel calls of this stage (order of outputs is preserved).
    fn concurrency(&self) -> usize;
    /// Pure checks: (message, span).
    fn problems(&self) -> Vec<(String, Option<Range<usize>>)> {
        Vec::new()
    }
    /// The lab type it fixes (a parse stage with a `lab_type`).
    fn fixed_lab_type(&self) -> Option<crate::hl7::lab::LabType> {
        None
    }
    /// Builds the running stage.
    fn build(&self, cx: &BuildContext) -> BuiltStage;
}

crate::component::component_types! {
    /// The closed set of stage configurations: one line per type.
    StageConfig: StageComponent {
        ParseHl7(ParseHl7Config) = "parse_hl7",
        MatchPatient(MatchPatientConfig) = "match_patient",
    }
}

impl StageConfig {
    /// Builds the running stage.
    pub fn build(&self, cx: &BuildContext) -> BuiltStage {
        self.component().build(cx)
    }

    /// Parallel calls of this stage (order of outputs is preserved).
    pub fn concurrency(&self) -> usize {
        self.component().concurrency()
    }
}

impl ComponentKind for StageConfig {
    fn type_name(&self) -> &'static str {
        self.kind_name()
    }
    fn input_port(&self) -> Option<PortType> {
        Some(self.component().ports().0)
    }
    fn output_port(&self) -> Option<PortType> {
        Some(self.component().ports().1)
    }
    fn lab_type(&self) -> Option<crate::hl7::lab::LabType> {
        self.component().fixed_lab_type()
    }
    fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = Vec::new();
        if self.concurrency() == 0 {
            v.push(("concurrency must be at least 1".to_string(), None));
        }
        v.extend(self.component().problems());
        v
    }
}
