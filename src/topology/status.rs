//! [`PipelineStatus`]: what the daemon knows about one running pipeline, shared with the
//! HTTP endpoint (`/readyz`, `/metrics`, `/pipelines`, the control API).
//!
//! Readiness has three parts: the pipeline's tasks are running (a fatal component stops
//! them), no source has been failing its polls for longer than the pipeline's
//! `unready_after`, and (checked by the endpoint) its database answers. The queue gauges
//! are read when asked, from weak handles on the pipeline's channels: holding a strong
//! sender would keep a channel open and stop the pipeline from draining at shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::ack::{ByteBudget, InFlight};
use crate::sources::SourceControl;
use crate::telemetry::{Event, Observer};

/// A probe of one consumer's input channel: how many envelopes wait in it.
pub type QueueProbe = Box<dyn Fn() -> usize + Send + Sync>;

/// One running pipeline, as the endpoint sees it.
pub struct PipelineStatus {
    pub name: String,
    /// The file it was built from.
    pub file: PathBuf,
    /// When this version started.
    pub started: SystemTime,
    pub in_flight: Arc<InFlight>,
    pub in_flight_bound: usize,
    /// The pipeline's budget for the raw bytes in flight.
    pub budget: Option<Arc<ByteBudget>>,
    pub control: Arc<SourceControl>,
    pub health: Arc<SourceHealth>,
    /// A source failing for longer than this makes the daemon unready.
    pub unready_after: Duration,
    /// Ids of its sources, stages and sinks (what `oscarflow tap` can watch).
    pub components: Vec<String>,
    running: AtomicBool,
    stopped_by: Mutex<Option<String>>,
    /// Why it stopped on its own (a fatal component), and when.
    stop: Mutex<Option<Stop>>,
    /// When the supervisor starts it again, and which attempt that is.
    restart: Mutex<Option<Restart>>,
    /// For a version started again after a fatal stop: that stop and the attempt count.
    restarted_after: Mutex<Option<(Stop, u32)>>,
    queues: Vec<(String, QueueProbe)>,
}

/// A fatal stop: the component and its PHI-free error.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub component: String,
    pub error: String,
    pub at: SystemTime,
}

/// A scheduled automatic restart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restart {
    /// 1 for the first restart after a stop, counting up while it keeps stopping.
    pub attempt: u32,
    pub at: SystemTime,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Stop {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "component": self.component,
            "error": self.error,
            "at": unix_secs(self.at),
        })
    }
}

impl PipelineStatus {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        file: PathBuf,
        in_flight: Arc<InFlight>,
        in_flight_bound: usize,
        budget: Option<Arc<ByteBudget>>,
        control: Arc<SourceControl>,
        health: Arc<SourceHealth>,
        unready_after: Duration,
        queues: Vec<(String, QueueProbe)>,
        components: Vec<String>,
    ) -> Self {
        PipelineStatus {
            name,
            file,
            started: SystemTime::now(),
            in_flight,
            in_flight_bound,
            budget,
            control,
            health,
            unready_after,
            components,
            running: AtomicBool::new(true),
            stopped_by: Mutex::new(None),
            stop: Mutex::new(None),
            restart: Mutex::new(None),
            restarted_after: Mutex::new(None),
            queues,
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// Records that the pipeline's tasks ended (`why`: the fatal component and its PHI-free
    /// error, or a plain stop).
    pub fn mark_stopped(&self, why: Option<String>) {
        self.running.store(false, Ordering::SeqCst);
        if let Ok(mut s) = self.stopped_by.lock() {
            *s = why;
        }
    }

    pub fn stopped_by(&self) -> Option<String> {
        self.stopped_by.lock().ok().and_then(|s| s.clone())
    }

    /// Records the fatal error that stopped the pipeline (the first one).
    pub fn mark_fatal(&self, component: &str, error: &str) {
        if let Ok(mut s) = self.stop.lock() {
            s.get_or_insert_with(|| Stop {
                component: component.to_string(),
                error: error.to_string(),
                at: SystemTime::now(),
            });
        }
    }

    /// The fatal error that stopped it, if one did.
    pub fn stop(&self) -> Option<Stop> {
        self.stop.lock().ok().and_then(|s| s.clone())
    }

    /// Records the automatic restart scheduled for this stopped pipeline.
    pub fn set_restart(&self, r: Restart) {
        if let Ok(mut s) = self.restart.lock() {
            *s = Some(r);
        }
    }

    pub fn restart(&self) -> Option<Restart> {
        self.restart.lock().ok().and_then(|s| *s)
    }

    /// Marks this version as started again after `stop`, on restart `attempt`.
    pub fn set_restarted_after(&self, stop: Stop, attempt: u32) {
        if let Ok(mut s) = self.restarted_after.lock() {
            *s = Some((stop, attempt));
        }
    }

    /// Envelopes waiting in each consumer's input channel, by consumer id.
    pub fn queued(&self) -> Vec<(&str, usize)> {
        self.queues
            .iter()
            .map(|(id, p)| (id.as_str(), p()))
            .collect()
    }

    /// Why this pipeline makes the daemon unready (empty when it does not).
    pub fn problems(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.is_running() {
            v.push(format!("pipeline {} is not running", self.name));
        }
        if let Some(d) = self.control.outage() {
            v.push(format!(
                "pipeline {}: its database is unavailable, intake held for {}s",
                self.name,
                d.as_secs()
            ));
        }
        for (source, since) in self.health.failing() {
            let for_ = since.elapsed();
            if for_ > self.unready_after {
                v.push(format!(
                    "pipeline {} source {} failing for {}s",
                    self.name,
                    source,
                    for_.as_secs()
                ));
            }
        }
        v
    }

    /// The pipeline as JSON for `/pipelines` (ids, states and counts only).
    pub fn to_json(&self) -> serde_json::Value {
        let since = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let sources: serde_json::Map<String, serde_json::Value> = self
            .health
            .snapshot()
            .into_iter()
            .map(|(id, h)| {
                (
                    id,
                    serde_json::json!({
                        "last_success": h.last_success.map(since),
                        "failing_for_seconds": h.failing_since.map(|t| t.elapsed().as_secs()),
                    }),
                )
            })
            .collect();
        let queued: serde_json::Map<String, serde_json::Value> = self
            .queued()
            .into_iter()
            .map(|(id, n)| (id.to_string(), n.into()))
            .collect();
        serde_json::json!({
            "name": self.name,
            "file": self.file.display().to_string(),
            "started_ms": self.started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            "running": self.is_running(),
            "stopped_by": self.stopped_by(),
            "stop": self.stop().map(|s| s.to_json()),
            "restart": self.restart().map(|r| serde_json::json!({
                "attempt": r.attempt,
                "at": unix_secs(r.at),
                "in_seconds": r.at.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
            })),
            "restarted_after": self.restarted_after.lock().ok().and_then(|r| r.clone()).map(|(s, attempt)| serde_json::json!({
                "stop": s.to_json(),
                "attempt": attempt,
            })),
            "paused": self.control.is_paused(),
            "database_outage_seconds": self.control.outage().map(|d| d.as_secs()),
            "in_flight": self.in_flight.current(),
            "in_flight_bound": self.in_flight_bound,
            "in_flight_bytes": self.budget.as_ref().map(|b| b.in_use()),
            "in_flight_bytes_budget": self.budget.as_ref().map(|b| b.total()),
            "oldest_unacked_seconds": self.in_flight.oldest_age().as_secs_f64(),
            "components": self.components,
            "queued": queued,
            "sources": sources,
        })
    }
}

/// One source's poll health.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health {
    pub last_success: Option<SystemTime>,
    /// Set at the first failure after a success; cleared by the next success.
    pub failing_since: Option<Instant>,
}

