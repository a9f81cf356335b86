//! `oscar_appointments`, `oscar_lab_ready` and `oscar_appointment_confirmations`: text
//! messages produced from OSCAR's own tables (and, for confirmations, from the events the
//! appointment sink records)
//! into our outbox (`oscarflow_sms_outbox`) and offered, as [`SmsJob`]s, to a sink that sends
//! them (`ringcentral_sms`). All are one queue — one table, one claim protocol, the round of
//! [`super::queue`] — fed by different producers, so they share this folder: `reminders.rs`,
//! `lab_ready.rs` and `confirmations.rs` are the producers, this file the queue.
//!
//! **Producers.** *Reminders* read OSCAR's `appointment` rows starting between `min_notice`
//! and `lead_time` from now (clinic local time), skipping cancelled and no-show statuses,
//! inactive charts and patients who opted out. *Lab-ready notices* are made for labs filed to
//! a patient once a provider acknowledged them (or once imported), for labs that arrived after
//! the notices were switched on. Each message has a `dedupe_key` (`reminder:<appointment_no>`,
//! `lab_ready:<lab_no>`) that is unique in the table, so a producer running every minute, or
//! in two daemons, makes each message once. A chart without a usable mobile number still gets
//! its row, with the reason and no number: the sink refuses it and it lands in the dead-letter
//! store as `invalid_phone` (`dlq retry` looks the number up again once the chart is fixed).
//!
//! **Phases of a round.** (1) produce, take over claims of stopped processes, look up texts
//! whose send broke off; (2) inside the sending hours only: claim queued texts of this kind
//! (checking the opt-out once more: a patient who opted out since is `skipped`) and send what
//! this source holds; (3) poll the delivery status of sent texts for `status_poll_for`.
//!
//! **Release.** The sink records each outcome on the row (sent, delivered, failed with
//! RingCentral's code, a STOP recorded as an opt-out). A text whose job was dead-lettered is
//! released here once the dead letter is durable: `failed`, with the reason.
//!
//! **Privacy.** Message texts come from templates that can only name the clinic, a date and a
//! time — never the patient. Logs name outbox ids, appointment and demographic numbers; never
//! phone numbers, names or texts.

mod config;
mod confirmations;
mod lab_ready;
mod reminders;

pub use config::{
    ConfirmationConfig, LabReadyConfig, LabReadyWhen, ReminderConfig, TextKind, TextSourceConfig,
};

use async_trait::async_trait;
use chrono::{Local, NaiveDateTime, NaiveTime, TimeZone};

use super::queue::{Batch, Due, Queue};
use crate::ack::{BatchOutcome, BatchStatus};
use crate::dead_letter::ReasonCode;
use crate::jobs::claim::{cut, db, set_outbox_state, unix_now};
use crate::jobs::{OutboundError, SmsJob, Step};
use crate::oscar::contact::{self, ContactRules, Reach};
use crate::sources::pull::parse_time_of_day;
use crate::store::{is_unique_violation, now_sql, Store};

const PRODUCE_AND_LOOK_UP: usize = 0;
const SEND: usize = 1;
const TRACK: usize = 2;

/// The text queue of one kind.
pub struct TextQueue {
    cfg: TextSourceConfig,
    kind: TextKind,
    rules: ContactRules,
    store: Store,
}

/// What producing did this round.
#[derive(Default)]
struct Produced {
    queued: u32,
    opted_out: u32,
}

impl TextQueue {
    pub fn new(cfg: TextSourceConfig, kind: TextKind, store: Store) -> Self {
        TextQueue {
            rules: cfg.contact(),
            cfg,
            kind,
            store,
        }
    }

