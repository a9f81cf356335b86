//! Stages: typed transformations between a source and a sink.
//!
//! A [`Stage<I, O>`] turns one input envelope into any number of output envelopes and
//! rejections, collected in an [`Emitter`]. It never acknowledges anything itself: the
//! stage runner ([`crate::topology::run::run_stage`]) dead-letters the rejections, forwards
//! the outputs (each carrying a derived ack token) and retries the whole call on a transient
//! error. Kinds: `parse_hl7` (raw bytes → [`crate::lab_file::LabFile`]), `parse_siu` (raw bytes →
//! [`crate::appointment::Appointment`]) and `match_patient` (either).

pub mod match_patient;
pub mod parse_hl7;
pub mod parse_siu;

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
pub use parse_siu::ParseSiuConfig;

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

/// One message of an input, framed and decoded, ready to parse (see [`frame_input`]).
pub struct Decoded {
    pub frame: crate::hl7::Frame,
    /// The segments joined by `\r`, decoded.
    pub text: String,
    pub encoding: crate::hl7::text::Encoding,
    /// MSH-18 as sniffed from the bytes (the charset the message claims).
    pub msh18: Option<String>,
}

/// The limits [`frame_input`] applies.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    pub max_input_bytes: usize,
    pub max_message_bytes: usize,
    pub fallback: crate::hl7::text::Fallback,
}

/// What every HL7 parse stage does first: the input's size, framing (multi-message files,
/// batches, XML wrappers, BOM, any line ending) and each message's size and decoding. Every
/// input or message refused on the way — too large, empty, not HL7, stray text — is rejected
/// into `out` with its bytes. Returns the messages found (good and bad), the container and
/// the messages to parse.
pub fn frame_input<I: crate::payload::capabilities::RawBytes, O>(
    input: &Envelope<I>,
    limits: FrameLimits,
    out: &mut Emitter<O>,
) -> (u32, crate::hl7::framing::Container, Vec<Decoded>) {
    use crate::hl7::framing::{self, Container, FrameError};
    let raw = input.payload.raw_bytes();
    if raw.len() > limits.max_input_bytes {
        out.reject(
            input,
            None,
            raw.clone(),
            ReasonCode::TooLarge,
            format!(
                "input is {} bytes, over the limit of {}",
                raw.len(),
                limits.max_input_bytes
            ),
        );
        return (0, Container::Plain, Vec::new());
    }
    let framed = framing::frame(&raw);
    // Messages are frames that start with MSH; stray text and empty input are not.
    let found = framed.messages.len() as u32;
    let whole = framed.messages.is_empty() && framed.rejected.len() == 1;
    for r in &framed.rejected {
        let reason = match r.error {
            FrameError::Empty => ReasonCode::EmptyInput,
            FrameError::NoMessage => ReasonCode::NotHl7,
            FrameError::Stray { .. } | FrameError::BadXml(_) => ReasonCode::Malformed,
        };
        let part = if whole { None } else { Some(r.index) };
        out.reject(input, part, r.raw.clone(), reason, r.error.to_string());
    }
    let mut decoded = Vec::with_capacity(framed.messages.len());
    for f in framed.messages {
        if f.raw.len() > limits.max_message_bytes {
            out.reject(
                input,
                Some(f.index),
                f.raw.clone(),
                ReasonCode::TooLarge,
                format!(
                    "message {} is {} bytes, over the limit of {}",
                    f.index + 1,
                    f.raw.len(),
                    limits.max_message_bytes
                ),
            );
            continue;
        }
        let joined = f.joined(b"\r");
        let msh18 = crate::hl7::text::sniff_msh18(&joined);
        let (text, encoding) = crate::hl7::text::decode(&joined, limits.fallback, msh18.as_deref());
        decoded.push(Decoded {
            text: text.into_owned(),
            encoding,
            msh18,
            frame: f,
        });
    }
    (found, framed.container, decoded)
}

/// What every HL7 parse stage reports around its `parse`: the input's bytes to the tap when
/// bodies are logged, then how many messages it found.
pub fn parse_observed(
    observers: &crate::telemetry::Observers,
    component: &str,
    input: &Envelope<crate::envelope::Raw>,
    parse: impl FnOnce() -> u32,
) {
    use crate::telemetry::Event;
    if crate::telemetry::bodies_logged() {
        observers.emit(Event::Body {
            prov: &input.provenance,
            component,
            body: &input.payload.bytes,
        });
    }
    let found = parse();
    observers.emit(Event::Parsed {
        prov: &input.provenance,
        component,
        found,
    });
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
        ParseSiu(ParseSiuConfig) = "parse_siu",
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
