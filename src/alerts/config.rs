//! `[alerts]` in `oscarflow.toml`: [`AlertsConfig`], the rules' thresholds and the three
//! notifiers (`[alerts.email]`, `[alerts.webhook]`, `[alerts.sms]`).
//!
//! Parsed with the rest of the daemon's file (`deny_unknown_fields`, so a misspelt key is
//! refused at its line); [`AlertsConfig::problems`] is the pure validation that `check` and
//! the daemon's start share. Secrets are never in the file: the SMTP login, the webhook's
//! URL or bearer token and RingCentral's credentials are named by `*_env` settings.

use std::time::Duration;

use serde::Deserialize;

use crate::config::deserialize_duration;
use crate::ringcentral::RcConfig;

/// The `[alerts]` table. Without it the daemon sends no alerts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The console as the people who get the alerts reach it (each notice links to a page of
    /// it), e.g. `https://oscar-gw.clinic.example:9464/console`. Default: `http://<listen>/console`.
    pub console_url: Option<String>,
    /// How often the conditions are looked at (default 15 s).
    #[serde(deserialize_with = "deserialize_duration")]
    pub evaluate_every: Duration,
    /// An alert recovers only after its condition has been gone this long (default 1 min):
    /// a flapping source or a pipeline in a restart loop is one alert, not a stream of them.
    #[serde(deserialize_with = "deserialize_duration")]
    pub resolve_after: Duration,
    /// After an alert's start notice, a new start of the same alert within this long is not
    /// sent (nor its recovery); the next notice says how many were held back (default 15 min).
    #[serde(deserialize_with = "deserialize_duration")]
    pub rate_limit: Duration,
    /// New dead letters are sent as one digest per this long (default 10 min): counts by
    /// pipeline and reason, never a message.
    #[serde(deserialize_with = "deserialize_duration")]
    pub dead_letter_digest: Duration,
    /// A certificate (the Excelleris client certificate, any configured CA or TLS
    /// certificate) expiring within this long alerts, and `check` warns (default 30 days).
    #[serde(deserialize_with = "deserialize_duration")]
    pub certificate_warning: Duration,
    /// How often the certificates are read again (default 6 h; also at start).
    #[serde(deserialize_with = "deserialize_duration")]
    pub certificate_check_every: Duration,
    /// The state directory or a `document_dir` with less free space than this share of its
    /// file system alerts (default 10 %).
    pub disk_min_free_percent: f64,
    /// …or with less than this many MiB free (default 0: the share only).
    pub disk_min_free_mib: u64,
    /// A notice that a notifier cannot deliver is tried again with backoff for this long,
    /// then given up (logged and counted) (default 1 h).
    #[serde(deserialize_with = "deserialize_duration")]
    pub retry_for: Duration,
    /// Which rules are on (all by default).
    pub rules: Rules,
    pub email: Option<EmailConfig>,
    pub webhook: Option<WebhookConfig>,
    pub sms: Option<SmsConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            console_url: None,
            evaluate_every: Duration::from_secs(15),
            resolve_after: Duration::from_secs(60),
            rate_limit: Duration::from_secs(15 * 60),
            dead_letter_digest: Duration::from_secs(10 * 60),
            certificate_warning: DEFAULT_CERTIFICATE_WARNING,
            certificate_check_every: Duration::from_secs(6 * 3600),
            disk_min_free_percent: 10.0,
            disk_min_free_mib: 0,
            retry_for: Duration::from_secs(3600),
            rules: Rules::default(),
            email: None,
            webhook: None,
            sms: None,
        }
    }
}

/// `check` warns of certificates expiring within this long when no `[alerts]` says otherwise.
pub const DEFAULT_CERTIFICATE_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// The alert rules, each on or off (`[alerts.rules]`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// A source whose polls have failed for longer than its pipeline's `unready_after`.
    pub source_failing: bool,
    /// A pipeline stopped by a fatal error.
    pub pipeline_stopped: bool,
    /// A pipeline's database unavailable (its intake held until it answers again).
    pub database_outage: bool,
    /// New dead letters (a digest per `dead_letter_digest`).
    pub dead_letters: bool,
    /// Certificates expiring within `certificate_warning`.
    pub certificates: bool,
    /// The state directory or a `document_dir` filling up.
    pub disk: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            source_failing: true,
            pipeline_stopped: true,
            database_outage: true,
            dead_letters: true,
            certificates: true,
            disk: true,
        }
    }
}

/// One alert rule: a bounded label for notices, metrics and notifier filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    SourceFailing,
    PipelineStopped,
    DatabaseOutage,
    DeadLetters,
    Certificates,
    Disk,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::SourceFailing,
        Rule::PipelineStopped,
        Rule::DatabaseOutage,
        Rule::DeadLetters,
        Rule::Certificates,
        Rule::Disk,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::SourceFailing => "source_failing",
            Rule::PipelineStopped => "pipeline_stopped",
            Rule::DatabaseOutage => "database_outage",
            Rule::DeadLetters => "dead_letters",
            Rule::Certificates => "certificates",
            Rule::Disk => "disk",
        }
    }
}

