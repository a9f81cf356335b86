//! The import sink (`oscar_lab`) in the component harness (`tests/common/harness.rs`):
//! every input's ack resolves — delivered, dead-lettered or failed, never left pending — and
//! the metrics of each outcome are emitted with the pipeline and component labels.

mod common;

use oscarflow::ack::BatchStatus;
use oscarflow::oscar::import::Overflow;

use common::harness::{self, Case};

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(common::repo().join("fixtures").join(rel)).expect("fixture")
}

const IMPORTED: &str = "oscarflow_messages_imported_total";
const DUPLICATE: &str = "oscarflow_messages_duplicate_total";
const DEAD: &str = "oscarflow_messages_dead_lettered_total";
const RETRIES: &str = "oscarflow_retries_total";
const IMPORT_SECONDS: &str = "oscarflow_import_duration_seconds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_sink_resolves_every_ack_and_emits_its_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let multi = fixture("hl7/pathl7/multi_message.hl7");
    let long_name = String::from_utf8(fixture("hl7/pathl7/matched_chem.hl7"))
        .unwrap()
        .replacen(
            "TESTPATIENT^",
            "ZZVERYLONGSURNAMEWELLPASTTHIRTYCHARACTERS^",
            1,
        )
        .into_bytes();
    let cases = vec![
        Case {
            name: "three labs",
            bytes: multi.clone(),
            expect: BatchStatus::Delivered,
        },
        Case {
            name: "unmatched",
            bytes: fixture("hl7/pathl7/unmatched_patient.hl7"),
            expect: BatchStatus::Delivered,
        },
        Case {
            name: "too long for OSCAR",
            bytes: long_name,
            expect: BatchStatus::DeadLettered,
        },
        Case {
            name: "not HL7",
            bytes: b"this is not an HL7 message".to_vec(),
            expect: BatchStatus::DeadLettered,
        },
    ];
    let cfg = common::lab_pipeline_with(|c| c.on_overflow = Overflow::Reject);
    let out = harness::run(cfg.clone(), "harness_import", &store, cases).await;
    let m = harness::metrics();
    let sink = [("pipeline", "harness_import"), ("component", "oscar")];
    assert_eq!(out.total(|l| l.imported), 4);
    assert_eq!(
        m.sum(IMPORTED, &sink),
        4,
        "{:#?}",
        m.of_pipeline("harness_import")
    );
    assert_eq!(
        m.sum(
            IMPORTED,
            &[("pipeline", "harness_import"), ("outcome", "not_found")]
        ),
        1,
        "the match outcome is a label"
    );
    assert_eq!(m.sum(DEAD, &sink), 1, "the over-long file, by the sink");
    assert_eq!(
        m.sum(
            DEAD,
            &[("pipeline", "harness_import"), ("component", "parse")]
        ),
        1,
        "the non-HL7 input, by the parse stage"
    );
    assert!(
        m.sum(IMPORT_SECONDS, &[("pipeline", "harness_import")]) >= 2,
        "an import latency observation per committed file"
    );

    // The same file again: a duplicate, delivered (and released), nothing written.
    let again = vec![Case {
        name: "three labs again",
        bytes: multi,
        expect: BatchStatus::Delivered,
    }];
    let out = harness::run(cfg, "harness_import_again", &store, again).await;
    assert_eq!(out.total(|l| l.duplicate_messages), 3);
    assert_eq!(
        m.sum(
            DUPLICATE,
            &[("pipeline", "harness_import_again"), ("component", "oscar")]
        ),
        3
    );
    assert_eq!(m.sum(IMPORTED, &[("pipeline", "harness_import_again")]), 0);
}

/// With the database gone, the sink cannot commit nor dead-letter: it retries (metrics), then
/// the ack resolves as failed and the input is not released (it will be re-delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_sink_without_a_database_fails_the_ack_after_retries_and_keeps_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    store.pool.close().await;
    // parse → import, so the sink itself meets the missing database (it matches patients
    // itself when no match stage precedes it).
    let mut cfg = oscarflow::config::load_str(
        std::path::Path::new("no_db.toml"),
        "[sources.files]\ntype = \"folder\"\npath = \".\"\nmode = \"once\"\nafter = \"keep\"\n\n[stages.parse]\ntype = \"parse_hl7\"\ninputs = [\"files\"]\n\n[sinks.oscar]\ntype = \"oscar_lab\"\ninputs = [\"parse\"]\n",
    )
    .expect("pipeline");
    cfg.settings.retry.max_attempts = 3;
    cfg.settings.retry.initial_backoff = std::time::Duration::from_millis(5);
    cfg.settings.retry.max_backoff = std::time::Duration::from_millis(20);
    let cases = vec![Case {
        name: "a lab while the database is down",
        bytes: fixture("hl7/pathl7/matched_chem.hl7"),
        expect: BatchStatus::Failed,
    }];
    let out = harness::run(cfg, "harness_no_db", &store, cases).await;
    assert_eq!(out.total(|l| l.retries), 2, "3 attempts = 2 retries");
    assert_eq!(out.total(|l| l.not_delivered), 1);
    let m = harness::metrics();
    assert_eq!(
        m.sum(
            RETRIES,
            &[("pipeline", "harness_no_db"), ("component", "oscar")]
        ),
        2,
        "{:#?}",
        m.of_pipeline("harness_no_db")
    );
    assert_eq!(m.sum(IMPORTED, &[("pipeline", "harness_no_db")]), 0);
}

/// The watched-folder source: each file's ack resolves once, it is moved to `processed/` only
/// when its messages are committed or dead-lettered, and the settled/released counters match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_source_resolves_every_ack_and_releases_only_settled_files() {
    use oscarflow::sources::folder::{AfterCommit, FolderConfig, FolderMode, FolderSource};
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let good = fixture("hl7/pathl7/matched_chem.hl7");
    let bad = b"MSH|^~\\&|PATHL7|LIFELABS|HTTPCLIENT|ZZ|20260101||ORU^R01|FOLDERBAD|P|2.3".to_vec();
    std::fs::write(inbox.join("a_good.hl7"), &good).unwrap();
    std::fs::write(inbox.join("b_bad.hl7"), &bad).unwrap();
    let mut cfg = FolderConfig::replay(inbox.clone());
    cfg.mode = FolderMode::Once;
    cfg.after = AfterCommit::Move;
    let source: Box<dyn oscarflow::sources::Source> =
        Box::new(FolderSource::new(cfg, None).unwrap());
    let cases = vec![
        Case {
            name: "good file",
            bytes: good,
            expect: BatchStatus::Delivered,
        },
        Case {
            name: "truncated file",
            bytes: bad,
            expect: BatchStatus::DeadLettered,
        },
    ];
    harness::run_with_source(
        common::lab_pipeline(),
        "harness_folder",
        &store,
        source,
        cases,
        true,
        None,
    )
    .await;
    let processed: Vec<_> = std::fs::read_dir(inbox.join("processed"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(processed.len(), 2, "{processed:?}");
}
