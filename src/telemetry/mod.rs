//! Telemetry: [`Event`]s that every component emits, observed by logs + metrics
//! ([`Telemetry`]) and by reports (`replay`).
//!
//! One event emits both the log line and the metric, so they cannot drift. Metric names come
//! from [`MetricName`] (`oscarflow_<noun>_<unit>[_total]`), labels carry bounded values only
//! (pipeline, component, reason, outcome). Log fields are ids, hashes, counts and positions:
//! no names, health numbers, dates of birth or message bodies.

use std::sync::Arc;

pub mod tap;

use crate::ack::BatchStatus;
use crate::envelope::Provenance;
use crate::error::ErrorKind;
use crate::error::ReasonCode;

/// Every metric oscarflow records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricName {
    InputsReceived,
    InputBytesReceived,
    MessagesParsed,
    MessagesImported,
    LabsUnmatched,
    MessagesDuplicate,
    MessagesDeadLettered,
    Retries,
    InputsReleased,
    InputReleaseFailures,
    ImportDurationSeconds,
    InputsSettled,
    SourcePolls,
    SourcePollFailures,
    SourceLastSuccess,
    ListenerConnectionsClosed,
    StageDurationSeconds,
    PipelineUp,
    PipelinePaused,
    DatabaseOutage,
    GroupCommitFiles,
    InputsInFlight,
    InputBytesInFlight,
    OldestUnackedAge,
    EnvelopesQueued,
    OutboundMessages,
    OutboundRoundFailures,
    OutboundLastRound,
    ArchiveObjects,
    ArchiveBytes,
    ArchiveFailures,
    ArchiveDurationSeconds,
    AlertNotifications,
    AlertsFiring,
    AlertNotifierFailing,
}

impl MetricName {
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricName::InputsReceived => "oscarflow_inputs_received_total",
            MetricName::InputBytesReceived => "oscarflow_input_bytes_received_total",
            MetricName::MessagesParsed => "oscarflow_messages_parsed_total",
            MetricName::MessagesImported => "oscarflow_messages_imported_total",
            MetricName::LabsUnmatched => "oscarflow_labs_unmatched_total",
            MetricName::MessagesDuplicate => "oscarflow_messages_duplicate_total",
            MetricName::MessagesDeadLettered => "oscarflow_messages_dead_lettered_total",
            MetricName::Retries => "oscarflow_retries_total",
            MetricName::InputsReleased => "oscarflow_inputs_released_total",
            MetricName::InputReleaseFailures => "oscarflow_input_release_failures_total",
            MetricName::ImportDurationSeconds => "oscarflow_import_duration_seconds",
            MetricName::InputsSettled => "oscarflow_inputs_settled_total",
            MetricName::SourcePolls => "oscarflow_source_polls_total",
            MetricName::SourcePollFailures => "oscarflow_source_poll_failures_total",
            MetricName::SourceLastSuccess => "oscarflow_source_last_success_timestamp_seconds",
            MetricName::ListenerConnectionsClosed => "oscarflow_listener_connections_closed_total",
            MetricName::StageDurationSeconds => "oscarflow_stage_duration_seconds",
            MetricName::PipelineUp => "oscarflow_pipeline_up_info",
            MetricName::PipelinePaused => "oscarflow_pipeline_paused_info",
            MetricName::DatabaseOutage => "oscarflow_database_outage_seconds",
            MetricName::GroupCommitFiles => "oscarflow_group_commit_files",
            MetricName::InputsInFlight => "oscarflow_inputs_in_flight_count",
            MetricName::InputBytesInFlight => "oscarflow_input_bytes_in_flight",
            MetricName::OldestUnackedAge => "oscarflow_oldest_unacked_age_seconds",
            MetricName::EnvelopesQueued => "oscarflow_envelopes_queued_count",
            MetricName::OutboundMessages => "oscarflow_outbound_messages_total",
            MetricName::OutboundRoundFailures => "oscarflow_outbound_round_failures_total",
            MetricName::OutboundLastRound => "oscarflow_outbound_last_round_timestamp_seconds",
            MetricName::ArchiveObjects => "oscarflow_archive_objects_total",
            MetricName::ArchiveBytes => "oscarflow_archive_bytes_total",
            MetricName::ArchiveFailures => "oscarflow_archive_failures_total",
            MetricName::ArchiveDurationSeconds => "oscarflow_archive_duration_seconds",
            MetricName::AlertNotifications => "oscarflow_alert_notifications_total",
            MetricName::AlertsFiring => "oscarflow_alerts_firing_count",
            MetricName::AlertNotifierFailing => "oscarflow_alert_notifier_failing_info",
        }
    }
}

