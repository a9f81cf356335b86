//! Alerts: [`Alerts`] watches the running daemon and tells people — by e-mail, a chat
//! webhook and a text to the on-call number — when something needs them, once when it
//! starts and once when it recovers.
//!
//! ```text
//!  Registry (pipelines, sources, outages) ─┐
//!  disk (statvfs), certificates (openssl) ─┼─► rules ─► Engine ─► Dispatch ─► email / webhook / sms
//!  DeadLettered events ─► DeadLetterDigest ┘   (conditions) (keys)   (queue + retry per notifier)
//! ```
//!
//! - **Rules** ([`rules`], [`disk`], [`certs`], [`digest`]) report the conditions that hold
//!   now, each round (`evaluate_every`): a source failing its polls past its pipeline's
//!   `unready_after`, a pipeline stopped by a fatal error, a pipeline's database unreachable,
//!   the state directory or a `document_dir` below its free-space floor, a certificate
//!   expiring within `certificate_warning`. Dead letters are not a condition but a count:
//!   one digest per `dead_letter_digest`, by pipeline and reason code.
//! - **The engine** ([`engine::Engine`]) keys each condition (`source_failing:labs/pull`):
//!   a new key sends a `firing` notice, a key gone for `resolve_after` a `resolved` one, and a
//!   key that starts again within `rate_limit` is held back and counted in its next notice.
//! - **Notifiers** ([`notify`]) each have a queue and a worker that retries with backoff; a
//!   notifier that fails shows in `/readyz` ([`NotifierHealth::problems`]) and in
//!   `oscarflow_alert_notifications_total` and `oscarflow_alert_notifier_failing_info`.
//!
//! **No PHI.** Notices are built from names of configured things (pipelines, sources,
//! sinks, settings, file paths of configuration), reason codes, counts, times and the host
//! name, plus a link to the console where the people allowed to see more can look. No type
//! on the way from an event to a notice has a field that could carry a message, a patient
//! or an error text from a message.

pub mod certs;
pub mod config;
pub mod digest;
pub mod disk;
pub mod engine;
pub mod notice;
pub mod notify;
pub mod rules;

pub use config::{AlertsConfig, Rule};
pub use notify::NotifierHealth;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use digest::{DeadLetterDigest, Digest};
use engine::Engine;
use notice::{Notice, NoticeState};
use notify::{Dispatch, Notifier, Retry};

use crate::shutdown::Shutdown;
use crate::telemetry::{gauge, MetricName, Observer};
use crate::topology::Registry;

/// What the alerts read of the daemon.
pub struct Context {
    /// The running pipelines.
    pub registry: Arc<Registry>,
    /// Where the pipeline files are (their certificate files and document directories).
    pub pipelines_dir: PathBuf,
    /// The state directory, absolute (relative paths in pipeline files resolve against it).
    pub state_dir: PathBuf,
    /// The daemon's database URL (its `ssl-ca` is a configured CA). Never shown.
    pub database_url: String,
    /// The HTTP endpoint's `listen` (the console's default URL).
    pub listen: String,
}

/// The alerts of a running daemon. See the module docs.
pub struct Alerts {
    cfg: AlertsConfig,
    notifiers: Vec<(Arc<dyn Notifier>, Vec<Rule>)>,
    digest: Arc<DeadLetterDigest>,
    health: Arc<NotifierHealth>,
}

/// Pipeline files are read again this often for their certificate files and directories.
const REREAD_PIPELINES: Duration = Duration::from_secs(60);

impl Alerts {
    /// Checks the settings and sets up the notifiers, reading their secrets from the
    /// environment now: a missing one stops the daemon's start, as for every `*_env`.
    pub fn new(cfg: &AlertsConfig) -> Result<Alerts, String> {
        if let Some((_, p)) = cfg.problems().into_iter().next() {
            return Err(p);
        }
        let mut notifiers: Vec<(Arc<dyn Notifier>, Vec<Rule>)> = Vec::new();
        let all = || Rule::ALL.to_vec();
        if let Some(e) = &cfg.email {
            notifiers.push((
                Arc::new(notify::EmailNotifier::new(e)?),
                e.rules.clone().unwrap_or_else(all),
            ));
        }
        if let Some(w) = &cfg.webhook {
            notifiers.push((
                Arc::new(notify::WebhookNotifier::new(w)?),
                w.rules.clone().unwrap_or_else(all),
            ));
        }
        if let Some(s) = &cfg.sms {
            let not_digests = || {
                Rule::ALL
                    .into_iter()
                    .filter(|r| *r != Rule::DeadLetters)
                    .collect()
            };
            notifiers.push((
                Arc::new(notify::SmsNotifier::new(s)?),
                s.rules.clone().unwrap_or_else(not_digests),
            ));
        }
        if notifiers.is_empty() {
            tracing::warn!(
                "[alerts] names no notifier (email, webhook, sms): alerts are only logged."
            );
        }
        Ok(Alerts {
            cfg: cfg.clone(),
            notifiers,
            digest: Arc::new(DeadLetterDigest::default()),
            health: Arc::new(NotifierHealth::default()),
        })
    }

    /// The observer every pipeline gets: it counts dead letters for the digest.
    pub fn observer(&self) -> Arc<dyn Observer> {
        self.digest.clone()
    }

    /// Which notifiers are failing (`/readyz`).
    pub fn health(&self) -> Arc<NotifierHealth> {
        self.health.clone()
    }

