//! `TextSourceConfig`: the configuration of the text-message queue sources
//! (`oscar_appointments`, `oscar_lab_ready`; serde, `deny_unknown_fields`, a pure
//! `validate`).

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;

use crate::oscar::contact::ContactRules;
use crate::sources::pull::parse_time_of_day;

/// `[sources.<id>] type = "oscar_appointments"` (with an optional `[sources.<id>.reminders]`)
/// or `type = "oscar_lab_ready"` (with an optional `[sources.<id>.lab_ready]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextSourceConfig {
    /// A name for logs and metrics; the lab-ready start is kept under it.
    pub name: String,
    /// The clinic name the templates may use (`{clinic}`).
    pub clinic: String,
    #[serde(
        default = "default_interval",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub poll_interval: Duration,
    /// Texts claimed per round.
    #[serde(default = "default_batch")]
    pub batch: u32,
    #[serde(
        default = "crate::jobs::claim::defaults::claim_timeout",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub claim_timeout: Duration,
    #[serde(
        default = "crate::jobs::claim::defaults::settle",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub unknown_settle_after: Duration,
    /// A `demographicExt` key whose truthy value (`yes`, `true`, `1`, `y`) means "no texts".
    #[serde(default = "default_opt_out_key")]
    pub opt_out_ext_key: Option<String>,
    /// The `demographicExt` key of the mobile number (OSCAR's cell phone field).
    #[serde(default = "default_cell_key")]
    pub cell_ext_key: String,
    /// Fall back to `demographic.phone` when there is no mobile number (often a landline).
    #[serde(default)]
    pub fallback_to_phone: bool,
    /// Stop polling a sent message's delivery status after this long.
    #[serde(
        default = "default_status_for",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub status_poll_for: Duration,
    /// Local hours texts may go out, `["08:00", "20:00"]` by default; queued texts wait
    /// outside them. `[]`: any time.
    #[serde(default = "default_send_between")]
    pub send_between: Vec<String>,
    #[serde(default)]
    pub reminders: Option<ReminderConfig>,
    #[serde(default)]
    pub lab_ready: Option<LabReadyConfig>,
    #[serde(default)]
    pub confirmations: Option<ConfirmationConfig>,
}

/// `[sources.<id>.confirmations]` of an `oscar_appointment_confirmations` source: the text
/// for each event a scheduling feed records. `{clinic}`, `{date}`, `{time}`; an empty
/// template sends nothing for that event.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConfirmationConfig {
    pub booked: String,
    pub rescheduled: String,
    pub cancelled: String,
}

impl Default for ConfirmationConfig {
    fn default() -> Self {
        ConfirmationConfig {
            booked: "{clinic}: your appointment is booked for {date} at {time}. Reply STOP to opt out.".into(),
            rescheduled: "{clinic}: your appointment has moved to {date} at {time}. Reply STOP to opt out.".into(),
            cancelled: "{clinic}: your appointment on {date} at {time} is cancelled. Please call the clinic to rebook.".into(),
        }
    }
}

/// `[sources.<id>.reminders]` of an `oscar_appointments` source.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReminderConfig {
    /// Remind appointments starting up to this long from now.
    #[serde(
        default = "default_lead",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub lead_time: Duration,
    /// …and at least this long from now.
    #[serde(
        default = "default_notice",
        deserialize_with = "crate::config::duration::deserialize_duration"
    )]
    pub min_notice: Duration,
    /// Appointment statuses (first letter of OSCAR's `appointment.status`) that get none.
    #[serde(default = "default_skip")]
    pub skip_statuses: Vec<String>,
    /// `{clinic}`, `{date}`, `{time}`.
    #[serde(default = "default_reminder_text")]
    pub template: String,
}

/// `[sources.<id>.lab_ready]` of an `oscar_lab_ready` source.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabReadyConfig {
    /// `acknowledged`: once a provider acknowledged the lab; `imported`: once filed to the
    /// patient.
    #[serde(default)]
    pub when: LabReadyWhen,
    /// `{clinic}`.
    #[serde(default = "default_lab_text")]
    pub template: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabReadyWhen {
    #[default]
    Acknowledged,
    Imported,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_batch() -> u32 {
    40
}
fn default_send_between() -> Vec<String> {
    vec!["08:00".into(), "20:00".into()]
}
fn default_opt_out_key() -> Option<String> {
    Some("sms_opt_out".into())
}
fn default_cell_key() -> String {
    "demo_cell".into()
}
fn default_status_for() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_lead() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_notice() -> Duration {
    Duration::from_secs(3600)
}
fn default_skip() -> Vec<String> {
    vec!["C".into(), "N".into()]
}
fn default_reminder_text() -> String {
    "Reminder from {clinic}: you have an appointment on {date} at {time}. Reply STOP to opt out."
        .into()
}
fn default_lab_text() -> String {
    "{clinic}: new test results are ready. Please contact the clinic or book a follow-up.".into()
}

/// The placeholders a template may use: none of them identifies the patient.
const PLACEHOLDERS: &[&str] = &["{clinic}", "{date}", "{time}"];

fn check_template(t: &str, what: &str, v: &mut Vec<String>) {
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let after = &rest[i..];
        match PLACEHOLDERS.iter().find(|p| after.starts_with(**p)) {
            Some(p) => rest = &after[p.len()..],
            None => {
                v.push(format!(
                    "{what}: only {{clinic}}, {{date}} and {{time}} may be used"
                ));
                return;
            }
        }
    }
    if t.encode_utf16().count() > 900 {
        v.push(format!("{what}: longer than 900 characters"));
    }
}