/// What a committed lab adds to [`Event::Imported`]: bounded codes and counts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabDetail {
    /// OSCAR's lab type (`PATHL7`, `IHAPOI`, …).
    pub lab_type: &'static str,
    /// False for every unmatched outcome; `outcome` is then the reason.
    pub matched: bool,
    /// Charts involved in an unmatched outcome (`ambiguous`, `*_mismatch`).
    pub candidates: Option<usize>,
}

/// Something that happened to an input or message.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// A source made an envelope from an input.
    Received { prov: &'a Provenance, bytes: usize },
    /// The parse stage framed an input: `found` messages (good and bad).
    Parsed {
        prov: &'a Provenance,
        component: &'a str,
        found: u32,
    },
    /// A message was committed to OSCAR: a lab (`lab_no` is `hl7TextMessage.lab_no`,
    /// `outcome` the match outcome) or a document (`lab_no` is `document.document_no`,
    /// `outcome` `unclaimed_document`).
    Imported {
        prov: &'a Provenance,
        component: &'a str,
        part: u32,
        lab_no: i64,
        outcome: &'static str,
        /// For a lab: its type and the match's details.
        lab: Option<LabDetail>,
    },
    /// A scheduling message was applied to OSCAR's appointment book (in one committed
    /// transaction): `event` its trigger (`S12`…), `outcome` what it did (`booked`,
    /// `rescheduled`, `modified`, `cancelled`, `deleted`, `no_show`, or `unchanged` /
    /// `superseded` when it changed nothing), `appointment_no` the row.
    Appointment {
        prov: &'a Provenance,
        component: &'a str,
        part: u32,
        appointment_no: Option<i64>,
        event: &'static str,
        outcome: &'static str,
        /// Booked although it overlaps another appointment (`on_conflict = "book_and_flag"`).
        flagged: bool,
    },
    /// An input's messages were already imported (same file MD5).
    Duplicate {
        prov: &'a Provenance,
        component: &'a str,
        messages: u32,
    },
    /// A message (or a whole input) went to the dead-letter store.
    DeadLettered {
        prov: &'a Provenance,
        component: &'a str,
        part: Option<u32>,
        reason: ReasonCode,
        dead_letter_id: &'a str,
    },
    /// A transient error; the component retries after a backoff.
    Retrying {
        prov: &'a Provenance,
        component: &'a str,
        attempt: u32,
        kind: ErrorKind,
        error: &'a str,
    },
    /// A message could not be committed nor dead-lettered: its input stays for re-delivery.
    NotDelivered {
        prov: &'a Provenance,
        component: &'a str,
        error: &'a str,
    },
    /// The source acted on the batch outcome (released or kept its input).
    Settled {
        prov: &'a Provenance,
        status: BatchStatus,
        released: bool,
    },
    /// Releasing an input failed (it will be re-delivered; the sink dedupes).
    ReleaseFailed {
        prov: &'a Provenance,
        error: &'a str,
    },
    /// A polling source finished a poll.
    Polled {
        pipeline: &'a str,
        component: &'a str,
        messages: u32,
    },
    /// An input's bytes, emitted only while [`bodies_logged`] (the `--log-bodies` switch):
    /// PHI, logged at debug level under the target `oscarflow::phi`.
    Body {
        prov: &'a Provenance,
        component: &'a str,
        body: &'a [u8],
    },
    /// A polling source's poll failed (PHI-free reason); it tries again at the next poll.
    PollFailed {
        pipeline: &'a str,
        component: &'a str,
        error: &'a str,
    },
    /// An outbound sink acted on a queue job: `outcome` is what it did (`sent`, `adopted`,
    /// `completed`, `unknown`, `waiting`, …), `row` the queue row's id.
    Outbound {
        prov: &'a Provenance,
        component: &'a str,
        row: i64,
        outcome: &'static str,
    },
    /// A queue source finished a round (`kind` `fax` or `sms`, `queue` its configured name).
    QueueRound {
        pipeline: &'a str,
        component: &'a str,
        kind: &'static str,
        queue: &'a str,
        claimed: u32,
        outcomes: &'a [(&'static str, u32)],
        pending: u32,
    },
    /// A queue source's round failed (bounded `reason`, PHI-free `error`); it tries again
    /// at the next round.
    QueueRoundFailed {
        pipeline: &'a str,
        component: &'a str,
        queue: &'a str,
        reason: &'static str,
        error: &'a str,
    },
}

