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
    /// The times are RFC 3339 with their UTC offset (see [`with_offset`]).
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

/// What a re-drive did to one dead letter (`error`: a problem not tied to one id, as a
/// pipeline that cannot be found).
#[derive(Debug, Clone)]
pub struct Redriven {
    pub id: String,
    pub outcome: String,
    pub error: Option<String>,
}

impl Redriven {
    pub fn line(id: &str, outcome: impl Into<String>) -> Self {
        Redriven {
            id: id.to_string(),
            outcome: outcome.into(),
            error: None,
        }
    }
    pub fn error(e: impl Into<String>) -> Self {
        Redriven {
            id: String::new(),
            outcome: String::new(),
            error: Some(e.into()),
        }
    }
}

/// Filter for listing, re-driving and purging.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pipeline: Option<String>,
    pub reason: Option<ReasonCode>,
    pub status: Option<String>,
    /// Only rows whose last failure is older than this timestamp (`YYYY-MM-DD HH:MM:SS`).
    pub before: Option<String>,
    /// Only rows whose last failure is at or after this timestamp.
    pub since: Option<String>,
    pub limit: Option<i64>,
}

/// Reads and writes `oscarflow_dead_letter`.
#[derive(Clone, Debug)]
pub struct DeadLetterStore {
    store: Store,
}

