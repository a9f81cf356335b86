//! [`Engine`]: alert keys with a firing/resolved state, turned into notices.
//!
//! Each round, every rule reports the [`Condition`]s that hold now ([`Engine::update`], one
//! rule at a time). A key seen for the first time *starts* an alert: one `firing` notice. A
//! key no longer reported for `resolve_after` *recovers*: one `resolved` notice. In between
//! nothing is sent, however long it lasts. A key that starts again within `rate_limit` of its
//! last start notice is held back — neither its start nor its recovery is sent — and the next
//! start notice says how many were. The engine is pure (times are passed in), so the rules
//! of what is sent are tested without a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::config::Rule;
use super::notice::{Notice, NoticeState};

/// A condition that holds now, as a rule reports it. PHI-free by construction: names of
/// configured things, counts and times only.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub rule: Rule,
    /// The alert's identity, stable while the condition lasts (`source_failing:labs/pull`).
    pub key: String,
    /// One stable line (no running durations: it is sent at the start and at the recovery).
    pub summary: String,
    pub details: Vec<(String, String)>,
    /// The console page to link, under the console's URL (`pipelines`, `dead-letters`, ``).
    pub page: &'static str,
    /// When the condition began, when the rule knows (a source failing since its first
    /// failed poll); else when it was first reported.
    pub since: Option<SystemTime>,
}

struct Tracked {
    cond: Condition,
    since: SystemTime,
    /// Its start notice was sent (so its recovery will be).
    notified: bool,
    /// Not reported since then (recovers after `resolve_after`).
    absent_since: Option<Instant>,
}

#[derive(Default)]
struct History {
    last_start_notice: Option<Instant>,
    held_back: u32,
}

/// See the module docs.
pub struct Engine {
    rate_limit: Duration,
    resolve_after: Duration,
    host: String,
    /// The console's URL without a trailing `/`.
    console: String,
    active: BTreeMap<String, Tracked>,
    history: BTreeMap<String, History>,
}

impl Engine {
    pub fn new(rate_limit: Duration, resolve_after: Duration, host: String, console: &str) -> Self {
        Engine {
            rate_limit,
            resolve_after,
            host,
            console: console.trim_end_matches('/').to_string(),
            active: BTreeMap::new(),
            history: BTreeMap::new(),
        }
    }

