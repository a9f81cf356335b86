//! The scheduling feed end to end: HL7 SIU messages over MLLP into OSCAR's appointment book
//! (`pipelines/siu_mllp.toml.example`: `mllp → parse_siu → match_patient (appointment) →
//! oscar_appointment`), and the confirmation texts made from what it booked
//! (`oscar_appointment_confirmations → ringcentral_sms`, against the RingCentral emulator).
//!
//! - Sent with python-hl7's `mllp_send` (PyPI `hl7`): a booking S12 is answered `AA` with its
//!   control id; an overlapping S12, an S12 for a patient whose health number two charts
//!   share, an S12 for an unknown provider and an S13 for a filler id never booked are each
//!   answered `AR` naming the dead-letter reason (`conflict`, `patient_unmatched`,
//!   `provider_unknown`, `appointment_unknown`); a re-sent S12 (same bytes) gets `AA` again
//!   and books nothing new. On the embedded store and on a real OSCAR database (MariaDB).
//! - Confirmations: one text per booked appointment, per reschedule and per cancel; none for
//!   a patient who opted out, none for a change of the reason alone; running the producer
//!   again (more rounds, a second pipeline) sends nothing more. The texts name the clinic and
//!   never the patient (name, health number, birth date).
//!
//! All data is synthetic (`fixtures/sql/bc_clinic.sql`); appointments are in 2030 so that no
//! confirmation is skipped as past, and `send_between = []` so the hour does not matter.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpStream;

use oscarflow::config::{load_str, PipelineConfig};
use oscarflow::sources::mllp::{MllpConfig, MllpSource};
use oscarflow::sources::Source;
use oscarflow::store::Store;
use oscarflow::topology::RunningPipeline;

use common::mllp_client::{exchange, msa};
use common::queue::QueuePipeline;
use common::rc_emulator::RcEmulator;
use common::texts::{exec, states, text_pipeline};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// A synthetic patient as a scheduler's PID segment names them.
struct Patient {
    mrn: &'static str,
    phn: &'static str,
    family: &'static str,
    given: &'static str,
    dob: &'static str,
    sex: &'static str,
}

/// Chart 1001.
const ALICE: Patient = Patient {
    mrn: "ZZMRN0011",
    phn: "9000000011",
    family: "TESTPATIENT",
    given: "ALICE",
    dob: "19800115",
    sex: "F",
};
/// Chart 1002.
const BOB: Patient = Patient {
    mrn: "ZZMRN0029",
    phn: "9000000029",
    family: "TESTPATIENT",
    given: "BOB",
    dob: "19750630",
    sex: "M",
};
/// Chart 1003.
const CAROL: Patient = Patient {
    mrn: "ZZMRN0037",
    phn: "9000000037",
    family: "ZZTEST",
    given: "CAROL",
    dob: "19900303",
    sex: "F",
};
/// Charts 1004 and 1005 share this health number, birth date and sex: ambiguous.
const DANA: Patient = Patient {
    mrn: "ZZMRN0045",
    phn: "9000000045",
    family: "ZZTEST",
    given: "DANA",
    dob: "19850505",
    sex: "F",
};

/// One SIU message, segments joined by `\r` (no trailing separator, as `mllp_send --loose`
/// sends it).
struct Siu<'a> {
    event: &'a str,
    control: &'a str,
    /// MSH-7: later versions of one appointment carry later times.
    msh7: &'a str,
    filler: &'a str,
    patient: &'a Patient,
    /// (start `YYYYMMDDHHMM`, minutes); `None` for S15 (status only).
    slot: Option<(&'a str, u32)>,
    /// AIP-3.1: the provider's MSP billing number (`ohip_no`).
    provider: Option<&'a str>,
    /// SCH-6, the event reason.
    reason: &'a str,
}

