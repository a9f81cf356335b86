//! [`build`]: a validated pipeline file → running tasks ([`RunningPipeline`]).
//!
//! Every consumer (stage or sink) owns one bounded channel of its input type; each of its
//! inputs gets a clone of the sender (fan-in). Port types were checked by validation, so a
//! mismatch here is a bug and reported as such, not a panic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::ack::InFlight;
use crate::archive::{ArchiveHook, RawArchive};
use crate::component::BuildContext;
use crate::config::{ComponentKind, PipelineConfig, PortType};
use crate::dead_letter::DeadLetterStore;
use crate::document::InboundDocument;
use crate::envelope::{Envelope, Raw};
use crate::lab_file::LabFile;
use crate::sinks::BuiltSink;
use crate::sources::{
    BuiltSource, Outlet, ReleaseHook, Source, SourceBuildContext, SourceContext, SourceControl,
};
use crate::stages::BuiltStage;
use crate::store::Store;
use crate::telemetry::Observers;

use super::run::{run_sink, run_stage, Fatal, RunContext};
use super::status::{PipelineStatus, QueueProbe, SourceHealth};
use crate::shutdown::{Shutdown, Trigger};

/// A source handed in from outside; taken once by [`build`].
pub type SourceOverride = Arc<std::sync::Mutex<Option<Box<dyn Source>>>>;

/// Knobs for how a pipeline is built.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// Run every source once (replay, re-drives): see `SourceBuildContext::one_shot`.
    pub one_shot: bool,
    /// Fault-injection: called before a source releases an input.
    pub release_hook: Option<ReleaseHook>,
    /// Extra observers (reports).
    pub observers: Observers,
    /// Replace the pipeline's sources by this one (replay, dead-letter re-drive, tests).
    pub source_override: Option<SourceOverride>,
    /// Start with intake paused (a paused pipeline restarted by a reload stays paused).
    pub start_paused: bool,
}

/// A pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("pipeline `{pipeline}`: {detail}")]
    Invalid { pipeline: String, detail: String },
}

enum Tx {
    Raw(mpsc::Sender<Envelope<Raw>>),
    Lab(mpsc::Sender<Envelope<LabFile>>),
    Doc(mpsc::Sender<Envelope<InboundDocument>>),
}
enum Rx {
    Raw(mpsc::Receiver<Envelope<Raw>>),
    Lab(mpsc::Receiver<Envelope<LabFile>>),
    Doc(mpsc::Receiver<Envelope<InboundDocument>>),
}

/// A pipeline's tasks.
pub struct RunningPipeline {
    pub name: String,
    trigger: Trigger,
    tasks: JoinSet<Result<(), Fatal>>,
    /// Unacknowledged batches; its high-water mark shows the bound held.
    pub in_flight: Arc<InFlight>,
    /// The bound on unacknowledged batches implied by capacities and concurrency.
    pub in_flight_bound: usize,
    /// Pause, resume, poll now (the daemon's control API).
    pub control: Arc<SourceControl>,
    /// Running state, health and gauges, shared with the HTTP endpoint.
    pub status: Arc<PipelineStatus>,
}

impl RunningPipeline {
    /// Stop intake: sources stop reading; what is in flight drains.
    pub fn stop_intake(&self) {
        self.trigger.trigger();
    }

    /// Waits for every task; the first fatal error, if any.
    pub async fn wait(&mut self) -> Result<(), Fatal> {
        let mut first = None;
        while let Some(r) = self.tasks.join_next().await {
            let r = match r {
                Ok(r) => r,
                Err(e) => Err(Fatal {
                    component: self.name.clone(),
                    detail: if e.is_panic() {
                        "task panicked".into()
                    } else {
                        "task cancelled".into()
                    },
                }),
            };
            if let Err(f) = r {
                tracing::error!(pipeline = %self.name, component = %f.component, error = %f.detail, "Component stopped.");
                self.status
                    .mark_stopped(Some(format!("{}: {}", f.component, f.detail)));
                // A fatal component: stop taking input, let the rest drain.
                self.trigger.trigger();
                first.get_or_insert(f);
            }
        }
        self.status
            .mark_stopped(first.as_ref().map(|f| f.component.clone()));
        first.map_or(Ok(()), Err)
    }

    /// Stops intake and waits up to `grace` for in-flight work; then aborts what is left
    /// (its acks fail, inputs stay for re-delivery; transactions roll back). Returns true
    /// when everything drained in time.
    pub async fn shutdown(&mut self, grace: Duration) -> bool {
        self.stop_intake();
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(_) => true,
            Err(_) => {
                self.tasks.abort_all();
                while self.tasks.join_next().await.is_some() {}
                false
            }
        }
    }
}

fn invalid(cfg: &PipelineConfig, detail: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        pipeline: cfg.name.clone(),
        detail: detail.into(),
    }
}