impl Rules {
    pub fn on(&self, r: Rule) -> bool {
        match r {
            Rule::SourceFailing => self.source_failing,
            Rule::PipelineStopped => self.pipeline_stopped,
            Rule::DatabaseOutage => self.database_outage,
            Rule::DeadLetters => self.dead_letters,
            Rule::Certificates => self.certificates,
            Rule::Disk => self.disk,
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only to a relay on this machine (loopback).
    None,
}

/// `[alerts.email]`: alerts by e-mail through an SMTP relay.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (checked against its certificate).
    pub server: String,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    /// Environment variables holding the SMTP login (both or neither).
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// The sender, e.g. `oscarflow <oscarflow@clinic.example>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Only these rules' notices (default: all).
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
}

/// `[alerts.webhook]`: a JSON POST with a `text` field (Slack, Mattermost, Teams, Google
/// Chat and most chat tools take it as is) and the notice's fields under `oscarflow`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Environment variable holding the URL (chat tools' webhook URLs are secrets).
    #[serde(default)]
    pub url_env: Option<String>,
    /// The URL, when it holds no secret (an internal relay). `url_env` wins.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding a bearer token sent as `Authorization`.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// Only these rules' notices (default: all).
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
}

/// `[alerts.sms]`: a text to the on-call number(s) through RingCentral.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// The clinic's SMS-capable RingCentral number.
    pub from: String,
    /// The on-call number(s).
    pub to: Vec<String>,
    /// Only these rules' notices (default: every rule but the dead-letter digest, which is
    /// for e-mail and chat).
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
    /// The RingCentral connection (`[alerts.sms.ringcentral]`), as the RingCentral sinks'.
    pub ringcentral: RcConfig,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Whether `host` is this machine (`localhost`, `127.0.0.0/8`, `::1`).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl AlertsConfig {
    /// Settings out of range: `(key, problem)`, keys as written in the file (for positions).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        for (key, d) in [
            ("evaluate_every", self.evaluate_every),
            ("dead_letter_digest", self.dead_letter_digest),
            ("certificate_check_every", self.certificate_check_every),
            ("retry_for", self.retry_for),
        ] {
            if d.is_zero() {
                v.push((key, format!("alerts: {key} must be above zero")));
            }
        }
        if !(0.0..=100.0).contains(&self.disk_min_free_percent) {
            v.push((
                "disk_min_free_percent",
                "alerts: disk_min_free_percent must be between 0 and 100".into(),
            ));
        }
        if let Some(u) = &self.console_url {
            match url::Url::parse(u) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => v.push((
                    "console_url",
                    "alerts: console_url must be an http(s) URL".into(),
                )),
            }
        }
        if let Some(e) = &self.email {
            if e.server.trim().is_empty() {
                v.push(("server", "alerts.email: server must be set".into()));
            }
            if e.tls == SmtpTls::None && !is_loopback_host(&e.server) {
                v.push((
                    "tls",
                    "alerts.email: tls = \"none\" is only allowed to a relay on loopback".into(),
                ));
            }
            if e.username_env.is_some() != e.password_env.is_some() {
                v.push((
                    "username_env",
                    "alerts.email: set both username_env and password_env, or neither".into(),
                ));
            }
            if e.from.parse::<lettre::message::Mailbox>().is_err() {
                v.push(("from", "alerts.email: from is not an e-mail address".into()));
            }
            if e.to.is_empty() {
                v.push(("to", "alerts.email: to needs at least one address".into()));
            }
            if e.to
                .iter()
                .any(|t| t.parse::<lettre::message::Mailbox>().is_err())
            {
                v.push((
                    "to",
                    "alerts.email: to holds something that is not an e-mail address".into(),
                ));
            }
            if e.timeout.is_zero() {
                v.push(("timeout", "alerts.email: timeout must be above zero".into()));
            }
        }
        if let Some(w) = &self.webhook {
            match (&w.url_env, &w.url) {
                (None, None) => v.push((
                    "webhook",
                    "alerts.webhook: set url_env (or url, when it holds no secret)".into(),
                )),
                (_, Some(u)) if w.url_env.is_none() => {
                    if let Some(p) = webhook_url_problem(u) {
                        v.push(("url", format!("alerts.webhook: url {p}")));
                    }
                }
                _ => {}
            }
            if w.timeout.is_zero() {
                v.push((
                    "timeout",
                    "alerts.webhook: timeout must be above zero".into(),
                ));
            }
        }
        if let Some(s) = &self.sms {
            if crate::ringcentral::phone::to_e164(&s.from).is_err() {
                v.push((
                    "from",
                    "alerts.sms: from must be the clinic's SMS number (North American)".into(),
                ));
            }
            if s.to.is_empty() {
                v.push(("to", "alerts.sms: to needs at least one number".into()));
            }
            if s.to
                .iter()
                .any(|t| crate::ringcentral::phone::to_e164(t).is_err())
            {
                v.push((
                    "to",
                    "alerts.sms: to holds something that is not a North American number".into(),
                ));
            }
            for p in s.ringcentral.validate() {
                v.push(("ringcentral", format!("alerts.sms.ringcentral: {p}")));
            }
        }
        v
    }

    /// Every environment variable the notifiers read: `(key, variable)`.
    pub fn env_refs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(e) = &self.email {
            v.extend(e.username_env.clone().map(|x| ("username_env", x)));
            v.extend(e.password_env.clone().map(|x| ("password_env", x)));
        }
        if let Some(w) = &self.webhook {
            v.extend(w.url_env.clone().map(|x| ("url_env", x)));
            v.extend(w.token_env.clone().map(|x| ("token_env", x)));
        }
        if let Some(s) = &self.sms {
            for (k, var) in s.ringcentral.env_refs() {
                v.push((k, var.get_ref().clone()));
            }
        }
        v
    }

    /// The state directory's and every `document_dir`'s free-space floor in bytes, from
    /// `disk_min_free_mib`.
    pub fn disk_min_free_bytes(&self) -> u64 {
        self.disk_min_free_mib.saturating_mul(1024 * 1024)
    }
}