impl Siu<'_> {
    fn build(&self) -> Vec<u8> {
        let ev = self.event;
        let mut sch = vec![String::new(); 26];
        sch[0] = "SCH".into();
        sch[1] = format!("P-{}", self.filler);
        sch[2] = self.filler.into();
        sch[6] = self.reason.into();
        sch[7] = "FU^Follow-up^L".into();
        sch[8] = "OFFICE^Office visit".into();
        if let Some((start, minutes)) = self.slot {
            sch[9] = minutes.to_string();
            sch[10] = "MIN".into();
            sch[11] = format!("^^^{start}");
        }
        sch[25] = if ev == "S15" { "Cancelled" } else { "Booked" }.into();
        let p = self.patient;
        let mut segs = vec![
            format!(
                "MSH|^~\\&|ZZSCHED|ZZHOSP|OSCAR|ZZCLINIC|{}||SIU^{ev}^SIU_{ev}|{}|P|2.5.1",
                self.msh7, self.control
            ),
            sch.join("|"),
            format!(
                "PID|1||{}^^^ZZHOSP^MR~{}^^^BC^JHN||{}^{}||{}|{}|||1 ZZTEST AVENUE^^TESTVILLE^BC",
                p.mrn, p.phn, p.family, p.given, p.dob, p.sex
            ),
            "RGS|1".into(),
            "AIS|1||CONSULT^Consultation".into(),
            "AIL|1||ROOM1^^^ZZCLINIC^^^^^Room 1".into(),
        ];
        if let Some(id) = self.provider {
            segs.push(format!("AIP|1||{id}^TESTDOC^ZZ|D^Doctor"));
        }
        segs.join("\r").into_bytes()
    }
}

// ---------------------------------------------------------------------------------------------
// The SIU pipeline
// ---------------------------------------------------------------------------------------------

/// The shipped example pipeline (`pipelines/siu_mllp.toml.example`), as a clinic enables it.
fn siu_pipeline() -> PipelineConfig {
    let path = common::repo().join("pipelines/siu_mllp.toml.example");
    let text = std::fs::read_to_string(&path).expect("the example pipeline");
    load_str(Path::new("siu_mllp.toml"), &text)
        .unwrap_or_else(|e| panic!("siu_mllp.toml.example does not load: {e:?}"))
}

fn mllp_cfg() -> MllpConfig {
    MllpConfig {
        listen: "127.0.0.1:0".into(),
        max_frame_bytes: 1024 * 1024,
        idle_timeout: Duration::from_secs(30),
        frame_timeout: Duration::from_secs(30),
        max_connections: 4,
        max_connections_per_peer: 4,
        tls_cert_file: None,
        tls_key_file: None,
    }
}

/// The SIU pipeline on `store` with its MLLP listener on a free loopback port.
async fn start_siu(store: &Store) -> (RunningPipeline, SocketAddr) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let source: Box<dyn Source> = Box::new(MllpSource::new(mllp_cfg()).with_bound_address(tx));
    let running = common::sources::start(&siu_pipeline(), store, source, None);
    let addr = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the listener binds")
        .expect("bound address");
    (running, addr)
}

async fn stop(mut running: RunningPipeline) {
    running.stop_intake();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the pipeline drains")
        .expect("no fatal error");
}

/// Sends `msgs` in order on one connection; asserts each is answered `AA` with its control id.
async fn send_all_accepted(addr: SocketAddr, msgs: &[(&str, Vec<u8>)]) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    for (control, msg) in msgs {
        let (code, echoed, reason) = msa(&exchange(&mut conn, msg).await);
        assert_eq!(
            (code.as_str(), echoed.as_str()),
            ("AA", *control),
            "{control} is applied (reason {reason:?})"
        );
    }
}

/// A virtual environment with python-hl7 (`mllp_send`); `None` outside CI when Python or
/// PyPI is unavailable.
fn mllp_send_bin() -> Option<std::path::PathBuf> {
    common::pypi_program("py-hl7-venv", "hl7==0.4.5", "mllp_send")
}

