//! Sources: the outside world (and OSCAR's own queues) as a stream of envelopes.
//!
//! A [`Source`] reads inputs, wraps each in an envelope whose ack token belongs to a fresh
//! [`crate::ack::BatchNotifier`], sends it on its bounded channel (which blocks when the
//! pipeline is full — that is the backpressure), and **releases an input only when its batch
//! status says every envelope was committed or dead-lettered**. A failed or unresolved batch
//! is kept and re-delivered later. `run` returns when the input is exhausted (one-shot) or the
//! shutdown signal fired, after the batches it started have settled or the channel closed.
//! Types: `folder`, `mllp`, `excelleris`, `iha_poi`, `sftp` (raw bytes), `ringcentral_fax`
//! (received faxes, spooled to disk: [`crate::document::InboundDocument`]), and OSCAR's
//! database queues — `oscar_fax_queue` (outbound faxes) and `oscar_appointments` /
//! `oscar_lab_ready` (text messages) — on the one round of [`queue`]. Each lives in its own
//! folder: `config.rs` (the serde config and its pure `validate`) and the component, whose
//! configuration implements [`SourceComponent`] (payload, checks, secrets, `build`, the
//! outside input it consumes); [`SourceConfig`] lists each type once. Every source stamps
//! its inputs through [`SourceContext::stamp`] (provenance + the `received` event) and sends
//! them through its [`Outlet`] (pause, archive, backpressure), so none writes that code
//! itself. [`SourceComponent::consumes`] names the outside input a source releases, for
//! `check`'s conflict report.

pub mod excelleris;
pub mod folder;
pub mod iha_poi;
pub mod list;
pub mod mllp;
pub mod oscar_fax_queue;
pub mod oversize;
pub mod pull;
pub mod queue;
pub mod ringcentral_fax;
pub mod sftp;
pub mod texts;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::ack::{ByteBudget, InFlight};
use crate::archive::{Archivable, ArchiveError, ArchiveHook};
use crate::component::ComponentKind;
use crate::envelope::{Envelope, Origin, Provenance, Raw};
use crate::error::{Classify, ErrorKind};
use crate::payload::PortType;
use crate::payload::{Erased, Payload};
use crate::shutdown::Shutdown;
use crate::telemetry::Observers;

pub use excelleris::ExcellerisConfig;
pub use folder::FolderConfig;
pub use iha_poi::IhaPoiConfig;
pub use mllp::MllpConfig;
pub use oscar_fax_queue::OscarFaxQueueConfig;
pub use ringcentral_fax::RingCentralFaxConfig;
pub use sftp::SftpConfig;

/// What every source gets from the topology. `T` is the payload it sends: raw bytes for
/// every kind but `ringcentral_fax`, which sends spooled documents.
pub struct SourceContext<T = Raw> {
    pub pipeline: Arc<str>,
    pub id: Arc<str>,
    /// The bounded channel to the first stage, behind the pipeline's pause switch.
    pub out: Outlet<T>,
    pub shutdown: Shutdown,
    pub in_flight: Arc<InFlight>,
    pub observers: Observers,
    /// The pipeline's database (sources that keep state: MLLP answers, checkpoints).
    pub store: crate::store::Store,
}

impl<T> SourceContext<T> {
    /// The provenance stamp of this source's inputs (`kind` is its type name).
    pub fn stamp(&self, kind: &'static str) -> Stamp {
        Stamp {
            pipeline: self.pipeline.clone(),
            source: self.id.clone(),
            kind: Arc::from(kind),
            observers: self.observers.clone(),
        }
    }
}

/// Stamps every input of one source with its provenance and reports its receipt (the
/// `received` event: a log line and `oscarflow_inputs_received_total`), so that no source
/// writes that code itself.
#[derive(Clone)]
pub struct Stamp {
    pipeline: Arc<str>,
    source: Arc<str>,
    kind: Arc<str>,
    observers: Observers,
}

impl Stamp {
    /// The provenance of one input received now (first delivery), reported as received.
    /// `content` is what its hash covers; `bytes` its size.
    pub fn received(&self, origin: Origin, content: &[u8], bytes: usize) -> Arc<Provenance> {
        self.received_hashed(origin, crate::envelope::sha256(content), bytes)
    }

    /// As [`Stamp::received`], with the content hash computed by the source (a file hashed
    /// while it was spooled).
    pub fn received_hashed(
        &self,
        origin: Origin,
        content_sha256: [u8; 32],
        bytes: usize,
    ) -> Arc<Provenance> {
        self.delivered(origin, content_sha256, bytes, 1)
    }

