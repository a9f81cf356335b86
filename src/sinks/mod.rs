//! Sinks: where envelopes are committed.
//!
//! A [`Sink<T>`] writes one envelope durably and returns; the sink runner
//! ([`crate::topology::run::run_sink`]) resolves the envelope's ack **only after** `write`
//! returned `Ok` (the commit happened), retries transient errors with backoff, and
//! dead-letters data errors and spent retries with the payload's original bytes. `write` must
//! be idempotent: a re-delivered input (after a crash before the source released it) must not
//! create a second row. Types: `oscar_lab` (lab files), `oscar_appointment` (scheduling messages),
//! `oscar_fax` (received faxes),
//! `ringcentral_fax` (OSCAR's outbound faxes), `ringcentral_sms` (text messages); each in its
//! folder, its configuration implementing [`SinkComponent`], listed once in [`SinkConfig`].

pub mod oscar_appointment;
pub mod oscar_fax;
pub mod oscar_lab;
pub mod ringcentral_fax;
pub mod ringcentral_sms;

use std::ops::Range;

use async_trait::async_trait;

use std::sync::Arc;

use crate::component::ComponentKind;
use crate::component::{BuildContext, ProcessError};
use crate::envelope::Envelope;
use crate::lab_file::OrderKey;
use crate::payload::PortType;
use crate::payload::{Erased, Payload};

pub use oscar_appointment::OscarAppointmentConfig;
pub use oscar_fax::OscarFaxConfig;
pub use oscar_lab::OscarLabConfig;
pub use ringcentral_fax::RingCentralFaxSinkConfig;
pub use ringcentral_sms::RingCentralSmsConfig;

/// A durable, idempotent writer. See the module docs for the contract.
#[async_trait]
pub trait Sink<T: Send + Sync + 'static>: Send + Sync {
    /// The component type name (`oscar_lab`).
    fn kind(&self) -> &'static str;

    /// Commits one envelope. `Ok` means durable.
    async fn write(&self, env: &Envelope<T>) -> Result<(), ProcessError>;

    /// How many envelopes the runner may hand [`Sink::write_group`] at once. The default,
    /// one file, never groups.
    fn group_limit(&self) -> GroupLimit {
        GroupLimit::ONE
    }

    /// Commits several envelopes **in one transaction**, applied in the given order: all of
    /// them or none. On an error nothing is committed and [`GroupError::index`] names the
    /// envelope it came from; the runner dead-letters that one alone (a data error) and
    /// commits the rest again, splits the group in halves (a data error of no one envelope
    /// known), or (any other error) writes them one at a time. Only called
    /// when [`Sink::group_limit`] allows more than one file; this default (for sinks that
    /// never group) writes them one after another.
    async fn write_group(&self, envs: &[&Envelope<T>]) -> Result<(), GroupError> {
        for (index, env) in envs.iter().enumerate() {
            self.write(env).await.map_err(|error| GroupError {
                index: Some(index),
                error,
            })?;
        }
        Ok(())
    }
}

/// The most a group commit takes: files, and their raw bytes (a group always takes at least
/// one file, however large).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimit {
    pub files: usize,
    pub bytes: usize,
}

impl GroupLimit {
    /// One file per commit.
    pub const ONE: GroupLimit = GroupLimit { files: 1, bytes: 0 };
}

/// A group commit that failed: nothing of the group was written.
#[derive(Debug)]
pub struct GroupError {
    /// Which envelope of the group the error belongs to; `None` when it came from a
    /// statement shared by several (the runner splits the group to find out).
    pub index: Option<usize>,
    pub error: ProcessError,
}

/// An outbound sink acts on queue jobs, one action per [`crate::jobs::Step`]; [`act`]
/// dispatches the step and reports its outcome (a log line, the tap).
#[async_trait]
pub(crate) trait StepSink<J: Sync>: Send + Sync {
    async fn send(&self, job: &J) -> Result<&'static str, ProcessError>;
    async fn look_up(
        &self,
        job: &J,
        since_unix: i64,
        settled: bool,
    ) -> Result<&'static str, ProcessError>;
    async fn track(&self, job: &J, message_id: i64) -> Result<&'static str, ProcessError>;
}

/// The running sink of an outbound sink: `concurrency` jobs at once, one queue row's steps
/// in order.
pub(crate) fn step_sink<J: crate::payload::Payload>(
    sink: Arc<dyn Sink<J>>,
    concurrency: usize,
) -> BuiltSink {
    BuiltSink::new::<J>(
        sink,
        SinkRun {
            concurrency,
            order_by: OrderKey::Accession,
        },
    )
}

