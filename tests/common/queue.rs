//! A queue pipeline (`oscar_fax_queue → ringcentral_fax`, …) run round by round from a test:
//! the real pipeline, built from a pipeline file by the topology, with its rounds triggered by
//! `poll now` and read back from its `queue_round` events.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use oscarflow::store::Store;
use oscarflow::telemetry::{Event, Observer, Observers};
use oscarflow::topology::{build, BuildOptions, RunningPipeline};
use tokio::sync::mpsc;

/// What one round did, by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    pub claimed: u32,
    /// Texts a producer queued; patients passed over because they opted out; texts whose
    /// number was not usable (dead-lettered).
    pub queued: u32,
    pub opted_out: u32,
    pub invalid: u32,
    pub sent: u32,
    pub adopted: u32,
    /// Faxes delivered (`COMPLETE`); texts delivered.
    pub completed: u32,
    pub delivered: u32,
    pub failed: u32,
    pub pending: u32,
}

struct Rounds(mpsc::UnboundedSender<RoundReport>);

impl Observer for Rounds {
    fn observe(&self, e: &Event<'_>) {
        if let Event::QueueRound {
            claimed,
            outcomes,
            pending,
            ..
        } = e
        {
            let n = |o: &str| {
                outcomes
                    .iter()
                    .find(|(k, _)| *k == o)
                    .map_or(0, |(_, n)| *n)
            };
            let _ = self.0.send(RoundReport {
                claimed: *claimed,
                queued: n("queued"),
                opted_out: n("opted_out"),
                invalid: n("invalid"),
                sent: n("sent"),
                adopted: n("adopted"),
                completed: n("completed"),
                delivered: n("delivered"),
                failed: n("failed"),
                pending: *pending,
            });
        }
    }
}

/// A running queue pipeline. Its file should set a long `poll_interval`: rounds then run
/// only when asked.
pub struct QueuePipeline {
    pub running: RunningPipeline,
    rounds: mpsc::UnboundedReceiver<RoundReport>,
    first_seen: bool,
}

impl QueuePipeline {
    /// Builds and starts the pipeline of `text` on `store` (its first round starts at once).
    pub fn start(text: &str, store: &Store) -> QueuePipeline {
        let cfg = oscarflow::config::load_str(Path::new("queue.toml"), text)
            .unwrap_or_else(|e| panic!("pipeline file: {e:?}"));
        let (tx, rx) = mpsc::unbounded_channel();
        let running = build(
            &cfg,
            store,
            BuildOptions {
                observers: Observers::none().with(Arc::new(Rounds(tx))),
                ..BuildOptions::default()
            },
        )
        .expect("the pipeline builds");
        QueuePipeline {
            running,
            rounds: rx,
            first_seen: false,
        }
    }

    /// One round: the first one (started with the pipeline), then one more per call.
    pub async fn round(&mut self) -> Result<RoundReport, String> {
        if self.first_seen {
            self.running.control.poll_now();
        }
        self.first_seen = true;
        tokio::time::timeout(Duration::from_secs(300), self.rounds.recv())
            .await
            .map_err(|_| "no round within 300 s".to_string())?
            .ok_or_else(|| "the pipeline stopped".to_string())
    }
}

impl Drop for QueuePipeline {
    fn drop(&mut self) {
        self.running.stop_intake();
    }
}
