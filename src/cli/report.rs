//! [`ReportCollector`]: an observer that tallies what happened to each input, for `replay`'s
//! report and for `dlq retry`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::ack::BatchStatus;
use crate::telemetry::{Event, Observer};

/// What happened to one input.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct InputReport {
    pub input: String,
    pub messages_found: u32,
    pub imported: u32,
    pub duplicates: u32,
    pub matched: u32,
    pub unmatched: u32,
    pub dead_lettered: u32,
    /// Dead letters by reason code.
    pub reasons: BTreeMap<String, u32>,
    /// `delivered`, `dead_lettered` or `failed` (neither imported nor dead-lettered).
    pub status: Option<BatchStatus>,
    /// Ids of the dead letters written for this input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dead_letter_ids: Vec<String>,
    /// Every lab committed from this input, with its match outcome (the reason, when
    /// unmatched), in the order of the input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<MessageReport>,
}

/// One committed lab of an input: ids and bounded codes, no PHI. Kept compact (24 bytes: a
/// replay of a million labs holds a million of them); serialized as
/// `{message, lab_no, lab_type?, outcome, candidates?}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageReport {
    /// 1-based position of the message in its input.
    pub message: u32,
    /// `hl7TextMessage.lab_id` (or `document.document_no` for a document).
    pub lab_no: i64,
    lab_type: Option<Code>,
    outcome: Code,
    candidates: Option<u32>,
}

impl MessageReport {
    pub fn new(
        message: u32,
        lab_no: i64,
        lab_type: Option<&'static str>,
        outcome: &'static str,
        candidates: Option<usize>,
    ) -> Self {
        MessageReport {
            message,
            lab_no,
            lab_type: lab_type.map(Code::of),
            outcome: Code::of(outcome),
            candidates: candidates.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }
    pub fn lab_type(&self) -> Option<&'static str> {
        self.lab_type.map(Code::text)
    }
    /// `matched`, or why not: `not_found`, `birth_date_mismatch`, `ambiguous`, …
    pub fn outcome(&self) -> &'static str {
        self.outcome.text()
    }
    pub fn candidates(&self) -> Option<u32> {
        self.candidates
    }
}

impl Serialize for MessageReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("message", &self.message)?;
        m.serialize_entry("lab_no", &self.lab_no)?;
        if let Some(t) = self.lab_type() {
            m.serialize_entry("lab_type", t)?;
        }
        m.serialize_entry("outcome", self.outcome())?;
        if let Some(c) = self.candidates {
            m.serialize_entry("candidates", &c)?;
        }
        m.end()
    }
}

/// One of the few distinct codes a report holds (lab types, match outcomes), each stored
/// once for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Code(u8);

static CODES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

impl Code {
    fn of(text: &'static str) -> Code {
        let Ok(mut codes) = CODES.lock() else {
            return Code(u8::MAX);
        };
        if let Some(i) = codes.iter().position(|c| *c == text) {
            return Code(i as u8);
        }
        if codes.len() >= usize::from(u8::MAX) {
            return Code(u8::MAX);
        }
        codes.push(text);
        Code((codes.len() - 1) as u8)
    }
    fn text(self) -> &'static str {
        CODES
            .lock()
            .ok()
            .and_then(|c| c.get(usize::from(self.0)).copied())
            .unwrap_or("other")
    }
}

/// Collects [`InputReport`]s keyed by input label, in first-seen order.
#[derive(Default)]
pub struct ReportCollector {
    inner: Mutex<(Vec<String>, BTreeMap<String, InputReport>)>,
    progress: Option<indicatif::ProgressBar>,
}

impl ReportCollector {
    pub fn new(progress: Option<indicatif::ProgressBar>) -> Self {
        Self {
            inner: Mutex::new((Vec::new(), BTreeMap::new())),
            progress,
        }
    }

    /// The reports, in the order inputs were first seen; taken out of the collector (not
    /// copied: a replay's report can hold a million labs), so a second call gets none.
    pub fn reports(&self) -> Vec<InputReport> {
        match self.inner.lock() {
            Ok(mut g) => {
                let (order, mut map) = std::mem::take(&mut *g);
                order.into_iter().filter_map(|k| map.remove(&k)).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    fn with(&self, key: String, f: impl FnOnce(&mut InputReport)) {
        if let Ok(mut g) = self.inner.lock() {
            let (order, map) = &mut *g;
            let r = map.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                InputReport {
                    input: key,
                    ..Default::default()
                }
            });
            f(r);
        }
    }
}

impl Observer for ReportCollector {
    fn observe(&self, e: &Event<'_>) {
        match e {
            Event::Received { prov, .. } => self.with(prov.origin.label(), |_| {}),
            Event::Parsed { prov, found, .. } => self.with(prov.origin.label(), |r| {
                r.messages_found += found;
                r.messages.reserve_exact(*found as usize);
            }),
            Event::Imported {
                prov,
                outcome,
                part,
                lab_no,
                lab,
                ..
            } => self.with(prov.origin.label(), |r| {
                r.imported += 1;
                if *outcome == "matched" {
                    r.matched += 1;
                } else {
                    r.unmatched += 1;
                }
                let m = MessageReport::new(
                    part + 1,
                    *lab_no,
                    lab.map(|l| l.lab_type),
                    outcome,
                    lab.and_then(|l| l.candidates),
                );
                let at = r.messages.partition_point(|x| x.message <= m.message);
                r.messages.insert(at, m);
            }),
            Event::Duplicate { prov, messages, .. } => {
                self.with(prov.origin.label(), |r| r.duplicates += messages)
            }
            Event::DeadLettered {
                prov,
                reason,
                dead_letter_id,
                ..
            } => self.with(prov.origin.label(), |r| {
                r.dead_lettered += 1;
                *r.reasons.entry(reason.as_str().to_string()).or_default() += 1;
                r.dead_letter_ids.push(dead_letter_id.to_string());
            }),
            Event::Settled { prov, status, .. } => {
                self.with(prov.origin.label(), |r| r.status = Some(*status));
                if let Some(p) = &self.progress {
                    p.inc(1);
                }
            }
            Event::Retrying { .. }
            | Event::NotDelivered { .. }
            | Event::ReleaseFailed { .. }
            | Event::Polled { .. }
            | Event::Body { .. }
            | Event::PollFailed { .. }
            | Event::Outbound { .. }
            | Event::QueueRound { .. }
            | Event::QueueRoundFailed { .. } => {}
        }
    }
}
