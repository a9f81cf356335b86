//! Text messages through the RingCentral emulator with the real client: reminders for
//! tomorrow's appointments are sent exactly once each, also when the producer runs again and
//! again and when two workers share the database; patients who opted out (our table or
//! OSCAR's `demographicExt`) get none; cancelled appointments none; a chart without a usable
//! mobile number is dead-lettered with a reason; delivery is tracked to `Delivered` or
//! `DeliveryFailed`; a lab-ready notice goes out once a provider acknowledged the lab; a send
//! whose answer was lost is adopted, not repeated. Runs on the embedded store and on a real
//! OSCAR database (MariaDB). No phone number, name, secret or token appears in the logs.

mod common;

use std::collections::HashMap;

use chrono::{Duration as Days, Local};

use oscarflow::store::Store;

use common::queue::{QueuePipeline, RoundReport as SmsReport};
use common::texts::{exec, seed_appointments, states, text_pipeline};

use common::rc_emulator::{RcEmulator, CLIENT_SECRET, JWT};

/// The text-message pipeline (`oscar_appointments` or, with `[lab_ready]` in `extra`,
/// `oscar_lab_ready` → `ringcentral_sms`), sending at any hour unless `extra` sets
/// `send_between`, with rounds run on request.
fn sms_config(emu: &RcEmulator, extra: &str) -> String {
    let hours = if extra.contains("send_between") {
        ""
    } else {
        "send_between = []"
    };
    let (type_name, extra) = if extra.contains("[lab_ready]") {
        (
            "oscar_lab_ready",
            extra.replace("[lab_ready]", "[sources.texts.lab_ready]"),
        )
    } else {
        (
            "oscar_appointments",
            extra.replace("[reminders]", "[sources.texts.reminders]"),
        )
    };
    text_pipeline(
        emu,
        "SMS",
        (10, "1m"),
        type_name,
        &format!("poll_interval = \"1h\"\n{hours}\n{extra}"),
    )
}

const REMINDERS: &str = "[reminders]\nlead_time = \"48h\"\nmin_notice = \"1h\"\n";

async fn emulator() -> RcEmulator {
    let emu = RcEmulator::start().await;
    emu.lift_limits();
    emu
}

fn add(total: &mut SmsReport, r: SmsReport) {
    total.queued += r.queued;
    total.opted_out += r.opted_out;
    total.invalid += r.invalid;
    total.sent += r.sent;
    total.adopted += r.adopted;
    total.delivered += r.delivered;
    total.failed += r.failed;
}

fn assert_no_phi_in_logs() {
    common::logs::assert_absent(&[CLIENT_SECRET, JWT, "emu-at-"], "a secret or token");
    common::logs::assert_absent(&["555-70", "555 70", "+1604555"], "a phone number");
    common::logs::assert_absent(
        &["ALICE", "TESTPATIENT", "ZZTEST, SOMEONE"],
        "a patient name",
    );
}

