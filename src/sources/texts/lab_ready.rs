//! The lab-ready producer of `oscar_lab_ready`: labs filed to a patient (`patientLabRouting`)
//! once a provider acknowledged them (or once imported), for labs that arrived after the
//! notices were switched on (the start is kept in `oscarflow_checkpoint` under `sms:<name>`).

use super::{render, LabReadyWhen, Produced, TextQueue};
use crate::jobs::claim::db;
use crate::jobs::OutboundError;
use crate::store::{is_unique_violation, now_sql};

pub(super) async fn produce(q: &TextQueue, r: &mut Produced) -> Result<(), OutboundError> {
    let lc = &q.cfg.lab_ready();
    // Only labs that arrive after the notices were switched on.
    let pipeline = format!("sms:{}", q.cfg.name);
    let since: Option<String> = sqlx::query_scalar(
        "SELECT value FROM oscarflow_checkpoint WHERE pipeline = ? AND source = 'lab_ready'",
    )
    .bind(&pipeline)
    .fetch_optional(&q.store.pool)
    .await
    .map_err(db("read the lab-ready start"))?;
    let since: i64 = match since.and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None => {
            let max: Option<i64> = sqlx::query_scalar("SELECT MAX(lab_no) FROM patientLabRouting")
                .fetch_one(&q.store.pool)
                .await
                .map_err(db("read the newest lab"))?;
            let start = max.unwrap_or(0);
            let r = sqlx::query("INSERT INTO oscarflow_checkpoint (pipeline, source, value, updated_at) VALUES (?, 'lab_ready', ?, ?)")
                    .bind(&pipeline)
                    .bind(start.to_string())
                    .bind(now_sql())
                    .execute(&q.store.pool)
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
        .fetch_all(&q.store.pool)
        .await
        .map_err(db("read filed labs"))?;
    for (lab_no, demo) in labs {
        q.produce(
            format!("lab_ready:{lab_no}"),
            demo,
            render(&lc.template, &q.cfg.clinic, None),
            r,
        )
        .await?;
    }
    Ok(())
}
