//! The pipeline rules, read from the daemon's [`Registry`] each round: a source failing its
//! polls for longer than its pipeline's `unready_after` (what makes `/readyz` unready), a
//! pipeline stopped by a fatal error (until the supervisor's restart takes), and a pipeline
//! waiting out its database's outage (intake held; from its start to its end).

use std::time::SystemTime;

use super::config::Rule;
use super::engine::Condition;
use super::notice::{span, utc};
use crate::topology::Registry;

/// The conditions of the three pipeline rules, by rule (every rule listed, so that a rule
/// with none resolves its alerts).
pub fn pipeline_conditions(registry: &Registry) -> Vec<(Rule, Vec<Condition>)> {
    let mut failing = Vec::new();
    let mut stopped = Vec::new();
    let mut outage = Vec::new();
    let now = SystemTime::now();
    for p in registry.pipelines() {
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
