//! A database queue as a source: [`Queue`] (what one queue table knows: how to claim its
//! rows, which claimed rows are due for which step, how to release a row once its outcome is
//! durable) and [`QueueSource`] (the round, written once for every queue: OSCAR's outbound
//! faxes, SMS reminders and lab-ready notices).
//!
//! **A round.** Wait while the pipeline is paused; then for each of the queue's phases (a
//! fax is first looked up if a send broke off, then claimed and sent, then tracked), ask the
//! queue for the jobs due in that phase, send each as an envelope with its own batch, wait
//! for every outcome, and hand each outcome back to the queue, which releases the row as OSCAR
//! does (`ERROR` with the reason once a dead letter is durable) and names what happened for
//! the round's report (`sent`, `adopted`, `completed`, `failed`, …). The report is an event
//! ([`Event::QueueRound`]): a log line, `oscarflow_outbound_messages_total` and the time of
//! the last round. Rounds repeat every `poll_interval`, at once on `poll now`, and never
//! while paused.
//!
//! **Claims.** Rows are claimed by a conditional insert or update in our own claim table, so
//! of two daemons on one database exactly one gets each row; every claim names its owner (this
//! source, this process) and is refreshed while its work runs, and a claim whose owner stopped
//! refreshing it is taken over after the queue's lease. When the pipeline stops, claims whose
//! work has not started are let go at once ([`Queue::let_go`]).
//!
//! **Never lost.** A job whose outcome is neither durable nor dead-lettered (the pipeline
//! stopped, the sink failed) leaves its row claimed and due: the next round, here or in the
//! process that takes the claim over, offers it again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{wait_next_poll, SendError, Source, SourceContext, SourceError};
use crate::ack::{BatchNotifier, BatchOutcome};
use crate::envelope::{Envelope, Origin, RawBytes};
use crate::jobs::OutboundError;
use crate::payload::Payload;
use crate::telemetry::Event;

/// One job due now: the queue row it came from and the payload for the sink.
pub struct Due<J> {
    pub row: i64,
    pub job: J,
}

/// What one phase of a round has to offer: the jobs due, with what the queue did to find
/// them (rows newly claimed; other counts for the report, such as messages a producer
/// queued).
pub struct Batch<J> {
    pub claimed: u32,
    pub counts: Vec<(&'static str, u32)>,
    pub jobs: Vec<Due<J>>,
}

impl<J> Batch<J> {
    /// Just these jobs.
    pub fn of(jobs: Vec<Due<J>>) -> Self {
        Batch {
            claimed: 0,
            counts: Vec::new(),
            jobs,
        }
    }
}

/// One queue table. See the module docs for the protocol.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    type Job: Payload + Clone;

    /// The kind in metrics and logs (`fax`, `sms`).
    fn kind(&self) -> &'static str;
    /// The queue's name in metrics, logs and references (from its config).
    fn name(&self) -> &str;
    /// The table its rows are named by in provenance (`faxes`, `oscarflow_sms_outbox`).
    fn table(&self) -> &'static str;
    /// How many phases a round has (each phase's outcomes settle before the next starts).
    fn phases(&self) -> usize;
    /// The jobs due in `phase` for `owner`: the queue claims what it must first.
    async fn due(&self, owner: &str, phase: usize) -> Result<Batch<Self::Job>, OutboundError>;
    /// A job's outcome settled: release its row as OSCAR does; what happened, for the
    /// report (`None`: nothing to count).
    async fn settled(
        &self,
        owner: &str,
        due: &Due<Self::Job>,
        outcome: BatchOutcome,
    ) -> Result<Option<&'static str>, OutboundError>;
    /// Rows still in flight after the round (any owner's).
    async fn pending(&self) -> Result<u32, OutboundError>;
    /// The pipeline stops: let go of claims whose work has not started, so another process
    /// takes them at once.
    async fn let_go(&self, owner: &str) -> Result<(), OutboundError>;
    /// `dlq retry` of a dead-lettered job: put its row back in the queue as OSCAR's own
    /// resend does, for the running daemon to claim. False when the row is not in a state
    /// that can be queued again (gone, or already re-sent).
    async fn requeue(&self, job: &Self::Job) -> Result<bool, OutboundError>;
}

/// The report of one round: rows claimed, outcomes counted, rows still in flight.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub claimed: u32,
    pub outcomes: Vec<(&'static str, u32)>,
    pub pending: u32,
}

impl RoundReport {
    /// How many jobs ended with `outcome` this round.
    pub fn count(&self, outcome: &str) -> u32 {
        self.outcomes
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, n)| *n)
    }
    fn add(&mut self, outcome: &'static str) {
        self.add_n(outcome, 1);
    }
    fn add_n(&mut self, outcome: &'static str, n: u32) {
        if n == 0 {
            return;
        }
        match self.outcomes.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, m)) => *m += n,
            None => self.outcomes.push((outcome, n)),
        }
    }
}

