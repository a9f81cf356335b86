//! OSCAR's appointment book from HL7 SIU scheduling messages, end to end through
//! `oscarflow replay` and `oscarflow dlq` with the example pipeline
//! `pipelines/siu_inbox.toml.example`, on the embedded SQLite store and on OSCAR's real
//! schema in MariaDB.
//!
//! What the suite covers:
//! 1. **Golden book.** `fixtures/siu/01…05` replayed in order (one replay per file, one
//!    database) write the `appointment`, `appointmentArchive` and `other_id` (table_name 2)
//!    rows of `tests/golden/appointments.txt` — the same text on both backends — and each
//!    replay reports what every message did (booked, rescheduled, modified, cancelled,
//!    no_show, deleted) or, for `04_refused.hl7`, why each message is a dead letter.
//! 2. **Re-delivery changes nothing.** The five files again, and the messages of 01 and 02
//!    in one file: the same book byte for byte, no new archive rows, every applied message a
//!    duplicate, every refused one dead-lettered again.
//! 3. **An S13 before its S12** is a dead letter (`appointment_unknown`) keeping its bytes;
//!    once the S12 has arrived, `oscarflow dlq retry` applies it.
//! 4. **Versions apply in order** by filler id within one file; an older version (by MSH-7)
//!    arriving later is `superseded` and changes nothing.
//! 5. **Public SIU samples** (`../shared/corpus/public`), which carry no BC health number or
//!    no usable appointment, are each dead-lettered with a reason and book nothing.
//!
//! The canonical dump names each row by the filler id (SCH-2) its appointment was booked
//! under, never by `appointment_no` (messages of one file commit in either order), and
//! leaves out auto-increment ids and the wall-clock columns (`createdatetime`,
//! `updatedatetime`). `UPDATE_GOLDEN=1` rewrites the golden file from SQLite; review the diff.
//!
//! Messages written here are synthetic, for the charts of `fixtures/sql/bc_clinic.sql`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use oscarflow::store::{text_column, Store};

/// The fixtures, in the order they are replayed.
const FIXTURES: [&str; 5] = [
    "01_book.hl7",
    "02_change.hl7",
    "03_delete.hl7",
    "04_refused.hl7",
    "05_freed_slot.hl7",
];

/// What each fixture's messages do, in order: (event, outcome, filler id).
const APPLIED: [&[(&str, &str, &str)]; 5] = [
    &[
        ("S12", "booked", "A-1001"),
        ("S12", "booked", "A-1002"),
        ("S12", "booked", "A-1003"),
    ],
    &[
        ("S13", "rescheduled", "A-1001"),
        ("S14", "modified", "A-1002"),
        ("S15", "cancelled", "A-1003"),
        ("S26", "no_show", "A-1002"),
    ],
    &[("S12", "booked", "A-1004"), ("S17", "deleted", "A-1004")],
    &[],
    &[("S12", "booked", "A-2005")],
];

/// The dead letters of `04_refused.hl7`, by control id (MSH-10): its reason.
const REFUSED: [(&str, &str); 4] = [
    ("ZZC0010", "conflict"),
    ("ZZC0011", "appointment_unknown"),
    ("ZZC0012", "patient_unmatched"),
    ("ZZC0013", "provider_unknown"),
];

// ---------------------------------------------------------------------------------------------
// 1. Golden book
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siu_fixtures_write_the_golden_appointment_book_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    check_golden_book(&common::sqlite_url(tmp.path()), tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siu_fixtures_write_the_golden_appointment_book_on_oscars_mariadb_schema() {
    common::mariadb::with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        check_golden_book(&url, tmp.path()).await;
    })
    .await;
}

async fn check_golden_book(db: &str, tmp: &Path) {
    let pipeline = siu_pipeline(tmp);
    replay_fixtures(db, &pipeline).await;
    let book = Book::read(db).await;
    assert_book_as_the_fixtures_describe(&book);
    compare_with_golden(db, &book.text());
}