/// Receives events.
pub trait Observer: Send + Sync {
    fn observe(&self, event: &Event<'_>);
}

/// A set of observers.
#[derive(Clone, Default)]
pub struct Observers(Vec<Arc<dyn Observer>>);

impl Observers {
    /// Logs and metrics only.
    pub fn standard() -> Self {
        Observers(vec![Arc::new(Telemetry)])
    }
    pub fn with(mut self, o: Arc<dyn Observer>) -> Self {
        self.0.push(o);
        self
    }
    pub fn emit(&self, e: Event<'_>) {
        for o in &self.0 {
            o.observe(&e);
        }
    }
}

/// The standard observer: a `tracing` line and a `metrics` update per event.
pub struct Telemetry;

fn labels_of(labels: &[(&'static str, String)]) -> Vec<metrics::Label> {
    labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect()
}

/// Adds `n` to a counter. Every metric goes through these three functions (the raw
/// `metrics` macros are disallowed elsewhere by `clippy.toml`), so names come from
/// [`MetricName`] and labels are the bounded ones passed here.
#[allow(clippy::disallowed_macros)]
pub fn counter(name: MetricName, labels: &[(&'static str, String)], n: u64) {
    metrics::counter!(name.as_str(), labels_of(labels)).increment(n);
}

/// Sets a gauge.
#[allow(clippy::disallowed_macros)]
pub fn gauge(name: MetricName, labels: &[(&'static str, String)], value: f64) {
    metrics::gauge!(name.as_str(), labels_of(labels)).set(value);
}

/// Records a histogram value.
#[allow(clippy::disallowed_macros)]
pub fn histogram(name: MetricName, labels: &[(&'static str, String)], value: f64) {
    metrics::histogram!(name.as_str(), labels_of(labels)).record(value);
}

impl Observer for Telemetry {
    fn observe(&self, e: &Event<'_>) {
        match e {
            Event::Received { prov, bytes } => {
                tracing::debug!(pipeline = %prov.pipeline, source = %prov.source, sha = %prov.short_hash(), bytes, "Input received.");
                let l = [
                    ("pipeline", prov.pipeline.to_string()),
                    ("component", prov.source.to_string()),
                ];
                counter(MetricName::InputsReceived, &l, 1);
                counter(MetricName::InputBytesReceived, &l, *bytes as u64);
            }
            Event::Parsed {
                prov,
                component,
                found,
            } => {
                tracing::debug!(pipeline = %prov.pipeline, component, sha = %prov.short_hash(), found, "Input framed.");
                counter(
                    MetricName::MessagesParsed,
                    &[
                        ("pipeline", prov.pipeline.to_string()),
                        ("component", component.to_string()),
                    ],
                    u64::from(*found),
                );
            }
            Event::Imported {
                prov,
                component,
                part,
                lab_no,
                outcome,
                lab,
            } => {
                match lab {
                    Some(l) => {
                        tracing::info!(pipeline = %prov.pipeline, component, sha = %prov.short_hash(), part, lab_no, patient = outcome, lab_type = l.lab_type, candidates = l.candidates, "Imported into OSCAR.");
                    }
                    // A document (a received fax): its row is `document.document_no`, and
                    // a fax is known by its RingCentral message id.
                    None => {
                        let fax_id = match &prov.origin {
                            crate::envelope::Origin::Fax { message_id } => {
                                Some(message_id.as_str())
                            }
                            _ => None,
                        };
                        tracing::info!(pipeline = %prov.pipeline, component, sha = %prov.short_hash(), document_no = lab_no, fax_id, patient = outcome, "Imported into OSCAR.");
                    }
                }
                if let Some(l) = lab.filter(|l| !l.matched) {
                    counter(
                        MetricName::LabsUnmatched,
                        &[
                            ("pipeline", prov.pipeline.to_string()),
                            ("component", component.to_string()),
                            ("reason", outcome.to_string()),
                            ("lab_type", l.lab_type.to_string()),
                        ],
                        1,
                    );
                }
                counter(
                    MetricName::MessagesImported,
                    &[
                        ("pipeline", prov.pipeline.to_string()),
                        ("component", component.to_string()),
                        ("outcome", outcome.to_string()),
                    ],
                    1,
                );
            }
            Event::Appointment {
                prov,
                component,
                part,
                appointment_no,
                event,
                outcome,
                flagged,
            } => {
                tracing::info!(pipeline = %prov.pipeline, component, sha = %prov.short_hash(), part, appointment_no, event, outcome, flagged, "Appointment book updated.");
                counter(
                    MetricName::MessagesImported,
                    &[
                        ("pipeline", prov.pipeline.to_string()),
                        ("component", component.to_string()),
                        ("outcome", outcome.to_string()),
                    ],
                    1,
                );
            }
            Event::Duplicate {
                prov,
                component,
                messages,
            } => {
                tracing::info!(pipeline = %prov.pipeline, component, sha = %prov.short_hash(), messages, "Input already imported; nothing written.");
                counter(
                    MetricName::MessagesDuplicate,
                    &[
                        ("pipeline", prov.pipeline.to_string()),
                        ("component", component.to_string()),
                    ],
                    u64::from(*messages),
                );
            }
            Event::DeadLettered {
                prov,
                component,
                part,
                reason,
                dead_letter_id,
            } => {
                tracing::warn!(pipeline = %prov.pipeline, component, sha = %prov.short_hash(), part = *part, reason = %reason, dead_letter = dead_letter_id, "Message dead-lettered.");
                counter(
                    MetricName::MessagesDeadLettered,
                    &[
                        ("pipeline", prov.pipeline.to_string()),
                        ("component", component.to_string()),
                        ("reason", reason.as_str().to_string()),
                    ],
                    1,
                );
            }
            Event::Retrying {
                prov,
                component,
                attempt,
                kind,
                error,
            } => {
                tracing::warn!(pipeline = %prov.pipeline, component, sha = %prov.short_hash(), attempt, kind = %kind, error, "Retrying after error.");
                counter(
                    MetricName::Retries,
                    &[
                        ("pipeline", prov.pipeline.to_string()),
                        ("component", component.to_string()),
                    ],
                    1,
                );
            }
            Event::NotDelivered {
                prov,
                component,
                error,
            } => {
                tracing::error!(pipeline = %prov.pipeline, component, sha = %prov.short_hash(), error, "Message neither committed nor dead-lettered; its input stays for re-delivery.");
            }
            Event::Settled {
                prov,
                status,
                released,
            } => {
                tracing::debug!(pipeline = %prov.pipeline, source = %prov.source, sha = %prov.short_hash(), status = ?status, released, "Input settled.");
                let status_label = match status {
                    BatchStatus::Delivered => "delivered",
                    BatchStatus::DeadLettered => "dead_lettered",
                    BatchStatus::Failed => "failed",
                };
                counter(
                    MetricName::InputsSettled,
                    &[
                        ("pipeline", prov.pipeline.to_string()),
                        ("component", prov.source.to_string()),
                        ("status", status_label.to_string()),
                    ],
                    1,
                );
                if *released {
                    counter(
                        MetricName::InputsReleased,
                        &[
                            ("pipeline", prov.pipeline.to_string()),
                            ("component", prov.source.to_string()),
                        ],
                        1,
                    );
                }
            }
            Event::Polled {
                pipeline,
                component,
                messages,
            } => {
                tracing::debug!(pipeline, component, messages, "Poll done.");
                let l = [
                    ("pipeline", pipeline.to_string()),
                    ("component", component.to_string()),
                ];
                counter(MetricName::SourcePolls, &l, 1);
                let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
                gauge(MetricName::SourceLastSuccess, &l, now);
            }
            Event::PollFailed {
                pipeline,
                component,
                error,
            } => {
                tracing::warn!(pipeline, component, error, "Poll failed.");
                counter(
                    MetricName::SourcePollFailures,
                    &[
                        ("pipeline", pipeline.to_string()),
                        ("component", component.to_string()),
                    ],
                    1,
                );
            }
            Event::Outbound {
                prov,
                component,
                row,
                outcome,
            } => {
                tracing::info!(pipeline = %prov.pipeline, component, source = %prov.source, row, outcome, "Outbound job done.");
            }
            Event::QueueRound {
                pipeline,
                component,
                kind,
                queue,
                claimed,
                outcomes,
                pending,
            } => {
                tracing::info!(pipeline, component, queue, claimed, outcomes = ?outcomes, pending, "Queue round done.");
                for (outcome, n) in outcomes.iter() {
                    counter(
                        MetricName::OutboundMessages,
                        &[
                            ("kind", kind.to_string()),
                            ("worker", queue.to_string()),
                            ("outcome", outcome.to_string()),
                        ],
                        u64::from(*n),
                    );
                }
                counter(
                    MetricName::OutboundMessages,
                    &[
                        ("kind", kind.to_string()),
                        ("worker", queue.to_string()),
                        ("outcome", "claimed".to_string()),
                    ],
                    u64::from(*claimed),
                );
                gauge(
                    MetricName::OutboundLastRound,
                    &[("kind", kind.to_string()), ("worker", queue.to_string())],
                    time::OffsetDateTime::now_utc().unix_timestamp() as f64,
                );
                let l = [
                    ("pipeline", pipeline.to_string()),
                    ("component", component.to_string()),
                ];
                counter(MetricName::SourcePolls, &l, 1);
                gauge(
                    MetricName::SourceLastSuccess,
                    &l,
                    time::OffsetDateTime::now_utc().unix_timestamp() as f64,
                );
            }
            Event::QueueRoundFailed {
                pipeline,
                component,
                queue,
                reason,
                error,
            } => {
                tracing::error!(
                    pipeline,
                    component,
                    queue,
                    reason,
                    error,
                    "Queue round failed; trying again at the next round."
                );
                counter(
                    MetricName::OutboundRoundFailures,
                    &[
                        ("worker", queue.to_string()),
                        ("reason", reason.to_string()),
                    ],
                    1,
                );
                counter(
                    MetricName::SourcePollFailures,
                    &[
                        ("pipeline", pipeline.to_string()),
                        ("component", component.to_string()),
                    ],
                    1,
                );
            }
            Event::Body {
                prov,
                component,
                body,
            } => {
                tracing::debug!(target: "oscarflow::phi", pipeline = %prov.pipeline, component, sha = %prov.short_hash(), body = %String::from_utf8_lossy(body), "PHI: message body (--log-bodies).");
            }
            Event::ReleaseFailed { prov, error } => {
                tracing::error!(pipeline = %prov.pipeline, source = %prov.source, sha = %prov.short_hash(), error, "Releasing the input failed; it will be re-delivered and deduplicated.");
                counter(
                    MetricName::InputReleaseFailures,
                    &[
                        ("pipeline", prov.pipeline.to_string()),
                        ("component", prov.source.to_string()),
                    ],
                    1,
                );
            }
        }
    }
}

static LOG_BODIES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns on logging of message bodies (`oscarflow run --log-bodies`): a debugging switch
/// that puts patient information into the logs. Off by default; turning it on is logged
/// at `warn` level, and every body line carries the target `oscarflow::phi` so that it can
/// be found and purged.
pub fn set_log_bodies(on: bool) {
    LOG_BODIES.store(on, std::sync::atomic::Ordering::SeqCst);
    if on {
        tracing::warn!(target: "oscarflow::phi", "PHI WARNING: --log-bodies is on. Message bodies (patient names, health numbers, results) will be written to the logs at debug level. Use it only to debug, turn it off again, and purge these logs.");
    }
}

/// Whether message bodies may be logged (see [`set_log_bodies`]).
pub fn bodies_logged() -> bool {
    LOG_BODIES.load(std::sync::atomic::Ordering::SeqCst)
}

/// The log level used unless `RUST_LOG` says otherwise: `info`, but `warn` for a command
/// that draws a progress bar on a terminal (`replay`), where a line per message would only
/// scroll the bar away; its report says what happened to every message.
pub fn default_log_level(draws_progress: bool, stderr_is_terminal: bool) -> &'static str {
    if draws_progress && stderr_is_terminal {
        "warn"
    } else {
        "info"
    }
}

/// The progress bar on stderr, if one is drawn: log lines are written above it.
static PROGRESS: std::sync::RwLock<Option<indicatif::ProgressBar>> = std::sync::RwLock::new(None);

/// Makes log lines go above `bar` (hiding it while a line is written) until called with
/// `None`.
pub fn log_above(bar: Option<indicatif::ProgressBar>) {
    if let Ok(mut p) = PROGRESS.write() {
        *p = bar;
    }
}

/// stderr, around the progress bar of [`log_above`].
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = PROGRESS.read().ok().and_then(|p| p.clone());
        match bar {
            Some(bar) => bar
                .suspend(|| std::io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Initialises `tracing`: human-readable on a terminal, JSON otherwise (journald, files).
/// `RUST_LOG` overrides the default level (`level`, see [`default_log_level`]).
pub fn init_logging(json: Option<bool>, level: &str) {
    use std::io::IsTerminal;
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},sqlx=warn")));
    // The AWS SDK logs request details (the access key id among them) at debug level; they
    // stay out even under RUST_LOG=debug.
    for d in [
        "aws_smithy_runtime=info",
        "aws_sdk_s3=info",
        "aws_smithy_http_client=info",
    ] {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    let json = json.unwrap_or_else(|| !std::io::stderr().is_terminal());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

impl Observers {
    /// This set plus every observer of `other`.
    pub fn extend(mut self, other: &Observers) -> Self {
        self.0.extend(other.0.iter().cloned());
        self
    }
    /// No observers at all (tests, tools).
    pub fn none() -> Self {
        Observers(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Origin;

    /// The JSON log lines `f` writes through [`Telemetry`].
    fn json_lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_writer(move || w.clone())
            .json()
            .flatten_event(true)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn prov(origin: Origin) -> Provenance {
        Provenance {
            pipeline: Arc::from("p"),
            source: Arc::from("s"),
            source_kind: Arc::from("test"),
            origin,
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            attempt: 1,
            content_sha256: [7; 32],
        }
    }

    #[test]
    fn log_lines_show_parts_as_numbers_and_faxes_by_document_number() {
        let fax = prov(Origin::Fax {
            message_id: "4412345".into(),
        });
        let file = prov(Origin::Memory { label: "x".into() });
        let lines = json_lines(|| {
            Telemetry.observe(&Event::DeadLettered {
                prov: &file,
                component: "parse",
                part: Some(0),
                reason: ReasonCode::Malformed,
                dead_letter_id: "dl1",
            });
            Telemetry.observe(&Event::DeadLettered {
                prov: &file,
                component: "parse",
                part: None,
                reason: ReasonCode::NotHl7,
                dead_letter_id: "dl2",
            });
            Telemetry.observe(&Event::Imported {
                prov: &fax,
                component: "file",
                part: 0,
                lab_no: 812,
                outcome: "unclaimed_document",
                lab: None,
            });
            Telemetry.observe(&Event::Imported {
                prov: &file,
                component: "oscar",
                part: 2,
                lab_no: 33,
                outcome: "matched",
                lab: Some(LabDetail {
                    lab_type: "PATHL7",
                    matched: true,
                    candidates: None,
                }),
            });
        });
        assert_eq!(lines.len(), 4, "{lines:?}");
        // A message's position is a number; a whole input has none.
        assert_eq!(lines[0]["part"], serde_json::json!(0), "{}", lines[0]);
        assert!(lines[1].get("part").is_none(), "{}", lines[1]);
        // A fax is its document row and its RingCentral message id, not a lab.
        assert_eq!(
            lines[2]["document_no"],
            serde_json::json!(812),
            "{}",
            lines[2]
        );
        assert_eq!(lines[2]["fax_id"], "4412345", "{}", lines[2]);
        assert!(lines[2].get("lab_no").is_none(), "{}", lines[2]);
        assert!(lines[2].get("lab_type").is_none(), "{}", lines[2]);
        // A lab stays a lab.
        assert_eq!(lines[3]["lab_no"], serde_json::json!(33), "{}", lines[3]);
        assert_eq!(lines[3]["part"], serde_json::json!(2), "{}", lines[3]);
        assert_eq!(lines[3]["lab_type"], "PATHL7", "{}", lines[3]);
        assert!(lines[3].get("document_no").is_none(), "{}", lines[3]);
    }

    #[test]
    fn replay_on_a_terminal_logs_no_line_per_message_by_default() {
        // Per-message lines (`Imported into OSCAR.`) are info; warnings still show.
        assert_eq!(default_log_level(true, true), "warn");
        // In a pipe or a file (scripts, CI), and for every other command: info.
        assert_eq!(default_log_level(true, false), "info");
        assert_eq!(default_log_level(false, true), "info");
        assert_eq!(default_log_level(false, false), "info");
    }
}
