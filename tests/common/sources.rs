//! Running a source under test: the lab pipeline with the source in place of its own, an
//! observer of poll and settle events, and a second writer that blocks every commit (to show
//! that a source stops pulling when the pipeline is full).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oscarflow::ack::BatchStatus;
use oscarflow::config::PipelineConfig;
use oscarflow::sources::Source;
use oscarflow::store::Store;
use oscarflow::telemetry::{Event, Observer, Observers};
use oscarflow::topology::{build, BuildOptions, RunningPipeline};

/// Poll and settle events seen by a pipeline.
#[derive(Default)]
pub struct SourceEvents {
    /// `Polled`: messages per successful poll.
    pub ok: Mutex<Vec<u32>>,
    /// `PollFailed`: the error texts.
    pub failed: Mutex<Vec<String>>,
    /// `Settled`: (status, released) per input.
    pub settled: Mutex<Vec<(BatchStatus, bool)>>,
}

impl Observer for SourceEvents {
    fn observe(&self, e: &Event<'_>) {
        match e {
            Event::Polled { messages, .. } => self.ok.lock().unwrap().push(*messages),
            Event::PollFailed { error, .. } => self.failed.lock().unwrap().push(error.to_string()),
            Event::Settled {
                status, released, ..
            } => self.settled.lock().unwrap().push((*status, *released)),
            _ => {}
        }
    }
}

/// Builds `cfg` on `store` with `source` in place of the configured sources (long-running:
/// stop it with `stop_intake` or let the source end).
pub fn start(
    cfg: &PipelineConfig,
    store: &Store,
    source: Box<dyn Source>,
    events: Option<Arc<SourceEvents>>,
) -> RunningPipeline {
    let mut observers = Observers::none();
    if let Some(e) = events {
        observers = observers.with(e);
    }
    build(
        cfg,
        store,
        BuildOptions {
            observers,
            source_override: Some(Arc::new(Mutex::new(Some(source)))),
            ..Default::default()
        },
    )
    .expect("build")
}

/// Waits (at most `secs`) for a pipeline to end; its fatal error as text.
pub async fn wait(mut running: RunningPipeline, secs: u64) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(secs), running.wait())
        .await
        .expect("the pipeline ends in time")
        .map_err(|f| f.to_string())
}

/// [`start`] then [`wait`] (120 s).
pub async fn run(
    cfg: &PipelineConfig,
    store: &Store,
    source: Box<dyn Source>,
    events: Arc<SourceEvents>,
) -> Result<(), String> {
    wait(start(cfg, store, source, Some(events)), 120).await
}

/// Another writer holding the embedded store's write lock: reads go on (WAL), nothing
/// commits until the returned transaction is rolled back or dropped.
pub async fn hold_write_lock(
    dir: &std::path::Path,
) -> (Store, sqlx::Transaction<'static, sqlx::Any>) {
    let other = Store::open(&super::sqlite_url(dir)).await.unwrap();
    let mut held = other.pool.begin().await.unwrap();
    sqlx::query("DELETE FROM oscarflow_mllp_answer WHERE pipeline = 'lock'")
        .execute(&mut *held)
        .await
        .unwrap();
    (other, held)
}
