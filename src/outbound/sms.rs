//! Text messages through RingCentral SMS (CONTRACTS.md §6): appointment reminders and
//! lab-ready notices, produced from OSCAR's own tables into our outbox table
//! (`oscarflow_sms_outbox`), then sent, tracked to delivery, and kept as the log.
//!
//! **Producers.** *Reminders* read OSCAR's `appointment` rows starting between `min_notice`
//! and `lead_time` from now (clinic local time), skipping cancelled and no-show statuses,
//! inactive charts and patients who opted out (our `oscarflow_sms_optout` table or the
//! configured `demographicExt` key, e.g. `sms_opt_out = yes`). The mobile number comes from
//! OSCAR's `demographicExt` `demo_cell` (optionally falling back to `demographic.phone`) and
//! is normalised to E.164; a number that is missing or unusable goes to the dead-letter store
//! with reason `invalid_phone` (and the outbox row says why). *Lab-ready notices* are made
//! for labs filed to a patient once a provider acknowledged them (or once imported), for labs
//! that arrived after the notices were switched on. Each message has a `dedupe_key`
//! (`reminder:<appointment_no>`, `lab_ready:<lab_no>`) that is unique in the table, so a
//! producer running every minute, or on two servers, makes each message once.
//!
//! **Sending** follows the fax outbox ([`super::fax`]): a row is claimed by a conditional
//! update, the opt-out is checked again right before sending, a send that broke off in
//! transit is looked up in RingCentral (same number and text since the claim) before any new
//! attempt, and the status is polled until `Delivered` or a failure (with RingCentral's
//! `deliveryErrorCode`). A recipient who replied STOP (`SMS-RC-413`) is added to the
//! opt-out table.
//!
//! **Privacy.** Message texts come from templates that can only name the clinic, a date and
//! a time — never the patient. Logs name outbox ids, appointment and demographic numbers;
//! never phone numbers, names or texts.

use std::time::Duration;

use bytes::Bytes;
use chrono::{Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use serde::Deserialize;

use super::OutboundError;
use crate::dead_letter::{DeadLetter, DeadLetterStore, ReasonCode};
use crate::envelope::{sha256, MessageId, Origin, Provenance};
use crate::error::ErrorKind;
use crate::jobs::claim::{
    check_worker, cut, db, owner_id, rfc3339, run_rounds, unix_now, worker_client, ClaimTable,
};
use crate::ringcentral::client::{Body, Group};
use crate::ringcentral::messages::{list_pages, MESSAGE_STORE};
use crate::ringcentral::phone::to_e164;
use crate::ringcentral::{RcClient, RcConfig, RcError};
use crate::shutdown::Shutdown;
use crate::sources::pull::parse_time_of_day;
use crate::store::{is_unique_violation, now_sql, text_column, Store};

const SMS: &str = "/restapi/v1.0/account/~/extension/~/sms";

/// RingCentral's delivery error for a recipient who opted out (replied STOP).
const STOPPED: &str = "SMS-RC-413";

const CLAIMS: ClaimTable = ClaimTable {
    table: "oscarflow_sms_outbox",
    key: "id",
};

/// `[[sms]]` in `oscarflow.toml`: one SMS sender and its producers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// A name for logs and dead letters.
    pub name: String,
    /// The clinic's SMS-capable RingCentral number (E.164), the `from` of every message.
    pub from: String,
    /// The clinic name the templates may use (`{clinic}`).
    pub clinic: String,
    pub ringcentral: RcConfig,
    #[serde(
        default = "default_interval",
        deserialize_with = "crate::config::deserialize_duration"
    )]
    pub poll_interval: Duration,
    #[serde(default = "default_batch")]
    pub batch: u32,
    #[serde(default = "crate::jobs::claim::defaults::attempts")]
    pub max_attempts: u32,
    #[serde(
        default = "crate::jobs::claim::defaults::claim_timeout",
        deserialize_with = "crate::config::deserialize_duration"
    )]
    pub claim_timeout: Duration,
    #[serde(
        default = "crate::jobs::claim::defaults::settle",
        deserialize_with = "crate::config::deserialize_duration"
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
        deserialize_with = "crate::config::deserialize_duration"
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
}

