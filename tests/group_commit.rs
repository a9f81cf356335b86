//! Group commit (`oscar_lab`'s `group_max_files`): the files waiting for the import sink
//! commit in one transaction, and each is written exactly as it would be alone — a data
//! error dead-letters its file only, a duplicate inside the group writes nothing, versions
//! of one accession retire each other's measurements in order, and every ack resolves.
//!
//! The files are parsed first and all put in the sink's channel before the sink runs, so
//! the runner takes them as one group (up to the limit) every time.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use oscarflow::ack::{BatchNotifier, BatchStatus};
use oscarflow::config::RetrySettings;
use oscarflow::dead_letter::{DeadLetterStore, Filter, ReasonCode};
use oscarflow::envelope::{sha256, Envelope, Origin, Provenance, Raw};
use oscarflow::lab_file::{LabFile, OrderKey};
use oscarflow::oscar::import::Overflow;
use oscarflow::sinks::oscar_lab::{OscarLab, OscarLabConfig};
use oscarflow::stages::parse_hl7::{ParseHl7, ParseHl7Config};
use oscarflow::stages::Emitter;
use oscarflow::store::Store;
use oscarflow::telemetry::Observers;
use oscarflow::topology::run::{run_sink, RunContext};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const GROUPS: &str = "oscarflow_group_commit_files";

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(common::repo().join("fixtures/hl7").join(rel)).expect("fixture")
}

/// The group: a matched lab, the same lab with a surname longer than OSCAR's column (a
/// data error under `on_overflow = "reject"`), the first lab again (a duplicate of a file
/// earlier in the group), an unmatched lab, and three versions of one accession.
fn group_files() -> Vec<(&'static str, Vec<u8>)> {
    let chem = fixture("pathl7/matched_chem.hl7");
    let long_name = String::from_utf8(chem.clone())
        .unwrap()
        .replacen(
            "TESTPATIENT^",
            "ZZVERYLONGSURNAMEWELLPASTTHIRTYCHARACTERS^",
            1,
        )
        .into_bytes();
    vec![
        ("chem", chem.clone()),
        ("long name", long_name),
        ("chem again", chem),
        ("unmatched", fixture("pathl7/unmatched_patient.hl7")),
        (
            "prelim",
            fixture("versions/accession_26-200000001_1_prelim.hl7"),
        ),
        (
            "final",
            fixture("versions/accession_26-200000001_2_final.hl7"),
        ),
        (
            "corrected",
            fixture("versions/accession_26-200000001_3_corrected.hl7"),
        ),
    ]
}

