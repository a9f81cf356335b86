//! The outbound fax queue: OSCAR's own `faxes` rows with `status = 'WAITING'`, on a fax line
//! oscarflow handles and with no `jobId`, sent through RingCentral, with OSCAR's
//! `status`/`statusString` kept up to date exactly as OSCAR's fax screens read them
//! (`SENT` once RingCentral accepted the fax, then `COMPLETE`, or `ERROR` with the reason).
//!
//! **Why a queue worker and not an envelope pipeline.** The unit of work already is a durable
//! row in OSCAR's own queue table with its own state machine, which OSCAR's users watch; our
//! claim row (`oscarflow_fax_outbound`) is the acknowledgement, and a fax that cannot be sent
//! is not a dead letter but an `ERROR` row with its reason, where the clinic looks for it.
//! Nothing here reads bytes from outside except RingCentral's answers.
//!
//! **Never twice.** A fax is claimed by inserting its id into `oscarflow_fax_outbound`
//! (primary key): of two oscarflow processes on one database exactly one insert succeeds, on
//! MariaDB and SQLite alike (the portable equivalent of `SELECT … FOR UPDATE SKIP LOCKED`).
//! Each fax carries a reference (`to[].name = "OSCAR fax <pipeline>#<id>"`) that RingCentral
//! keeps with the message. When a send breaks off in transit (RingCentral may or may not have
//! accepted it), or its owner died while sending, the fax is first **looked up** among recent
//! outbound faxes by that reference and adopted if found; only when it is not there is it sent
//! again. 429s and 5xx are retried by the client without counting as attempts; other failures
//! count, and after `max_attempts` the fax ends `ERROR`.
//!
//! **Never lost.** A claimed fax stays in our table until it is `done` or `failed`, and every
//! round resumes what it owns, what was left `unknown`, and claims whose owner stopped
//! (older than `claim_timeout`).
//!
//! No phone number, file name or document content is logged: faxes are named by OSCAR's
//! `faxes.id` only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

use super::claim::{
    check_worker, cut, db, owner_id, rfc3339, run_rounds, unix_now, worker_client, ClaimTable,
};
use super::OutboundError;
use crate::config::deserialize_duration;
use crate::error::ErrorKind;
use crate::oscar::fax::is_fax_line;
use crate::ringcentral::fax::{find_sent_by_name, get_message, send_fax, FaxMessage, FaxRequest};
use crate::ringcentral::phone::to_e164;
use crate::ringcentral::{RcClient, RcConfig, RcError};
use crate::shutdown::Shutdown;
use crate::store::{is_unique_violation, now_sql, text_column, Store};

/// `[[fax_outbox]]` in `oscarflow.toml`: one outbound fax line.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaxOutboxConfig {
    /// A name for logs and the fax reference (`OSCAR fax <name>#<id>`).
    pub name: String,
    /// OSCAR's `faxes.faxline` of the rows to send (the clinic's fax number, digits).
    pub fax_line: String,
    /// OSCAR's `DOCUMENT_DIR`, where `faxes.filename` is looked up.
    pub document_dir: PathBuf,
    pub ringcentral: RcConfig,
    #[serde(
        default = "default_interval",
        deserialize_with = "deserialize_duration"
    )]
    pub poll_interval: Duration,
    /// Faxes claimed per round.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Attempts per fax (RingCentral 429/5xx waits inside one attempt do not count).
    #[serde(default = "crate::outbound::claim::defaults::attempts")]
    pub max_attempts: u32,
    /// A claim older than this whose owner never finished is taken over.
    #[serde(
        default = "crate::outbound::claim::defaults::claim_timeout",
        deserialize_with = "deserialize_duration"
    )]
    pub claim_timeout: Duration,
    /// How long after a send broke off in transit the fax is looked up in RingCentral.
    #[serde(
        default = "crate::outbound::claim::defaults::settle",
        deserialize_with = "deserialize_duration"
    )]
    pub unknown_settle_after: Duration,
    /// RingCentral cover page (0 = none: OSCAR's documents carry their own).
    #[serde(default)]
    pub cover_index: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_batch() -> u32 {
    20
}