    /// Starts the rounds; they end with `shutdown`.
    pub fn spawn(self, cx: Context, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(cx, shutdown))
    }

    async fn run(self, cx: Context, mut shutdown: Shutdown) {
        let cfg = self.cfg;
        let console = cfg
            .console_url
            .clone()
            .unwrap_or_else(|| default_console(&cx.listen));
        let mut engine = Engine::new(
            cfg.rate_limit,
            cfg.resolve_after,
            notice::host_name(),
            &console,
        );
        let dispatch = Dispatch::start(
            self.notifiers,
            self.health.clone(),
            Retry::new(cfg.retry_for),
            shutdown.clone(),
        );
        let mut tick = tokio::time::interval(cfg.evaluate_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pipelines_read: Option<Instant> = None;
        let mut certs_read: Option<Instant> = None;
        let mut cert_files = Vec::new();
        let mut dirs = Vec::new();
        let warn_secs = cfg.certificate_warning.as_secs();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
            let now = Instant::now();
            let wall = SystemTime::now();
            if pipelines_read.is_none_or(|t| now.duration_since(t) >= REREAD_PIPELINES) {
                let (ok, _) = crate::config::load_all_in(
                    std::slice::from_ref(&cx.pipelines_dir),
                    Some(&cx.state_dir),
                );
                let ok: Vec<_> = ok.into_iter().filter(|p| p.settings.enabled).collect();
                let mut urls = vec![cx.database_url.clone()];
                urls.extend(ok.iter().filter_map(|p| p.database_url_override()));
                cert_files = certs::configured(&ok, &urls);
                dirs = disk::watched(&cx.state_dir, &ok);
                pipelines_read = Some(now);
            }
            let mut notices = Vec::new();
            for (rule, conditions) in rules::pipeline_conditions(&cx.registry) {
                if cfg.rules.on(rule) {
                    notices.extend(engine.update(rule, conditions, now, wall));
                }
            }
            if cfg.rules.disk {
                let c =
                    disk::conditions(&dirs, cfg.disk_min_free_percent, cfg.disk_min_free_bytes());
                notices.extend(engine.update(Rule::Disk, c, now, wall));
            }
            if cfg.rules.certificates
                && certs_read.is_none_or(|t| now.duration_since(t) >= cfg.certificate_check_every)
            {
                let c = certs::conditions(&cert_files, warn_secs);
                notices.extend(engine.update(Rule::Certificates, c, now, wall));
                certs_read = Some(now);
            }
            if let Some(d) = self.digest.take_due(now, cfg.dead_letter_digest) {
                if cfg.rules.dead_letters {
                    notices.push(digest_notice(&engine, d, wall));
                }
            }
            for n in &notices {
                match n.state {
                    NoticeState::Firing => {
                        tracing::warn!(rule = n.rule.as_str(), key = %n.key, summary = %n.summary, "Alert started.")
                    }
                    NoticeState::Resolved => {
                        tracing::info!(rule = n.rule.as_str(), key = %n.key, "Alert recovered.")
                    }
                    NoticeState::Digest => {
                        tracing::info!(rule = n.rule.as_str(), summary = %n.summary, "Dead-letter digest.")
                    }
                }
                dispatch.send(n);
            }
            for (rule, n) in engine.firing() {
                gauge(
                    MetricName::AlertsFiring,
                    &[("rule", rule.as_str().to_string())],
                    n as f64,
                );
            }
        }
    }
}

/// The digest's notice: counts by pipeline and reason code, never a message.
fn digest_notice(engine: &Engine, d: Digest, at: SystemTime) -> Notice {
    let total = d.total();
    let details = d
        .counts
        .iter()
        .map(|((pipeline, reason), n)| {
            (
                format!("pipeline {pipeline}, reason {reason}"),
                n.to_string(),
            )
        })
        .collect();
    Notice {
        state: NoticeState::Digest,
        rule: Rule::DeadLetters,
        key: "dead_letters".into(),
        summary: format!("{total} new dead letter(s)"),
        details,
        since: d.since,
        at,
        host: engine.host().to_string(),
        link: engine.link("dead-letters"),
        held_back: 0,
    }
}

/// `http://<listen>/console`, with this machine's name for an address that listens on all
/// interfaces.
fn default_console(listen: &str) -> String {
    match listen.trim().parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            format!("http://{}:{}/console", notice::host_name(), a.port())
        }
        Ok(a) => format!("http://{a}/console"),
        Err(_) => format!("http://{}:9464/console", notice::host_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_link_defaults_to_the_endpoint_address() {
        assert_eq!(
            default_console("127.0.0.1:9464"),
            "http://127.0.0.1:9464/console"
        );
        assert!(default_console("0.0.0.0:9464").ends_with(":9464/console"));
        assert!(!default_console("0.0.0.0:9464").contains("0.0.0.0"));
        assert!(default_console("off").ends_with(":9464/console"));
    }

    #[test]
    fn a_digest_counts_by_pipeline_and_reason_and_links_to_the_dead_letters() {
        let e = Engine::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            "gw".into(),
            "https://gw.clinic.example/console",
        );
        let d = DeadLetterDigest::default();
        for _ in 0..3 {
            d.add("labs", "not_hl7", Instant::now());
        }
        d.add("faxes", "too_large", Instant::now());
        let got = d.take_due(Instant::now(), Duration::ZERO).unwrap();
        let n = digest_notice(&e, got, SystemTime::now());
        assert_eq!(n.summary, "4 new dead letter(s)");
        assert_eq!(n.link, "https://gw.clinic.example/console/dead-letters");
        let text = n.text();
        assert!(text.contains("pipeline labs, reason not_hl7: 3"), "{text}");
        assert!(
            text.contains("pipeline faxes, reason too_large: 1"),
            "{text}"
        );
    }
}
