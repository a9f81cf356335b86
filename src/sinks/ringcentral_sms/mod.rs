//! `ringcentral_sms` (sink): sends the text messages of our outbox ([`SmsJob`]s from
//! `oscar_appointments` and `oscar_lab_ready`) through RingCentral SMS (CONTRACTS.md §6), and
//! records each outcome on the outbox row.
//!
//! **Never twice.** The claim is refreshed while the send runs, and a send whose claim was
//! lost does not happen. A send that broke off in transit is recorded `unknown`; the queue
//! offers it again as a look-up: the same number and text among messages sent since the first
//! claim is adopted, and only when it is not there after the settle time is the text queued
//! again. 429s and 5xx are retried by the client without counting as attempts.
//!
//! **Outcomes.** `Ok` means durable: `sent` (with RingCentral's message id), `unknown`,
//! `delivered`, `failed` with RingCentral's delivery error code (a recipient who replied STOP,
//! `SMS-RC-413`, is recorded as an opt-out, so no further text is even tried), or nothing to do
//! yet. A text without a usable number (`invalid_phone`) or refused by RingCentral
//! (`refused`) is a data error with its reason recorded on the row first. Delivery failures
//! are not dead letters: resending a text to a landline or to a patient who replied STOP
//! cannot succeed.

mod config;

pub use config::RingCentralSmsConfig;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{act, Sink, StepSink};
use crate::component::ProcessError;
use crate::dead_letter::ReasonCode;
use crate::envelope::Envelope;
use crate::error::ErrorKind;
use crate::jobs::claim::{cut, db, rfc3339, set_outbox_state, unix_now, ClaimTable};
use crate::jobs::{ringcentral_fatal, SmsJob};
use crate::ringcentral::client::{Body, Group};
use crate::ringcentral::messages::{list_pages, MESSAGE_STORE};
use crate::ringcentral::phone::to_e164;
use crate::ringcentral::RcClient;
use crate::store::{now_sql, text_column, Store};
use crate::telemetry::Observers;

const SMS: &str = "/restapi/v1.0/account/~/extension/~/sms";

/// RingCentral's delivery error for a recipient who opted out (replied STOP).
const STOPPED: &str = "SMS-RC-413";

const CLAIMS: ClaimTable = ClaimTable {
    table: "oscarflow_sms_outbox",
    key: "id",
};

/// The running sink.
pub struct RingCentralSms {
    store: Store,
    client: Arc<RcClient>,
    from: String,
    id: Arc<str>,
    observers: Observers,
}

impl RingCentralSms {
    pub fn new(
        cfg: RingCentralSmsConfig,
        cx: &crate::component::BuildContext,
    ) -> Result<Self, ProcessError> {
        let from = to_e164(&cfg.from)
            .map_err(|_| ProcessError::fatal("from is not a North American number"))?;
        Ok(RingCentralSms {
            store: cx.store.clone(),
            client: super::ringcentral_client(&cfg.ringcentral)?,
            from,
            id: cx.id.clone(),
            observers: cx.observers.clone(),
        })
    }

    async fn set(&self, id: i64, state: &str, error: Option<&str>) -> Result<(), ProcessError> {
        Ok(set_outbox_state(&self.store, id, state, error).await?)
    }

    /// Records `text` on the row and returns the data error that dead-letters the job.
    async fn refuse(&self, id: i64, reason: ReasonCode, text: &str) -> ProcessError {
        let r = sqlx::query(
            "UPDATE oscarflow_sms_outbox SET last_error = ?, updated_at = ? WHERE id = ?",
        )
        .bind(cut(text, 255))
        .bind(now_sql())
        .bind(id)
        .execute(&self.store.pool)
        .await;
        match r {
            Ok(_) => ProcessError::data(reason, cut(text, 255)),
            Err(e) => ProcessError::from(db("record why a text was refused")(e)),
        }
    }