impl Default for ReminderConfig {
    fn default() -> Self {
        ReminderConfig {
            lead_time: default_lead(),
            min_notice: default_notice(),
            skip_statuses: default_skip(),
            template: default_reminder_text(),
        }
    }
}

impl Default for LabReadyConfig {
    fn default() -> Self {
        LabReadyConfig {
            when: LabReadyWhen::default(),
            template: default_lab_text(),
        }
    }
}

/// Which producer feeds the queue: the source's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Reminders,
    LabReady,
    /// Confirmations of what a scheduling feed booked, moved or cancelled.
    Confirmations,
}

impl TextKind {
    /// The outbox's `kind` column.
    pub fn column(self) -> &'static str {
        match self {
            TextKind::Reminders => "reminder",
            TextKind::LabReady => "lab_ready",
            TextKind::Confirmations => "confirmation",
        }
    }
}

impl TextSourceConfig {
    /// Every problem of this source as `kind` (`oscar_appointments` or `oscar_lab_ready`).
    pub(crate) fn validate(&self, kind: TextKind) -> Vec<(String, Option<Range<usize>>)> {
        let mut v = Vec::new();
        if self.name.is_empty() || self.name.chars().count() > 40 {
            v.push("name must be 1 to 40 characters".to_string());
        }
        if self.batch == 0 {
            v.push("batch must be at least 1".to_string());
        }
        if self.poll_interval < Duration::from_millis(100) {
            v.push("poll_interval must be at least 100ms".to_string());
        }
        match self.send_between.as_slice() {
            [] => {}
            [a, b] if parse_time_of_day(a).is_some() && parse_time_of_day(b).is_some() => {}
            _ => v.push("send_between must be [] or two HH:MM times".into()),
        }
        if kind != TextKind::Confirmations && self.confirmations.is_some() {
            v.push("[confirmations] belongs to an oscar_appointment_confirmations source".into());
        }
        match kind {
            TextKind::Confirmations => {
                if self.reminders.is_some() || self.lab_ready.is_some() {
                    v.push(
                        "an oscar_appointment_confirmations source takes [confirmations] only"
                            .into(),
                    );
                }
                let c = self.confirmations();
                check_template(&c.booked, "confirmations.booked", &mut v);
                check_template(&c.rescheduled, "confirmations.rescheduled", &mut v);
                check_template(&c.cancelled, "confirmations.cancelled", &mut v);
            }
            TextKind::Reminders => {
                if self.lab_ready.is_some() {
                    v.push("[lab_ready] belongs to an oscar_lab_ready source".into());
                }
                let r = self.reminders();
                check_template(&r.template, "reminders.template", &mut v);
                if r.min_notice >= r.lead_time {
                    v.push("reminders: min_notice must be shorter than lead_time".into());
                }
            }
            TextKind::LabReady => {
                if self.reminders.is_some() {
                    v.push("[reminders] belongs to an oscar_appointments source".into());
                }
                check_template(&self.lab_ready().template, "lab_ready.template", &mut v);
            }
        }
        v.into_iter().map(|m| (m, None)).collect()
    }

    pub fn reminders(&self) -> ReminderConfig {
        self.reminders.clone().unwrap_or_default()
    }

    pub fn lab_ready(&self) -> LabReadyConfig {
        self.lab_ready.clone().unwrap_or_default()
    }

    pub fn confirmations(&self) -> ConfirmationConfig {
        self.confirmations.clone().unwrap_or_default()
    }

    pub fn contact(&self) -> ContactRules {
        ContactRules {
            opt_out_ext_key: self.opt_out_ext_key.clone(),
            cell_ext_key: self.cell_ext_key.clone(),
            fallback_to_phone: self.fallback_to_phone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_may_name_the_clinic_date_and_time_only() {
        let mut v = Vec::new();
        check_template(&default_reminder_text(), "t", &mut v);
        check_template(&default_lab_text(), "t", &mut v);
        assert!(v.is_empty(), "{v:?}");
        check_template("Hi {first_name}, see you {date}", "t", &mut v);
        assert_eq!(v.len(), 1);
        assert!(!v[0].contains("first_name"));
    }

    #[test]
    fn a_source_takes_only_its_own_producer_table() {
        let c: TextSourceConfig =
            toml_edit::de::from_str("name = \"c\"\nclinic = \"C\"\n[lab_ready]\n").unwrap();
        assert_eq!(c.send_between, vec!["08:00", "20:00"]);
        assert!(c.validate(TextKind::LabReady).is_empty());
        let p = c.validate(TextKind::Reminders);
        assert!(
            p.iter().any(|(m, _)| m.contains("oscar_lab_ready")),
            "{p:?}"
        );
        let bad = TextSourceConfig {
            send_between: vec!["8".into()],
            ..c
        };
        assert!(bad
            .validate(TextKind::LabReady)
            .iter()
            .any(|(m, _)| m.contains("send_between")));
    }
}