    fn column(&self) -> &'static str {
        self.kind.column()
    }

    fn job(&self, outbox_id: i64, demographic_no: i64, owner: &str, step: Step) -> Due<SmsJob> {
        Due {
            row: outbox_id,
            job: SmsJob {
                outbox_id,
                kind: self.column().to_string(),
                demographic_no,
                owner: owner.to_string(),
                lease_secs: self.cfg.claim_timeout.as_secs().max(1),
                step,
            },
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

    /// Queues one message for `demographic_no` unless it exists or the patient opted out.
    async fn produce(
        &self,
        key: String,
        demographic_no: i64,
        body: String,
        p: &mut Produced,
    ) -> Result<(), OutboundError> {
        if self.known(&key).await? {
            return Ok(());
        }
        let (to, error) = match contact::reach(&self.store, &self.rules, demographic_no).await? {
            Reach::OptedOut => {
                p.opted_out += 1;
                return Ok(());
            }
            Reach::Number(to) => (to, None),
            Reach::Invalid(reason) => (String::new(), Some(reason)),
        };
        let now = now_sql();
        let r = sqlx::query("INSERT INTO oscarflow_sms_outbox (kind, dedupe_key, demographic_no, to_number, body, state, owner, rc_message_id, attempts, last_error, claimed_unix, first_claimed_unix, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', NULL, NULL, 0, ?, NULL, NULL, ?, ?)")
            .bind(self.column())
            .bind(&key)
            .bind(demographic_no)
            .bind(&to)
            .bind(&body)
            .bind(error.as_deref())
            .bind(&now)
            .bind(&now)
            .execute(&self.store.pool)
            .await;
        match r {
            // A row without a number is counted when the sink refuses it (`invalid`).
            Ok(_) if error.is_none() => p.queued += 1,
            Ok(_) => {
                tracing::warn!(queue = %self.cfg.name, kind = self.column(), demographic_no, "The patient's number is not usable; the text will be dead-lettered.");
            }
            Err(e) if is_unique_violation(&e) => {} // another producer was first
            Err(e) => return Err(db("queue a text message")(e)),
        }
        Ok(())
    }

    /// Claims whose owner stopped refreshing them: `sending`/`unknown` ones are looked up
    /// before any send, `sent` ones tracked. Then refreshes this owner's `sent` claims.
    async fn take_over_stale(&self, owner: &str) -> Result<(), OutboundError> {
        let limit = unix_now() - self.cfg.claim_timeout.as_secs() as i64;
        for (from, to) in [("'sending', 'unknown'", "unknown"), ("'sent'", "sent")] {
            sqlx::query(&format!("UPDATE oscarflow_sms_outbox SET owner = ?, state = '{to}', claimed_unix = ?, updated_at = ? WHERE kind = ? AND state IN ({from}) AND owner <> ? AND claimed_unix < ?"))
                .bind(owner)
                .bind(unix_now())
                .bind(now_sql())
                .bind(self.column())
                .bind(owner)
                .bind(limit)
                .execute(&self.store.pool)
                .await
                .map_err(db("take over stale claims"))?;
        }
        sqlx::query("UPDATE oscarflow_sms_outbox SET claimed_unix = ? WHERE owner = ? AND state = 'sent' AND kind = ?")
            .bind(unix_now())
            .bind(owner)
            .bind(self.column())
            .execute(&self.store.pool)
            .await
            .map_err(db("refresh tracked claims"))?;
        Ok(())
    }

    async fn unknown(&self, owner: &str) -> Result<Vec<Due<SmsJob>>, OutboundError> {
        let settle_before = unix_now() - self.cfg.unknown_settle_after.as_secs() as i64;
        let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT id, COALESCE(demographic_no, 0), COALESCE(first_claimed_unix, 0), COALESCE(claimed_unix, 0) FROM oscarflow_sms_outbox WHERE state = 'unknown' AND owner = ? AND kind = ? ORDER BY id",
        )
        .bind(owner)
        .bind(self.column())
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read unknown sends"))?;
        Ok(rows
            .into_iter()
            .map(|(id, demo, first, claimed)| {
                let step = Step::LookUp {
                    since_unix: first - 300,
                    settled: claimed <= settle_before,
                };
                self.job(id, demo, owner, step)
            })
            .collect())
    }

    /// Claims queued texts of this kind (a patient who opted out since is `skipped`).
    async fn claim(&self, owner: &str) -> Result<(u32, u32), OutboundError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, COALESCE(demographic_no, 0) FROM oscarflow_sms_outbox WHERE state = 'queued' AND kind = ? ORDER BY id LIMIT ?",
        )
        .bind(self.column())
        .bind(i64::from(self.cfg.batch))
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read queued texts"))?;
        let (mut claimed, mut skipped) = (0, 0);
        for (id, demo) in rows {
            let now = unix_now();
            // Of two daemons, one moves the row out of `queued`.
            let r = sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'sending', owner = ?, claimed_unix = ?, first_claimed_unix = COALESCE(first_claimed_unix, ?), updated_at = ? WHERE id = ? AND state = 'queued'")
                .bind(owner)
                .bind(now)
                .bind(now)
                .bind(now_sql())
                .bind(id)
                .execute(&self.store.pool)
                .await
                .map_err(db("claim a text"))?;
            if r.rows_affected() != 1 {
                continue;
            }
            claimed += 1;
            if demo > 0 && contact::opted_out(&self.store, &self.rules, demo).await? {
                self.set(
                    id,
                    "skipped",
                    Some("the patient opted out before it was sent"),
                )
                .await?;
                skipped += 1;
            }
        }
        Ok((claimed, skipped))
    }

    async fn owned(
        &self,
        owner: &str,
        state: &str,
    ) -> Result<Vec<(i64, i64, Option<i64>, i64)>, OutboundError> {
        sqlx::query_as(
            "SELECT id, COALESCE(demographic_no, 0), rc_message_id, COALESCE(first_claimed_unix, 0) FROM oscarflow_sms_outbox WHERE state = ? AND owner = ? AND kind = ? ORDER BY id",
        )
        .bind(state)
        .bind(owner)
        .bind(self.column())
        .fetch_all(&self.store.pool)
        .await
        .map_err(db("read claimed texts"))
    }

    async fn set(&self, id: i64, state: &str, error: Option<&str>) -> Result<(), OutboundError> {
        set_outbox_state(&self.store, id, state, error).await
    }
}

