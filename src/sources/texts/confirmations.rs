//! The confirmation producer of `oscar_appointment_confirmations`: one text per event the
//! appointment sink recorded (`oscarflow_appointment_event`, written in the transaction that
//! booked, moved or cancelled the appointment) — booked, rescheduled (a new time or
//! provider), cancelled — with the clinic's template for that event. Dedupe key
//! `confirm:<event id>`: once per event, however many daemons produce. Events of
//! appointments already begun are not texted. A patient who opted out gets none; a chart
//! without a usable number gets its row with the reason (dead-lettered `invalid_phone` by
//! the sink), as for reminders.

use chrono::NaiveDateTime;

use super::{render, Produced, TextQueue};
use crate::jobs::claim::db;
use crate::jobs::OutboundError;
use crate::store::text_column;

pub(super) async fn produce(
    q: &TextQueue,
    now: NaiveDateTime,
    r: &mut Produced,
) -> Result<(), OutboundError> {
    let cc = q.cfg.confirmations();
    let rows = sqlx::query("SELECT id, appointment_no, demographic_no, event, CAST(starts_at AS CHAR) AS starts_at FROM oscarflow_appointment_event WHERE texted = 0 ORDER BY id LIMIT ?")
        .bind(i64::from(q.cfg.batch))
        .fetch_all(&q.store.pool)
        .await
        .map_err(db("read appointment events"))?;
    for row in rows {
        let read = || -> Result<_, sqlx::Error> {
            Ok((
                sqlx::Row::try_get::<i64, _>(&row, "id")?,
                sqlx::Row::try_get::<i64, _>(&row, "demographic_no")?,
                text_column(&row, "event")?.unwrap_or_default(),
                text_column(&row, "starts_at")?,
            ))
        };
        let (id, demo, event, starts) = read().map_err(db("read an appointment event"))?;
        let starts = starts.and_then(|s| {
            NaiveDateTime::parse_from_str(
                s.trim().get(..19).unwrap_or(s.trim()),
                "%Y-%m-%d %H:%M:%S",
            )
            .ok()
        });
        let template = match event.as_str() {
            "booked" => Some(&cc.booked),
            "rescheduled" => Some(&cc.rescheduled),
            "cancelled" => Some(&cc.cancelled),
            _ => None,
        };
        let past = starts.is_some_and(|s| s <= now);
        if let (Some(t), false) = (template, past) {
            if !t.is_empty() {
                q.produce(
                    format!("confirm:{id}"),
                    demo,
                    render(t, &q.cfg.clinic, starts),
                    r,
                )
                .await?;
            }
        }
        sqlx::query("UPDATE oscarflow_appointment_event SET texted = 1 WHERE id = ?")
            .bind(id)
            .execute(&q.store.pool)
            .await
            .map_err(db("mark an appointment event texted"))?;
    }
    Ok(())
}
