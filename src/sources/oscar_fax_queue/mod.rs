//! `oscar_fax_queue`: OSCAR's own outbound `faxes` rows with `status = 'WAITING'`, on one fax
//! line and with no `jobId`, as a stream of [`FaxJob`]s for a sink that sends them
//! (`ringcentral_fax`). The round and its guarantees are [`super::queue`]'s; this file holds
//! what is particular to OSCAR's fax queue.
//!
//! **Claims.** A fax is claimed by inserting its id into `oscarflow_fax_outbound` (primary
//! key): of two daemons on one database exactly one insert succeeds, on MariaDB and SQLite
//! alike (the portable equivalent of `SELECT … FOR UPDATE SKIP LOCKED`). A fax that OSCAR
//! queues again after we sent or failed it (a user's resend) is claimed again by a conditional
//! update of its send count, and gets a new reference (`#<id>/<n>`).
//!
//! **Phases of a round.** (1) Faxes whose send broke off in transit (`unknown`) are looked up
//! by their reference before anything else; (2) new faxes are claimed and every fax this
//! source holds in `sending` is sent; (3) faxes RingCentral accepted (`queued`) are tracked
//! until delivered or failed. Claims of a process that stopped refreshing them are taken over
//! first: `sending`/`unknown` ones are looked up before any send, `queued` ones are tracked.
//!
//! **Release.** The sink writes OSCAR's `SENT` and `COMPLETE` in the same transaction as its
//! own outcome — a better shape than releasing from the source after the ack: the release is
//! atomic with the durable outcome, so no crash can leave a fax that RingCentral accepted
//! still `WAITING` in OSCAR, where a user (or OSCAR's own sender) would send it again. A fax whose job was dead-lettered (no usable number, no document, refused,
//! undeliverable, retries spent) is released here, after the dead letter is durable: OSCAR's
//! `ERROR` with the reason the sink recorded.
//!
//! No phone number, file name or document content is logged: faxes are named by OSCAR's
//! `faxes.id` only.

mod config;

pub use config::OscarFaxQueueConfig;

use async_trait::async_trait;

use super::queue::{Batch, Due, Queue};
use crate::ack::{BatchOutcome, BatchStatus};
use crate::jobs::claim::{cut, db, unix_now};
use crate::jobs::{FaxJob, OutboundError, Step};
use crate::store::{is_unique_violation, now_sql, Store};

/// Phases of a round (see the module docs).
const LOOK_UP: usize = 0;
const SEND: usize = 1;
const TRACK: usize = 2;

/// OSCAR's fax queue for one line.
pub struct FaxQueue {
    cfg: OscarFaxQueueConfig,
    store: Store,
}

impl FaxQueue {
    pub fn new(cfg: OscarFaxQueueConfig, store: Store) -> Self {
        FaxQueue { cfg, store }
    }

    /// The reference RingCentral keeps with the fax (the recipient name).
    fn ref_name(&self, fax_id: i64, sends: i64) -> String {
        if sends <= 1 {
            format!("OSCAR fax {}#{fax_id}", self.cfg.name)
        } else {
            format!("OSCAR fax {}#{fax_id}/{sends}", self.cfg.name)
        }
    }

    fn job(&self, fax_id: i64, owner: &str, ref_name: String, step: Step) -> Due<FaxJob> {
        Due {
            row: fax_id,
            job: FaxJob {
                fax_id,
                owner: owner.to_string(),
                ref_name,
                lease_secs: self.cfg.claim_timeout.as_secs().max(1),
                step,
            },
        }
    }

