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
    #[serde(skip_serializing_if = "Messages::is_empty")]
    pub messages: Messages,
    /// Every scheduling message applied to OSCAR's appointment book from this input (or
    /// found to change nothing), in the order of the input.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub appointments: Vec<AppointmentReport>,
}

/// One scheduling message of an input: what it did to which appointment. Ids and codes only.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AppointmentReport {
    /// 1-based position of the message in its input.
    pub message: u32,
    /// `appointment.appointment_no`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appointment_no: Option<i64>,
    /// The trigger event (`S12`, `S13`, …).
    pub event: &'static str,
    /// `booked`, `rescheduled`, `modified`, `cancelled`, `deleted`, `no_show`, or
    /// `unchanged` / `superseded` (nothing written).
    pub outcome: &'static str,
    /// Booked over another appointment (`on_conflict = "book_and_flag"`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flagged: bool,
}

/// The labs of one input, kept as runs: consecutive messages with consecutive lab numbers
/// and the same type and outcome (a group commit numbers a file's labs consecutively) are
/// one 24-byte entry, so a replay of a million labs in files of a thousand holds about a
/// thousand entries, not a million. Serialized as the list of every lab.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Messages {
    runs: Vec<Run>,
}

/// `len` labs: messages `message..message + len`, lab numbers `lab_no..lab_no + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    message: u32,
    len: u32,
    lab_no: i64,
    /// `u32::MAX`: none.
    candidates: u32,
    lab_type: Option<Code>,
    outcome: Code,
}

impl Run {
    fn of(m: &MessageReport) -> Run {
        Run {
            message: m.message,
            len: 1,
            lab_no: m.lab_no,
            candidates: m.candidates.unwrap_or(u32::MAX),
            lab_type: m.lab_type,
            outcome: m.outcome,
        }
    }

    /// Whether `next` directly follows this run (next message, next lab number) and has
    /// its type and outcome.
    fn continues(&self, next: &Run) -> bool {
        u64::from(self.message) + u64::from(self.len) == u64::from(next.message)
            && self.lab_no.checked_add(i64::from(self.len)) == Some(next.lab_no)
            && (self.candidates, self.lab_type, self.outcome)
                == (next.candidates, next.lab_type, next.outcome)
    }

    fn get(&self, i: u32) -> MessageReport {
        MessageReport {
            message: self.message + i,
            lab_no: self.lab_no + i64::from(i),
            lab_type: self.lab_type,
            outcome: self.outcome,
            candidates: (self.candidates != u32::MAX).then_some(self.candidates),
        }
    }
}

impl Messages {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many labs.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.len as usize).sum()
    }

    /// Adds a lab in its place (by message number).
    pub fn insert(&mut self, m: MessageReport) {
        let new = Run::of(&m);
        let at = self.runs.partition_point(|r| r.message <= m.message);
        if at > 0 && self.runs[at - 1].continues(&new) {
            self.runs[at - 1].len += 1;
            // It may now touch the run after it.
            if at < self.runs.len() && self.runs[at - 1].continues(&self.runs[at]) {
                let next = self.runs.remove(at);
                self.runs[at - 1].len += next.len;
            }
        } else if at < self.runs.len() && new.continues(&self.runs[at]) {
            let next = &mut self.runs[at];
            next.message = new.message;
            next.lab_no = new.lab_no;
            next.len += 1;
        } else {
            self.runs.insert(at, new);
        }
    }

    /// Every lab, in message order.
    pub fn iter(&self) -> impl Iterator<Item = MessageReport> + '_ {
        self.runs.iter().flat_map(|r| (0..r.len).map(|i| r.get(i)))
    }
}

impl Serialize for Messages {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// One committed lab of an input: ids and bounded codes, no PHI; serialized as
/// `{message, lab_no, lab_type?, outcome, candidates?}`. Held in [`Messages`].
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
            Event::Parsed { prov, found, .. } => {
                self.with(prov.origin.label(), |r| r.messages_found += found)
            }
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
                r.messages.insert(m);
            }),
            Event::Appointment {
                prov,
                part,
                appointment_no,
                event,
                outcome,
                flagged,
                ..
            } => self.with(prov.origin.label(), |r| {
                if matches!(*outcome, "unchanged" | "superseded") {
                    r.duplicates += 1;
                } else {
                    r.imported += 1;
                    r.matched += 1;
                }
                let a = AppointmentReport {
                    message: part + 1,
                    appointment_no: *appointment_no,
                    event,
                    outcome,
                    flagged: *flagged,
                };
                let at = r.appointments.partition_point(|x| x.message <= a.message);
                r.appointments.insert(at, a);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(message: u32, lab_no: i64, outcome: &'static str) -> MessageReport {
        MessageReport::new(message, lab_no, Some("PATHL7"), outcome, None)
    }

    #[test]
    fn a_file_of_consecutive_labs_is_one_entry_and_lists_every_lab_in_order() {
        assert_eq!(std::mem::size_of::<Run>(), 24);
        let mut m = Messages::default();
        // Out of order, as concurrent events may arrive.
        for i in (1..=1000u32).rev() {
            m.insert(lab(i, 5000 + i64::from(i), "not_found"));
        }
        assert_eq!(m.runs.len(), 1, "{:?}", &m.runs[..m.runs.len().min(3)]);
        assert_eq!(m.len(), 1000);
        let all: Vec<MessageReport> = m.iter().collect();
        assert_eq!(all[0], lab(1, 5001, "not_found"));
        assert_eq!(all[999], lab(1000, 6000, "not_found"));
        assert!(all.windows(2).all(|w| w[0].message + 1 == w[1].message));
    }

    #[test]
    fn labs_that_differ_in_outcome_candidates_or_numbering_keep_their_own_values() {
        let mut m = Messages::default();
        let labs = vec![
            lab(1, 10, "matched"),
            lab(2, 11, "matched"),
            lab(3, 12, "not_found"),
            MessageReport::new(4, 13, Some("PATHL7"), "ambiguous", Some(2)),
            MessageReport::new(5, 14, Some("PATHL7"), "ambiguous", Some(3)),
            lab(6, 20, "matched"),
            MessageReport::new(7, 21, None, "matched", None),
            lab(8, 22, "matched"),
        ];
        for l in labs.iter().rev() {
            m.insert(*l);
        }
        assert_eq!(m.iter().collect::<Vec<_>>(), labs);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 8);
        assert_eq!(
            json[3],
            serde_json::json!({"message": 4, "lab_no": 13, "lab_type": "PATHL7", "outcome": "ambiguous", "candidates": 2})
        );
        assert_eq!(
            json[6],
            serde_json::json!({"message": 7, "lab_no": 21, "outcome": "matched"})
        );
    }
}
