//! Notifiers: [`Notifier`] (e-mail, webhook, SMS) and the per-notifier worker that delivers
//! notices with retries.
//!
//! Each notifier has its own bounded queue and task ([`Dispatch`]), so that a dead SMTP
//! relay does not hold up the chat webhook. A notice that fails is tried again with
//! exponential backoff (1 s doubling to 5 min) for `retry_for`, then given up (logged).
//! While a notifier is failing, [`NotifierHealth`] says so — `/readyz` names it — until its
//! next delivery succeeds. `oscarflow_alert_notifications_total{notifier, outcome}` counts
//! `sent`, `failed` (an attempt) and `dropped` (given up, or the queue was full);
//! `oscarflow_alert_notifier_failing_info{notifier}` is 1 while it fails.

mod email;
mod sms;
mod webhook;

pub use email::EmailNotifier;
pub use sms::SmsNotifier;
pub use webhook::WebhookNotifier;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::config::Rule;
use super::notice::Notice;
use crate::error::ErrorKind;
use crate::shutdown::Shutdown;
use crate::telemetry::{counter, gauge, MetricName};

/// A failed delivery. `detail` is PHI-free (status codes, the server's reply code, the
/// step); `kind` decides: only `Transient` is tried again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct NotifyError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl NotifyError {
    pub fn transient(detail: impl Into<String>) -> Self {
        NotifyError {
            kind: ErrorKind::Transient,
            detail: detail.into(),
        }
    }
    pub fn fatal(detail: impl Into<String>) -> Self {
        NotifyError {
            kind: ErrorKind::Fatal,
            detail: detail.into(),
        }
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// A way to reach people.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// `email`, `webhook` or `sms`: the metric label and the name `/readyz` shows.
    fn name(&self) -> &'static str;
    /// Delivers one notice; returns once the other side has taken it.
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError>;
}

/// Which notifiers are failing, since when and why (PHI-free).
#[derive(Default)]
pub struct NotifierHealth {
    failing: Mutex<BTreeMap<&'static str, (SystemTime, String)>>,
}

impl NotifierHealth {
    fn failed(&self, name: &'static str, error: &str) {
        if let Ok(mut m) = self.failing.lock() {
            let since = m.get(name).map_or_else(SystemTime::now, |(t, _)| *t);
            m.insert(name, (since, error.to_string()));
        }
        gauge(
            MetricName::AlertNotifierFailing,
            &[("notifier", name.to_string())],
            1.0,
        );
    }

    fn delivered(&self, name: &'static str) {
        if let Ok(mut m) = self.failing.lock() {
            m.remove(name);
        }
        gauge(
            MetricName::AlertNotifierFailing,
            &[("notifier", name.to_string())],
            0.0,
        );
    }