    /// Claims older than `claim_timeout` whose owner stopped refreshing them: `sending` and
    /// `unknown` ones become this owner's `unknown` (looked up before any send), `queued`
    /// ones this owner's to track. Then refreshes this owner's `queued` claims.
    async fn take_over_stale(&self, owner: &str) -> Result<(), OutboundError> {
        let limit = unix_now() - self.cfg.claim_timeout.as_secs() as i64;
        let stale: Vec<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT fax_id, owner, claimed_unix, state FROM oscarflow_fax_outbound WHERE state IN ('sending', 'unknown', 'queued') AND owner <> ? AND claimed_unix < ?",
        )
        .bind(owner)
        .bind(limit)
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("find stale claims"))?;
        for (fax_id, old_owner, claimed, state) in stale {
            let next = if state == "queued" {
                "queued"
            } else {
                "unknown"
            };
            // Conditional: of two daemons taking over, one wins.
            let r = sqlx::query("UPDATE oscarflow_fax_outbound SET owner = ?, state = ?, claimed_unix = ?, updated_at = ? WHERE fax_id = ? AND owner = ? AND claimed_unix = ? AND state = ?")
                .bind(owner)
                .bind(next)
                .bind(unix_now())
                .bind(now_sql())
                .bind(fax_id)
                .bind(&old_owner)
                .bind(claimed)
                .bind(&state)
                .execute(&self.store.pool)
                .await
                .map_err(db("take over a stale claim"))?;
            if r.rows_affected() == 1 {
                tracing::warn!(queue = %self.cfg.name, fax_id, state = next, "Took over a fax whose process stopped.");
            }
        }
        sqlx::query("UPDATE oscarflow_fax_outbound SET claimed_unix = ? WHERE owner = ? AND state = 'queued'")
            .bind(unix_now())
            .bind(owner)
            .execute(&self.store.pool)
            .await
            .map_err(db("refresh tracked claims"))?;
        Ok(())
    }

    /// Faxes of this owner whose send broke off: look them up.
    async fn unknown(&self, owner: &str) -> Result<Vec<Due<FaxJob>>, OutboundError> {
        let settle_before = unix_now() - self.cfg.unknown_settle_after.as_secs() as i64;
        let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(
            "SELECT fax_id, ref_name, first_claimed_unix, claimed_unix FROM oscarflow_fax_outbound WHERE state = 'unknown' AND owner = ? ORDER BY fax_id",
        )
        .bind(owner)
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("find unknown sends"))?;
        Ok(rows
            .into_iter()
            .map(|(fax_id, ref_name, first_claimed, claimed)| {
                // The fax cannot have reached RingCentral before it was first claimed (five
                // minutes of slack for clocks).
                let step = Step::LookUp {
                    since_unix: first_claimed - 300,
                    settled: claimed <= settle_before,
                };
                self.job(fax_id, owner, ref_name, step)
            })
            .collect())
    }

    /// Claims up to `batch` waiting faxes of the line: new ones, and ones OSCAR queued again
    /// after we sent or failed them (a user's resend).
    async fn claim(&self, owner: &str) -> Result<u32, OutboundError> {
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
                .bind(owner)
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
            // Conditional on the send count: of two daemons, one takes it.
            let r = sqlx::query("UPDATE oscarflow_fax_outbound SET owner = ?, state = 'sending', sends = ?, ref_name = ?, rc_message_id = NULL, attempts = 0, last_error = NULL, claimed_unix = ?, first_claimed_unix = ?, updated_at = ? WHERE fax_id = ? AND sends = ? AND state IN ('done', 'failed')")
                .bind(owner)
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
                tracing::info!(queue = %self.cfg.name, fax_id = id, send = sends + 1, "OSCAR queued a fax again; sending it again.");
                n += 1;
            }
        }
        Ok(n)
    }

    async fn owned(
        &self,
        owner: &str,
        state: &str,
    ) -> Result<Vec<(i64, String, Option<i64>)>, OutboundError> {
        sqlx::query_as(
            "SELECT fax_id, ref_name, rc_message_id FROM oscarflow_fax_outbound WHERE state = ? AND owner = ? ORDER BY fax_id",
        )
        .bind(state)
        .bind(owner)
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read claimed faxes"))
    }

    /// The fax cannot be sent: our row `failed`, OSCAR's `ERROR` with the reason (only while
    /// `owner` holds the claim).
    async fn fail(&self, owner: &str, fax_id: i64, reason: &str) -> Result<bool, OutboundError> {
        crate::audit::ensure_chain(&self.store, crate::audit::STATUS_CHAIN)
            .await
            .map_err(db("create the audit chain"))?;
        let mut tx = self.store.pool.begin().await.map_err(db("begin"))?;
        let r = sqlx::query("UPDATE oscarflow_fax_outbound SET state = 'failed', last_error = ?, updated_at = ? WHERE fax_id = ? AND owner = ? AND state IN ('sending', 'unknown', 'queued')")
            .bind(cut(reason, 255))
            .bind(now_sql())
            .bind(fax_id)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db("record the failure"))?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE faxes SET status = 'ERROR', statusString = ? WHERE id = ?")
            .bind(cut(reason, 255))
            .bind(fax_id)
            .execute(&mut *tx)
            .await
            .map_err(db("mark the OSCAR fax in error"))?;
        crate::oscar::fax::audit_fax_status(
            &mut tx,
            &self.store,
            &format!("fax queue {}", self.cfg.name),
            fax_id,
            "ERROR",
        )
        .await
        .map_err(db("audit the OSCAR fax status"))?;
        tx.commit().await.map_err(db("commit"))?;
        tracing::warn!(queue = %self.cfg.name, fax_id, "Fax not sent; OSCAR shows it as ERROR with the reason.");
        Ok(true)
    }
}

#[async_trait]
impl Queue for FaxQueue {
    type Job = FaxJob;