/// `[sms.reminders]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReminderConfig {
    /// Remind appointments starting up to this long from now.
    #[serde(
        default = "default_lead",
        deserialize_with = "crate::config::deserialize_duration"
    )]
    pub lead_time: Duration,
    /// …and at least this long from now.
    #[serde(
        default = "default_notice",
        deserialize_with = "crate::config::deserialize_duration"
    )]
    pub min_notice: Duration,
    /// Appointment statuses (first letter of OSCAR's `appointment.status`) that get none.
    #[serde(default = "default_skip")]
    pub skip_statuses: Vec<String>,
    /// `{clinic}`, `{date}`, `{time}`.
    #[serde(default = "default_reminder_text")]
    pub template: String,
}

/// `[sms.lab_ready]`.
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

impl SmsConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut v = check_worker(&self.name, &self.ringcentral, self.batch, self.max_attempts);
        if to_e164(&self.from).is_err() {
            v.push("from must be the clinic's SMS number (North American)".into());
        }
        match self.send_between.as_slice() {
            [] => {}
            [a, b] if parse_time_of_day(a).is_some() && parse_time_of_day(b).is_some() => {}
            _ => v.push("send_between must be [] or two HH:MM times".into()),
        }
        if let Some(r) = &self.reminders {
            check_template(&r.template, "reminders.template", &mut v);
            if r.min_notice >= r.lead_time {
                v.push("reminders: min_notice must be shorter than lead_time".into());
            }
        }
        if let Some(l) = &self.lab_ready {
            check_template(&l.template, "lab_ready.template", &mut v);
        }
        v
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SmsReport {
    /// Messages queued by the producers this round.
    pub queued: u32,
    /// Appointments or labs passed over because the patient opted out.
    pub opted_out: u32,
    /// Numbers refused (dead-lettered).
    pub invalid: u32,
    pub sent: u32,
    pub adopted: u32,
    pub delivered: u32,
    pub failed: u32,
}

/// The SMS worker.
pub struct SmsOutbox {
    cfg: SmsConfig,
    store: Store,
    client: RcClient,
    owner: String,
    from: String,
    dead_letters: DeadLetterStore,
}

/// A message a producer wants to queue.
struct Outgoing<'a> {
    kind: &'a str,
    key: &'a str,
    demographic_no: i64,
    body: &'a str,
}

/// The patient's number and opt-out state, as OSCAR and our table hold them.
enum Reach {
    OptedOut,
    Invalid(String),
    Number(String),
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "y" | "true" | "1" | "on"
    )
}

impl SmsOutbox {
    pub fn new(cfg: SmsConfig, store: Store) -> Result<Self, OutboundError> {
        let client = worker_client("sms", &cfg.name, cfg.validate(), &cfg.ringcentral)?;
        Ok(Self {
            owner: owner_id(&cfg.name),
            from: to_e164(&cfg.from).unwrap_or_default(),
            dead_letters: DeadLetterStore::new(store.clone()),
            cfg,
            store,
            client,
        })
    }

    /// Rounds every `poll_interval` until shutdown.
    pub async fn run(&self, shutdown: Shutdown) {
        let name = self.cfg.name.clone();
        run_rounds(
            &name,
            self.cfg.poll_interval,
            shutdown,
            |_| self.round(),
            |r: &SmsReport| {
                tracing::info!(sms = %name, queued = r.queued, opted_out = r.opted_out, invalid = r.invalid, sent = r.sent, adopted = r.adopted, delivered = r.delivered, failed = r.failed, "SMS round done.");
                crate::jobs::claim::record_round(
                    "sms",
                    &name,
                    &[
                        ("queued", r.queued),
                        ("opted_out", r.opted_out),
                        ("invalid", r.invalid),
                        ("sent", r.sent),
                        ("adopted", r.adopted),
                        ("delivered", r.delivered),
                        ("failed", r.failed),
                    ],
                );
            },
        )
        .await
    }

