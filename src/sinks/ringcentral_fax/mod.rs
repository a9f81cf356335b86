//! `ringcentral_fax` (sink): sends OSCAR's outbound faxes ([`FaxJob`]s from
//! `oscar_fax_queue`) through RingCentral, and records each outcome durably in the same
//! transaction as OSCAR's status (`SENT` once RingCentral accepted the fax, `COMPLETE` once it
//! was delivered), exactly as OSCAR's fax screens read them.
//!
//! **Never twice.** Each fax carries its reference (`to[].name = "OSCAR fax <queue>#<id>"`),
//! which RingCentral keeps with the message. The claim is refreshed while the send runs and a
//! send whose claim was lost (another daemon took it over) does not happen. A send that broke
//! off in transit (RingCentral may or may not have it) is recorded `unknown`, never retried
//! blindly: the queue offers it again as a look-up, and it is adopted when found, sent again
//! only when not found after the settle time. 429s and 5xx are retried by the client without
//! counting as attempts.
//!
//! **Outcomes.** `Ok` means the outcome is durable: accepted (`sent`, `adopted`), delivered
//! (`completed`), in doubt (`unknown`), or nothing to do yet (`waiting`, `claim_lost`). A
//! fax that cannot be sent is a data error with its reason recorded on the claim first, so
//! the queue can show it in OSCAR's `statusString` once the dead letter is durable:
//! `invalid_phone`, `document_unavailable`, `refused` (RingCentral's error code), and
//! `delivery_failed` (RingCentral's delivery error code). Other failures are transient (the
//! runner retries with backoff; each attempt is counted on the claim) or fatal (refused
//! credentials stop the pipeline).

mod config;

pub use config::RingCentralFaxSinkConfig;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;

use super::{act, Sink, StepSink};
use crate::component::ProcessError;
use crate::dead_letter::ReasonCode;
use crate::envelope::Envelope;
use crate::error::ErrorKind;
use crate::jobs::claim::{cut, db, rfc3339, unix_now, ClaimTable};
use crate::jobs::{ringcentral_fatal, FaxJob, OutboundError};
use crate::ringcentral::fax::{find_sent_by_name, get_message, send_fax, FaxMessage, FaxRequest};
use crate::ringcentral::phone::to_e164;
use crate::ringcentral::RcClient;
use crate::store::{now_sql, text_column, Store};
use crate::telemetry::Observers;

const CLAIMS: ClaimTable = ClaimTable {
    table: "oscarflow_fax_outbound",
    key: "fax_id",
};

/// The running sink.
pub struct RingCentralFax {
    cfg: RingCentralFaxSinkConfig,
    store: Store,
    client: Arc<RcClient>,
    id: Arc<str>,
    observers: Observers,
}

impl RingCentralFax {
    pub fn new(
        cfg: RingCentralFaxSinkConfig,
        cx: &crate::component::BuildContext,
    ) -> Result<Self, ProcessError> {
        Ok(RingCentralFax {
            client: super::ringcentral_client(&cfg.ringcentral)?,
            cfg,
            store: cx.store.clone(),
            id: cx.id.clone(),
            observers: cx.observers.clone(),
        })
    }

    /// Records a reason on the claim (shown in OSCAR once the dead letter is durable) and
    /// returns the data error that dead-letters the job.
    async fn refuse(&self, job: &FaxJob, reason: ReasonCode, text: &str) -> ProcessError {
        if let Err(e) = self.note(job.fax_id, text, false).await {
            return ProcessError::from(e);
        }
        ProcessError::data(reason, cut(text, 255))
    }

    /// Who sets OSCAR's fax statuses, for the audit trail.
    fn actor(&self) -> String {
        format!("fax sink {}", self.id)
    }

    /// Writes `last_error` (and counts an attempt when `attempt`).
    async fn note(&self, fax_id: i64, text: &str, attempt: bool) -> Result<(), OutboundError> {
        sqlx::query("UPDATE oscarflow_fax_outbound SET last_error = ?, attempts = attempts + ?, updated_at = ? WHERE fax_id = ?")
            .bind(cut(text, 255))
            .bind(i64::from(attempt))
            .bind(now_sql())
            .bind(fax_id)
            .execute(&self.store.pool)
            .await
            .map(|_| ())
            .map_err(db("record the fax's last error"))
    }

