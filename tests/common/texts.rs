//! OSCAR's appointments and charts for the text-message tests: the synthetic clinic's
//! appointments, what OSCAR holds about reaching each patient, and the outbox's states.

#![allow(dead_code)]

use std::collections::HashMap;

use chrono::{Duration as Days, Local};

use oscarflow::store::Store;

use super::rc_emulator::RcEmulator;

pub async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql).execute(&store.pool).await.unwrap();
}

/// The synthetic clinic's appointments and what OSCAR holds about reaching each patient.
pub async fn seed_appointments(store: &Store) {
    let day = |n: i64| {
        (Local::now().date_naive() + Days::days(n))
            .format("%Y-%m-%d")
            .to_string()
    };
    let appts = [
        // (appointment_no, demographic_no, day, start, status)
        (501, 1001, day(1), "10:30:00", "t"),
        (502, 1001, day(1), "14:00:00", "t"),
        (503, 1002, day(1), "09:00:00", "t"), // opted out in our table
        (504, 1003, day(1), "09:15:00", "t"), // opted out in demographicExt
        (505, 1004, day(1), "11:00:00", "t"), // no mobile number
        (506, 1005, day(1), "11:30:00", "C"), // cancelled
        (507, 1008, day(3), "10:30:00", "t"), // too far ahead
        (508, 1009, day(1), "15:45:00", "t"), // a landline: delivery fails
    ];
    for (no, demo, date, start, status) in appts {
        sqlx::query("INSERT INTO appointment (appointment_no, provider_no, appointment_date, start_time, end_time, name, demographic_no, status, createdatetime, creator) VALUES (?, '100001', ?, ?, ?, 'ZZTEST, SOMEONE', ?, ?, '2026-11-01 09:00:00', 'test')")
            .bind(no)
            .bind(&date)
            .bind(start)
            .bind(start)
            .bind(demo)
            .bind(status)
            .execute(&store.pool)
            .await
            .unwrap();
    }
    for (demo, key, value) in [
        (1001, "demo_cell", "(604) 555-7001"),
        (1002, "demo_cell", "604-555-7002"),
        (1003, "demo_cell", "604 555 7003"),
        (1003, "sms_opt_out", "yes"),
        (1009, "demo_cell", "604-555-7009"),
    ] {
        sqlx::query("INSERT INTO demographicExt (demographic_no, provider_no, key_val, value, date_time, hidden) VALUES (?, '100001', ?, ?, '2026-11-01 09:00:00', '0')")
            .bind(demo)
            .bind(key)
            .bind(value)
            .execute(&store.pool)
            .await
            .unwrap();
    }
    exec(
        store,
        "INSERT INTO oscarflow_sms_optout (demographic_no, reason, created_at) VALUES (1002, 'asked at the front desk', '2026-11-01 09:00:00')",
    )
    .await;
}

/// The outbox: dedupe key → state.
pub async fn states(store: &Store) -> HashMap<String, String> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT dedupe_key, state FROM oscarflow_sms_outbox")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// The text-message pipeline file: a source `texts` of `type_name` (`source` adds its
/// settings and sub-tables, which must name it `[sources.texts.…]`) → `ringcentral_sms`;
/// `tag` names the emulator's secret variables, `heavy` its Heavy limit.
pub fn text_pipeline(
    emu: &RcEmulator,
    tag: &str,
    heavy: (u32, &str),
    type_name: &str,
    source: &str,
) -> String {
    format!(
        r#"
[pipeline]
name = "texts"

[pipeline.retry]
initial_backoff = "50ms"

[sinks.send]
type = "ringcentral_sms"
inputs = ["texts"]
from = "604-555-0100"

[sinks.send.ringcentral]
initial_backoff = "50ms"
{ringcentral}
[sources.texts]
type = "{type_name}"
name = "clinic"
clinic = "Testville Clinic"
unknown_settle_after = "0s"
{source}"#,
        ringcentral = emu.ringcentral_toml(tag, heavy),
    )
}