/// Builds and starts a pipeline on `store`.
pub fn build(
    cfg: &PipelineConfig,
    store: &Store,
    opts: BuildOptions,
) -> Result<RunningPipeline, BuildError> {
    let pipeline: Arc<str> = Arc::from(cfg.name.as_str());
    let cap = cfg.settings.channel_capacity.max(1);
    let dead_letters = DeadLetterStore::new(store.clone());
    let health = SourceHealth::new();
    let observers = Observers::standard().with(health.clone());
    let observers = opts.observers_into(observers);
    let (trigger, shutdown) = Shutdown::new();
    let in_flight = InFlight::new();
    let control = SourceControl::new();
    if opts.start_paused {
        control.pause();
    }
    let archive = archive_hook(cfg, &pipeline)?;
    let mut tasks: JoinSet<Result<(), Fatal>> = JoinSet::new();

    // Channels: one per consumer, typed by its input port.
    let mut txs: HashMap<String, Tx> = HashMap::new();
    let mut queues: Vec<(String, QueueProbe)> = Vec::new();
    let mut rxs: HashMap<String, Rx> = HashMap::new();
    // Unacknowledged batches are bounded by: one envelope per source blocked on `send`,
    // each channel's capacity, each stage's concurrency (outputs wait inside its buffer),
    // each sink's concurrency plus the envelope waiting for a permit.
    let mut bound = cfg.sources.len().max(1);
    let consumers = cfg
        .stages
        .iter()
        .map(|c| {
            (
                c.id.as_str(),
                c.config.input_port(),
                c.input_ids().map(String::from).collect::<Vec<_>>(),
            )
        })
        .chain(cfg.sinks.iter().map(|c| {
            (
                c.id.as_str(),
                c.config.input_port(),
                c.input_ids().map(String::from).collect(),
            )
        }));
    for (id, port, inputs) in consumers {
        bound += cap;
        let (tx, rx) = match port {
            Some(PortType::Raw) => {
                let (tx, rx) = mpsc::channel(cap);
                (Tx::Raw(tx), Rx::Raw(rx))
            }
            Some(PortType::LabFile) => {
                let (tx, rx) = mpsc::channel(cap);
                (Tx::Lab(tx), Rx::Lab(rx))
            }
            Some(PortType::Document) => {
                let (tx, rx) = mpsc::channel(cap);
                (Tx::Doc(tx), Rx::Doc(rx))
            }
            None => return Err(invalid(cfg, format!("`{id}` has no input port"))),
        };
        for input in inputs {
            let clone = match &tx {
                Tx::Raw(t) => Tx::Raw(t.clone()),
                Tx::Lab(t) => Tx::Lab(t.clone()),
                Tx::Doc(t) => Tx::Doc(t.clone()),
            };
            txs.insert(input, clone);
        }
        let probe: QueueProbe = match &tx {
            Tx::Raw(t) => queue_probe(t),
            Tx::Lab(t) => queue_probe(t),
            Tx::Doc(t) => queue_probe(t),
        };
        queues.push((id.to_string(), probe));
        rxs.insert(id.to_string(), rx);
    }

    let cx = |id: &str, kind: &'static str| RunContext {
        pipeline: pipeline.clone(),
        component: Arc::from(id),
        component_kind: kind,
        dead_letters: dead_letters.clone(),
        retry: cfg.settings.retry.clone(),
        observers: observers.clone(),
    };

    let bcx = |id: &str| BuildContext {
        id: Arc::from(id),
        store: store.clone(),
        observers: observers.clone(),
    };
    for c in &cfg.sinks {
        let kind = c.config.type_name();
        let run = match (c.config.build(&bcx(&c.id)), rxs.remove(&c.id)) {
            (BuiltSink::LabFile(sink, run), Some(Rx::Lab(rx))) => {
                let r = run_sink(sink, rx, cx(&c.id, kind), run.concurrency, run.order_by);
                tasks.spawn(r);
                run
            }
            (BuiltSink::Document(sink, run), Some(Rx::Doc(rx))) => {
                let r = run_sink(sink, rx, cx(&c.id, kind), run.concurrency, run.order_by);
                tasks.spawn(r);
                run
            }
            _ => {
                return Err(invalid(
                    cfg,
                    format!("sink `{}` is not wired to a matching input", c.id),
                ))
            }
        };
        // `concurrency` writes plus the one envelope waiting for a permit.
        bound += run.concurrency + 1;
    }

    for c in &cfg.stages {
        let rx = rxs.remove(&c.id);
        let tx = txs.remove(&c.id);
        let conc = c.config.concurrency();
        let kind = c.config.type_name();
        bound += conc;
        match (c.config.build(&bcx(&c.id)), rx, tx) {
            (BuiltStage::RawToLabFile(stage), Some(Rx::Raw(rx)), Some(Tx::Lab(tx))) => {
                tasks.spawn(run_stage(stage, rx, tx, cx(&c.id, kind), conc));
            }
            (BuiltStage::LabFileToLabFile(stage), Some(Rx::Lab(rx)), Some(Tx::Lab(tx))) => {
                tasks.spawn(run_stage(stage, rx, tx, cx(&c.id, kind), conc));
            }
            _ => {
                return Err(invalid(
                    cfg,
                    format!("stage `{}` is not wired to matching ports", c.id),
                ))
            }
        }
    }

    let mut overridden = opts
        .source_override
        .as_ref()
        .and_then(|m| m.lock().ok().and_then(|mut g| g.take()));
    let shared = SourceShared {
        pipeline: pipeline.clone(),
        shutdown: shutdown.clone(),
        in_flight: in_flight.clone(),
        observers: observers.clone(),
        store: store.clone(),
        control: control.clone(),
        archive,
    };
    let scx = SourceBuildContext {
        one_shot: opts.one_shot,
        release_hook: opts.release_hook.clone(),
    };
    for c in &cfg.sources {
        let built = match overridden.take() {
            Some(s) => BuiltSource::Raw(s),
            None if opts.source_override.is_some() => continue, // only one re-drive source
            None => c
                .config
                .build(&scx)
                .map_err(|e| invalid(cfg, format!("source `{}`: {}", c.id, e.detail)))?,
        };
        match (built, txs.remove(&c.id)) {
            (BuiltSource::Raw(source), Some(Tx::Raw(out))) => {
                let run = source.run(shared.context(&c.id, out));
                spawn_source(&mut tasks, &c.id, run);
            }
            (BuiltSource::Document(source), Some(Tx::Doc(out))) => {
                let run = source.run(shared.context(&c.id, out));
                spawn_source(&mut tasks, &c.id, run);
            }
            _ => {
                return Err(invalid(
                    cfg,
                    format!("source `{}` is not wired to a matching input", c.id),
                ))
            }
        }
    }
    let status = Arc::new(PipelineStatus::new(
        cfg.name.clone(),
        cfg.path.clone(),
        in_flight.clone(),
        bound,
        control.clone(),
        health,
        cfg.settings.unready_after,
        queues,
        cfg.sources
            .iter()
            .map(|c| c.id.clone())
            .chain(cfg.stages.iter().map(|c| c.id.clone()))
            .chain(cfg.sinks.iter().map(|c| c.id.clone()))
            .collect(),
    ));
    Ok(RunningPipeline {
        name: cfg.name.clone(),
        trigger,
        tasks,
        in_flight,
        in_flight_bound: bound,
        control,
        status,
    })
}