/// Parses `files`, puts them all in the sink's channel, runs the import sink with
/// `group_max_files` over them and returns each file's ack status.
async fn import(
    store: &Store,
    pipeline: &str,
    files: &[(&'static str, Vec<u8>)],
    group_max_files: usize,
) -> Vec<BatchStatus> {
    let parse = ParseHl7::new(
        ParseHl7Config::default(),
        Arc::from("parse"),
        Observers::none(),
    );
    let (tx, rx) = mpsc::channel::<Envelope<LabFile>>(files.len());
    let mut receivers = Vec::new();
    for (label, bytes) in files {
        let (n, r) = BatchNotifier::new(None);
        let bytes = Bytes::from(bytes.clone());
        let env = Envelope::new(
            Arc::new(Provenance {
                pipeline: Arc::from(pipeline),
                source: Arc::from("src"),
                source_kind: Arc::from("test"),
                origin: Origin::Memory {
                    label: (*label).into(),
                },
                received_at: time::OffsetDateTime::now_utc(),
                attempt: 1,
                content_sha256: sha256(&bytes),
            }),
            Raw {
                bytes,
                name: format!("{label}.hl7"),
                lab_type: None,
            },
            n.token(),
        );
        drop(n);
        let mut out = Emitter::default();
        parse.parse(&env, &mut out);
        assert!(out.rejects.is_empty(), "{label} parses");
        env.ack.hand_over();
        for lab in out.outputs {
            tx.send(lab).await.unwrap();
        }
        receivers.push(r);
    }
    drop(tx);
    let cfg = OscarLabConfig {
        on_overflow: Overflow::Reject,
        group_max_files,
        ..Default::default()
    };
    let sink = Arc::new(OscarLab::new(
        store.clone(),
        &cfg,
        Arc::from("import"),
        Observers::none(),
    ));
    let cx = RunContext {
        pipeline: Arc::from(pipeline),
        component: Arc::from("import"),
        component_kind: "oscar_lab",
        dead_letters: DeadLetterStore::new(store.clone()),
        retry: RetrySettings {
            max_attempts: 3,
            initial_backoff: std::time::Duration::from_millis(20),
            max_backoff: std::time::Duration::from_millis(200),
        },
        observers: Observers::none(),
        control: oscarflow::sources::SourceControl::new(),
    };
    run_sink(sink, rx, cx, 1, OrderKey::Accession)
        .await
        .expect("no fatal error");
    let mut statuses = Vec::new();
    for r in receivers {
        statuses.push(r.wait().await);
    }
    statuses
}

async fn texts(store: &Store, sql: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(sql)
        .fetch_all(&store.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What the import wrote, without ids and times: per lab in import order its type,
/// accession, status and routing, and the measurement tables' counts.
async fn written(store: &Store) -> Value {
    let labs = texts(
        store,
        "SELECT CONCAT(m.type, '|', COALESCE(i.accessionNum, ''), '|', COALESCE(i.result_status, ''), '|', COALESCE(i.report_status, ''), '|', (SELECT COUNT(*) FROM patientLabRouting p WHERE p.lab_no = m.lab_id), '|', (SELECT COUNT(*) FROM providerLabRouting r WHERE r.lab_no = m.lab_id)) FROM hl7TextMessage m JOIN hl7TextInfo i ON i.lab_no = m.lab_id ORDER BY m.lab_id",
    )
    .await;
    let count = |t: &'static str| async move {
        common::count(store, &format!("SELECT COUNT(*) FROM {t}")).await
    };
    json!({
        "labs": labs,
        "fileUploadCheck": count("fileUploadCheck").await,
        "measurements": count("measurements").await,
        "measurementsExt": count("measurementsExt").await,
        "measurementsDeleted": count("measurementsDeleted").await,
        "journal_imported": common::count(store, "SELECT COUNT(*) FROM oscarflow_journal WHERE outcome = 'imported'").await,
    })
}

/// Runs the group, then the same files one at a time into `single`, and compares.
async fn a_group_writes_what_one_file_at_a_time_writes(
    backend: &str,
    grouped: &Store,
    single: &Store,
) {
    let metrics = common::harness::metrics();
    let files = group_files();
    let pipeline = format!("group_{backend}");
    let statuses = import(grouped, &pipeline, &files, 64).await;
    let want: Vec<BatchStatus> = files
        .iter()
        .map(|(label, _)| match *label {
            "long name" => BatchStatus::DeadLettered,
            _ => BatchStatus::Delivered,
        })
        .collect();
    assert_eq!(statuses, want, "every ack resolves, the data error's alone");
    assert_eq!(
        metrics.sum(GROUPS, &[("pipeline", pipeline.as_str())]),
        1,
        "the six good files committed as one group, after the data error was set aside"
    );

    // The data error: dead-lettered once, with its original bytes and the reason.
    let dead = DeadLetterStore::new(grouped.clone());
    let letters = dead.list(&Filter::default()).await.unwrap();
    assert_eq!(letters.len(), 1, "only the file with the data error");
    assert_eq!(letters[0].reason, ReasonCode::ImportRejected.as_str());
    let stored = dead.get(&letters[0].id).await.unwrap().expect("stored");
    assert_eq!(stored.raw, files[1].1, "its bytes, byte for byte");

    let got = written(grouped).await;
    assert_eq!(
        got["fileUploadCheck"], 5,
        "chem once (its copy in the group is a duplicate), unmatched, three versions: {got}"
    );
    assert_eq!(got["labs"].as_array().unwrap().len(), 5, "{got}");
    assert!(
        got["measurementsDeleted"].as_i64().unwrap() > 0,
        "the final and the corrected version retired their predecessors' measurements: {got}"
    );

    // One file at a time, as before group commit.
    let single_pipeline = format!("single_{backend}");
    let statuses = import(single, &single_pipeline, &files, 1).await;
    assert_eq!(statuses, want);
    assert_eq!(
        metrics.sum(GROUPS, &[("pipeline", single_pipeline.as_str())]),
        0,
        "a limit of one file never groups"
    );
    assert_eq!(
        got,
        written(single).await,
        "the group wrote the same rows as one file at a time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_a_data_error_a_duplicate_pair_and_three_versions_commits_each_as_alone_on_sqlite(
) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let grouped = common::seeded_store(a.path()).await;
    let single = common::seeded_store(b.path()).await;
    a_group_writes_what_one_file_at_a_time_writes("sqlite", &grouped, &single).await;
}

/// Runs `f` with two stores on fresh test databases: one for the group, one for one file
/// at a time.
async fn with_two_mariadb_stores<F, Fut>(f: F)
where
    F: FnOnce(Store, Store) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    common::mariadb::with_test_db(|grouped_url| async move {
        common::mariadb::with_test_db(|single_url| async move {
            let grouped = Store::open(&grouped_url).await.expect("open MariaDB");
            let single = Store::open(&single_url).await.expect("open MariaDB");
            f(grouped, single).await;
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_a_data_error_a_duplicate_pair_and_three_versions_commits_each_as_alone_on_mariadb(
) {
    with_two_mariadb_stores(|grouped, single| async move {
        a_group_writes_what_one_file_at_a_time_writes("mariadb", &grouped, &single).await;
    })
    .await;
}

/// A lab whose result time is a day that does not exist (31 February): MariaDB's strict
/// mode refuses the `measurements` row, in a statement the group's files share, so no one
/// file is named by the error.
fn impossible_date_lab() -> Vec<u8> {
    String::from_utf8(fixture("pathl7/matched_chem.hl7"))
        .unwrap()
        .replace("26-100000001", "26-100000091")
        .replacen("|||F|||20260115092900", "|||F|||20260231092900", 1)
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_error_of_a_statement_the_group_shares_is_found_by_splitting_and_dead_lettered_alone_on_mariadb(
) {
    with_two_mariadb_stores(|grouped, single| async move {
        let metrics = common::harness::metrics();
        let files = vec![
            ("chem", fixture("pathl7/matched_chem.hl7")),
            ("impossible date", impossible_date_lab()),
            ("unmatched", fixture("pathl7/unmatched_patient.hl7")),
            (
                "prelim",
                fixture("versions/accession_26-200000001_1_prelim.hl7"),
            ),
            (
                "final",
                fixture("versions/accession_26-200000001_2_final.hl7"),
            ),
        ];
        let want: Vec<BatchStatus> = files
            .iter()
            .map(|(label, _)| match *label {
                "impossible date" => BatchStatus::DeadLettered,
                _ => BatchStatus::Delivered,
            })
            .collect();
        let statuses = import(&grouped, "bisect", &files, 64).await;
        assert_eq!(statuses, want, "only the culprit is dead-lettered");
        // 5 → [chem, impossible date] fails again → each alone; [unmatched, prelim,
        // final] commits as a group.
        assert_eq!(metrics.sum(GROUPS, &[("pipeline", "bisect")]), 1);
        let dead = DeadLetterStore::new(grouped.clone());
        let letters = dead.list(&Filter::default()).await.unwrap();
        assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
        assert_eq!(letters[0].reason, ReasonCode::ImportRejected.as_str());
        let stored = dead.get(&letters[0].id).await.unwrap().expect("stored");
        assert_eq!(stored.raw, files[1].1, "its bytes, byte for byte");

        assert_eq!(import(&single, "bisect_single", &files, 1).await, want);
        let got = written(&grouped).await;
        assert_eq!(got["labs"].as_array().unwrap().len(), 4, "{got}");
        assert_eq!(
            got,
            written(&single).await,
            "the same rows as one file at a time"
        );
    })
    .await;
}
