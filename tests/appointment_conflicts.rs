//! The appointment book's conflict check (`src/oscar/appointment.rs`), on the embedded store
//! (SQLite) and on OSCAR's real schema (MariaDB): every scenario is one `async fn` taking a
//! database URL, run once per backend.
//!
//! The rule under test: one provider, one day, `start < other_end AND end > other_start`,
//! where OSCAR keeps `end_time` as the slot's last minute (a 15-minute visit at 09:00 is
//! stored 09:00–09:14), so adjacent slots never conflict; a cancelled (`C…`) or no-show
//! (`N…`) appointment holds no slot; `refuse` dead-letters the message as `conflict` naming
//! the appointment(s) it overlaps and writes nothing, `book_and_flag` books it with a note
//! naming them. Two writers of one provider's book (two connection pools on one database)
//! never both book one slot.
//!
//! Most scenarios call [`apply`] directly with hand-built [`Appointment`]s (the patient
//! matched to the seeded chart by the test, as the match stage would); one drives whole
//! files through `oscarflow replay --pipeline pipelines/siu_inbox.toml.example`. A transient
//! error from `apply` is retried, as the sink runner retries it. Synthetic clinic
//! (`fixtures/sql/bc_clinic.sql`) and synthetic messages only; no timing assertions.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use oscarflow::appointment::Appointment;
use oscarflow::component::ProcessError;
use oscarflow::dead_letter::ReasonCode;
use oscarflow::envelope::{sha256, Origin, Provenance};
use oscarflow::error::ErrorKind;
use oscarflow::hl7::siu::{HealthNumberAt, SiuMessage};
use oscarflow::hl7::Message;
use oscarflow::oscar::appointment::{apply, Applied, BookOptions, OnConflict};
use oscarflow::oscar::matching::MatchOutcome;
use oscarflow::sinks::oscar_appointment::OscarAppointmentConfig;
use oscarflow::store::{text_column, Store};

use common::count;

// ---------------------------------------------------------------------------------------------
// The synthetic clinic and its messages
// ---------------------------------------------------------------------------------------------

/// A seeded chart, as a scheduling feed's PID names it.
struct Patient {
    demographic_no: i64,
    phn: &'static str,
    family: &'static str,
    given: &'static str,
    dob: &'static str,
    sex: &'static str,
}

const ALICE: Patient = Patient {
    demographic_no: 1001,
    phn: "9000000011",
    family: "TESTPATIENT",
    given: "ALICE",
    dob: "19800115",
    sex: "F",
};
const BOB: Patient = Patient {
    demographic_no: 1002,
    phn: "9000000029",
    family: "TESTPATIENT",
    given: "BOB",
    dob: "19750630",
    sex: "M",
};
const CAROL: Patient = Patient {
    demographic_no: 1003,
    phn: "9000000037",
    family: "ZZTEST",
    given: "CAROL",
    dob: "19900303",
    sex: "F",
};

/// AIP-3.1 (`provider.ohip_no`, the MSP billing number) and OSCAR's `provider_no`.
const ALPHA: (&str, &str) = ("91001", "100001");
const BRAVO: (&str, &str) = ("91002", "100002");

/// One scheduling message: `slot` is (start `YYYYMMDDHHMM`, minutes), `provider` AIP-3.1.
struct Siu<'a> {
    event: &'a str,
    filler: &'a str,
    patient: &'a Patient,
    slot: Option<(&'a str, u32)>,
    provider: Option<&'a str>,
}

/// An S12 booking `patient` with ALPHA.
fn s12<'a>(filler: &'a str, patient: &'a Patient, start: &'a str, minutes: u32) -> Siu<'a> {
    Siu {
        event: "S12",
        filler,
        patient,
        slot: Some((start, minutes)),
        provider: Some(ALPHA.0),
    }
}

/// An S13 moving an appointment of ALPHA's.
fn s13<'a>(filler: &'a str, patient: &'a Patient, start: &'a str, minutes: u32) -> Siu<'a> {
    Siu {
        event: "S13",
        ..s12(filler, patient, start, minutes)
    }
}

/// A status change (S15 cancel, S26 no-show): names the appointment, carries no slot.
fn status_change<'a>(event: &'a str, filler: &'a str, patient: &'a Patient) -> Siu<'a> {
    Siu {
        event,
        filler,
        patient,
        slot: None,
        provider: None,
    }
}

