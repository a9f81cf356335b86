//! [`Notice`]: what a notifier sends, and its three renderings (an e-mail's subject and
//! text, a chat message's JSON, a text message).
//!
//! A notice is built only from bounded, PHI-free parts: the rule, pipeline, component and
//! setting names, file paths of configuration (certificates, directories), counts, reason
//! codes, times, the host name and a link to the console. Nothing from a message ever gets
//! here: the types that feed it ([`super::rules`], the dead-letter digest) have no field
//! that could hold one.

use std::time::SystemTime;

use super::config::Rule;

/// Whether an alert starts, recovers, or is a digest (dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeState {
    Firing,
    Resolved,
    Digest,
}

impl NoticeState {
    pub const fn as_str(self) -> &'static str {
        match self {
            NoticeState::Firing => "firing",
            NoticeState::Resolved => "resolved",
            NoticeState::Digest => "digest",
        }
    }
}

/// One notice, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub state: NoticeState,
    pub rule: Rule,
    /// The alert's identity (`source_failing:labs/pull`): the same for its start and its
    /// recovery.
    pub key: String,
    /// One line: what is wrong (or was).
    pub summary: String,
    /// Facts as (name, value): pipeline, component, counts, dates.
    pub details: Vec<(String, String)>,
    /// When the condition began (a digest: its first dead letter).
    pub since: SystemTime,
    /// When the notice was made.
    pub at: SystemTime,
    /// This machine's name.
    pub host: String,
    /// The console page to look at.
    pub link: String,
    /// Starts of this alert held back by the rate limit since the last notice.
    pub held_back: u32,
}

/// `2025-06-01 14:03:22 UTC`.
pub fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("{secs} (unix)"))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `3h 12m`, `45s`.
pub fn span(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

impl Notice {
    fn tag(&self) -> &'static str {
        match self.state {
            NoticeState::Firing => "ALERT",
            NoticeState::Resolved => "RECOVERED",
            NoticeState::Digest => "DIGEST",
        }
    }

    /// An e-mail subject: `[oscarflow ALERT] host: summary`.
    pub fn subject(&self) -> String {
        format!("[oscarflow {}] {}: {}", self.tag(), self.host, self.summary)
    }

    /// The text of an e-mail or a chat message.
    pub fn text(&self) -> String {
        let mut t = format!("{} on {}: {}\n", self.tag(), self.host, self.summary);
        match self.state {
            NoticeState::Firing => t.push_str(&format!("Since: {}\n", utc(self.since))),
            NoticeState::Resolved => {
                let lasted = self
                    .at
                    .duration_since(self.since)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                t.push_str(&format!(
                    "Began: {} (lasted {})\nRecovered: {}\n",
                    utc(self.since),
                    span(lasted),
                    utc(self.at)
                ))
            }
            NoticeState::Digest => {
                t.push_str(&format!("From {} to {}\n", utc(self.since), utc(self.at)))
            }
        }
        for (k, v) in &self.details {
            t.push_str(&format!("{k}: {v}\n"));
        }
        if self.held_back > 0 {
            t.push_str(&format!(
                "Also: this alert started {} more time(s) since its last notice (held back by the rate limit).\n",
                self.held_back
            ));
        }
        t.push_str(&format!("Console: {}\n", self.link));
        t
    }

    /// A text message: one short line and the link.
    pub fn sms_text(&self) -> String {
        format!(
            "oscarflow {} {}: {} {}",
            self.tag(),
            self.host,
            self.summary,
            self.link
        )
    }

    /// The webhook's body: `text` for chat tools, the fields under `oscarflow`.
    pub fn to_json(&self) -> serde_json::Value {
        let details: serde_json::Map<String, serde_json::Value> = self
            .details
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "text": self.text(),
            "oscarflow": {
                "state": self.state.as_str(),
                "rule": self.rule.as_str(),
                "key": self.key,
                "summary": self.summary,
                "since": unix(self.since),
                "at": unix(self.at),
                "host": self.host,
                "link": self.link,
                "held_back": self.held_back,
                "details": details,
            }
        })
    }
}

/// This machine's host name (for notices), or `unknown-host`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for `buf.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "unknown-host".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn notice(state: NoticeState) -> Notice {
        Notice {
            state,
            rule: Rule::SourceFailing,
            key: "source_failing:labs/pull".into(),
            summary: "pipeline labs: source pull failing".into(),
            details: vec![("pipeline".into(), "labs".into())],
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_600),
            host: "gw1".into(),
            link: "http://127.0.0.1:9464/console/pipelines".into(),
            held_back: 0,
        }
    }

    #[test]
    fn every_rendering_names_the_host_and_links_to_the_console() {
        for s in [
            NoticeState::Firing,
            NoticeState::Resolved,
            NoticeState::Digest,
        ] {
            let n = notice(s);
            for text in [n.subject(), n.text(), n.sms_text()] {
                assert!(text.contains("gw1"), "{text}");
            }
            assert!(n.text().contains("/console/pipelines"));
            assert!(n.sms_text().contains("/console/pipelines"));
            let j = n.to_json();
            assert_eq!(j["oscarflow"]["state"], s.as_str());
            assert_eq!(j["oscarflow"]["details"]["pipeline"], "labs");
            assert!(j["text"].as_str().unwrap().contains("pipeline labs"));
        }
        let r = notice(NoticeState::Resolved).text();
        assert!(r.contains("lasted 10m 0s"), "{r}");
        assert!(r.contains("2023-11-14 22:13:20 UTC"), "{r}");
    }

    #[test]
    fn the_host_name_is_never_empty() {
        assert!(!host_name().is_empty());
    }
}