impl FaxOutboxConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut v = check_worker(&self.name, &self.ringcentral, self.batch, self.max_attempts);
        if !is_fax_line(&self.fax_line) {
            v.push("fax_line must be 1 to 11 digits, as in faxes.faxline".into());
        }
        v
    }
}

/// What one round did (also printed by tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    pub claimed: u32,
    pub sent: u32,
    pub adopted: u32,
    pub completed: u32,
    pub failed: u32,
    pub pending: u32,
}

const CLAIMS: ClaimTable = ClaimTable {
    table: "oscarflow_fax_outbound",
    key: "fax_id",
};

/// A claimed fax about to be sent.
struct Claimed {
    fax_id: i64,
    attempts: i64,
    ref_name: String,
}

/// The worker for one line.
pub struct FaxOutbox {
    cfg: FaxOutboxConfig,
    store: Store,
    client: Arc<RcClient>,
    owner: String,
}

impl FaxOutbox {
    pub fn new(cfg: FaxOutboxConfig, store: Store) -> Result<Self, OutboundError> {
        let client = worker_client("fax_outbox", &cfg.name, cfg.validate(), &cfg.ringcentral)?;
        Ok(Self {
            owner: owner_id(&cfg.name),
            cfg,
            store,
            client: Arc::new(client),
        })
    }

    /// The reference RingCentral keeps with the fax (the recipient name).
    fn ref_name(&self, fax_id: i64, sends: i64) -> String {
        if sends <= 1 {
            format!("OSCAR fax {}#{fax_id}", self.cfg.name)
        } else {
            format!("OSCAR fax {}#{fax_id}/{sends}", self.cfg.name)
        }
    }

    /// Rounds every `poll_interval` until shutdown.
    pub async fn run(&self, shutdown: Shutdown) {
        let name = self.cfg.name.clone();
        run_rounds(
            &name,
            self.cfg.poll_interval,
            shutdown,
            |stop| async move { self.round_until(Some(&stop)).await },
            |r: &RoundReport| {
                tracing::info!(outbox = %name, claimed = r.claimed, sent = r.sent, adopted = r.adopted, completed = r.completed, failed = r.failed, pending = r.pending, "Fax outbox round done.");
                super::claim::record_round(
                    "fax",
                    &name,
                    &[
                        ("claimed", r.claimed),
                        ("sent", r.sent),
                        ("adopted", r.adopted),
                        ("completed", r.completed),
                        ("failed", r.failed),
                    ],
                );
            },
        )
        .await
    }

    /// One round: settle what is unknown, claim new faxes, send what this worker owns, poll
    /// the status of what RingCentral accepted.
    pub async fn round(&self) -> Result<RoundReport, OutboundError> {
        self.round_until(None).await
    }