/// What is wrong with a webhook URL, if anything: it must be https, or http on loopback.
pub(crate) fn webhook_url_problem(u: &str) -> Option<&'static str> {
    match url::Url::parse(u) {
        Ok(p) if p.scheme() == "https" => None,
        Ok(p) if p.scheme() == "http" && p.host_str().is_some_and(is_loopback_host) => None,
        Ok(_) => Some("must be https (http only on loopback)"),
        Err(_) => Some("is not a URL"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertsConfig, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            alerts: AlertsConfig,
        }
        toml_edit::de::from_str::<File>(text)
            .map(|f| f.alerts)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_alert_on_every_rule_with_a_thirty_day_certificate_warning() {
        let c = parse("[alerts]\n").unwrap();
        assert_eq!(c, AlertsConfig::default());
        assert!(Rule::ALL.iter().all(|r| c.rules.on(*r)));
        assert_eq!(c.certificate_warning, Duration::from_secs(30 * 86_400));
        assert!(c.problems().is_empty());
    }

    #[test]
    fn the_readme_example_is_a_valid_alerts_table() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\n[alerts]\n")
            .expect("the README's example")
            + 8;
        let len = readme[start..].find("```").expect("its end");
        let c = parse(&readme[start..start + len]).unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert!(c.email.is_some() && c.webhook.is_some() && c.sms.is_some());
    }

    #[test]
    fn unknown_keys_in_alerts_and_its_notifiers_are_refused() {
        let e = parse("[alerts]\nevaluate_evry = \"5s\"\n").unwrap_err();
        assert!(e.contains("evaluate_evry"), "{e}");
        let e = parse(
            "[alerts.email]\nserver = \"smtp.example\"\nfrom = \"a@b.example\"\nto = [\"c@d.example\"]\npassword = \"hunter2\"\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown field `password`"), "{e}");
        let e = parse("[alerts.rules]\nsource_failng = false\n").unwrap_err();
        assert!(e.contains("source_failng"), "{e}");
    }

    #[test]
    fn plain_smtp_off_loopback_and_plain_http_webhooks_off_loopback_are_refused() {
        let c = parse(
            "[alerts.email]\nserver = \"smtp.example\"\ntls = \"none\"\nfrom = \"a@b.example\"\nto = [\"c@d.example\"]\n[alerts.webhook]\nurl = \"http://chat.example/hook\"\n",
        )
        .unwrap();
        let p = c.problems();
        assert!(p.iter().any(|(k, _)| *k == "tls"), "{p:?}");
        assert!(p.iter().any(|(k, _)| *k == "url"), "{p:?}");
        let c = parse(
            "[alerts.email]\nserver = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"a@b.example\"\nto = [\"c@d.example\"]\n[alerts.webhook]\nurl = \"http://127.0.0.1:9/hook\"\n",
        )
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn secrets_are_named_by_environment_variables() {
        let c = parse(
            "[alerts.email]\nserver = \"smtp.example\"\nusername_env = \"SMTP_USER\"\npassword_env = \"SMTP_PASSWORD\"\nfrom = \"a@b.example\"\nto = [\"c@d.example\"]\n[alerts.webhook]\nurl_env = \"HOOK_URL\"\ntoken_env = \"HOOK_TOKEN\"\n",
        )
        .unwrap();
        let vars: Vec<String> = c.env_refs().into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            vars,
            ["SMTP_USER", "SMTP_PASSWORD", "HOOK_URL", "HOOK_TOKEN"]
        );
        let c = parse(
            "[alerts.email]\nserver = \"smtp.example\"\nusername_env = \"SMTP_USER\"\nfrom = \"a@b.example\"\nto = [\"c@d.example\"]\n",
        )
        .unwrap();
        assert!(c.problems().iter().any(|(k, _)| *k == "username_env"));
    }
}
