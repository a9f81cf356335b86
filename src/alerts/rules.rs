//! The pipeline rules, read from the daemon's [`Registry`] each round: a source failing its
//! polls for longer than its pipeline's `unready_after` (what makes `/readyz` unready), a
//! pipeline stopped by a fatal error (until the supervisor's restart takes), and a pipeline
//! waiting out its database's outage (intake held; from its start to its end).

use std::sync::Arc;
use std::time::SystemTime;

use super::config::Rule;
use super::engine::Condition;
use super::notice::{span, utc};
use crate::topology::{PipelineStatus, Registry};

/// The conditions of the three pipeline rules, by rule (every rule listed, so that a rule
/// with none resolves its alerts).
pub fn pipeline_conditions(registry: &Registry) -> Vec<(Rule, Vec<Condition>)> {
    conditions_of(&registry.pipelines())
}

/// [`pipeline_conditions`] of these pipelines.
fn conditions_of(pipelines: &[Arc<PipelineStatus>]) -> Vec<(Rule, Vec<Condition>)> {
    let mut failing = Vec::new();
    let mut stopped = Vec::new();
    let mut outage = Vec::new();
    let now = SystemTime::now();
    for p in pipelines {
        for (source, since) in p.health.failing() {
            let for_ = since.elapsed();
            if for_ > p.unready_after {
                failing.push(Condition {
                    rule: Rule::SourceFailing,
                    key: format!("source_failing:{}/{source}", p.name),
                    summary: format!(
                        "pipeline {}: source {source} has failed its polls for longer than {}",
                        p.name,
                        span(p.unready_after.as_secs())
                    ),
                    details: vec![
                        ("pipeline".into(), p.name.clone()),
                        ("source".into(), source.clone()),
                        ("unready_after".into(), span(p.unready_after.as_secs())),
                    ],
                    page: "pipelines",
                    since: now.checked_sub(for_),
                });
            }
        }
        if !p.is_running() {
            if let Some(stop) = p.stop() {
                let mut details = vec![
                    ("pipeline".into(), p.name.clone()),
                    ("component".into(), stop.component.clone()),
                ];
                if let Some(r) = p.restart() {
                    details.push((
                        "next restart".into(),
                        format!("{} (attempt {})", utc(r.at), r.attempt),
                    ));
                }
                stopped.push(Condition {
                    rule: Rule::PipelineStopped,
                    key: format!("pipeline_stopped:{}", p.name),
                    summary: format!(
                        "pipeline {} stopped by a fatal error in {}",
                        p.name, stop.component
                    ),
                    details,
                    page: "pipelines",
                    since: Some(stop.at),
                });
            }
        }
        if let Some(d) = p.control.outage() {
            outage.push(Condition {
                rule: Rule::DatabaseOutage,
                key: format!("database_outage:{}", p.name),
                summary: format!(
                    "pipeline {}: its database is unreachable; intake is held until it answers",
                    p.name
                ),
                details: vec![("pipeline".into(), p.name.clone())],
                page: "pipelines",
                since: now.checked_sub(d),
            });
        }
    }
    vec![
        (Rule::SourceFailing, failing),
        (Rule::PipelineStopped, stopped),
        (Rule::DatabaseOutage, outage),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::engine::Engine;
    use crate::alerts::notice::NoticeState;
    use crate::telemetry::{Event, Observer};
    use crate::topology::status::SourceHealth;
    use std::time::{Duration, Instant};

    fn status(unready_after: Duration) -> Arc<PipelineStatus> {
        Arc::new(PipelineStatus::new(
            "labs".into(),
            "labs.toml".into(),
            crate::ack::InFlight::new(),
            10,
            None,
            crate::sources::SourceControl::new(),
            SourceHealth::new(),
            unready_after,
            Vec::new(),
            vec!["pull".into()],
        ))
    }

    /// The notices one round sends for `pipelines`.
    fn round(
        e: &mut Engine,
        pipelines: &[Arc<PipelineStatus>],
        now: Instant,
    ) -> Vec<(NoticeState, String)> {
        conditions_of(pipelines)
            .into_iter()
            .flat_map(|(rule, c)| e.update(rule, c, now, SystemTime::now()))
            .map(|n| (n.state, n.key))
            .collect()
    }

    #[test]
    fn a_database_outage_is_one_alert_at_its_start_and_one_at_its_end() {
        let p = status(Duration::from_secs(3600));
        let mut e = Engine::new(
            Duration::from_secs(900),
            Duration::ZERO,
            "gw".into(),
            "http://x/console",
        );
        let t0 = Instant::now();
        let ps = [p.clone()];
        assert!(round(&mut e, &ps, t0).is_empty());
        let hold = p.control.hold("labs", "oscar");
        let second = p.control.hold("labs", "oscar2");
        let key = "database_outage:labs".to_string();
        assert_eq!(round(&mut e, &ps, t0), [(NoticeState::Firing, key.clone())]);
        for s in 1..10 {
            assert!(round(&mut e, &ps, t0 + Duration::from_secs(s)).is_empty());
        }
        drop(hold);
        assert!(
            round(&mut e, &ps, t0 + Duration::from_secs(11)).is_empty(),
            "still held by one"
        );
        drop(second);
        assert_eq!(
            round(&mut e, &ps, t0 + Duration::from_secs(12)),
            [(NoticeState::Resolved, key)]
        );
    }

    #[test]
    fn a_source_alerts_only_past_its_pipelines_unready_after_and_a_fatal_stop_alerts() {
        let failed = Event::PollFailed {
            pipeline: "labs",
            component: "pull",
            error: "connection refused",
        };
        let patient = status(Duration::from_secs(3600));
        patient.health.observe(&failed);
        let eager = status(Duration::ZERO);
        eager.health.observe(&failed);
        std::thread::sleep(Duration::from_millis(5));
        let c = conditions_of(&[patient]);
        assert!(c.iter().all(|(_, v)| v.is_empty()), "{c:?}");
        let c = conditions_of(std::slice::from_ref(&eager));
        assert_eq!(c[0].1.len(), 1);
        assert_eq!(c[0].1[0].key, "source_failing:labs/pull");
        eager.mark_fatal("oscar", "table hl7TextInfo is missing");
        eager.mark_stopped(Some("oscar: fatal".into()));
        let c = conditions_of(&[eager]);
        let stopped = &c[1].1[0];
        assert_eq!(stopped.key, "pipeline_stopped:labs");
        assert_eq!(
            stopped.summary,
            "pipeline labs stopped by a fatal error in oscar"
        );
        assert!(
            !format!("{stopped:?}").contains("hl7TextInfo"),
            "the error text is not sent"
        );
    }
}