/// Poll health of a pipeline's sources, fed by the `Polled` and `PollFailed` events.
#[derive(Debug, Default)]
pub struct SourceHealth {
    by_source: Mutex<BTreeMap<String, Health>>,
}

impl SourceHealth {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    /// Sources failing now, with the time their failures began.
    pub fn failing(&self) -> Vec<(String, Instant)> {
        self.snapshot()
            .into_iter()
            .filter_map(|(id, h)| h.failing_since.map(|t| (id, t)))
            .collect()
    }
    pub fn snapshot(&self) -> Vec<(String, Health)> {
        self.by_source
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}

impl Observer for SourceHealth {
    fn observe(&self, event: &Event<'_>) {
        let (component, ok) = match event {
            Event::Polled { component, .. } | Event::QueueRound { component, .. } => {
                (*component, true)
            }
            Event::PollFailed { component, .. } | Event::QueueRoundFailed { component, .. } => {
                (*component, false)
            }
            _ => return,
        };
        if let Ok(mut m) = self.by_source.lock() {
            let h = m.entry(component.to_string()).or_default();
            if ok {
                h.last_success = Some(SystemTime::now());
                h.failing_since = None;
            } else if h.failing_since.is_none() {
                h.failing_since = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(unready_after: Duration) -> PipelineStatus {
        PipelineStatus::new(
            "labs".into(),
            PathBuf::from("labs.toml"),
            InFlight::new(),
            10,
            None,
            SourceControl::new(),
            SourceHealth::new(),
            unready_after,
            Vec::new(),
            vec!["pull".into()],
        )
    }

    #[test]
    fn a_pipeline_is_a_problem_when_stopped_or_when_a_source_fails_past_its_threshold() {
        let s = status(Duration::from_secs(3600));
        assert!(s.problems().is_empty());
        s.health.observe(&Event::PollFailed {
            pipeline: "labs",
            component: "pull",
            error: "timeout",
        });
        assert!(s.problems().is_empty(), "failing, but not for an hour yet");
        let s = status(Duration::ZERO);
        s.health.observe(&Event::PollFailed {
            pipeline: "labs",
            component: "pull",
            error: "timeout",
        });
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.problems().len(), 1);
        assert!(s.problems()[0].starts_with("pipeline labs source pull failing for"));
        s.mark_stopped(Some("pull: bind failed".into()));
        assert!(s
            .problems()
            .contains(&"pipeline labs is not running".to_string()));
        assert_eq!(s.to_json()["running"], false);
    }

    #[test]
    fn a_source_is_failing_from_its_first_failed_poll_until_a_poll_succeeds() {
        let h = SourceHealth::new();
        let poll_failed = Event::PollFailed {
            pipeline: "p",
            component: "pull",
            error: "connection refused",
        };
        h.observe(&poll_failed);
        let first = h.failing()[0].1;
        h.observe(&poll_failed);
        assert_eq!(h.failing(), vec![("pull".to_string(), first)]);
        h.observe(&Event::Polled {
            pipeline: "p",
            component: "pull",
            messages: 0,
        });
        assert!(h.failing().is_empty());
        assert!(h.snapshot()[0].1.last_success.is_some());
    }
}