    /// [`Self::round`], stopping between faxes once `stop` fires (what is claimed and not
    /// sent stays claimed by this worker and is resumed by the next round or, after
    /// `claim_timeout`, by another worker).
    pub async fn round_until(&self, stop: Option<&Shutdown>) -> Result<RoundReport, OutboundError> {
        let mut report = RoundReport::default();
        self.take_over_stale().await?;
        self.settle_unknown(&mut report).await?;
        report.claimed = self.claim().await?;
        for c in self.owned_to_send().await? {
            if stop.is_some_and(|s| s.is_triggered()) {
                // Not sending: every fax this worker holds in `sending` is between attempts
                // (one whose send broke off is `unknown`), so the claims can be let go and
                // any worker takes them at once.
                sqlx::query(
                    "DELETE FROM oscarflow_fax_outbound WHERE owner = ? AND state = 'sending'",
                )
                .bind(&self.owner)
                .execute(&self.store.pool)
                .await
                .map_err(db("release claims"))?;
                return Ok(report);
            }
            match self.send_one(&c, &mut report).await {
                Ok(()) => {}
                // Credentials refused: nothing else will work this round.
                Err(e) if e.kind == ErrorKind::Fatal => return Err(OutboundError::ringcentral(&e)),
                Err(_) => {}
            }
        }
        self.poll_statuses(&mut report).await?;
        report.pending = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM oscarflow_fax_outbound WHERE state IN ('sending', 'unknown', 'queued')",
        )
        .fetch_one(&self.store.pool)
        .await
        .map_err(db("count pending"))? as u32;
        Ok(report)
    }

    /// Claims older than `claim_timeout` whose owner did not finish: taken over (and first
    /// looked up in RingCentral, since the owner may have sent them).
    async fn take_over_stale(&self) -> Result<(), OutboundError> {
        let limit = unix_now() - self.cfg.claim_timeout.as_secs() as i64;
        let stale: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT fax_id, owner, claimed_unix FROM oscarflow_fax_outbound WHERE state IN ('sending', 'unknown') AND owner <> ? AND claimed_unix < ?",
        )
        .bind(&self.owner)
        .bind(limit)
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("find stale claims"))?;
        for (fax_id, owner, claimed) in stale {
            // Conditional: of two workers taking over, one wins.
            let r = sqlx::query("UPDATE oscarflow_fax_outbound SET owner = ?, state = 'unknown', claimed_unix = ?, updated_at = ? WHERE fax_id = ? AND owner = ? AND claimed_unix = ? AND state IN ('sending', 'unknown')")
                .bind(&self.owner)
                .bind(unix_now())
                .bind(now_sql())
                .bind(fax_id)
                .bind(&owner)
                .bind(claimed)
                .execute(&self.store.pool)
                .await
                .map_err(db("take over a stale claim"))?;
            if r.rows_affected() == 1 {
                tracing::warn!(outbox = %self.cfg.name, fax_id, "Took over a fax whose sender stopped; looking it up before sending.");
            }
        }
        Ok(())
    }

    /// Faxes whose send broke off in transit: found in RingCentral → adopted; not found
    /// (after `unknown_settle_after`) → sent again.
    async fn settle_unknown(&self, report: &mut RoundReport) -> Result<(), OutboundError> {
        let settle_before = unix_now() - self.cfg.unknown_settle_after.as_secs() as i64;
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT fax_id, ref_name, first_claimed_unix FROM oscarflow_fax_outbound WHERE state = 'unknown' AND owner = ?",
        )
        .bind(&self.owner)
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("find unknown sends"))?;
        for (fax_id, ref_name, first_claimed) in rows {
            // The fax cannot have reached RingCentral before it was first claimed (five
            // minutes of slack for clocks).
            let since = rfc3339(first_claimed - 300);
            match find_sent_by_name(&self.client, &since, &ref_name).await {
                Ok(Some(m)) => {
                    self.accepted(fax_id, &m).await?;
                    report.adopted += 1;
                    tracing::info!(outbox = %self.cfg.name, fax_id, message_id = m.id, "A send that broke off had reached RingCentral; adopted it instead of sending again.");
                }
                Ok(None) => {
                    let updated: i64 = sqlx::query_scalar(
                        "SELECT claimed_unix FROM oscarflow_fax_outbound WHERE fax_id = ?",
                    )
                    .bind(fax_id)
                    .fetch_one(&self.store.pool)
                    .await
                    .map_err(db("read claim"))?;
                    if updated <= settle_before {
                        self.set_state(fax_id, "sending", None).await?;
                    }
                }
                Err(e) => {
                    tracing::warn!(outbox = %self.cfg.name, fax_id, error = %e, "Could not look up a fax whose send broke off; trying again next round.");
                }
            }
        }
        Ok(())
    }

    /// Claims up to `batch` waiting faxes of the line: new ones, and ones OSCAR queued again
    /// after we sent or failed them (a user's resend).
    async fn claim(&self) -> Result<u32, OutboundError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT f.id FROM faxes f WHERE f.status = 'WAITING' AND f.faxline = ? AND f.jobId IS NULL AND NOT EXISTS (SELECT 1 FROM oscarflow_fax_outbound o WHERE o.fax_id = f.id) ORDER BY f.id LIMIT ?",
        )
        .bind(&self.cfg.fax_line)
        .bind(i64::from(self.cfg.batch))
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read OSCAR's fax queue"))?;
        let mut n = 0;
        for id in ids {
            let now = unix_now();
            let r = sqlx::query("INSERT INTO oscarflow_fax_outbound (fax_id, owner, state, ref_name, sends, rc_message_id, attempts, last_error, claimed_unix, first_claimed_unix, updated_at) VALUES (?, ?, 'sending', ?, 1, NULL, 0, NULL, ?, ?, ?)")
                .bind(id)
                .bind(&self.owner)
                .bind(self.ref_name(id, 1))
                .bind(now)
                .bind(now)
                .bind(now_sql())
                .execute(&self.store.pool)
                .await;
            match r {
                Ok(_) => n += 1,
                Err(e) if is_unique_violation(&e) => {} // another process claimed it
                Err(e) => return Err(db("claim a fax")(e)),
            }
        }
        let again: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT f.id, o.sends FROM faxes f JOIN oscarflow_fax_outbound o ON o.fax_id = f.id WHERE f.status = 'WAITING' AND f.faxline = ? AND f.jobId IS NULL AND o.state IN ('done', 'failed') ORDER BY f.id LIMIT ?",
        )
        .bind(&self.cfg.fax_line)
        .bind(i64::from(self.cfg.batch))
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read re-queued faxes"))?;
        for (id, sends) in again {
            let now = unix_now();
            // Conditional on the send count: of two workers, one takes it.
            let r = sqlx::query("UPDATE oscarflow_fax_outbound SET owner = ?, state = 'sending', sends = ?, ref_name = ?, rc_message_id = NULL, attempts = 0, last_error = NULL, claimed_unix = ?, first_claimed_unix = ?, updated_at = ? WHERE fax_id = ? AND sends = ? AND state IN ('done', 'failed')")
                .bind(&self.owner)
                .bind(sends + 1)
                .bind(self.ref_name(id, sends + 1))
                .bind(now)
                .bind(now)
                .bind(now_sql())
                .bind(id)
                .bind(sends)
                .execute(&self.store.pool)
                .await
                .map_err(db("claim a re-queued fax"))?;
            if r.rows_affected() == 1 {
                tracing::info!(outbox = %self.cfg.name, fax_id = id, send = sends + 1, "OSCAR queued a fax again; sending it again.");
                n += 1;
            }
        }
        Ok(n)
    }

    async fn owned_to_send(&self) -> Result<Vec<Claimed>, OutboundError> {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT fax_id, attempts, ref_name FROM oscarflow_fax_outbound WHERE state = 'sending' AND owner = ? ORDER BY fax_id",
        )
        .bind(&self.owner)
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read claimed faxes"))?;
        Ok(rows
            .into_iter()
            .map(|(fax_id, attempts, ref_name)| Claimed {
                fax_id,
                attempts,
                ref_name,
            })
            .collect())
    }

    async fn send_one(&self, c: &Claimed, report: &mut RoundReport) -> Result<(), RcError> {
        let local = |kind, e: OutboundError| RcError {
            kind,
            status: None,
            code: None,
            detail: e.detail,
            ambiguous: false,
        };
        let row = sqlx::query("SELECT filename, destination, document FROM faxes WHERE id = ?")
            .bind(c.fax_id)
            .fetch_optional(&self.store.pool)
            .await
            .map_err(|e| local(ErrorKind::Transient, db("read the fax")(e)))?;
        let row = row
            .map(|r| -> Result<_, sqlx::Error> {
                Ok((
                    text_column(&r, 0)?,
                    text_column(&r, 1)?,
                    text_column(&r, 2)?,
                ))
            })
            .transpose()
            .map_err(|e| local(ErrorKind::Transient, db("read the fax")(e)))?;
        let Some((filename, destination, base64_doc)) = row else {
            self.fail(c.fax_id, "the OSCAR fax row is gone", report)
                .await
                .map_err(|e| local(ErrorKind::Transient, e))?;
            return Ok(());
        };
        let to = match to_e164(destination.as_deref().unwrap_or("")) {
            Ok(n) => n,
            Err(e) => {
                self.fail(
                    c.fax_id,
                    &format!("invalid destination number: {e}"),
                    report,
                )
                .await
                .map_err(|e| local(ErrorKind::Transient, e))?;
                return Ok(());
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
            Err(reason) => {
                self.fail(c.fax_id, &reason.detail, report)
                    .await
                    .map_err(|e| local(ErrorKind::Transient, e))?;
                return Ok(());
            }
        };
        let req = FaxRequest {
            to,
            name: c.ref_name.clone(),
            file_name: doc.file_name,
            content_type: doc.content_type,
            bytes: doc.bytes,
            cover_index: self.cfg.cover_index,
        };
        let held = CLAIMS.while_holding(
            &self.store,
            c.fax_id,
            &self.owner,
            self.cfg.claim_timeout,
            send_fax(&self.client, &req),
        );
        let sent = match held.await {
            Some(r) => r,
            None => {
                tracing::warn!(outbox = %self.cfg.name, fax_id = c.fax_id, "Lost the claim on a fax (another process took it over); not sending it.");
                return Ok(());
            }
        };
        match sent {
            Ok(m) => {
                self.accepted(c.fax_id, &m)
                    .await
                    .map_err(|e| local(ErrorKind::Transient, e))?;
                report.sent += 1;
                Ok(())
            }
            Err(e) if e.ambiguous => {
                tracing::warn!(outbox = %self.cfg.name, fax_id = c.fax_id, error = %e, "The send broke off in transit; the fax is looked up before any new attempt.");
                sqlx::query("UPDATE oscarflow_fax_outbound SET state = 'unknown', claimed_unix = ?, last_error = ?, updated_at = ? WHERE fax_id = ?")
                    .bind(unix_now())
                    .bind(cut(&e.detail, 255))
                    .bind(now_sql())
                    .bind(c.fax_id)
                    .execute(&self.store.pool)
                    .await
                    .map_err(|x| local(ErrorKind::Transient, db("record an unknown send")(x)))?;
                Err(e)
            }
            Err(e) if e.kind == ErrorKind::Data => {
                let reason = format!(
                    "RingCentral refused the fax: {}",
                    e.code.as_deref().unwrap_or("no error code")
                );
                self.fail(c.fax_id, &reason, report)
                    .await
                    .map_err(|x| local(ErrorKind::Transient, x))?;
                Err(e)
            }
            Err(e) if e.kind == ErrorKind::Fatal => Err(e),
            Err(e) => {
                let attempts = c.attempts + 1;
                if attempts >= i64::from(self.cfg.max_attempts) {
                    self.fail(
                        c.fax_id,
                        &format!("gave up after {attempts} attempts: {}", e.detail),
                        report,
                    )
                    .await
                    .map_err(|x| local(ErrorKind::Transient, x))?;
                } else {
                    tracing::warn!(outbox = %self.cfg.name, fax_id = c.fax_id, attempts, error = %e, "Fax not sent; trying again next round.");
                    sqlx::query("UPDATE oscarflow_fax_outbound SET attempts = ?, last_error = ?, updated_at = ? WHERE fax_id = ?")
                        .bind(attempts)
                        .bind(cut(&e.detail, 255))
                        .bind(now_sql())
                        .bind(c.fax_id)
                        .execute(&self.store.pool)
                        .await
                        .map_err(|x| local(ErrorKind::Transient, db("count an attempt")(x)))?;
                }
                Err(e)
            }
        }
    }

    /// RingCentral accepted the fax: our row `queued` with its message id, OSCAR's `SENT`.
    async fn accepted(&self, fax_id: i64, m: &FaxMessage) -> Result<(), OutboundError> {
        let mut tx = self.store.pool.begin().await.map_err(db("begin"))?;
        sqlx::query("UPDATE oscarflow_fax_outbound SET state = 'queued', rc_message_id = ?, last_error = NULL, updated_at = ? WHERE fax_id = ?")
            .bind(m.id)
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
        tx.commit().await.map_err(db("commit"))?;
        Ok(())
    }

    /// The fax cannot be sent: OSCAR's `ERROR` with the reason, our row `failed`.
    async fn fail(
        &self,
        fax_id: i64,
        reason: &str,
        report: &mut RoundReport,
    ) -> Result<(), OutboundError> {
        let mut tx = self.store.pool.begin().await.map_err(db("begin"))?;
        sqlx::query("UPDATE oscarflow_fax_outbound SET state = 'failed', last_error = ?, updated_at = ? WHERE fax_id = ?")
            .bind(cut(reason, 255))
            .bind(now_sql())
            .bind(fax_id)
            .execute(&mut *tx)
            .await
            .map_err(db("record the failure"))?;
        sqlx::query("UPDATE faxes SET status = 'ERROR', statusString = ? WHERE id = ?")
            .bind(cut(reason, 255))
            .bind(fax_id)
            .execute(&mut *tx)
            .await
            .map_err(db("mark the OSCAR fax in error"))?;
        tx.commit().await.map_err(db("commit"))?;
        report.failed += 1;
        tracing::warn!(outbox = %self.cfg.name, fax_id, reason, "Fax not sent; OSCAR shows it as ERROR with the reason.");
        Ok(())
    }

    async fn set_state(
        &self,
        fax_id: i64,
        state: &str,
        error: Option<&str>,
    ) -> Result<(), OutboundError> {
        sqlx::query("UPDATE oscarflow_fax_outbound SET state = ?, last_error = ?, updated_at = ? WHERE fax_id = ?")
            .bind(state)
            .bind(error)
            .bind(now_sql())
            .bind(fax_id)
            .execute(&self.store.pool)
            .await
            .map(|_| ())
            .map_err(db("update the fax state"))
    }

    /// Reads the status of every accepted fax (any owner's: updates are idempotent).
    async fn poll_statuses(&self, report: &mut RoundReport) -> Result<(), OutboundError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT fax_id, rc_message_id FROM oscarflow_fax_outbound WHERE state = 'queued' AND rc_message_id IS NOT NULL ORDER BY updated_at, fax_id",
        )
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read queued faxes"))?;
        for (fax_id, message_id) in rows {
            let m = match get_message(&self.client, message_id).await {
                Ok(m) => m,
                Err(e) if e.kind == ErrorKind::Fatal => return Err(OutboundError::ringcentral(&e)),
                Err(e) => {
                    tracing::warn!(outbox = %self.cfg.name, fax_id, error = %e, "Could not read a fax's status; trying again next round.");
                    continue;
                }
            };
            match m.status() {
                "Sent" => {
                    let mut tx = self.store.pool.begin().await.map_err(db("begin"))?;
                    sqlx::query("UPDATE oscarflow_fax_outbound SET state = 'done', updated_at = ? WHERE fax_id = ? AND state = 'queued'")
                        .bind(now_sql())
                        .bind(fax_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("record completion"))?;
                    sqlx::query("UPDATE faxes SET status = 'COMPLETE', statusString = ?, numPages = COALESCE(?, numPages) WHERE id = ?")
                        .bind(format!("Sent ({} pages)", m.fax_page_count.unwrap_or(0)))
                        .bind(m.fax_page_count.map(i64::from))
                        .bind(fax_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("mark the OSCAR fax complete"))?;
                    tx.commit().await.map_err(db("commit"))?;
                    report.completed += 1;
                }
                "SendingFailed" => {
                    let reason = format!(
                        "RingCentral could not deliver the fax: {}",
                        m.error_code().unwrap_or("Undefined")
                    );
                    self.fail(fax_id, &reason, report).await?;
                }
                _ => {}
            }
        }
        Ok(())
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
            (ErrorKind::Data, crate::outbound::OutboundReason::Document)
        );
        assert!(load_document(dir.path(), None, None).await.is_err());
    }
}