#[async_trait]
impl Queue for TextQueue {
    type Job = SmsJob;

    fn kind(&self) -> &'static str {
        "sms"
    }
    fn name(&self) -> &str {
        &self.cfg.name
    }
    fn table(&self) -> &'static str {
        "oscarflow_sms_outbox"
    }
    fn phases(&self) -> usize {
        3
    }

    async fn due(&self, owner: &str, phase: usize) -> Result<Batch<SmsJob>, OutboundError> {
        match phase {
            PRODUCE_AND_LOOK_UP => {
                let mut p = Produced::default();
                match self.kind {
                    TextKind::Reminders => {
                        reminders::produce(self, Local::now().naive_local(), &mut p).await?
                    }
                    TextKind::LabReady => lab_ready::produce(self, &mut p).await?,
                    TextKind::Confirmations => {
                        confirmations::produce(self, Local::now().naive_local(), &mut p).await?
                    }
                }
                self.take_over_stale(owner).await?;
                Ok(Batch {
                    claimed: 0,
                    counts: vec![("queued", p.queued), ("opted_out", p.opted_out)],
                    jobs: self.unknown(owner).await?,
                })
            }
            SEND => {
                if !within(&self.cfg.send_between, Local::now().time()) {
                    return Ok(Batch::of(Vec::new()));
                }
                let (claimed, skipped) = self.claim(owner).await?;
                let jobs = self
                    .owned(owner, "sending")
                    .await?
                    .into_iter()
                    .map(|(id, demo, _, _)| self.job(id, demo, owner, Step::Send))
                    .collect();
                Ok(Batch {
                    claimed,
                    counts: vec![("opted_out", skipped)],
                    jobs,
                })
            }
            TRACK => {
                let give_up = unix_now() - self.cfg.status_poll_for.as_secs() as i64;
                let mut jobs = Vec::new();
                for (id, demo, message, first) in self.owned(owner, "sent").await? {
                    let Some(message_id) = message else { continue };
                    if first < give_up {
                        self.set(id, "sent_unconfirmed", None).await?;
                        continue;
                    }
                    jobs.push(self.job(id, demo, owner, Step::Track { message_id }));
                }
                Ok(Batch::of(jobs))
            }
            _ => Ok(Batch::of(Vec::new())),
        }
    }

    async fn settled(
        &self,
        owner: &str,
        due: &Due<SmsJob>,
        outcome: BatchOutcome,
    ) -> Result<Option<&'static str>, OutboundError> {
        let id = due.job.outbox_id;
        let row: Option<(String, Option<String>, Option<String>, i64)> = sqlx::query_as(
            "SELECT state, owner, last_error, attempts FROM oscarflow_sms_outbox WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(db("read the text's claim"))?;
        let Some((state, holder, last_error, attempts)) = row else {
            return Ok(None);
        };
        if holder.as_deref() != Some(owner) {
            return Ok(None);
        }
        Ok(match outcome.status {
            BatchStatus::DeadLettered => {
                let reason = crate::jobs::release_reason(&outcome, last_error, attempts);
                let r = sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'failed', last_error = ?, updated_at = ? WHERE id = ? AND owner = ? AND state IN ('sending', 'unknown', 'sent')")
                    .bind(cut(&reason, 255))
                    .bind(now_sql())
                    .bind(id)
                    .bind(owner)
                    .execute(&self.store.pool)
                    .await
                    .map_err(db("record a failed text"))?;
                (r.rows_affected() == 1).then_some(
                    if outcome.reason == Some(ReasonCode::InvalidPhone) {
                        "invalid"
                    } else {
                        "failed"
                    },
                )
            }
            BatchStatus::Delivered => match (due.job.step, state.as_str()) {
                (Step::Send, "sent") => Some("sent"),
                (Step::LookUp { .. }, "sent") => Some("adopted"),
                (Step::Track { .. }, "delivered") => Some("delivered"),
                (Step::Track { .. }, "failed") => Some("failed"),
                _ => None,
            },
            BatchStatus::Failed => None,
        })
    }

    async fn pending(&self) -> Result<u32, OutboundError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM oscarflow_sms_outbox WHERE kind = ? AND state IN ('queued', 'sending', 'unknown', 'sent')",
        )
        .bind(self.column())
        .fetch_one(&self.store.pool)
        .await
        .map_err(db("count pending"))?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn let_go(&self, owner: &str) -> Result<(), OutboundError> {
        sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'queued', owner = NULL, updated_at = ? WHERE owner = ? AND state = 'sending' AND kind = ?")
            .bind(now_sql())
            .bind(owner)
            .bind(self.column())
            .execute(&self.store.pool)
            .await
            .map(|_| ())
            .map_err(db("let go of claims"))
    }

    async fn requeue(&self, job: &SmsJob) -> Result<bool, OutboundError> {
        // The number is looked up again: the clinic may have fixed the chart.
        let to = match contact::reach(&self.store, &self.rules, job.demographic_no).await? {
            Reach::Number(n) => n,
            Reach::OptedOut => return Ok(false),
            Reach::Invalid(reason) => return Err(OutboundError::document(reason)),
        };
        let r = sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'queued', to_number = ?, owner = NULL, attempts = 0, last_error = NULL, updated_at = ? WHERE id = ? AND state = 'failed'")
            .bind(&to)
            .bind(now_sql())
            .bind(job.outbox_id)
            .execute(&self.store.pool)
            .await
            .map_err(db("queue the text again"))?;
        Ok(r.rows_affected() == 1)
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

/// Fills a template (only `{clinic}`, `{date}`, `{time}`).
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

/// `[sources.<id>] type = "oscar_appointments"`: appointment reminders.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct OscarAppointmentsConfig(pub TextSourceConfig);

/// `[sources.<id>] type = "oscar_lab_ready"`: lab-ready notices.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct OscarLabReadyConfig(pub TextSourceConfig);

/// `[sources.<id>] type = "oscar_appointment_confirmations"`: texts confirming what a
/// scheduling feed (`oscar_appointment`) booked, moved or cancelled.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(transparent)]
pub struct OscarAppointmentConfirmationsConfig(pub TextSourceConfig);

/// The source of `cfg` with producer `kind` (`type_name` for provenance).
fn text_source(
    type_name: &'static str,
    cfg: &TextSourceConfig,
    kind: TextKind,
    cx: &super::SourceBuildContext,
) -> super::BuiltSource {
    let s = super::queue::QueueSource::new(
        type_name,
        TextQueue::new(cfg.clone(), kind, cx.store.clone()),
        crate::jobs::claim::owner_id(&cfg.name),
        cfg.poll_interval,
    );
    super::polling::<SmsJob, _>(s, cx)
}

/// `dlq retry` of a text: its row back in the queue, the number looked up again.
async fn requeue_text(
    cfg: &TextSourceConfig,
    kind: TextKind,
    store: &Store,
    raw: &[u8],
) -> Result<bool, OutboundError> {
    match serde_json::from_slice(raw) {
        Ok(job) => {
            TextQueue::new(cfg.clone(), kind, store.clone())
                .requeue(&job)
                .await
        }
        Err(_) => Err(OutboundError::database(
            "the dead letter does not hold a text-message job",
        )),
    }
}

macro_rules! text_source_type {
    ($cfg:ident, $kind:expr, $name:literal) => {
        #[async_trait]
        impl super::SourceComponent for $cfg {
            fn output_port(&self) -> crate::payload::PortType {
                crate::payload::PortType::SmsJob
            }
            fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
                self.0.validate($kind)
            }
            fn build(
                &self,
                cx: &super::SourceBuildContext,
            ) -> Result<super::BuiltSource, super::SourceError> {
                Ok(text_source($name, &self.0, $kind, cx))
            }
            fn consumes(&self) -> (&'static str, String) {
                ("text-message queue", $kind.column().to_string())
            }
            fn is_queue(&self) -> bool {
                true
            }
            async fn requeue(
                &self,
                store: &Store,
                raw: &[u8],
            ) -> Option<Result<bool, OutboundError>> {
                Some(requeue_text(&self.0, $kind, store, raw).await)
            }
        }
    };
}