/// Sends the messages of `file` with `mllp_send --loose`; the ACKs it printed, in order.
async fn mllp_send(program: &Path, addr: SocketAddr, file: &Path) -> Vec<String> {
    let out = tokio::process::Command::new(program)
        .args(["--loose", "-p", &addr.port().to_string(), "-f"])
        .arg(file)
        .arg("127.0.0.1")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "mllp_send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // mllp_send prints each raw answer (with its MLLP blocks) on its own line.
    String::from_utf8_lossy(&out.stdout)
        .split(['\x0b', '\x1c'])
        .map(|s| s.trim_matches(['\r', '\n']))
        .filter(|s| s.starts_with("MSH"))
        .map(String::from)
        .collect()
}

fn write_messages(path: &Path, msgs: &[&[u8]]) {
    let mut body = Vec::new();
    for m in msgs {
        body.extend_from_slice(m);
        body.extend_from_slice(b"\r\n");
    }
    std::fs::write(path, body).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 1. Answers over MLLP
// ---------------------------------------------------------------------------------------------

async fn mllp_answers_scenario(store: &Store, mllp_send_program: &Path, dir: &Path) {
    let (running, addr) = start_siu(store).await;

    // Alice with Dr ALPHA (91001 → provider 100001) on 2030-03-04 09:00, 15 minutes.
    let book = Siu {
        event: "S12",
        control: "ZZAF0001",
        msh7: "20300101080000",
        filler: "AF-1001",
        patient: &ALICE,
        slot: Some(("203003040900", 15)),
        provider: Some("91001"),
        reason: "FOLLOW^Follow-up",
    }
    .build();
    // Bob with the same provider at 09:10: overlaps Alice's slot.
    let overlapping = Siu {
        event: "S12",
        control: "ZZAF0002",
        msh7: "20300101080100",
        filler: "AF-1002",
        patient: &BOB,
        slot: Some(("203003040910", 15)),
        provider: Some("91001"),
        reason: "FOLLOW^Follow-up",
    }
    .build();
    // The health number two charts share: never a guess.
    let ambiguous = Siu {
        event: "S12",
        control: "ZZAF0003",
        msh7: "20300101080200",
        filler: "AF-1003",
        patient: &DANA,
        slot: Some(("203003041000", 15)),
        provider: Some("91002"),
        reason: "FOLLOW^Follow-up",
    }
    .build();
    // A billing number no OSCAR provider has.
    let no_provider = Siu {
        event: "S12",
        control: "ZZAF0004",
        msh7: "20300101080300",
        filler: "AF-1004",
        patient: &CAROL,
        slot: Some(("203003041100", 15)),
        provider: Some("99999"),
        reason: "FOLLOW^Follow-up",
    }
    .build();
    // A reschedule of an appointment never booked.
    let unknown = Siu {
        event: "S13",
        control: "ZZAF0005",
        msh7: "20300101080400",
        filler: "AF-9999",
        patient: &BOB,
        slot: Some(("203003051000", 15)),
        provider: Some("91002"),
        reason: "FOLLOW^Follow-up",
    }
    .build();

    let first = dir.join("siu_batch.hl7");
    write_messages(
        &first,
        &[&book, &overlapping, &ambiguous, &no_provider, &unknown],
    );
    let acks = mllp_send(mllp_send_program, addr, &first).await;
    let got: Vec<(String, String, String)> = acks.iter().map(|a| msa(a)).collect();
    let want = [
        ("AA", "ZZAF0001", ""),
        ("AR", "ZZAF0002", "conflict"),
        ("AR", "ZZAF0003", "patient_unmatched"),
        ("AR", "ZZAF0004", "provider_unknown"),
        ("AR", "ZZAF0005", "appointment_unknown"),
    ];
    let got_ref: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        got_ref, want,
        "one answer per message, by its control id: {acks:?}"
    );

    // The sender missed the answer and sends the booking again, byte for byte.
    let again = dir.join("siu_resend.hl7");
    write_messages(&again, &[&book]);
    let acks = mllp_send(mllp_send_program, addr, &again).await;
    assert_eq!(acks.len(), 1, "{acks:?}");
    let (code, echoed, _) = msa(&acks[0]);
    assert_eq!((code.as_str(), echoed.as_str()), ("AA", "ZZAF0001"));

    // Exactly one appointment: Alice's, as OSCAR stores it (end = the slot's last minute).
    assert_eq!(
        common::count(store, "SELECT COUNT(*) FROM appointment").await,
        1,
        "the re-send and the refused messages book nothing"
    );
    assert_eq!(
        common::count(
            store,
            "SELECT COUNT(*) FROM appointment WHERE provider_no = '100001' AND demographic_no = 1001 \
             AND appointment_date = '2030-03-04' AND start_time = '09:00:00' AND end_time = '09:14:00' \
             AND status = 't'"
        )
        .await,
        1,
        "Alice's booking with Dr ALPHA, 09:00-09:14, To Do"
    );
    assert_eq!(
        common::count(
            store,
            "SELECT COUNT(*) FROM other_id WHERE table_name = 2 AND other_key = 'patbooking_id' \
             AND other_id = 'AF-1001' AND deleted = 0"
        )
        .await,
        1,
        "the filler id is kept in other_id"
    );
    assert_eq!(
        common::count(store, "SELECT COUNT(*) FROM oscarflow_appointment").await,
        1
    );
    assert_eq!(
        common::count(
            store,
            "SELECT COUNT(*) FROM oscarflow_appointment_event WHERE event = 'booked'"
        )
        .await,
        1,
        "one confirmation event, not one per re-send"
    );

    // The refused messages are dead letters, with their bytes and reasons.
    let dead: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT reason, raw FROM oscarflow_dead_letter ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    let dead: BTreeMap<String, Vec<u8>> = dead.into_iter().collect();
    let want: BTreeMap<String, Vec<u8>> = [
        ("conflict".to_string(), overlapping),
        ("patient_unmatched".to_string(), ambiguous),
        ("provider_unknown".to_string(), no_provider),
        ("appointment_unknown".to_string(), unknown),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        dead.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "one dead letter per refused message"
    );
    assert_eq!(dead, want, "each refused message is kept byte for byte");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siu_over_mllp_is_answered_aa_or_ar_with_the_reason_and_a_resend_books_nothing_new() {
    let Some(program) = mllp_send_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    mllp_answers_scenario(&store, &program, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siu_over_mllp_into_a_real_oscar_database_is_answered_with_the_same_reasons() {
    let Some(program) = mllp_send_bin() else {
        return;
    };
    common::mariadb::with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&url).await.unwrap();
        mllp_answers_scenario(&store, &program, tmp.path()).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. Confirmation texts
// ---------------------------------------------------------------------------------------------

/// The confirmations pipeline (defaults for the templates), sending at any hour, rounds run
/// on request.
fn confirmations_config(emu: &RcEmulator) -> String {
    text_pipeline(
        emu,
        "APPT",
        (10, "1m"),
        "oscar_appointment_confirmations",
        "poll_interval = \"1h\"\nsend_between = []\n",
    )
}

/// Runs rounds until no text is waiting (`queued`, `sending`, `unknown`, `sent`): at most 20.
async fn drain(texts: &mut QueuePipeline, store: &Store) {
    for _ in 0..20 {
        texts.round().await.expect("a round");
        let waiting = common::count(
            store,
            "SELECT COUNT(*) FROM oscarflow_sms_outbox WHERE state IN ('queued', 'sending', 'unknown', 'sent')",
        )
        .await;
        if waiting == 0 {
            return;
        }
    }
    panic!(
        "the outbox is not drained after 20 rounds: {:?}",
        states(store).await
    );
}

/// (to, text) of every text the emulator received, sorted.
fn received(emu: &RcEmulator) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = emu
        .state
        .lock()
        .unwrap()
        .sms
        .iter()
        .map(|m| (m.to.clone(), m.text.clone()))
        .collect();
    v.sort();
    v
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = v
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

const BOOKED_A: &str =
    "Testville Clinic: your appointment is booked for Mon Mar 4 at 9:00 AM. Reply STOP to opt out.";
const BOOKED_B: &str =
    "Testville Clinic: your appointment is booked for Mon Mar 4 at 10:00 AM. Reply STOP to opt out.";
const MOVED_A: &str =
    "Testville Clinic: your appointment has moved to Tue Mar 5 at 10:00 AM. Reply STOP to opt out.";
const CANCELLED_B: &str = "Testville Clinic: your appointment on Mon Mar 4 at 10:00 AM is cancelled. Please call the clinic to rebook.";

async fn confirmations_scenario(store: &Store) {
    // Alice and Bob have mobile numbers; Carol has one too but opted out (our table).
    for (demo, number) in [
        (1001, "604-555-7001"),
        (1002, "(604) 555-7002"),
        (1003, "604 555 7003"),
    ] {
        sqlx::query("INSERT INTO demographicExt (demographic_no, provider_no, key_val, value, date_time, hidden) VALUES (?, '100001', 'demo_cell', ?, '2026-11-01 09:00:00', '0')")
            .bind(demo)
            .bind(number)
            .execute(&store.pool)
            .await
            .unwrap();
    }
    exec(
        store,
        "INSERT INTO oscarflow_sms_optout (demographic_no, reason, created_at) VALUES (1003, 'asked at the front desk', '2026-11-01 09:00:00')",
    )
    .await;

    let emu = RcEmulator::start().await;
    emu.lift_limits();
    let (siu, addr) = start_siu(store).await;

    let s12 = |control: &'static str, msh7, filler, patient, start, provider| {
        Siu {
            event: "S12",
            control,
            msh7,
            filler,
            patient,
            slot: Some((start, 15)),
            provider: Some(provider),
            reason: "FOLLOW^Follow-up",
        }
        .build()
    };
    let book_a = s12(
        "ZZCF0001",
        "20300101080000",
        "CF-A",
        &ALICE,
        "203003040900",
        "91001",
    );
    let book_b = s12(
        "ZZCF0002",
        "20300101080100",
        "CF-B",
        &BOB,
        "203003041000",
        "91002",
    );
    let book_c = s12(
        "ZZCF0003",
        "20300101080200",
        "CF-C",
        &CAROL,
        "203003041100",
        "91001",
    );
    let mut sent_raw: Vec<Vec<u8>> = vec![book_a.clone(), book_b.clone(), book_c.clone()];
    send_all_accepted(
        addr,
        &[
            ("ZZCF0001", book_a),
            ("ZZCF0002", book_b),
            ("ZZCF0003", book_c),
        ],
    )
    .await;

    // Round after round until the outbox is drained: the two reachable patients hear of their
    // booking; Carol (opted out) does not.
    let mut texts = QueuePipeline::start(&confirmations_config(&emu), store);
    drain(&mut texts, store).await;
    assert_eq!(
        received(&emu),
        pairs(&[("+16045557001", BOOKED_A), ("+16045557002", BOOKED_B)]),
        "one text per booking, none for the patient who opted out"
    );

    // Alice's appointment moves to the next day; Bob's is cancelled; then only the reason of
    // Alice's (moved) appointment changes.
    let move_a = Siu {
        event: "S13",
        control: "ZZCF0004",
        msh7: "20300102080000",
        filler: "CF-A",
        patient: &ALICE,
        slot: Some(("203003051000", 15)),
        provider: Some("91001"),
        reason: "FOLLOW^Follow-up",
    }
    .build();
    let cancel_b = Siu {
        event: "S15",
        control: "ZZCF0005",
        msh7: "20300102080100",
        filler: "CF-B",
        patient: &BOB,
        slot: None,
        provider: None,
        reason: "FOLLOW^Follow-up",
    }
    .build();
    let reason_a = Siu {
        event: "S14",
        control: "ZZCF0006",
        msh7: "20300102080200",
        filler: "CF-A",
        patient: &ALICE,
        slot: Some(("203003051000", 15)),
        provider: Some("91001"),
        reason: "BP^Blood pressure review",
    }
    .build();
    sent_raw.extend([move_a.clone(), cancel_b.clone(), reason_a.clone()]);
    send_all_accepted(
        addr,
        &[
            ("ZZCF0004", move_a),
            ("ZZCF0005", cancel_b),
            ("ZZCF0006", reason_a),
        ],
    )
    .await;
    stop(siu).await;

    // The book as the messages left it.
    assert_eq!(
        common::count(
            store,
            "SELECT COUNT(*) FROM appointment WHERE demographic_no = 1001 AND appointment_date = '2030-03-05' \
             AND start_time = '10:00:00' AND end_time = '10:14:00' AND status = 't' \
             AND reason = 'Blood pressure review'"
        )
        .await,
        1,
        "Alice's appointment moved, then its reason changed"
    );
    assert_eq!(
        common::count(
            store,
            "SELECT COUNT(*) FROM appointment WHERE demographic_no = 1002 AND status = 'C'"
        )
        .await,
        1,
        "Bob's appointment is cancelled"
    );
    assert_eq!(
        common::count(store, "SELECT COUNT(*) FROM appointmentArchive").await,
        3,
        "each change archived the row first"
    );
    let events: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event, COUNT(*) FROM oscarflow_appointment_event GROUP BY event ORDER BY event",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        vec![
            ("booked".to_string(), 3),
            ("cancelled".to_string(), 1),
            ("rescheduled".to_string(), 1),
        ],
        "the reason-only change records no event"
    );

    drain(&mut texts, store).await;
    let all = pairs(&[
        ("+16045557001", BOOKED_A),
        ("+16045557002", BOOKED_B),
        ("+16045557001", MOVED_A),
        ("+16045557002", CANCELLED_B),
    ]);
    assert_eq!(
        received(&emu),
        all,
        "one text per reschedule and per cancel; none for the reason-only change"
    );

    // The producer runs again, and a second pipeline (another owner) starts: nothing more.
    for _ in 0..2 {
        texts.round().await.unwrap();
    }
    drop(texts);
    let mut second = QueuePipeline::start(&confirmations_config(&emu), store);
    for _ in 0..2 {
        let r = second.round().await.unwrap();
        assert_eq!((r.queued, r.sent), (0, 0), "{r:?}");
    }
    drop(second);
    assert_eq!(received(&emu), all, "no text is sent twice");

    // The outbox: one row per event of a reachable patient (`confirm:<event id>`), delivered;
    // every event is done with.
    let reachable: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM oscarflow_appointment_event WHERE demographic_no <> 1003 ORDER BY id",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let want: BTreeMap<String, String> = reachable
        .iter()
        .map(|id| (format!("confirm:{id}"), "delivered".to_string()))
        .collect();
    let got: BTreeMap<String, String> = states(store).await.into_iter().collect();
    assert_eq!(got, want);
    assert_eq!(
        common::count(
            store,
            "SELECT COUNT(*) FROM oscarflow_sms_outbox WHERE demographic_no = 1003"
        )
        .await,
        0,
        "nothing is queued for the patient who opted out"
    );
    assert_eq!(
        common::count(
            store,
            "SELECT COUNT(*) FROM oscarflow_appointment_event WHERE texted = 0"
        )
        .await,
        0
    );

    // The texts name the clinic, never the patient.
    let mut phi = BTreeSet::new();
    for raw in &sent_raw {
        common::phi::patient_tokens(raw, &mut phi);
    }
    assert!(phi.contains("TESTPATIENT") && phi.contains("9000000011"));
    for m in emu.state.lock().unwrap().sms.iter() {
        assert_eq!(m.from, "+16045550100");
        assert!(m.text.contains("Testville Clinic"), "{:?}", m.text);
        for token in &phi {
            assert!(
                !m.text.contains(token.as_str()),
                "a text names the patient ({token})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_go_out_once_per_booking_reschedule_and_cancel_and_never_to_opted_out_patients(
) {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    confirmations_scenario(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_from_a_real_oscar_database_go_out_once_each() {
    common::mariadb::with_test_db(|url| async move {
        let store = Store::open(&url).await.unwrap();
        confirmations_scenario(&store).await;
    })
    .await;
}
