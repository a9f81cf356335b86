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

use crate::ack::{ByteBudget, InFlight};
use crate::archive::{ArchiveHook, RawArchive};
use crate::component::BuildContext;
use crate::config::{ComponentKind, PipelineConfig, PortType};
use crate::dead_letter::DeadLetterStore;
use crate::envelope::{Envelope, Raw};
use crate::payload::{AnyRx, AnyTx, Payload, PayloadVisitor};
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
    /// Writes the journal rows that follow a commit (duplicates, releases, outbound steps).
    journal: Arc<crate::journal::Recorder>,
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
                self.status.mark_fatal(&f.component, &f.detail);
                self.status
                    .mark_stopped(Some(format!("{}: {}", f.component, f.detail)));
                // A fatal component: stop taking input, let the rest drain.
                self.trigger.trigger();
                first.get_or_insert(f);
            }
        }
        self.status
            .mark_stopped(first.as_ref().map(|f| f.component.clone()));
        self.journal.flush().await;
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
    let journal = crate::journal::Recorder::start(store.clone());
    let observers = Observers::standard()
        .with(health.clone())
        .with(journal.clone());
    let observers = opts.observers_into(observers);
    let (trigger, shutdown) = Shutdown::new();
    let in_flight = InFlight::new();
    let control = SourceControl::new();
    // The raw bytes in flight across the pipeline (0: counts bound it alone).
    let budget = (cfg.settings.max_in_flight_bytes > 0)
        .then(|| ByteBudget::new(cfg.settings.max_in_flight_bytes));
    if opts.start_paused {
        control.pause();
    }
    let archive = archive_hook(cfg, &pipeline)?;
    let mut tasks: JoinSet<Result<(), Fatal>> = JoinSet::new();

    // Channels: one per consumer, of its input port's payload.
    let mut txs: HashMap<String, AnyTx> = HashMap::new();
    let mut queues: Vec<(String, QueueProbe)> = Vec::new();
    let mut rxs: HashMap<String, AnyRx> = HashMap::new();
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
        let Some(port) = port else {
            return Err(invalid(cfg, format!("`{id}` has no input port")));
        };
        let (tx, rx, depth) = crate::payload::channel(port, cap);
        for input in inputs {
            txs.insert(input, tx.clone());
        }
        queues.push((id.to_string(), depth));
        rxs.insert(id.to_string(), rx);
    }

    let cx = |id: &str, kind: &'static str| RunContext {
        pipeline: pipeline.clone(),
        component: Arc::from(id),
        component_kind: kind,
        dead_letters: dead_letters.clone(),
        retry: cfg.settings.retry.clone(),
        observers: observers.clone(),
        control: control.clone(),
    };

    let bcx = |id: &str| BuildContext {
        id: Arc::from(id),
        store: store.clone(),
        observers: observers.clone(),
    };
    for c in &cfg.sinks {
        let kind = c.config.type_name();
        let built = c
            .config
            .build(&bcx(&c.id))
            .map_err(|e| invalid(cfg, format!("sink `{}`: {}", c.id, e.detail)))?;
        let run = built.run;
        let wired = match (built.input(), rxs.remove(&c.id)) {
            (Some(port), Some(rx)) => port.visit(SpawnSink {
                sink: built,
                rx,
                cx: cx(&c.id, kind),
                tasks: &mut tasks,
            }),
            _ => false,
        };
        if !wired {
            return Err(invalid(
                cfg,
                format!("sink `{}` is not wired to a matching input", c.id),
            ));
        }
        // `concurrency` writes plus the one envelope waiting for a permit.
        bound += run.concurrency + 1;
    }

    for c in &cfg.stages {
        let rx = rxs.remove(&c.id);
        let tx = txs.remove(&c.id);
        let conc = c.config.concurrency();
        let kind = c.config.type_name();
        bound += conc;
        let built = c.config.build(&bcx(&c.id));
        let wired = match (built.ports(), rx, tx) {
            ((Some(input), Some(output)), Some(rx), Some(tx)) => input.visit(SpawnStage {
                stage: built,
                output,
                rx,
                tx,
                cx: cx(&c.id, kind),
                concurrency: conc,
                tasks: &mut tasks,
            }),
            _ => false,
        };
        if !wired {
            return Err(invalid(
                cfg,
                format!("stage `{}` is not wired to matching ports", c.id),
            ));
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
        budget: budget.clone(),
    };
    let scx = SourceBuildContext {
        store: store.clone(),
        one_shot: opts.one_shot,
        release_hook: opts.release_hook.clone(),
    };
    for c in &cfg.sources {
        let built = match overridden.take() {
            Some(s) => BuiltSource::new::<Raw>(s),
            None if opts.source_override.is_some() => continue, // only one re-drive source
            None => c
                .config
                .build(&scx)
                .map_err(|e| invalid(cfg, format!("source `{}`: {}", c.id, e.detail)))?,
        };
        let wired = match (built.output(), txs.remove(&c.id)) {
            (Some(port), Some(out)) => port.visit(SpawnSource {
                source: built,
                out,
                id: &c.id,
                shared: &shared,
                tasks: &mut tasks,
            }),
            _ => false,
        };
        if !wired {
            return Err(invalid(
                cfg,
                format!("source `{}` is not wired to a matching input", c.id),
            ));
        }
    }
    let status = Arc::new(PipelineStatus::new(
        cfg.name.clone(),
        cfg.path.clone(),
        in_flight.clone(),
        bound,
        budget,
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
        journal,
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
    budget: Option<Arc<ByteBudget>>,
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
                .with_budget(self.budget.clone())
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

/// Starts a sink's runner for the payload it takes; false when its input channel carries
/// another payload (a wiring bug: validation compares the ports).
struct SpawnSink<'a> {
    sink: BuiltSink,
    rx: AnyRx,
    cx: RunContext,
    tasks: &'a mut JoinSet<Result<(), Fatal>>,
}

impl PayloadVisitor for SpawnSink<'_> {
    type Out = bool;
    fn visit<T: Payload>(self) -> bool {
        let run = self.sink.run;
        match (self.sink.typed::<T>(), self.rx.typed::<T>()) {
            (Some(sink), Some(rx)) => {
                self.tasks
                    .spawn(run_sink(sink, rx, self.cx, run.concurrency, run.order_by));
                true
            }
            _ => false,
        }
    }
}

/// Starts a stage's runner: its input payload first, then (by [`SpawnStageOutput`]) its
/// output payload.
struct SpawnStage<'a> {
    stage: BuiltStage,
    output: PortType,
    rx: AnyRx,
    tx: AnyTx,
    cx: RunContext,
    concurrency: usize,
    tasks: &'a mut JoinSet<Result<(), Fatal>>,
}