    /// As [`Stamp::received_hashed`], for a delivery that is not the first (`attempt`: a
    /// re-drive from the dead-letter store counts up).
    pub fn delivered(
        &self,
        origin: Origin,
        content_sha256: [u8; 32],
        bytes: usize,
        attempt: u32,
    ) -> Arc<Provenance> {
        let prov = Arc::new(Provenance {
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            source_kind: self.kind.clone(),
            origin,
            received_at: time::OffsetDateTime::now_utc(),
            attempt,
            content_sha256,
        });
        self.observers
            .emit(crate::telemetry::Event::Received { prov: &prov, bytes });
        prov
    }
}

/// Run-time controls of one pipeline's sources, driven by the daemon's control API:
/// pause and resume intake, and poll now.
///
/// Pausing holds every source before it takes its next input ([`Outlet::ready`]): a paused
/// source does not read, hash or stamp anything new, so nothing new is counted in flight;
/// what is in flight still commits and is released. A polling source skips its polls while
/// paused. [`Outlet::send`] waits too, for an input taken just before the pause: it stays
/// unreleased, nothing is dropped.
///
/// **Held during a database outage.** A sink or stage whose database is unavailable
/// ([`crate::error::is_database_outage`]) holds the intake the same way while it waits for
/// the database ([`SourceControl::hold`]), so inputs stay in their sources instead of
/// piling up as dead letters; the hold ends when the database answers. It is not a pause:
/// `/pipelines` and the console show it apart, and a pipeline restarted meanwhile is not
/// left paused.
#[derive(Debug)]
pub struct SourceControl {
    intake: watch::Sender<Intake>,
    poll_now: watch::Sender<u64>,
    /// When the current database outage began.
    outage_since: std::sync::Mutex<Option<std::time::Instant>>,
}

/// What stops the intake: the operator's pause, and components waiting for the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Intake {
    paused: bool,
    held: u32,
}

impl SourceControl {
    pub fn new() -> Arc<Self> {
        Arc::new(SourceControl {
            intake: watch::channel(Intake::default()).0,
            poll_now: watch::channel(0).0,
            outage_since: std::sync::Mutex::new(None),
        })
    }
    pub fn pause(&self) {
        self.intake.send_modify(|i| i.paused = true);
    }
    pub fn resume(&self) {
        self.intake.send_modify(|i| i.paused = false);
    }
    /// Paused by the operator (not: held by an outage).
    pub fn is_paused(&self) -> bool {
        self.intake.borrow().paused
    }
    /// Paused, or held while the database is unavailable: sources take nothing new.
    pub fn intake_stopped(&self) -> bool {
        let i = *self.intake.borrow();
        i.paused || i.held > 0
    }
    /// Held while the database is unavailable, and since when.
    pub fn outage(&self) -> Option<std::time::Duration> {
        if self.intake.borrow().held == 0 {
            return None;
        }
        self.outage_since
            .lock()
            .ok()
            .and_then(|s| s.map(|t| t.elapsed()))
    }
    /// Holds the intake until the returned guard drops (a component waiting for its
    /// database). The first hold of an outage logs its start; the last release its end.
    pub fn hold(self: &Arc<Self>, pipeline: &str, component: &str) -> IntakeHold {
        let mut first = false;
        self.intake.send_modify(|i| {
            first = i.held == 0;
            i.held += 1;
        });
        if first {
            if let Ok(mut s) = self.outage_since.lock() {
                *s = Some(std::time::Instant::now());
            }
            tracing::error!(pipeline, component, "The database is unavailable: intake held, inputs stay in their sources until it answers.");
        }
        IntakeHold {
            control: self.clone(),
            pipeline: pipeline.to_string(),
        }
    }
    /// Asks every polling source of the pipeline to poll at once (after a poll in progress).
    pub fn poll_now(&self) {
        self.poll_now.send_modify(|n| *n = n.wrapping_add(1));
    }
    /// A receiver that sees each later [`SourceControl::poll_now`].
    pub fn poll_requests(&self) -> watch::Receiver<u64> {
        self.poll_now.subscribe()
    }
    /// Waits while the intake is stopped (paused, or held by an outage).
    pub async fn wait_resumed(&self) {
        let mut rx = self.intake.subscribe();
        let _ = rx.wait_for(|i| !i.paused && i.held == 0).await;
    }
}

