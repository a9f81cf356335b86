//! [`DeadLetterDigest`]: counts new dead letters by pipeline and reason code (an
//! [`Observer`] of every pipeline) and hands them out as one digest per interval.
//!
//! The first dead letter after a quiet spell opens a window; when the window is `interval`
//! old, [`DeadLetterDigest::take_due`] returns its counts and the next dead letter opens the
//! next one. So a burst of any size is one notice, and a steady trickle is one notice per
//! interval. Only the pipeline's name and the bounded reason code are kept: never the
//! message, its id or its detail.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::telemetry::{Event, Observer};

/// The counts of one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// `(pipeline, reason code)` → dead letters.
    pub counts: BTreeMap<(String, String), u64>,
    /// When its first dead letter came.
    pub since: SystemTime,
}

impl Digest {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

#[derive(Default)]
struct Window {
    counts: BTreeMap<(String, String), u64>,
    opened: Option<(Instant, SystemTime)>,
}

/// See the module docs.
#[derive(Default)]
pub struct DeadLetterDigest {
    window: Mutex<Window>,
}

impl DeadLetterDigest {
    /// Counts one dead letter.
    pub fn add(&self, pipeline: &str, reason: &str, now: Instant) {
        if let Ok(mut w) = self.window.lock() {
            w.opened.get_or_insert((now, SystemTime::now()));
            *w.counts
                .entry((pipeline.to_string(), reason.to_string()))
                .or_default() += 1;
        }
    }

    /// The window's counts once it is `interval` old (and empties it), else nothing.
    pub fn take_due(&self, now: Instant, interval: Duration) -> Option<Digest> {
        let mut w = self.window.lock().ok()?;
        let (opened, since) = w.opened?;
        if now.saturating_duration_since(opened) < interval {
            return None;
        }
        let counts = std::mem::take(&mut w.counts);
        w.opened = None;
        Some(Digest { counts, since })
    }
}

impl Observer for DeadLetterDigest {
    fn observe(&self, event: &Event<'_>) {
        if let Event::DeadLettered { prov, reason, .. } = event {
            self.add(&prov.pipeline, reason.as_str(), Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_dead_letters_is_one_digest_counted_by_pipeline_and_reason() {
        let d = DeadLetterDigest::default();
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        assert!(d.take_due(t0, minute).is_none(), "nothing to report");
        for i in 0..50u64 {
            let reason = if i % 5 == 0 { "no_match" } else { "not_hl7" };
            d.add("labs", reason, t0 + Duration::from_millis(i * 100));
        }
        assert!(d.take_due(t0 + Duration::from_secs(30), minute).is_none());
        let digest = d.take_due(t0 + minute, minute).expect("due");
        assert_eq!(digest.total(), 50);
        assert_eq!(digest.counts[&("labs".into(), "not_hl7".into())], 40);
        assert_eq!(digest.counts[&("labs".into(), "no_match".into())], 10);
        assert!(d.take_due(t0 + minute * 5, minute).is_none(), "emptied");
    }
}