    /// One round: produce, settle unknown sends, send what is queued, poll statuses.
    pub async fn round(&self) -> Result<SmsReport, OutboundError> {
        let mut r = SmsReport::default();
        if let Some(rc) = &self.cfg.reminders {
            self.produce_reminders(rc, Local::now().naive_local(), &mut r)
                .await?;
        }
        if let Some(lc) = &self.cfg.lab_ready {
            self.produce_lab_ready(lc, &mut r).await?;
        }
        self.take_over_stale().await?;
        self.settle_unknown(&mut r).await?;
        if within(&self.cfg.send_between, Local::now().time()) {
            self.send_queued(&mut r).await?;
        }
        self.poll_statuses(&mut r).await?;
        Ok(r)
    }

    // ---------------------------------------------------------------------------------
    // Producers
    // ---------------------------------------------------------------------------------

    async fn reach(&self, demographic_no: i64) -> Result<Reach, OutboundError> {
        let opted: Option<i64> = sqlx::query_scalar(
            "SELECT demographic_no FROM oscarflow_sms_optout WHERE demographic_no = ?",
        )
        .bind(demographic_no)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(db("read opt-outs"))?;
        if opted.is_some() {
            return Ok(Reach::OptedOut);
        }
        if let Some(key) = &self.cfg.opt_out_ext_key {
            if let Some(v) = self.ext(demographic_no, key).await? {
                if truthy(&v) {
                    return Ok(Reach::OptedOut);
                }
            }
        }
        let mut raw = self.ext(demographic_no, &self.cfg.cell_ext_key).await?;
        if raw.as_deref().is_none_or(|v| v.trim().is_empty()) && self.cfg.fallback_to_phone {
            let row = sqlx::query("SELECT phone FROM demographic WHERE demographic_no = ?")
                .bind(demographic_no)
                .fetch_optional(&self.store.pool)
                .await
                .map_err(db("read the chart's phone"))?;
            raw = match row {
                Some(r) => text_column(&r, 0).map_err(db("read the chart's phone"))?,
                None => None,
            };
        }
        let raw = raw.unwrap_or_default();
        Ok(match to_e164(&raw) {
            Ok(n) => Reach::Number(n),
            Err(e) => Reach::Invalid(format!("no usable mobile number: {e}")),
        })
    }

    async fn ext(&self, demographic_no: i64, key: &str) -> Result<Option<String>, OutboundError> {
        let row = sqlx::query(
            "SELECT value FROM demographicExt WHERE demographic_no = ? AND key_val = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(demographic_no)
        .bind(key)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(db("read demographicExt"))?;
        match row {
            Some(r) => text_column(&r, 0).map_err(db("read demographicExt")),
            None => Ok(None),
        }
    }

    async fn known(&self, key: &str) -> Result<bool, OutboundError> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT id FROM oscarflow_sms_outbox WHERE dedupe_key = ?")
                .bind(key)
                .fetch_optional(&self.store.pool)
                .await
                .map_err(db("read the outbox"))?;
        Ok(n.is_some())
    }

