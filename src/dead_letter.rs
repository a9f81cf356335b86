//! The dead-letter store: [`DeadLetter`], [`ReasonCode`] and [`DeadLetterStore`].
//!
//! Every message a pipeline rejects lands here with its **original bytes**, the stage that
//! rejected it, a bounded [`ReasonCode`] (safe as a metric label), a PHI-free detail, the
//! attempt count and its provenance. Writing a dead letter is what lets a source release its
//! input for a message that could not be imported: nothing is lost, it waits here to be
//! listed, shown, re-driven (`oscarflow dlq retry`) or purged.
//!
//! The same bytes rejected again for the same reason by the same stage while an earlier
//! dead letter is still open (a re-delivered file, a second replay) do not add a row: the
//! open row's `attempts` and `last_failed_at` are updated instead.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use sqlx::Row;

use crate::envelope::{MessageId, Provenance};
use crate::error::ErrorKind;
use crate::store::{now_sql, text_column, Store, StoreError};

pub use crate::error::ReasonCode;

/// A rejected message on its way to the store.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: MessageId,
    pub provenance: Arc<Provenance>,
    /// Index of the message inside its input (a multi-message file), if it is one part.
    pub part: Option<u32>,
    /// The original bytes of the rejected unit (the message, or the whole file).
    pub raw: Bytes,
    pub stage: Arc<str>,
    pub stage_kind: &'static str,
    pub reason: ReasonCode,
    pub error_kind: ErrorKind,
    /// Human text without PHI: positions, codes, counts.
    pub detail: String,
    pub attempts: u32,
}

/// A stored dead letter, as listed and shown by the CLI.
#[derive(Debug, Clone, Serialize)]
pub struct StoredDeadLetter {
    pub id: String,
    pub pipeline: String,
    pub source: String,
    pub source_kind: String,
    pub origin: serde_json::Value,
    pub part: Option<i64>,
    pub content_sha256: String,
    pub stage: String,
    pub stage_kind: String,
    pub reason: String,
    pub error_kind: String,
    pub detail: String,
    pub attempts: i64,
    pub status: String,
    pub received_at: String,
    pub first_failed_at: String,
    pub last_failed_at: String,
    pub resolved_at: Option<String>,
    pub raw_len: i64,
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// Status values of a stored dead letter.
pub mod status {
    /// Waiting for an operator.
    pub const OPEN: &str = "open";
    /// Re-driven and imported (or found to be a duplicate of an import).
    pub const RESOLVED: &str = "resolved";
}

/// Filter for listing, re-driving and purging.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pipeline: Option<String>,
    pub reason: Option<ReasonCode>,
    pub status: Option<String>,
    /// Only rows whose last failure is older than this timestamp (`YYYY-MM-DD HH:MM:SS`).
    pub before: Option<String>,
    pub limit: Option<i64>,
}

/// Reads and writes `oscarflow_dead_letter`.
#[derive(Clone, Debug)]
pub struct DeadLetterStore {
    store: Store,
}

// TEXT and DATETIME columns are read through CAST(… AS CHAR): sqlx's `Any` driver decodes
// neither MySQL type directly, and the cast is a no-op on SQLite.
const COLUMNS: &str = "id, pipeline, source, source_kind, CAST(origin AS CHAR) AS origin, part, content_sha256, stage, stage_kind, reason, error_kind, CAST(detail AS CHAR) AS detail, attempts, status, CAST(received_at AS CHAR) AS received_at, CAST(first_failed_at AS CHAR) AS first_failed_at, CAST(last_failed_at AS CHAR) AS last_failed_at, CAST(resolved_at AS CHAR) AS resolved_at, raw_len";