/// The facts the fixtures are written to produce, independent of the golden file.
fn assert_book_as_the_fixtures_describe(book: &Book) {
    let slot = |filler: &str| {
        let r = book
            .appointments
            .get(filler)
            .unwrap_or_else(|| panic!("no appointment for {filler}"));
        [
            col(r, "provider_no"),
            col(r, "appointment_date"),
            col(r, "start_time"),
            col(r, "end_time"),
            col(r, "status"),
        ]
    };
    // Moved to the next day, 30 minutes; OSCAR keeps the slot's last minute.
    assert_eq!(
        slot("A-1001"),
        ["100001", "2030-03-05", "10:00:00", "10:29:00", "t"]
    );
    assert_eq!(
        col(&book.appointments["A-1001"], "name"),
        "TESTPATIENT,ALICE"
    );
    assert_eq!(
        slot("A-1002"),
        ["100002", "2030-03-04", "09:00:00", "09:19:00", "N"]
    );
    assert_eq!(
        col(&book.appointments["A-1002"], "reason"),
        "Blood pressure review"
    );
    // Adjacent to A-1001's first slot (09:00-09:14): booked, then cancelled.
    assert_eq!(
        slot("A-1003"),
        ["100001", "2030-03-04", "09:15:00", "09:29:00", "C"]
    );
    // Booked into A-1003's cancelled slot.
    assert_eq!(
        slot("A-2005"),
        ["100001", "2030-03-04", "09:15:00", "09:29:00", "t"]
    );
    // Deleted: archived, gone from the book, its filler id kept.
    assert!(!book.appointments.contains_key("A-1004"));
    let archived = |filler: &str| book.archive.get(filler).map_or(0, Vec::len);
    assert_eq!(
        ["A-1001", "A-1002", "A-1003", "A-1004", "A-2005"].map(archived),
        [1, 2, 1, 1, 0],
        "one archive row per change"
    );
    assert_eq!(
        col(&book.archive["A-1001"][0], "start_time"),
        "09:00:00",
        "the archive keeps the version before the change"
    );
    assert_eq!(
        book.other_ids
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["A-1001", "A-1002", "A-1003", "A-1004", "A-2005"],
        "no refused message left an appointment or an other_id row"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Re-delivery
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_siu_messages_change_nothing_and_refused_ones_stay_dead_letters_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    check_redelivery(&common::sqlite_url(tmp.path()), tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_siu_messages_change_nothing_and_refused_ones_stay_dead_letters_on_oscars_mariadb_schema(
) {
    common::mariadb::with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        check_redelivery(&url, tmp.path()).await;
    })
    .await;
}

async fn check_redelivery(db: &str, tmp: &Path) {
    let pipeline = siu_pipeline(tmp);
    let first_refusals = replay_fixtures(db, &pipeline).await;
    let before = Book::read(db).await;
    let counted = row_counts(db).await;

    // Every file again.
    let fillers = &before.fillers;
    for (i, name) in FIXTURES.iter().enumerate() {
        let report = replay(db, &[fixture(name)], &pipeline);
        let file = &report["files"][0];
        let again: Vec<(&str, &str, &str)> = APPLIED[i]
            .iter()
            .map(|(event, _, filler)| (*event, "unchanged", *filler))
            .collect();
        assert_appointments(file, &again, fillers);
        let dup = APPLIED[i].len() as u64;
        if *name == "04_refused.hl7" {
            let ids = assert_refused(db, file);
            assert_eq!(ids, first_refusals, "the same dead letters, not new copies");
        } else {
            assert_eq!(tally(file), [dup, 0, dup, 0], "{name}: {file}");
        }
    }
    // Each refused message failed twice and is still open.
    let open = dlq_list(db);
    assert_eq!(open.len(), REFUSED.len(), "{open:?}");
    for d in &open {
        assert_eq!(d["attempts"], 2, "{d}");
        assert_eq!(d["status"], "open", "{d}");
    }

    // The messages of 01 and 02 in one file.
    let both = tmp.join("01_and_02.hl7");
    let mut bytes = std::fs::read(fixture(FIXTURES[0])).unwrap();
    bytes.extend(std::fs::read(fixture(FIXTURES[1])).unwrap());
    std::fs::write(&both, bytes).unwrap();
    let report = replay(db, &[both], &pipeline);
    let file = &report["files"][0];
    let again: Vec<(&str, &str, &str)> = APPLIED[0]
        .iter()
        .chain(APPLIED[1])
        .map(|(event, _, filler)| (*event, "unchanged", *filler))
        .collect();
    assert_appointments(file, &again, fillers);
    assert_eq!(tally(file), [7, 0, 7, 0], "{file}");

    let after = Book::read(db).await;
    assert_eq!(
        after.text(),
        before.text(),
        "re-delivery changed the appointment book"
    );
    assert_eq!(
        row_counts(db).await,
        counted,
        "appointment, appointmentArchive, other_id and applied-message rows"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. An S13 before its S12
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s13_before_its_s12_is_a_dead_letter_that_dlq_retry_applies_after_the_s12_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    check_s13_before_s12(&common::sqlite_url(tmp.path()), tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s13_before_its_s12_is_a_dead_letter_that_dlq_retry_applies_after_the_s12_on_oscars_mariadb_schema(
) {
    common::mariadb::with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        check_s13_before_s12(&url, tmp.path()).await;
    })
    .await;
}

async fn check_s13_before_s12(db: &str, tmp: &Path) {
    let pipeline = siu_pipeline(tmp);
    let book = Siu {
        event: "S12",
        control_id: "ZZT3001",
        sent: "20300301080000",
        filler: "A-4001",
        patient: BOB,
        reason: "FOLLOW^Follow-up",
        slot: Some(("203004011400", 15)),
        provider: Some("91002^TESTDOC^BRAVO"),
    };
    let move_it = Siu {
        event: "S13",
        control_id: "ZZT3002",
        sent: "20300301090000",
        slot: Some(("203004021430", 20)),
        ..book
    };
    let s13 = write(tmp, "s13.hl7", &[&move_it]);
    let s12 = write(tmp, "s12.hl7", &[&book]);

    // The S13 arrives first: a dead letter, its bytes kept exactly.
    let report = replay(db, &[&s13], &pipeline);
    let file = &report["files"][0];
    assert_eq!(tally(file), [1, 0, 0, 1], "{file}");
    assert_eq!(file["reasons"], json!({"appointment_unknown": 1}), "{file}");
    assert!(file.get("appointments").is_none(), "{file}");
    let id = file["dead_letter_ids"][0].as_str().unwrap().to_string();
    let shown = dlq_show(db, &id);
    assert_eq!(shown["reason"], "appointment_unknown", "{shown}");
    assert_eq!(shown["status"], "open", "{shown}");
    assert_eq!(
        dlq_raw(db, &id),
        std::fs::read(&s13).unwrap(),
        "the dead letter holds the S13's bytes"
    );
    assert!(Book::read(db).await.appointments.is_empty());

    // Its S12 arrives.
    let report = replay(db, &[&s12], &pipeline);
    let booked = Book::read(db).await;
    assert_appointments(
        &report["files"][0],
        &[("S12", "booked", "A-4001")],
        &booked.fillers,
    );

    // Re-driven, the S13 applies: the new time, the booked one archived.
    let dir = pipeline.parent().unwrap().to_str().unwrap();
    let retried = oscarflow(&["dlq", "retry", &id, "--pipelines", dir, "--database", db]);
    assert_eq!(retried.status.code(), Some(0), "{}", describe(&retried));
    let out = String::from_utf8_lossy(&retried.stdout);
    assert!(out.contains(&format!("{id}  resolved")), "{out}");
    assert_eq!(dlq_show(db, &id)["status"], "resolved");
    assert!(dlq_list(db).is_empty(), "no dead letter left open");

    let book_after = Book::read(db).await;
    let a = &book_after.appointments["A-4001"];
    assert_eq!(
        [
            col(a, "provider_no"),
            col(a, "appointment_date"),
            col(a, "start_time"),
            col(a, "end_time"),
            col(a, "status"),
        ],
        ["100002", "2030-04-02", "14:30:00", "14:49:00", "t"]
    );
    let archived = &book_after.archive["A-4001"];
    assert_eq!(
        archived.len(),
        1,
        "one archive row: the version the S13 replaced"
    );
    assert_eq!(
        [
            col(&archived[0], "appointment_date"),
            col(&archived[0], "start_time"),
            col(&archived[0], "end_time"),
        ],
        ["2030-04-01", "14:00:00", "14:14:00"]
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Versions of one appointment
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_of_one_appointment_apply_in_order_and_an_older_one_is_superseded_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    check_versions(&common::sqlite_url(tmp.path()), tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_of_one_appointment_apply_in_order_and_an_older_one_is_superseded_on_oscars_mariadb_schema(
) {
    common::mariadb::with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        check_versions(&url, tmp.path()).await;
    })
    .await;
}

async fn check_versions(db: &str, tmp: &Path) {
    let pipeline = siu_pipeline(tmp);
    let booked = Siu {
        event: "S12",
        control_id: "ZZT4001",
        sent: "20300401080000",
        filler: "A-5001",
        patient: CAROL,
        reason: "FOLLOW^Follow-up",
        slot: Some(("203004101000", 15)),
        provider: Some("91003^TESTDOC^CHARLIE"),
    };
    let reason_a = Siu {
        event: "S14",
        control_id: "ZZT4002",
        sent: "20300401080100",
        reason: "RSNA^Reason A",
        ..booked
    };
    let reason_b = Siu {
        control_id: "ZZT4003",
        sent: "20300401080200",
        reason: "RSNB^Reason B",
        ..reason_a
    };
    let file = write(tmp, "versions.hl7", &[&booked, &reason_a, &reason_b]);
    let report = replay(db, &[&file], &pipeline);
    let book = Book::read(db).await;
    let fillers = &book.fillers;
    assert_appointments(
        &report["files"][0],
        &[
            ("S12", "booked", "A-5001"),
            ("S14", "modified", "A-5001"),
            ("S14", "modified", "A-5001"),
        ],
        fillers,
    );
    assert_eq!(col(&book.appointments["A-5001"], "reason"), "Reason B");
    let reasons = |b: &Book| -> Vec<String> {
        b.archive["A-5001"]
            .iter()
            .map(|r| col(r, "reason").to_string())
            .collect()
    };
    assert_eq!(
        reasons(&book),
        ["Follow-up", "Reason A"],
        "each version archived before the next, in MSH-7 order"
    );

    // A version older (by MSH-7) than the last applied one arrives late.
    let late = Siu {
        control_id: "ZZT4004",
        sent: "20300401080130",
        reason: "RSNC^Reason C",
        ..reason_a
    };
    let late_file = write(tmp, "late.hl7", &[&late]);
    let report = replay(db, &[&late_file], &pipeline);
    let file = &report["files"][0];
    assert_appointments(file, &[("S14", "superseded", "A-5001")], fillers);
    assert_eq!(tally(file), [1, 0, 1, 0], "a dup, not an import: {file}");
    let after = Book::read(db).await;
    assert_eq!(
        after.text(),
        book.text(),
        "a superseded version changes nothing"
    );
    assert_eq!(col(&after.appointments["A-5001"], "reason"), "Reason B");
}

/// Regression: an S13 naming another provider made its lock row inside the booking
/// transaction, on another connection, and waited on that transaction for ever (the pool's
/// one SQLite connection; the row lock on MariaDB): the pipeline stalled. It moves the
/// appointment to the new provider's book.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_to_another_provider_moves_the_appointment_to_that_providers_book_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    check_provider_move(&common::sqlite_url(tmp.path()), tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_to_another_provider_moves_the_appointment_to_that_providers_book_on_oscars_mariadb_schema(
) {
    common::mariadb::with_test_db(|url| async move {
        let tmp = tempfile::tempdir().unwrap();
        check_provider_move(&url, tmp.path()).await;
    })
    .await;
}

async fn check_provider_move(db: &str, tmp: &Path) {
    let pipeline = siu_pipeline(tmp);
    let booked = Siu {
        event: "S12",
        control_id: "ZZT6001",
        sent: "20300501080000",
        filler: "A-6001",
        patient: BOB,
        reason: "FOLLOW^Follow-up",
        slot: Some(("203005101000", 15)),
        provider: Some("91002^TESTDOC^BRAVO"),
    };
    let moved = Siu {
        event: "S13",
        control_id: "ZZT6002",
        sent: "20300501080100",
        slot: Some(("203005101030", 15)),
        provider: Some("91003^TESTDOC^CHARLIE"),
        ..booked
    };
    // A later change that names no provider keeps the one it has.
    let no_provider = Siu {
        event: "S14",
        control_id: "ZZT6003",
        sent: "20300501080200",
        reason: "RSNM^Moved",
        provider: None,
        ..moved
    };
    let file = write(tmp, "moved.hl7", &[&booked, &moved, &no_provider]);
    let report = replay(db, &[&file], &pipeline);
    let book = Book::read(db).await;
    assert_appointments(
        &report["files"][0],
        &[
            ("S12", "booked", "A-6001"),
            ("S13", "rescheduled", "A-6001"),
            ("S14", "modified", "A-6001"),
        ],
        &book.fillers,
    );
    let row = &book.appointments["A-6001"];
    assert_eq!(col(row, "provider_no"), "100003");
    assert_eq!(col(row, "start_time"), "10:30:00");
    assert_eq!(col(row, "reason"), "Moved");
}

/// An S12 for a filler id that was booked and then deleted is not silently dropped: it is a
/// dead letter naming why (a re-delivery of the first S12 still changes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_s12_for_a_deleted_filler_id_is_a_dead_letter_not_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(tmp.path());
    let pipeline = siu_pipeline(tmp.path());
    let booked = Siu {
        event: "S12",
        control_id: "ZZT7001",
        sent: "20300601080000",
        filler: "A-7001",
        patient: CAROL,
        reason: "FOLLOW^Follow-up",
        slot: Some(("203006101000", 15)),
        provider: Some("91001^TESTDOC^ALPHA"),
    };
    let deleted = Siu {
        event: "S17",
        control_id: "ZZT7002",
        sent: "20300601080100",
        slot: None,
        provider: None,
        ..booked
    };
    let first = write(tmp.path(), "first.hl7", &[&booked, &deleted]);
    replay(&db, &[&first], &pipeline);
    let again = Siu {
        control_id: "ZZT7003",
        sent: "20300601080200",
        slot: Some(("203006111000", 15)),
        ..booked
    };
    let file = write(tmp.path(), "again.hl7", &[&again]);
    let report = replay(&db, &[&file], &pipeline);
    let f = &report["files"][0];
    assert_eq!(f["dead_lettered"], 1, "{f}");
    assert_eq!(f["reasons"]["appointment_unknown"], 1, "{f}");
    let replayed = replay(&db, &[&first], &pipeline);
    assert_eq!(replayed["files"][0]["duplicates"], 2, "{replayed}");
    assert!(Book::read(&db).await.appointments.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 5. Public samples
// ---------------------------------------------------------------------------------------------

/// Real SIU samples nobody here wrote: (file under `../shared/corpus/public`, the reason it is
/// refused). Their patients carry no BC health number (`PID-3` has no `JHN`/`PHN`), one
/// books a slot four days long, one has no filler id (`SCH-2`).
const PUBLIC_SAMPLES: [(&str, &str); 4] = [
    ("fhir-converter/SIU-S12-01.hl7", "patient_unmatched"),
    ("fhir-converter/SIU-S12-02.hl7", "patient_unmatched"),
    ("fhir-converter/SIU-S12_1.hl7", "malformed"),
    (
        "node-hl7-complete/valid/corepoint-health/siu-example.hl7",
        "missing_segment",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_siu_samples_are_each_dead_lettered_with_a_reason_and_book_nothing() {
    let Some(corpus) = common::shared_dir("corpus/public") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(tmp.path());
    let pipeline = siu_pipeline(tmp.path());
    let files: Vec<PathBuf> = PUBLIC_SAMPLES.iter().map(|(f, _)| corpus.join(f)).collect();
    let report = replay(&db, &files, &pipeline);
    let reports = report["files"].as_array().unwrap();
    assert_eq!(reports.len(), PUBLIC_SAMPLES.len(), "{report}");
    for (path, (name, reason)) in files.iter().zip(PUBLIC_SAMPLES) {
        let file = reports
            .iter()
            .find(|f| f["input"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no report for {name}: {report}"));
        assert_eq!(tally(file), [1, 0, 0, 1], "{name}: {file}");
        assert_eq!(file["reasons"], json!({ reason: 1 }), "{name}: {file}");
        assert!(file.get("appointments").is_none(), "{name}: {file}");
        let id = file["dead_letter_ids"][0].as_str().unwrap();
        let shown = dlq_show(&db, id);
        assert_eq!(shown["reason"], reason, "{name}: {shown}");
        assert!(
            !shown["detail"].as_str().unwrap_or("").is_empty(),
            "{name}: the dead letter says why: {shown}"
        );
        assert_eq!(
            dlq_raw(&db, id),
            std::fs::read(path).unwrap(),
            "{name}: the dead letter keeps the sample's bytes"
        );
    }
    let book = Book::read(&db).await;
    assert!(book.appointments.is_empty(), "{}", book.text());
    assert!(book.archive.is_empty(), "{}", book.text());
    assert!(book.other_ids.is_empty(), "{}", book.text());
}

// ---------------------------------------------------------------------------------------------
// Replaying and checking reports
// ---------------------------------------------------------------------------------------------

/// `pipelines/siu_inbox.toml.example` as `<tmp>/pipelines/siu_inbox.toml` (the folder
/// `dlq retry --pipelines` finds it in by name).
fn siu_pipeline(tmp: &Path) -> PathBuf {
    let dir = tmp.join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("siu_inbox.toml");
    std::fs::copy(
        common::repo().join("pipelines/siu_inbox.toml.example"),
        &path,
    )
    .unwrap();
    path
}

fn fixture(name: &str) -> PathBuf {
    common::repo().join("fixtures/siu").join(name)
}

/// `oscarflow replay FILES --pipeline P --json` (seeding an embedded store); the report.
fn replay<P: AsRef<std::ffi::OsStr>>(db: &str, files: &[P], pipeline: &Path) -> Value {
    let seed = common::clinic_seed(db);
    let o = common::replay_command(files, db, seed.as_deref())
        .arg("--pipeline")
        .arg(pipeline)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)))
}

/// Replays the five fixtures in order, one replay each, and checks every report; returns
/// the ids of 04's dead letters.
async fn replay_fixtures(db: &str, pipeline: &Path) -> BTreeSet<String> {
    let mut reports = Vec::new();
    for name in FIXTURES {
        let report = replay(db, &[fixture(name)], pipeline);
        assert_eq!(
            report["files"].as_array().map(Vec::len),
            Some(1),
            "{report}"
        );
        reports.push(report["files"][0].clone());
    }
    let fillers = Book::read(db).await.fillers;
    let mut refused = BTreeSet::new();
    for ((name, file), applied) in FIXTURES.iter().zip(&reports).zip(APPLIED) {
        assert_appointments(file, applied, &fillers);
        let n = applied.len() as u64;
        if *name == "04_refused.hl7" {
            refused = assert_refused(db, file);
        } else {
            assert_eq!(tally(file), [n, n, 0, 0], "{name}: {file}");
            assert_eq!(file["status"], "delivered", "{name}: {file}");
        }
    }
    refused
}

/// A file's report in numbers: messages found, imported, duplicates (`dup`), dead-lettered.
fn tally(file: &Value) -> [u64; 4] {
    ["messages_found", "imported", "duplicates", "dead_lettered"]
        .map(|k| file[k].as_u64().unwrap_or_else(|| panic!("no {k}: {file}")))
}

/// The report's appointments are `want` (event, outcome, filler id), message by message.
fn assert_appointments(
    file: &Value,
    want: &[(&str, &str, &str)],
    fillers: &BTreeMap<String, String>,
) {
    let got: Vec<(u64, String, String, String)> = file
        .get("appointments")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let no = a["appointment_no"].to_string();
            let filler = fillers
                .get(&no)
                .cloned()
                .unwrap_or_else(|| format!("appointment_no {no} (no other_id row)"));
            (
                a["message"].as_u64().unwrap(),
                a["event"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
                filler,
            )
        })
        .collect();
    let want: Vec<(u64, String, String, String)> = want
        .iter()
        .enumerate()
        .map(|(i, (e, o, f))| (i as u64 + 1, e.to_string(), o.to_string(), f.to_string()))
        .collect();
    assert_eq!(got, want, "{}: {file}", file["input"]);
}

/// `04_refused.hl7`'s report: four dead letters, each the message its control id names, with
/// its reason and its bytes. Returns their ids.
fn assert_refused(db: &str, file: &Value) -> BTreeSet<String> {
    let reasons: BTreeMap<&str, u32> = REFUSED.iter().map(|(_, r)| (*r, 1)).collect();
    assert_eq!(file["reasons"], json!(reasons), "{file}");
    let n = REFUSED.len() as u64;
    assert_eq!(tally(file), [n, 0, 0, n], "{file}");
    assert!(file.get("appointments").is_none(), "{file}");
    let fixture_text = std::fs::read_to_string(fixture("04_refused.hl7")).unwrap();
    let mut got = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for id in file["dead_letter_ids"].as_array().unwrap() {
        let id = id.as_str().unwrap();
        let raw = String::from_utf8(dlq_raw(db, id)).unwrap();
        assert!(
            raw.starts_with("MSH|") && fixture_text.contains(&raw),
            "dead letter {id} holds one message of the file: {raw:?}"
        );
        assert_eq!(raw.matches("MSH|").count(), 1, "{raw:?}");
        let control = raw.split('\r').next().unwrap().split('|').nth(9).unwrap();
        let shown = dlq_show(db, id);
        got.insert(
            control.to_string(),
            shown["reason"].as_str().unwrap().to_string(),
        );
        ids.insert(id.to_string());
    }
    let want: BTreeMap<String, String> = REFUSED
        .iter()
        .map(|(c, r)| (c.to_string(), r.to_string()))
        .collect();
    assert_eq!(got, want, "each message of 04 refused for its reason");
    ids
}

// ---------------------------------------------------------------------------------------------
// The dead-letter CLI
// ---------------------------------------------------------------------------------------------

fn oscarflow(args: &[&str]) -> Output {
    std::process::Command::new(common::bin())
        .args(args)
        .env_remove("OSCARFLOW_DATABASE_URL")
        .output()
        .unwrap()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn dlq_show(db: &str, id: &str) -> Value {
    let o = oscarflow(&["dlq", "show", id, "--json", "--database", db]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn dlq_raw(db: &str, id: &str) -> Vec<u8> {
    let o = oscarflow(&["dlq", "show", id, "--raw", "--database", db]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    o.stdout
}

/// The open dead letters.
fn dlq_list(db: &str) -> Vec<Value> {
    let o = oscarflow(&["dlq", "list", "--json", "--database", db]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Synthetic messages
// ---------------------------------------------------------------------------------------------

/// PID segments of the seeded charts, as the fixtures write them.
const BOB: &str = "PID|1||ZZMRN0029^^^ZZHOSP^MR~9000000029^^^BC^JHN||TESTPATIENT^BOB||19750630|M|||1 ZZTEST AVENUE^^TESTVILLE^BC";
const CAROL: &str = "PID|1||ZZMRN0037^^^ZZHOSP^MR~9000000037^^^BC^JHN||ZZTEST^CAROL||19900303|F|||1 ZZTEST AVENUE^^TESTVILLE^BC";

/// One scheduling message in the fixtures' style.
#[derive(Clone, Copy)]
struct Siu {
    event: &'static str,
    control_id: &'static str,
    /// MSH-7: the order of versions.
    sent: &'static str,
    /// SCH-2.
    filler: &'static str,
    /// The PID segment.
    patient: &'static str,
    /// SCH-6 (code^text).
    reason: &'static str,
    /// Start (SCH-11.4) and minutes (SCH-9), for S12/S13/S14.
    slot: Option<(&'static str, u32)>,
    /// AIP-3.
    provider: Option<&'static str>,
}

impl Siu {
    fn hl7(&self) -> String {
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
        sch[25] = "Booked".into();
        let mut segments = vec![
            format!(
                "MSH|^~\\&|ZZSCHED|ZZHOSP|OSCAR|ZZCLINIC|{}||SIU^{e}^SIU_{e}|{}|P|2.5.1",
                self.sent,
                self.control_id,
                e = self.event
            ),
            sch.join("|"),
            self.patient.to_string(),
            "RGS|1".into(),
            "AIS|1||CONSULT^Consultation".into(),
            "AIL|1||ROOM1^^^ZZCLINIC^^^^^Room 1".into(),
        ];
        if let Some(p) = self.provider {
            segments.push(format!("AIP|1||{p}|D^Doctor"));
        }
        segments.iter().map(|s| format!("{s}\r")).collect()
    }
}

/// `messages` in one file `<tmp>/<name>`.
fn write(tmp: &Path, name: &str, messages: &[&Siu]) -> PathBuf {
    let path = tmp.join(name);
    let text: String = messages.iter().map(|m| m.hl7()).collect();
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// The canonical dump
// ---------------------------------------------------------------------------------------------

/// A row: its columns in order, as text (`None`: NULL).
type Row = Vec<(&'static str, Option<String>)>;

fn col<'a>(row: &'a Row, name: &str) -> &'a str {
    row.iter()
        .find(|(c, _)| *c == name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .1
        .as_deref()
        .unwrap_or("NULL")
}

/// The columns of `appointmentArchive` and `appointment` compared, in OSCAR's order: all but
/// the ids and the wall-clock `createdatetime` / `updatedatetime`.
const COLUMNS: [&str; 22] = [
    "provider_no",
    "appointment_date",
    "start_time",
    "end_time",
    "name",
    "demographic_no",
    "program_id",
    "notes",
    "reason",
    "location",
    "resources",
    "type",
    "style",
    "billing",
    "status",
    "imported_status",
    "creator",
    "lastupdateuser",
    "remarks",
    "urgency",
    "creatorSecurityId",
    "bookingSource",
];

/// OSCAR's appointment book as the tests compare it, by filler id.
struct Book {
    /// `appointment` rows.
    appointments: BTreeMap<String, Row>,
    /// `appointmentArchive` rows, oldest first.
    archive: BTreeMap<String, Vec<Row>>,
    /// `other_id` rows of appointments (`table_name` 2).
    other_ids: BTreeMap<String, Row>,
    /// `appointment_no` → filler id.
    fillers: BTreeMap<String, String>,
}

impl Book {
    async fn read(db: &str) -> Book {
        let store = Store::open(db).await.expect("open the store");
        let other = rows(
            &store,
            "other_id",
            "table_id",
            &["table_name", "other_key", "other_id", "deleted"],
            "table_name = 2",
        )
        .await;
        let mut fillers = BTreeMap::new();
        let mut other_ids = BTreeMap::new();
        for (no, _, row) in other {
            let filler = col(&row, "other_id").to_string();
            let earlier = fillers.insert(no.clone(), filler.clone());
            assert!(earlier.is_none(), "two other_id rows for appointment {no}");
            let earlier = other_ids.insert(filler.clone(), row);
            assert!(
                earlier.is_none(),
                "two other_id rows for filler id {filler}"
            );
        }
        let filler_of = |no: &str| {
            fillers
                .get(no)
                .cloned()
                .unwrap_or_else(|| panic!("appointment {no} has no other_id row"))
        };
        let mut appointment_columns = COLUMNS.to_vec();
        appointment_columns.insert(8, "reasonCode");
        let mut appointments = BTreeMap::new();
        for (no, _, row) in rows(
            &store,
            "appointment",
            "appointment_no",
            &appointment_columns,
            "1 = 1",
        )
        .await
        {
            let earlier = appointments.insert(filler_of(&no), row);
            assert!(earlier.is_none(), "two appointments for one filler id");
        }
        let mut archive: BTreeMap<String, Vec<(i64, Row)>> = BTreeMap::new();
        for (no, id, row) in rows(
            &store,
            "appointmentArchive",
            "appointment_no",
            &COLUMNS,
            "1 = 1",
        )
        .await
        {
            archive.entry(filler_of(&no)).or_default().push((id, row));
        }
        store.pool.close().await;
        let archive = archive
            .into_iter()
            .map(|(filler, mut rows)| {
                // Versions of one appointment are archived in the order they were applied.
                rows.sort_by_key(|(id, _)| *id);
                (filler, rows.into_iter().map(|(_, r)| r).collect())
            })
            .collect();
        Book {
            appointments,
            archive,
            other_ids,
            fillers,
        }
    }

    /// The canonical text: one line per row, by table, by filler id (archive rows oldest
    /// first); `appointment_no` shown as its filler id.
    fn text(&self) -> String {
        let line = |row: &Row| -> String {
            row.iter()
                .map(|(c, v)| match v {
                    Some(v) => format!(" {c}={v:?}"),
                    None => format!(" {c}=NULL"),
                })
                .collect()
        };
        let mut out = String::from(
            "# OSCAR's appointment book after `oscarflow replay` of fixtures/siu/01..05, one file\n\
             # at a time (tests/appointments.rs). Rows are named by the filler id (SCH-2) of their\n\
             # appointment; ids and createdatetime/updatedatetime are left out.\n",
        );
        out.push_str("\n[appointment]\n");
        for (filler, row) in &self.appointments {
            out.push_str(&format!("{filler}{}\n", line(row)));
        }
        out.push_str("\n[appointmentArchive]\n");
        for (filler, rows) in &self.archive {
            for (i, row) in rows.iter().enumerate() {
                out.push_str(&format!("{filler} #{}{}\n", i + 1, line(row)));
            }
        }
        out.push_str("\n[other_id table_name=2]\n");
        for (filler, row) in &self.other_ids {
            out.push_str(&format!("{filler} table_id={filler}{}\n", line(row)));
        }
        out
    }
}

/// `(key, id, row)` of every row of `table` matching `filter`: `key` the text of `key_col`,
/// `id` the row's auto-increment id (its insertion order), `row` `columns` as text.
async fn rows(
    store: &Store,
    table: &str,
    key_col: &str,
    columns: &[&'static str],
    filter: &str,
) -> Vec<(String, i64, Row)> {
    let id_col = if table == "appointment" {
        "appointment_no"
    } else {
        "id"
    };
    let selected: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("CAST({c} AS CHAR) AS c{i}"))
        .collect();
    let sql = format!(
        "SELECT CAST({key_col} AS CHAR) AS k, CAST({id_col} AS CHAR) AS i, {} FROM {table} WHERE {filter}",
        selected.join(", ")
    );
    let found = sqlx::query(&sql)
        .fetch_all(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    found
        .iter()
        .map(|r| {
            let text = |c: &str| text_column(r, c).unwrap_or_else(|e| panic!("{table}.{c}: {e}"));
            let key = text("k").unwrap_or_default();
            let id = text("i").and_then(|s| s.parse().ok()).unwrap_or_default();
            let row = columns
                .iter()
                .enumerate()
                .map(|(i, c)| (*c, text(&format!("c{i}"))))
                .collect();
            (key, id, row)
        })
        .collect()
}

/// Rows of `appointment`, `appointmentArchive`, `other_id` and
/// `oscarflow_appointment_message` (the applied messages).
async fn row_counts(db: &str) -> Vec<i64> {
    let store = Store::open(db).await.expect("open the store");
    let mut out = Vec::new();
    for table in [
        "appointment",
        "appointmentArchive",
        "other_id",
        "oscarflow_appointment_message",
    ] {
        out.push(common::count(&store, &format!("SELECT COUNT(*) FROM {table}")).await);
    }
    store.pool.close().await;
    out
}

fn golden_path() -> PathBuf {
    common::repo().join("tests/golden/appointments.txt")
}

/// The dump equals the golden file; `UPDATE_GOLDEN=1` rewrites it from SQLite.
fn compare_with_golden(db: &str, got: &str) {
    let path = golden_path();
    if db.starts_with("sqlite") && std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, got).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if want != got {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(w, g)| w != g)
            .take(8)
            .map(|(w, g)| format!("- {w}\n+ {g}"))
            .collect();
        panic!(
            "{} differs from {} ({} lines, want {}):\n{}",
            if db.starts_with("sqlite") {
                "sqlite"
            } else {
                "mariadb"
            },
            path.display(),
            got.lines().count(),
            want.lines().count(),
            diff.join("\n")
        );
    }
}