impl PayloadVisitor for SpawnStage<'_> {
    type Out = bool;
    fn visit<I: Payload>(self) -> bool {
        let SpawnStage {
            stage,
            output,
            rx,
            tx,
            cx,
            concurrency,
            tasks,
        } = self;
        match rx.typed::<I>() {
            Some(rx) => output.visit(SpawnStageOutput {
                stage,
                rx,
                tx,
                cx,
                concurrency,
                tasks,
            }),
            None => false,
        }
    }
}

struct SpawnStageOutput<'a, I: Payload> {
    stage: BuiltStage,
    rx: mpsc::Receiver<Envelope<I>>,
    tx: AnyTx,
    cx: RunContext,
    concurrency: usize,
    tasks: &'a mut JoinSet<Result<(), Fatal>>,
}

impl<I: Payload> PayloadVisitor for SpawnStageOutput<'_, I> {
    type Out = bool;
    fn visit<O: Payload>(self) -> bool {
        match (self.tx.typed::<O>(), self.stage.typed::<I, O>()) {
            (Some(tx), Some(stage)) => {
                self.tasks
                    .spawn(run_stage(stage, self.rx, tx, self.cx, self.concurrency));
                true
            }
            _ => false,
        }
    }
}

/// Starts a source for the payload it sends, with its context and outlet.
struct SpawnSource<'a> {
    source: BuiltSource,
    out: AnyTx,
    id: &'a str,
    shared: &'a SourceShared,
    tasks: &'a mut JoinSet<Result<(), Fatal>>,
}

impl PayloadVisitor for SpawnSource<'_> {
    type Out = bool;
    fn visit<T: Payload>(self) -> bool {
        match (self.source.typed::<T>(), self.out.typed::<T>()) {
            (Some(source), Some(out)) => {
                let run = source.run(self.shared.context(self.id, out));
                spawn_source(self.tasks, self.id, run);
                true
            }
            _ => false,
        }
    }
}