/// Counts what waits in a channel without keeping it open.
fn queue_probe<T: Send + 'static>(tx: &mpsc::Sender<Envelope<T>>) -> QueueProbe {
    let weak = tx.downgrade();
    Box::new(move || {
        weak.upgrade()
            .map(|s| s.max_capacity() - s.capacity())
            .unwrap_or(0)
    })
}

/// What every source of a pipeline shares.
struct SourceShared {
    pipeline: Arc<str>,
    shutdown: Shutdown,
    in_flight: Arc<InFlight>,
    observers: Observers,
    store: Store,
    control: Arc<SourceControl>,
    archive: Option<Arc<ArchiveHook>>,
}

/// The pipeline's raw archive, when it has an `[archive]` table.
fn archive_hook(
    cfg: &PipelineConfig,
    pipeline: &Arc<str>,
) -> Result<Option<Arc<ArchiveHook>>, BuildError> {
    let Some(a) = &cfg.archive else {
        return Ok(None);
    };
    let archive = RawArchive::new(a).map_err(|e| invalid(cfg, e.to_string()))?;
    Ok(Some(ArchiveHook::new(archive, pipeline.clone())))
}

impl SourceShared {
    fn context<T>(&self, id: &str, out: mpsc::Sender<Envelope<T>>) -> SourceContext<T> {
        SourceContext {
            pipeline: self.pipeline.clone(),
            id: Arc::from(id),
            out: Outlet::new(out, self.control.clone())
                .with_archive(self.archive.clone())
                .with_shutdown(self.shutdown.clone()),
            shutdown: self.shutdown.clone(),
            in_flight: self.in_flight.clone(),
            observers: self.observers.clone(),
            store: self.store.clone(),
        }
    }
}

/// Runs a source as a pipeline task; its error stops the pipeline as a fatal one.
fn spawn_source<F>(tasks: &mut JoinSet<Result<(), Fatal>>, id: &str, run: F)
where
    F: std::future::Future<Output = Result<(), crate::sources::SourceError>> + Send + 'static,
{
    let id = id.to_string();
    tasks.spawn(async move {
        run.await.map_err(|e| Fatal {
            component: id,
            detail: e.detail,
        })
    });
}

impl BuildOptions {
    fn observers_into(&self, mut base: Observers) -> Observers {
        base = base.extend(&self.observers);
        base
    }
}