    /// RingCentral accepted the fax: our row `queued` with its message id, OSCAR's `SENT`.
    async fn accepted(&self, fax_id: i64, m: &FaxMessage) -> Result<(), OutboundError> {
        crate::audit::ensure_chain(&self.store, crate::audit::STATUS_CHAIN)
            .await
            .map_err(db("create the audit chain"))?;
        let mut tx = self.store.pool.begin().await.map_err(db("begin"))?;
        sqlx::query("UPDATE oscarflow_fax_outbound SET state = 'queued', rc_message_id = ?, last_error = NULL, claimed_unix = ?, updated_at = ? WHERE fax_id = ?")
            .bind(m.id)
            .bind(unix_now())
            .bind(now_sql())
            .bind(fax_id)
            .execute(&mut *tx)
            .await
            .map_err(db("record the message id"))?;
        sqlx::query("UPDATE faxes SET status = 'SENT', statusString = ? WHERE id = ?")
            .bind(format!("Queued at RingCentral (message {})", m.id))
            .bind(fax_id)
            .execute(&mut *tx)
            .await
            .map_err(db("mark the OSCAR fax sent"))?;
        crate::oscar::fax::audit_fax_status(&mut tx, &self.store, &self.actor(), fax_id, "SENT")
            .await
            .map_err(db("audit the OSCAR fax status"))?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(())
    }
}

