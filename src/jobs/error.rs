//! [`OutboundError`]: the typed error of every step of an outbound queue (claiming, sending,
//! releasing), with its [`ErrorKind`] and a bounded [`OutboundReason`].

use crate::error::{Classify, ErrorKind};

/// Why an outbound worker's round (or one of its steps) failed: the kind decides what the
/// worker does (a transient failure is tried again at the next round, a fatal one stops it),
/// the reason is a bounded code for logs and metrics, the detail PHI-free text (context and
/// codes, never a number, a name or a message text).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct OutboundError {
    pub kind: ErrorKind,
    pub reason: OutboundReason,
    pub detail: String,
}

/// The bounded reason of an [`OutboundError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundReason {
    /// The worker's settings cannot work (checked at start).
    Config,
    /// oscarflow's or OSCAR's tables.
    Database,
    /// The RingCentral API.
    RingCentral,
    /// A fax's document: missing, empty or unreadable.
    Document,
}

impl OutboundReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundReason::Config => "config",
            OutboundReason::Database => "database",
            OutboundReason::RingCentral => "ringcentral",
            OutboundReason::Document => "document",
        }
    }
}

impl OutboundError {
    /// Settings that cannot work: the worker does not start.
    pub fn config(detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            reason: OutboundReason::Config,
            detail: detail.into(),
        }
    }
    /// A store that failed without a database error of its own (tried again next round).
    pub fn database(detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            reason: OutboundReason::Database,
            detail: detail.into(),
        }
    }
    /// A fax's document cannot be sent: the fax ends in `ERROR` with this text.
    pub fn document(detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Data,
            reason: OutboundReason::Document,
            detail: detail.into(),
        }
    }
    /// A RingCentral failure, with the client's own classification.
    pub fn ringcentral(e: &crate::ringcentral::RcError) -> Self {
        Self {
            kind: e.kind,
            reason: OutboundReason::RingCentral,
            detail: e.detail.clone(),
        }
    }
}

impl Classify for OutboundError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl From<OutboundError> for crate::component::ProcessError {
    /// A step of an outbound sink that failed on our side (the database): transient ones
    /// are retried by the runner, others stop or dead-letter as their kind says.
    fn from(e: OutboundError) -> Self {
        crate::component::ProcessError {
            kind: e.kind,
            reason: match e.kind {
                ErrorKind::Transient => crate::dead_letter::ReasonCode::RetriesExhausted,
                _ => crate::dead_letter::ReasonCode::ImportRejected,
            },
            detail: e.detail,
            outage: false,
        }
    }
}

/// RingCentral refused the credentials (or the account): the sink cannot go on.
pub fn ringcentral_fatal(e: &crate::ringcentral::RcError) -> crate::component::ProcessError {
    crate::component::ProcessError::fatal(format!("RingCentral: {}", e.detail))
}

/// The text a released row shows for a dead-lettered job: the reason the sink recorded (or
/// the reason code), after the attempts when the retries were spent.
pub fn release_reason(
    outcome: &crate::ack::BatchOutcome,
    last_error: Option<String>,
    attempts: i64,
) -> String {
    use crate::dead_letter::ReasonCode;
    let last = last_error.unwrap_or_else(|| {
        outcome
            .reason
            .map_or("rejected", ReasonCode::as_str)
            .to_string()
    });
    if outcome.reason == Some(ReasonCode::RetriesExhausted) {
        format!("gave up after {attempts} attempts: {last}")
    } else {
        last
    }
}