    fn kind(&self) -> &'static str {
        "fax"
    }
    fn name(&self) -> &str {
        &self.cfg.name
    }
    fn table(&self) -> &'static str {
        "faxes"
    }
    fn phases(&self) -> usize {
        3
    }

    async fn due(&self, owner: &str, phase: usize) -> Result<Batch<FaxJob>, OutboundError> {
        match phase {
            LOOK_UP => {
                self.take_over_stale(owner).await?;
                Ok(Batch::of(self.unknown(owner).await?))
            }
            SEND => {
                let claimed = self.claim(owner).await?;
                let jobs = self
                    .owned(owner, "sending")
                    .await?
                    .into_iter()
                    .map(|(id, ref_name, _)| self.job(id, owner, ref_name, Step::Send))
                    .collect();
                Ok(Batch {
                    claimed,
                    counts: Vec::new(),
                    jobs,
                })
            }
            TRACK => Ok(Batch::of(
                self.owned(owner, "queued")
                    .await?
                    .into_iter()
                    .filter_map(|(id, ref_name, message)| {
                        let message_id = message?;
                        Some(self.job(id, owner, ref_name, Step::Track { message_id }))
                    })
                    .collect(),
            )),
            _ => Ok(Batch::of(Vec::new())),
        }
    }

    async fn settled(
        &self,
        owner: &str,
        due: &Due<FaxJob>,
        outcome: BatchOutcome,
    ) -> Result<Option<&'static str>, OutboundError> {
        let fax_id = due.job.fax_id;
        let row: Option<(String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT state, owner, last_error, attempts FROM oscarflow_fax_outbound WHERE fax_id = ?",
        )
        .bind(fax_id)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(db("read the fax's claim"))?;
        let Some((state, holder, last_error, attempts)) = row else {
            return Ok(None);
        };
        if holder != owner {
            return Ok(None); // taken over meanwhile: the new owner reports it
        }
        Ok(match outcome.status {
            BatchStatus::DeadLettered => {
                let reason = crate::jobs::release_reason(&outcome, last_error, attempts);
                self.fail(owner, fax_id, &reason).await?.then_some("failed")
            }
            BatchStatus::Delivered => match (due.job.step, state.as_str()) {
                (Step::Send, "queued") => Some("sent"),
                (Step::LookUp { .. }, "queued") => Some("adopted"),
                (Step::Track { .. }, "done") => Some("completed"),
                _ => None,
            },
            BatchStatus::Failed => None,
        })
    }

    async fn pending(&self) -> Result<u32, OutboundError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM oscarflow_fax_outbound WHERE state IN ('sending', 'unknown', 'queued')",
        )
        .fetch_one(&self.store.pool)
        .await
        .map_err(db("count pending"))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn requeue(&self, job: &FaxJob) -> Result<bool, OutboundError> {
        // The claim stays `failed`: the next round claims the fax again as a resend, with a
        // new reference, exactly as when a user re-queues it in OSCAR.
        crate::audit::ensure_chain(&self.store, crate::audit::STATUS_CHAIN)
            .await
            .map_err(db("create the audit chain"))?;
        let mut tx = self.store.pool.begin().await.map_err(db("begin"))?;
        let r = sqlx::query("UPDATE faxes SET status = 'WAITING', statusString = '' WHERE id = ? AND status = 'ERROR' AND faxline = ?")
            .bind(job.fax_id)
            .bind(&self.cfg.fax_line)
            .execute(&mut *tx)
            .await
            .map_err(db("queue the fax again"))?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        crate::oscar::fax::audit_fax_status(
            &mut tx,
            &self.store,
            &format!("fax queue {}", self.cfg.name),
            job.fax_id,
            "WAITING",
        )
        .await
        .map_err(db("audit the OSCAR fax status"))?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(true)
    }

    async fn let_go(&self, owner: &str) -> Result<(), OutboundError> {
        // Every fax this owner holds in `sending` is between attempts (one whose send broke
        // off is `unknown`): a first send's claim is deleted, so any daemon claims it anew;
        // a resend keeps its row (its reference must not be reused) and is made stale, so
        // another daemon takes it over at once and looks it up first.
        sqlx::query("DELETE FROM oscarflow_fax_outbound WHERE owner = ? AND state = 'sending' AND sends = 1")
            .bind(owner)
            .execute(&self.store.pool)
            .await
            .map_err(db("let go of claims"))?;
        sqlx::query("UPDATE oscarflow_fax_outbound SET claimed_unix = 0 WHERE owner = ? AND state = 'sending'")
            .bind(owner)
            .execute(&self.store.pool)
            .await
            .map_err(db("let go of claims"))?;
        Ok(())
    }
}

#[async_trait]
impl super::SourceComponent for OscarFaxQueueConfig {
    fn output_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::FaxJob
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn build(
        &self,
        cx: &super::SourceBuildContext,
    ) -> Result<super::BuiltSource, super::SourceError> {
        let s = super::queue::QueueSource::new(
            "oscar_fax_queue",
            FaxQueue::new(self.clone(), cx.store.clone()),
            crate::jobs::claim::owner_id(&self.name),
            self.poll_interval,
        );
        Ok(super::polling::<FaxJob, _>(s, cx))
    }
    fn consumes(&self) -> (&'static str, String) {
        ("OSCAR fax line", self.fax_line.clone())
    }
    fn is_queue(&self) -> bool {
        true
    }
    async fn requeue(&self, store: &Store, raw: &[u8]) -> Option<Result<bool, OutboundError>> {
        Some(match serde_json::from_slice(raw) {
            Ok(job) => {
                FaxQueue::new(self.clone(), store.clone())
                    .requeue(&job)
                    .await
            }
            Err(_) => Err(OutboundError::database(
                "the dead letter does not hold a fax job",
            )),
        })
    }
}