/// The RingCentral client of an outbound sink.
pub(crate) fn ringcentral_client(
    cfg: &crate::ringcentral::RcConfig,
) -> Result<Arc<crate::ringcentral::RcClient>, ProcessError> {
    crate::ringcentral::RcClient::new(cfg.clone())
        .map(Arc::new)
        .map_err(|e| ProcessError::fatal(format!("ringcentral: {}", e.detail)))
}

/// Runs `job`'s step on `sink` and emits the outcome for queue row `row`.
pub(crate) async fn act<J: Sync>(
    sink: &impl StepSink<J>,
    env: &Envelope<J>,
    step: crate::jobs::Step,
    row: i64,
    cx: (&str, &crate::telemetry::Observers),
) -> Result<(), ProcessError> {
    use crate::jobs::Step;
    let job = &env.payload;
    let outcome = match step {
        Step::Send => sink.send(job).await?,
        Step::LookUp {
            since_unix,
            settled,
        } => sink.look_up(job, since_unix, settled).await?,
        Step::Track { message_id } => sink.track(job, message_id).await?,
    };
    cx.1.emit(crate::telemetry::Event::Outbound {
        prov: &env.provenance,
        component: cx.0,
        row,
        outcome,
    });
    Ok(())
}

/// A running sink, its payload type erased (see [`crate::payload`]), with how the runner
/// drives it.
pub struct BuiltSink {
    sink: Erased,
    pub run: SinkRun,
}

impl BuiltSink {
    pub fn new<T: Payload>(sink: Arc<dyn Sink<T>>, run: SinkRun) -> Self {
        BuiltSink {
            sink: Erased::new(Some(T::PORT), None, sink),
            run,
        }
    }
    /// The payload it consumes.
    pub fn input(&self) -> Option<PortType> {
        self.sink.input
    }
    /// The sink as a writer of `T`; `None` when it takes another payload.
    pub fn typed<T: Payload>(self) -> Option<Arc<dyn Sink<T>>> {
        self.sink.take::<Arc<dyn Sink<T>>>()
    }
}

/// How the sink runner drives a sink: parallel writes, and which envelopes keep their
/// order.
#[derive(Debug, Clone, Copy)]
pub struct SinkRun {
    pub concurrency: usize,
    pub order_by: OrderKey,
}

/// What every sink type's configuration answers (implemented in its folder).
pub trait SinkComponent: Send + Sync {
    /// The payload it consumes.
    fn input_port(&self) -> PortType;
    /// Pure checks: (message, span).
    fn problems(&self) -> Vec<(String, Option<Range<usize>>)> {
        Vec::new()
    }
    /// Environment variables it needs: (field, variable with its span).
    fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        Vec::new()
    }
    /// Builds the running sink (no I/O until its first write).
    fn build(&self, cx: &BuildContext) -> Result<BuiltSink, ProcessError>;
}

crate::component::component_types! {
    /// The closed set of sink configurations: one line per type.
    #[allow(clippy::large_enum_variant)] // built once per pipeline; size does not matter
    SinkConfig: SinkComponent {
        OscarLab(OscarLabConfig) = "oscar_lab",
        OscarAppointment(OscarAppointmentConfig) = "oscar_appointment",
        OscarFax(OscarFaxConfig) = "oscar_fax",
        RingCentralFax(RingCentralFaxSinkConfig) = "ringcentral_fax",
        RingCentralSms(RingCentralSmsConfig) = "ringcentral_sms",
    }
}

impl SinkConfig {
    /// Makes every relative path of this sink absolute against `base` (the daemon's state
    /// directory): see [`crate::config::PipelineConfig::resolve_paths`].
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let r = |p: &mut std::path::PathBuf| crate::sources::resolve_against(p, base);
        match self {
            SinkConfig::OscarFax(c) => r(&mut c.document_dir),
            SinkConfig::RingCentralFax(c) => r(&mut c.document_dir),
            SinkConfig::OscarLab(_)
            | SinkConfig::OscarAppointment(_)
            | SinkConfig::RingCentralSms(_) => {}
        }
    }
}

impl SinkConfig {
    /// Builds the running sink (no I/O until its first write).
    pub fn build(&self, cx: &BuildContext) -> Result<BuiltSink, ProcessError> {
        self.component().build(cx)
    }
}

impl ComponentKind for SinkConfig {
    fn type_name(&self) -> &'static str {
        self.kind_name()
    }
    fn input_port(&self) -> Option<PortType> {
        Some(self.component().input_port())
    }
    fn output_port(&self) -> Option<PortType> {
        None
    }
    fn validate(&self) -> Vec<(String, Option<Range<usize>>)> {
        self.component().problems()
    }
    fn env_refs(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        self.component().secrets()
    }
}