impl DeadLetterStore {
    /// The database it is in.
    pub fn store(&self) -> &Store {
        &self.store
    }
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
        self.put_body(dl, &sha, Body::Memory(&dl.raw)).await
    }

    /// Stores a dead letter whose bytes are the file at `path` (`dl.raw` is not used), read
    /// a chunk at a time and never held whole in memory: an input over the size limit.
    /// `sha256_hex` is the file's hash as the caller read it; a file that changed since is
    /// refused (the transaction rolls back) rather than stored under the wrong hash.
    pub async fn put_file(
        &self,
        dl: &DeadLetter,
        path: &std::path::Path,
        sha256_hex: &str,
    ) -> Result<String, StoreError> {
        self.put_body(dl, sha256_hex, Body::File(path)).await
    }

    async fn put_body(
        &self,
        dl: &DeadLetter,
        sha: &str,
        body: Body<'_>,
    ) -> Result<String, StoreError> {
        let now = now_sql();
        let mut tx = self.store.pool.begin().await.map_err(StoreError::query)?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM oscarflow_dead_letter WHERE pipeline = ? AND content_sha256 = ? AND stage = ? AND reason = ? AND status = ? LIMIT 1",
        )
        .bind(&*dl.provenance.pipeline)
        .bind(sha)
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
            // Small bytes stay in the row; larger ones are written as chunks below.
            let (len, inline): (u64, Vec<u8>) = match body {
                Body::Memory(b) if b.len() <= CHUNK_BYTES => (b.len() as u64, b.to_vec()),
                Body::Memory(b) => (b.len() as u64, Vec::new()),
                Body::File(p) => (
                    tokio::fs::metadata(p).await.map_err(file_error)?.len(),
                    Vec::new(),
                ),
            };
            let chunks = if inline.is_empty() && len > 0 {
                match body {
                    Body::Memory(b) => {
                        write_chunks(&mut tx, &id, b.chunks(CHUNK_BYTES).map(<[u8]>::to_vec))
                            .await?
                    }
                    Body::File(p) => write_file_chunks(&mut tx, &id, p, sha).await?,
                }
            } else {
                0
            };
            sqlx::query(
                "INSERT INTO oscarflow_dead_letter (id, pipeline, source, source_kind, origin, part, content_sha256, stage, stage_kind, reason, error_kind, detail, attempts, status, received_at, first_failed_at, last_failed_at, resolved_at, raw_len, raw, raw_chunks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            )
            .bind(&id)
            .bind(&*dl.provenance.pipeline)
            .bind(&*dl.provenance.source)
            .bind(&*dl.provenance.source_kind)
            .bind(origin)
            .bind(dl.part.map(i64::from))
            .bind(sha)
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
            .bind(len as i64)
            .bind(inline)
            .bind(chunks)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query)?;
            id
        };
        // The journal's row, in the same transaction: a broken lab is found by what can
        // be read of its identifiers.
        let peek = match body {
            Body::Memory(b) => crate::journal::peek(b),
            Body::File(_) => crate::journal::Peek::default(),
        };
        let entry = crate::journal::Entry {
            kind: Some(crate::journal::Kind::of_input(
                &dl.provenance.source_kind,
                peek.message_type.as_deref(),
            )),
            part: dl.part,
            message_type: peek.message_type,
            control_id: peek.control_id,
            accession: peek.accession,
            outcome: crate::journal::outcome::DEAD_LETTERED,
            reason: Some(dl.reason.as_str()),
            detail: Some(dl.detail.clone()),
            dead_letter_id: Some(id.clone()),
            ..Default::default()
        };
        crate::journal::record(&mut tx, &dl.provenance, &[entry])
            .await
            .map_err(StoreError::query)?;
        tx.commit().await.map_err(StoreError::query)?;
        Ok(id)
    }

    /// Records, before they are shown, that this dead letter's bytes are shown to `actor`
    /// (`how`: where, e.g. "the console's reveal" or "`dlq show --raw`"): a journal row in
    /// the message's journey (`outcome = revealed`) and an audit row (`action = read`, in
    /// [`crate::audit::ACCESS_CHAIN`]), in one transaction.
    pub async fn record_reveal(
        &self,
        dl: &StoredDeadLetter,
        actor: &str,
        how: &str,
    ) -> Result<(), sqlx::Error> {
        use crate::journal::cut;
        let received = time::OffsetDateTime::parse(
            &dl.received_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(crate::journal::local_time)
        .unwrap_or_else(|_| now_sql());
        crate::audit::ensure_chain(&self.store, crate::audit::ACCESS_CHAIN).await?;
        let mut tx = self.store.pool.begin().await?;
        sqlx::query(
            "INSERT INTO oscarflow_journal (at, kind, pipeline, source, source_kind, origin, received_at, attempt, content_sha256, part, outcome, reason, detail, dead_letter_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'revealed', ?, ?, ?)",
        )
        .bind(now_sql())
        .bind(crate::journal::Kind::of_source(&dl.source_kind).as_str())
        .bind(cut(&dl.pipeline, 100))
        .bind(cut(&dl.source, 100))
        .bind(cut(&dl.source_kind, 30))
        .bind("")
        .bind(received)
        .bind(dl.attempts)
        .bind(&dl.content_sha256)
        .bind(dl.part)
        .bind(cut(&dl.reason, 40))
        .bind(cut(&format!("bytes shown to {actor} by {how}"), 500))
        .bind(&dl.id)
        .execute(&mut *tx)
        .await?;
        let mut record = crate::audit::read(
            actor.to_string(),
            format!(
                "{how}: the original bytes of dead letter {} (reason {})",
                dl.id, dl.reason
            ),
        );
        record.about.pipeline = Some(dl.pipeline.clone());
        record.about.content_sha256 = Some(dl.content_sha256.clone());
        record.about.part = dl.part;
        crate::audit::append(&mut tx, crate::audit::ACCESS_CHAIN, &[record]).await?;
        tx.commit().await
    }

    /// Writes a dead letter's original bytes to `out` a chunk at a time (`dlq show --raw`
    /// of an input of any size). Returns the number of bytes written, `None` if there is
    /// no such dead letter.
    pub async fn write_raw(
        &self,
        id: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query("SELECT raw, raw_chunks FROM oscarflow_dead_letter WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        let Some(row) = row else { return Ok(None) };
        let raw: Vec<u8> = row.try_get("raw").map_err(StoreError::query)?;
        let chunks: i64 = row.try_get("raw_chunks").map_err(StoreError::query)?;
        let io = file_error;
        out.write_all(&raw).map_err(io)?;
        let mut written = raw.len() as u64;
        for seq in 0..chunks {
            let bytes = self.chunk(id, seq).await?;
            out.write_all(&bytes).map_err(io)?;
            written += bytes.len() as u64;
        }
        out.flush().map_err(io)?;
        Ok(Some(written))
    }

    async fn chunk(&self, id: &str, seq: i64) -> Result<Vec<u8>, StoreError> {
        sqlx::query_scalar(
            "SELECT bytes FROM oscarflow_dead_letter_chunk WHERE dead_letter_id = ? AND seq = ?",
        )
        .bind(id)
        .bind(seq)
        .fetch_one(&self.store.pool)
        .await
        .map_err(StoreError::query)
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

    /// One dead letter without its bytes (`dlq show`).
    pub async fn list_one(&self, id: &str) -> Result<Option<StoredDeadLetter>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM oscarflow_dead_letter WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        row.map(|r| from_row(&r, false)).transpose()
    }

    /// One dead letter with its original bytes.
    pub async fn get(&self, id: &str) -> Result<Option<StoredDeadLetter>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS}, raw, raw_chunks FROM oscarflow_dead_letter WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        let Some(row) = row else { return Ok(None) };
        let mut d = from_row(&row, true)?;
        let chunks: i64 = row.try_get("raw_chunks").map_err(StoreError::query)?;
        for seq in 0..chunks {
            d.raw.extend(self.chunk(id, seq).await?);
        }
        Ok(Some(d))
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
        self.drop_orphan_chunks().await?;
        Ok(r.rows_affected())
    }

    /// Number of dead letters matching the filter (its `limit` is ignored).
    pub async fn count(&self, f: &Filter) -> Result<u64, StoreError> {
        let (where_sql, binds) = filter_sql(f);
        let sql = format!("SELECT COUNT(*) FROM oscarflow_dead_letter{where_sql}");
        let mut q = sqlx::query_scalar::<_, i64>(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let n = q
            .fetch_one(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes the chunks of dead letters that are gone.
    async fn drop_orphan_chunks(&self) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM oscarflow_dead_letter_chunk WHERE dead_letter_id NOT IN (SELECT id FROM oscarflow_dead_letter)",
        )
        .execute(&self.store.pool)
        .await
        .map_err(StoreError::query)?;
        Ok(())
    }

    /// Deletes one dead letter by id.
    pub async fn purge_id(&self, id: &str) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM oscarflow_dead_letter WHERE id = ?")
            .bind(id)
            .execute(&self.store.pool)
            .await
            .map_err(StoreError::query)?;
        self.drop_orphan_chunks().await?;
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

/// Dead-letter bytes up to this size are kept in the row; larger ones in chunks of this size
/// (`oscarflow_dead_letter_chunk`), each written by its own statement: far under any
/// server's `max_allowed_packet`, and an input over the size limit is stored from its file
/// without being held in memory. Chunks live and go with their row, on every host that
/// shares the store (rather than in one machine's state directory).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Where a dead letter's bytes come from.
#[derive(Clone, Copy)]
enum Body<'a> {
    Memory(&'a [u8]),
    File(&'a std::path::Path),
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

async fn write_chunk(
    tx: &mut Tx<'_>,
    id: &str,
    seq: i64,
    bytes: Vec<u8>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO oscarflow_dead_letter_chunk (dead_letter_id, seq, bytes) VALUES (?, ?, ?)",
    )
    .bind(id)
    .bind(seq)
    .bind(bytes)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::query)?;
    Ok(())
}

async fn write_chunks(
    tx: &mut Tx<'_>,
    id: &str,
    chunks: impl Iterator<Item = Vec<u8>>,
) -> Result<i64, StoreError> {
    let mut n = 0;
    for c in chunks {
        write_chunk(tx, id, n, c).await?;
        n += 1;
    }
    Ok(n)
}

/// Copies a file into chunks, hashing as it goes; refuses a file whose hash is no longer
/// `sha`.
async fn write_file_chunks(
    tx: &mut Tx<'_>,
    id: &str,
    path: &std::path::Path,
    sha: &str,
) -> Result<i64, StoreError> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let io = file_error;
    let mut f = tokio::fs::File::open(path).await.map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut n = 0;
    loop {
        let mut buf = Vec::with_capacity(CHUNK_BYTES);
        while buf.len() < CHUNK_BYTES {
            let got = (&mut f)
                .take((CHUNK_BYTES - buf.len()) as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(io)?;
            if got == 0 {
                break;
            }
        }
        if buf.is_empty() {
            break;
        }
        hasher.update(&buf);
        write_chunk(tx, id, n, buf).await?;
        n += 1;
    }
    if hex::encode(hasher.finalize()) != sha {
        return Err(file_error(std::io::Error::other(
            "the input changed while it was being stored",
        )));
    }
    Ok(n)
}

/// An I/O error as a store error (an `io::Error` carries no path: file names can carry a
/// patient's name).
fn file_error(e: std::io::Error) -> StoreError {
    StoreError::query(sqlx::Error::Io(e))
}

fn local_offset() -> time::UtcOffset {
    let secs = chrono::Local::now().offset().local_minus_utc();
    time::UtcOffset::from_whole_seconds(secs).unwrap_or(time::UtcOffset::UTC)
}

/// A stored time (`YYYY-MM-DD HH:MM:SS`, this machine's local time, as OSCAR writes its own)
/// as RFC 3339 with the UTC offset local time had then (`2026-12-07T03:12:44-08:00`). In
/// the hour a clock goes back, which repeats, the earlier reading is taken. A value that is
/// not such a time is returned as it is.
pub fn with_offset(stored: String) -> String {
    use chrono::TimeZone;
    let Ok(naive) = chrono::NaiveDateTime::parse_from_str(stored.trim(), "%Y-%m-%d %H:%M:%S")
    else {
        return stored;
    };
    match chrono::Local.from_local_datetime(&naive).earliest() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        None => stored,
    }
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
    if let Some(b) = &f.since {
        clauses.push("last_failed_at >= ?");
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
        received_at: with_offset(s("received_at")?),
        first_failed_at: with_offset(s("first_failed_at")?),
        last_failed_at: with_offset(s("last_failed_at")?),
        resolved_at: text("resolved_at")?.map(with_offset),
        raw_len: r.try_get::<i64, _>("raw_len").map_err(StoreError::query)?,
        raw: if with_raw {
            r.try_get::<Vec<u8>, _>("raw").map_err(StoreError::query)?
        } else {
            Vec::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(raw: Vec<u8>) -> DeadLetter {
        DeadLetter {
            id: MessageId::new(),
            provenance: crate::envelope::Provenance::for_test(&raw),
            part: None,
            raw: Bytes::from(raw),
            stage: Arc::from("parse"),
            stage_kind: "parse_hl7",
            reason: ReasonCode::TooLarge,
            error_kind: ErrorKind::Data,
            detail: "test".into(),
            attempts: 1,
        }
    }

    async fn store(dir: &std::path::Path) -> DeadLetterStore {
        let url = format!("sqlite://{}", dir.join("d.db").display());
        DeadLetterStore::new(Store::open(&url).await.unwrap())
    }

    #[tokio::test]
    async fn bytes_over_a_chunk_are_stored_in_chunks_and_given_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dls = store(dir.path()).await;
        let raw: Vec<u8> = (0..(CHUNK_BYTES * 3 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let id = dls.put(&letter(raw.clone())).await.unwrap();
        let chunks: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM oscarflow_dead_letter_chunk WHERE dead_letter_id = ?",
        )
        .bind(&id)
        .fetch_one(&dls.store.pool)
        .await
        .unwrap();
        assert_eq!(chunks, 4);
        let got = dls.get(&id).await.unwrap().unwrap();
        assert_eq!(got.raw_len, raw.len() as i64);
        assert!(got.raw == raw, "get gives the bytes back whole");
        let mut out = Vec::new();
        assert_eq!(
            dls.write_raw(&id, &mut out).await.unwrap(),
            Some(raw.len() as u64)
        );
        assert!(out == raw, "write_raw gives the bytes back whole");
        // Small bytes stay in the row.
        let small = dls.put(&letter(b"MSH|^~\\&|".to_vec())).await.unwrap();
        let mut out = Vec::new();
        dls.write_raw(&small, &mut out).await.unwrap();
        assert_eq!(out, b"MSH|^~\\&|");
        // Purging a dead letter takes its chunks.
        assert_eq!(dls.purge_id(&id).await.unwrap(), 1);
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oscarflow_dead_letter_chunk")
            .fetch_one(&dls.store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn a_file_is_stored_from_disk_and_refused_when_it_changed_since_it_was_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let dls = store(dir.path()).await;
        let raw: Vec<u8> = (0..(CHUNK_BYTES * 2 + 5)).map(|i| (i % 13) as u8).collect();
        let path = dir.path().join("input");
        std::fs::write(&path, &raw).unwrap();
        let sha = hex::encode(crate::envelope::sha256(&raw));
        let id = dls
            .put_file(&letter(Vec::new()), &path, &sha)
            .await
            .unwrap();
        let got = dls.get(&id).await.unwrap().unwrap();
        assert_eq!(got.content_sha256, sha);
        assert!(got.raw == raw);
        // The same file again: the open row counts another attempt.
        let again = dls
            .put_file(&letter(Vec::new()), &path, &sha)
            .await
            .unwrap();
        assert_eq!(again, id);
        assert_eq!(dls.get(&id).await.unwrap().unwrap().attempts, 2);
        // Changed after it was hashed: nothing is stored under the old hash.
        let other = hex::encode(crate::envelope::sha256(b"something else"));
        let mut l = letter(Vec::new());
        l.stage = Arc::from("other");
        assert!(dls.put_file(&l, &path, &other).await.is_err());
        assert_eq!(dls.list(&Filter::default()).await.unwrap().len(), 1);
    }
}