/// The intake held by one component waiting for its database ([`SourceControl::hold`]).
#[derive(Debug)]
pub struct IntakeHold {
    control: Arc<SourceControl>,
    pipeline: String,
}

impl Drop for IntakeHold {
    fn drop(&mut self) {
        let mut last = false;
        self.control.intake.send_modify(|i| {
            i.held = i.held.saturating_sub(1);
            last = i.held == 0;
        });
        if last {
            let lasted = self
                .control
                .outage_since
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .map(|t| t.elapsed().as_secs())
                .unwrap_or(0);
            tracing::warn!(pipeline = %self.pipeline, outage_seconds = lasted, "The database answers again: intake resumes.");
        }
    }
}

/// An envelope was not sent; it was dropped and its ack token failed its batch, so the input
/// stays with the source for re-delivery.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The pipeline is gone: stop reading.
    #[error("the pipeline stopped")]
    Closed,
    /// The raw archive could not take the input after its retries: keep the input, deliver
    /// it again later, and go on (see [`crate::archive`]).
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

impl SendError {
    /// True when the pipeline stopped (as opposed to one input that must come again).
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed)
    }
}

/// A source's way into the pipeline: the bounded channel to the first consumer, gated by
/// the pipeline's [`SourceControl`], archiving each raw input first when the pipeline has
/// an `[archive]`.
pub struct Outlet<T> {
    tx: mpsc::Sender<Envelope<T>>,
    control: Arc<SourceControl>,
    archive: Option<Arc<ArchiveHook>>,
    /// The pipeline's stop signal: it ends a paused wait (the input stays unreleased).
    shutdown: Option<Shutdown>,
    /// The pipeline's budget for the raw bytes in flight.
    budget: Option<Arc<ByteBudget>>,
}