/// The reminder scenario on `store` with `workers` SMS workers running rounds together.
async fn reminders_scenario(store: &Store, second: Option<Store>) {
    let emu = emulator().await;
    emu.state
        .lock()
        .unwrap()
        .sms_fail_numbers
        .push("+16045557009".into());
    seed_appointments(store).await;
    let mut a = QueuePipeline::start(&sms_config(&emu, REMINDERS), store);
    let mut b = second.map(|s| QueuePipeline::start(&sms_config(&emu, REMINDERS), &s));
    let mut total = SmsReport::default();
    // The producer runs again and again (and on two workers at once, when given).
    for _ in 0..4 {
        match &mut b {
            Some(b) => {
                let (ra, rb) = tokio::join!(a.round(), b.round());
                add(&mut total, ra.unwrap());
                add(&mut total, rb.unwrap());
            }
            None => add(&mut total, a.round().await.unwrap()),
        }
    }
    let sent = emu.state.lock().unwrap().sms.clone();
    let mut to: Vec<&str> = sent.iter().map(|m| m.to.as_str()).collect();
    to.sort();
    println!(
        "sms reminders: {} texts sent for 3 reachable due appointments, opted-out passes {}, invalid {}, delivered {}, failed {}, duplicated 0",
        sent.len(),
        total.opted_out,
        total.invalid,
        total.delivered,
        total.failed
    );
    assert_eq!(
        to,
        vec!["+16045557001", "+16045557001", "+16045557009"],
        "one text per due appointment, none for opted-out, cancelled or far-off ones"
    );
    for m in &sent {
        assert_eq!(m.from, "+16045550100");
        assert!(m
            .text
            .starts_with("Reminder from Testville Clinic: you have an appointment on "));
        assert!(!m.text.contains("ALICE") && !m.text.contains("TESTPATIENT"));
    }
    let times: Vec<bool> = ["10:30 AM", "2:00 PM", "3:45 PM"]
        .iter()
        .map(|t| sent.iter().any(|m| m.text.contains(t)))
        .collect();
    assert_eq!(times, vec![true, true, true]);
    // The journal has each text handed to RingCentral (ids only).
    common::eventually_count(
        store,
        "SELECT COUNT(*) FROM oscarflow_journal WHERE kind = 'sms' AND outcome = 'sent'",
        3,
    )
    .await;
    let st = states(store).await;
    assert_eq!(
        st,
        HashMap::from([
            ("reminder:501".to_string(), "delivered".to_string()),
            ("reminder:502".to_string(), "delivered".to_string()),
            ("reminder:505".to_string(), "failed".to_string()),
            ("reminder:508".to_string(), "failed".to_string()),
        ])
    );
    let reasons: Vec<(String, String)> = sqlx::query_as(
        "SELECT dedupe_key, last_error FROM oscarflow_sms_outbox WHERE state = 'failed' ORDER BY dedupe_key",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert!(
        reasons[0].1.starts_with("no usable mobile number"),
        "{:?}",
        reasons[0]
    );
    assert_eq!(reasons[1].1, "DeliveryFailed: SMS-RC-410");
    let dead: Vec<String> = sqlx::query_scalar("SELECT reason FROM oscarflow_dead_letter")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert_eq!(
        dead,
        vec!["invalid_phone".to_string()],
        "the unusable number is dead-lettered once"
    );
    assert_no_phi_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_for_tomorrow_go_out_exactly_once_and_never_to_opted_out_patients() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    reminders_scenario(&store, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_from_a_real_oscar_database_go_out_once_with_two_workers() {
    let _ = common::logs::captured();
    common::mariadb::with_test_db(|url| async move {
        let store = Store::open(&url).await.unwrap();
        let other = Store::open(&url).await.unwrap();
        reminders_scenario(&store, Some(other)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_ready_notice_goes_out_once_a_provider_acknowledged_the_lab() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = emulator().await;
    exec(&store, "INSERT INTO demographicExt (demographic_no, provider_no, key_val, value, date_time, hidden) VALUES (1001, '100001', 'demo_cell', '604-555-7001', '2026-11-01 09:00:00', '0')").await;
    // A lab filed before the notices were switched on never gets one.
    exec(&store, "INSERT INTO patientLabRouting (demographic_no, lab_no, lab_type, created) VALUES (1001, 900, 'HL7', '2026-11-01 09:00:00')").await;
    exec(&store, "INSERT INTO providerLabRouting (provider_no, lab_no, status, comment, timestamp, lab_type) VALUES ('100001', 900, 'A', '', '2026-11-01 09:00:00', 'HL7')").await;
    let mut outbox = QueuePipeline::start(&sms_config(&emu, "[lab_ready]\n"), &store);
    outbox.round().await.unwrap();
    exec(&store, "INSERT INTO patientLabRouting (demographic_no, lab_no, lab_type, created) VALUES (1001, 901, 'HL7', '2026-11-22 09:00:00')").await;
    exec(&store, "INSERT INTO providerLabRouting (provider_no, lab_no, status, comment, timestamp, lab_type) VALUES ('100001', 901, 'N', '', '2026-11-22 09:00:00', 'HL7')").await;
    outbox.round().await.unwrap();
    assert!(
        emu.state.lock().unwrap().sms.is_empty(),
        "not before it is acknowledged"
    );
    exec(
        &store,
        "UPDATE providerLabRouting SET status = 'A' WHERE lab_no = 901",
    )
    .await;
    for _ in 0..3 {
        outbox.round().await.unwrap();
    }
    let sent = emu.state.lock().unwrap().sms.clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "+16045557001");
    assert_eq!(
        sent[0].text,
        "Testville Clinic: new test results are ready. Please contact the clinic or book a follow-up."
    );
    assert_eq!(
        states(&store).await,
        HashMap::from([("lab_ready:901".to_string(), "delivered".to_string())])
    );
    assert_no_phi_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_whose_answer_was_lost_is_adopted_not_sent_again() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = emulator().await;
    seed_appointments(&store).await;
    emu.state.lock().unwrap().drop_after_accept = 2;
    let mut outbox = QueuePipeline::start(&sms_config(&emu, REMINDERS), &store);
    let mut total = SmsReport::default();
    for _ in 0..4 {
        add(&mut total, outbox.round().await.unwrap());
    }
    assert_eq!(total.adopted, 2);
    assert_eq!(emu.state.lock().unwrap().sms.len(), 3, "each text once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_texts_wait_outside_the_sending_hours() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = emulator().await;
    seed_appointments(&store).await;
    // A sending window that starts two hours from now: the reminders are queued, not sent.
    let now = Local::now().time();
    let from = (now + Days::hours(2)).format("%H:%M").to_string();
    let to = (now + Days::hours(3)).format("%H:%M").to_string();
    let closed = format!("send_between = [\"{from}\", \"{to}\"]\n{REMINDERS}");
    let mut outbox = QueuePipeline::start(&sms_config(&emu, &closed), &store);
    let r = outbox.round().await.unwrap();
    assert_eq!((r.queued, r.sent), (3, 0));
    assert!(emu.state.lock().unwrap().sms.is_empty());
    // Inside the window (here: any hour) they go out.
    let mut open = QueuePipeline::start(&sms_config(&emu, REMINDERS), &store);
    let r = open.round().await.unwrap();
    assert_eq!((r.queued, r.sent), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_who_replied_stop_gets_no_further_texts() {
    let _ = common::logs::captured();
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = emulator().await;
    seed_appointments(&store).await;
    emu.state
        .lock()
        .unwrap()
        .sms_stopped_numbers
        .push("+16045557001".into());
    // Only appointment 501 is due at first; 502 is moved into the window later.
    exec(
        &store,
        "UPDATE appointment SET appointment_date = '2099-01-01' WHERE appointment_no <> 501",
    )
    .await;
    let mut outbox = QueuePipeline::start(&sms_config(&emu, REMINDERS), &store);
    for _ in 0..3 {
        outbox.round().await.unwrap();
    }
    assert_eq!(
        common::count(
            &store,
            "SELECT COUNT(*) FROM oscarflow_sms_optout WHERE demographic_no = 1001"
        )
        .await,
        1,
        "the STOP is recorded as an opt-out"
    );
    let tomorrow = (Local::now().date_naive() + Days::days(1))
        .format("%Y-%m-%d")
        .to_string();
    sqlx::query("UPDATE appointment SET appointment_date = ? WHERE appointment_no = 502")
        .bind(tomorrow)
        .execute(&store.pool)
        .await
        .unwrap();
    let r = outbox.round().await.unwrap();
    assert_eq!((r.queued, r.opted_out), (0, 1));
    assert_eq!(
        emu.state.lock().unwrap().sms.len(),
        1,
        "nothing after the STOP"
    );
}
