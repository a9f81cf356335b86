//! The Interior Health POI source against the POI emulator (`tests/common/poi_emulator.rs`)
//! serving Expedius' real POI responses: every message imported, each acknowledged by its
//! own id only after commit (or dead letter); a crash before the acks re-delivers with zero
//! duplicate rows; an empty response is a quiet poll; bad credentials are a clear error.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_spanned::Spanned;

use oscarflow::ack::BatchStatus;
use oscarflow::sources::iha_poi::{parse_messages, IhaPoiConfig, IhaPoiSource};
use oscarflow::sources::Source;
use oscarflow::store::Store;

use common::harness::{self, Case};
use common::poi_emulator::{PoiEmulator, PASSWORD, USER};
use common::sources::SourceEvents as Polls;

fn response(name: &str) -> Option<String> {
    let dir = common::shared_dir("corpus/public/expedius")?;
    Some(std::fs::read_to_string(dir.join(name)).unwrap())
}

fn config(emu: &PoiEmulator, tag: &str) -> IhaPoiConfig {
    let (u, p) = (
        format!("OSCARFLOW_T_POI_{tag}_U"),
        format!("OSCARFLOW_T_POI_{tag}_P"),
    );
    std::env::set_var(&u, USER);
    std::env::set_var(&p, PASSWORD);
    IhaPoiConfig {
        url: emu.url(),
        user_env: Spanned::new(0..0, u),
        password_env: Spanned::new(0..0, p),
        trust_store: Some(emu.ca_pem.clone()),
        poll_interval: Duration::from_secs(3600),
        times_of_day: Vec::new(),
        acknowledge: true,
        timeout: Duration::from_secs(30),
        max_input_bytes: oscarflow::sources::oversize::DEFAULT_MAX_INPUT_BYTES,
        lab_type: oscarflow::hl7::lab::LabType::IhaPoi,
    }
}

/// The POI pipeline: the built-in lab pipeline, no `lab_type`: the source fixes it.
fn pipeline() -> oscarflow::config::PipelineConfig {
    common::lab_pipeline()
}

/// Runs `source` to its end, which must be clean; the poll and settle events it reported.
async fn polled(store: &Store, source: IhaPoiSource) -> Arc<Polls> {
    let polls = Arc::new(Polls::default());
    run(store, source, polls.clone()).await.unwrap();
    polls
}

async fn run(store: &Store, source: IhaPoiSource, polls: Arc<Polls>) -> Result<(), String> {
    common::sources::run(&pipeline(), store, Box::new(source), polls).await
}

