//! `ringcentral_fax`: the clinic's RingCentral fax inbox as a stream of received documents.
//!
//! **What is fetched.** Each poll lists inbound faxes from a **saved watermark** (the
//! `oscarflow_checkpoint` row of this pipeline and source) minus an `overlap`, with no
//! `readStatus` filter: a fax someone already opened in the RingCentral app is still filed,
//! and `dateFrom` is always sent, because RingCentral's default window is the last 24 h and a
//! weekend outage must not lose faxes. The first poll of a new installation looks back
//! `initial_lookback` (7 days by default). Every fax whose message id is not yet in
//! `oscarflow_fax_inbound` is taken, oldest first.
//!
//! **How.** The attachment is streamed to `spool_dir` (never whole in memory), hashed from
//! the file, and sent down the pipeline as an [`InboundDocument`] with its own
//! acknowledgement. At most `max_in_flight` faxes are downloaded ahead of their commit, which
//! bounds the spool. When the sink committed the fax (or it was dead-lettered with its bytes,
//! which is recorded in `oscarflow_fax_inbound`), it is settled; a filed fax is marked read
//! — only then — while a dead-lettered one stays unread in RingCentral for the staff to see.
//!
//! **The watermark** advances to the newest creation time of the round, but never past the
//! oldest fax that was not settled (download failed, commit failed, shutdown): that one is
//! listed again on the next poll. Message ids make the overlap harmless: the import is keyed
//! by them, so a fax listed twice is filed once.
//!
//! A failed round (RingCentral unreachable, credentials refused) is logged with a PHI-free
//! reason and retried at the next poll; nothing is lost and the watermark stays. Sender
//! numbers are written to OSCAR's fax log but never logged.

use std::sync::Arc;

use futures::stream::{FuturesOrdered, StreamExt};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::pull::{run_schedule, PollError, Round, Schedule};
use super::{SendError, SourceContext, SourceError};
use crate::ack::{BatchNotifier, BatchReceiver, BatchStatus};
use crate::document::{InboundDocument, SpoolFile};
use crate::envelope::{Envelope, Origin, Provenance};
use crate::error::ErrorKind;
use crate::oscar::fax::{record_dead_lettered, taken_as};
use crate::ringcentral::messages::{download_attachment, list_inbound_faxes, mark_read};
use crate::ringcentral::RcClient;
use crate::store::{now_sql, Store};
use crate::telemetry::Event;

mod config;
pub use config::*;

/// The source.
pub struct RingCentralFaxSource {
    cfg: RingCentralFaxConfig,
    max_polls: Option<u32>,
}

/// A fax handed to the pipeline, waiting for its outcome.
struct Pending {
    id: i64,
    created: OffsetDateTime,
    prov: Arc<Provenance>,
    receiver: BatchReceiver,
}

const CHECKPOINT_FORMAT: Rfc3339 = Rfc3339;

impl RingCentralFaxSource {
    pub fn new(cfg: RingCentralFaxConfig) -> Self {
        Self {
            cfg,
            max_polls: None,
        }
    }

    /// Stop after `n` polls (one-shot runs, tests).
    pub fn with_max_polls(mut self, n: u32) -> Self {
        self.max_polls = Some(n);
        self
    }

    /// Runs until shutdown (or `max_polls`).
    pub async fn run(self, cx: SourceContext<InboundDocument>) -> Result<(), SourceError> {
        self.poll_until_stopped(cx).await
    }

    async fn poll_until_stopped(
        self,
        cx: SourceContext<InboundDocument>,
    ) -> Result<(), SourceError> {
        let fatal = |detail: String| SourceError {
            kind: ErrorKind::Fatal,
            detail: format!("ringcentral_fax: {detail}"),
        };
        crate::private_fs::create_dir_all(&self.cfg.spool_dir)
            .map_err(|e| fatal(format!("spool_dir: {}", e.kind())))?;
        clear_spool(&self.cfg.spool_dir);
        let client =
            Arc::new(RcClient::new(self.cfg.ringcentral.clone()).map_err(|e| fatal(e.detail))?);
        let schedule = Schedule {
            times_of_day: &[],
            interval: self.cfg.poll_interval,
            max_polls: self.max_polls,
        };
        run_schedule(&cx, "ringcentral_fax", schedule, || self.poll(&cx, &client)).await
    }

