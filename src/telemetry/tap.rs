//! [`TapHub`]: a live sample of what passes a component (`oscarflow tap`), served by the
//! daemon's endpoint at `GET /tap/<pipeline>/<component>` as one JSON object per line.
//!
//! A record holds ids, provenance (source, kind, attempt, content hash), sizes and outcomes:
//! never a body, name or file path. Bodies are sent only to a tap that asks for them
//! (`--bodies`) and only while the daemon runs with `--log-bodies`, the one switch that
//! lets patient information out. With no tap connected, observing costs one atomic load.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{Event, Observer};
use crate::ack::BatchStatus;

/// One tapped event.
#[derive(Debug, Clone)]
pub struct TapRecord {
    pub pipeline: Arc<str>,
    pub component: Arc<str>,
    /// The record as JSON (bodies excluded).
    pub json: Value,
    /// The bytes, for a [`Event::Body`] (only emitted under `--log-bodies`).
    pub body: Option<Arc<[u8]>>,
}

/// Fans events out to connected taps.
pub struct TapHub {
    tx: broadcast::Sender<Arc<TapRecord>>,
}

impl TapHub {
    pub fn new() -> Arc<Self> {
        Arc::new(TapHub {
            tx: broadcast::channel(1024).0,
        })
    }
    /// A live feed of every tapped event (filter by pipeline and component). A slow reader
    /// skips records rather than slowing the pipeline.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TapRecord>> {
        self.tx.subscribe()
    }
}

fn status_name(s: BatchStatus) -> &'static str {
    match s {
        BatchStatus::Delivered => "delivered",
        BatchStatus::DeadLettered => "dead_lettered",
        BatchStatus::Failed => "failed",
    }
}

impl Observer for TapHub {
    fn observe(&self, e: &Event<'_>) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let prov_json = |p: &crate::envelope::Provenance| {
            json!({
                "source": &*p.source,
                "source_kind": &*p.source_kind,
                "attempt": p.attempt,
                "sha256": p.sha256_hex(),
                "received_at": p.received_at.unix_timestamp(),
            })
        };
        let (pipeline, component, body, record): (&str, &str, Option<&[u8]>, Value) = match e {
            Event::Received { prov, bytes } => (
                &prov.pipeline,
                &prov.source,
                None,
                json!({"event": "received", "bytes": bytes, "provenance": prov_json(prov)}),
            ),
            Event::Parsed {
                prov,
                component,
                found,
            } => (
                &prov.pipeline,
                component,
                None,
                json!({"event": "parsed", "messages": found, "provenance": prov_json(prov)}),
            ),
            Event::Imported {
                prov,
                component,
                part,
                lab_no,
                outcome,
                lab,
            } => (
                &prov.pipeline,
                component,
                None,
                json!({"event": "committed", "part": part, "row": lab_no, "outcome": outcome, "lab_type": lab.map(|l| l.lab_type), "candidates": lab.and_then(|l| l.candidates), "provenance": prov_json(prov)}),
            ),
            Event::Appointment {
                prov,
                component,
                part,
                appointment_no,
                event,
                outcome,
                flagged,
            } => (
                &prov.pipeline,
                component,
                None,
                json!({"event": "committed", "part": part, "row": appointment_no, "trigger": event, "outcome": outcome, "flagged": flagged, "provenance": prov_json(prov)}),
            ),
            Event::Duplicate {
                prov,
                component,
                messages,
            } => (
                &prov.pipeline,
                component,
                None,
                json!({"event": "duplicate", "messages": messages, "provenance": prov_json(prov)}),
            ),
            Event::DeadLettered {
                prov,
                component,
                part,
                reason,
                dead_letter_id,
            } => (
                &prov.pipeline,
                component,
                None,
                json!({"event": "dead_lettered", "part": part, "reason": reason.as_str(), "dead_letter": dead_letter_id, "provenance": prov_json(prov)}),
            ),
            Event::Retrying {
                prov,
                component,
                attempt,
                kind,
                ..
            } => (
                &prov.pipeline,
                component,
                None,
                json!({"event": "retrying", "attempt": attempt, "kind": kind.to_string(), "provenance": prov_json(prov)}),
            ),
            Event::NotDelivered {
                prov, component, ..
            } => (
                &prov.pipeline,
                component,
                None,
                json!({"event": "not_delivered", "provenance": prov_json(prov)}),
            ),
            Event::Settled {
                prov,
                status,
                released,
            } => (
                &prov.pipeline,
                &prov.source,
                None,
                json!({"event": "settled", "status": status_name(*status), "released": released, "provenance": prov_json(prov)}),
            ),
            Event::ReleaseFailed { prov, .. } => (
                &prov.pipeline,
                &prov.source,
                None,
                json!({"event": "release_failed", "provenance": prov_json(prov)}),
            ),
            Event::Body {
                prov,
                component,
                body,
            } => (
                &prov.pipeline,
                component,
                Some(body),
                json!({"event": "body", "bytes": body.len(), "provenance": prov_json(prov)}),
            ),
            Event::Polled {
                pipeline,
                component,
                messages,
            } => (
                pipeline,
                component,
                None,
                json!({"event": "polled", "messages": messages}),
            ),
            Event::PollFailed {
                pipeline,
                component,
                ..
            } => (pipeline, component, None, json!({"event": "poll_failed"})),
            Event::Outbound {
                prov,
                component,
                row,
                outcome,
            } => (
                &prov.pipeline,
                component,
                None,
                json!({"event": "outbound", "row": row, "outcome": outcome, "provenance": prov_json(prov)}),
            ),
            Event::QueueRound {
                pipeline,
                component,
                claimed,
                outcomes,
                pending,
                ..
            } => (
                pipeline,
                component,
                None,
                json!({"event": "queue_round", "claimed": claimed, "outcomes": outcomes.iter().map(|(o, n)| (o.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(), "pending": pending}),
            ),
            Event::QueueRoundFailed {
                pipeline,
                component,
                reason,
                ..
            } => (
                pipeline,
                component,
                None,
                json!({"event": "queue_round_failed", "reason": reason}),
            ),
        };
        let mut record = record;
        if let Value::Object(m) = &mut record {
            m.insert("pipeline".into(), pipeline.into());
            m.insert("component".into(), component.into());
            m.insert(
                "at".into(),
                time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
                    .into(),
            );
        }
        let _ = self.tx.send(Arc::new(TapRecord {
            pipeline: Arc::from(pipeline),
            component: Arc::from(component),
            json: record,
            body: body.map(Arc::from),
        }));
    }
}