    async fn accepted(&self, id: i64, message_id: i64) -> Result<(), ProcessError> {
        sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'sent', rc_message_id = ?, last_error = NULL, claimed_unix = ?, updated_at = ? WHERE id = ?")
            .bind(message_id)
            .bind(unix_now())
            .bind(now_sql())
            .bind(id)
            .execute(&self.store.pool)
            .await
            .map(|_| ())
            .map_err(|e| ProcessError::from(db("record a sent text")(e)))
    }

    /// The row's number, text and recorded reason.
    async fn row(&self, id: i64) -> Result<Option<(String, String, Option<String>)>, ProcessError> {
        let row = sqlx::query(
            "SELECT to_number, body, last_error FROM oscarflow_sms_outbox WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.store.pool)
        .await
        .map_err(|e| ProcessError::from(db("read a text")(e)))?;
        row.map(|r| -> Result<_, sqlx::Error> {
            Ok((
                text_column(&r, 0)?.unwrap_or_default(),
                text_column(&r, 1)?.unwrap_or_default(),
                text_column(&r, 2)?,
            ))
        })
        .transpose()
        .map_err(|e| ProcessError::from(db("read a text")(e)))
    }
}

#[async_trait]
impl StepSink<SmsJob> for RingCentralSms {
    async fn send(&self, job: &SmsJob) -> Result<&'static str, ProcessError> {
        let id = job.outbox_id;
        let Some((to, body, last_error)) = self.row(id).await? else {
            return Err(ProcessError::data(
                ReasonCode::ImportRejected,
                "the outbox row is gone",
            ));
        };
        if to_e164(&to).is_err() {
            let text = last_error.unwrap_or_else(|| "no usable mobile number".into());
            return Err(self.refuse(id, ReasonCode::InvalidPhone, &text).await);
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
        let held = CLAIMS.while_holding(
            &self.store,
            id,
            &job.owner,
            Duration::from_secs(job.lease_secs),
            send,
        );
        let Some(result) = held.await else {
            tracing::warn!(sink = %self.id, outbox_id = id, "Lost the claim on a text (another process took it over); not sending it.");
            return Ok("claim_lost");
        };
        match result.and_then(|resp| resp.json::<SmsMessage>()) {
            Ok(m) => {
                self.accepted(id, m.id).await?;
                Ok("sent")
            }
            Err(e) if e.ambiguous => {
                tracing::warn!(sink = %self.id, outbox_id = id, error = %e, "A text's send broke off in transit; it is looked up before any new attempt.");
                sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'unknown', claimed_unix = ?, last_error = ?, updated_at = ? WHERE id = ?")
                    .bind(unix_now())
                    .bind(cut(&e.detail, 255))
                    .bind(now_sql())
                    .bind(id)
                    .execute(&self.store.pool)
                    .await
                    .map_err(|x| ProcessError::from(db("record an unknown send")(x)))?;
                Ok("unknown")
            }
            Err(e) if e.kind == ErrorKind::Fatal => Err(ringcentral_fatal(&e)),
            Err(e) if e.kind == ErrorKind::Data => {
                let text = format!(
                    "RingCentral refused the text: {}",
                    e.code.as_deref().unwrap_or("no error code")
                );
                Err(self.refuse(id, ReasonCode::Refused, &text).await)
            }
            Err(e) => {
                sqlx::query("UPDATE oscarflow_sms_outbox SET attempts = attempts + 1, last_error = ?, updated_at = ? WHERE id = ?")
                    .bind(cut(&e.detail, 255))
                    .bind(now_sql())
                    .bind(id)
                    .execute(&self.store.pool)
                    .await
                    .map_err(|x| ProcessError::from(db("count an attempt")(x)))?;
                Err(ProcessError::transient(format!(
                    "text not sent: {}",
                    e.detail
                )))
            }
        }
    }