    async fn poll(
        &self,
        cx: &SourceContext<InboundDocument>,
        client: &RcClient,
    ) -> Result<Round, PollError> {
        let store = &cx.store;
        let watermark = match load_checkpoint(store, &cx.pipeline, &cx.id).await? {
            Some(w) => w,
            None => OffsetDateTime::now_utc() - self.cfg.initial_lookback,
        };
        let from = watermark - self.cfg.overlap;
        let from_text = from
            .replace_nanosecond(0)
            .unwrap_or(from)
            .format(&CHECKPOINT_FORMAT)
            .map_err(|_| PollError("formatting the watermark".into()))?;
        let mut records = list_inbound_faxes(client, &from_text, self.cfg.per_page)
            .await
            .map_err(|e| PollError(format!("listing faxes: {e}")))?;
        records.sort_by_key(|r| (parse_time(&r.creation_time), r.id));
        records.dedup_by_key(|r| r.id);

        let mut newest = watermark;
        let mut unsettled = Unsettled::default();
        let mut pending: FuturesOrdered<_> = FuturesOrdered::new();
        let (mut taken, mut filed) = (0u32, 0u32);
        let shutdown = cx.shutdown.clone();
        let mut stopped = false;
        for r in &records {
            let created = parse_time(&r.creation_time).unwrap_or(watermark);
            newest = newest.max(created);
            // Stopping, or paused mid-round: the rest is not downloaded; the watermark
            // stays before it, so the next poll (after the resume) lists it again.
            if stopped || shutdown.is_triggered() || cx.out.control().intake_stopped() {
                stopped = true;
                unsettled.keep(created);
                continue;
            }
            match taken_as(store, r.id).await {
                Ok(Some(outcome)) => {
                    // Filed before; a mark-read that failed then (RingCentral down right
                    // after the commit) is made up for now.
                    if outcome == "imported" && self.cfg.mark_read && r.read_status != "Read" {
                        if let Err(e) = mark_read(client, r.id).await {
                            tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, message_id = r.id, error = %e, "Fax filed but not marked read in RingCentral.");
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    unsettled.keep(created);
                    tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, error = %e, "Fax dedupe check failed; the fax is kept for the next poll.");
                    continue;
                }
            }
            // Bound what is downloaded but not yet settled.
            while pending.len() >= self.cfg.max_in_flight {
                if let Some(p) = pending.next().await {
                    filed += self.settle(cx, client, p, &mut unsettled).await;
                }
            }
            match self.take(cx, client, r, created).await {
                Ok(Some(p)) => {
                    taken += 1;
                    pending.push_back(async move {
                        let outcome = p.receiver.wait_outcome().await;
                        (p.id, p.created, p.prov, outcome)
                    });
                }
                Ok(None) => {
                    // The pipeline stopped.
                    stopped = true;
                    unsettled.keep(created);
                }
                Err(e) => {
                    unsettled.keep(created);
                    tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, message_id = r.id, error = %e, "Fax not taken (download or archive failed); it is fetched again at the next poll.");
                }
            }
        }
        while let Some(p) = pending.next().await {
            filed += self.settle(cx, client, p, &mut unsettled).await;
        }
        let next = match unsettled.oldest {
            Some(u) => newest.min(u).max(watermark),
            None => newest,
        };
        if next != watermark {
            save_checkpoint(store, &cx.pipeline, &cx.id, next).await?;
        }
        if unsettled.count > 0 && !stopped {
            return Err(PollError(format!(
                "{} of {} listed faxes not filed this round; they are fetched again at the next poll",
                unsettled.count,
                records.len()
            )));
        }
        Ok(Round::Done {
            messages: taken,
            acked: filed,
        })
    }

    /// Downloads one fax and hands it to the pipeline. `Ok(None)`: the pipeline stopped.
    async fn take(
        &self,
        cx: &SourceContext<InboundDocument>,
        client: &RcClient,
        r: &crate::ringcentral::messages::MessageRecord,
        created: OffsetDateTime,
    ) -> Result<Option<Pending>, PollError> {
        let Some(att) = r
            .attachments
            .iter()
            .find(|a| a.kind == "RenderedDocument")
            .or_else(|| r.attachments.first())
        else {
            return Err(PollError("the fax has no attachment yet".into()));
        };
        let dest = self.cfg.spool_dir.join(format!("{}.fax", r.id));
        let size = download_attachment(client, att, &dest)
            .await
            .map_err(|e| PollError(format!("downloading: {e}")))?;
        let file = Arc::new(SpoolFile::new(dest));
        let path = file.path().to_path_buf();
        let sha = tokio::task::spawn_blocking(move || hash_file(&path))
            .await
            .map_err(|_| PollError("hashing the download".into()))?
            .map_err(|e| PollError(format!("hashing the download: {}", e.kind())))?;
        let content_type = if att.content_type.is_empty() {
            "application/pdf".to_string()
        } else {
            att.content_type.clone()
        };
        let ext = if content_type.contains("tif") {
            "tif"
        } else {
            "pdf"
        };
        let prov = cx.stamp("ringcentral_fax").received_hashed(
            Origin::Fax {
                message_id: r.id.to_string(),
            },
            sha,
            size as usize,
        );
        let doc = InboundDocument {
            file,
            size,
            name: format!("fax-{}.{ext}", r.id),
            content_type,
            pages: r.fax_page_count.unwrap_or(0),
            received_at: created,
            external_id: r.id,
            sender: r
                .from
                .as_ref()
                .and_then(|f| f.phone_number.as_deref())
                .map(|n| n.chars().filter(char::is_ascii_digit).collect::<String>())
                .filter(|d| !d.is_empty()),
        };
        let (notifier, receiver) = BatchNotifier::new(Some(cx.in_flight.clone()));
        let env = Envelope::new(prov.clone(), doc, notifier.token());
        drop(notifier);
        match cx.out.send(env).await {
            Ok(()) => {}
            Err(SendError::Closed) => return Ok(None),
            // Not archived: the fax stays unread and unfiled; it is fetched again.
            Err(SendError::Archive(e)) => return Err(PollError(e.to_string())),
        }
        Ok(Some(Pending {
            id: r.id,
            created,
            prov,
            receiver,
        }))
    }

    /// Acts on one fax's outcome; 1 when it was filed or dead-lettered.
    async fn settle(
        &self,
        cx: &SourceContext<InboundDocument>,
        client: &RcClient,
        (id, created, prov, outcome): (
            i64,
            OffsetDateTime,
            Arc<Provenance>,
            crate::ack::BatchOutcome,
        ),
        unsettled: &mut Unsettled,
    ) -> u32 {
        let status = outcome.status;
        let mut released = status.may_release();
        if status == BatchStatus::DeadLettered {
            if let Err(e) =
                record_dead_lettered(&cx.store, id, &prov.sha256_hex(), &cx.pipeline).await
            {
                // The dead letter holds the bytes; without this record the fax is simply
                // fetched (and dead-lettered) again.
                tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, message_id = id, error = %e, "Could not record the dead-lettered fax.");
                released = false;
            }
        }
        if !status.may_release() {
            unsettled.keep(created);
        }
        // Only a filed fax is marked read: one kept in the dead-letter store stays unread in
        // RingCentral, where the clinic's staff still see it.
        if released && status == BatchStatus::Delivered && self.cfg.mark_read {
            if let Err(e) = mark_read(client, id).await {
                // Courtesy only: our own table decides what was filed.
                tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, message_id = id, error = %e, "Fax filed but not marked read in RingCentral.");
            }
        }
        cx.observers.emit(Event::Settled {
            prov: &prov,
            status,
            released,
        });
        u32::from(status.may_release())
    }
}