    /// `/readyz`'s lines: one per failing notifier.
    pub fn problems(&self) -> Vec<String> {
        self.failing
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(name, (since, error))| {
                        format!(
                            "alert notifier {name} failing for {}s: {error}",
                            since.elapsed().map(|d| d.as_secs()).unwrap_or(0)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// How a notice that fails is tried again: `initial` doubling up to `max`, for `retry_for`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
    pub retry_for: Duration,
}

impl Retry {
    /// 1 s doubling to 5 min, for `retry_for`.
    pub fn new(retry_for: Duration) -> Self {
        Retry {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            retry_for,
        }
    }
}

/// Notices waiting per notifier.
const QUEUE: usize = 256;

struct Route {
    name: &'static str,
    rules: Vec<Rule>,
    tx: tokio::sync::mpsc::Sender<Notice>,
}

/// Hands each notice to the notifiers that take its rule.
pub struct Dispatch {
    routes: Vec<Route>,
}

impl Dispatch {
    /// Starts one worker per notifier; `rules` is the notifier's filter.
    pub fn start(
        notifiers: Vec<(Arc<dyn Notifier>, Vec<Rule>)>,
        health: Arc<NotifierHealth>,
        retry: Retry,
        shutdown: Shutdown,
    ) -> Dispatch {
        let routes = notifiers
            .into_iter()
            .map(|(n, rules)| {
                let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
                let name = n.name();
                health.delivered(name);
                tokio::spawn(worker(n, rx, health.clone(), retry, shutdown.clone()));
                Route { name, rules, tx }
            })
            .collect();
        Dispatch { routes }
    }

    pub fn send(&self, notice: &Notice) {
        for r in self
            .routes
            .iter()
            .filter(|r| r.rules.contains(&notice.rule))
        {
            tracing::info!(notifier = r.name, rule = notice.rule.as_str(), state = notice.state.as_str(), key = %notice.key, "Alert notice queued.");
            if r.tx.try_send(notice.clone()).is_err() {
                tracing::error!(notifier = r.name, key = %notice.key, "Alert notice dropped: the notifier's queue is full.");
                counter(
                    MetricName::AlertNotifications,
                    &[
                        ("notifier", r.name.to_string()),
                        ("outcome", "dropped".to_string()),
                    ],
                    1,
                );
            }
        }
    }
}

async fn worker(
    n: Arc<dyn Notifier>,
    mut rx: tokio::sync::mpsc::Receiver<Notice>,
    health: Arc<NotifierHealth>,
    retry: Retry,
    mut shutdown: Shutdown,
) {
    let name = n.name();
    let count = |outcome: &str| {
        counter(
            MetricName::AlertNotifications,
            &[
                ("notifier", name.to_string()),
                ("outcome", outcome.to_string()),
            ],
            1,
        )
    };
    loop {
        let notice = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => return },
            _ = shutdown.wait() => return,
        };
        let started = Instant::now();
        let mut backoff = retry.initial;
        let mut attempt = 1u32;
        loop {
            match n.send(&notice).await {
                Ok(()) => {
                    count("sent");
                    health.delivered(name);
                    tracing::info!(notifier = name, key = %notice.key, state = notice.state.as_str(), attempt, "Alert notice sent.");
                    break;
                }
                Err(e) => {
                    count("failed");
                    health.failed(name, &e.detail);
                    let give_up = e.kind != ErrorKind::Transient
                        || started.elapsed() + backoff > retry.retry_for;
                    if give_up {
                        count("dropped");
                        tracing::error!(notifier = name, key = %notice.key, attempt, error = %e, "Alert notice given up.");
                        break;
                    }
                    tracing::warn!(notifier = name, key = %notice.key, attempt, error = %e, retry_in_ms = backoff.as_millis() as u64, "Alert notice not delivered; trying again.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait() => return,
                    }
                    backoff = (backoff * 2).min(retry.max);
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::notice::NoticeState;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Fails its first `fail` sends, then takes every notice.
    struct Flaky {
        fail: u32,
        calls: AtomicU32,
        got: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Notifier for Flaky {
        fn name(&self) -> &'static str {
            "webhook"
        }
        async fn send(&self, n: &Notice) -> Result<(), NotifyError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err(NotifyError::transient("HTTP 503"));
            }
            self.got.lock().unwrap().push(n.key.clone());
            Ok(())
        }
    }

    fn notice(rule: Rule) -> Notice {
        Notice {
            state: NoticeState::Firing,
            rule,
            key: format!("{}:x", rule.as_str()),
            summary: "s".into(),
            details: vec![],
            since: SystemTime::now(),
            at: SystemTime::now(),
            host: "h".into(),
            link: "l".into(),
            held_back: 0,
        }
    }

    fn quick(retry_for: Duration) -> Retry {
        Retry {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
            retry_for,
        }
    }

    #[tokio::test]
    async fn a_failing_notifier_is_retried_shown_as_failing_and_cleared_by_a_delivery() {
        let flaky = Arc::new(Flaky {
            fail: 3,
            calls: AtomicU32::new(0),
            got: Mutex::new(vec![]),
        });
        let health = Arc::new(NotifierHealth::default());
        let d = Dispatch::start(
            vec![(flaky.clone(), vec![Rule::SourceFailing])],
            health.clone(),
            quick(Duration::from_secs(3600)),
            Shutdown::never(),
        );
        d.send(&notice(Rule::SourceFailing));
        d.send(&notice(Rule::DeadLetters)); // not this notifier's rule
        let mut seen_failing = false;
        for _ in 0..2000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let p = health.problems();
            seen_failing |= p
                .iter()
                .any(|l| l.contains("alert notifier webhook failing") && l.contains("HTTP 503"));
            if !flaky.got.lock().unwrap().is_empty() {
                break;
            }
        }
        assert!(seen_failing, "a failing notifier shows in the problems");
        assert_eq!(*flaky.got.lock().unwrap(), ["source_failing:x"]);
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
        assert!(health.problems().is_empty(), "cleared by the delivery");
    }

    /// Refuses every notice for good (a 4xx).
    struct Refusing(AtomicU32);

    #[async_trait]
    impl Notifier for Refusing {
        fn name(&self) -> &'static str {
            "email"
        }
        async fn send(&self, _: &Notice) -> Result<(), NotifyError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(NotifyError::fatal("550 mailbox unavailable"))
        }
    }

    #[tokio::test]
    async fn a_refused_notice_is_given_up_at_once_and_the_notifier_stays_failing() {
        let refusing = Arc::new(Refusing(AtomicU32::new(0)));
        let health = Arc::new(NotifierHealth::default());
        let d = Dispatch::start(
            vec![(refusing.clone(), Rule::ALL.to_vec())],
            health.clone(),
            quick(Duration::from_secs(3600)),
            Shutdown::never(),
        );
        d.send(&notice(Rule::Disk));
        d.send(&notice(Rule::Certificates));
        for _ in 0..2000 {
            if refusing.0.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(refusing.0.load(Ordering::SeqCst), 2, "one attempt each");
        let p = health.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("alert notifier email failing"), "{p:?}");
    }
}