impl<T> Clone for Outlet<T> {
    fn clone(&self) -> Self {
        Outlet {
            tx: self.tx.clone(),
            control: self.control.clone(),
            archive: self.archive.clone(),
            shutdown: self.shutdown.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl<T> Outlet<T> {
    pub fn new(tx: mpsc::Sender<Envelope<T>>, control: Arc<SourceControl>) -> Self {
        Outlet {
            tx,
            control,
            archive: None,
            shutdown: None,
            budget: None,
        }
    }
    /// Every input sent takes its raw size from `budget` until its batch settles.
    pub fn with_budget(mut self, budget: Option<Arc<ByteBudget>>) -> Self {
        self.budget = budget;
        self
    }
    /// A paused wait also ends when `shutdown` fires, with [`SendError::Closed`]: a paused
    /// pipeline stops without taking the input it holds.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }
    /// Archive every input before sending it.
    pub fn with_archive(mut self, archive: Option<Arc<ArchiveHook>>) -> Self {
        self.archive = archive;
        self
    }
    pub fn control(&self) -> &Arc<SourceControl> {
        &self.control
    }

    /// Ends when the pipeline's stop signal fires (never, without one).
    async fn stopped(&self) {
        match self.shutdown.clone() {
            Some(mut s) => s.wait().await,
            None => std::future::pending().await,
        }
    }

    /// Waits while the pipeline is paused. Every source calls it **before it takes an
    /// input** (reads, hashes or stamps a file, downloads, decodes a frame, claims a row):
    /// a paused source takes nothing new, so nothing new is counted in flight and the input
    /// stays where it was. False when the pipeline stopped (or its channel closed) while
    /// paused: take nothing, stop. (Not paused: true at once; the source checks its own
    /// shutdown signal as before.)
    pub async fn ready(&self) -> bool {
        if self.control.intake_stopped() {
            let stopped = self.stopped();
            tokio::select! {
                _ = self.control.wait_resumed() => {}
                _ = self.tx.closed() => return false,
                _ = stopped => return false,
            }
        }
        true
    }
}

impl<T: Send + Archivable> Outlet<T> {
    /// Sends one envelope, waiting while the pipeline is paused, while its raw bytes do not
    /// fit in the pipeline's byte budget, and while the channel is full (backpressure).
    /// With an archive, the raw input is archived first and the
    /// envelope is sent only when that succeeded. On `Err` the envelope is dropped and its
    /// batch fails, so the input stays for re-delivery: `SendError::Closed` when the
    /// pipeline stopped, `SendError::Archive` when the archive failed (the source goes on).
    pub async fn send(&self, env: Envelope<T>) -> Result<(), SendError> {
        if !self.ready().await {
            return Err(SendError::Closed);
        }
        if let Some(budget) = &self.budget {
            let size = match env.payload.archive_body() {
                crate::payload::ArchiveBody::Bytes(b) => b.len() as u64,
                crate::payload::ArchiveBody::File { size, .. } => size,
            };
            let stopped = self.stopped();
            if env.ack.holds_share() {
                // A later envelope of an input already in: it takes what is free and never
                // waits, since the room it would wait for may be its own batch's.
                if let Some(share) = budget.try_take(size) {
                    env.ack.hold(share);
                }
            } else {
                tokio::select! {
                    share = budget.take(size) => env.ack.hold(share),
                    _ = self.tx.closed() => return Err(SendError::Closed),
                    _ = stopped => return Err(SendError::Closed),
                }
            }
        }
        if let Some(hook) = &self.archive {
            tokio::select! {
                r = hook.archive(&env) => {
                    if let Err(e) = r {
                        tracing::warn!(pipeline = %env.provenance.pipeline, source = %env.provenance.source, message = %env.id, sha = %env.provenance.short_hash(), error = %e, "Input not archived; not sent, the source keeps it for re-delivery.");
                        return Err(SendError::Archive(e));
                    }
                }
                _ = self.tx.closed() => return Err(SendError::Closed),
            }
        }
        self.tx.send(env).await.map_err(|_| SendError::Closed)
    }
}

/// Sleeps for `delay`, or until a poll is requested through `control` or `shutdown` fires;
/// then waits while the pipeline is paused. False when shutdown fired.
pub async fn wait_next_poll(
    delay: std::time::Duration,
    control: &SourceControl,
    polls: &mut watch::Receiver<u64>,
    shutdown: &mut Shutdown,
) -> bool {
    tokio::select! {
        _ = shutdown.wait() => return false,
        _ = tokio::time::sleep(delay) => {}
        _ = polls.changed() => {}
    }
    if control.intake_stopped() {
        tokio::select! {
            _ = shutdown.wait() => return false,
            _ = control.wait_resumed() => {}
        }
    }
    !shutdown.is_triggered()
}

/// A source failure that stops the source.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct SourceError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Classify for SourceError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Fault injection for tests: called at the point where a source has seen its input settle
/// and is about to acknowledge it upstream; `true` makes the source stop right there, as a
/// crash would (nothing acknowledged, nothing recorded).
pub type CrashHook = Arc<dyn Fn() -> bool + Send + Sync>;

/// An input reader of payload `T` (raw bytes for every kind but `ringcentral_fax`). See the
/// module docs for the contract.
#[async_trait]
pub trait Source<T: Send + 'static = Raw>: Send {
    async fn run(self: Box<Self>, cx: SourceContext<T>) -> Result<(), SourceError>;
}

/// Fault injection for tests: called with an input's path right before a source releases
/// it (after its batch settled), as a crash at that point would interrupt.
pub type ReleaseHook =
    Arc<dyn Fn(&std::path::Path) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// A running source, its payload type erased (see [`crate::payload`]).
pub struct BuiltSource(Erased);

impl BuiltSource {
    pub fn new<T: Payload>(source: Box<dyn Source<T>>) -> Self {
        BuiltSource(Erased::new(None, Some(T::PORT), source))
    }
    /// The payload it sends.
    pub fn output(&self) -> Option<PortType> {
        self.0.output
    }
    /// The source as a reader of `T`; `None` when it sends another payload.
    pub fn typed<T: Payload>(self) -> Option<Box<dyn Source<T>>> {
        self.0.take::<Box<dyn Source<T>>>()
    }
}

/// What a source configuration needs to build its running source.
#[derive(Clone)]
pub struct SourceBuildContext {
    /// The pipeline's database (queue sources claim their rows in it).
    pub store: crate::store::Store,
    /// Read what is there once and end (`replay`, `dlq retry`): folders in `once` mode,
    /// polling sources after one poll.
    pub one_shot: bool,
    /// Called where a folder source is about to release an input (fault injection).
    pub release_hook: Option<ReleaseHook>,
}

/// What every source type's configuration answers (implemented in its folder): the payload
/// it sends, its checks, how it is built, and the outside input it consumes.
#[async_trait]
pub trait SourceComponent: Send + Sync {
    /// The payload it sends.
    fn output_port(&self) -> PortType;
    /// Pure checks: (message, span).
    fn problems(&self) -> Vec<(String, Option<Range<usize>>)> {
        Vec::new()
    }
    /// Environment variables it needs: (field, variable with its span).
    fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        Vec::new()
    }
    /// The lab type of the one feed it serves, if it serves one.
    fn fixed_lab_type(&self) -> Option<crate::hl7::lab::LabType> {
        None
    }
    /// Builds the running source (its I/O starts when it runs).
    fn build(&self, cx: &SourceBuildContext) -> Result<BuiltSource, SourceError>;
    /// The outside input this source consumes (and releases: moves, deletes, acknowledges,
    /// marks read): two sources on one input would each release what the other has not
    /// committed, so `check` refuses the second. (`what`, normalised key.)
    fn consumes(&self) -> (&'static str, String);
    /// A database queue ([`queue`]): its dead letters are re-driven by [`Self::requeue`].
    fn is_queue(&self) -> bool {
        false
    }
    /// For a queue: puts the row of a dead-lettered job (`raw`, its dead letter's bytes)
    /// back in its queue, for the running daemon to claim (`dlq retry`). `None` for sources
    /// that are not queues (their dead letters are re-driven through the pipeline).
    async fn requeue(
        &self,
        _store: &crate::store::Store,
        _raw: &[u8],
    ) -> Option<Result<bool, crate::jobs::OutboundError>> {
        None
    }
}

crate::component::component_types! {
    /// The closed set of source configurations: one line per type.
    SourceConfig: SourceComponent {
        Folder(FolderConfig) = "folder",
        Mllp(MllpConfig) = "mllp",
        Excelleris(ExcellerisConfig) = "excelleris",
        IhaPoi(IhaPoiConfig) = "iha_poi",
        Sftp(SftpConfig) = "sftp",
        RingCentralFax(RingCentralFaxConfig) = "ringcentral_fax",
        OscarFaxQueue(OscarFaxQueueConfig) = "oscar_fax_queue",
        OscarAppointments(texts::OscarAppointmentsConfig) = "oscar_appointments",
        OscarLabReady(texts::OscarLabReadyConfig) = "oscar_lab_ready",
        OscarAppointmentConfirmations(texts::OscarAppointmentConfirmationsConfig) = "oscar_appointment_confirmations",
    }
}

/// `p` made absolute against `base` when it is relative (and set).
pub(crate) fn resolve_against(p: &mut std::path::PathBuf, base: &std::path::Path) {
    if p.is_relative() && !p.as_os_str().is_empty() {
        *p = base.join(&*p);
    }
}

impl SourceConfig {
    /// Makes every relative path of this source absolute against `base` (the daemon's
    /// state directory): see [`crate::config::PipelineConfig::resolve_paths`].
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let r = |p: &mut std::path::PathBuf| resolve_against(p, base);
        match self {
            SourceConfig::Folder(c) => {
                r(&mut c.path);
                c.processed_dir.as_mut().map(r);
            }
            SourceConfig::Mllp(c) => {
                c.tls_cert_file.as_mut().map(r);
                c.tls_key_file.as_mut().map(r);
            }
            SourceConfig::Excelleris(c) => {
                r(&mut c.client_identity);
                r(&mut c.trust_store);
            }
            SourceConfig::IhaPoi(c) => {
                c.trust_store.as_mut().map(r);
            }
            SourceConfig::Sftp(c) => {
                c.private_key.as_mut().map(r);
                r(&mut c.known_hosts);
                r(&mut c.spool_dir);
            }
            SourceConfig::RingCentralFax(c) => r(&mut c.spool_dir),
            // Database queues: no paths.
            SourceConfig::OscarFaxQueue(_)
            | SourceConfig::OscarAppointments(_)
            | SourceConfig::OscarLabReady(_)
            | SourceConfig::OscarAppointmentConfirmations(_) => {}
        }
    }

    /// Builds the running source (its I/O starts when it runs).
    pub fn build(&self, cx: &SourceBuildContext) -> Result<BuiltSource, SourceError> {
        self.component().build(cx)
    }

    /// See [`SourceComponent::consumes`].
    pub fn consumes(&self) -> (&'static str, String) {
        self.component().consumes()
    }

    /// See [`SourceComponent::is_queue`].
    pub fn is_queue(&self) -> bool {
        self.component().is_queue()
    }

    /// See [`SourceComponent::requeue`].
    pub async fn requeue(
        &self,
        store: &crate::store::Store,
        raw: &[u8],
    ) -> Option<Result<bool, crate::jobs::OutboundError>> {
        self.component().requeue(store, raw).await
    }
}

/// A source that polls (or runs rounds) on a schedule, and can stop after `n` of them.
pub(crate) trait Polling: Sized {
    fn with_max_polls(self, n: u32) -> Self;
}

/// The running source of a polling source: in one-shot mode (replay, `dlq retry`) it polls
/// once and ends.
pub(crate) fn polling<T: Payload, S: Source<T> + Polling + 'static>(
    source: S,
    cx: &SourceBuildContext,
) -> BuiltSource {
    BuiltSource::new::<T>(Box::new(if cx.one_shot {
        source.with_max_polls(1)
    } else {
        source
    }))
}

