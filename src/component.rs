//! The error every stage and sink returns per message: [`ProcessError`].
//!
//! It carries the [`ErrorKind`] the topology acts on, the bounded [`ReasonCode`] a dead
//! letter will get, and a PHI-free detail (positions, codes, counts).

use crate::dead_letter::ReasonCode;
use crate::error::{classify_sqlx, describe_sqlx, Classify, ErrorKind};

/// A per-message failure of a stage or sink.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct ProcessError {
    pub kind: ErrorKind,
    pub reason: ReasonCode,
    pub detail: String,
}

impl ProcessError {
    /// Bad data: dead-letter now, never retry.
    pub fn data(reason: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Data,
            reason,
            detail: detail.into(),
        }
    }
    /// Temporary: retry with backoff, then dead-letter as `retries_exhausted`.
    pub fn transient(detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            reason: ReasonCode::RetriesExhausted,
            detail: detail.into(),
        }
    }
    /// The component cannot go on.
    pub fn fatal(detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            reason: ReasonCode::ImportRejected,
            detail: detail.into(),
        }
    }
    /// Classifies a database error; the detail names the error code, never bound values.
    pub fn from_sqlx(context: &str, e: &sqlx::Error) -> Self {
        Self {
            kind: classify_sqlx(e),
            reason: match classify_sqlx(e) {
                ErrorKind::Transient => ReasonCode::RetriesExhausted,
                _ => ReasonCode::ImportRejected,
            },
            detail: format!("{context}: {}", describe_sqlx(e)),
        }
    }
}

impl Classify for ProcessError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// What a stage or sink configuration needs to build its running component
/// (`StageConfig::build`, `SinkConfig::build`): its id, the pipeline's database and the
/// observers its events go to.
#[derive(Clone)]
pub struct BuildContext {
    pub id: std::sync::Arc<str>,
    pub store: crate::store::Store,
    pub observers: crate::telemetry::Observers,
}