text_source_type!(
    OscarAppointmentsConfig,
    TextKind::Reminders,
    "oscar_appointments"
);
text_source_type!(OscarLabReadyConfig, TextKind::LabReady, "oscar_lab_ready");
text_source_type!(
    OscarAppointmentConfirmationsConfig,
    TextKind::Confirmations,
    "oscar_appointment_confirmations"
);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn a_reminder_names_the_clinic_the_day_and_the_time() {
        let at = NaiveDate::from_ymd_opt(2026, 11, 23)
            .unwrap()
            .and_hms_opt(10, 30, 0)
            .unwrap();
        assert_eq!(
            render(&ReminderConfig::default().template, "Testville Clinic", Some(at)),
            "Reminder from Testville Clinic: you have an appointment on Mon Nov 23 at 10:30 AM. Reply STOP to opt out."
        );
    }

    #[test]
    fn texts_go_out_only_inside_the_sending_hours() {
        let at = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let hours = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (day, night, any) = (
            hours(&["08:00", "20:00"]),
            hours(&["22:00", "06:00"]),
            hours(&[]),
        );
        assert!(within(&day, at(8, 0)) && within(&day, at(19, 59)));
        assert!(!within(&day, at(3, 0)) && !within(&day, at(20, 0)));
        assert!(
            within(&night, at(23, 0)) && within(&night, at(5, 0)) && !within(&night, at(12, 0))
        );
        assert!(within(&any, at(3, 0)));
    }
}
