//! The reminder producer of `oscar_appointments`: OSCAR's `appointment` rows starting between
//! `min_notice` and `lead_time` from now (clinic local time), skipping cancelled and no-show
//! statuses and inactive charts.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use super::{render, Produced, TextQueue};
use crate::jobs::claim::db;
use crate::jobs::OutboundError;
use crate::store::text_column;

pub(super) async fn produce(
    q: &TextQueue,
    now: NaiveDateTime,
    r: &mut Produced,
) -> Result<(), OutboundError> {
    let rc = &q.cfg.reminders();
    let earliest = now + chrono::Duration::from_std(rc.min_notice).unwrap_or_default();
    let latest = now + chrono::Duration::from_std(rc.lead_time).unwrap_or_default();
    let rows = sqlx::query("SELECT a.appointment_no, a.demographic_no, CAST(a.appointment_date AS CHAR), CAST(a.start_time AS CHAR), a.status FROM appointment a JOIN demographic d ON d.demographic_no = a.demographic_no WHERE a.appointment_date >= ? AND a.appointment_date <= ? AND a.demographic_no > 0 AND d.patient_status = 'AC' ORDER BY a.appointment_no")
            .bind(earliest.date().format("%Y-%m-%d").to_string())
            .bind(latest.date().format("%Y-%m-%d").to_string())
            .fetch_all(&q.store.pool)
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
        let body = render(&rc.template, &q.cfg.clinic, Some(starts));
        q.produce(format!("reminder:{appt}"), demo, body, r).await?;
    }
    Ok(())
}