/// The faxes of a round that were not settled: how many, and the oldest creation time (the
/// watermark must not pass it).
#[derive(Default)]
struct Unsettled {
    oldest: Option<OffsetDateTime>,
    count: usize,
}

impl Unsettled {
    fn keep(&mut self, created: OffsetDateTime) {
        self.count += 1;
        self.oldest = Some(self.oldest.map_or(created, |u| u.min(created)));
    }
}

fn parse_time(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

fn hash_file(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Spooled files of an earlier run that ended mid-round: their faxes were not filed (the
/// watermark did not pass them) and are fetched again.
fn clear_spool(dir: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "fax" || x == "part") {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

async fn load_checkpoint(
    store: &Store,
    pipeline: &str,
    source: &str,
) -> Result<Option<OffsetDateTime>, PollError> {
    let v: Option<String> = sqlx::query_scalar(
        "SELECT value FROM oscarflow_checkpoint WHERE pipeline = ? AND source = ?",
    )
    .bind(pipeline)
    .bind(source)
    .fetch_optional(&store.pool)
    .await
    .map_err(|e| {
        PollError(format!(
            "reading the checkpoint: {}",
            crate::error::describe_sqlx(&e)
        ))
    })?;
    Ok(v.as_deref().and_then(parse_time))
}

async fn save_checkpoint(
    store: &Store,
    pipeline: &str,
    source: &str,
    at: OffsetDateTime,
) -> Result<(), PollError> {
    let value = at
        .format(&CHECKPOINT_FORMAT)
        .map_err(|_| PollError("formatting the watermark".into()))?;
    let err = |e: sqlx::Error| {
        PollError(format!(
            "saving the checkpoint: {}",
            crate::error::describe_sqlx(&e)
        ))
    };
    // Insert, or update the existing row (portable across MariaDB and SQLite).
    let inserted = sqlx::query("INSERT INTO oscarflow_checkpoint (pipeline, source, value, updated_at) VALUES (?, ?, ?, ?)")
        .bind(pipeline)
        .bind(source)
        .bind(&value)
        .bind(now_sql())
        .execute(&store.pool)
        .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if crate::store::is_unique_violation(&e) => {
            sqlx::query(
                "UPDATE oscarflow_checkpoint SET value = ?, updated_at = ? WHERE pipeline = ? AND source = ?",
            )
            .bind(&value)
            .bind(now_sql())
            .bind(pipeline)
            .bind(source)
            .execute(&store.pool)
            .await
            .map(|_| ())
            .map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

#[async_trait::async_trait]
impl super::Source<InboundDocument> for RingCentralFaxSource {
    async fn run(self: Box<Self>, cx: SourceContext<InboundDocument>) -> Result<(), SourceError> {
        (*self).poll_until_stopped(cx).await
    }
}

impl super::Polling for RingCentralFaxSource {
    fn with_max_polls(self, n: u32) -> Self {
        RingCentralFaxSource::with_max_polls(self, n)
    }
}

impl super::SourceComponent for RingCentralFaxConfig {
    fn output_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::Document
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        self.ringcentral.env_refs()
    }
    fn build(
        &self,
        cx: &super::SourceBuildContext,
    ) -> Result<super::BuiltSource, super::SourceError> {
        Ok(super::polling::<InboundDocument, _>(
            RingCentralFaxSource::new(self.clone()),
            cx,
        ))
    }
    fn consumes(&self) -> (&'static str, String) {
        (
            "RingCentral fax inbox",
            format!(
                "{}|{}",
                self.ringcentral.server.trim(),
                self.ringcentral.jwt_env.get_ref()
            ),
        )
    }
}