    /// The console page's full URL.
    pub fn link(&self, page: &str) -> String {
        format!("{}/{page}", self.console)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Takes the conditions of `rule` that hold now; returns the notices to send.
    pub fn update(
        &mut self,
        rule: Rule,
        conditions: Vec<Condition>,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for cond in conditions.into_iter().filter(|c| c.rule == rule) {
            seen.insert(cond.key.clone());
            if let Some(t) = self.active.get_mut(&cond.key) {
                t.absent_since = None;
                t.cond = cond;
                continue;
            }
            let since = cond.since.unwrap_or(wall);
            let h = self.history.entry(cond.key.clone()).or_default();
            let limited = h
                .last_start_notice
                .is_some_and(|t| now.saturating_duration_since(t) < self.rate_limit);
            let notified = if limited {
                h.held_back = h.held_back.saturating_add(1);
                false
            } else {
                let held_back = std::mem::take(&mut h.held_back);
                h.last_start_notice = Some(now);
                out.push(self.notice(NoticeState::Firing, &cond, since, wall, held_back));
                true
            };
            self.active.insert(
                cond.key.clone(),
                Tracked {
                    cond,
                    since,
                    notified,
                    absent_since: None,
                },
            );
        }
        let gone: Vec<String> = self
            .active
            .iter_mut()
            .filter(|(k, t)| t.cond.rule == rule && !seen.contains(*k))
            .filter_map(|(k, t)| {
                let absent = *t.absent_since.get_or_insert(now);
                (now.saturating_duration_since(absent) >= self.resolve_after).then(|| k.clone())
            })
            .collect();
        for k in gone {
            if let Some(t) = self.active.remove(&k) {
                if t.notified {
                    out.push(self.notice(NoticeState::Resolved, &t.cond, t.since, wall, 0));
                }
            }
        }
        // Forget keys that are quiet and out of their rate limit (the map stays bounded).
        let (rate_limit, active) = (self.rate_limit, &self.active);
        self.history.retain(|k, h| {
            active.contains_key(k)
                || h.held_back > 0
                || h.last_start_notice
                    .is_some_and(|t| now.saturating_duration_since(t) < rate_limit)
        });
        out
    }

    fn notice(
        &self,
        state: NoticeState,
        c: &Condition,
        since: SystemTime,
        at: SystemTime,
        held_back: u32,
    ) -> Notice {
        let summary = match state {
            NoticeState::Resolved => format!("recovered: {}", c.summary),
            _ => c.summary.clone(),
        };
        Notice {
            state,
            rule: c.rule,
            key: c.key.clone(),
            summary,
            details: c.details.clone(),
            since,
            at,
            host: self.host.clone(),
            link: self.link(c.page),
            held_back,
        }
    }

    /// Alerts firing now, by rule (the `oscarflow_alerts_firing_count` gauge), every rule
    /// listed.
    pub fn firing(&self) -> Vec<(Rule, usize)> {
        Rule::ALL
            .iter()
            .map(|r| {
                (
                    *r,
                    self.active.values().filter(|t| t.cond.rule == *r).count(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(key: &str) -> Condition {
        Condition {
            rule: Rule::SourceFailing,
            key: format!("source_failing:{key}"),
            summary: format!("source {key} failing"),
            details: vec![],
            page: "pipelines",
            since: None,
        }
    }

    fn engine() -> Engine {
        Engine::new(
            Duration::from_secs(900),
            Duration::from_secs(60),
            "gw".into(),
            "http://127.0.0.1:9464/console/",
        )
    }

    fn states(v: &[Notice]) -> Vec<(&'static str, &str)> {
        v.iter()
            .map(|n| (n.state.as_str(), n.key.as_str()))
            .collect()
    }

    #[test]
    fn an_alert_is_sent_once_when_it_starts_and_once_when_it_recovers() {
        let mut e = engine();
        let (t0, w) = (Instant::now(), SystemTime::now());
        let r = Rule::SourceFailing;
        let n = e.update(r, vec![failing("labs/pull")], t0, w);
        assert_eq!(states(&n), [("firing", "source_failing:labs/pull")]);
        assert_eq!(n[0].link, "http://127.0.0.1:9464/console/pipelines");
        for s in 1..100 {
            let at = t0 + Duration::from_secs(s);
            assert!(e.update(r, vec![failing("labs/pull")], at, w).is_empty());
        }
        // Gone, but not yet for `resolve_after`.
        let t1 = t0 + Duration::from_secs(200);
        assert!(e.update(r, vec![], t1, w).is_empty());
        assert!(e
            .update(r, vec![], t1 + Duration::from_secs(59), w)
            .is_empty());
        let n = e.update(r, vec![], t1 + Duration::from_secs(60), w);
        assert_eq!(states(&n), [("resolved", "source_failing:labs/pull")]);
        assert!(n[0].summary.starts_with("recovered: "));
        assert!(e
            .update(r, vec![], t1 + Duration::from_secs(61), w)
            .is_empty());
    }

    #[test]
    fn a_condition_that_comes_back_before_resolve_after_stays_one_alert() {
        let mut e = engine();
        let (t0, w) = (Instant::now(), SystemTime::now());
        let r = Rule::SourceFailing;
        assert_eq!(e.update(r, vec![failing("a")], t0, w).len(), 1);
        assert!(e
            .update(r, vec![], t0 + Duration::from_secs(10), w)
            .is_empty());
        assert!(e
            .update(r, vec![failing("a")], t0 + Duration::from_secs(50), w)
            .is_empty());
        assert!(e
            .update(r, vec![], t0 + Duration::from_secs(100), w)
            .is_empty());
        assert_eq!(
            e.update(r, vec![], t0 + Duration::from_secs(160), w).len(),
            1
        );
    }

    #[test]
    fn a_flapping_alert_is_held_back_by_the_rate_limit_and_counted_in_the_next_notice() {
        let mut e = engine();
        let (t0, w) = (Instant::now(), SystemTime::now());
        let r = Rule::PipelineStopped;
        let stopped = || Condition {
            rule: r,
            ..failing("x")
        };
        let mut sent = Vec::new();
        // Stops and recovers every 2 minutes for an hour.
        for cycle in 0..30u64 {
            let start = t0 + Duration::from_secs(cycle * 120);
            sent.extend(e.update(r, vec![stopped()], start, w));
            sent.extend(e.update(r, vec![], start + Duration::from_secs(30), w));
            sent.extend(e.update(r, vec![], start + Duration::from_secs(95), w));
        }
        let firing = sent
            .iter()
            .filter(|n| n.state == NoticeState::Firing)
            .count();
        let resolved = sent
            .iter()
            .filter(|n| n.state == NoticeState::Resolved)
            .count();
        // One start per 15 minutes, each with its recovery.
        assert_eq!((firing, resolved), (4, 4), "{:?}", states(&sent));
        assert!(sent
            .iter()
            .filter(|n| n.state == NoticeState::Firing)
            .skip(1)
            .all(|n| n.held_back > 0));
    }

    #[test]
    fn rules_are_updated_independently_and_firing_counts_by_rule() {
        let mut e = engine();
        let (t0, w) = (Instant::now(), SystemTime::now());
        e.update(Rule::SourceFailing, vec![failing("a"), failing("b")], t0, w);
        // An update of another rule does not resolve these.
        let n = e.update(Rule::Disk, vec![], t0 + Duration::from_secs(3600), w);
        assert!(n.is_empty());
        let f = e.firing();
        assert!(f.contains(&(Rule::SourceFailing, 2)), "{f:?}");
        assert!(f.contains(&(Rule::Disk, 0)), "{f:?}");
    }
}