impl DeadLetterStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Stores a dead letter; returns the id of the row that now holds it (an existing open
    /// row for the same bytes, stage and reason, or a new one).
    pub async fn put(&self, dl: &DeadLetter) -> Result<String, StoreError> {
        let sha = hex::encode(crate::envelope::sha256(&dl.raw));
        let now = now_sql();
        let mut tx = self.store.pool.begin().await.map_err(StoreError::query)?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM oscarflow_dead_letter WHERE pipeline = ? AND content_sha256 = ? AND stage = ? AND reason = ? AND status = ? LIMIT 1",
        )
        .bind(&*dl.provenance.pipeline)
        .bind(&sha)
        .bind(&*dl.stage)
        .bind(dl.reason.as_str())
        .bind(status::OPEN)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query)?;
        let id = if let Some(id) = existing {
            sqlx::query(
                "UPDATE oscarflow_dead_letter SET attempts = attempts + ?, last_failed_at = ?, detail = ? WHERE id = ?",
            )
            .bind(i64::from(dl.attempts.max(1)))
            .bind(&now)
            .bind(&dl.detail)
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query)?;
            id
        } else {
            let id = MessageId::new().to_string();
            let origin =
                serde_json::to_string(&dl.provenance.origin).unwrap_or_else(|_| "{}".into());
            let received = dl
                .provenance
                .received_at
                .to_offset(local_offset())
                .format(&time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second]"
                ))
                .unwrap_or_else(|_| now.clone());
            sqlx::query(
                "INSERT INTO oscarflow_dead_letter (id, pipeline, source, source_kind, origin, part, content_sha256, stage, stage_kind, reason, error_kind, detail, attempts, status, received_at, first_failed_at, last_failed_at, resolved_at, raw_len, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            )
            .bind(&id)
            .bind(&*dl.provenance.pipeline)
            .bind(&*dl.provenance.source)
            .bind(&*dl.provenance.source_kind)
            .bind(origin)
            .bind(dl.part.map(i64::from))
            .bind(&sha)
            .bind(&*dl.stage)
            .bind(dl.stage_kind)
            .bind(dl.reason.as_str())
            .bind(dl.error_kind.as_str())
            .bind(&dl.detail)
            .bind(i64::from(dl.attempts.max(1)))
            .bind(status::OPEN)
            .bind(received)
            .bind(&now)
            .bind(&now)
            .bind(dl.raw.len() as i64)
            .bind(dl.raw.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query)?;
            id
        };
        tx.commit().await.map_err(StoreError::query)?;
        Ok(id)
    }

    /// Lists dead letters (without their bytes), newest first.
    pub async fn list(&self, f: &Filter) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let (where_sql, binds) = filter_sql(f);
        let sql = format!(
            "SELECT {COLUMNS} FROM oscarflow_dead_letter{where_sql} ORDER BY last_failed_at DESC, id DESC LIMIT {}",
            f.limit.unwrap_or(1000).max(0)
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q
            .fetch_all(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        rows.iter().map(|r| from_row(r, false)).collect()
    }

    /// One dead letter with its original bytes.
    pub async fn get(&self, id: &str) -> Result<Option<StoredDeadLetter>, StoreError> {
        let sql = format!("SELECT {COLUMNS}, raw FROM oscarflow_dead_letter WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        row.map(|r| from_row(&r, true)).transpose()
    }

    /// Marks a dead letter resolved (it was re-driven and imported).
    pub async fn mark_resolved(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE oscarflow_dead_letter SET status = ?, resolved_at = ? WHERE id = ?")
            .bind(status::RESOLVED)
            .bind(now_sql())
            .bind(id)
            .execute(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        Ok(())
    }

    /// Deletes dead letters matching the filter; returns how many.
    pub async fn purge(&self, f: &Filter) -> Result<u64, StoreError> {
        let (where_sql, binds) = filter_sql(f);
        let sql = format!("DELETE FROM oscarflow_dead_letter{where_sql}");
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let r = q
            .execute(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        Ok(r.rows_affected())
    }

    /// Deletes one dead letter by id.
    pub async fn purge_id(&self, id: &str) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM oscarflow_dead_letter WHERE id = ?")
            .bind(id)
            .execute(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        Ok(r.rows_affected())
    }

    /// Number of open dead letters per pipeline.
    pub async fn count_open(&self, pipeline: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM oscarflow_dead_letter WHERE pipeline = ? AND status = ?",
        )
        .bind(pipeline)
        .bind(status::OPEN)
        .fetch_one(&self.store.pool)
        .await
        .map_err(StoreError::query)
    }
}

fn local_offset() -> time::UtcOffset {
    let secs = chrono::Local::now().offset().local_minus_utc();
    time::UtcOffset::from_whole_seconds(secs).unwrap_or(time::UtcOffset::UTC)
}

fn filter_sql(f: &Filter) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    if let Some(p) = &f.pipeline {
        clauses.push("pipeline = ?");
        binds.push(p.clone());
    }
    if let Some(r) = f.reason {
        clauses.push("reason = ?");
        binds.push(r.as_str().to_string());
    }
    if let Some(s) = &f.status {
        clauses.push("status = ?");
        binds.push(s.clone());
    }
    if let Some(b) = &f.before {
        clauses.push("last_failed_at < ?");
        binds.push(b.clone());
    }
    if clauses.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", clauses.join(" AND ")), binds)
    }
}

fn from_row(r: &sqlx::any::AnyRow, with_raw: bool) -> Result<StoredDeadLetter, StoreError> {
    let text = |i: &str| text_column(r, i).map_err(StoreError::query);
    let s = |i: &str| -> Result<String, StoreError> { text(i).map(Option::unwrap_or_default) };
    let origin_text = s("origin")?;
    Ok(StoredDeadLetter {
        id: s("id")?,
        pipeline: s("pipeline")?,
        source: s("source")?,
        source_kind: s("source_kind")?,
        origin: serde_json::from_str(&origin_text)
            .unwrap_or(serde_json::Value::String(origin_text)),
        part: r
            .try_get::<Option<i64>, _>("part")
            .map_err(StoreError::query)?,
        content_sha256: s("content_sha256")?,
        stage: s("stage")?,
        stage_kind: s("stage_kind")?,
        reason: s("reason")?,
        error_kind: s("error_kind")?,
        detail: s("detail")?,
        attempts: r.try_get::<i64, _>("attempts").map_err(StoreError::query)?,
        status: s("status")?,
        received_at: s("received_at")?,
        first_failed_at: s("first_failed_at")?,
        last_failed_at: s("last_failed_at")?,
        resolved_at: text("resolved_at")?,
        raw_len: r.try_get::<i64, _>("raw_len").map_err(StoreError::query)?,
        raw: if with_raw {
            r.try_get::<Vec<u8>, _>("raw").map_err(StoreError::query)?
        } else {
            Vec::new()
        },
    })
}
