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

/// One committed lab of an input: ids and bounded codes, no PHI.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageReport {
    /// 1-based position of the message in its input.
    pub message: u32,
    /// `hl7TextMessage.lab_id` (or `document.document_no` for a document).
    pub lab_no: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lab_type: Option<&'static str>,
    /// `matched`, or why not: `not_found`, `birth_date_mismatch`, `ambiguous`, …
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
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

    /// The reports, in the order inputs were first seen.
    pub fn reports(&self) -> Vec<InputReport> {
        match self.inner.lock() {
            Ok(g) => g.0.iter().filter_map(|k| g.1.get(k).cloned()).collect(),
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
                let m = MessageReport {
                    message: part + 1,
                    lab_no: *lab_no,
                    lab_type: lab.map(|l| l.lab_type),
                    outcome,
                    candidates: lab.and_then(|l| l.candidates),
                };
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