/// The outside input of a pull source: one account (`what`) at one URL, by its user variable.
pub(crate) fn account(
    what: &'static str,
    url: &str,
    user_env: &serde_spanned::Spanned<String>,
) -> (&'static str, String) {
    (what, format!("{}|{}", url.trim(), user_env.get_ref()))
}

/// `path` made absolute (against the working directory) and lexically normalised (`.` and
/// `..` resolved, no trailing separator), so two spellings of one folder compare equal.
pub fn normalised_path(path: &std::path::Path) -> String {
    use std::path::Component;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = std::path::PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out.display().to_string()
}

impl ComponentKind for SourceConfig {
    fn type_name(&self) -> &'static str {
        self.kind_name()
    }
    fn input_port(&self) -> Option<PortType> {
        None
    }
    fn output_port(&self) -> Option<PortType> {
        Some(self.component().output_port())
    }
    fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        self.component().problems()
    }
    fn lab_type(&self) -> Option<crate::hl7::lab::LabType> {
        self.component().fixed_lab_type()
    }
    fn env_refs(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        self.component().secrets()
    }
}

#[cfg(test)]
mod control_tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_poll_request_ends_the_wait_for_the_next_poll_at_once() {
        let control = SourceControl::new();
        let mut polls = control.poll_requests();
        let (_trigger, mut shutdown) = Shutdown::new();
        let c = control.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.poll_now();
        });
        let woke = tokio::time::timeout(
            Duration::from_secs(10),
            wait_next_poll(
                Duration::from_secs(3600),
                &control,
                &mut polls,
                &mut shutdown,
            ),
        )
        .await;
        assert_eq!(
            woke,
            Ok(true),
            "woken by the request, not the hour-long delay"
        );
    }

    fn tiny_envelope() -> Envelope<Raw> {
        Envelope::new(
            crate::envelope::Provenance::for_test(b"x"),
            Raw {
                bytes: bytes::Bytes::from_static(b"x"),
                name: "x".into(),
                lab_type: None,
            },
            crate::ack::AckToken::detached(),
        )
    }

    #[tokio::test]
    async fn a_paused_outlet_holds_the_envelope_until_resumed_and_shutdown_ends_a_paused_wait() {
        let control = SourceControl::new();
        let (tx, mut rx) = mpsc::channel::<Envelope<Raw>>(4);
        let out = Outlet::new(tx, control.clone());
        control.pause();
        let env = tiny_envelope();
        let send = tokio::spawn(async move { out.send(env).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.try_recv().is_err(), "nothing passes while paused");
        control.resume();
        assert!(send.await.unwrap().is_ok());
        assert!(rx.recv().await.is_some());

        control.pause();
        let mut polls = control.poll_requests();
        let (trigger, mut shutdown) = Shutdown::new();
        trigger.trigger();
        assert!(!wait_next_poll(Duration::ZERO, &control, &mut polls, &mut shutdown).await);
    }

    #[tokio::test]
    async fn a_paused_send_ends_closed_when_the_pipeline_stops_and_nothing_passes() {
        let control = SourceControl::new();
        let (tx, mut rx) = mpsc::channel::<Envelope<Raw>>(4);
        let (trigger, shutdown) = Shutdown::new();
        let out = Outlet::new(tx, control.clone()).with_shutdown(shutdown);
        control.pause();
        let env = tiny_envelope();
        let send = tokio::spawn(async move { out.send(env).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.trigger();
        let r = send.await.unwrap();
        assert!(r.as_ref().is_err_and(SendError::is_closed), "{r:?}");
        assert!(rx.try_recv().is_err(), "the held envelope did not pass");
        assert!(control.is_paused(), "still paused");
    }
}