    async fn look_up(
        &self,
        job: &SmsJob,
        since_unix: i64,
        settled: bool,
    ) -> Result<&'static str, ProcessError> {
        let id = job.outbox_id;
        let Some((to, body, _)) = self.row(id).await? else {
            return Ok("gone");
        };
        let mut found = None;
        let since = rfc3339(since_unix);
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
                tracing::info!(sink = %self.id, outbox_id = id, "A text whose send broke off had reached RingCentral; adopted it instead of sending again.");
                Ok("adopted")
            }
            (Ok(()), None) if settled => {
                sqlx::query("UPDATE oscarflow_sms_outbox SET state = 'queued', owner = NULL, updated_at = ? WHERE id = ? AND owner = ? AND state = 'unknown'")
                    .bind(now_sql())
                    .bind(id)
                    .bind(&job.owner)
                    .execute(&self.store.pool)
                    .await
                    .map_err(|e| ProcessError::from(db("queue a text again")(e)))?;
                Ok("not_found")
            }
            (Ok(()), None) => Ok("waiting"),
            (Err(e), _) if e.kind == ErrorKind::Fatal => Err(ringcentral_fatal(&e)),
            (Err(e), _) => {
                tracing::warn!(sink = %self.id, outbox_id = id, error = %e, "Could not look up a text whose send broke off; trying again next round.");
                Ok("waiting")
            }
        }
    }

    async fn track(&self, job: &SmsJob, message_id: i64) -> Result<&'static str, ProcessError> {
        let id = job.outbox_id;
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
            Err(e) if e.kind == ErrorKind::Fatal => return Err(ringcentral_fatal(&e)),
            Err(e) => {
                tracing::warn!(sink = %self.id, outbox_id = id, error = %e, "Could not read a text's status; trying again next round.");
                return Ok("waiting");
            }
        };
        match m.message_status.as_str() {
            "Delivered" => {
                self.set(id, "delivered", None).await?;
                Ok("delivered")
            }
            "DeliveryFailed" | "SendingFailed" => {
                let code = m.delivery_error_code.as_deref().unwrap_or("no error code");
                self.set(id, "failed", Some(&format!("{}: {code}", m.message_status)))
                    .await?;
                if m.delivery_error_code.as_deref() == Some(STOPPED) && job.demographic_no > 0 {
                    let new = crate::oscar::contact::record_opt_out(
                        &self.store,
                        job.demographic_no,
                        "replied STOP (SMS-RC-413)",
                    )
                    .await
                    .map_err(ProcessError::from)?;
                    if new {
                        tracing::info!(sink = %self.id, demographic_no = job.demographic_no, "The patient opted out of texts at the carrier; recorded.");
                    }
                }
                Ok("failed")
            }
            _ => Ok("waiting"),
        }
    }
}

#[async_trait]
impl Sink<SmsJob> for RingCentralSms {
    fn kind(&self) -> &'static str {
        "ringcentral_sms"
    }

    async fn write(&self, env: &Envelope<SmsJob>) -> Result<(), ProcessError> {
        let job = &env.payload;
        act(
            self,
            env,
            job.step,
            job.outbox_id,
            (&self.id, &self.observers),
        )
        .await
    }
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

impl super::SinkComponent for RingCentralSmsConfig {
    fn input_port(&self) -> crate::payload::PortType {
        crate::payload::PortType::SmsJob
    }
    fn problems(&self) -> Vec<(String, Option<std::ops::Range<usize>>)> {
        self.validate()
    }
    fn secrets(&self) -> Vec<(&'static str, &serde_spanned::Spanned<String>)> {
        self.ringcentral.env_refs()
    }
    fn build(&self, cx: &crate::component::BuildContext) -> Result<super::BuiltSink, ProcessError> {
        Ok(super::step_sink::<SmsJob>(
            Arc::new(RingCentralSms::new(self.clone(), cx)?),
            self.concurrency,
        ))
    }
}