/// A distinct, increasing MSH-7 for every message of the run (versions of one appointment
/// must not look older than the one applied, and every message's bytes differ).
fn next_msh7() -> String {
    static SECONDS: AtomicU64 = AtomicU64::new(0);
    let n = SECONDS.fetch_add(1, Ordering::SeqCst);
    let base = chrono::NaiveDate::from_ymd_opt(2030, 1, 1)
        .and_then(|d| d.and_hms_opt(8, 0, 0))
        .expect("a date");
    (base + chrono::Duration::seconds(n as i64))
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// The message's HL7 text (segments separated by `\r`, as `fixtures/hl7/siu/` has them).
fn hl7(m: &Siu<'_>) -> String {
    let msh7 = next_msh7();
    let p = m.patient;
    let (duration, units, start) = match m.slot {
        Some((start, minutes)) => (minutes.to_string(), "MIN", format!("^^^{start}")),
        None => (String::new(), "", String::new()),
    };
    let mut segs = vec![
        format!(
            "MSH|^~\\&|ZZSCHED|ZZHOSP|OSCAR|ZZCLINIC|{msh7}||SIU^{ev}^SIU_{ev}|ZZ{ev}{msh7}|P|2.5.1",
            ev = m.event
        ),
        format!(
            "SCH|P-{f}|{f}||||FOLLOW^Follow-up|FU^Follow-up^L|OFFICE^Office visit|{duration}|{units}|{start}|||||||||||||||Booked",
            f = m.filler
        ),
        format!(
            "PID|1||ZZMRN{dn}^^^ZZHOSP^MR~{phn}^^^BC^JHN||{fam}^{given}||{dob}|{sex}|||1 ZZTEST AVENUE^^TESTVILLE^BC",
            dn = p.demographic_no,
            phn = p.phn,
            fam = p.family,
            given = p.given,
            dob = p.dob,
            sex = p.sex
        ),
        "RGS|1".to_string(),
        "AIS|1||CONSULT^Consultation".to_string(),
        "AIL|1||ROOM1^^^ZZCLINIC^^^^^Room 1".to_string(),
    ];
    if let Some(id) = m.provider {
        segs.push(format!("AIP|1||{id}^TESTDOC^ZZDOC|D^Doctor"));
    }
    segs.join("\r")
}

/// The sink's payload for `m`, matched to its patient's chart as the match stage would.
fn appointment(m: &Siu<'_>) -> Appointment {
    let text = hl7(m);
    let parsed = Message::parse(&text).expect("the test's message parses");
    let siu = SiuMessage::from_message(&parsed, &HealthNumberAt::default())
        .expect("the test's message is a valid SIU");
    Appointment {
        name: format!("{}-{}.hl7", m.filler, m.event),
        index: 0,
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
        raw: Bytes::from(text.into_bytes()),
        siu,
        matched: Some(MatchOutcome::Matched {
            demographic_no: m.patient.demographic_no,
            mrp: None,
            merged_from: None,
        }),
    }
}

fn provenance(appt: &Appointment) -> Provenance {
    Provenance {
        pipeline: Arc::from("appointment_conflicts"),
        source: Arc::from("test"),
        source_kind: Arc::from("test"),
        origin: Origin::Memory {
            label: appt.name.clone(),
        },
        received_at: time::OffsetDateTime::now_utc(),
        attempt: 1,
        content_sha256: sha256(&appt.raw),
    }
}

// ---------------------------------------------------------------------------------------------
// Driving the book
// ---------------------------------------------------------------------------------------------

/// `apply`, with a transient error retried as the sink runner retries it.
async fn apply_retrying(
    store: &Store,
    appt: &Appointment,
    opts: &BookOptions,
) -> Result<Applied, ProcessError> {
    let prov = provenance(appt);
    let mut attempt = 0;
    loop {
        match apply(store, appt, &prov, opts).await {
            Err(e) if e.kind == ErrorKind::Transient && attempt < 50 => {
                attempt += 1;
                eprintln!("transient error, retried (attempt {attempt}): {}", e.detail);
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            r => return r,
        }
    }
}

/// One writer of the appointment book: a store (its own connection pool) and the sink's
/// settings.
struct Book {
    store: Store,
    opts: BookOptions,
}

impl Book {
    async fn open(url: &str) -> Book {
        Book {
            store: Store::open(url).await.expect("open the store"),
            opts: OscarAppointmentConfig::default().options(),
        }
    }

    async fn send_appt(&self, appt: &Appointment) -> Result<Applied, ProcessError> {
        apply_retrying(&self.store, appt, &self.opts).await
    }

    async fn send(&self, m: Siu<'_>) -> Result<Applied, ProcessError> {
        self.send_appt(&appointment(&m)).await
    }

    /// Sends `m`, which must book; its `appointment_no`.
    async fn book(&self, m: Siu<'_>) -> i64 {
        let what = format!("{} {}", m.event, m.filler);
        let applied = self
            .send(m)
            .await
            .unwrap_or_else(|e| panic!("{what} must be booked: {e:?}"));
        assert_eq!(applied.outcome, "booked", "{what}: {applied:?}");
        assert!(applied.overlaps.is_empty(), "{what}: {applied:?}");
        applied
            .appointment_no
            .expect("a booked appointment's number")
    }
}

/// Applies `a` through `first` and `b` through `second` at once: two tasks, released
/// together, each on its own pool.
async fn race(
    first: &Arc<Book>,
    a: Appointment,
    second: &Arc<Book>,
    b: Appointment,
) -> (Result<Applied, ProcessError>, Result<Applied, ProcessError>) {
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let run = |book: Arc<Book>, appt: Appointment, gate: Arc<tokio::sync::Barrier>| {
        tokio::spawn(async move {
            gate.wait().await;
            book.send_appt(&appt).await
        })
    };
    let (ra, rb) = tokio::join!(
        run(first.clone(), a, gate.clone()),
        run(second.clone(), b, gate)
    );
    (ra.expect("first writer"), rb.expect("second writer"))
}

/// The numbers a conflict's detail names.
fn numbers_in(detail: &str) -> BTreeSet<i64> {
    detail
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a number"))
        .collect()
}

/// `r` is refused as a `conflict` (a data error, dead-lettered) naming exactly `others`.
#[track_caller]
fn assert_conflict(r: Result<Applied, ProcessError>, others: &[i64], what: &str) {
    let e = match r {
        Ok(a) => panic!("{what}: must be refused as a conflict, was {a:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::Data, "{what}: {e:?}");
    assert_eq!(e.reason, ReasonCode::Conflict, "{what}: {e:?}");
    assert_eq!(e.reason.as_str(), "conflict");
    assert_eq!(
        numbers_in(&e.detail),
        others.iter().copied().collect::<BTreeSet<_>>(),
        "{what}: the detail names the overlapped appointment(s): {}",
        e.detail
    );
}

/// Row counts of everything a booking writes.
async fn written(store: &Store) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for t in [
        "appointment",
        "appointmentArchive",
        "other_id",
        "oscarflow_appointment",
        "oscarflow_appointment_message",
        "oscarflow_appointment_event",
        "oscarflow_journal",
        "log",
    ] {
        out.push((t, count(store, &format!("SELECT COUNT(*) FROM {t}")).await));
    }
    out
}

/// Nothing of a refused message is kept: no appointment, no `other_id`, no
/// `oscarflow_appointment` row, not even its key (so a `dlq retry` applies it again).
async fn assert_nothing_of(store: &Store, appt: &Appointment, before: &[(&str, i64)]) {
    assert_eq!(
        written(store).await,
        before,
        "a refused {} wrote rows",
        appt.name
    );
    let f = &appt.siu.filler_id;
    for sql in [
        format!("SELECT COUNT(*) FROM other_id WHERE table_name = 2 AND other_id = '{f}'"),
        format!("SELECT COUNT(*) FROM oscarflow_appointment WHERE filler_id = '{f}'"),
        format!(
            "SELECT COUNT(*) FROM oscarflow_appointment_message WHERE sha256 = '{}'",
            appt.sha256
        ),
    ] {
        assert_eq!(count(store, &sql).await, 0, "{sql}");
    }
}

/// An appointment as OSCAR keeps it.
#[derive(Debug, PartialEq, Eq)]
struct Kept {
    provider_no: String,
    date: String,
    start: String,
    end: String,
    status: String,
    notes: String,
}

async fn kept(store: &Store, appointment_no: i64) -> Kept {
    let r = sqlx::query(
        "SELECT provider_no, CAST(appointment_date AS CHAR) AS d, CAST(start_time AS CHAR) AS s, CAST(end_time AS CHAR) AS e, status, CAST(notes AS CHAR) AS notes FROM appointment WHERE appointment_no = ?",
    )
    .bind(appointment_no)
    .fetch_one(&store.pool)
    .await
    .unwrap_or_else(|e| panic!("appointment {appointment_no}: {e}"));
    let s = |c: &str| text_column(&r, c).expect(c).unwrap_or_default();
    Kept {
        provider_no: s("provider_no"),
        date: s("d"),
        start: s("s"),
        end: s("e"),
        status: s("status"),
        notes: s("notes"),
    }
}

/// `kept` with the slot only (provider, date, start, stored end).
async fn slot_of(store: &Store, appointment_no: i64) -> (String, String, String, String) {
    let k = kept(store, appointment_no).await;
    (k.provider_no, k.date, k.start, k.end)
}

fn slot(provider_no: &str, date: &str, start: &str, end: &str) -> (String, String, String, String) {
    (
        provider_no.to_string(),
        date.to_string(),
        start.to_string(),
        end.to_string(),
    )
}

/// Appointments of `provider_no` starting at `date start`.
async fn booked_at(store: &Store, provider_no: &str, date: &str, start: &str) -> i64 {
    count(
        store,
        &format!(
            "SELECT COUNT(*) FROM appointment WHERE provider_no = '{provider_no}' AND CAST(appointment_date AS CHAR) = '{date}' AND CAST(start_time AS CHAR) = '{start}'"
        ),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Scenarios (one per behaviour, each run on both backends)
// ---------------------------------------------------------------------------------------------

/// 1. Adjacent slots are both booked: one starting where the other ends, one ending where
///    the other starts.
async fn adjacent_slots(url: String) {
    let book = Book::open(&url).await;
    let a = book.book(s12("ADJ-A", &ALICE, "203003040900", 15)).await;
    assert_eq!(
        slot_of(&book.store, a).await,
        slot(ALPHA.1, "2030-03-04", "09:00:00", "09:14:00"),
        "OSCAR stores the slot's last minute"
    );
    let b = book.book(s12("ADJ-B", &BOB, "203003040915", 15)).await;
    let c = book.book(s12("ADJ-C", &CAROL, "203003040845", 15)).await;
    assert_eq!(
        slot_of(&book.store, b).await,
        slot(ALPHA.1, "2030-03-04", "09:15:00", "09:29:00")
    );
    assert_eq!(
        slot_of(&book.store, c).await,
        slot(ALPHA.1, "2030-03-04", "08:45:00", "08:59:00")
    );
    for no in [a, b, c] {
        assert_eq!(kept(&book.store, no).await.notes, "", "nothing flagged");
    }
}

/// 2. One shared minute, at either end, is a conflict naming the other appointment; the
///    refused message writes nothing and stays unknown (applying it again refuses again).
async fn one_minute_overlap(url: String) {
    let book = Book::open(&url).await;
    let a = book.book(s12("ONE-A", &ALICE, "203003040900", 15)).await;

    let late = appointment(&s12("ONE-B", &BOB, "203003040914", 15));
    let before = written(&book.store).await;
    assert_conflict(
        book.send_appt(&late).await,
        &[a],
        "09:14 against 09:00-09:15",
    );
    assert_nothing_of(&book.store, &late, &before).await;
    assert_conflict(book.send_appt(&late).await, &[a], "the same message again");
    assert_nothing_of(&book.store, &late, &before).await;

    let early = appointment(&s12("ONE-C", &CAROL, "203003040846", 15));
    assert_conflict(
        book.send_appt(&early).await,
        &[a],
        "08:46-09:01 against 09:00",
    );
    assert_nothing_of(&book.store, &early, &before).await;
    assert_eq!(
        booked_at(&book.store, ALPHA.1, "2030-03-04", "09:14:00").await,
        0
    );
}

/// 3. A slot inside another, around another, or identical to it is refused.
async fn containment_and_identical(url: String) {
    let book = Book::open(&url).await;
    let a = book.book(s12("CON-A", &ALICE, "203003041000", 30)).await;
    let before = written(&book.store).await;
    for (what, m) in [
        ("inside", s12("CON-IN", &BOB, "203003041010", 10)),
        ("around", s12("CON-AROUND", &CAROL, "203003040945", 60)),
        ("identical", s12("CON-SAME", &BOB, "203003041000", 30)),
        (
            "same start, longer",
            s12("CON-LONG", &CAROL, "203003041000", 45),
        ),
        (
            "same end, later start",
            s12("CON-END", &BOB, "203003041015", 15),
        ),
    ] {
        let appt = appointment(&m);
        assert_conflict(book.send_appt(&appt).await, &[a], what);
        assert_nothing_of(&book.store, &appt, &before).await;
    }
}

/// 4. Another provider's book at the same time is not a conflict.
async fn other_provider(url: String) {
    let book = Book::open(&url).await;
    let a = book.book(s12("PRV-A", &ALICE, "203003040900", 15)).await;
    let b = book
        .book(Siu {
            provider: Some(BRAVO.0),
            ..s12("PRV-B", &BOB, "203003040900", 15)
        })
        .await;
    assert_eq!(
        slot_of(&book.store, a).await,
        slot(ALPHA.1, "2030-03-04", "09:00:00", "09:14:00")
    );
    assert_eq!(
        slot_of(&book.store, b).await,
        slot(BRAVO.1, "2030-03-04", "09:00:00", "09:14:00")
    );
    // ALPHA's slot is still held.
    assert_conflict(
        book.send(s12("PRV-C", &CAROL, "203003040900", 15)).await,
        &[a],
        "ALPHA's booked slot",
    );
}

/// 5. A cancelled (S15) or no-show (S26) appointment frees its slot: the S12 refused while it
///    held the slot is booked once it no longer does.
async fn cancelled_and_no_show_free_the_slot(url: String) {
    let book = Book::open(&url).await;
    for (event, outcome, status, day) in [
        ("S15", "cancelled", "C", "20300304"),
        ("S26", "no_show", "N", "20300305"),
    ] {
        let (old, new) = (format!("FREE-{event}-OLD"), format!("FREE-{event}-NEW"));
        let start = format!("{day}0900");
        let a = book.book(s12(&old, &ALICE, &start, 15)).await;
        let waiting = appointment(&s12(&new, &BOB, &start, 15));
        assert_conflict(
            book.send_appt(&waiting).await,
            &[a],
            "while the slot is held",
        );

        let applied = book
            .send(status_change(event, &old, &ALICE))
            .await
            .unwrap_or_else(|e| panic!("{event}: {e:?}"));
        assert_eq!(applied.outcome, outcome);
        assert_eq!(kept(&book.store, a).await.status, status);

        let applied = book
            .send_appt(&waiting)
            .await
            .unwrap_or_else(|e| panic!("S12 into a slot freed by {event}: {e:?}"));
        assert_eq!(applied.outcome, "booked");
        assert!(applied.overlaps.is_empty());
        let b = applied.appointment_no.expect("booked");
        assert_ne!(a, b);
        let date = format!("{}-{}-{}", &day[..4], &day[4..6], &day[6..]);
        assert_eq!(
            slot_of(&book.store, b).await,
            slot(ALPHA.1, &date, "09:00:00", "09:14:00")
        );
        assert_eq!(kept(&book.store, b).await.notes, "", "not flagged");
    }
}

/// 6. An S13 into an occupied slot is refused and the appointment keeps its time (no archive
///    row, its version unchanged); an S13 overlapping only the appointment's own old slot is
///    allowed.
async fn reschedule(url: String) {
    let book = Book::open(&url).await;
    let a = book.book(s12("RES-A", &ALICE, "203003040900", 15)).await;
    let b = book.book(s12("RES-B", &BOB, "203003041000", 15)).await;
    let archived =
        |no: i64| format!("SELECT COUNT(*) FROM appointmentArchive WHERE appointment_no = {no}");
    let version =
        "SELECT COUNT(*) FROM oscarflow_appointment WHERE filler_id = 'RES-B' AND state = 'booked'";

    let into_a = appointment(&s13("RES-B", &BOB, "203003040905", 15));
    let before = written(&book.store).await;
    let msh7_before: String = sqlx::query_scalar(
        "SELECT message_time FROM oscarflow_appointment WHERE filler_id = 'RES-B'",
    )
    .fetch_one(&book.store.pool)
    .await
    .expect("RES-B's version");
    assert_conflict(book.send_appt(&into_a).await, &[a], "S13 into A's slot");
    assert_eq!(
        written(&book.store).await,
        before,
        "a refused S13 wrote rows"
    );
    assert_eq!(
        slot_of(&book.store, b).await,
        slot(ALPHA.1, "2030-03-04", "10:00:00", "10:14:00"),
        "B keeps its old time"
    );
    assert_eq!(count(&book.store, &archived(b)).await, 0, "no archive row");
    assert_eq!(count(&book.store, version).await, 1);
    let msh7_after: String = sqlx::query_scalar(
        "SELECT message_time FROM oscarflow_appointment WHERE filler_id = 'RES-B'",
    )
    .fetch_one(&book.store.pool)
    .await
    .expect("RES-B's version");
    assert_eq!(
        msh7_after, msh7_before,
        "the refused version was not recorded"
    );

    // Shifted by 5 minutes: overlaps only its own old slot.
    let applied = book
        .send(s13("RES-B", &BOB, "203003041005", 15))
        .await
        .unwrap_or_else(|e| panic!("S13 over its own slot: {e:?}"));
    assert_eq!(applied.outcome, "rescheduled");
    assert_eq!(applied.appointment_no, Some(b));
    assert!(applied.overlaps.is_empty());
    assert_eq!(
        slot_of(&book.store, b).await,
        slot(ALPHA.1, "2030-03-04", "10:05:00", "10:19:00")
    );
    assert_eq!(
        count(&book.store, &archived(b)).await,
        1,
        "the old version archived"
    );

    // Moved to start where A ends: adjacent, allowed.
    let applied = book
        .send(s13("RES-B", &BOB, "203003040915", 15))
        .await
        .unwrap_or_else(|e| panic!("S13 next to A: {e:?}"));
    assert_eq!(applied.outcome, "rescheduled");
    assert_eq!(
        slot_of(&book.store, b).await,
        slot(ALPHA.1, "2030-03-04", "09:15:00", "09:29:00")
    );
    // A itself, shifted over its own slot and into nobody's.
    let applied = book
        .send(s13("RES-A", &ALICE, "203003040855", 20))
        .await
        .unwrap_or_else(|e| panic!("S13 of A over its own slot: {e:?}"));
    assert_eq!(applied.outcome, "rescheduled");
    assert_eq!(
        slot_of(&book.store, a).await,
        slot(ALPHA.1, "2030-03-04", "08:55:00", "09:14:00")
    );
    // A grown by one minute into B's: refused, A unchanged.
    assert_conflict(
        book.send(s13("RES-A", &ALICE, "203003040855", 21)).await,
        &[b],
        "S13 one minute into B",
    );
    assert_eq!(
        slot_of(&book.store, a).await,
        slot(ALPHA.1, "2030-03-04", "08:55:00", "09:14:00")
    );
}

/// 7. Two writers (two pools on one database) booking one slot of one provider at once:
///    one books, the other is refused as a conflict, every round.
async fn concurrent_writers(url: String) {
    let first = Arc::new(Book::open(&url).await);
    let second = Arc::new(Book::open(&url).await);
    const ROUNDS: u32 = 20;
    for round in 0..ROUNDS {
        // 15-minute visits 20 minutes apart: rounds never overlap one another.
        let minute = 8 * 60 + round * 20;
        let start = format!("20300401{:02}{:02}", minute / 60, minute % 60);
        let start_time = format!("{:02}:{:02}:00", minute / 60, minute % 60);
        let (fa, fb) = (format!("RACE-{round}-A"), format!("RACE-{round}-B"));
        let (pa, pb) = if round % 2 == 0 {
            (&ALICE, &BOB)
        } else {
            (&BOB, &ALICE)
        };
        let ma = appointment(&s12(&fa, pa, &start, 15));
        let mb = appointment(&s12(&fb, pb, &start, 15));
        let (won, lost) = match race(&first, ma, &second, mb).await {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (a, b) => panic!("round {round}: exactly one must be booked: {a:?} / {b:?}"),
        };
        assert_eq!(won.outcome, "booked", "round {round}: {won:?}");
        assert!(won.overlaps.is_empty(), "round {round}: {won:?}");
        let no = won.appointment_no.expect("booked");
        assert_conflict(
            Err(lost),
            &[no],
            &format!("round {round}: the second writer"),
        );
        assert_eq!(
            booked_at(&first.store, ALPHA.1, "2030-04-01", &start_time).await,
            1,
            "round {round}: one appointment in the slot"
        );
        assert_eq!(
            count(
                &first.store,
                &format!("SELECT COUNT(*) FROM oscarflow_appointment WHERE filler_id IN ('{fa}', '{fb}')")
            )
            .await,
            1,
            "round {round}: one booking kept"
        );
    }
    assert_eq!(
        count(
            &first.store,
            &format!(
                "SELECT COUNT(*) FROM appointment WHERE provider_no = '{}' AND CAST(appointment_date AS CHAR) = '2030-04-01'",
                ALPHA.1
            )
        )
        .await,
        i64::from(ROUNDS)
    );
}

/// 8. `book_and_flag`: the overlapping S12 is booked, its note names the appointment(s) it
///    overlaps and `Applied.overlaps` lists them; the others are left as they were.
async fn book_and_flag(url: String) {
    let mut book = Book::open(&url).await;
    book.opts.on_conflict = OnConflict::BookAndFlag;
    let a = book.book(s12("FLAG-A", &ALICE, "203003040900", 15)).await;

    let applied = book
        .send(s12("FLAG-B", &BOB, "203003040910", 15))
        .await
        .unwrap_or_else(|e| panic!("book_and_flag books: {e:?}"));
    assert_eq!(applied.outcome, "booked");
    assert_eq!(applied.overlaps, vec![a]);
    let b = applied.appointment_no.expect("booked");
    let notes = kept(&book.store, b).await.notes;
    assert_eq!(notes, format!("oscarflow: overlaps appointment(s) {a}"));
    assert_eq!(numbers_in(&notes), BTreeSet::from([a]));

    let applied = book
        .send(s12("FLAG-C", &CAROL, "203003040905", 10))
        .await
        .unwrap_or_else(|e| panic!("book_and_flag books: {e:?}"));
    assert_eq!(applied.overlaps, vec![a, b]);
    let c = applied.appointment_no.expect("booked");
    assert_eq!(
        numbers_in(&kept(&book.store, c).await.notes),
        BTreeSet::from([a, b])
    );

    // An adjacent one is not flagged; the overlapped ones are untouched.
    assert!(book
        .send(s12("FLAG-D", &ALICE, "203003040925", 15))
        .await
        .expect("adjacent")
        .overlaps
        .is_empty());
    assert_eq!(kept(&book.store, a).await.notes, "");
    assert_eq!(
        count(
            &book.store,
            &format!(
                "SELECT COUNT(*) FROM appointment WHERE provider_no = '{}'",
                ALPHA.1
            )
        )
        .await,
        4
    );
}

/// 9. Two writers again: an S13 that names no provider (no AIP: the appointment stays with
///    its provider, as `apply` allows) moving into a slot while an S12 books that slot.
///    One of them gets the slot, the other is refused as a conflict, every round.
async fn reschedule_without_provider_racing_a_booking(url: String) {
    let first = Arc::new(Book::open(&url).await);
    let second = Arc::new(Book::open(&url).await);
    for round in 0..20u32 {
        let minute = 8 * 60 + round * 20;
        let hhmm = format!("{:02}{:02}", minute / 60, minute % 60);
        let start_time = format!("{:02}:{:02}:00", minute / 60, minute % 60);
        let (fx, fy) = (format!("MOVE-{round}-X"), format!("MOVE-{round}-Y"));
        // X is booked on another day, then moved into the slot Y books.
        let x = first
            .book(s12(&fx, &ALICE, &format!("20300602{hhmm}"), 15))
            .await;
        let move_x = appointment(&Siu {
            provider: None,
            ..s13(&fx, &ALICE, &format!("20300601{hhmm}"), 15)
        });
        let book_y = appointment(&s12(&fy, &BOB, &format!("20300601{hhmm}"), 15));
        let (rx, ry) = race(&first, move_x, &second, book_y).await;
        let in_slot = booked_at(&first.store, ALPHA.1, "2030-06-01", &start_time).await;
        assert_eq!(
            in_slot,
            1,
            "round {round}: the slot holds {in_slot} appointments (S13 {:?}, S12 {:?})",
            rx.as_ref().map(|a| a.outcome).map_err(|e| e.reason),
            ry.as_ref().map(|a| a.outcome).map_err(|e| e.reason),
        );
        match (rx, ry) {
            (Ok(moved), Err(refused)) => {
                assert_eq!(moved.outcome, "rescheduled", "round {round}");
                assert_conflict(Err(refused), &[x], &format!("round {round}: the S12"));
            }
            (Err(refused), Ok(booked)) => {
                assert_eq!(booked.outcome, "booked", "round {round}");
                let y = booked.appointment_no.expect("booked");
                assert_conflict(Err(refused), &[y], &format!("round {round}: the S13"));
                assert_eq!(
                    slot_of(&first.store, x).await,
                    slot(ALPHA.1, "2030-06-02", &start_time, &{
                        let end = minute + 14;
                        format!("{:02}:{:02}:00", end / 60, end % 60)
                    }),
                    "round {round}: X keeps its time"
                );
            }
            (a, b) => panic!("round {round}: exactly one must get the slot: {a:?} / {b:?}"),
        }
    }
}

/// The whole pipeline (`oscarflow replay --pipeline pipelines/siu_inbox.toml.example`):
/// adjacent bookings from one file are both booked; an overlapping one in a later file is
/// dead-lettered with reason `conflict`, its detail naming the appointment it overlaps.
async fn replay_pipeline(url: String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = common::repo().join("pipelines/siu_inbox.toml.example");
    let run = |file: &Path| -> serde_json::Value {
        // Both backends hold the clinic already (`sqlite_db`, `with_test_db`): no `--seed`.
        let out = common::replay_command(&[file], &url, None)
            .arg("--pipeline")
            .arg(&pipeline)
            .arg("--json")
            .output()
            .expect("run oscarflow replay");
        assert!(
            out.status.success(),
            "replay {}: {}\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("replay --json")
    };

    let first = dir.path().join("1_adjacent.hl7");
    let text = [
        hl7(&s12("PIPE-A", &ALICE, "203003040900", 15)),
        hl7(&s12("PIPE-B", &BOB, "203003040915", 15)),
    ]
    .join("\r");
    std::fs::write(&first, text).expect("write");
    let report = run(&first);
    assert_eq!(report["totals"]["dead_lettered"], 0, "{report:#}");
    let booked: Vec<&serde_json::Value> = report["files"][0]["appointments"]
        .as_array()
        .expect("appointments")
        .iter()
        .collect();
    assert_eq!(booked.len(), 2, "{report:#}");
    assert!(
        booked.iter().all(|a| a["outcome"] == "booked"),
        "{report:#}"
    );

    let store = Store::open(&url).await.expect("open");
    let a: i64 = sqlx::query_scalar(
        "SELECT appointment_no FROM oscarflow_appointment WHERE filler_id = 'PIPE-A'",
    )
    .fetch_one(&store.pool)
    .await
    .expect("PIPE-A booked");
    assert_eq!(
        slot_of(&store, a).await,
        slot(ALPHA.1, "2030-03-04", "09:00:00", "09:14:00")
    );

    let second = dir.path().join("2_overlap.hl7");
    std::fs::write(&second, hl7(&s12("PIPE-C", &CAROL, "203003040914", 1))).expect("write");
    let report = run(&second);
    assert_eq!(report["totals"]["dead_lettered"], 1, "{report:#}");
    assert_eq!(report["files"][0]["reasons"]["conflict"], 1, "{report:#}");
    let dead = sqlx::query(
        "SELECT reason, error_kind, CAST(detail AS CHAR) AS detail FROM oscarflow_dead_letter",
    )
    .fetch_all(&store.pool)
    .await
    .expect("dead letters");
    assert_eq!(dead.len(), 1);
    let col = |c: &str| text_column(&dead[0], c).expect(c).unwrap_or_default();
    assert_eq!(col("reason"), "conflict");
    assert_eq!(col("error_kind"), "data");
    assert_eq!(
        numbers_in(&col("detail")),
        BTreeSet::from([a]),
        "{}",
        col("detail")
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM oscarflow_appointment WHERE filler_id = 'PIPE-C'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &store,
            &format!(
                "SELECT COUNT(*) FROM appointment WHERE provider_no = '{}'",
                ALPHA.1
            )
        )
        .await,
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Per backend
// ---------------------------------------------------------------------------------------------

/// A fresh embedded store seeded with the clinic; its URL (each scenario opens its own pools).
async fn sqlite_db(dir: &Path) -> String {
    let store = common::seeded_store(dir).await;
    store.pool.close().await;
    common::sqlite_url(dir)
}

/// `scenario` as two tests: `$sqlite` on the embedded store, `$mariadb` on a fresh clone of
/// OSCAR's schema (skipped with a notice when no MariaDB is configured, failed under CI).
macro_rules! on_both_backends {
    ($scenario:ident, $sqlite:ident, $mariadb:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().expect("tempdir");
            $scenario(sqlite_db(dir.path()).await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $mariadb() {
            common::mariadb::with_test_db($scenario).await;
        }
    };
}

on_both_backends!(
    adjacent_slots,
    adjacent_slots_are_both_booked_on_sqlite,
    adjacent_slots_are_both_booked_on_mariadb
);
on_both_backends!(
    one_minute_overlap,
    a_one_minute_overlap_is_refused_naming_the_other_appointment_and_writes_nothing_on_sqlite,
    a_one_minute_overlap_is_refused_naming_the_other_appointment_and_writes_nothing_on_mariadb
);
on_both_backends!(
    containment_and_identical,
    a_slot_inside_around_or_identical_to_another_is_refused_on_sqlite,
    a_slot_inside_around_or_identical_to_another_is_refused_on_mariadb
);
on_both_backends!(
    other_provider,
    another_provider_at_the_same_time_is_not_a_conflict_on_sqlite,
    another_provider_at_the_same_time_is_not_a_conflict_on_mariadb
);
on_both_backends!(
    cancelled_and_no_show_free_the_slot,
    cancelled_and_no_show_appointments_do_not_block_a_new_booking_on_sqlite,
    cancelled_and_no_show_appointments_do_not_block_a_new_booking_on_mariadb
);
on_both_backends!(
    reschedule,
    a_reschedule_into_an_occupied_slot_is_refused_and_one_over_its_own_slot_is_allowed_on_sqlite,
    a_reschedule_into_an_occupied_slot_is_refused_and_one_over_its_own_slot_is_allowed_on_mariadb
);
on_both_backends!(
    concurrent_writers,
    two_concurrent_writers_of_one_slot_book_it_once_and_refuse_the_other_on_sqlite,
    two_concurrent_writers_of_one_slot_book_it_once_and_refuse_the_other_on_mariadb
);
on_both_backends!(
    book_and_flag,
    book_and_flag_books_the_overlap_and_names_the_overlapped_appointments_on_sqlite,
    book_and_flag_books_the_overlap_and_names_the_overlapped_appointments_on_mariadb
);
on_both_backends!(
    replay_pipeline,
    the_siu_pipeline_books_adjacent_slots_and_dead_letters_an_overlap_as_conflict_on_sqlite,
    the_siu_pipeline_books_adjacent_slots_and_dead_letters_an_overlap_as_conflict_on_mariadb
);
on_both_backends!(
    reschedule_without_provider_racing_a_booking,
    a_reschedule_naming_no_provider_racing_a_booking_gets_the_slot_at_most_once_on_sqlite,
    a_reschedule_naming_no_provider_racing_a_booking_gets_the_slot_at_most_once_on_mariadb
);