/// A [`Queue`] run as a pipeline source.
pub struct QueueSource<Q: Queue> {
    /// The source's type name, for provenance (`oscar_fax_queue`).
    type_name: &'static str,
    queue: Arc<Q>,
    owner: String,
    interval: Duration,
    max_rounds: Option<u32>,
}

impl<Q: Queue> QueueSource<Q> {
    /// `owner` names this claimant (see `jobs::claim::owner_id`).
    pub fn new(type_name: &'static str, queue: Q, owner: String, interval: Duration) -> Self {
        QueueSource {
            type_name,
            queue: Arc::new(queue),
            owner,
            interval,
            max_rounds: None,
        }
    }
    /// Stop after `n` rounds (replay, `dlq retry`, tests).
    pub fn with_max_rounds(mut self, n: u32) -> Self {
        self.max_rounds = Some(n);
        self
    }

    /// One round; `Ok(None)` when the pipeline stopped during it.
    async fn round(
        &self,
        cx: &SourceContext<Q::Job>,
    ) -> Result<Option<RoundReport>, OutboundError> {
        let q = &self.queue;
        let stamp = cx.stamp(self.type_name);
        let mut report = RoundReport::default();
        for phase in 0..q.phases() {
            if cx.shutdown.is_triggered() {
                return Ok(None);
            }
            if cx.out.control().intake_stopped() {
                // Paused: claim nothing more this round.
                break;
            }
            let batch = q.due(&self.owner, phase).await?;
            report.claimed += batch.claimed;
            for (what, n) in batch.counts {
                report.add_n(what, n);
            }
            let mut waiting = Vec::with_capacity(batch.jobs.len());
            let mut stopped = false;
            for due in batch.jobs {
                // Paused mid-round: the rest stays claimed and due, offered after the resume.
                if stopped || cx.out.control().intake_stopped() {
                    break;
                }
                let bytes = due.job.raw_bytes();
                let prov = stamp.received(
                    Origin::QueueRow {
                        table: q.table().to_string(),
                        id: due.row,
                    },
                    &bytes,
                    bytes.len(),
                );
                let (notifier, receiver) = BatchNotifier::new(Some(cx.in_flight.clone()));
                let env = Envelope::new(prov.clone(), due.job.clone(), notifier.token());
                drop(notifier);
                match cx.out.send(env).await {
                    Ok(()) => waiting.push((due, prov, receiver)),
                    // Not sent: the row stays claimed and due; offered again next round.
                    Err(SendError::Closed) => stopped = true,
                    Err(SendError::Archive(_)) => {}
                }
            }
            for (due, prov, receiver) in waiting {
                let outcome = receiver.wait_outcome().await;
                let counted = q.settled(&self.owner, &due, outcome).await?;
                cx.observers.emit(Event::Settled {
                    prov: &prov,
                    status: outcome.status,
                    released: outcome.status.may_release(),
                });
                if let Some(o) = counted {
                    report.add(o);
                }
            }
            if stopped {
                return Ok(None);
            }
        }
        report.pending = q.pending().await?;
        Ok(Some(report))
    }
}

impl<Q: Queue> super::Polling for QueueSource<Q> {
    fn with_max_polls(self, n: u32) -> Self {
        self.with_max_rounds(n)
    }
}

#[async_trait]
impl<Q: Queue> Source<Q::Job> for QueueSource<Q> {
    async fn run(self: Box<Self>, cx: SourceContext<Q::Job>) -> Result<(), SourceError> {
        let control = cx.out.control().clone();
        let mut polls = control.poll_requests();
        let mut shutdown = cx.shutdown.clone();
        let mut rounds = 0u32;
        // The first round, too, waits while the pipeline is paused.
        let mut go = wait_next_poll(Duration::ZERO, &control, &mut polls, &mut shutdown).await;
        while go {
            match self.round(&cx).await {
                Ok(Some(report)) => cx.observers.emit(Event::QueueRound {
                    pipeline: &cx.pipeline,
                    component: &cx.id,
                    kind: self.queue.kind(),
                    queue: self.queue.name(),
                    claimed: report.claimed,
                    outcomes: &report.outcomes,
                    pending: report.pending,
                }),
                Ok(None) => break,
                Err(e) if e.kind == crate::error::ErrorKind::Fatal => {
                    let _ = self.queue.let_go(&self.owner).await;
                    return Err(SourceError {
                        kind: e.kind,
                        detail: e.detail,
                    });
                }
                Err(e) => cx.observers.emit(Event::QueueRoundFailed {
                    pipeline: &cx.pipeline,
                    component: &cx.id,
                    queue: self.queue.name(),
                    reason: e.reason.as_str(),
                    error: &e.detail,
                }),
            }
            rounds += 1;
            if self.max_rounds.is_some_and(|m| rounds >= m) {
                break;
            }
            go = wait_next_poll(self.interval, &control, &mut polls, &mut shutdown).await;
        }
        if let Err(e) = self.queue.let_go(&self.owner).await {
            tracing::warn!(pipeline = %cx.pipeline, source = %cx.id, error = %e, "Could not let go of claims at stop; they are taken over after their lease.");
        }
        Ok(())
    }
}