#[async_trait]
impl StepSink<FaxJob> for RingCentralFax {
    async fn send(&self, job: &FaxJob) -> Result<&'static str, ProcessError> {
        let row = sqlx::query("SELECT filename, destination, document FROM faxes WHERE id = ?")
            .bind(job.fax_id)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(|e| ProcessError::from(db("read the fax")(e)))?;
        let row = row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok((
                    text_column(&r, 0)?,
                    text_column(&r, 1)?,
                    text_column(&r, 2)?,
                ))
            })
            .transpose()
            .map_err(|e| ProcessError::from(db("read the fax")(e)))?;
        let Some((filename, destination, base64_doc)) = row else {
            return Err(self
                .refuse(job, ReasonCode::ImportRejected, "the OSCAR fax row is gone")
                .await);
        };
        let to = match to_e164(destination.as_deref().unwrap_or("")) {
            Ok(n) => n,
            Err(e) => {
                let text = format!("invalid destination number: {e}");
                return Err(self.refuse(job, ReasonCode::InvalidPhone, &text).await);
            }
        };
        let doc = match load_document(
            &self.cfg.document_dir,
            filename.as_deref(),
            base64_doc.as_deref().map(str::as_bytes),
        )
        .await
        {
            Ok(d) => d,
            Err(e) => {
                return Err(self
                    .refuse(job, ReasonCode::DocumentUnavailable, &e.detail)
                    .await)
            }
        };
        let req = FaxRequest {
            to,
            name: job.ref_name.clone(),
            file_name: doc.file_name,
            content_type: doc.content_type,
            bytes: doc.bytes,
            cover_index: self.cfg.cover_index,
        };
        let held = CLAIMS.while_holding(
            &self.store,
            job.fax_id,
            &job.owner,
            Duration::from_secs(job.lease_secs),
            send_fax(&self.client, &req),
        );
        let Some(sent) = held.await else {
            tracing::warn!(sink = %self.id, fax_id = job.fax_id, "Lost the claim on a fax (another process took it over); not sending it.");
            return Ok("claim_lost");
        };
        match sent {
            Ok(m) => {
                self.accepted(job.fax_id, &m)
                    .await
                    .map_err(ProcessError::from)?;
                Ok("sent")
            }
            Err(e) if e.ambiguous => {
                tracing::warn!(sink = %self.id, fax_id = job.fax_id, error = %e, "The send broke off in transit; the fax is looked up before any new attempt.");
                sqlx::query("UPDATE oscarflow_fax_outbound SET state = 'unknown', claimed_unix = ?, last_error = ?, updated_at = ? WHERE fax_id = ?")
                    .bind(unix_now())
                    .bind(cut(&e.detail, 255))
                    .bind(now_sql())
                    .bind(job.fax_id)
                    .execute(&self.store.pool)
                    .await
                    .map_err(|x| ProcessError::from(db("record an unknown send")(x)))?;
                Ok("unknown")
            }
            Err(e) if e.kind == ErrorKind::Data => {
                let text = format!(
                    "RingCentral refused the fax: {}",
                    e.code.as_deref().unwrap_or("no error code")
                );
                Err(self.refuse(job, ReasonCode::Refused, &text).await)
            }
            Err(e) if e.kind == ErrorKind::Fatal => Err(ringcentral_fatal(&e)),
            Err(e) => {
                self.note(job.fax_id, &e.detail, true)
                    .await
                    .map_err(ProcessError::from)?;
                Err(ProcessError::transient(format!(
                    "fax not sent: {}",
                    e.detail
                )))
            }
        }
    }

    /// A send that broke off: adopt the fax when RingCentral has it; once settled and not
    /// found, send it again.
    async fn look_up(
        &self,
        job: &FaxJob,
        since_unix: i64,
        settled: bool,
    ) -> Result<&'static str, ProcessError> {
        match find_sent_by_name(&self.client, &rfc3339(since_unix), &job.ref_name).await {
            Ok(Some(m)) => {
                self.accepted(job.fax_id, &m)
                    .await
                    .map_err(ProcessError::from)?;
                tracing::info!(sink = %self.id, fax_id = job.fax_id, message_id = m.id, "A send that broke off had reached RingCentral; adopted it instead of sending again.");
                Ok("adopted")
            }
            Ok(None) if settled => {
                // Not there after the settle time: it never arrived. Send it.
                let r = sqlx::query("UPDATE oscarflow_fax_outbound SET state = 'sending', claimed_unix = ?, updated_at = ? WHERE fax_id = ? AND owner = ? AND state = 'unknown'")
                    .bind(unix_now())
                    .bind(now_sql())
                    .bind(job.fax_id)
                    .bind(&job.owner)
                    .execute(&self.store.pool)
                    .await
                    .map_err(|e| ProcessError::from(db("return a fax to sending")(e)))?;
                Ok(if r.rows_affected() == 1 {
                    "not_found"
                } else {
                    "claim_lost"
                })
            }
            Ok(None) => Ok("waiting"),
            Err(e) if e.kind == ErrorKind::Fatal => Err(ringcentral_fatal(&e)),
            Err(e) => {
                tracing::warn!(sink = %self.id, fax_id = job.fax_id, error = %e, "Could not look up a fax whose send broke off; trying again next round.");
                Ok("waiting")
            }
        }
    }

    /// Reads the delivery status of a fax RingCentral accepted.
    async fn track(&self, job: &FaxJob, message_id: i64) -> Result<&'static str, ProcessError> {
        let m = match get_message(&self.client, message_id).await {
            Ok(m) => m,
            Err(e) if e.kind == ErrorKind::Fatal => return Err(ringcentral_fatal(&e)),
            Err(e) => {
                tracing::warn!(sink = %self.id, fax_id = job.fax_id, error = %e, "Could not read a fax's status; trying again next round.");
                return Ok("waiting");
            }
        };
        match m.status() {
            "Sent" => {
                crate::audit::ensure_chain(&self.store, crate::audit::STATUS_CHAIN)
                    .await
                    .map_err(|e| ProcessError::from(db("create the audit chain")(e)))?;
                let mut tx = self
                    .store
                    .pool
                    .begin()
                    .await
                    .map_err(|e| ProcessError::from(db("begin")(e)))?;
                let r = sqlx::query("UPDATE oscarflow_fax_outbound SET state = 'done', updated_at = ? WHERE fax_id = ? AND state = 'queued'")
                    .bind(now_sql())
                    .bind(job.fax_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| ProcessError::from(db("record completion")(e)))?;
                if r.rows_affected() == 1 {
                    sqlx::query("UPDATE faxes SET status = 'COMPLETE', statusString = ?, numPages = COALESCE(?, numPages) WHERE id = ?")
                        .bind(format!("Sent ({} pages)", m.fax_page_count.unwrap_or(0)))
                        .bind(m.fax_page_count.map(i64::from))
                        .bind(job.fax_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| ProcessError::from(db("mark the OSCAR fax complete")(e)))?;
                    crate::oscar::fax::audit_fax_status(
                        &mut tx,
                        &self.store,
                        &self.actor(),
                        job.fax_id,
                        "COMPLETE",
                    )
                    .await
                    .map_err(|e| ProcessError::from(db("audit the OSCAR fax status")(e)))?;
                }
                tx.commit()
                    .await
                    .map_err(|e| ProcessError::from(db("commit")(e)))?;
                Ok("completed")
            }
            "SendingFailed" => {
                let text = format!(
                    "RingCentral could not deliver the fax: {}",
                    m.error_code().unwrap_or("Undefined")
                );
                Err(self.refuse(job, ReasonCode::DeliveryFailed, &text).await)
            }
            _ => Ok("waiting"),
        }
    }
}

#[async_trait]
impl Sink<FaxJob> for RingCentralFax {
    fn kind(&self) -> &'static str {
        "ringcentral_fax"
    }

    async fn write(&self, env: &Envelope<FaxJob>) -> Result<(), ProcessError> {
        let job = &env.payload;
        act(self, env, job.step, job.fax_id, (&self.id, &self.observers)).await
    }
}