    /// Inserts one outbox row; false when the key exists (another producer was first).
    async fn enqueue(
        &self,
        m: &Outgoing<'_>,
        to: &str,
        state: &str,
        error: Option<&str>,
    ) -> Result<bool, OutboundError> {
        let now = now_sql();
        let r = sqlx::query("INSERT INTO oscarflow_sms_outbox (kind, dedupe_key, demographic_no, to_number, body, state, owner, rc_message_id, attempts, last_error, claimed_unix, first_claimed_unix, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, 0, ?, NULL, NULL, ?, ?)")
            .bind(m.kind)
            .bind(m.key)
            .bind(m.demographic_no)
            .bind(to)
            .bind(m.body)
            .bind(state)
            .bind(error)
            .bind(&now)
            .bind(&now)
            .execute(&self.store.pool)
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(db("queue a text message")(e)),
        }
    }

    /// Queues one message for `demographic_no` (or records why not).
    async fn produce(
        &self,
        kind: &'static str,
        key: String,
        demographic_no: i64,
        origin: Origin,
        body: String,
        r: &mut SmsReport,
    ) -> Result<(), OutboundError> {
        if self.known(&key).await? {
            return Ok(());
        }
        let m = Outgoing {
            kind,
            key: &key,
            demographic_no,
            body: &body,
        };
        match self.reach(demographic_no).await? {
            Reach::OptedOut => {
                r.opted_out += 1;
            }
            Reach::Number(to) => {
                if self.enqueue(&m, &to, "queued", None).await? {
                    r.queued += 1;
                }
            }
            Reach::Invalid(reason) => {
                if self.enqueue(&m, "", "failed", Some(&reason)).await? {
                    r.invalid += 1;
                    self.dead_letter(kind, origin, demographic_no, &reason)
                        .await?;
                    tracing::warn!(sms = %self.cfg.name, kind, demographic_no, reason = %reason, "No text message: the patient's number is not usable (dead-lettered).");
                }
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        kind: &'static str,
        origin: Origin,
        demographic_no: i64,
        reason: &str,
    ) -> Result<(), OutboundError> {
        let raw = Bytes::from(
            serde_json::json!({"kind": kind, "demographic_no": demographic_no, "origin": origin})
                .to_string(),
        );
        let prov = Provenance {
            pipeline: format!("sms:{}", self.cfg.name).into(),
            source: kind.into(),
            source_kind: "sms_producer".into(),
            origin,
            received_at: time::OffsetDateTime::now_utc(),
            attempt: 1,
            content_sha256: sha256(&raw),
        };
        self.dead_letters
            .put(&DeadLetter {
                id: MessageId::new(),
                provenance: prov.into(),
                part: None,
                raw,
                stage: kind.into(),
                stage_kind: "sms_producer",
                reason: ReasonCode::InvalidPhone,
                error_kind: ErrorKind::Data,
                detail: reason.to_string(),
                attempts: 1,
            })
            .await
            .map(|_| ())
            .map_err(|e| OutboundError::database(format!("dead-lettering a refused number: {e}")))
    }

    async fn produce_reminders(
        &self,
        rc: &ReminderConfig,
        now: NaiveDateTime,
        r: &mut SmsReport,
    ) -> Result<(), OutboundError> {
        let earliest = now + chrono::Duration::from_std(rc.min_notice).unwrap_or_default();
        let latest = now + chrono::Duration::from_std(rc.lead_time).unwrap_or_default();
        let rows = sqlx::query("SELECT a.appointment_no, a.demographic_no, CAST(a.appointment_date AS CHAR), CAST(a.start_time AS CHAR), a.status FROM appointment a JOIN demographic d ON d.demographic_no = a.demographic_no WHERE a.appointment_date >= ? AND a.appointment_date <= ? AND a.demographic_no > 0 AND d.patient_status = 'AC' ORDER BY a.appointment_no")
            .bind(earliest.date().format("%Y-%m-%d").to_string())
            .bind(latest.date().format("%Y-%m-%d").to_string())
            .fetch_all(&self.store.pool)
            .await
            .map_err(db("read appointments"))?;
        for row in rows {
            let read = || -> Result<_, sqlx::Error> {
                Ok((
                    sqlx::Row::try_get::<i64, _>(&row, 0)?,
                    sqlx::Row::try_get::<i64, _>(&row, 1)?,
                    text_column(&row, 2)?.unwrap_or_default(),
                    text_column(&row, 3)?.unwrap_or_default(),
                    text_column(&row, 4)?.unwrap_or_default(),
                ))
            };
            let (appt, demo, date, time, status) = read().map_err(db("read an appointment"))?;
            if rc
                .skip_statuses
                .iter()
                .any(|s| !s.is_empty() && status.starts_with(s.as_str()))
            {
                continue;
            }
            let (Ok(d), Ok(t)) = (
                NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d"),
                NaiveTime::parse_from_str(time.trim(), "%H:%M:%S"),
            ) else {
                continue;
            };
            let starts = d.and_time(t);
            if starts < earliest || starts > latest {
                continue;
            }
            let body = render(&rc.template, &self.cfg.clinic, Some(starts));
            self.produce(
                "reminder",
                format!("reminder:{appt}"),
                demo,
                Origin::QueueRow {
                    table: "appointment".into(),
                    id: appt,
                },
                body,
                r,
            )
            .await?;
        }
        Ok(())
    }

    async fn produce_lab_ready(
        &self,
        lc: &LabReadyConfig,
        r: &mut SmsReport,
    ) -> Result<(), OutboundError> {
        // Only labs that arrive after the notices were switched on.
        let pipeline = format!("sms:{}", self.cfg.name);
        let since: Option<String> = sqlx::query_scalar(
            "SELECT value FROM oscarflow_checkpoint WHERE pipeline = ? AND source = 'lab_ready'",
        )
        .bind(&pipeline)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(db("read the lab-ready start"))?;
        let since: i64 = match since.and_then(|v| v.parse().ok()) {
            Some(n) => n,
            None => {
                let max: Option<i64> =
                    sqlx::query_scalar("SELECT MAX(lab_no) FROM patientLabRouting")
                        .fetch_one(&self.store.pool)
                        .await
                        .map_err(db("read the newest lab"))?;
                let start = max.unwrap_or(0);
                let r = sqlx::query("INSERT INTO oscarflow_checkpoint (pipeline, source, value, updated_at) VALUES (?, 'lab_ready', ?, ?)")
                    .bind(&pipeline)
                    .bind(start.to_string())
                    .bind(now_sql())
                    .execute(&self.store.pool)
                    .await;
                match r {
                    Ok(_) => start,
                    Err(e) if is_unique_violation(&e) => return Ok(()), // another worker
                    Err(e) => return Err(db("save the lab-ready start")(e)),
                }
            }
        };
        let sql = match lc.when {
            LabReadyWhen::Acknowledged => "SELECT DISTINCT p.lab_no, p.demographic_no FROM patientLabRouting p JOIN providerLabRouting r ON r.lab_no = p.lab_no AND r.lab_type = p.lab_type WHERE p.lab_type = 'HL7' AND p.lab_no > ? AND p.demographic_no > 0 AND r.status = 'A' ORDER BY p.lab_no",
            LabReadyWhen::Imported => "SELECT DISTINCT p.lab_no, p.demographic_no FROM patientLabRouting p WHERE p.lab_type = 'HL7' AND p.lab_no > ? AND p.demographic_no > 0 ORDER BY p.lab_no",
        };
        let labs: Vec<(i64, i64)> = sqlx::query_as(sql)
            .bind(since)
            .fetch_all(&self.store.pool)
            .await
            .map_err(db("read filed labs"))?;
        for (lab_no, demo) in labs {
            self.produce(
                "lab_ready",
                format!("lab_ready:{lab_no}"),
                demo,
                Origin::QueueRow {
                    table: "patientLabRouting".into(),
                    id: lab_no,
                },
                render(&lc.template, &self.cfg.clinic, None),
                r,
            )
            .await?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Sending
    // ---------------------------------------------------------------------------------

    async fn take_over_stale(&self) -> Result<(), OutboundError> {
        let limit = unix_now() - self.cfg.claim_timeout.as_secs() as i64;
        sqlx::query("UPDATE oscarflow_sms_outbox SET owner = ?, state = 'unknown', claimed_unix = ?, updated_at = ? WHERE state IN ('sending', 'unknown') AND owner <> ? AND claimed_unix < ?")
            .bind(&self.owner)
            .bind(unix_now())
            .bind(now_sql())
            .bind(&self.owner)
            .bind(limit)
            .execute(&self.store.pool)
            .await
            .map(|_| ())
            .map_err(db("take over stale claims"))
    }

    /// Messages whose send broke off: found in RingCentral (same number and text since the
    /// first claim) → adopted; else, after `unknown_settle_after`, queued again.
    async fn settle_unknown(&self, r: &mut SmsReport) -> Result<(), OutboundError> {
        let rows: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
            "SELECT id, to_number, body, first_claimed_unix, claimed_unix FROM oscarflow_sms_outbox WHERE state = 'unknown' AND owner = ?",
        )
        .bind(&self.owner)
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read unknown sends"))?;
        for (id, to, body, first, claimed) in rows {
            let mut found = None;
            let since = rfc3339(first - 300);
            let listed = list_pages(
                &self.client,
                &[
                    ("messageType", "SMS"),
                    ("direction", "Outbound"),
                    ("dateFrom", &since),
                    ("perPage", "1000"),
                ],
                |records: Vec<SmsMessage>| {
                    found = records.into_iter().find(|m| m.is(&to, &body));
                    found.is_none()
                },
            )
            .await;
            match (listed, found) {
                (Ok(()), Some(m)) => {
                    self.accepted(id, m.id).await?;
                    r.adopted += 1;
                }
                (Ok(()), None) => {
                    if claimed <= unix_now() - self.cfg.unknown_settle_after.as_secs() as i64 {
                        self.set(id, "queued", None).await?;
                    }
                }
                (Err(e), _) => {
                    tracing::warn!(sms = %self.cfg.name, outbox_id = id, error = %e, "Could not look up a text whose send broke off; trying again next round.");
                }
            }
        }
        Ok(())
    }

    async fn send_queued(&self, r: &mut SmsReport) -> Result<(), OutboundError> {
        let rows: Vec<(i64, i64, String, String, i64)> = sqlx::query_as(
            "SELECT id, COALESCE(demographic_no, 0), to_number, body, attempts FROM oscarflow_sms_outbox WHERE state = 'queued' ORDER BY id LIMIT ?",
        )
        .bind(i64::from(self.cfg.batch))
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read queued texts"))?;
        for (id, demo, to, body, attempts) in rows {
            // Claim: of two workers, one moves the row out of `queued`.
            let now = unix_now();
            let claimed = sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'sending', owner = ?, claimed_unix = ?, first_claimed_unix = COALESCE(first_claimed_unix, ?), updated_at = ? WHERE id = ? AND state = 'queued'")
                .bind(&self.owner)
                .bind(now)
                .bind(now)
                .bind(now_sql())
                .bind(id)
                .execute(&self.store.pool)
                .await
                .map_err(db("claim a text"))?;
            if claimed.rows_affected() != 1 {
                continue;
            }
            // The patient may have opted out since the message was queued.
            if demo > 0 && matches!(self.reach(demo).await?, Reach::OptedOut) {
                self.set(
                    id,
                    "skipped",
                    Some("the patient opted out before it was sent"),
                )
                .await?;
                r.opted_out += 1;
                continue;
            }
            let payload = serde_json::json!({
                "from": {"phoneNumber": self.from},
                "to": [{"phoneNumber": to}],
                "text": body,
                "country": {"isoCode": "CA"},
            });
            let send = self.client.call(
                Group::Medium,
                reqwest::Method::POST,
                SMS,
                Body::JsonOnce(payload),
            );
            let held =
                CLAIMS.while_holding(&self.store, id, &self.owner, self.cfg.claim_timeout, send);
            let Some(result) = held.await else {
                continue; // another worker took it over
            };
            match result.and_then(|resp| resp.json::<SmsMessage>()) {
                Ok(m) => {
                    self.accepted(id, m.id).await?;
                    r.sent += 1;
                }
                Err(e) => self.send_failed(id, attempts, e, r).await?,
            }
        }
        Ok(())
    }

    async fn send_failed(
        &self,
        id: i64,
        attempts: i64,
        e: RcError,
        r: &mut SmsReport,
    ) -> Result<(), OutboundError> {
        if e.ambiguous {
            tracing::warn!(sms = %self.cfg.name, outbox_id = id, error = %e, "A text's send broke off in transit; it is looked up before any new attempt.");
            return sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'unknown', claimed_unix = ?, last_error = ?, updated_at = ? WHERE id = ?")
                .bind(unix_now())
                .bind(cut(&e.detail, 255))
                .bind(now_sql())
                .bind(id)
                .execute(&self.store.pool)
                .await
                .map(|_| ())
                .map_err(db("record an unknown send"));
        }
        match e.kind {
            ErrorKind::Fatal => {
                self.set(id, "queued", Some(&e.detail)).await?;
                Err(OutboundError::ringcentral(&e))
            }
            ErrorKind::Data => {
                r.failed += 1;
                self.set(
                    id,
                    "failed",
                    Some(&format!(
                        "RingCentral refused the text: {}",
                        e.code.as_deref().unwrap_or("no error code")
                    )),
                )
                .await
            }
            ErrorKind::Transient => {
                let attempts = attempts + 1;
                if attempts >= i64::from(self.cfg.max_attempts) {
                    r.failed += 1;
                    self.set(
                        id,
                        "failed",
                        Some(&format!("gave up after {attempts} attempts: {}", e.detail)),
                    )
                    .await
                } else {
                    sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'queued', attempts = ?, last_error = ?, updated_at = ? WHERE id = ?")
                        .bind(attempts)
                        .bind(cut(&e.detail, 255))
                        .bind(now_sql())
                        .bind(id)
                        .execute(&self.store.pool)
                        .await
                        .map(|_| ())
                        .map_err(db("count an attempt"))
                }
            }
        }
    }

    async fn accepted(&self, id: i64, message_id: i64) -> Result<(), OutboundError> {
        sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'sent', rc_message_id = ?, last_error = NULL, updated_at = ? WHERE id = ?")
            .bind(message_id)
            .bind(now_sql())
            .bind(id)
            .execute(&self.store.pool)
            .await
            .map(|_| ())
            .map_err(db("record a sent text"))
    }

    async fn set(&self, id: i64, state: &str, error: Option<&str>) -> Result<(), OutboundError> {
        sqlx::query(
            "UPDATE oscarflow_sms_outbox SET state = ?, last_error = ?, updated_at = ? WHERE id = ?",
        )
        .bind(state)
        .bind(error.map(|e| cut(e, 255)))
        .bind(now_sql())
        .bind(id)
        .execute(&self.store.pool)
        .await
        .map(|_| ())
        .map_err(db("update a text's state"))
    }

    /// Delivery status of sent texts, for `status_poll_for` after sending.
    async fn poll_statuses(&self, r: &mut SmsReport) -> Result<(), OutboundError> {
        let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT id, rc_message_id, COALESCE(first_claimed_unix, 0), COALESCE(demographic_no, 0) FROM oscarflow_sms_outbox WHERE state = 'sent' AND rc_message_id IS NOT NULL ORDER BY id LIMIT 200",
        )
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read sent texts"))?;
        for (id, message_id, first, demo) in rows {
            if first < unix_now() - self.cfg.status_poll_for.as_secs() as i64 {
                self.set(id, "sent_unconfirmed", None).await?;
                continue;
            }
            let m: SmsMessage = match self
                .client
                .call(
                    Group::Light,
                    reqwest::Method::GET,
                    &format!("{MESSAGE_STORE}/{message_id}"),
                    Body::None,
                )
                .await
                .and_then(|resp| resp.json())
            {
                Ok(m) => m,
                Err(e) if e.kind == ErrorKind::Fatal => return Err(OutboundError::ringcentral(&e)),
                Err(e) => {
                    tracing::warn!(sms = %self.cfg.name, outbox_id = id, error = %e, "Could not read a text's status; trying again next round.");
                    continue;
                }
            };
            match m.message_status.as_str() {
                "Delivered" => {
                    self.set(id, "delivered", None).await?;
                    r.delivered += 1;
                }
                "DeliveryFailed" | "SendingFailed" => {
                    self.set(
                        id,
                        "failed",
                        Some(&format!(
                            "{}: {}",
                            m.message_status,
                            m.delivery_error_code.as_deref().unwrap_or("no error code")
                        )),
                    )
                    .await?;
                    r.failed += 1;
                    if m.delivery_error_code.as_deref() == Some(STOPPED) && demo > 0 {
                        self.opt_out(demo).await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The patient replied STOP (the carrier refuses further texts): recorded as an opt-out,
    /// so that no further text is even tried.
    async fn opt_out(&self, demographic_no: i64) -> Result<(), OutboundError> {
        let r = sqlx::query("INSERT INTO oscarflow_sms_optout (demographic_no, reason, created_at) VALUES (?, 'replied STOP (SMS-RC-413)', ?)")
            .bind(demographic_no)
            .bind(now_sql())
            .execute(&self.store.pool)
            .await;
        match r {
            Ok(_) => {
                tracing::info!(sms = %self.cfg.name, demographic_no, "The patient opted out of texts at the carrier; recorded.");
                Ok(())
            }
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(db("record an opt-out")(e)),
        }
    }
}

/// Whether `now` (local) is inside `between` (`[from, to]`, which may span midnight; `[]`:
/// always).
fn within(between: &[String], now: NaiveTime) -> bool {
    let [a, b] = between else {
        return true;
    };
    let (Some(a), Some(b)) = (parse_time_of_day(a), parse_time_of_day(b)) else {
        return true;
    };
    let m = chrono::Timelike::hour(&now) * 60 + chrono::Timelike::minute(&now);
    if a <= b {
        (a..b).contains(&m)
    } else {
        m >= a || m < b
    }
}

/// Fills a template (see [`PLACEHOLDERS`]).
fn render(template: &str, clinic: &str, at: Option<NaiveDateTime>) -> String {
    let mut s = template.replace("{clinic}", clinic);
    if let Some(at) = at {
        let local = Local.from_local_datetime(&at).earliest();
        let (date, time) = match local {
            Some(l) => (
                l.format("%a %b %-d").to_string(),
                l.format("%-I:%M %p").to_string(),
            ),
            None => (
                at.format("%a %b %-d").to_string(),
                at.format("%-I:%M %p").to_string(),
            ),
        };
        s = s.replace("{date}", &date).replace("{time}", &time);
    }
    s
}

/// The parts of an SMS message record that sending needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SmsMessage {
    id: i64,
    #[serde(default)]
    message_status: String,
    #[serde(default)]
    delivery_error_code: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    to: Vec<SmsParty>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SmsParty {
    #[serde(default)]
    phone_number: Option<String>,
}

impl SmsMessage {
    fn is(&self, to: &str, text: &str) -> bool {
        self.subject.as_deref() == Some(text)
            && self
                .to
                .iter()
                .any(|p| p.phone_number.as_deref() == Some(to))
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
    fn a_reminder_names_the_clinic_the_day_and_the_time() {
        let at = NaiveDate::from_ymd_opt(2026, 11, 23)
            .unwrap()
            .and_hms_opt(10, 30, 0)
            .unwrap();
        assert_eq!(
            render(&default_reminder_text(), "Testville Clinic", Some(at)),
            "Reminder from Testville Clinic: you have an appointment on Mon Nov 23 at 10:30 AM. Reply STOP to opt out."
        );
    }

    #[test]
    fn texts_go_out_only_inside_the_sending_hours() {
        let cfg: SmsConfig = toml_edit::de::from_str(
            "name = \"c\"\nfrom = \"6045550100\"\nclinic = \"C\"\n[ringcentral]\nclient_id_env = \"A\"\nclient_secret_env = \"B\"\njwt_env = \"C\"\n",
        )
        .unwrap();
        assert_eq!(cfg.send_between, vec!["08:00", "20:00"]);
        let with = |between: &[&str]| SmsConfig {
            send_between: between.iter().map(|s| s.to_string()).collect(),
            ..cfg.clone()
        };
        let at = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let (day, night, any) = (
            with(&["08:00", "20:00"]),
            with(&["22:00", "06:00"]),
            with(&[]),
        );
        let check = |c: &SmsConfig, t| within(&c.send_between, t);
        assert!(check(&day, at(8, 0)) && check(&day, at(19, 59)));
        assert!(!check(&day, at(3, 0)) && !check(&day, at(20, 0)));
        assert!(check(&night, at(23, 0)) && check(&night, at(5, 0)) && !check(&night, at(12, 0)));
        assert!(check(&any, at(3, 0)));
        assert!(day.validate().iter().all(|p| !p.contains("send_between")));
        assert!(with(&["8"])
            .validate()
            .iter()
            .any(|p| p.contains("send_between")));
    }

    #[test]
    fn opt_out_values_are_read_generously() {
        for v in ["yes", "Y", "true", "1", " on "] {
            assert!(truthy(v), "{v}");
        }
        for v in ["no", "0", "", "false"] {
            assert!(!truthy(v), "{v}");
        }
    }
}