async fn count(store: &Store, t: &str) -> i64 {
    common::count(store, &format!("SELECT COUNT(*) FROM {t}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_poi_message_is_imported_and_acknowledged_by_its_own_id_after_commit() {
    let Some(doc) = response("iha_poi_hl7_test.xml") else {
        return;
    };
    let expected = parse_messages(&doc).unwrap();
    assert_eq!(expected.len(), 28, "Expedius' POI sample holds 28 messages");
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = PoiEmulator::start(tmp.path(), &doc).await;
    let polls = polled(
        &store,
        IhaPoiSource::new(config(&emu, "ALL")).with_max_polls(1),
    )
    .await;
    assert!(
        polls.failed.lock().unwrap().is_empty(),
        "{:?}",
        polls.failed.lock().unwrap()
    );
    let (imported, dead) = (
        count(&store, "hl7TextMessage").await,
        count(&store, "oscarflow_dead_letter").await,
    );
    assert_eq!(
        imported + dead,
        28,
        "every message committed or dead-lettered"
    );
    let settled = polls.settled.lock().unwrap().clone();
    assert_eq!(settled.len(), 28);
    assert!(settled
        .iter()
        .all(|(s, released)| s.may_release() && *released));
    let acked = emu.state.lock().unwrap().acked.clone();
    let mut want: Vec<String> = expected.iter().map(|m| m.id.clone()).collect();
    let mut got = acked.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "each message acknowledged once, by its own id");
    assert!(emu.message_ids().is_empty());
    let t: Vec<String> = sqlx::query_scalar("SELECT DISTINCT type FROM hl7TextMessage")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert_eq!(t, vec!["IHAPOI".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poi_source_files_every_message_as_ihapoi_whatever_its_msh3_says() {
    let Some(doc) = response("iha_poi_hl7_test.xml") else {
        return;
    };
    // Every sending application and facility of the real sample, then the same messages
    // claiming to be from senders no detection rule knows as Interior Health.
    let disguised = doc
        .replace("MSH|^~\\&|IHAOE^2.1|", "MSH|^~\\&|ACME^1|")
        .replace("MSH|^~\\&|IHALAB^2.1|", "MSH|^~\\&|PATHL7|")
        .replace("MSH|^~\\&|IHARAD^2.1|", "MSH|^~\\&|CML|");
    assert_ne!(disguised, doc);
    for (tag, body) in [("REAL", doc), ("DISGUISED", disguised)] {
        let tmp = tempfile::tempdir().unwrap();
        let store = common::seeded_store(tmp.path()).await;
        let emu = PoiEmulator::start(tmp.path(), &body).await;
        polled(
            &store,
            IhaPoiSource::new(config(&emu, tag)).with_max_polls(1),
        )
        .await;
        let types = common::lab_types(&store).await;
        println!("{tag}: {types:?}");
        assert_eq!(types, vec![("IHAPOI".to_string(), 28)], "{tag}");
        // Health numbers come from PID-4, as OSCAR's IHAPOIHandler reads them.
        let hins: Vec<String> =
            sqlx::query_scalar("SELECT COALESCE(health_no, '') FROM hl7TextInfo")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let framed = oscarflow::hl7::framing::frame(&bytes::Bytes::from(body.clone()));
        let mut want: Vec<String> = framed
            .messages
            .iter()
            .map(|f| {
                let t = String::from_utf8_lossy(&f.joined(b"\r")).into_owned();
                oscarflow::hl7::Message::parse(&t)
                    .unwrap()
                    .get("PID-4.1")
                    .trim()
                    .to_string()
            })
            .collect();
        let mut got = hins;
        want.sort();
        got.sort();
        assert_eq!(got, want, "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_acks_redelivers_with_zero_duplicate_rows() {
    let Some(doc) = response("iha_poi_hl7_test.xml") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = PoiEmulator::start(tmp.path(), &doc).await;
    let crashed = Arc::new(AtomicBool::new(false));
    let c = crashed.clone();
    let source =
        IhaPoiSource::new(config(&emu, "CRASH")).with_crash_before_ack(Arc::new(move || {
            c.store(true, Ordering::SeqCst);
            true
        }));
    let err = run(&store, source, Arc::new(Polls::default()))
        .await
        .unwrap_err();
    assert!(err.contains("crashed before the acknowledgements"), "{err}");
    assert!(emu.state.lock().unwrap().acked.is_empty());
    let before = (
        count(&store, "hl7TextMessage").await,
        count(&store, "fileUploadCheck").await,
        count(&store, "oscarflow_dead_letter").await,
    );
    run(
        &store,
        IhaPoiSource::new(config(&emu, "CRASH2")).with_max_polls(1),
        Arc::new(Polls::default()),
    )
    .await
    .unwrap();
    let after = (
        count(&store, "hl7TextMessage").await,
        count(&store, "fileUploadCheck").await,
        count(&store, "oscarflow_dead_letter").await,
    );
    assert_eq!(after.0, before.0, "no duplicate labs");
    assert_eq!(after.1, before.1, "no duplicate uploads");
    assert_eq!(emu.state.lock().unwrap().acked.len(), 28);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_response_is_a_quiet_poll_and_bad_credentials_a_clear_error() {
    let Some(doc) = response("iha_poi_hl7_empty.xml") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = PoiEmulator::start(tmp.path(), &doc).await;
    let polls = polled(
        &store,
        IhaPoiSource::new(config(&emu, "EMPTY")).with_max_polls(1),
    )
    .await;
    assert_eq!(*polls.ok.lock().unwrap(), vec![0]);
    assert!(polls.failed.lock().unwrap().is_empty());
    let cfg = config(&emu, "BAD");
    std::env::set_var(cfg.password_env.get_ref(), "wrong");
    let polls = polled(&store, IhaPoiSource::new(cfg).with_max_polls(1)).await;
    let failed = polls.failed.lock().unwrap().clone();
    assert_eq!(failed, vec!["fetch: HTTP 401".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iha_poi_source_passes_the_component_harness() {
    let Some(doc) = response("iha_poi_hl7_test.xml") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = PoiEmulator::start(tmp.path(), &doc).await;
    // Learn each message's outcome first on a scratch store, then expect it.
    let scratch_dir = tempfile::tempdir().unwrap();
    let scratch = common::seeded_store(scratch_dir.path()).await;
    let mut cases = Vec::new();
    for m in parse_messages(&doc).unwrap() {
        let item = oscarflow::sources::list::ListItem::Bytes {
            origin: oscarflow::envelope::Origin::Memory {
                label: m.id.clone(),
            },
            name: m.id.clone(),
            bytes: m.body.clone(),
            attempt: 1,
        };
        let before = count(&scratch, "oscarflow_dead_letter").await;
        common::run_items(&pipeline(), &scratch, vec![item], None).await;
        let dead = count(&scratch, "oscarflow_dead_letter").await > before;
        cases.push(Case {
            name: "poi message",
            bytes: m.body.to_vec(),
            expect: if dead {
                BatchStatus::DeadLettered
            } else {
                BatchStatus::Delivered
            },
        });
    }
    let source: Box<dyn Source> =
        Box::new(IhaPoiSource::new(config(&emu, "HARNESS")).with_max_polls(1));
    harness::run_with_source(pipeline(), "harness_poi", &store, source, cases, true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pipeline_delays_the_next_poi_poll() {
    let Some(doc) = response("iha_poi_hl7_test.xml") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = common::seeded_store(tmp.path()).await;
    let emu = PoiEmulator::start(tmp.path(), &doc).await;
    let (_other, held) = common::sources::hold_write_lock(tmp.path()).await;
    let mut cfg = config(&emu, "BUSY");
    cfg.poll_interval = Duration::from_millis(50);
    let source: Box<dyn Source> = Box::new(IhaPoiSource::new(cfg).with_max_polls(2));
    let running = common::sources::start(&pipeline(), &store, source, None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        emu.state.lock().unwrap().fetches,
        1,
        "no new fetch while messages are uncommitted"
    );
    assert!(running.in_flight.current() <= running.in_flight_bound);
    held.rollback().await.unwrap();
    common::sources::wait(running, 60).await.unwrap();
    assert_eq!(emu.state.lock().unwrap().fetches, 2);
    assert_eq!(emu.state.lock().unwrap().acked.len(), 28);
}