/// A document ready to send.
struct Document {
    file_name: String,
    content_type: String,
    bytes: Bytes,
}

/// The fax's document: `faxes.filename` as a path, else its base name in `DOCUMENT_DIR`
/// (where OSCAR's own sender looks), else the Base64 `faxes.document` column.
async fn load_document(
    document_dir: &Path,
    filename: Option<&str>,
    base64_doc: Option<&[u8]>,
) -> Result<Document, OutboundError> {
    let name = filename.unwrap_or("").trim();
    let base = name.rsplit(['/', '\\']).next().unwrap_or("").to_string();
    let mut candidates = Vec::new();
    if Path::new(name).is_absolute() {
        candidates.push(PathBuf::from(name));
    }
    if !base.is_empty() {
        candidates.push(document_dir.join(&base));
    }
    for p in candidates {
        if let Ok(bytes) = tokio::fs::read(&p).await {
            if bytes.is_empty() {
                return Err(OutboundError::document("the fax's document is empty"));
            }
            return Ok(Document {
                content_type: content_type_of(&base),
                file_name: safe_file_name(&base),
                bytes: Bytes::from(bytes),
            });
        }
    }
    if let Some(b64) = base64_doc.filter(|b| !b.is_empty()) {
        let cleaned: Vec<u8> = b64
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        return match base64::engine::general_purpose::STANDARD.decode(cleaned) {
            Ok(bytes) if !bytes.is_empty() => Ok(Document {
                content_type: if base.is_empty() {
                    "application/pdf".into()
                } else {
                    content_type_of(&base)
                },
                file_name: if base.is_empty() {
                    "fax.pdf".into()
                } else {
                    safe_file_name(&base)
                },
                bytes: Bytes::from(bytes),
            }),
            _ => Err(OutboundError::document(
                "the fax's document column is not valid Base64",
            )),
        };
    }
    Err(OutboundError::document(
        "the fax's document was not found (file name, DOCUMENT_DIR, document column)",
    ))
}

fn content_type_of(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".tif") || lower.ends_with(".tiff") {
        "image/tiff".into()
    } else {
        "application/pdf".into()
    }
}

/// RingCentral rejects `&` and special characters in file names (CONTRACTS.md §5.1).
fn safe_file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "fax.pdf".into()
    } else {
        s
    }
}

impl super::SinkComponent for RingCentralFaxSinkConfig {
    fn input_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::FaxJob
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        self.ringcentral.env_refs()
    }
    fn build(&self, cx: &crate::component::BuildContext) -> Result<super::BuiltSink, ProcessError> {
        Ok(super::step_sink::<FaxJob>(
            Arc::new(RingCentralFax::new(self.clone(), cx)?),
            self.concurrency,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_made_safe_for_ringcentral() {
        assert_eq!(
            safe_file_name("Referral & notes (2).pdf"),
            "Referral___notes__2_.pdf"
        );
        assert_eq!(safe_file_name(""), "fax.pdf");
        assert_eq!(content_type_of("x.TIF"), "image/tiff");
        assert_eq!(content_type_of("x.pdf"), "application/pdf");
    }

    #[tokio::test]
    async fn the_document_comes_from_the_path_the_document_dir_or_the_base64_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.pdf"), b"%PDF-a").unwrap();
        let d = load_document(dir.path(), Some("/somewhere/else/a.pdf"), None)
            .await
            .unwrap();
        assert_eq!(&d.bytes[..], b"%PDF-a");
        let abs = dir.path().join("a.pdf");
        let d = load_document(Path::new("/nonexistent"), abs.to_str(), None)
            .await
            .unwrap();
        assert_eq!(&d.bytes[..], b"%PDF-a");
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"%PDF-b");
        let d = load_document(dir.path(), Some("missing.pdf"), Some(b64.as_bytes()))
            .await
            .unwrap();
        assert_eq!(&d.bytes[..], b"%PDF-b");
        let e = load_document(dir.path(), Some("missing.pdf"), Some(b"!!"))
            .await
            .err()
            .unwrap();
        assert!(e.detail.contains("Base64"));
        // A document that cannot be sent is the fax's fault: it ends in ERROR, no retry.
        assert_eq!(
            (e.kind, e.reason),
            (ErrorKind::Data, crate::jobs::OutboundReason::Document)
        );
        assert!(load_document(dir.path(), None, None).await.is_err());
    }
}
